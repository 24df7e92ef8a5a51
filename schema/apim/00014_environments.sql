-- Gateway environments as WSO2 API-M 4.x's admin REST API has them: an id,
-- a description, the provider and types, the virtual hosts (the first is
-- the default vhost of a deployment) and additional properties. The
-- environment the migrations made, Default, is read-only like the ones of
-- WSO2's deployment.toml; environments made over REST can be changed and
-- deleted (while nothing is deployed to them).

-- +goose Up
ALTER TABLE gateway_environments
    ADD COLUMN id uuid NOT NULL DEFAULT gen_random_uuid(),
    ADD COLUMN description text NOT NULL DEFAULT '',
    ADD COLUMN provider text NOT NULL DEFAULT 'wso2',
    ADD COLUMN type text NOT NULL DEFAULT 'hybrid',
    ADD COLUMN gateway_type text NOT NULL DEFAULT 'Regular',
    ADD COLUMN vhosts jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN additional_properties jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN read_only boolean NOT NULL DEFAULT false,
    ADD COLUMN generation bigint NOT NULL DEFAULT nextval('generation_seq');
ALTER TABLE gateway_environments ADD CONSTRAINT gateway_environments_id_key UNIQUE (id);
UPDATE gateway_environments
SET read_only = true,
    vhosts = jsonb_build_array(jsonb_build_object('host', vhost, 'httpContext', '', 'httpPort', 8280, 'httpsPort', 8243))
WHERE name = 'Default';

-- +goose Down
ALTER TABLE gateway_environments
    DROP CONSTRAINT gateway_environments_id_key,
    DROP COLUMN id, DROP COLUMN description, DROP COLUMN provider, DROP COLUMN type,
    DROP COLUMN gateway_type, DROP COLUMN vhosts, DROP COLUMN additional_properties,
    DROP COLUMN read_only, DROP COLUMN generation;

-- External key managers (WSO2's KeyManager: an OAuth2/OIDC provider whose
-- tokens the gateways accept) and key mappings of their clients. A mapped
-- client is not one of our OAuth clients, so the key mapping's reference to
-- oauth_clients holds only for the resident key manager's (key_manager_id
-- NULL), and a client id is unique per key manager: the same id at two
-- providers, or at one provider and here, names different clients.

-- +goose Up
CREATE TABLE key_managers (
    id                    uuid PRIMARY KEY,
    organization          text NOT NULL DEFAULT 'carbon.super',
    name                  text NOT NULL,
    display_name          text NOT NULL DEFAULT '',
    type                  text NOT NULL,
    description           text NOT NULL DEFAULT '',
    enabled               boolean NOT NULL DEFAULT true,
    issuer                text NOT NULL,
    well_known_endpoint   text NOT NULL DEFAULT '',
    jwks_uri              text NOT NULL,
    consumer_key_claim    text NOT NULL DEFAULT '',
    scopes_claim          text NOT NULL DEFAULT '',
    claim_mapping         jsonb NOT NULL DEFAULT '[]',
    map_consumer_apps     boolean NOT NULL DEFAULT true,
    endpoints             jsonb NOT NULL DEFAULT '{}', -- token, revoke, ... as discovered; shown, not used
    generation            bigint NOT NULL DEFAULT nextval('generation_seq'),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT key_managers_name_key UNIQUE (organization, name),
    -- The gateway finds a token's key manager by its iss.
    CONSTRAINT key_managers_issuer_key UNIQUE (issuer)
);

ALTER TABLE key_mappings
    DROP CONSTRAINT key_mappings_consumer_key_fkey,
    DROP CONSTRAINT key_mappings_consumer_key_key,
    ADD COLUMN key_manager_id uuid REFERENCES key_managers (id) ON DELETE CASCADE,
    -- SHA-256 (hex) of a mapped client's secret when the developer gave it;
    -- never the secret.
    ADD COLUMN consumer_secret_hash text NOT NULL DEFAULT '',
    ADD COLUMN resident_client_id text
        GENERATED ALWAYS AS (CASE WHEN key_manager_id IS NULL THEN consumer_key END) STORED
        REFERENCES oauth_clients (client_id),
    ADD CONSTRAINT key_mappings_client_key UNIQUE NULLS NOT DISTINCT (key_manager_id, consumer_key);

-- +goose Down
DELETE FROM key_mappings WHERE key_manager_id IS NOT NULL;
ALTER TABLE key_mappings
    DROP CONSTRAINT key_mappings_client_key,
    DROP COLUMN resident_client_id,
    DROP COLUMN consumer_secret_hash,
    DROP COLUMN key_manager_id,
    ADD CONSTRAINT key_mappings_consumer_key_key UNIQUE (consumer_key),
    ADD CONSTRAINT key_mappings_consumer_key_fkey FOREIGN KEY (consumer_key) REFERENCES oauth_clients (client_id);
DROP TABLE key_managers;

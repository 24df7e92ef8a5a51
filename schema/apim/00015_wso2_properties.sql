-- Every property of WSO2's APIDTO (publisher v4), ApplicationDTO and
-- SubscriptionDTO (devportal v3) is accepted, stored and returned
-- (docs/wso2-compatibility.md).
--
-- The properties apim acts on get columns of their own: an API's tags
-- (listable, hence the GIN index), visibility and visible roles, transports,
-- default-version flag, business information, additional properties (WSO2
-- 4.x's array form; the map form is derived from it) and scopes; an
-- application's groups and attributes; a subscription's requested tier.
--
-- The rest, which apim stores but does not act on yet, go verbatim into one
-- jsonb object per row, wso2_extra, keyed by WSO2's property names. For an
-- API and its operations they are part of model.API, so revisions freeze
-- them with the rest of the definition.

-- +goose Up
ALTER TABLE apis
    ADD COLUMN tags                  text[]  NOT NULL DEFAULT '{}',
    ADD COLUMN visibility            text    NOT NULL DEFAULT '',
    ADD COLUMN visible_roles         text[]  NOT NULL DEFAULT '{}',
    ADD COLUMN transport             text[]  NOT NULL DEFAULT '{}',
    ADD COLUMN is_default_version    boolean NOT NULL DEFAULT false,
    ADD COLUMN business_information  jsonb,
    ADD COLUMN additional_properties jsonb   NOT NULL DEFAULT '[]',
    ADD COLUMN scopes                jsonb   NOT NULL DEFAULT '[]',
    ADD COLUMN wso2_extra            jsonb   NOT NULL DEFAULT '{}';
CREATE INDEX apis_tags ON apis USING gin (tags);

ALTER TABLE api_resources ADD COLUMN wso2_extra jsonb NOT NULL DEFAULT '{}';

ALTER TABLE applications
    ADD COLUMN groups     text[]      NOT NULL DEFAULT '{}',
    ADD COLUMN attributes jsonb       NOT NULL DEFAULT '{}',
    ADD COLUMN wso2_extra jsonb       NOT NULL DEFAULT '{}',
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

-- Empty means the same as throttling_policy (no tier change pending).
ALTER TABLE subscriptions ADD COLUMN requested_throttling_policy text NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE subscriptions DROP COLUMN requested_throttling_policy;
ALTER TABLE applications DROP COLUMN groups, DROP COLUMN attributes, DROP COLUMN wso2_extra, DROP COLUMN updated_at;
ALTER TABLE api_resources DROP COLUMN wso2_extra;
DROP INDEX apis_tags;
ALTER TABLE apis
    DROP COLUMN tags, DROP COLUMN visibility, DROP COLUMN visible_roles, DROP COLUMN transport,
    DROP COLUMN is_default_version, DROP COLUMN business_information, DROP COLUMN additional_properties,
    DROP COLUMN scopes, DROP COLUMN wso2_extra;

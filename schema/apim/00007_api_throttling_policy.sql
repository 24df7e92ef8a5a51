-- An API's API-level (advanced) throttling policy, WSO2's
-- apiThrottlingPolicy: one limit over every resource of the API. Empty means
-- none. Revisions freeze it with the rest of the definition.

-- +goose Up
ALTER TABLE apis ADD COLUMN api_throttling_policy text NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE apis DROP COLUMN api_throttling_policy;

-- Whether the gateway sends an API's backend a signed JWT describing the
-- caller (WSO2's backend JWT, in the X-JWT-Assertion header). Off by
-- default. Revisions freeze it with the rest of the definition (model.API
-- JSON, enableBackendJWT).

-- +goose Up
ALTER TABLE apis ADD COLUMN enable_backend_jwt boolean NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE apis DROP COLUMN enable_backend_jwt;

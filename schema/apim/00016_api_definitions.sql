-- +goose Up
-- The OpenAPI definition an API's resources came from (import-openapi, PUT
-- /swagger), as JSON; empty when the API was made from its resources.
-- GET /swagger merges it with the current resources. Not in api events:
-- the gateways route by the resources.
ALTER TABLE apis ADD COLUMN definition text NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE apis DROP COLUMN definition;

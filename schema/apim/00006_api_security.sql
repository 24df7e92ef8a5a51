-- An API's security schemes (WSO2's securityScheme: oauth2, api_key) and
-- its CORS policy (WSO2's corsConfiguration, as JSON). An empty
-- security_scheme means the default, oauth2 only; a NULL cors, none.
-- Revisions freeze both with the rest of the definition (model.API JSON).

-- +goose Up
ALTER TABLE apis
    ADD COLUMN security_scheme text[] NOT NULL DEFAULT '{}',
    ADD COLUMN cors            jsonb;

-- +goose Down
ALTER TABLE apis DROP COLUMN security_scheme, DROP COLUMN cors;

-- WSO2's scope of the devportal's API-key operations, apim:api_key
-- ("Generate API Keys"), granted as WSO2 grants it: to admin and to
-- subscribers. The endpoints also accept apim:app_manage and apim:subscribe,
-- so tokens issued before this migration keep working.

-- +goose Up
INSERT INTO role_scopes (role, scope) VALUES
    ('admin', 'apim:api_key'), ('Internal/subscriber', 'apim:api_key')
ON CONFLICT DO NOTHING;

-- +goose Down
DELETE FROM role_scopes WHERE role IN ('admin', 'Internal/subscriber') AND scope = 'apim:api_key';

-- WSO2's scopes of the admin API's key-manager operations: apim:admin_operations
-- ("Manage API categories and Key Managers related operations") and, since
-- 4.2, apim:keymanagers_manage. The admin role may be granted both.

-- +goose Up
INSERT INTO role_scopes (role, scope) VALUES
    ('admin', 'apim:admin_operations'), ('admin', 'apim:keymanagers_manage')
ON CONFLICT DO NOTHING;

-- +goose Down
DELETE FROM role_scopes WHERE role = 'admin' AND scope IN ('apim:admin_operations', 'apim:keymanagers_manage');

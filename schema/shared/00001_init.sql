-- Shared database: users, roles and the scopes each role grants, organisations,
-- settings.

-- +goose Up
CREATE TABLE organizations (
    name text PRIMARY KEY
);
INSERT INTO organizations (name) VALUES ('carbon.super');

CREATE TABLE users (
    name          text PRIMARY KEY,
    password_hash text NOT NULL,
    organization  text NOT NULL DEFAULT 'carbon.super' REFERENCES organizations (name),
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE roles (
    name text PRIMARY KEY
);

CREATE TABLE user_roles (
    user_name text NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    role      text NOT NULL REFERENCES roles (name) ON DELETE CASCADE,
    PRIMARY KEY (user_name, role)
);

-- Which REST API scopes a role may be granted, as WSO2's tenant-conf RESTAPIScopes.
CREATE TABLE role_scopes (
    role  text NOT NULL REFERENCES roles (name) ON DELETE CASCADE,
    scope text NOT NULL,
    PRIMARY KEY (role, scope)
);

INSERT INTO roles (name) VALUES ('admin'), ('Internal/creator'), ('Internal/publisher'), ('Internal/subscriber');
INSERT INTO role_scopes (role, scope)
SELECT 'admin', s FROM unnest(ARRAY[
    'apim:api_view', 'apim:api_create', 'apim:api_manage', 'apim:api_delete', 'apim:api_publish',
    'apim:api_import_export', 'apim:subscribe', 'apim:app_manage', 'apim:sub_manage',
    'apim:subscription_view', 'apim:subscription_block', 'apim:tier_view', 'apim:tier_manage',
    'apim:admin', 'apim:policies_import_export', 'openid']) AS s;
INSERT INTO role_scopes (role, scope) VALUES
    ('Internal/creator', 'apim:api_view'), ('Internal/creator', 'apim:api_create'),
    ('Internal/creator', 'apim:api_manage'), ('Internal/creator', 'apim:tier_view'),
    ('Internal/publisher', 'apim:api_view'), ('Internal/publisher', 'apim:api_publish'),
    ('Internal/publisher', 'apim:subscription_view'), ('Internal/publisher', 'apim:subscription_block'),
    ('Internal/publisher', 'apim:tier_view'),
    ('Internal/subscriber', 'apim:subscribe'), ('Internal/subscriber', 'apim:app_manage'),
    ('Internal/subscriber', 'apim:sub_manage'), ('Internal/subscriber', 'openid');

CREATE TABLE settings (
    key   text PRIMARY KEY,
    value jsonb NOT NULL
);

-- +goose Down
DROP TABLE settings, role_scopes, user_roles, roles, users, organizations;

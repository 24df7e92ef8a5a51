-- What an OAuth client is for. An 'application' client holds an application's
-- keys (the devportal's generate-keys) and is granted no role scopes: its
-- tokens call APIs, never the REST APIs. A 'rest' client is registered
-- through DCR by a user, for the publisher, devportal or admin REST APIs, and
-- is granted the scopes its user's roles allow.
--
-- The default is the restricted kind, so an insert that does not say is an
-- application client; the DCR endpoint says 'rest'. Existing clients are
-- 'rest' unless an application's key mapping names them.

-- +goose Up
ALTER TABLE oauth_clients
    ADD COLUMN kind text NOT NULL DEFAULT 'rest' CHECK (kind IN ('application', 'rest'));
UPDATE oauth_clients SET kind = 'application'
    WHERE client_id IN (SELECT consumer_key FROM key_mappings);
ALTER TABLE oauth_clients ALTER COLUMN kind SET DEFAULT 'application';

-- +goose Down
ALTER TABLE oauth_clients DROP COLUMN kind;

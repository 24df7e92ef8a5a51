-- Opaque access tokens, token lifetimes per OAuth client, client-wide
-- revocations, and the access token an authorization code was exchanged for.
--
-- An application whose token_type is 'OAUTH' (WSO2's name for opaque
-- reference tokens) gets opaque access tokens: random strings (apim_at_…,
-- 32 random bytes) of which only the SHA-256 (hex) is stored, with the
-- claims a JWT would carry, so a database dump holds no usable token. Each
-- has a jti like a JWT: revoking one records that jti in revoked_tokens and
-- appends the same revocation event, so gateways handle both kinds alike.
-- request_id is fosite's request id (the grant the token descends from), so
-- revoking a grant (a replayed code, a reused refresh token) finds it.

-- +goose Up
CREATE TABLE oauth_access_tokens (
    token_hash text PRIMARY KEY,
    jti        text NOT NULL UNIQUE,
    request_id text NOT NULL,
    client_id  text NOT NULL REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
    subject    text NOT NULL,
    aut        text NOT NULL,
    scopes     text[] NOT NULL,
    audience   text[] NOT NULL,
    issued_at  timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX oauth_access_tokens_request ON oauth_access_tokens (request_id);
CREATE INDEX oauth_access_tokens_client ON oauth_access_tokens (client_id);
CREATE INDEX oauth_access_tokens_expires ON oauth_access_tokens (expires_at);

-- The access token (JWT or opaque) an authorization code was exchanged for:
-- a replay of the code revokes it, whether or not a refresh token was issued.
ALTER TABLE oauth_authorization_codes
    ADD COLUMN access_jti        text NOT NULL DEFAULT '',
    ADD COLUMN access_expires_at timestamptz;
CREATE INDEX oauth_authorization_codes_request ON oauth_authorization_codes (request_id);

-- Token lifetimes of one client, in seconds: WSO2's
-- application_access_token_expiry_time (validityTime), user_access_token_expiry_time
-- and refresh_token_expiry_time. NULL is the key manager's default.
-- longest_access_ttl is the longest access-token lifetime the client ever
-- had (0: never more than the default); it bounds how long a client-wide
-- revocation must be kept.
ALTER TABLE oauth_clients
    ADD COLUMN app_access_ttl     integer CHECK (app_access_ttl > 0),
    ADD COLUMN user_access_ttl    integer CHECK (user_access_ttl > 0),
    ADD COLUMN refresh_ttl        integer CHECK (refresh_ttl > 0),
    ADD COLUMN longest_access_ttl integer NOT NULL DEFAULT 0;

-- A client whose secret was regenerated: its access tokens issued before
-- issued_before (iat < issued_before) are refused, JWTs and opaque tokens
-- alike, until expires_at, when every one of them has expired anyway. The
-- key manager issues the client's new tokens with iat >= issued_before.
CREATE TABLE revoked_clients (
    client_id     text PRIMARY KEY REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
    issued_before timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX revoked_clients_expires ON revoked_clients (expires_at);

-- +goose Down
DROP TABLE revoked_clients, oauth_access_tokens;
DROP INDEX oauth_authorization_codes_request;
ALTER TABLE oauth_authorization_codes DROP COLUMN access_jti, DROP COLUMN access_expires_at;
ALTER TABLE oauth_clients
    DROP COLUMN app_access_ttl, DROP COLUMN user_access_ttl, DROP COLUMN refresh_ttl,
    DROP COLUMN longest_access_ttl;

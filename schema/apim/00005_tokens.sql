-- Token state of the resident key manager: refresh tokens, authorization
-- codes and revoked access tokens.
--
-- Refresh tokens and authorization codes are opaque random strings; only
-- their SHA-256 (hex) is stored, so a database dump holds no usable token.
-- A refresh token belongs to a family (the grant it descends from): each use
-- marks it used and issues the next one of the family, and presenting a used
-- one revokes the whole family (reuse detection). access_jti names the access
-- token issued with it, so revoking a family revokes those access tokens too.
--
-- Access tokens are self-contained JWTs: a revoked one is remembered by its
-- jti until it expires (revoked_tokens), and announced on the outbox.

-- +goose Up
CREATE TABLE oauth_refresh_tokens (
    token_hash        text PRIMARY KEY,
    family_id         text NOT NULL,
    client_id         text NOT NULL REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
    subject           text NOT NULL,
    scopes            text[] NOT NULL,
    requested_scopes  text[] NOT NULL,
    audience          text[] NOT NULL,
    session           jsonb NOT NULL,
    access_jti        text NOT NULL DEFAULT '',
    access_expires_at timestamptz,
    requested_at      timestamptz NOT NULL,
    expires_at        timestamptz NOT NULL,
    used_at           timestamptz,
    revoked_at        timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX oauth_refresh_tokens_family ON oauth_refresh_tokens (family_id);
CREATE INDEX oauth_refresh_tokens_expires ON oauth_refresh_tokens (expires_at);

-- An authorization code lives for minutes and is used once; the PKCE
-- challenge is kept with it.
CREATE TABLE oauth_authorization_codes (
    code_hash             text PRIMARY KEY,
    request_id            text NOT NULL,
    client_id             text NOT NULL REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
    subject               text NOT NULL,
    scopes                text[] NOT NULL,
    requested_scopes      text[] NOT NULL,
    audience              text[] NOT NULL,
    redirect_uri          text NOT NULL,
    session               jsonb NOT NULL,
    code_challenge        text,
    code_challenge_method text,
    requested_at          timestamptz NOT NULL,
    expires_at            timestamptz NOT NULL,
    used_at               timestamptz
);
CREATE INDEX oauth_authorization_codes_expires ON oauth_authorization_codes (expires_at);

CREATE TABLE revoked_tokens (
    jti        text PRIMARY KEY,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX revoked_tokens_expires ON revoked_tokens (expires_at);

-- +goose Down
DROP TABLE revoked_tokens, oauth_authorization_codes, oauth_refresh_tokens;

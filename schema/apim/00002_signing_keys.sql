-- Signing keys of the resident key manager. At most one key is active (signs
-- new tokens): the one with retired_at NULL. A retired key keeps verifying,
-- and stays in the JWKS, until its retired_at has passed, so a rotation sets
-- retired_at to now() plus the longest token lifetime and inserts the next key
-- in one transaction.

-- +goose Up
CREATE TABLE signing_keys (
    kid             text PRIMARY KEY,
    private_key_pem text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    retired_at      timestamptz
);

-- Replicas starting together race to create the first key: INSERT ... ON
-- CONFLICT on this index lets exactly one of them win.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys ((retired_at IS NULL))
    WHERE retired_at IS NULL;

-- +goose Down
DROP TABLE signing_keys;

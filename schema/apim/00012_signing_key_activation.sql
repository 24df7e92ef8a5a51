-- A rotated-in signing key is published before it signs: signs_from is when
-- it starts signing (the database's clock, which every replica reads), two
-- key reloads after the rotation, so that every control-plane replica serves
-- it in its JWKS, and gateways can fetch it, before any token carries its
-- kid. Until then the previous key keeps signing.
--
-- signed_until is the latest expiry of an API key the key signed: API keys
-- live up to a year, far longer than access tokens, so a key is not retired
-- (taken out of the JWKS) before the API keys it signed have expired.

-- +goose Up
ALTER TABLE signing_keys
    ADD COLUMN signs_from timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN signed_until timestamptz;

-- +goose Down
ALTER TABLE signing_keys DROP COLUMN signs_from, DROP COLUMN signed_until;

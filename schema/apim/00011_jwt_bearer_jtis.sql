-- The JWT bearer grant (RFC 7523): an application's client presents an
-- assertion signed by an enabled external key manager. Each assertion is
-- single-use (RFC 7523 3, "jti"): its issuer and jti are recorded here when
-- it is accepted, until its exp, so a replay anywhere in the fleet is
-- refused. The key is the issuer, not the key manager's id: a key manager
-- deleted and registered again is still the same jti space. Rows are purged
-- after expires_at (with the clock leeway) by the key manager's runner.

-- +goose Up
CREATE TABLE jwt_assertion_jtis (
    issuer      text NOT NULL,
    jti         text NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX jwt_assertion_jtis_expires ON jwt_assertion_jtis (expires_at);

-- +goose Down
DROP TABLE jwt_assertion_jtis;

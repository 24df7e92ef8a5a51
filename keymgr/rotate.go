package keymgr

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultKeyReloadInterval is Config.KeyReloadInterval when left zero.
const DefaultKeyReloadInterval = time.Minute

// tickTimeout bounds one round of Start's work.
const tickTimeout = 30 * time.Second

// generateKey makes a new RSA signing key: its kid and PKCS#8 PEM.
func generateKey() (kid, pemText string, err error) {
	priv, err := rsa.GenerateKey(rand.Reader, rsaBits)
	if err != nil {
		return "", "", fmt.Errorf("generate signing key: %w", err)
	}
	if kid, err = keyID(&priv.PublicKey); err != nil {
		return "", "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", "", fmt.Errorf("encode signing key: %w", err)
	}
	return kid, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), nil
}

// activationDelay is how long after a rotation the new key starts signing:
// two key reloads, so that every replica publishes it in its JWKS first.
func (s *Server) activationDelay() time.Duration { return 2 * s.cfg.KeyReloadInterval }

// RotateKeys adds a new signing key. Every replica publishes it in its JWKS
// at its next reload (Start), and it starts signing two reloads after the
// rotation (signs_from), so no token carries a kid a replica or gateway has
// not seen yet; until then the previous key signs. The previous key is
// retired: it stays in the JWKS and keeps verifying until every token and
// API key it signed has expired (retired_at).
//
// The `apim rotate-keys` command runs it against the control plane's
// database: it builds a Server with New (the same Config as the control
// plane, so AccessTokenTTL matches) and calls RotateKeys once.
func (s *Server) RotateKeys(ctx context.Context) error {
	if _, err := s.rotate(ctx, 0); err != nil {
		return err
	}
	return s.reloadKeys(ctx)
}

// rotate rotates the keys if the active key is at least olderThan old (0:
// always), and reports whether it did. The active key's row is locked, so
// replicas rotating on the same schedule rotate once.
func (s *Server) rotate(ctx context.Context, olderThan time.Duration) (bool, error) {
	if olderThan > 0 { // a cheap check first: generating a key costs ~100 ms
		var due bool
		if err := s.cfg.APIM.QueryRow(ctx, `
			SELECT coalesce(bool_and(created_at <= now() - make_interval(secs => $1)), true)
			FROM signing_keys WHERE retired_at IS NULL`, olderThan.Seconds()).Scan(&due); err != nil {
			return false, fmt.Errorf("rotate signing keys: %w", err)
		}
		if !due {
			return false, nil
		}
	}
	kid, pemText, err := generateKey()
	if err != nil {
		return false, err
	}
	rotated := false
	err = pgx.BeginFunc(ctx, s.cfg.APIM, func(tx pgx.Tx) error {
		var (
			oldKid string
			age    time.Duration
		)
		err := tx.QueryRow(ctx, `
			SELECT kid, now() - created_at FROM signing_keys WHERE retired_at IS NULL FOR UPDATE`).Scan(&oldKid, &age)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return err
		case olderThan > 0 && age < olderThan:
			return nil
		default:
			// The old key signs until the new one does (activationDelay;
			// other replicas until their next reload after that), then
			// keeps verifying while its tokens can live: the longest access
			// token lifetime any client has, plus the clock leeway, and at
			// least until the API keys it signed have expired.
			if _, err := tx.Exec(ctx, `
				UPDATE signing_keys SET retired_at = greatest(
					now() + make_interval(secs => $2 + greatest($3, (
						SELECT coalesce(max(greatest(longest_access_ttl, app_access_ttl, user_access_ttl)), 0) FROM oauth_clients))),
					signed_until + make_interval(secs => $4))
				WHERE kid = $1`,
				oldKid, (s.activationDelay() + s.cfg.KeyReloadInterval + clockLeeway).Seconds(),
				s.cfg.AccessTokenTTL.Seconds(), clockLeeway.Seconds()); err != nil {
				return err
			}
		}
		delay := time.Duration(0) // the first key signs at once
		if oldKid != "" {
			delay = s.activationDelay()
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO signing_keys (kid, private_key_pem, signs_from)
			VALUES ($1, $2, now() + make_interval(secs => $3))`, kid, pemText, delay.Seconds()); err != nil {
			return err
		}
		rotated = true
		if oldKid != "" {
			s.log.Info().Str("kid", kid).Str("retired_kid", oldKid).Dur("signs_in", delay).Msg("signing key rotated")
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("rotate signing keys: %w", err)
	}
	return rotated, nil
}

// reloadKeys reads the key set again: a rotation by any replica, and the
// retired keys past their retired_at, dropped from the JWKS.
func (s *Server) reloadKeys(ctx context.Context) error {
	ks, err := loadKeys(ctx, s.cfg.APIM)
	if err != nil {
		return err
	}
	s.keys.Store(ks)
	return nil
}

// Start is the key manager's runner: every KeyReloadInterval it rotates the
// signing key if KeyRotationInterval is set and the active key is that old,
// reloads the key set (so every replica sees every rotation within one
// interval), and deletes token state past its expiry. Failures are logged
// and retried at the next tick; Start returns when ctx ends.
func (s *Server) Start(ctx context.Context) error {
	t := time.NewTicker(s.cfg.KeyReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.tick(ctx)
		}
	}
}

func (s *Server) tick(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, tickTimeout)
	defer cancel()
	if s.cfg.KeyRotationInterval > 0 {
		if _, err := s.rotate(ctx, s.cfg.KeyRotationInterval); err != nil {
			s.log.Error().Err(err).Msg("scheduled key rotation")
		}
	}
	if err := s.reloadKeys(ctx); err != nil {
		s.log.Error().Err(err).Msg("reload signing keys")
	}
	if err := s.purgeExpired(ctx); err != nil {
		s.log.Error().Err(err).Msg("purge expired tokens")
	}
}

// purgeExpired deletes refresh tokens, codes, opaque access tokens and
// revocations whose tokens have expired (with the leeway verification
// allows), and keys retired long enough ago that no replica verifies with
// them.
func (s *Server) purgeExpired(ctx context.Context) error {
	for _, q := range []string{
		`DELETE FROM oauth_refresh_tokens WHERE expires_at < now() - make_interval(secs => $1)`,
		`DELETE FROM oauth_authorization_codes WHERE expires_at < now() - make_interval(secs => $1)`,
		`DELETE FROM revoked_tokens WHERE expires_at < now() - make_interval(secs => $1)`,
		`DELETE FROM oauth_access_tokens WHERE expires_at < now() - make_interval(secs => $1)`,
		`DELETE FROM revoked_clients WHERE expires_at < now() - make_interval(secs => $1)`,
		`DELETE FROM signing_keys WHERE retired_at < now() - make_interval(secs => $1)`,
		`DELETE FROM jwt_assertion_jtis WHERE expires_at < now() - make_interval(secs => $1)`, // jwtbearer.go
	} {
		if _, err := s.cfg.APIM.Exec(ctx, q, clockLeeway.Seconds()); err != nil {
			return err
		}
	}
	return nil
}

package keymgr

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// API keys are WSO2's: self-contained JWTs signed by the key manager's
// active key, sent in the apikey header. The token_type claim marks them, so
// that the gateway never takes an API key for a bearer access token nor the
// reverse. They are not stored; a revoked one is remembered by jti in
// revoked_tokens until it expires, like an access token.

// TokenTypeAPIKey is the token_type claim of every API key.
const TokenTypeAPIKey = "apiKey"

// MaxAPIKeyValidity is the longest an API key lives. WSO2's validityPeriod
// -1 ("never expires") gets this, because a key with no exp could never be
// forgotten by the revocation list.
const MaxAPIKeyValidity = 365 * 24 * time.Hour

// APIKeyApplication is the application claim of an API key.
type APIKeyApplication struct {
	ID    string `json:"id"`
	UUID  string `json:"uuid"`
	Name  string `json:"name"`
	Owner string `json:"owner"`
	Tier  string `json:"tier"`
}

// APIKeyClaims are what an API key says beyond iss, jti, iat and token_type,
// which SignAPIKey sets.
type APIKeyClaims struct {
	Subject     string            // the application's owner
	KeyType     string            // PRODUCTION or SANDBOX
	Application APIKeyApplication // the application the key calls for
	// Validity is how long the key lives; at most MaxAPIKeyValidity, and
	// zero or less means MaxAPIKeyValidity.
	Validity time.Duration
	// PermittedIP is a comma-separated list of addresses and CIDR ranges;
	// empty permits any.
	PermittedIP string
	// PermittedReferer is a comma-separated list of Referer patterns with *
	// wildcards; empty permits any.
	PermittedReferer string
}

type apiKeyPayload struct {
	josejwt.Claims
	TokenType        string            `json:"token_type"`
	KeyType          string            `json:"keytype"`
	Application      APIKeyApplication `json:"application"`
	PermittedIP      string            `json:"permittedIP,omitempty"`
	PermittedReferer string            `json:"permittedReferer,omitempty"`
}

// SignAPIKey issues an API key: an RS256 JWT signed by the active key. It
// returns the key and its expiry.
func (s *Server) SignAPIKey(ctx context.Context, c APIKeyClaims) (string, time.Time, error) {
	if err := ctx.Err(); err != nil {
		return "", time.Time{}, err
	}
	if c.Subject == "" || c.Application.ID == "" || (c.KeyType != "PRODUCTION" && c.KeyType != "SANDBOX") {
		return "", time.Time{}, errors.New("sign api key: subject, application id and key type are required")
	}
	if c.Validity <= 0 || c.Validity > MaxAPIKeyValidity {
		c.Validity = MaxAPIKeyValidity
	}
	ks := s.keys.Load()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: ks.active.priv},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", ks.active.kid))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign api key: %w", err)
	}
	now := time.Now().Truncate(time.Second)
	exp := now.Add(c.Validity)
	if c.Application.UUID == "" {
		c.Application.UUID = c.Application.ID
	}
	raw, err := josejwt.Signed(signer).Claims(apiKeyPayload{
		Claims: josejwt.Claims{
			Issuer: s.cfg.Issuer, Subject: c.Subject, ID: uuid.NewString(),
			IssuedAt: josejwt.NewNumericDate(now), Expiry: josejwt.NewNumericDate(exp),
		},
		TokenType: TokenTypeAPIKey, KeyType: c.KeyType, Application: c.Application,
		PermittedIP: c.PermittedIP, PermittedReferer: c.PermittedReferer,
	}).Serialize()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign api key: %w", err)
	}
	// The key that signed it must outlive it: record the expiry, and push a
	// retirement already set (a key that signs on between its rotation and
	// its successor's signs_from) past it.
	if _, err := s.cfg.APIM.Exec(ctx, `
		UPDATE signing_keys SET signed_until = greatest(signed_until, $2),
			retired_at = CASE WHEN retired_at IS NULL THEN NULL ELSE greatest(retired_at, $2 + make_interval(secs => $3)) END
		WHERE kid = $1`, ks.active.kid, exp, clockLeeway.Seconds()); err != nil {
		return "", time.Time{}, fmt.Errorf("sign api key: record its expiry: %w", err)
	}
	return raw, exp, nil
}

// ErrNotAPIKey is returned by RevokeAPIKey for a string that is not an API
// key of this server for that application and key type.
var ErrNotAPIKey = errors.New("not an api key of this application")

// RevokeAPIKey revokes an API key of the application and key type: its jti
// goes to revoked_tokens until the key expires, with a revocation event, in
// one transaction (the path /oauth2/revoke takes). An expired key needs no
// revocation and is accepted silently; anything else that does not verify,
// or belongs to another application or key type, is ErrNotAPIKey.
func (s *Server) RevokeAPIKey(ctx context.Context, raw, applicationID, keyType string) error {
	tok, err := josejwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil || len(tok.Headers) != 1 {
		return ErrNotAPIKey
	}
	pub, ok := s.keys.Load().verify[tok.Headers[0].KeyID]
	if !ok {
		return ErrNotAPIKey
	}
	var p apiKeyPayload
	if err := tok.Claims(pub, &p); err != nil {
		return ErrNotAPIKey
	}
	if p.TokenType != TokenTypeAPIKey || p.Issuer != s.cfg.Issuer || p.ID == "" || p.Expiry == nil ||
		p.Application.ID != applicationID || !strings.EqualFold(p.KeyType, keyType) {
		return ErrNotAPIKey
	}
	exp := p.Expiry.Time()
	if !exp.Add(clockLeeway).After(time.Now()) {
		return nil
	}
	return pgx.BeginFunc(ctx, s.cfg.APIM, func(tx pgx.Tx) error {
		return revokeJTI(ctx, tx, p.ID, exp)
	})
}

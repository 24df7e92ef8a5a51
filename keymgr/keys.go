package keymgr

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/apim-dev/apim/internal/model"
)

// rsaBits is the signing keys' size.
const rsaBits = 2048

// clockLeeway absorbs clock skew between replicas when checking exp and nbf.
const clockLeeway = 30 * time.Second

// signingKey is one RSA key with its key id.
type signingKey struct {
	kid  string
	priv *rsa.PrivateKey
}

// keySet is the key that signs new tokens and every key that verifies them.
// It is immutable after loading.
type keySet struct {
	active signingKey
	// activeSince is when the active key was created, for scheduled rotation.
	activeSince time.Time
	verify      map[string]*rsa.PublicKey // by kid, the active key included
	jwks        []jose.JSONWebKey
}

func newKeySet(active signingKey, others ...signingKey) *keySet {
	ks := &keySet{active: active, verify: map[string]*rsa.PublicKey{}}
	for _, k := range append([]signingKey{active}, others...) {
		if _, dup := ks.verify[k.kid]; dup {
			continue
		}
		ks.verify[k.kid] = &k.priv.PublicKey
		ks.jwks = append(ks.jwks, jose.JSONWebKey{
			Key:       &k.priv.PublicKey,
			KeyID:     k.kid,
			Use:       "sig",
			Algorithm: string(jose.RS256),
		})
	}
	return ks
}

// keySetKey carries, in a token request's context, the key set whose active
// key's kid the request put in the token header, so that a rotation between
// setting the header and signing cannot mismatch the two.
type keySetKey struct{}

// signingKey is fosite's key getter: it signs with the active key of the
// request's key set, else of the current one.
func (s *Server) signingKey(ctx context.Context) (any, error) {
	if ks, ok := ctx.Value(keySetKey{}).(*keySet); ok {
		return ks.active.priv, nil
	}
	return s.keys.Load().active.priv, nil
}

// loadOrCreateKeys reads the active and still-valid retired keys; on first
// start it generates one. Replicas racing here all insert with ON CONFLICT DO
// NOTHING on the one-active-key index, then re-read the winner.
func loadOrCreateKeys(ctx context.Context, db *pgxpool.Pool) (*keySet, error) {
	ks, err := loadKeys(ctx, db)
	if err == nil || !errors.Is(err, errNoActiveKey) {
		return ks, err
	}
	kid, pemText, err := generateKey()
	if err != nil {
		return nil, err
	}
	if _, err := db.Exec(ctx, `
		INSERT INTO signing_keys (kid, private_key_pem) VALUES ($1, $2)
		ON CONFLICT ((retired_at IS NULL)) WHERE retired_at IS NULL DO NOTHING`,
		kid, pemText); err != nil {
		return nil, fmt.Errorf("store signing key: %w", err)
	}
	return loadKeys(ctx, db)
}

var errNoActiveKey = errors.New("no active signing key")

func loadKeys(ctx context.Context, db *pgxpool.Pool) (*keySet, error) {
	rows, err := db.Query(ctx, `
		SELECT kid, private_key_pem, retired_at IS NULL, signs_from <= now(), created_at
		FROM signing_keys
		WHERE retired_at IS NULL OR retired_at > now()
		ORDER BY created_at DESC`)
	if err != nil {
		return nil, fmt.Errorf("load signing keys: %w", err)
	}
	defer rows.Close()
	// The signer is the newest key that signs yet: the active (newest) key
	// once its signs_from has passed, the one it replaces until then.
	var (
		active      signingKey
		activeSince time.Time
		others      []signingKey
	)
	for rows.Next() {
		var (
			kid, pemText      string
			isActive, signing bool
			created           time.Time
		)
		if err := rows.Scan(&kid, &pemText, &isActive, &signing, &created); err != nil {
			return nil, fmt.Errorf("load signing keys: %w", err)
		}
		priv, err := parsePrivateKey(pemText)
		if err != nil {
			return nil, fmt.Errorf("signing key %s: %w", kid, err)
		}
		if isActive {
			activeSince = created
		}
		if signing && active.priv == nil {
			active = signingKey{kid: kid, priv: priv}
		} else {
			others = append(others, signingKey{kid: kid, priv: priv})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load signing keys: %w", err)
	}
	if active.priv == nil {
		return nil, errNoActiveKey
	}
	ks := newKeySet(active, others...)
	ks.activeSince = activeSince
	return ks, nil
}

func parsePrivateKey(pemText string) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode([]byte(pemText))
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse PKCS#8: %w", err)
	}
	priv, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is %T, want RSA", key)
	}
	return priv, nil
}

// keyID is the RFC 7638 thumbprint of the public key.
func keyID(pub *rsa.PublicKey) (string, error) {
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("key thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// PublicKeys returns the keys that verify the server's tokens, for an
// in-process verifier such as the all-in-one gateway's ext_authz.
func (s *Server) PublicKeys() []jose.JSONWebKey {
	return append([]jose.JSONWebKey(nil), s.keys.Load().jwks...)
}

// Key returns the public key with the given kid, so that a gateway in the same
// process verifies tokens without fetching the JWKS.
func (s *Server) Key(kid string) (crypto.PublicKey, bool) {
	k, ok := s.keys.Load().verify[kid]
	return k, ok
}

func (s *Server) handleJWKS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "public, max-age=300")
	writeJSON(w, http.StatusOK, jose.JSONWebKeySet{Keys: s.keys.Load().jwks})
}

// Sentinel token verification errors.
var (
	ErrTokenMalformed = errors.New("token is malformed")
	ErrTokenSignature = errors.New("token signature is invalid")
	ErrTokenClaims    = errors.New("token claims are invalid")
)

// tokenClaims are the claims VerifyToken reads beyond the registered ones.
type tokenClaims struct {
	ClientID string `json:"client_id"`
	Scope    string `json:"scope"`
	// Aut is WSO2's authorized user type: APPLICATION for a client's own
	// token, APPLICATION_USER for a user's.
	Aut string `json:"aut"`
}

// Values of the aut claim.
const (
	autApplication     = "APPLICATION"
	autApplicationUser = "APPLICATION_USER"
)

// ErrTokenRevoked is returned by VerifyToken for a revoked token.
var ErrTokenRevoked = errors.New("token is revoked")

// verified is a verified access token.
type verified struct {
	model.Principal
	jti      string
	aut      string
	audience []string
	issuedAt time.Time
}

// userToken reports whether the token was issued to a user (password or
// authorization_code grant, or a refresh of those) rather than to the client
// itself. Tokens from before the aut claim count as users' when the subject
// is not the client.
func (v *verified) userToken() bool {
	if v.aut != "" {
		return v.aut == autApplicationUser
	}
	return v.Subject != v.ClientID
}

// VerifyToken verifies an access token this server issued: a JWT (RS256
// signature by a current key, issuer, expiry, not-before) or an opaque one
// (known, not expired), and that it is not revoked, by its jti or by a
// revocation of its client (ErrTokenRevoked).
func (s *Server) VerifyToken(ctx context.Context, raw string) (*model.Principal, error) {
	v, err := s.verify(ctx, raw)
	if err != nil {
		return nil, err
	}
	return &v.Principal, nil
}

func (s *Server) verify(ctx context.Context, raw string) (*verified, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if strings.HasPrefix(raw, accessTokenPrefix) {
		return s.verifyOpaque(ctx, raw)
	}
	v, err := s.keys.Load().verifyToken(raw, s.cfg.Issuer, time.Now())
	if err != nil {
		return nil, err
	}
	if v.jti == "" {
		return nil, fmt.Errorf("%w: no jti", ErrTokenClaims)
	}
	revoked, err := s.revokedJWT(ctx, v)
	if err != nil {
		return nil, err
	}
	if revoked {
		return nil, ErrTokenRevoked
	}
	return v, nil
}

func (ks *keySet) verifyToken(raw, issuer string, now time.Time) (*verified, error) {
	tok, err := josejwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTokenMalformed, err)
	}
	if len(tok.Headers) != 1 {
		return nil, ErrTokenMalformed
	}
	pub, ok := ks.verify[tok.Headers[0].KeyID]
	if !ok {
		return nil, fmt.Errorf("%w: unknown kid", ErrTokenSignature)
	}
	var (
		std   josejwt.Claims
		extra tokenClaims
	)
	if err := tok.Claims(pub, &std, &extra); err != nil {
		if errors.Is(err, jose.ErrCryptoFailure) {
			return nil, fmt.Errorf("%w: %w", ErrTokenSignature, err)
		}
		return nil, fmt.Errorf("%w: %w", ErrTokenMalformed, err)
	}
	if std.Expiry == nil {
		return nil, fmt.Errorf("%w: no exp", ErrTokenClaims)
	}
	if std.Subject == "" || extra.ClientID == "" {
		return nil, fmt.Errorf("%w: no sub or client_id", ErrTokenClaims)
	}
	if err := std.ValidateWithLeeway(josejwt.Expected{Issuer: issuer, Time: now}, clockLeeway); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTokenClaims, err)
	}
	v := &verified{
		Principal: model.Principal{
			Subject:   std.Subject,
			ClientID:  extra.ClientID,
			Scopes:    strings.Fields(extra.Scope),
			ExpiresAt: std.Expiry.Time(),
		},
		jti:      std.ID,
		aut:      extra.Aut,
		audience: std.Audience,
	}
	if std.IssuedAt != nil {
		v.issuedAt = std.IssuedAt.Time()
	}
	return v, nil
}

package keymgr

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
)

// Access-token formats, WSO2's application tokenType values.
const (
	// TokenTypeJWT is a self-contained RS256 JWT access token, the default.
	TokenTypeJWT = "JWT"
	// TokenTypeOAuth is an opaque reference token (WSO2's "OAUTH"): a random
	// string the key manager stores hashed with its claims, which resource
	// servers and gateways introspect.
	TokenTypeOAuth = "OAUTH"
)

// accessTokenPrefix starts every opaque access token, as refresh tokens and
// codes have theirs (tokens.go): a leaked one is recognisable, and the
// gateway knows without a lookup which tokens to introspect.
const accessTokenPrefix = "apim_at_"

// opaqueAccessTokenLen is the length of an opaque access token: the prefix
// and 32 random bytes in unpadded base64url.
var opaqueAccessTokenLen = len(accessTokenPrefix) + (opaqueTokenBytes*8+5)/6

// IsOpaqueAccessToken reports whether s has the form of an opaque access
// token of ours (apim_at_ and 43 base64url characters). It says nothing of
// whether the token exists.
func IsOpaqueAccessToken(s string) bool {
	if len(s) != opaqueAccessTokenLen || !strings.HasPrefix(s, accessTokenPrefix) {
		return false
	}
	for i := len(accessTokenPrefix); i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

// opaqueClient reports whether a request's client gets opaque access tokens.
func opaqueClient(c fosite.Client) bool {
	cl, ok := c.(*client)
	return ok && cl.TokenType == TokenTypeOAuth
}

// tokenStrategy is fosite's JWT strategy, except that the clients of
// applications with tokenType OAUTH get opaque access tokens. Refresh tokens
// and codes are opaque for everyone (the JWT strategy delegates them to
// opaqueCore).
type tokenStrategy struct {
	*oauth2.DefaultJWTStrategy
}

var _ oauth2.CoreStrategy = tokenStrategy{}

// AccessTokenSignature implements oauth2.AccessTokenStrategy: an opaque
// token's storage key is its SHA-256.
func (t tokenStrategy) AccessTokenSignature(ctx context.Context, token string) string {
	if strings.HasPrefix(token, accessTokenPrefix) {
		return hashSecret(token)
	}
	return t.DefaultJWTStrategy.AccessTokenSignature(ctx, token)
}

// GenerateAccessToken implements oauth2.AccessTokenStrategy.
func (t tokenStrategy) GenerateAccessToken(ctx context.Context, r fosite.Requester) (string, string, error) {
	if opaqueClient(r.GetClient()) {
		return newOpaque(accessTokenPrefix)
	}
	return t.DefaultJWTStrategy.GenerateAccessToken(ctx, r)
}

// ValidateAccessToken implements oauth2.AccessTokenStrategy.
func (t tokenStrategy) ValidateAccessToken(ctx context.Context, r fosite.Requester, token string) error {
	if strings.HasPrefix(token, accessTokenPrefix) {
		return validateExpiry(r, fosite.AccessToken)
	}
	return t.DefaultJWTStrategy.ValidateAccessToken(ctx, r, token)
}

// CreateAccessTokenSession stores what an issued access token needs
// later. An opaque token is stored by its hash with its claims (the jti
// the token endpoint set included). The access token of an authorization
// code, either kind, is recorded with the code, so that a replay of the
// code revokes it even when no refresh token was issued. JWTs are not
// stored otherwise.
func (st *store) CreateAccessTokenSession(ctx context.Context, signature string, r fosite.Requester) error {
	sess, err := sessionOf(r)
	if err != nil {
		return err
	}
	var jti, aut string
	var issued time.Time
	if sess.JWTClaims != nil {
		jti, issued = sess.JWTClaims.JTI, sess.JWTClaims.IssuedAt
		aut, _ = sess.JWTClaims.Extra["aut"].(string)
	}
	// Whole seconds, as a JWT's exp claim.
	exp := sess.GetExpiresAt(fosite.AccessToken).Truncate(time.Second)
	if r.GetRequestForm().Get("grant_type") == GrantAuthorizationCode && jti != "" && !exp.IsZero() {
		if _, err := st.db(ctx).Exec(ctx, `
			UPDATE oauth_authorization_codes SET access_jti = $2, access_expires_at = $3 WHERE request_id = $1`,
			r.GetID(), jti, exp); err != nil {
			return fmt.Errorf("record the code's access token: %w", err)
		}
	}
	if !opaqueClient(r.GetClient()) {
		return nil
	}
	if jti == "" || exp.IsZero() || issued.IsZero() {
		return errors.New("opaque access token without jti, iat or expiry")
	}
	if _, err := st.db(ctx).Exec(ctx, `
		INSERT INTO oauth_access_tokens (token_hash, jti, request_id, client_id, subject, aut, scopes,
			audience, issued_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		signature, jti, r.GetID(), r.GetClient().GetID(), sess.Subject, aut, nonNil(r.GetGrantedScopes()),
		nonNil(r.GetGrantedAudience()), issued, exp); err != nil {
		return fmt.Errorf("store access token: %w", err)
	}
	return nil
}

// GetAccessTokenSession finds nothing: the server's own endpoints read
// opaque tokens with verifyOpaque, not through fosite.
func (st *store) GetAccessTokenSession(context.Context, string, fosite.Session) (fosite.Requester, error) {
	return nil, fosite.ErrNotFound
}

// DeleteAccessTokenSession is a no-op: tokens are revoked by jti, and
// their rows kept until they expire.
func (st *store) DeleteAccessTokenSession(context.Context, string) error { return nil }

// RevokeAccessToken revokes the access tokens issued under a request id:
// fosite calls it when an authorization code is replayed (the request id
// is the code's) and when a refresh token is reused (the family's).
func (st *store) RevokeAccessToken(ctx context.Context, requestID string) error {
	return revokeRequestAccess(ctx, st.db(ctx), requestID)
}

// revokeRequestAccess revokes, by jti, the unexpired opaque access tokens
// of a request id and the access token its authorization code was
// exchanged for, with a revocation event each, in one transaction.
func revokeRequestAccess(ctx context.Context, db querier, requestID string) error {
	b, ok := db.(beginner)
	if !ok {
		return fmt.Errorf("revoke access tokens: %T cannot begin a transaction", db)
	}
	err := pgx.BeginFunc(ctx, b, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
			SELECT jti, expires_at FROM oauth_access_tokens WHERE request_id = $1 AND expires_at > now()
			UNION
			SELECT access_jti, access_expires_at FROM oauth_authorization_codes
			WHERE request_id = $1 AND access_jti <> '' AND access_expires_at > now()`, requestID)
		if err != nil {
			return err
		}
		type issued struct {
			jti string
			exp time.Time
		}
		access, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (issued, error) {
			var a issued
			return a, r.Scan(&a.jti, &a.exp)
		})
		if err != nil {
			return err
		}
		for _, a := range access {
			if err := revokeJTI(ctx, tx, a.jti, a.exp); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("revoke the access tokens of request %s: %w", requestID, err)
	}
	return nil
}

// verifyOpaque checks an opaque access token: known, not expired, not
// revoked by its jti nor by a revocation of its client (a regenerated
// secret).
func (s *Server) verifyOpaque(ctx context.Context, raw string) (*verified, error) {
	if !IsOpaqueAccessToken(raw) {
		return nil, fmt.Errorf("%w: not an opaque access token", ErrTokenMalformed)
	}
	v := &verified{}
	var revoked bool
	err := s.cfg.APIM.QueryRow(ctx, `
		SELECT t.jti, t.client_id, t.subject, t.aut, t.scopes, t.audience, t.issued_at, t.expires_at,
			EXISTS (SELECT 1 FROM revoked_tokens r WHERE r.jti = t.jti)
			OR EXISTS (SELECT 1 FROM revoked_clients c
				WHERE c.client_id = t.client_id AND c.issued_before > t.issued_at AND c.expires_at > now())
		FROM oauth_access_tokens t WHERE t.token_hash = $1`, hashSecret(raw)).
		Scan(&v.jti, &v.ClientID, &v.Subject, &v.aut, &v.Scopes, &v.audience, &v.issuedAt, &v.ExpiresAt, &revoked)
	if errors.Is(err, pgx.ErrNoRows) {
		// Unknown: never issued, or expired and purged.
		return nil, fmt.Errorf("%w: unknown opaque access token", ErrTokenMalformed)
	}
	if err != nil {
		return nil, fmt.Errorf("find access token: %w", err)
	}
	if !time.Now().Before(v.ExpiresAt) {
		return nil, fmt.Errorf("%w: expired", ErrTokenClaims)
	}
	if revoked {
		return nil, ErrTokenRevoked
	}
	v.ExpiresAt, v.issuedAt = v.ExpiresAt.UTC(), v.issuedAt.UTC()
	return v, nil
}

// Introspection is the RFC 7662 answer about an access token, as the
// gateway introspection endpoint gives it.
type Introspection struct {
	Active    bool     `json:"active"`
	TokenType string   `json:"token_type,omitempty"`
	ClientID  string   `json:"client_id,omitempty"`
	Subject   string   `json:"sub,omitempty"`
	Username  string   `json:"username,omitempty"`
	Scope     string   `json:"scope,omitempty"`
	JTI       string   `json:"jti,omitempty"`
	Issuer    string   `json:"iss,omitempty"`
	Audience  []string `json:"aud,omitempty"`
	IssuedAt  int64    `json:"iat,omitempty"`
	NotBefore int64    `json:"nbf,omitempty"`
	ExpiresAt int64    `json:"exp,omitempty"`
}

// IntrospectAccessToken says whether an access token of this server (JWT or
// opaque) is active, and what it grants; a refresh token, an unknown,
// expired or revoked token is inactive. Gateways in the same process call
// it directly; others through GatewayIntrospectionHandler.
func (s *Server) IntrospectAccessToken(ctx context.Context, token string) (*Introspection, error) {
	if strings.HasPrefix(token, refreshTokenPrefix) || strings.HasPrefix(token, authzCodePrefix) {
		return &Introspection{}, nil
	}
	v, err := s.verify(ctx, token)
	if err != nil {
		if inactiveError(err) {
			return &Introspection{}, nil
		}
		return nil, err
	}
	in := &Introspection{
		Active: true, TokenType: "Bearer", ClientID: v.ClientID, Subject: v.Subject,
		Scope: strings.Join(v.Scopes, " "), JTI: v.jti, Issuer: s.cfg.Issuer, Audience: v.audience,
		ExpiresAt: v.ExpiresAt.Unix(),
	}
	if !v.issuedAt.IsZero() {
		in.IssuedAt, in.NotBefore = v.issuedAt.Unix(), v.issuedAt.Unix()
	}
	if v.userToken() {
		in.Username = v.Subject
	}
	return in, nil
}

// inactiveError reports whether a verification error means the token is
// not valid, rather than that it could not be checked.
func inactiveError(err error) bool {
	return errors.Is(err, ErrTokenRevoked) || errors.Is(err, ErrTokenMalformed) ||
		errors.Is(err, ErrTokenSignature) || errors.Is(err, ErrTokenClaims)
}

// GatewayTokenCheck returns a check that a request carries the shared
// gateway.token as "Authorization: Bearer <token>", the credential of the
// control plane's endpoints for gateways. With token empty every request
// fails it. Digests are compared, so the comparison takes the same time
// whatever the length of the token presented.
func GatewayTokenCheck(token string) func(*http.Request) bool {
	want := sha256.Sum256([]byte(token))
	return func(r *http.Request) bool {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		gotSum := sha256.Sum256([]byte(got))
		return token != "" && ok && subtle.ConstantTimeCompare(gotSum[:], want[:]) == 1
	}
}

// PathGatewayIntrospect is where the control plane serves
// GatewayIntrospectionHandler.
const PathGatewayIntrospect = "/internal/data/v1/introspect"

// GatewayIntrospectionHandler is RFC 7662 introspection for the gateways:
// POST a form with token=..., authenticated with "Authorization: Bearer
// <token>", the shared gateway.token (the credential the gateways already
// hold for the full state), not an OAuth client. Only access tokens can be
// active. With token empty it refuses every call. The token introspected is
// never logged.
func (s *Server) GatewayIntrospectionHandler(token string) http.Handler {
	gateway := GatewayTokenCheck(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !gateway(r) {
			s.log.Info().Str("path", r.URL.Path).Msg("gateway introspection refused: bad gateway token")
			w.Header().Set("WWW-Authenticate", `Bearer realm="apim"`)
			writeOAuthError(w, http.StatusUnauthorized, "invalid_client", "The gateway token is missing or wrong.")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBody)
		if err := r.ParseForm(); err != nil {
			writeOAuthError(w, http.StatusBadRequest, "invalid_request", "The request body is not a valid form.")
			return
		}
		tok := r.PostForm.Get("token")
		if tok == "" {
			writeOAuthError(w, http.StatusBadRequest, "invalid_request", "The token parameter is required.")
			return
		}
		in, err := s.IntrospectAccessToken(r.Context(), tok)
		if err != nil {
			s.log.Error().Err(err).Msg("gateway introspection failed")
			writeOAuthError(w, http.StatusInternalServerError, "server_error", "The token could not be introspected.")
			return
		}
		s.log.Debug().Str("client_id", in.ClientID).Bool("active", in.Active).Msg("token introspected for a gateway")
		writeJSON(w, http.StatusOK, in)
	})
}

package keymgr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/ory/fosite"

	"github.com/apim-dev/apim/internal/events"
)

// maxFormBody bounds the form bodies of the revocation and introspection
// endpoints.
const maxFormBody = 16 << 10

// revocationData is the data of a revocation event (schema/events.md).
type revocationData struct {
	JTI       string    `json:"jti"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// revokeJTI records an access token's jti as revoked until it expires, and
// appends the revocation event, in the caller's transaction. Revoking a
// revoked token again changes nothing and appends nothing.
func revokeJTI(ctx context.Context, tx pgx.Tx, jti string, exp time.Time) error {
	exp = exp.UTC().Truncate(time.Second)
	tag, err := tx.Exec(ctx, `
		INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING`, jti, exp)
	if err != nil {
		return fmt.Errorf("revoke token %s: %w", jti, err)
	}
	if tag.RowsAffected() == 0 {
		return nil
	}
	if err := appendRevocation(ctx, tx, jti, revocationData{JTI: jti, ExpiresAt: exp}); err != nil {
		return fmt.Errorf("revoke token %s: %w", jti, err)
	}
	return nil
}

// appendRevocation appends the revocation event id (a jti, or
// ClientRevocationID) with data, under a new generation, to the outbox of
// tx, for every gateway.
func appendRevocation(ctx context.Context, tx pgx.Tx, id string, data any) error {
	var gen int64
	if err := tx.QueryRow(ctx, `SELECT nextval('generation_seq')`).Scan(&gen); err != nil {
		return fmt.Errorf("generation: %w", err)
	}
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	return events.Append(ctx, tx, events.Event{
		Kind: events.KindRevocation, Op: events.OpUpsert, ID: id, Generation: gen, Data: b,
	})
}

// Revoked reports whether the access token with this jti was revoked.
// Revocations are kept until the token expires; after that the token is
// refused for its expiry anyway.
func (s *Server) Revoked(ctx context.Context, jti string) (bool, error) {
	var revoked bool
	if err := s.cfg.APIM.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = $1)`, jti).Scan(&revoked); err != nil {
		return false, fmt.Errorf("revoked %s: %w", jti, err)
	}
	return revoked, nil
}

// revokedJWT reports whether a verified JWT was revoked: its jti, or every
// token its client was issued before a regenerated secret.
func (s *Server) revokedJWT(ctx context.Context, v *verified) (bool, error) {
	iat := v.issuedAt
	if iat.IsZero() {
		iat = time.Unix(0, 0)
	}
	var revoked bool
	if err := s.cfg.APIM.QueryRow(ctx, `
		SELECT EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = $1)
			OR EXISTS (SELECT 1 FROM revoked_clients
				WHERE client_id = $2 AND issued_before > $3 AND expires_at > now())`,
		v.jti, v.ClientID, iat).Scan(&revoked); err != nil {
		return false, fmt.Errorf("revoked %s: %w", v.jti, err)
	}
	return revoked, nil
}

// authenticateClient authenticates the calling client of the revocation and
// introspection endpoints: HTTP basic (client_secret_basic) or
// client_id/client_secret in the form (client_secret_post). It writes the
// error response itself and returns nil on failure.
func (s *Server) authenticateClient(w http.ResponseWriter, r *http.Request) *client {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBody)
	if err := r.ParseForm(); err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "The request body is not a valid form.")
		return nil
	}
	id, secret, ok := r.BasicAuth()
	if ok {
		// RFC 6749 2.3.1: the credentials are form-urlencoded in the header.
		id, secret = unescape(id), unescape(secret)
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	st := &store{apim: s.cfg.APIM}
	fc, err := st.GetClient(r.Context(), id)
	var c *client
	if err == nil {
		c, _ = fc.(*client)
	}
	if id == "" || c == nil || (sha256Hasher{}).Compare(r.Context(), c.Secret, []byte(secret)) != nil {
		if err != nil && !errors.Is(err, fosite.ErrNotFound) {
			s.log.Error().Err(err).Msg("client authentication")
			writeOAuthError(w, http.StatusInternalServerError, "server_error", "The client could not be authenticated.")
			return nil
		}
		s.log.Info().Str("path", r.URL.Path).Msg("client authentication failed")
		writeOAuthError(w, http.StatusUnauthorized, "invalid_client", "Client authentication failed.")
		return nil
	}
	return c
}

func unescape(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

// handleRevoke is RFC 7009 token revocation. An access token (a JWT or an
// opaque token of ours) is revoked by its jti until it expires, announced to the gateways
// by a revocation event; a refresh token revokes its whole family and the
// access tokens issued with it. A token that is unknown, expired or not
// ours answers 200, as RFC 7009 2.2 asks; a token of another client is
// refused.
func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) {
	c := s.authenticateClient(w, r)
	if c == nil {
		return
	}
	ctx := r.Context()
	token := r.PostForm.Get("token")
	if token == "" {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "The token parameter is required.")
		return
	}
	kind, err := s.revoke(ctx, c.ID, token)
	switch {
	case errors.Is(err, errOtherClient):
		s.log.Info().Str("client_id", c.ID).Str("kind", kind).Msg("revocation refused: token of another client")
		writeOAuthError(w, http.StatusBadRequest, "unauthorized_client", "The token was not issued to this client.")
		return
	case err != nil:
		s.log.Error().Err(err).Str("client_id", c.ID).Msg("revocation failed")
		writeOAuthError(w, http.StatusInternalServerError, "server_error", "The token could not be revoked.")
		return
	}
	s.log.Info().Str("client_id", c.ID).Str("kind", kind).Msg("token revoked")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}

var errOtherClient = errors.New("token of another client")

// revoke revokes the token if it is this client's; kind says what it was:
// refresh_token, access_token or unknown.
func (s *Server) revoke(ctx context.Context, clientID, token string) (kind string, err error) {
	if strings.HasPrefix(token, refreshTokenPrefix) {
		var familyID, owner string
		err := s.cfg.APIM.QueryRow(ctx, `SELECT family_id, client_id FROM oauth_refresh_tokens WHERE token_hash = $1`,
			hashSecret(token)).Scan(&familyID, &owner)
		if errors.Is(err, pgx.ErrNoRows) {
			return "unknown", nil
		}
		if err != nil {
			return "refresh_token", fmt.Errorf("find refresh token: %w", err)
		}
		if owner != clientID {
			return "refresh_token", errOtherClient
		}
		return "refresh_token", revokeFamily(ctx, s.cfg.APIM, familyID)
	}
	if strings.HasPrefix(token, accessTokenPrefix) {
		return s.revokeOpaque(ctx, clientID, token)
	}
	// An access token: revocable while it verifies; an expired one needs
	// no revocation.
	v, err := s.keys.Load().verifyToken(token, s.cfg.Issuer, time.Now())
	if err != nil {
		return "unknown", nil
	}
	if v.ClientID != clientID {
		return "access_token", errOtherClient
	}
	if v.jti == "" {
		return "access_token", fmt.Errorf("access token of %s without jti", clientID)
	}
	return "access_token", pgx.BeginFunc(ctx, s.cfg.APIM, func(tx pgx.Tx) error {
		return revokeJTI(ctx, tx, v.jti, v.ExpiresAt)
	})
}

// revokeOpaque revokes an opaque access token of the client by its jti,
// as a JWT is: a revoked_tokens row and a revocation event, which the
// gateways match against the jti their introspection cached.
func (s *Server) revokeOpaque(ctx context.Context, clientID, token string) (string, error) {
	var (
		jti, owner string
		exp        time.Time
	)
	err := s.cfg.APIM.QueryRow(ctx, `SELECT jti, client_id, expires_at FROM oauth_access_tokens WHERE token_hash = $1`,
		hashSecret(token)).Scan(&jti, &owner, &exp)
	if errors.Is(err, pgx.ErrNoRows) {
		return "unknown", nil
	}
	if err != nil {
		return "access_token", fmt.Errorf("find access token: %w", err)
	}
	if owner != clientID {
		return "access_token", errOtherClient
	}
	if !exp.After(time.Now()) {
		return "access_token", nil // expired: refused for that already
	}
	return "access_token", pgx.BeginFunc(ctx, s.cfg.APIM, func(tx pgx.Tx) error {
		return revokeJTI(ctx, tx, jti, exp)
	})
}

// handleIntrospect is RFC 7662 token introspection, for any authenticated
// client (resource servers included). A token that is expired, revoked,
// unknown or malformed is {"active": false} and nothing else.
func (s *Server) handleIntrospect(w http.ResponseWriter, r *http.Request) {
	c := s.authenticateClient(w, r)
	if c == nil {
		return
	}
	// RFC 7662 §4: not every client may probe tokens. Applications' keys live
	// in third parties' backends; only REST clients (DCR) may introspect.
	if c.Kind == clientKindApplication {
		writeOAuthError(w, http.StatusForbidden, "unauthorized_client", "This client may not introspect tokens.")
		return
	}
	ctx := r.Context()
	token := r.PostForm.Get("token")
	if token == "" {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "The token parameter is required.")
		return
	}
	resp, err := s.introspect(ctx, token)
	if err != nil {
		s.log.Error().Err(err).Str("client_id", c.ID).Msg("introspection failed")
		writeOAuthError(w, http.StatusInternalServerError, "server_error", "The token could not be introspected.")
		return
	}
	s.log.Info().Str("client_id", c.ID).Bool("active", resp.Active).Msg("token introspected")
	writeJSON(w, http.StatusOK, resp)
}

// introspect answers RFC 7662 for a refresh token or an access token
// (IntrospectAccessToken).
func (s *Server) introspect(ctx context.Context, token string) (*Introspection, error) {
	if !strings.HasPrefix(token, refreshTokenPrefix) {
		return s.IntrospectAccessToken(ctx, token)
	}
	var (
		clientID, subject string
		scopes            []string
		issued, exp       time.Time
		active            bool
	)
	err := s.cfg.APIM.QueryRow(ctx, `
		SELECT client_id, subject, scopes, created_at, expires_at,
			used_at IS NULL AND revoked_at IS NULL AND expires_at > now()
		FROM oauth_refresh_tokens WHERE token_hash = $1`, hashSecret(token)).
		Scan(&clientID, &subject, &scopes, &issued, &exp, &active)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && !active) {
		return &Introspection{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("find refresh token: %w", err)
	}
	return &Introspection{
		Active: true, TokenType: "refresh_token", ClientID: clientID, Subject: subject, Username: subject,
		Scope: strings.Join(scopes, " "), IssuedAt: issued.Unix(), ExpiresAt: exp.Unix(), Issuer: s.cfg.Issuer,
	}, nil
}

// handleUserinfo is the OIDC userinfo endpoint: the bearer token's subject,
// and for a user's token (not a client's own) preferred_username.
func (s *Server) handleUserinfo(w http.ResponseWriter, r *http.Request) {
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || strings.TrimSpace(raw) == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="apim"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token", "error_description": "A bearer token is required."})
		return
	}
	v, err := s.verify(r.Context(), strings.TrimSpace(raw))
	if err != nil {
		if inactiveError(err) {
			s.log.Info().AnErr("reason", err).Msg("userinfo refused")
			w.Header().Set("WWW-Authenticate", `Bearer realm="apim", error="invalid_token"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token", "error_description": "The access token is invalid."})
			return
		}
		s.log.Error().Err(err).Msg("userinfo")
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "server_error"})
		return
	}
	info := map[string]any{"sub": v.Subject}
	if v.userToken() {
		info["preferred_username"] = v.Subject
	}
	writeJSON(w, http.StatusOK, info)
}

package keymgr

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
	fjwt "github.com/ory/fosite/token/jwt"
)

// handleToken is the token endpoint. fosite authenticates the client and runs
// the grant; between its request and response steps we decide the granted
// scopes and fill in the claims WSO2's tokens carry.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	// Before the client is read: the iat of a token whose client was
	// authenticated with a secret regenerated meanwhile is before the
	// regeneration (secret.go).
	start := time.Now()
	ks := s.keys.Load()
	ctx := context.WithValue(r.Context(), keySetKey{}, ks)
	ar, err := s.provider.NewAccessRequest(ctx, r, newSession(ks))
	if errors.Is(err, ErrBusy) {
		w.Header().Set("Retry-After", retryAfter)
		err = fosite.ErrTemporarilyUnavailable.WithWrap(err)
	}
	if err != nil {
		s.tokenError(ctx, w, ar, err)
		return
	}
	c, ok := ar.GetClient().(*client)
	if !ok {
		s.tokenError(ctx, w, ar, fosite.ErrServerError.WithDebugf("client is %T", ar.GetClient()))
		return
	}
	// The refresh and authorization_code grants bring the session stored
	// with the grant, not the one passed above.
	sess, err := sessionOf(ar)
	if err != nil {
		s.tokenError(ctx, w, ar, fosite.ErrServerError.WithWrap(err))
		return
	}
	grant := ar.GetGrantTypes()[0]

	// The subject: the user for the password grant (fosite set it from the
	// authenticated username) and for the grants that continue a user's
	// (authorization_code, refresh_token); the client for client_credentials.
	subject, scopeOwner, aut := c.ID, c.Owner, autApplication
	extraScopes := []string{DefaultScope}
	if grant != GrantClientCredentials {
		subject, scopeOwner, extraScopes, aut = sess.Subject, sess.Subject, nil, autApplicationUser
	}
	if subject == "" {
		s.tokenError(ctx, w, ar, fosite.ErrServerError.WithDebug("no subject in the session"))
		return
	}
	// An application's key calls APIs, not the REST APIs: its tokens get no
	// role scopes, whoever owns the application and whatever the grant.
	// Nor does a JWT bearer assertion's subject, whatever the client: it is
	// a user of an external issuer, not of ours, so it has no roles here
	// (and a local user of the same name must not lend it theirs).
	allowed := map[string]bool{}
	if c.Kind != clientKindApplication && grant != GrantJWTBearer {
		if allowed, err = userScopes(ctx, s.cfg.Shared, scopeOwner); err != nil {
			s.tokenError(ctx, w, ar, fosite.ErrServerError.WithWrap(err))
			return
		}
	}
	for _, sc := range extraScopes {
		allowed[sc] = true
	}
	switch grant {
	case GrantAuthorizationCode:
		// fosite grants the scopes the user granted at the login, minutes
		// ago, when it issues the token.
	case GrantRefreshToken:
		// The scopes granted before, less those the user's roles no longer
		// allow.
		req, ok := ar.(*fosite.AccessRequest)
		if !ok {
			s.tokenError(ctx, w, ar, fosite.ErrServerError.WithDebugf("request is %T", ar))
			return
		}
		req.GrantedScope = grantScopes(req.GrantedScope, allowed)
	default:
		for _, sc := range grantScopes(ar.GetRequestedScopes(), allowed) {
			ar.GrantScope(sc)
		}
		ar.GrantAudience(c.ID)
	}

	now := issuedAt(start, c)
	sess.Subject = subject
	sess.Username = subject
	sess.JWTHeader = &fjwt.Headers{Extra: map[string]any{"kid": ks.active.kid}}
	sess.JWTClaims = &fjwt.JWTClaims{
		Subject:   subject,
		IssuedAt:  now,
		NotBefore: now,
		// Set here, not by fosite, so that the refresh token stored with
		// this access token knows its jti (revoking a family revokes it).
		JTI:   uuid.NewString(),
		Extra: map[string]any{"azp": c.ID, "client_id": c.ID, "aut": aut},
	}

	// Refresh tokens go with a user's grants (RFC 6749 4.4.3: not with
	// client_credentials), to clients registered for the refresh grant.
	if grant == GrantClientCredentials || !c.GetGrantTypes().Has(GrantRefreshToken) {
		ctx = context.WithValue(ctx, noRefreshKey{}, true)
	}
	resp, err := s.provider.NewAccessResponse(ctx, ar)
	if err != nil {
		s.tokenError(ctx, w, ar, err)
		return
	}
	resp.SetTokenType("Bearer")
	s.provider.WriteAccessResponse(ctx, w, ar, resp)
	s.log.Info().Str("client_id", c.ID).Str("grant_type", grant).
		Strs("scopes", ar.GetGrantedScopes()).Bool("refresh_token", resp.GetExtra("refresh_token") != nil).
		Msg("token issued")
}

// newSession is the session of a new token request.
func newSession(ks *keySet) *oauth2.JWTSession {
	return &oauth2.JWTSession{
		JWTClaims: &fjwt.JWTClaims{},
		JWTHeader: &fjwt.Headers{Extra: map[string]any{"kid": ks.active.kid}},
	}
}

// grantScopes keeps the requested scopes that are allowed, in request order,
// dropping the rest silently as WSO2 does; with none left it grants "default".
func grantScopes(requested []string, allowed map[string]bool) []string {
	var granted []string
	seen := map[string]bool{}
	for _, sc := range requested {
		if allowed[sc] && !seen[sc] {
			seen[sc] = true
			granted = append(granted, sc)
		}
	}
	if len(granted) == 0 {
		granted = []string{DefaultScope}
	}
	return granted
}

// tokenError writes an RFC 6749 error and logs it without the request's
// credentials: only the error code, its description and the client id.
func (s *Server) tokenError(ctx context.Context, w http.ResponseWriter, ar fosite.AccessRequester, err error) {
	rfc := fosite.ErrorToRFC6749Error(err)
	ev := s.log.Info()
	switch {
	case rfc.CodeField == http.StatusServiceUnavailable: // overload, not a fault
		ev = s.log.Warn()
	case rfc.CodeField >= http.StatusInternalServerError:
		ev = s.log.Error().AnErr("cause", rfc.Cause()).Str("debug", rfc.Debug())
	}
	if ar != nil && ar.GetClient() != nil && ar.GetClient().GetID() != "" {
		ev = ev.Str("client_id", ar.GetClient().GetID())
	}
	ev.Str("error", rfc.ErrorField).Str("description", rfc.GetDescription()).Msg("token request refused")
	s.provider.WriteAccessError(ctx, w, ar, err)
}

// writeJSON writes v as a JSON response.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeOAuthError writes an RFC 6749 error body.
func writeOAuthError(w http.ResponseWriter, status int, code, description string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="apim"`)
	}
	writeJSON(w, status, map[string]string{"error": code, "error_description": description})
}

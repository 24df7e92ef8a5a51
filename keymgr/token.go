package keymgr

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
	fjwt "github.com/ory/fosite/token/jwt"
)

// handleToken is the token endpoint. fosite authenticates the client and runs
// the grant; between its request and response steps we decide the granted
// scopes and fill in the claims WSO2's tokens carry.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	sess := &oauth2.JWTSession{
		JWTClaims: &fjwt.JWTClaims{},
		JWTHeader: &fjwt.Headers{Extra: map[string]any{"kid": s.keys.active.kid}},
	}
	ar, err := s.provider.NewAccessRequest(ctx, r, sess)
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

	// The subject: the user for the password grant (fosite set it from the
	// authenticated username), the client for client_credentials.
	subject, scopeOwner := c.ID, c.Owner
	extraScopes := []string{DefaultScope}
	if ar.GetGrantTypes().ExactOne(GrantPassword) {
		subject, scopeOwner, extraScopes = sess.Subject, sess.Subject, nil
	}
	// An application's key calls APIs, not the REST APIs: its tokens get no
	// role scopes, whoever owns the application and whatever the grant.
	allowed := map[string]bool{}
	if c.Kind != clientKindApplication {
		if allowed, err = userScopes(ctx, s.cfg.Shared, scopeOwner); err != nil {
			s.tokenError(ctx, w, ar, fosite.ErrServerError.WithWrap(err))
			return
		}
	}
	for _, sc := range extraScopes {
		allowed[sc] = true
	}
	for _, sc := range grantScopes(ar.GetRequestedScopes(), allowed) {
		ar.GrantScope(sc)
	}
	ar.GrantAudience(c.ID)

	now := time.Now().UTC().Truncate(time.Second)
	sess.Subject = subject
	sess.JWTClaims.Subject = subject
	sess.JWTClaims.IssuedAt = now
	sess.JWTClaims.NotBefore = now
	sess.JWTClaims.Extra = map[string]any{"azp": c.ID, "client_id": c.ID}

	resp, err := s.provider.NewAccessResponse(ctx, ar)
	if err != nil {
		s.tokenError(ctx, w, ar, err)
		return
	}
	resp.SetTokenType("Bearer")
	s.provider.WriteAccessResponse(ctx, w, ar, resp)
	s.log.Info().Str("client_id", c.ID).Str("grant_type", ar.GetGrantTypes()[0]).
		Strs("scopes", ar.GetGrantedScopes()).Msg("token issued")
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

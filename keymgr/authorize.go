package keymgr

import (
	"context"
	"crypto/subtle"
	"errors"
	"html/template"
	"net/http"
	"slices"
	"strings"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
	fjwt "github.com/ory/fosite/token/jwt"
)

// csrfCookie is the login form's double-submit CSRF cookie. There is no
// login session: the form posts the user's credentials with the authorize
// request, and the CSRF token ties the post to the browser that got the form.
const csrfCookie = "apim_login_csrf"

// authorizeParams are the authorize request's parameters the login form
// carries through; nothing else is echoed.
var authorizeParams = []string{"response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge", "code_challenge_method"}

// loginPage is the login form. html/template escapes every value.
var loginPage = template.Must(template.New("login").Parse(`<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Sign in</title></head>
<body>
<main>
<h1>Sign in</h1>
<p>{{.ClientName}}, registered by {{.Owner}}, asks to act on your behalf with:</p>
<ul>{{range .Scopes}}<li>{{.}}</li>{{end}}</ul>
<p>Sign in only if you trust it. It never gets more than its owner may have.</p>
{{if .Error}}<p role="alert">{{.Error}}</p>{{end}}
<form method="post" action="{{.Action}}">
{{range .Hidden}}<input type="hidden" name="{{.Name}}" value="{{.Value}}">
{{end}}<input type="hidden" name="csrf_token" value="{{.CSRF}}">
<label>Username <input name="username" autocomplete="username" required autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Sign in and allow</button>
</form>
</main>
</body>
</html>
`))

type hiddenField struct{ Name, Value string }

type loginData struct {
	ClientName string
	Owner      string
	Scopes     []string
	Error      string
	Action     string
	Hidden     []hiddenField
	CSRF       string
}

// pageHeaders are the security headers of every page the authorize
// endpoint renders: no framing (clickjacking), no scripts, no caching, no
// referrer leaking the query.
func pageHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

// errorPage answers an authorize request that cannot be redirected back
// (unknown client, unregistered redirect_uri) with a plain page.
func errorPage(w http.ResponseWriter, status int, msg string) {
	pageHeaders(w)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(msg + "\n"))
}

// checkRedirect enforces an exact match of redirect_uri against the
// client's registered callback URLs (fosite would also let a loopback URI
// through with any port). It writes the error page itself and returns nil
// when the request must stop.
func (s *Server) checkRedirect(ctx context.Context, w http.ResponseWriter, r *http.Request) *client {
	id := r.Form.Get("client_id")
	fc, err := (&store{apim: s.cfg.APIM}).GetClient(ctx, id)
	if errors.Is(err, fosite.ErrNotFound) || id == "" {
		errorPage(w, http.StatusBadRequest, "Unknown client.")
		return nil
	}
	if err != nil {
		s.log.Error().Err(err).Msg("authorize: get client")
		errorPage(w, http.StatusInternalServerError, "The request could not be processed.")
		return nil
	}
	c, ok := fc.(*client)
	if !ok {
		errorPage(w, http.StatusInternalServerError, "The request could not be processed.")
		return nil
	}
	if ru := r.Form.Get("redirect_uri"); ru != "" && !slices.Contains(c.RedirectURIs, ru) {
		s.log.Info().Str("client_id", c.ID).Msg("authorize refused: redirect_uri not registered")
		errorPage(w, http.StatusBadRequest, "The redirect_uri is not registered for this client.")
		return nil
	}
	return c
}

// authorizeRequest checks the client and its redirect URI, then the
// authorization request with its PKCE challenge; on failure it has answered.
func (s *Server) authorizeRequest(w http.ResponseWriter, r *http.Request) (*client, fosite.AuthorizeRequester, bool) {
	ctx := r.Context()
	c := s.checkRedirect(ctx, w, r)
	if c == nil {
		return nil, nil, false
	}
	ar, err := s.provider.NewAuthorizeRequest(ctx, r)
	if err == nil {
		err = checkPKCE(ar)
	}
	if err != nil {
		s.authorizeError(ctx, w, ar, err)
		return nil, nil, false
	}
	return c, ar, true
}

// handleAuthorize validates an authorization request and shows the login
// form. Errors that can go back to the client (a bad scope, no PKCE) are
// redirected to its redirect_uri, as RFC 6749 4.1.2.1 asks.
func (s *Server) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		errorPage(w, http.StatusBadRequest, "Malformed request.")
		return
	}
	c, _, ok := s.authorizeRequest(w, r)
	if !ok {
		return
	}
	s.renderLogin(w, r, c, "")
}

// checkPKCE refuses an authorization request without an S256 challenge
// before the user types a password; fosite checks it again when it issues
// the code.
func checkPKCE(ar fosite.AuthorizeRequester) error {
	f := ar.GetRequestForm()
	if f.Get("code_challenge") == "" {
		return fosite.ErrInvalidRequest.WithHint("PKCE is required: send code_challenge with code_challenge_method=S256.")
	}
	if f.Get("code_challenge_method") != "S256" {
		return fosite.ErrInvalidRequest.WithHint("Clients must use code_challenge_method=S256, plain is not allowed.")
	}
	return nil
}

func (s *Server) authorizeError(ctx context.Context, w http.ResponseWriter, ar fosite.AuthorizeRequester, err error) {
	rfc := fosite.ErrorToRFC6749Error(err)
	ev := s.log.Info()
	if rfc.CodeField >= http.StatusInternalServerError {
		ev = s.log.Error().AnErr("cause", rfc.Cause())
	}
	ev.Str("error", rfc.ErrorField).Str("description", rfc.GetDescription()).Msg("authorize request refused")
	pageHeaders(w)
	s.provider.WriteAuthorizeError(ctx, w, ar, err)
}

func (s *Server) renderLogin(w http.ResponseWriter, r *http.Request, c *client, msg string) {
	token, err := randomToken(32)
	if err != nil {
		errorPage(w, http.StatusInternalServerError, "The request could not be processed.")
		return
	}
	// HttpOnly and SameSite always; Secure whenever BaseURL is HTTPS, and not
	// on plain-HTTP base URLs (tests, local runs) where browsers would drop it.
	http.SetCookie(w, &http.Cookie{ //nolint:gosec // G124: Secure follows BaseURL's scheme (csrfSecure), by design
		Name: csrfCookie, Value: token, Path: PathAuthorize, MaxAge: 600,
		HttpOnly: true, Secure: s.csrfSecure, SameSite: http.SameSiteLaxMode,
	})
	data := loginData{
		ClientName: c.ID, Owner: c.Owner, Error: msg, Action: PathAuthorize, CSRF: token,
		Scopes: strings.Fields(r.Form.Get("scope")),
	}
	if name, err := s.clientName(r.Context(), c.ID); err == nil {
		data.ClientName = name
	}
	for _, p := range authorizeParams {
		if v := r.Form.Get(p); v != "" {
			data.Hidden = append(data.Hidden, hiddenField{p, v})
		}
	}
	pageHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	status := http.StatusOK
	if msg != "" {
		status = http.StatusUnauthorized
	}
	w.WriteHeader(status)
	if err := loginPage.Execute(w, data); err != nil {
		s.log.Error().Err(err).Msg("render login page")
	}
}

func (s *Server) clientName(ctx context.Context, id string) (string, error) {
	var name string
	err := s.cfg.APIM.QueryRow(ctx, `SELECT name FROM oauth_clients WHERE client_id = $1`, id).Scan(&name)
	return name, err
}

// handleLogin takes the login form: it checks the CSRF token, the
// authorization request (again) and the user's password, then redirects to
// the client with a code and the state.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBody)
	if err := r.ParseForm(); err != nil {
		errorPage(w, http.StatusBadRequest, "Malformed request.")
		return
	}
	cookie, err := r.Cookie(csrfCookie)
	form := r.PostForm.Get("csrf_token")
	if err != nil || cookie.Value == "" || subtle.ConstantTimeCompare([]byte(cookie.Value), []byte(form)) != 1 {
		s.log.Info().Msg("login refused: CSRF token missing or wrong")
		errorPage(w, http.StatusForbidden, "The sign-in form expired or was not ours; start again.")
		return
	}
	c, ar, ok := s.authorizeRequest(w, r)
	if !ok {
		return
	}
	user := r.PostForm.Get("username")
	if _, err := s.Authenticate(ctx, user, r.PostForm.Get("password")); err != nil {
		switch {
		case errors.Is(err, ErrBadCredentials):
			// No user name: people type their password into that field.
			s.log.Info().Str("client_id", c.ID).Msg("login refused: bad credentials")
			s.renderLogin(w, r, c, "Wrong username or password.")
		case errors.Is(err, ErrBusy):
			s.log.Warn().Msg("login refused: too many password checks in progress")
			w.Header().Set("Retry-After", retryAfter)
			errorPage(w, http.StatusServiceUnavailable, "The server is busy; retry later.")
		default:
			s.log.Error().Err(err).Msg("login: authenticate")
			errorPage(w, http.StatusInternalServerError, "The request could not be processed.")
		}
		return
	}

	allowed := map[string]bool{}
	if c.Kind != clientKindApplication {
		if allowed, err = s.clientUserScopes(ctx, c, user); err != nil {
			s.authorizeError(ctx, w, ar, fosite.ErrServerError.WithWrap(err))
			return
		}
	}
	allowed[DefaultScope] = true
	for _, sc := range grantScopes(ar.GetRequestedScopes(), allowed) {
		ar.GrantScope(sc)
	}
	ar.GrantAudience(c.ID)
	sess := &oauth2.JWTSession{
		JWTClaims: &fjwt.JWTClaims{Subject: user},
		JWTHeader: &fjwt.Headers{},
		Subject:   user,
		Username:  user,
	}
	resp, err := s.provider.NewAuthorizeResponse(ctx, ar, sess)
	if err != nil {
		s.authorizeError(ctx, w, ar, err)
		return
	}
	// The form is used: its CSRF cookie goes.
	http.SetCookie(w, &http.Cookie{ //nolint:gosec // G124: Secure follows BaseURL's scheme (csrfSecure), by design
		Name: csrfCookie, Value: "", Path: PathAuthorize, MaxAge: -1,
		HttpOnly: true, Secure: s.csrfSecure, SameSite: http.SameSiteLaxMode,
	})
	s.log.Info().Str("client_id", c.ID).Str("user", user).Strs("scopes", ar.GetGrantedScopes()).Msg("authorization code issued")
	pageHeaders(w)
	s.provider.WriteAuthorizeResponse(ctx, w, ar, resp)
}

// clientUserScopes are the scopes user may grant to a REST client: those of
// the user's roles, and, when someone else registered the client, only those
// its owner's roles allow too. Anyone may register a client through DCR, so a
// client must never gain more through another user's sign-in than its owner
// holds.
func (s *Server) clientUserScopes(ctx context.Context, c *client, user string) (map[string]bool, error) {
	allowed, err := userScopes(ctx, s.cfg.Shared, user)
	if err != nil || c.Owner == user {
		return allowed, err
	}
	owner, err := userScopes(ctx, s.cfg.Shared, c.Owner)
	if err != nil {
		return nil, err
	}
	for sc := range allowed {
		if !owner[sc] {
			delete(allowed, sc)
		}
	}
	return allowed, nil
}

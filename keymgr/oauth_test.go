package keymgr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/jackc/pgx/v5"
	"golang.org/x/oauth2"
)

// refresh exchanges a refresh token as golang.org/x/oauth2 does when the
// access token has expired.
func (e *testEnv) refresh(cfg *oauth2.Config, rt string) (*oauth2.Token, error) {
	return cfg.TokenSource(context.Background(), &oauth2.Token{RefreshToken: rt, Expiry: time.Now().Add(-time.Hour)}).Token()
}

// postForm posts a form with HTTP basic client authentication and decodes
// the JSON answer, if any.
func (e *testEnv) postForm(t *testing.T, path, id, secret string, form url.Values) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.ts.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if id != "" {
		req.SetBasicAuth(id, secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	body := map[string]any{}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &body); err != nil {
			t.Fatalf("%s: %d, not JSON: %s", path, resp.StatusCode, raw)
		}
	}
	return resp.StatusCode, body
}

func (e *testEnv) introspect(t *testing.T, id, secret, token string) map[string]any {
	t.Helper()
	status, body := e.postForm(t, PathIntrospect, id, secret, url.Values{"token": {token}})
	if status != http.StatusOK {
		t.Fatalf("introspect: %d %v", status, body)
	}
	return body
}

func (e *testEnv) revoke(t *testing.T, id, secret, token string) (int, map[string]any) {
	t.Helper()
	return e.postForm(t, PathRevoke, id, secret, url.Values{"token": {token}})
}

func TestRefreshTokenRotationAndReuse(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.user(t, "bob", "bob-password-1", "Internal/creator")
	id, secret := e.client(t, "bob", "cli", GrantPassword, GrantRefreshToken, GrantClientCredentials)
	cfg := e.pwConfig(id, secret, "apim:api_create")

	tok1, err := cfg.PasswordCredentialsToken(ctx, "bob", "bob-password-1")
	if err != nil {
		t.Fatal(err)
	}
	rt1 := tok1.RefreshToken
	if !strings.HasPrefix(rt1, refreshTokenPrefix) {
		t.Fatalf("refresh token %q", rt1)
	}
	// Stored hashed, never in clear.
	var n int
	if err := e.apim.QueryRow(ctx, `SELECT count(*) FROM oauth_refresh_tokens WHERE token_hash = $1`, hashSecret(rt1)).Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows with the token's hash: %d, %v", n, err)
	}
	if err := e.apim.QueryRow(ctx, `SELECT count(*) FROM oauth_refresh_tokens t WHERE t::text LIKE '%' || $1 || '%'`, rt1).Scan(&n); err != nil || n != 0 {
		t.Fatalf("rows with the clear token: %d, %v", n, err)
	}

	tok2, err := e.refresh(cfg, rt1)
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if tok2.RefreshToken == "" || tok2.RefreshToken == rt1 || tok2.AccessToken == tok1.AccessToken {
		t.Fatal("the refresh did not rotate the tokens")
	}
	if got := tok2.Extra("scope"); got != "apim:api_create" {
		t.Errorf("refreshed scope %q, want apim:api_create", got)
	}
	hdr, claims := e.verifyWithJWKS(t, tok2.AccessToken)
	if hdr.KeyID == "" || claims["sub"] != "bob" || claims["client_id"] != id || claims["aut"] != autApplicationUser {
		t.Errorf("refreshed token claims %v", claims)
	}
	if p, err := e.s.VerifyToken(ctx, tok2.AccessToken); err != nil || p.Subject != "bob" {
		t.Fatalf("VerifyToken(refreshed) = %+v, %v", p, err)
	}
	tok3, err := e.refresh(cfg, tok2.RefreshToken)
	if err != nil {
		t.Fatalf("second refresh: %v", err)
	}

	// Reuse of rt1: invalid_grant, and the whole family is revoked, with
	// the access tokens issued along the way.
	_, err = e.refresh(cfg, rt1)
	if re := retrieveError(t, err); re.ErrorCode != "invalid_grant" {
		t.Fatalf("reuse: %q, want invalid_grant", re.ErrorCode)
	}
	_, err = e.refresh(cfg, tok3.RefreshToken)
	if re := retrieveError(t, err); re.ErrorCode != "invalid_grant" {
		t.Errorf("latest refresh token after reuse: %q, want invalid_grant", re.ErrorCode)
	}
	for name, at := range map[string]string{"first": tok1.AccessToken, "second": tok2.AccessToken, "third": tok3.AccessToken} {
		if _, err := e.s.VerifyToken(ctx, at); !errors.Is(err, ErrTokenRevoked) {
			t.Errorf("%s access token after reuse: %v, want ErrTokenRevoked", name, err)
		}
	}

	// No refresh token for client_credentials (RFC 6749 4.4.3), nor for a
	// client without the refresh grant; and such a client cannot refresh.
	cc, err := e.ccConfig(id, secret).Token(ctx)
	if err != nil || cc.RefreshToken != "" {
		t.Errorf("client_credentials: refresh token %q, %v", cc.RefreshToken, err)
	}
	noID, noSecret := e.client(t, "bob", "no-refresh", GrantPassword)
	tok, err := e.pwConfig(noID, noSecret).PasswordCredentialsToken(ctx, "bob", "bob-password-1")
	if err != nil || tok.RefreshToken != "" {
		t.Errorf("client without the refresh grant: refresh token %q, %v", tok.RefreshToken, err)
	}
	fresh, err := cfg.PasswordCredentialsToken(ctx, "bob", "bob-password-1")
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.refresh(e.pwConfig(noID, noSecret), fresh.RefreshToken)
	if re := retrieveError(t, err); re.ErrorCode != "unauthorized_client" {
		t.Errorf("refresh by a client without the grant: %q", re.ErrorCode)
	}
	// Another client cannot use bob's refresh token.
	otherID, otherSecret := e.client(t, "bob", "other", GrantPassword, GrantRefreshToken)
	_, err = e.refresh(e.pwConfig(otherID, otherSecret), fresh.RefreshToken)
	if re := retrieveError(t, err); re.ErrorCode != "invalid_grant" {
		t.Errorf("refresh by another client: %q", re.ErrorCode)
	}
	// An expired refresh token is refused.
	if _, err := e.apim.Exec(ctx, `UPDATE oauth_refresh_tokens SET session = jsonb_set(session, '{ExpiresAt,refresh_token}', '"2000-01-01T00:00:00Z"') WHERE token_hash = $1`, hashSecret(fresh.RefreshToken)); err != nil {
		t.Fatal(err)
	}
	_, err = e.refresh(cfg, fresh.RefreshToken)
	if re := retrieveError(t, err); re.ErrorCode != "invalid_grant" {
		t.Errorf("expired refresh token: %q", re.ErrorCode)
	}
	// Garbage.
	_, err = e.refresh(cfg, refreshTokenPrefix+"nope")
	if re := retrieveError(t, err); re.ErrorCode != "invalid_grant" {
		t.Errorf("unknown refresh token: %q", re.ErrorCode)
	}
}

func TestRevokeAndIntrospect(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.user(t, "bob", "bob-password-1", "Internal/subscriber")
	id, secret := e.client(t, "bob", "cli", GrantPassword, GrantRefreshToken, GrantClientCredentials)
	otherID, otherSecret := e.client(t, "bob", "other", GrantClientCredentials)

	cc, err := e.ccConfig(id, secret, "apim:subscribe").Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	in := e.introspect(t, otherID, otherSecret, cc.AccessToken)
	if in["active"] != true || in["client_id"] != id || in["sub"] != id || in["scope"] != "apim:subscribe" ||
		in["token_type"] != "Bearer" || in["jti"] == nil || in["exp"] == nil || in["username"] != nil {
		t.Errorf("introspect(cc) = %v", in)
	}
	_, claims := e.verifyWithJWKS(t, cc.AccessToken)
	jti, _ := claims["jti"].(string)

	// Refused: no or wrong client authentication, another client's token.
	if status, body := e.revoke(t, id, "wrong", cc.AccessToken); status != http.StatusUnauthorized || body["error"] != "invalid_client" {
		t.Errorf("revoke with a wrong secret: %d %v", status, body)
	}
	if status, body := e.postForm(t, PathIntrospect, "nobody", "x", url.Values{"token": {cc.AccessToken}}); status != http.StatusUnauthorized || body["error"] != "invalid_client" {
		t.Errorf("introspect with an unknown client: %d %v", status, body)
	}
	if status, body := e.revoke(t, otherID, otherSecret, cc.AccessToken); status != http.StatusBadRequest || body["error"] != "unauthorized_client" {
		t.Errorf("revoke another client's token: %d %v", status, body)
	}
	if ok, err := e.s.Revoked(ctx, jti); err != nil || ok {
		t.Fatalf("Revoked before revocation = %v, %v", ok, err)
	}

	// Revoked, by client_secret_post this time.
	status, body := e.postForm(t, PathRevoke, "", "", url.Values{"token": {cc.AccessToken}, "client_id": {id}, "client_secret": {secret}})
	if status != http.StatusOK {
		t.Fatalf("revoke: %d %v", status, body)
	}
	if ok, err := e.s.Revoked(ctx, jti); err != nil || !ok {
		t.Errorf("Revoked after revocation = %v, %v", ok, err)
	}
	if _, err := e.s.VerifyToken(ctx, cc.AccessToken); !errors.Is(err, ErrTokenRevoked) {
		t.Errorf("VerifyToken(revoked) = %v", err)
	}
	if in := e.introspect(t, id, secret, cc.AccessToken); len(in) != 1 || in["active"] != false {
		t.Errorf("introspect(revoked) = %v", in)
	}
	// The event is in the outbox, once even when revoked twice.
	if status, _ := e.revoke(t, id, secret, cc.AccessToken); status != http.StatusOK {
		t.Errorf("second revoke: %d", status)
	}
	var payloads []json.RawMessage
	rows, err := e.apim.Query(ctx, `SELECT payload FROM outbox WHERE key = $1`, jti)
	if err != nil {
		t.Fatal(err)
	}
	payloads, err = pgx.CollectRows(rows, pgx.RowTo[json.RawMessage])
	if err != nil || len(payloads) != 1 {
		t.Fatalf("%d outbox events for the jti, %v", len(payloads), err)
	}
	var ev struct {
		Kind, Op, ID string
		Generation   int64
		Data         struct {
			JTI       string    `json:"jti"`
			ExpiresAt time.Time `json:"expiresAt"`
		}
	}
	if err := json.Unmarshal(payloads[0], &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Kind != "revocation" || ev.Op != "upsert" || ev.ID != jti || ev.Data.JTI != jti || ev.Generation == 0 ||
		ev.Data.ExpiresAt.Unix() != int64(claims["exp"].(float64)) {
		t.Errorf("event %s", payloads[0])
	}

	// Unknown and garbage tokens: 200 and inactive.
	for _, tok := range []string{"no-such-token", refreshTokenPrefix + "nope", cc.AccessToken + "x"} {
		if status, _ := e.revoke(t, id, secret, tok); status != http.StatusOK {
			t.Errorf("revoke(%.12s…): %d, want 200", tok, status)
		}
		if in := e.introspect(t, id, secret, tok); in["active"] != false {
			t.Errorf("introspect(%.12s…) = %v", tok, in)
		}
	}
	if status, body := e.revoke(t, id, secret, ""); status != http.StatusBadRequest || body["error"] != "invalid_request" {
		t.Errorf("revoke without token: %d %v", status, body)
	}

	// A refresh token: introspected, then revoked with its family.
	pw, err := e.pwConfig(id, secret).PasswordCredentialsToken(ctx, "bob", "bob-password-1")
	if err != nil {
		t.Fatal(err)
	}
	if in := e.introspect(t, id, secret, pw.RefreshToken); in["active"] != true || in["token_type"] != "refresh_token" || in["sub"] != "bob" || in["client_id"] != id {
		t.Errorf("introspect(refresh) = %v", in)
	}
	if in := e.introspect(t, id, secret, pw.AccessToken); in["active"] != true || in["username"] != "bob" {
		t.Errorf("introspect(user token) = %v", in)
	}
	if status, body := e.revoke(t, otherID, otherSecret, pw.RefreshToken); status != http.StatusBadRequest {
		t.Errorf("revoke another client's refresh token: %d %v", status, body)
	}
	if status, _ := e.revoke(t, id, secret, pw.RefreshToken); status != http.StatusOK {
		t.Errorf("revoke(refresh): %d", status)
	}
	if in := e.introspect(t, id, secret, pw.RefreshToken); in["active"] != false {
		t.Errorf("introspect(revoked refresh) = %v", in)
	}
	if _, err := e.refresh(e.pwConfig(id, secret), pw.RefreshToken); err == nil {
		t.Error("a revoked refresh token still refreshes")
	}
	if _, err := e.s.VerifyToken(ctx, pw.AccessToken); !errors.Is(err, ErrTokenRevoked) {
		t.Errorf("access token of a revoked family: %v", err)
	}
}

func TestDiscoveryUserinfoAndGoOIDC(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.user(t, "bob", "bob-password-1", "Internal/subscriber")
	id, secret := e.client(t, "bob", "cli", GrantPassword, GrantClientCredentials)

	var doc map[string]any
	getJSON(t, e.ts.URL+PathDiscovery, &doc)
	for k, v := range map[string]any{
		"revocation_endpoint":    e.ts.URL + "/oauth2/revoke",
		"introspection_endpoint": e.ts.URL + "/oauth2/introspect",
		"userinfo_endpoint":      e.ts.URL + "/oauth2/userinfo",
		"authorization_endpoint": e.ts.URL + "/oauth2/authorize",
	} {
		if doc[k] != v {
			t.Errorf("%s = %v, want %v", k, doc[k], v)
		}
	}
	if got := mustJSON(t, doc["code_challenge_methods_supported"]); got != `["S256"]` {
		t.Errorf("code_challenge_methods_supported %s", got)
	}
	if got := mustJSON(t, doc["response_types_supported"]); got != `["code"]` {
		t.Errorf("response_types_supported %s", got)
	}

	// go-oidc finds the document under the issuer and verifies our tokens.
	provider, err := oidc.NewProvider(ctx, e.s.Issuer())
	if err != nil {
		t.Fatalf("oidc.NewProvider: %v", err)
	}
	pw, err := e.pwConfig(id, secret).PasswordCredentialsToken(ctx, "bob", "bob-password-1")
	if err != nil {
		t.Fatal(err)
	}
	idt, err := provider.Verifier(&oidc.Config{ClientID: id}).Verify(ctx, pw.AccessToken)
	if err != nil {
		t.Fatalf("go-oidc Verify: %v", err)
	}
	if idt.Subject != "bob" || idt.Issuer != e.s.Issuer() {
		t.Errorf("verified token: sub %q iss %q", idt.Subject, idt.Issuer)
	}
	if _, err := provider.Verifier(&oidc.Config{ClientID: "someone-else"}).Verify(ctx, pw.AccessToken); err == nil {
		t.Error("go-oidc verified a token for another audience")
	}

	ui, err := provider.UserInfo(ctx, oauth2.StaticTokenSource(pw))
	if err != nil {
		t.Fatalf("UserInfo: %v", err)
	}
	var uc map[string]any
	if err := ui.Claims(&uc); err != nil || uc["sub"] != "bob" || uc["preferred_username"] != "bob" {
		t.Errorf("userinfo of a user token = %v, %v", uc, err)
	}
	cc, err := e.ccConfig(id, secret).Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ui, err = provider.UserInfo(ctx, oauth2.StaticTokenSource(cc))
	if err != nil {
		t.Fatalf("UserInfo(cc): %v", err)
	}
	uc = nil
	if err := ui.Claims(&uc); err != nil || uc["sub"] != id || uc["preferred_username"] != nil {
		t.Errorf("userinfo of a client token = %v, %v", uc, err)
	}

	// Refused: no token, a bad one, a revoked one.
	if status, _ := e.revoke(t, id, secret, cc.AccessToken); status != http.StatusOK {
		t.Fatal("revoke")
	}
	for name, auth := range map[string]string{"none": "", "garbage": "Bearer x.y.z", "revoked": "Bearer " + cc.AccessToken, "basic": "Basic eDp5"} {
		req, _ := http.NewRequest(http.MethodGet, e.ts.URL+PathUserinfo, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("userinfo with %s: %d %q", name, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	}
}

var hiddenInput = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)

// loginForm is the login page's form fields.
func loginForm(t *testing.T, body string) url.Values {
	t.Helper()
	f := url.Values{}
	for _, m := range hiddenInput.FindAllStringSubmatch(body, -1) {
		f.Set(m[1], htmlUnescape(m[2]))
	}
	if f.Get("csrf_token") == "" {
		t.Fatalf("no CSRF token in the login page: %s", body)
	}
	return f
}

func htmlUnescape(s string) string {
	return strings.NewReplacer("&amp;", "&", "&#43;", "+", "&#39;", "'", "&#34;", `"`, "&lt;", "<", "&gt;", ">").Replace(s)
}

// browser is an http.Client with cookies that does not follow redirects,
// so the test sees where the key manager sends it.
func browser(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp, string(raw)
}

func post(t *testing.T, c *http.Client, u string, f url.Values) (*http.Response, string) {
	t.Helper()
	resp, err := c.PostForm(u, f)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp, string(raw)
}

// authCodeClient registers a REST client with a callback URL.
func (e *testEnv) authCodeClient(t *testing.T, owner, callback string, grants ...string) (id, secret string) {
	t.Helper()
	ctx := context.Background()
	err := pgx.BeginFunc(ctx, e.apim, func(tx pgx.Tx) error {
		var err error
		id, secret, err = insertClient(ctx, tx, clientKindREST, owner, "web-"+callback, grants, []string{callback})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return id, secret
}

func TestAuthorizationCodeWithPKCE(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.user(t, "alice", "alice-password-1", "Internal/subscriber")
	callback := "http://127.0.0.1:9/callback"
	id, secret := e.authCodeClient(t, "alice", callback, GrantAuthorizationCode, GrantRefreshToken)
	conf := &oauth2.Config{
		ClientID: id, ClientSecret: secret, RedirectURL: callback, Scopes: []string{"apim:subscribe", "apim:admin"},
		Endpoint: oauth2.Endpoint{AuthURL: e.ts.URL + PathAuthorize, TokenURL: e.ts.URL + PathToken},
	}

	// login runs the browser part and returns the redirect to the client.
	login := func(t *testing.T, authURL, user, password string) *url.URL {
		t.Helper()
		b := browser(t)
		resp, body := get(t, b, authURL)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("authorize: %d %s", resp.StatusCode, body)
		}
		f := loginForm(t, body)
		f.Set("username", user)
		f.Set("password", password)
		resp, body = post(t, b, e.ts.URL+PathAuthorize, f)
		if resp.StatusCode != http.StatusSeeOther && resp.StatusCode != http.StatusFound {
			t.Fatalf("login: %d %s", resp.StatusCode, body)
		}
		loc, err := url.Parse(resp.Header.Get("Location"))
		if err != nil {
			t.Fatal(err)
		}
		return loc
	}

	t.Run("code flow", func(t *testing.T) {
		verifier := oauth2.GenerateVerifier()
		const state = "state-7f3a9c21"
		authURL := conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier))

		b := browser(t)
		resp, body := get(t, b, authURL)
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "<form method=\"post\"") {
			t.Fatalf("authorize: %d %s", resp.StatusCode, body)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("CSP %q", csp)
		}
		if resp.Header.Get("X-Frame-Options") != "DENY" || resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("headers %v", resp.Header)
		}
		var ck *http.Cookie
		for _, c := range resp.Cookies() {
			if c.Name == csrfCookie {
				ck = c
			}
		}
		if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode || ck.Path != PathAuthorize {
			t.Errorf("CSRF cookie %+v", ck)
		}
		f := loginForm(t, body)
		if f.Get("state") != state || f.Get("code_challenge") == "" || f.Get("redirect_uri") != callback {
			t.Errorf("form %v", f)
		}

		// A wrong password shows the form again, no code.
		f.Set("username", "alice")
		f.Set("password", "wrong")
		resp, body = post(t, b, e.ts.URL+PathAuthorize, f)
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Wrong username or password") || resp.Header.Get("Location") != "" {
			t.Fatalf("wrong password: %d %s", resp.StatusCode, body)
		}
		f = loginForm(t, body)
		f.Set("username", "alice")
		f.Set("password", "alice-password-1")
		resp, _ = post(t, b, e.ts.URL+PathAuthorize, f)
		loc, err := url.Parse(resp.Header.Get("Location"))
		if err != nil || !strings.HasPrefix(loc.String(), callback+"?") {
			t.Fatalf("redirect %q, %v", resp.Header.Get("Location"), err)
		}
		code := loc.Query().Get("code")
		if loc.Query().Get("state") != state || !strings.HasPrefix(code, authzCodePrefix) {
			t.Fatalf("redirect %s", loc)
		}

		// A wrong verifier is refused; the right one gets the tokens.
		if _, err := conf.Exchange(ctx, code, oauth2.VerifierOption(oauth2.GenerateVerifier())); err == nil ||
			retrieveError(t, err).ErrorCode != "invalid_grant" {
			t.Errorf("exchange with a wrong verifier: %v", err)
		}
		loc = login(t, authURL, "alice", "alice-password-1")
		code = loc.Query().Get("code")
		tok, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatalf("Exchange: %v", err)
		}
		if tok.Extra("scope") != "apim:subscribe" || !strings.HasPrefix(tok.RefreshToken, refreshTokenPrefix) {
			t.Errorf("token scope %v refresh %q", tok.Extra("scope"), tok.RefreshToken)
		}
		p, err := e.s.VerifyToken(ctx, tok.AccessToken)
		if err != nil || p.Subject != "alice" || p.ClientID != id {
			t.Fatalf("VerifyToken = %+v, %v", p, err)
		}
		// The refresh token works, and rotates.
		tok2, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken, Expiry: time.Now().Add(-time.Hour)}).Token()
		if err != nil || tok2.RefreshToken == tok.RefreshToken {
			t.Errorf("refresh after code flow: %v", err)
		}
		// The code is single-use; its replay revokes what it gave.
		if _, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier)); err == nil ||
			retrieveError(t, err).ErrorCode != "invalid_grant" {
			t.Errorf("code replay: %v", err)
		}
		if _, err := e.s.VerifyToken(ctx, tok2.AccessToken); !errors.Is(err, ErrTokenRevoked) {
			t.Errorf("token from a replayed code's family: %v, want revoked", err)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		verifier := oauth2.GenerateVerifier()
		// No PKCE, or plain: sent back to the client with an error.
		for name, opts := range map[string][]oauth2.AuthCodeOption{
			"no pkce": nil,
			"plain":   {oauth2.SetAuthURLParam("code_challenge", verifier), oauth2.SetAuthURLParam("code_challenge_method", "plain")},
		} {
			resp, body := get(t, browser(t), conf.AuthCodeURL("state-12345678", opts...))
			loc, _ := url.Parse(resp.Header.Get("Location"))
			if resp.StatusCode/100 != 3 || loc == nil || !strings.HasPrefix(loc.String(), callback) || loc.Query().Get("error") != "invalid_request" ||
				loc.Query().Get("state") != "state-12345678" {
				t.Errorf("%s: %d %s %s", name, resp.StatusCode, resp.Header.Get("Location"), body)
			}
		}
		// A redirect_uri not registered exactly (another port, a suffix):
		// an error page, never a redirect.
		for _, ru := range []string{"http://127.0.0.1:10/callback", callback + "/x", callback + "?a=b"} {
			c := *conf
			c.RedirectURL = ru
			resp, _ := get(t, browser(t), c.AuthCodeURL("state-12345678", oauth2.S256ChallengeOption(verifier)))
			if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
				t.Errorf("redirect_uri %s: %d %q", ru, resp.StatusCode, resp.Header.Get("Location"))
			}
		}
		// Unknown client: an error page.
		c := *conf
		c.ClientID = "nobody"
		if resp, _ := get(t, browser(t), c.AuthCodeURL("state-12345678", oauth2.S256ChallengeOption(verifier))); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("unknown client: %d", resp.StatusCode)
		}
		// The login post without the CSRF cookie (another browser) or token.
		authURL := conf.AuthCodeURL("state-12345678", oauth2.S256ChallengeOption(verifier))
		b := browser(t)
		_, body := get(t, b, authURL)
		f := loginForm(t, body)
		f.Set("username", "alice")
		f.Set("password", "alice-password-1")
		if resp, _ := post(t, browser(t), e.ts.URL+PathAuthorize, f); resp.StatusCode != http.StatusForbidden {
			t.Errorf("login without the CSRF cookie: %d", resp.StatusCode)
		}
		g := url.Values{}
		for k, v := range f {
			g[k] = v
		}
		g.Set("csrf_token", "forged")
		if resp, _ := post(t, b, e.ts.URL+PathAuthorize, g); resp.StatusCode != http.StatusForbidden {
			t.Errorf("login with a forged CSRF token: %d", resp.StatusCode)
		}
		// A client without the authorization_code grant gets no token.
		noID, noSecret := e.authCodeClient(t, "alice", "http://127.0.0.1:9/other", GrantPassword)
		nc := &oauth2.Config{
			ClientID: noID, ClientSecret: noSecret, RedirectURL: "http://127.0.0.1:9/other",
			Endpoint: conf.Endpoint,
		}
		resp, _ := get(t, browser(t), nc.AuthCodeURL("state-12345678", oauth2.S256ChallengeOption(verifier)))
		if resp.StatusCode == http.StatusOK {
			loc := login(t, nc.AuthCodeURL("state-12345678", oauth2.S256ChallengeOption(verifier)), "alice", "alice-password-1")
			if code := loc.Query().Get("code"); code != "" {
				if _, err := nc.Exchange(ctx, code, oauth2.VerifierOption(verifier)); err == nil {
					t.Error("a client without the authorization_code grant exchanged a code")
				}
			}
		}
	})
}

func TestRotateKeys(t *testing.T) {
	apim, shared := newDatabases(t)
	e := newEnvOn(t, apim, shared)
	other := newEnvOn(t, apim, shared) // another replica
	ctx := context.Background()
	e.user(t, "alice", "alice-password-1")
	id, secret := e.client(t, "alice", "app", GrantClientCredentials)
	oldKid := e.s.keys.Load().active.kid
	before, err := e.ccConfig(id, secret).Token(ctx)
	if err != nil {
		t.Fatal(err)
	}

	if err := e.s.RotateKeys(ctx); err != nil {
		t.Fatalf("RotateKeys: %v", err)
	}
	// The new key is published at once and signs only two reloads later,
	// once every replica has it in its JWKS.
	var newKid string
	var signsIn, retiresIn float64
	if err := apim.QueryRow(ctx, `
		SELECT n.kid, extract(epoch FROM n.signs_from - now())::float8, extract(epoch FROM o.retired_at - now())::float8
		FROM signing_keys n, signing_keys o WHERE n.retired_at IS NULL AND o.kid = $1`, oldKid).Scan(&newKid, &signsIn, &retiresIn); err != nil {
		t.Fatal(err)
	}
	if newKid == oldKid {
		t.Fatal("no new key")
	}
	if want := 2 * DefaultKeyReloadInterval; sec(signsIn) < want-time.Minute || sec(signsIn) > want {
		t.Errorf("new key signs in %v, want about %v", sec(signsIn), want)
	}
	if want := DefaultAccessTokenTTL + 3*DefaultKeyReloadInterval + clockLeeway; sec(retiresIn) < want-time.Minute || sec(retiresIn) > want {
		t.Errorf("old key retires in %v, want about %v", sec(retiresIn), want)
	}
	if e.s.keys.Load().active.kid != oldKid {
		t.Fatal("the new key signs before its signs_from")
	}
	if keys := e.s.PublicKeys(); len(keys) != 2 {
		t.Errorf("JWKS right after the rotation: %d keys, want the old and the new", len(keys))
	}
	if _, err := apim.Exec(ctx, `UPDATE signing_keys SET signs_from = now() WHERE kid = $1`, newKid); err != nil {
		t.Fatal(err)
	}
	e.s.tick(ctx)
	if e.s.keys.Load().active.kid != newKid {
		t.Fatal("the new key does not sign after its signs_from")
	}
	after, err := e.ccConfig(id, secret).Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if hdr, _ := e.verifyWithJWKS(t, after.AccessToken); hdr.KeyID != newKid {
		t.Errorf("new token signed by %s, want %s", hdr.KeyID, newKid)
	}
	if hdr, _ := e.verifyWithJWKS(t, before.AccessToken); hdr.KeyID != oldKid { // the old key is still published
		t.Errorf("old token's kid %s", hdr.KeyID)
	}
	for name, tok := range map[string]string{"before": before.AccessToken, "after": after.AccessToken} {
		if _, err := e.s.VerifyToken(ctx, tok); err != nil {
			t.Errorf("VerifyToken(%s rotation): %v", name, err)
		}
	}

	// The other replica signs with the old key until it reloads, then
	// verifies and signs with the new one.
	if other.s.keys.Load().active.kid != oldKid {
		t.Fatal("the other replica changed keys before reloading")
	}
	other.s.tick(ctx)
	if other.s.keys.Load().active.kid != newKid {
		t.Errorf("after reload the other replica signs with %s, want %s", other.s.keys.Load().active.kid, newKid)
	}
	if _, err := other.s.keys.Load().verifyToken(after.AccessToken, e.s.Issuer(), time.Now()); err != nil {
		t.Errorf("other replica: %v", err)
	}

	// Past its retired_at the old key leaves the JWKS and stops verifying.
	if _, err := apim.Exec(ctx, `UPDATE signing_keys SET retired_at = now() - interval '1 second' WHERE kid = $1`, oldKid); err != nil {
		t.Fatal(err)
	}
	e.s.tick(ctx)
	if keys := e.s.PublicKeys(); len(keys) != 1 || keys[0].KeyID != newKid {
		t.Errorf("JWKS after retirement: %v", keys)
	}
	if _, err := e.s.VerifyToken(ctx, before.AccessToken); !errors.Is(err, ErrTokenSignature) {
		t.Errorf("token of a retired key: %v, want ErrTokenSignature", err)
	}
}

func sec(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// An API key outlives the access tokens of the key that signed it: the key
// stays in the JWKS until the API key expires.
func TestRotationKeepsAPIKeysValid(t *testing.T) {
	apim, shared := newDatabases(t)
	e := newEnvOn(t, apim, shared)
	ctx := context.Background()
	oldKid := e.s.keys.Load().active.kid
	key, exp, err := e.s.SignAPIKey(ctx, APIKeyClaims{
		Subject: "alice", KeyType: "PRODUCTION", Validity: 90 * 24 * time.Hour,
		Application: APIKeyApplication{ID: "app-1", Name: "App", Owner: "alice", Tier: "Unlimited"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.s.RotateKeys(ctx); err != nil {
		t.Fatal(err)
	}
	var retired time.Time
	if err := apim.QueryRow(ctx, `SELECT retired_at FROM signing_keys WHERE kid = $1`, oldKid).Scan(&retired); err != nil {
		t.Fatal(err)
	}
	if retired.Before(exp) {
		t.Errorf("the key that signed an API key valid until %v retires at %v", exp, retired)
	}
	// Until then it is published: a gateway can verify the API key.
	if hdr, _ := e.verifyWithJWKS(t, key); hdr.KeyID != oldKid {
		t.Errorf("API key's kid %s, want %s", hdr.KeyID, oldKid)
	}
}

func TestScheduledKeyRotation(t *testing.T) {
	apim, shared := newDatabases(t)
	opts := func(c *Config) {
		c.KeyRotationInterval = 2 * time.Hour
		c.KeyReloadInterval = 20 * time.Millisecond
	}
	a := newEnvOn(t, apim, shared, opts)
	b := newEnvOn(t, apim, shared, opts)
	ctx := context.Background()
	first := a.s.keys.Load().active.kid

	// Not due: nothing happens.
	a.s.tick(ctx)
	if a.s.keys.Load().active.kid != first {
		t.Fatal("rotated a fresh key")
	}
	// Due: both replicas run; one rotation.
	if _, err := apim.Exec(ctx, `UPDATE signing_keys SET created_at = now() - interval '3 hours'`); err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 2)
	go func() { done <- a.s.Start(runCtx) }()
	go func() { done <- b.s.Start(runCtx) }()
	deadline := time.Now().Add(10 * time.Second)
	for (a.s.keys.Load().active.kid == first || b.s.keys.Load().active.kid == first) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // a few more ticks: no further rotation
	cancel()
	for range 2 {
		if err := <-done; err != nil {
			t.Errorf("Start: %v", err)
		}
	}
	if a.s.keys.Load().active.kid == first || a.s.keys.Load().active.kid != b.s.keys.Load().active.kid {
		t.Errorf("replicas sign with %s and %s; first key %s", a.s.keys.Load().active.kid, b.s.keys.Load().active.kid, first)
	}
	var n int
	if err := apim.QueryRow(ctx, `SELECT count(*) FROM signing_keys`).Scan(&n); err != nil || n != 2 {
		t.Errorf("%d signing keys, want 2 (one rotation)", n)
	}
}

// TestAuthorizationCodeClientOfAnotherUser: anyone may register a client
// through DCR, so a client registered by a subscriber that lures the admin
// to its sign-in page must not get the admin's scopes, and the page must say
// who registered it and what it asks for.
func TestAuthorizationCodeClientOfAnotherUser(t *testing.T) {
	e := newEnv(t)
	e.user(t, "mallory", "mallory-password-1", "Internal/subscriber")
	e.user(t, "root", "root-password-1", "admin")
	callback := "http://127.0.0.1:9/cb"
	id, secret := e.authCodeClient(t, "mallory", callback, GrantAuthorizationCode)
	conf := &oauth2.Config{
		ClientID: id, ClientSecret: secret, RedirectURL: callback, Scopes: []string{"apim:admin", "apim:api_delete", "apim:subscribe"},
		Endpoint: oauth2.Endpoint{AuthURL: e.ts.URL + PathAuthorize, TokenURL: e.ts.URL + PathToken},
	}
	verifier := oauth2.GenerateVerifier()
	b := browser(t)
	resp, body := get(t, b, conf.AuthCodeURL("state-of-mallory", oauth2.S256ChallengeOption(verifier)))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("authorize: %d %s", resp.StatusCode, body)
	}
	for _, want := range []string{"registered by mallory", "<li>apim:admin</li>", "<li>apim:api_delete</li>"} {
		if !strings.Contains(body, want) {
			t.Errorf("sign-in page lacks %q", want)
		}
	}
	f := loginForm(t, body)
	f.Set("username", "root")
	f.Set("password", "root-password-1")
	resp, body = post(t, b, e.ts.URL+PathAuthorize, f)
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	tok, err := conf.Exchange(context.Background(), loc.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	scopes := strings.Fields(fmt.Sprint(tok.Extra("scope")))
	if slices.Contains(scopes, "apim:admin") || slices.Contains(scopes, "apim:api_delete") || !slices.Contains(scopes, "apim:subscribe") {
		t.Errorf("token scopes %v: want only what both root and mallory may have", scopes)
	}
}

func TestIntrospectionOnlyForRESTClients(t *testing.T) {
	e := newEnv(t)
	e.user(t, "alice", "alice-password-1", "Internal/subscriber")
	id, secret := e.appClient(t, "alice", "app", GrantClientCredentials)
	status, body := e.postForm(t, PathIntrospect, id, secret, url.Values{"token": {"anything"}})
	if status != http.StatusForbidden || body["error"] != "unauthorized_client" {
		t.Errorf("application client introspecting: %d %v, want 403 unauthorized_client", status, body)
	}
}

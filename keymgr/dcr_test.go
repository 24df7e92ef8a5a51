package keymgr

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"
)

type dcrResult struct {
	status int
	body   map[string]any
}

func (e *testEnv) register(t *testing.T, user, password, body string) dcrResult {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.ts.URL+PathRegister, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	res := dcrResult{status: resp.StatusCode, body: map[string]any{}}
	if err := json.Unmarshal(raw, &res.body); err != nil {
		t.Fatalf("response %d is not JSON: %s", resp.StatusCode, raw)
	}
	return res
}

func (e *testEnv) clientCount(t *testing.T) int {
	t.Helper()
	var n int
	if err := e.apim.QueryRow(context.Background(), `SELECT count(*) FROM oauth_clients`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

const publisherDCR = `{"callbackUrl":"www.google.lk","clientName":"rest_api_publisher","owner":"admin",` +
	`"grantType":"client_credentials password refresh_token","saasApp":true}`

func TestDCRRegistersAndRotates(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.user(t, "admin", "admin-password-1", "admin")

	first := e.register(t, "admin", "admin-password-1", publisherDCR)
	if first.status != http.StatusOK {
		t.Fatalf("status %d: %v", first.status, first.body)
	}
	b := first.body
	id, _ := b["clientId"].(string)
	secret, _ := b["clientSecret"].(string)
	if len(id) != 28 || len(secret) != 43 || b["clientName"] != "rest_api_publisher" || b["callBackURL"] != "www.google.lk" ||
		b["isSaasApplication"] != true || b["appOwner"] != "admin" {
		t.Errorf("response %v", b)
	}
	var meta map[string]string
	if err := json.Unmarshal([]byte(b["jsonString"].(string)), &meta); err != nil ||
		meta["grant_types"] != "client_credentials password refresh_token" || meta["client_name"] != "rest_api_publisher" {
		t.Errorf("jsonString %v (%v)", b["jsonString"], err)
	}

	// The registered client gets tokens with both grants.
	if _, err := e.ccConfig(id, secret).Token(ctx); err != nil {
		t.Errorf("client_credentials: %v", err)
	}
	tok, err := e.pwConfig(id, secret, "apim:api_view").PasswordCredentialsToken(ctx, "admin", "admin-password-1")
	if err != nil || tok.Extra("scope") != "apim:api_view" {
		t.Errorf("password: %v, %v", tok, err)
	}

	// Registering it again returns the same client with a new secret.
	second := e.register(t, "admin", "admin-password-1", publisherDCR)
	newSecret, _ := second.body["clientSecret"].(string)
	if second.status != http.StatusOK || second.body["clientId"] != id || newSecret == "" || newSecret == secret {
		t.Fatalf("second registration %d %v", second.status, second.body)
	}
	if n := e.clientCount(t); n != 1 {
		t.Errorf("%d clients, want 1", n)
	}
	if _, err := e.ccConfig(id, newSecret).Token(ctx); err != nil {
		t.Errorf("new secret: %v", err)
	}
	_, err = e.ccConfig(id, secret).Token(ctx)
	if re := retrieveError(t, err); re.Response.StatusCode != http.StatusUnauthorized || re.ErrorCode != "invalid_client" {
		t.Errorf("old secret: %d %s", re.Response.StatusCode, re.ErrorCode)
	}
}

func TestDCRRefusals(t *testing.T) {
	e := newEnv(t)
	e.user(t, "admin", "admin-password-1", "admin")
	e.user(t, "alice", "alice-password-1", "Internal/subscriber")

	tests := map[string]struct {
		user, password, body string
		wantStatus           int
		wantCode, wantText   string
	}{
		"no basic auth":     {"", "", publisherDCR, http.StatusUnauthorized, "invalid_client", ""},
		"wrong password":    {"admin", "wrong", publisherDCR, http.StatusUnauthorized, "invalid_client", ""},
		"unknown user":      {"nobody", "admin-password-1", publisherDCR, http.StatusUnauthorized, "invalid_client", ""},
		"malformed JSON":    {"admin", "admin-password-1", `{"clientName":`, http.StatusBadRequest, "invalid_client_metadata", "malformed"},
		"not an object":     {"admin", "admin-password-1", `["x"]`, http.StatusBadRequest, "invalid_client_metadata", "malformed"},
		"trailing data":     {"admin", "admin-password-1", `{"clientName":"a"} {}`, http.StatusBadRequest, "invalid_client_metadata", "trailing"},
		"unknown field":     {"admin", "admin-password-1", `{"clientName":"a","isAdmin":true}`, http.StatusBadRequest, "invalid_client_metadata", "isAdmin"},
		"no clientName":     {"admin", "admin-password-1", `{"owner":"admin","grantType":"password"}`, http.StatusBadRequest, "invalid_client_metadata", "clientName"},
		"unknown grant":     {"admin", "admin-password-1", `{"clientName":"a","grantType":"password magic"}`, http.StatusBadRequest, "invalid_client_metadata", "magic"},
		"other owner":       {"alice", "alice-password-1", `{"clientName":"a","owner":"admin"}`, http.StatusForbidden, "access_denied", ""},
		"body too large":    {"admin", "admin-password-1", `{"clientName":"` + strings.Repeat("a", maxRegistrationBody) + `"}`, http.StatusBadRequest, "invalid_request", ""},
		"wrong type":        {"admin", "admin-password-1", `{"clientName":"a","saasApp":"yes"}`, http.StatusBadRequest, "invalid_client_metadata", "saasApp"},
		"blank clientName":  {"admin", "admin-password-1", `{"clientName":"  "}`, http.StatusBadRequest, "invalid_client_metadata", "clientName"},
		"relative callback": {"admin", "admin-password-1", `{"clientName":"a","grantType":"authorization_code","callbackUrl":"/cb"}`, http.StatusBadRequest, "invalid_redirect_uri", "not an absolute URL"},
		"code, no callback": {"admin", "admin-password-1", `{"clientName":"a","grantType":"authorization_code"}`, http.StatusBadRequest, "invalid_redirect_uri", "required"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			res := e.register(t, tc.user, tc.password, tc.body)
			desc, _ := res.body["error_description"].(string)
			if res.status != tc.wantStatus || res.body["error"] != tc.wantCode || !strings.Contains(desc, tc.wantText) {
				t.Errorf("got %d %v, want %d %s mentioning %q", res.status, res.body, tc.wantStatus, tc.wantCode, tc.wantText)
			}
			if strings.Contains(desc, tc.password) && tc.password != "" {
				t.Errorf("the error echoes the password: %q", desc)
			}
		})
	}
	if n := e.clientCount(t); n != 0 {
		t.Errorf("%d clients written by refused registrations", n)
	}

	// A user registers for themself when owner is left out, and an admin for anyone.
	if res := e.register(t, "alice", "alice-password-1", `{"clientName":"mine"}`); res.status != http.StatusOK || res.body["appOwner"] != "alice" {
		t.Errorf("own registration: %d %v", res.status, res.body)
	}
	if res := e.register(t, "admin", "admin-password-1", `{"clientName":"for-alice","owner":"alice"}`); res.status != http.StatusOK || res.body["appOwner"] != "alice" {
		t.Errorf("admin registration for alice: %d %v", res.status, res.body)
	}
}

// TestNoSecretsInLogs runs every flow, failures included, and checks that no
// password, client secret or token reached the log.
func TestNoSecretsInLogs(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const (
		adminPW  = "admin-pw-5f1c9e"
		userPW   = "user-pw-8a2b7d"
		wrongPW  = "wrong-pw-3e4f5a"
		wrongSec = "wrong-secret-9d8c7b"
	)
	e.user(t, "admin", adminPW, "admin")
	e.user(t, "erin", userPW, "Internal/subscriber")

	reg := e.register(t, "admin", adminPW, publisherDCR)
	id, _ := reg.body["clientId"].(string)
	secret1, _ := reg.body["clientSecret"].(string)
	reg = e.register(t, "admin", adminPW, publisherDCR)
	secret2, _ := reg.body["clientSecret"].(string)
	e.register(t, "admin", wrongPW, publisherDCR)
	e.register(t, "admin", adminPW, `{"clientName":"x","clientSecret":"`+wrongSec+`"}`)

	cc, err := e.ccConfig(id, secret2, "apim:subscribe").Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pw, err := e.pwConfig(id, secret2, "apim:subscribe").PasswordCredentialsToken(ctx, "erin", userPW)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = e.ccConfig(id, secret1).Token(ctx)
	_, _ = e.ccConfig(id, wrongSec).Token(ctx)
	_, _ = e.pwConfig(id, secret2).PasswordCredentialsToken(ctx, "erin", wrongPW)
	_, _ = e.s.VerifyToken(ctx, cc.AccessToken+"x")

	// Refresh (rotation, then reuse), introspection, revocation, userinfo.
	rt1 := pw.RefreshToken
	pw2, err := e.refresh(e.pwConfig(id, secret2), rt1)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = e.refresh(e.pwConfig(id, secret2), rt1)
	_, _ = e.refresh(e.pwConfig(id, wrongSec), pw2.RefreshToken)
	e.introspect(t, id, secret2, cc.AccessToken)
	e.introspect(t, id, secret2, pw2.RefreshToken)
	e.postForm(t, PathIntrospect, id, wrongSec, url.Values{"token": {cc.AccessToken}})
	e.revoke(t, id, secret2, cc.AccessToken)
	e.revoke(t, id, secret2, pw2.RefreshToken)
	for _, tok := range []string{cc.AccessToken, "garbage-token-" + wrongSec} {
		req, _ := http.NewRequest(http.MethodGet, e.ts.URL+PathUserinfo, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}

	// The authorization code flow: a wrong password, then a code, its
	// exchange and its replay.
	callback := "http://127.0.0.1:9/cb"
	acID, acSecret := e.authCodeClient(t, "erin", callback, GrantAuthorizationCode, GrantRefreshToken)
	conf := &oauth2.Config{
		ClientID: acID, ClientSecret: acSecret, RedirectURL: callback,
		Endpoint: oauth2.Endpoint{AuthURL: e.ts.URL + PathAuthorize, TokenURL: e.ts.URL + PathToken},
	}
	verifier := oauth2.GenerateVerifier()
	b := browser(t)
	_, body := get(t, b, conf.AuthCodeURL("state-log-test", oauth2.S256ChallengeOption(verifier)))
	f := loginForm(t, body)
	csrf1 := f.Get("csrf_token")
	f.Set("username", "erin")
	f.Set("password", wrongPW)
	_, body = post(t, b, e.ts.URL+PathAuthorize, f)
	f = loginForm(t, body)
	csrf2 := f.Get("csrf_token")
	f.Set("username", "erin")
	f.Set("password", userPW)
	resp, _ := post(t, b, e.ts.URL+PathAuthorize, f)
	loc, _ := url.Parse(resp.Header.Get("Location"))
	code := loc.Query().Get("code")
	ac, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = conf.Exchange(ctx, code, oauth2.VerifierOption(verifier))

	logs := e.logs.String()
	for _, msg := range []string{
		"token issued", "token request refused", "client registered", "token revoked",
		"token introspected", "userinfo refused", "login refused: bad credentials", "authorization code issued",
	} {
		if !strings.Contains(logs, msg) {
			t.Errorf("the log has no %q", msg)
		}
	}
	if t.Failed() {
		t.Fatalf("the flows were not logged: %s", logs)
	}
	secrets := map[string]string{
		"admin password": adminPW, "user password": userPW, "wrong password": wrongPW,
		"first secret": secret1, "second secret": secret2, "wrong secret": wrongSec,
		"client_credentials token": cc.AccessToken, "password token": pw.AccessToken,
		"cc token signature":  cc.AccessToken[strings.LastIndex(cc.AccessToken, ".")+1:],
		"pw token signature":  pw.AccessToken[strings.LastIndex(pw.AccessToken, ".")+1:],
		"first refresh token": rt1, "second refresh token": pw2.RefreshToken,
		"refreshed access token": pw2.AccessToken,
		"refresh token hash":     hashSecret(rt1),
		"code":                   code, "code verifier": verifier, "csrf token": csrf1, "second csrf token": csrf2,
		"auth code client secret": acSecret, "code flow access token": ac.AccessToken,
		"code flow refresh token": ac.RefreshToken,
	}
	for what, s := range secrets {
		if s == "" {
			t.Fatalf("%s is empty", what)
		}
		if strings.Contains(logs, s) {
			t.Errorf("the log contains the %s", what)
		}
	}
}

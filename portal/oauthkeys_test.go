package portal_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/apim-dev/apim/internal/model"
	"github.com/apim-dev/apim/internal/pgtest"
	"github.com/apim-dev/apim/internal/store"
	"github.com/apim-dev/apim/keymgr"
	"github.com/apim-dev/apim/portal"
)

// keysEnv is env with the real resident key manager as the portal's client
// registrar, and its token endpoint served.
type keysEnv struct {
	*env
	km       *keymgr.Server
	tokenURL string
}

func newKeysEnv(t *testing.T) *keysEnv {
	t.Helper()
	apimURL, sharedURL := pgtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	pool := func(url string) *pgxpool.Pool {
		p, err := pgxpool.New(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		return p
	}
	apim, shared := pool(apimURL), pool(sharedURL)
	logs := &bytes.Buffer{}
	var kmHandler http.Handler
	kmSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { kmHandler.ServeHTTP(w, r) }))
	t.Cleanup(kmSrv.Close)
	km, err := keymgr.New(ctx, keymgr.Config{BaseURL: kmSrv.URL, APIM: apim, Shared: shared, Logger: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	kmHandler = km.Handler()
	p, err := portal.New(portal.Config{
		Store: store.New(apim),
		Tokens: fakeTokens{
			"bob-token":    {Subject: "bob", Scopes: []string{"apim:subscribe", "apim:app_manage", "apim:sub_manage"}},
			"eve-token":    {Subject: "eve", Scopes: []string{"apim:app_manage"}},
			"viewer-token": {Subject: "bob", Scopes: []string{"apim:api_view"}},
		},
		Clients: km,
		Logger:  zerolog.New(logs),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p.Handler())
	t.Cleanup(srv.Close)
	return &keysEnv{env: &env{t: t, ctx: ctx, pool: apim, srv: srv, logs: logs}, km: km, tokenURL: kmSrv.URL + keymgr.PathToken}
}

type keysOut struct {
	KeyMappingID, ConsumerKey, ConsumerSecret, KeyType string
	SupportedGrantTypes                                []string
	AdditionalProperties                               map[string]any
}

// productionKeys generates app's production keys for client_credentials.
func (e *keysEnv) productionKeys(app string) keysOut {
	e.t.Helper()
	var keys keysOut
	e.must(e.call("POST", devBase+"/applications/"+app+"/generate-keys", "bob-token", map[string]any{
		"keyType": "PRODUCTION", "grantTypesToBeSupported": []string{"client_credentials"},
	}), 200, &keys)
	return keys
}

func (e *keysEnv) app(name, tokenType string) string {
	e.t.Helper()
	var app struct{ ApplicationID, TokenType string }
	e.must(e.call("POST", devBase+"/applications", "bob-token", map[string]any{
		"name": name, "throttlingPolicy": "Unlimited", "tokenType": tokenType,
	}), 201, &app)
	if want := tokenType; want != "" && app.TokenType != want || want == "" && app.TokenType != "JWT" {
		e.t.Fatalf("application tokenType %q, sent %q", app.TokenType, tokenType)
	}
	return app.ApplicationID
}

// token gets a client_credentials token; it returns the token and how
// long it lives, rounded to 10s.
func (e *keysEnv) token(id, secret string) (*oauth2.Token, time.Duration, error) {
	tok, err := (&clientcredentials.Config{ClientID: id, ClientSecret: secret, TokenURL: e.tokenURL}).Token(e.ctx)
	if err != nil {
		return nil, 0, err
	}
	return tok, time.Until(tok.Expiry).Round(10 * time.Second), nil
}

func TestApplicationTokenType(t *testing.T) {
	e := newKeysEnv(t)
	for _, tt := range []string{"OAUTH", "JWT", ""} {
		app := e.app("app-"+tt, tt)
		var got struct{ TokenType string }
		e.must(e.call("GET", devBase+"/applications/"+app, "bob-token", nil), 200, &got)
		want := tt
		if want == "" {
			want = "JWT"
		}
		if got.TokenType != want {
			t.Errorf("GET: tokenType %q, want %q", got.TokenType, want)
		}
		keys := e.productionKeys(app)
		tok, _, err := e.token(keys.ConsumerKey, keys.ConsumerSecret)
		if err != nil {
			t.Fatal(err)
		}
		if opaque := keymgr.IsOpaqueAccessToken(tok.AccessToken); opaque != (want == "OAUTH") {
			t.Errorf("tokenType %s: an access token of %d characters, opaque %v", want, len(tok.AccessToken), opaque)
		}
	}
	for _, bad := range []string{"opaque", "oauth", "DEFAULT"} {
		e.rejects(400, func() resp {
			return e.call("POST", devBase+"/applications", "bob-token", map[string]any{
				"name": "bad-" + bad, "throttlingPolicy": "Unlimited", "tokenType": bad,
			})
		}, "tokenType "+bad, "JWT or OAUTH")
	}
}

func TestGenerateKeysValidity(t *testing.T) {
	e := newKeysEnv(t)
	app := e.app("timed", "OAUTH")
	path := devBase + "/applications/" + app + "/generate-keys"
	body := func(validity any, props map[string]any) map[string]any {
		b := map[string]any{"keyType": "PRODUCTION", "grantTypesToBeSupported": []string{"client_credentials", "password", "refresh_token"}}
		if validity != nil {
			b["validityTime"] = validity
		}
		if props != nil {
			b["additionalProperties"] = props
		}
		return b
	}
	const field = "must be a whole number of seconds from 1 to 31536000"
	for name, c := range map[string]struct {
		validity any
		props    map[string]any
		want     []string
	}{
		"letters":            {"abc", nil, []string{"validityTime " + field}},
		"zero":               {"0", nil, []string{"validityTime " + field}},
		"negative number":    {-5, nil, []string{"validityTime " + field}},
		"fraction":           {1.5, nil, []string{"validityTime " + field}},
		"too long":           {"31536001", nil, []string{"validityTime " + field}},
		"a boolean":          {true, nil, []string{"validityTime " + field}},
		"bad user expiry":    {"3600", map[string]any{"user_access_token_expiry_time": "soon"}, []string{"additionalProperties.user_access_token_expiry_time " + field}},
		"bad refresh expiry": {nil, map[string]any{"refresh_token_expiry_time": -1}, []string{"additionalProperties.refresh_token_expiry_time " + field}},
		"bad app expiry":     {nil, map[string]any{"application_access_token_expiry_time": "1e3"}, []string{"additionalProperties.application_access_token_expiry_time " + field}},
		"two at once": {
			"x",
			map[string]any{"refresh_token_expiry_time": "0"},
			[]string{"validityTime " + field, "additionalProperties.refresh_token_expiry_time " + field},
		},
	} {
		t.Run(name, func(t *testing.T) {
			e.t = t
			e.rejects(400, func() resp { return e.call("POST", path, "bob-token", body(c.validity, c.props)) }, c.want...)
		})
	}
	e.t = t

	// validityTime as WSO2 sends it (a string), the other lifetimes in
	// additionalProperties beside WSO2's other properties; "N/A" is the
	// default.
	var keys keysOut
	r := e.call("POST", path, "bob-token", body("120", map[string]any{
		"user_access_token_expiry_time": 300, "refresh_token_expiry_time": "600", "id_token_expiry_time": "N/A", "pkceMandatory": "false",
	}))
	e.must(r, 200, &keys)
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q", r.header.Get("Cache-Control"))
	}
	want := map[string]any{"application_access_token_expiry_time": "120", "user_access_token_expiry_time": "300", "refresh_token_expiry_time": "600"}
	for k, v := range want {
		if keys.AdditionalProperties[k] != v {
			t.Errorf("additionalProperties %v, want %v", keys.AdditionalProperties, want)
		}
	}
	if _, d, err := e.token(keys.ConsumerKey, keys.ConsumerSecret); err != nil || d != 2*time.Minute {
		t.Errorf("token lives %v, %v; want 2m", d, err)
	}

	// additionalProperties' application expiry wins over validityTime;
	// a number works as well as a string.
	var sandbox keysOut
	b := body(3600, map[string]any{"application_access_token_expiry_time": "90", "user_access_token_expiry_time": "N/A"})
	b["keyType"] = "SANDBOX"
	e.must(e.call("POST", path, "bob-token", b), 200, &sandbox)
	if sandbox.AdditionalProperties["application_access_token_expiry_time"] != "90" || sandbox.AdditionalProperties["user_access_token_expiry_time"] != "3600" {
		t.Errorf("additionalProperties %v", sandbox.AdditionalProperties)
	}
	if _, d, err := e.token(sandbox.ConsumerKey, sandbox.ConsumerSecret); err != nil || d != 90*time.Second {
		t.Errorf("sandbox token lives %v, %v; want 1m30s", d, err)
	}
}

func TestUpdateOAuthKeys(t *testing.T) {
	e := newKeysEnv(t)
	app := e.app("updated", "JWT")
	keys := e.productionKeys(app)
	path := devBase + "/applications/" + app + "/oauth-keys/" + keys.KeyMappingID
	clientRow := func() string {
		t.Helper()
		var row string
		if err := e.pool.QueryRow(e.ctx, `SELECT c::text FROM oauth_clients c WHERE client_id = $1`, keys.ConsumerKey).Scan(&row); err != nil {
			t.Fatal(err)
		}
		return row
	}
	unchanged := func(what string, before string) {
		t.Helper()
		if after := clientRow(); after != before {
			t.Errorf("%s changed the client: %s → %s", what, before, after)
		}
	}

	// Refusals change nothing.
	before := clientRow()
	for name, c := range map[string]struct {
		token, path string
		body        any
		status      int
		want        []string
	}{
		"bad expiry": {
			"bob-token", path,
			map[string]any{"additionalProperties": map[string]any{"user_access_token_expiry_time": "0"}},
			400,
			[]string{"additionalProperties.user_access_token_expiry_time must be a whole number of seconds"},
		},
		"unknown grant":     {"bob-token", path, map[string]any{"supportedGrantTypes": []string{"magic"}}, 400, []string{"supportedGrantTypes magic"}},
		"other mapping id":  {"bob-token", path, map[string]any{"keyMappingId": "x", "supportedGrantTypes": []string{"password"}}, 400, []string{"keyMappingId x"}},
		"a secret":          {"bob-token", path, map[string]any{"consumerSecret": "mine"}, 400, []string{"consumerSecret cannot be set"}},
		"another key type":  {"bob-token", path, map[string]any{"keyType": "SANDBOX", "supportedGrantTypes": []string{"password"}}, 400, []string{"keyType is PRODUCTION"}},
		"another key":       {"bob-token", path, map[string]any{"consumerKey": "x", "supportedGrantTypes": []string{"password"}}, 400, []string{"consumerKey"}},
		"unknown field":     {"bob-token", path, map[string]any{"validity": 5}, 400, []string{"unknown field"}},
		"another user":      {"eve-token", path, map[string]any{"supportedGrantTypes": []string{"password"}}, 404, nil},
		"unknown mapping":   {"bob-token", devBase + "/applications/" + app + "/oauth-keys/00000000-0000-0000-0000-000000000000", map[string]any{"supportedGrantTypes": []string{"password"}}, 404, nil},
		"malformed mapping": {"bob-token", devBase + "/applications/" + app + "/oauth-keys/nope", map[string]any{"supportedGrantTypes": []string{"password"}}, 404, nil},
		"no scope":          {"viewer-token", path, map[string]any{"supportedGrantTypes": []string{"password"}}, 403, nil},
	} {
		t.Run(name, func(t *testing.T) {
			e.t = t
			if c.status == 403 {
				if r := e.call("PUT", c.path, c.token, c.body); r.status != 403 {
					t.Errorf("status %d: %s", r.status, r.body)
				}
				return
			}
			e.rejects(c.status, func() resp { return e.call("PUT", c.path, c.token, c.body) }, c.want...)
		})
	}
	e.t = t
	unchanged("refused updates", before)

	// The DTO a client got, sent back with new lifetimes and grant types.
	var got keysOut
	e.must(e.call("PUT", path, "bob-token", map[string]any{
		"keyMappingId": keys.KeyMappingID, "consumerKey": keys.ConsumerKey, "keyType": "PRODUCTION", "keyManager": "Resident Key Manager",
		"keyState": "COMPLETED", "mode": "CREATED", "token": nil, "callbackUrl": nil,
		"supportedGrantTypes":  []string{"client_credentials", "password"},
		"additionalProperties": map[string]any{"application_access_token_expiry_time": "200", "refresh_token_expiry_time": 7200},
	}), 200, &got)
	if got.ConsumerKey != keys.ConsumerKey || got.ConsumerSecret != "" || len(got.SupportedGrantTypes) != 2 ||
		got.AdditionalProperties["application_access_token_expiry_time"] != "200" ||
		got.AdditionalProperties["user_access_token_expiry_time"] != "3600" ||
		got.AdditionalProperties["refresh_token_expiry_time"] != "7200" {
		t.Errorf("PUT answered %+v", got)
	}
	if _, d, err := e.token(keys.ConsumerKey, keys.ConsumerSecret); err != nil || d != 200*time.Second {
		t.Errorf("token lives %v, %v; want 3m20s", d, err)
	}
	// Without additionalProperties the lifetimes stay.
	e.must(e.call("PUT", path, "bob-token", map[string]any{"supportedGrantTypes": []string{"client_credentials"}}), 200, &got)
	if len(got.SupportedGrantTypes) != 1 || got.AdditionalProperties["application_access_token_expiry_time"] != "200" {
		t.Errorf("PUT without additionalProperties answered %+v", got)
	}
}

func TestRegenerateConsumerSecret(t *testing.T) {
	e := newKeysEnv(t)
	app := e.app("regen", "OAUTH")
	keys := e.productionKeys(app)
	old, _, err := e.token(keys.ConsumerKey, keys.ConsumerSecret)
	if err != nil {
		t.Fatal(err)
	}
	path := devBase + "/applications/" + app + "/oauth-keys/" + keys.KeyMappingID + "/regenerate-secret"

	for name, c := range map[string]struct {
		token, path string
		status      int
	}{
		"another user":    {"eve-token", path, 404},
		"unknown mapping": {"bob-token", devBase + "/applications/" + app + "/oauth-keys/00000000-0000-0000-0000-000000000000/regenerate-secret", 404},
		"unknown app":     {"bob-token", devBase + "/applications/00000000-0000-0000-0000-000000000000/oauth-keys/" + keys.KeyMappingID + "/regenerate-secret", 404},
		"no token":        {"", path, 401},
		"no scope":        {"viewer-token", path, 403},
	} {
		t.Run(name, func(t *testing.T) {
			n := e.outbox()
			if r := e.call("POST", c.path, c.token, nil); r.status != c.status {
				t.Errorf("status %d, want %d: %s", r.status, c.status, r.body)
			}
			if e.outbox() != n {
				t.Error("a refused regeneration wrote an event")
			}
		})
	}
	if _, _, err := e.token(keys.ConsumerKey, keys.ConsumerSecret); err != nil {
		t.Fatalf("the secret stopped working after refused regenerations: %v", err)
	}

	n := e.outbox()
	var out struct{ ConsumerSecret string }
	r := e.call("POST", path, "bob-token", nil)
	e.must(r, 200, &out)
	if out.ConsumerSecret == "" || out.ConsumerSecret == keys.ConsumerSecret || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("regenerate-secret answered %s with %v", r.body, r.header)
	}
	if e.outbox()-n != 1 {
		t.Errorf("regenerate-secret wrote %d events, want 1 (the revocation)", e.outbox()-n)
	}
	if _, _, err := e.token(keys.ConsumerKey, keys.ConsumerSecret); err == nil {
		t.Error("the old secret still gets a token")
	}
	fresh, _, err := e.token(keys.ConsumerKey, out.ConsumerSecret)
	if err != nil {
		t.Fatalf("the new secret: %v", err)
	}
	if _, err := e.km.VerifyToken(e.ctx, old.AccessToken); !errors.Is(err, keymgr.ErrTokenRevoked) {
		t.Errorf("a token from before the regeneration: %v, want revoked", err)
	}
	if _, err := e.km.VerifyToken(e.ctx, fresh.AccessToken); err != nil {
		t.Errorf("a token of the new secret: %v", err)
	}
	// The gateways learn it from the full state too.
	st, err := store.New(e.pool).GatewayState(e.ctx, model.DefaultEnvironment)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, rev := range st.Revocations {
		found = found || rev.ClientID == keys.ConsumerKey && rev.IssuedBefore.After(time.Now().Add(-time.Minute))
	}
	if !found {
		t.Errorf("no client revocation in the gateway state: %+v", st.Revocations)
	}
	for what, s := range map[string]string{"old secret": keys.ConsumerSecret, "new secret": out.ConsumerSecret, "access token": old.AccessToken} {
		if strings.Contains(e.logs.String(), s) {
			t.Errorf("the portal log holds the %s", what)
		}
	}
	if !strings.Contains(e.logs.String(), "consumer secret regenerated") {
		t.Errorf("the regeneration was not logged: %s", e.logs)
	}
}

// WSO2's callbackUrl is the client's redirect URI: required for the
// authorization code grant, checked, shown, and replaced by PUT.
func TestOAuthKeysCallback(t *testing.T) {
	e := newKeysEnv(t)
	app := e.app("callback", "JWT")
	generate := devBase + "/applications/" + app + "/generate-keys"
	for name, c := range map[string]struct {
		body map[string]any
		want string
	}{
		"code grant, no callback": {map[string]any{"keyType": "PRODUCTION", "grantTypesToBeSupported": []string{"authorization_code"}}, "callbackUrl is invalid: required for the authorization_code grant"},
		"relative callback":       {map[string]any{"keyType": "PRODUCTION", "grantTypesToBeSupported": []string{"authorization_code"}, "callbackUrl": "/cb"}, "not an absolute URL"},
		"callback with fragment":  {map[string]any{"keyType": "PRODUCTION", "grantTypesToBeSupported": []string{"authorization_code"}, "callbackUrl": "https://a.example/cb#x"}, "fragment"},
		"plain http callback":     {map[string]any{"keyType": "PRODUCTION", "grantTypesToBeSupported": []string{"authorization_code"}, "callbackUrl": "http://app.example.com/cb"}, "use https"},
		"script callback":         {map[string]any{"keyType": "PRODUCTION", "grantTypesToBeSupported": []string{"authorization_code"}, "callbackUrl": "javascript:alert(1)"}, "scheme javascript"},
	} {
		t.Run(name, func(t *testing.T) {
			e.t = t
			e.rejects(400, func() resp { return e.call("POST", generate, "bob-token", c.body) }, c.want)
		})
	}
	e.t = t

	var keys struct {
		KeyMappingID, ConsumerKey string
		CallbackURL               *string
	}
	const first, second = "https://app.example.com/first", "https://app.example.com/second"
	e.must(e.call("POST", generate, "bob-token", map[string]any{
		"keyType": "PRODUCTION", "grantTypesToBeSupported": []string{"authorization_code", "refresh_token"}, "callbackUrl": first,
	}), 200, &keys)
	path := devBase + "/applications/" + app + "/oauth-keys/" + keys.KeyMappingID
	callback := func() string {
		t.Helper()
		var got struct{ CallbackURL *string }
		e.must(e.call("GET", path, "bob-token", nil), 200, &got)
		if got.CallbackURL == nil {
			return ""
		}
		return *got.CallbackURL
	}
	if keys.CallbackURL == nil || *keys.CallbackURL != first || callback() != first {
		t.Errorf("generate-keys answered %v, GET %q; want %s", keys.CallbackURL, callback(), first)
	}
	if info, err := e.km.ClientInfo(e.ctx, keys.ConsumerKey); err != nil || info.Callback != first {
		t.Errorf("the key manager has %+v, %v", info, err)
	}

	e.rejects(400, func() resp {
		return e.call("PUT", path, "bob-token", map[string]any{"supportedGrantTypes": []string{"authorization_code"}, "callbackUrl": ""})
	}, "callbackUrl is invalid: required")
	e.rejects(400, func() resp { return e.call("PUT", path, "bob-token", map[string]any{"callbackUrl": "not a url"}) }, "callbackUrl")
	if got := callback(); got != first {
		t.Errorf("callback %q after refused updates, want %q", got, first)
	}
	// Grants alone keep the callback; a new one replaces it.
	e.must(e.call("PUT", path, "bob-token", map[string]any{"supportedGrantTypes": []string{"authorization_code"}}), 200, nil)
	e.must(e.call("PUT", path, "bob-token", map[string]any{"callbackUrl": second}), 200, nil)
	if got := callback(); got != second {
		t.Errorf("callback %q, want %q", got, second)
	}
	// Without the code grant a client keeps no callback, whatever is sent
	// (WSO2's examples send "www.google.lk").
	e.must(e.call("PUT", path, "bob-token", map[string]any{"supportedGrantTypes": []string{"client_credentials"}, "callbackUrl": "www.google.lk"}), 200, nil)
	if got := callback(); got != "" {
		t.Errorf("callback %q without the code grant", got)
	}
	var cc struct{ KeyMappingID string }
	e.must(e.call("POST", generate, "bob-token", map[string]any{
		"keyType": "SANDBOX", "grantTypesToBeSupported": []string{"client_credentials"}, "callbackUrl": "www.google.lk",
	}), 200, &cc)
	e.must(e.call("PUT", devBase+"/applications/"+app+"/oauth-keys/"+cc.KeyMappingID, "bob-token", map[string]any{
		"supportedGrantTypes": []string{"authorization_code"},
	}), 400, nil)
}

package keymgr

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
	"golang.org/x/oauth2"

	"github.com/apim-dev/apim/internal/model"
	apimstore "github.com/apim-dev/apim/internal/store"
)

// extIssuer is an external OAuth provider as the JWT bearer grant sees
// it: its own RSA key, its JWKS served over HTTP, registered as a key
// manager through the store, as the admin API does.
type extIssuer struct {
	srv     *httptest.Server
	key     *rsa.PrivateKey
	kid     string
	fetches atomic.Int32
	km      *model.KeyManager
}

func newExtIssuer(t *testing.T, e *testEnv, name string, enabled bool) *extIssuer {
	t.Helper()
	x := &extIssuer{key: testKey(t), kid: "ext-" + name}
	x.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/jwks" {
			http.NotFound(w, r)
			return
		}
		x.fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
			{Key: &x.key.PublicKey, KeyID: x.kid, Algorithm: string(jose.RS256), Use: "sig"},
		}})
	}))
	t.Cleanup(x.srv.Close)
	km, err := apimstore.New(e.apim).CreateKeyManager(context.Background(), model.KeyManager{
		Name: name, Type: "custom", Enabled: enabled, Issuer: x.srv.URL, JWKSURI: x.srv.URL + "/jwks",
	})
	if err != nil {
		t.Fatalf("CreateKeyManager: %v", err)
	}
	x.km = km
	return x
}

// claims are those of a good assertion for the token endpoint of e.
func (x *extIssuer) claims(e *testEnv, sub string) map[string]any {
	now := time.Now().Unix()
	return map[string]any{
		"iss": x.srv.URL, "sub": sub, "aud": []string{e.ts.URL + PathToken},
		"iat": now, "exp": now + 300, "jti": uuid.NewString(),
	}
}

func (x *extIssuer) sign(t *testing.T, claims map[string]any) string {
	t.Helper()
	return signTest(t, x.key, x.kid, claims)
}

// jwtBearer asks for a token with an assertion, the client authenticating
// with client_secret_basic (client_credentials' request with the grant
// type and the assertion overridden, which golang.org/x/oauth2 allows).
// The auth style is fixed: auto-detection would post a refused assertion
// a second time.
func (e *testEnv) jwtBearer(id, secret, assertion string, scopes ...string) (*oauth2.Token, error) {
	cfg := e.ccConfig(id, secret, scopes...)
	cfg.AuthStyle = oauth2.AuthStyleInHeader
	cfg.EndpointParams = url.Values{"grant_type": {GrantJWTBearer}, "assertion": {assertion}}
	return cfg.Token(context.Background())
}

func TestJWTBearerGrant(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	x := newExtIssuer(t, e, "Okta", true)
	id, secret := e.appWith(t, "bob", TokenTypeJWT, "", GrantJWTBearer, GrantClientCredentials)

	// client_secret_post too, through the raw form.
	for name, style := range map[string]oauth2.AuthStyle{
		"client_secret_basic": oauth2.AuthStyleInHeader,
		"client_secret_post":  oauth2.AuthStyleInParams,
	} {
		t.Run(name, func(t *testing.T) {
			cfg := e.ccConfig(id, secret, "apim:api_create", "default")
			cfg.AuthStyle = style
			cfg.EndpointParams = url.Values{"grant_type": {GrantJWTBearer}, "assertion": {x.sign(t, x.claims(e, "carol@okta"))}}
			tok, err := cfg.Token(ctx)
			if err != nil {
				t.Fatalf("Token: %v", err)
			}
			// An application's token: the default scope only.
			if got := tok.Extra("scope"); got != "default" {
				t.Errorf("scope %q, want default", got)
			}
			if tok.RefreshToken != "" {
				t.Error("a refresh token was issued for an assertion")
			}
			if d := time.Until(tok.Expiry); d < 59*time.Minute || d > time.Hour+time.Second {
				t.Errorf("expires in %v, want the user access token's 1h", d)
			}
			_, claims := e.verifyWithJWKS(t, tok.AccessToken)
			want := map[string]any{
				"iss": e.s.Issuer(), "sub": "carol@okta@" + x.km.Name, "client_id": id, "azp": id,
				"aut": autApplicationUser, "scope": "default", "aud": []any{id},
			}
			for k, v := range want {
				if got, _ := json.Marshal(claims[k]); string(got) != mustJSON(t, v) {
					t.Errorf("claim %s = %s, want %s", k, got, mustJSON(t, v))
				}
			}
			p, err := e.s.VerifyToken(ctx, tok.AccessToken)
			if err != nil {
				t.Fatalf("VerifyToken: %v", err)
			}
			if p.Subject != "carol@okta@"+x.km.Name || p.ClientID != id || !slices.Equal(p.Scopes, []string{DefaultScope}) {
				t.Errorf("principal %+v", p)
			}
		})
	}

	t.Run("opaque application", func(t *testing.T) {
		oid, osecret := e.appWith(t, "bob", TokenTypeOAuth, "", GrantJWTBearer)
		tok, err := e.jwtBearer(oid, osecret, x.sign(t, x.claims(e, "dave@okta")))
		if err != nil {
			t.Fatalf("Token: %v", err)
		}
		if !IsOpaqueAccessToken(tok.AccessToken) {
			t.Fatalf("access token %.12s…: want an opaque token", tok.AccessToken)
		}
		p, err := e.s.VerifyToken(ctx, tok.AccessToken)
		if err != nil || p.Subject != "dave@okta@"+x.km.Name || p.ClientID != oid {
			t.Errorf("VerifyToken = %+v, %v", p, err)
		}
		in, err := e.s.IntrospectAccessToken(ctx, tok.AccessToken)
		if err != nil || !in.Active || in.Username != "dave@okta@"+x.km.Name {
			t.Errorf("introspection %+v, %v", in, err)
		}
	})

	// A REST (DCR) client allowed the grant: the assertion's subject names
	// a local administrator, whose roles it must not get.
	t.Run("no role scopes for the subject", func(t *testing.T) {
		e.user(t, "admin", "admin-password-1", "admin")
		rid, rsecret := e.client(t, "admin", "rest-bearer", GrantJWTBearer)
		tok, err := e.jwtBearer(rid, rsecret, x.sign(t, x.claims(e, "admin")), "apim:admin", "apim:api_create")
		if err != nil {
			t.Fatalf("Token: %v", err)
		}
		if got := tok.Extra("scope"); got != "default" {
			t.Errorf("scope %q, want default", got)
		}
	})

	// One fetch of the issuer's JWKS served every assertion above.
	if n := x.fetches.Load(); n != 1 {
		t.Errorf("the issuer's JWKS was fetched %d times, want 1", n)
	}

	t.Run("aud may be the issuer", func(t *testing.T) {
		// A second server on the same databases whose issuer differs from
		// its token endpoint's URL.
		e2 := newEnvOn(t, e.apim, e.shared, func(c *Config) { c.Issuer = "https://apim.example.com/issuer" })
		c := x.claims(e2, "erin@okta")
		c["aud"] = "https://apim.example.com/issuer"
		tok, err := e2.jwtBearer(id, secret, x.sign(t, c))
		if err != nil {
			t.Fatalf("Token: %v", err)
		}
		if p, err := e2.s.VerifyToken(ctx, tok.AccessToken); err != nil || p.Subject != "erin@okta@"+x.km.Name {
			t.Errorf("VerifyToken = %+v, %v", p, err)
		}
	})

	var doc map[string]any
	getJSON(t, e.ts.URL+PathDiscovery, &doc)
	if gts, _ := doc["grant_types_supported"].([]any); !slices.Contains(gts, any(GrantJWTBearer)) {
		t.Errorf("grant_types_supported %v lacks %s", gts, GrantJWTBearer)
	}
}

func TestJWTBearerRefusals(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	x := newExtIssuer(t, e, "Okta", true)
	off := newExtIssuer(t, e, "Disabled", false)
	id, secret := e.appWith(t, "bob", TokenTypeJWT, "", GrantJWTBearer)
	ccID, ccSecret := e.appWith(t, "bob", TokenTypeJWT, "", GrantClientCredentials)
	other := testKey(t)

	replayed := x.sign(t, x.claims(e, "carol"))
	if _, err := e.jwtBearer(id, secret, replayed); err != nil {
		t.Fatalf("first use: %v", err)
	}
	// An assertion refused to a client without the grant is not used up.
	unused := x.sign(t, x.claims(e, "carol"))

	with := func(mod func(c map[string]any)) string {
		c := x.claims(e, "carol")
		mod(c)
		return x.sign(t, c)
	}
	now := time.Now().Unix()
	hs256, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	hmacAssertion, err := josejwt.Signed(hs256).Claims(x.claims(e, "carol")).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	// The issuer's JWKS is down and was never fetched.
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	if _, err := apimstore.New(e.apim).CreateKeyManager(ctx, model.KeyManager{
		Name: "Down", Type: "custom", Enabled: true, Issuer: "https://down.example.com", JWKSURI: down.URL + "/jwks",
	}); err != nil {
		t.Fatal(err)
	}

	tests := map[string]struct {
		id, secret, assertion string
		wantStatus            int
		wantCode              string
	}{
		"replayed jti":       {id, secret, replayed, 400, "invalid_grant"},
		"wrong audience":     {id, secret, with(func(c map[string]any) { c["aud"] = "https://elsewhere.example.com/oauth2/token" }), 400, "invalid_grant"},
		"no audience":        {id, secret, with(func(c map[string]any) { delete(c, "aud") }), 400, "invalid_grant"},
		"expired":            {id, secret, with(func(c map[string]any) { c["iat"], c["exp"] = now-600, now-120 }), 400, "invalid_grant"},
		"no exp":             {id, secret, with(func(c map[string]any) { delete(c, "exp") }), 400, "invalid_grant"},
		"lives over an hour": {id, secret, with(func(c map[string]any) { c["exp"] = now + 2*3600 }), 400, "invalid_grant"},
		"not yet valid":      {id, secret, with(func(c map[string]any) { c["nbf"] = now + 600 }), 400, "invalid_grant"},
		"no jti":             {id, secret, with(func(c map[string]any) { delete(c, "jti") }), 400, "invalid_grant"},
		"no sub":             {id, secret, with(func(c map[string]any) { delete(c, "sub") }), 400, "invalid_grant"},
		"bad signature":      {id, secret, signTest(t, other, x.kid, x.claims(e, "carol")), 400, "invalid_grant"},
		"unknown kid":        {id, secret, signTest(t, other, "forged", x.claims(e, "carol")), 400, "invalid_grant"},
		"HMAC":               {id, secret, hmacAssertion, 400, "invalid_grant"},
		"not a JWT":          {id, secret, "not.a.jwt", 400, "invalid_grant"},
		"unknown issuer":     {id, secret, with(func(c map[string]any) { c["iss"] = "https://unknown.example.com" }), 400, "invalid_grant"},
		"our own issuer":     {id, secret, with(func(c map[string]any) { c["iss"] = e.s.Issuer() }), 400, "invalid_grant"},
		"disabled key manager": {
			id, secret, off.sign(t, off.claims(e, "carol")), 400, "invalid_grant",
		},
		"issuer's JWKS unreachable": {
			id, secret, with(func(c map[string]any) { c["iss"] = "https://down.example.com" }), 503, "temporarily_unavailable",
		},
		"no assertion":         {id, secret, "", 400, "invalid_request"},
		"client without grant": {ccID, ccSecret, unused, 400, "unauthorized_client"},
		"wrong client secret":  {id, "wrong-secret", x.sign(t, x.claims(e, "carol")), 401, "invalid_client"},
		// fosite's answer to a request without client credentials, whatever the grant.
		"no client":             {"", "", x.sign(t, x.claims(e, "carol")), 400, "invalid_request"},
		"assertion over 16 KiB": {id, secret, with(func(c map[string]any) { c["pad"] = strings.Repeat("a", 16<<10) }), 400, "invalid_grant"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			form := url.Values{"grant_type": {GrantJWTBearer}}
			if tc.assertion != "" {
				form.Set("assertion", tc.assertion)
			}
			status, body := e.postForm(t, PathToken, tc.id, tc.secret, form)
			if status != tc.wantStatus || body["error"] != tc.wantCode {
				t.Errorf("%d %v, want %d %s", status, body, tc.wantStatus, tc.wantCode)
			}
			desc, _ := body["error_description"].(string)
			if tc.assertion != "" && (strings.Contains(desc, tc.assertion) || strings.Contains(desc, tc.assertion[strings.LastIndex(tc.assertion, ".")+1:])) {
				t.Errorf("the description quotes the assertion: %s", desc)
			}
		})
	}
	if _, err := e.jwtBearer(id, secret, unused); err != nil {
		t.Errorf("the assertion refused to a client without the grant, then to one with it: %v", err)
	}
}

// TestJWTBearerDisableKeyManager: an issuer's assertions are refused from
// the moment its key manager is disabled, and accepted again once it is
// enabled.
func TestJWTBearerDisableKeyManager(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	x := newExtIssuer(t, e, "Okta", true)
	id, secret := e.appWith(t, "bob", TokenTypeJWT, "", GrantJWTBearer)
	st := apimstore.New(e.apim)
	if _, err := e.jwtBearer(id, secret, x.sign(t, x.claims(e, "carol"))); err != nil {
		t.Fatalf("enabled: %v", err)
	}
	km := *x.km
	km.Enabled = false
	if _, err := st.UpdateKeyManager(ctx, km.ID, km); err != nil {
		t.Fatal(err)
	}
	_, err := e.jwtBearer(id, secret, x.sign(t, x.claims(e, "carol")))
	if re := retrieveError(t, err); re.ErrorCode != "invalid_grant" {
		t.Errorf("disabled: %q %s, want invalid_grant", re.ErrorCode, re.ErrorDescription)
	}
	km.Enabled = true
	if _, err := st.UpdateKeyManager(ctx, km.ID, km); err != nil {
		t.Fatal(err)
	}
	if _, err := e.jwtBearer(id, secret, x.sign(t, x.claims(e, "carol"))); err != nil {
		t.Errorf("enabled again: %v", err)
	}
	if err := st.DeleteKeyManager(ctx, km.ID); err != nil {
		t.Fatal(err)
	}
	_, err = e.jwtBearer(id, secret, x.sign(t, x.claims(e, "carol")))
	if re := retrieveError(t, err); re.ErrorCode != "invalid_grant" {
		t.Errorf("deleted: %q %s, want invalid_grant", re.ErrorCode, re.ErrorDescription)
	}
}

// TestJWTBearerConcurrentReplay: of simultaneous uses of one assertion,
// at two replicas, exactly one gets a token.
func TestJWTBearerConcurrentReplay(t *testing.T) {
	e := newEnv(t)
	e2 := newEnvOn(t, e.apim, e.shared)
	x := newExtIssuer(t, e, "Okta", true)
	id, secret := e.appWith(t, "bob", TokenTypeJWT, "", GrantJWTBearer)
	for round := range 3 {
		assertion := x.sign(t, x.claims(e, "carol"))
		const n = 8
		var wg sync.WaitGroup
		var ok, refused atomic.Int32
		for i := range n {
			env := e
			if i%2 == 1 {
				env = e2
			}
			wg.Go(func() {
				_, err := env.jwtBearer(id, secret, assertion)
				var re *oauth2.RetrieveError
				switch {
				case err == nil:
					ok.Add(1)
				case errors.As(err, &re) && re.ErrorCode == "invalid_grant":
					refused.Add(1)
				default:
					t.Errorf("round %d: %v", round, err)
				}
			})
		}
		wg.Wait()
		if ok.Load() != 1 || refused.Load() != n-1 {
			t.Errorf("round %d: %d tokens, %d invalid_grant; want 1 and %d", round, ok.Load(), refused.Load(), n-1)
		}
	}
}

// TestJWTBearerNoSecretsInLogs runs accepted and refused assertions and
// checks that no assertion, signature, client secret or issued token
// reached the log.
func TestJWTBearerNoSecretsInLogs(t *testing.T) {
	e := newEnv(t)
	x := newExtIssuer(t, e, "Okta", true)
	id, secret := e.appWith(t, "bob", TokenTypeJWT, "", GrantJWTBearer)
	oid, osecret := e.appWith(t, "bob", TokenTypeOAuth, "", GrantJWTBearer)
	ccID, ccSecret := e.appWith(t, "bob", TokenTypeJWT, "", GrantClientCredentials)

	good := x.sign(t, x.claims(e, "carol"))
	tok, err := e.jwtBearer(id, secret, good)
	if err != nil {
		t.Fatal(err)
	}
	opaque, err := e.jwtBearer(oid, osecret, x.sign(t, x.claims(e, "carol")))
	if err != nil {
		t.Fatal(err)
	}
	c := x.claims(e, "carol")
	c["aud"] = "https://elsewhere.example.com"
	wrongAud := x.sign(t, c)
	forged := signTest(t, testKey(t), x.kid, x.claims(e, "carol"))
	ccAssertion := x.sign(t, x.claims(e, "carol"))
	_, _ = e.jwtBearer(id, secret, good) // replay
	_, _ = e.jwtBearer(id, secret, wrongAud)
	_, _ = e.jwtBearer(id, secret, forged)
	_, _ = e.jwtBearer(ccID, ccSecret, ccAssertion)
	_, _ = e.jwtBearer(id, "wrong-"+secret, ccAssertion)

	logs := e.logs.String()
	for _, msg := range []string{"jwt bearer assertion accepted", "token issued", "token request refused", "already used"} {
		if !strings.Contains(logs, msg) {
			t.Errorf("the log has no %q", msg)
		}
	}
	if t.Failed() {
		t.Fatalf("the flows were not logged: %s", logs)
	}
	sigOf := func(jws string) string { return jws[strings.LastIndex(jws, ".")+1:] }
	for what, s := range map[string]string{
		"good assertion": good, "its signature": sigOf(good), "wrong-aud assertion": wrongAud,
		"forged assertion": forged, "forged signature": sigOf(forged), "assertion of a client without the grant": ccAssertion,
		"client secret": secret, "opaque client secret": osecret, "cc client secret": ccSecret,
		"access token": tok.AccessToken, "opaque access token": opaque.AccessToken,
	} {
		if strings.Contains(logs, s) {
			t.Errorf("the log contains the %s", what)
		}
	}
}

// TestAssertionKeys: the JWKS cache fetches a set on first use, serves it
// from memory, fetches again for an unknown kid or once old, at most once
// per assertionJWKSMinRefresh, and keeps the keys it holds when a fetch
// fails.
func TestAssertionKeys(t *testing.T) {
	key := testKey(t)
	var fetches atomic.Int32
	var kids atomic.Value
	kids.Store([]string{"k1"})
	var failing atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fetches.Add(1)
		if failing.Load() {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		var set jose.JSONWebKeySet
		for _, kid := range kids.Load().([]string) {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: &key.PublicKey, KeyID: kid, Use: "sig"})
		}
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(srv.Close)
	now := time.Unix(1_700_000_000, 0)
	c := newAssertionKeys(srv.Client(), zerolog.New(zerolog.NewTestWriter(t)))
	c.now = func() time.Time { return now }
	ctx := context.Background()

	step := func(name, kid string, wantFetches int32, wantKids ...string) {
		t.Helper()
		keys, err := c.keys(ctx, srv.URL, kid)
		var got []string
		for _, k := range keys {
			got = append(got, k.KeyID)
		}
		if err != nil || !slices.Equal(got, wantKids) || fetches.Load() != wantFetches {
			t.Errorf("%s: keys %v, %v, %d fetches; want %v, %d fetches", name, got, err, fetches.Load(), wantKids, wantFetches)
		}
	}
	step("first use", "k1", 1, "k1")
	step("known kid", "k1", 1, "k1")
	step("no kid", "", 1, "k1")
	kids.Store([]string{"k1", "k2"})
	step("unknown kid within the minimum refresh", "k2", 1, "k1")
	now = now.Add(assertionJWKSMinRefresh)
	step("unknown kid after it", "k2", 2, "k1", "k2")
	step("unknown kid again", "k3", 2, "k1", "k2")
	failing.Store(true)
	now = now.Add(assertionJWKSMaxAge)
	step("old set, fetch fails: the keys held", "k1", 3, "k1", "k2")
	step("failed a moment ago: no fetch", "k1", 3, "k1", "k2")
	failing.Store(false)
	kids.Store([]string{"k2"})
	now = now.Add(assertionJWKSMinRefresh)
	step("old set fetched again", "k2", 4, "k2")

	failing.Store(true)
	if _, err := c.keys(ctx, srv.URL+"/other", "k1"); !errors.Is(err, errJWKSUnavailable) {
		t.Errorf("never fetched: %v, want errJWKSUnavailable", err)
	}
}

// TestCheckAssertionClaims covers the clock edges of the claim checks.
func TestCheckAssertionClaims(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	aud := []string{"https://km.example.com/oauth2/token", "https://km.example.com/issuer"}
	date := func(d time.Duration) *josejwt.NumericDate { return josejwt.NewNumericDate(now.Add(d)) }
	good := func() josejwt.Claims {
		return josejwt.Claims{
			Issuer: "https://idp.example.com", Subject: "carol", ID: "j1", Audience: josejwt.Audience{"x", aud[0]},
			IssuedAt: date(0), Expiry: date(5 * time.Minute),
		}
	}
	tests := map[string]struct {
		mod  func(c *josejwt.Claims)
		want bool
	}{
		"good":                             {func(*josejwt.Claims) {}, true},
		"aud the issuer":                   {func(c *josejwt.Claims) { c.Audience = josejwt.Audience{aud[1]} }, true},
		"aud elsewhere":                    {func(c *josejwt.Claims) { c.Audience = josejwt.Audience{"https://km.example.com"} }, false},
		"expired within the leeway":        {func(c *josejwt.Claims) { c.Expiry = date(-clockLeeway + time.Second) }, true},
		"expired past the leeway":          {func(c *josejwt.Claims) { c.Expiry = date(-clockLeeway) }, false},
		"one hour from iat":                {func(c *josejwt.Claims) { c.Expiry = date(time.Hour) }, true},
		"over one hour from iat":           {func(c *josejwt.Claims) { c.Expiry = date(time.Hour + time.Second) }, false},
		"no iat, exp in an hour":           {func(c *josejwt.Claims) { c.IssuedAt, c.Expiry = nil, date(time.Hour) }, true},
		"no iat, exp past an hour":         {func(c *josejwt.Claims) { c.IssuedAt, c.Expiry = nil, date(time.Hour+clockLeeway+time.Second) }, false},
		"iat in the future, within leeway": {func(c *josejwt.Claims) { c.IssuedAt = date(clockLeeway) }, true},
		"iat in the future":                {func(c *josejwt.Claims) { c.IssuedAt = date(clockLeeway + time.Second) }, false},
		"nbf within leeway":                {func(c *josejwt.Claims) { c.NotBefore = date(clockLeeway) }, true},
		"nbf ahead":                        {func(c *josejwt.Claims) { c.NotBefore = date(clockLeeway + time.Second) }, false},
		"control character in sub":         {func(c *josejwt.Claims) { c.Subject = "carol\n" }, false},
		"long jti":                         {func(c *josejwt.Claims) { c.ID = strings.Repeat("j", 256) }, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := good()
			tc.mod(&c)
			err := checkAssertionClaims(&c, now, aud)
			if (err == nil) != tc.want {
				t.Errorf("err %v, want accepted %v", err, tc.want)
			}
			if err != nil && !errors.Is(err, errAssertionClaims) {
				t.Errorf("err %v is not errAssertionClaims", err)
			}
		})
	}
}

// FuzzParseAssertion: no input panics, every refusal is one of the
// assertion sentinels, and whatever passes parsing, the signature check and
// the claim checks says exactly what the genuine assertion says.
func FuzzParseAssertion(f *testing.F) {
	const iss = "https://idp.example.com"
	tokenURL := "https://km.example.com/oauth2/token"
	now := time.Unix(1_700_000_000, 0)
	key := testKey(f)
	keys := []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Use: "sig"}}
	claims := map[string]any{
		"iss": iss, "sub": "carol", "aud": tokenURL, "iat": now.Unix(), "exp": now.Unix() + 300, "jti": "j1",
	}
	good := signTest(f, key, "k1", claims)
	a, err := parseAssertion(good)
	if err != nil {
		f.Fatal(err)
	}
	want, err := a.verify(keys)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)-2])
	f.Add(strings.Replace(good, ".", "..", 1))
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("eyJhbGciOiJIUzI1NiJ9.e30.c2ln")
	f.Add("")
	f.Add("a.b.c")
	f.Add(`{"payload":"e30","signatures":[]}`)
	f.Fuzz(func(t *testing.T, raw string) {
		a, err := parseAssertion(raw)
		if err != nil {
			if !errors.Is(err, errAssertionMalformed) {
				t.Fatalf("parse error outside the sentinels: %v", err)
			}
			return
		}
		got, err := a.verify(keys)
		if err != nil {
			if !errors.Is(err, errAssertionSignature) {
				t.Fatalf("verify error outside the sentinels: %v", err)
			}
			return
		}
		if err := checkAssertionClaims(got, now, []string{tokenURL}); err != nil {
			if !errors.Is(err, errAssertionClaims) {
				t.Fatalf("claims error outside the sentinels: %v", err)
			}
			return
		}
		if got.Issuer != want.Issuer || got.Subject != want.Subject || got.ID != want.ID ||
			!got.Expiry.Time().Equal(want.Expiry.Time()) || !slices.Equal(got.Audience, want.Audience) || a.claims.Issuer != got.Issuer {
			t.Fatalf("forged claims %+v from %q", got, raw)
		}
	})
}

// BenchmarkJWTBearerGrant measures the token endpoint's JWT bearer grant
// over loopback HTTP: client authentication, the key manager lookup, an
// ES256 assertion verified with the cached JWKS, the jti recorded in
// PostgreSQL, and an RS256 access token signed. Signing the assertions is
// not timed.
func BenchmarkJWTBearerGrant(b *testing.B) {
	apim, shared := newDatabases(b)
	e := &testEnv{apim: apim, shared: shared, logs: &lockedBuffer{}}
	var h http.Handler
	e.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	b.Cleanup(e.ts.Close)
	s, err := New(context.Background(), Config{BaseURL: e.ts.URL, APIM: apim, Shared: shared, Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	e.s, h = s, s.Handler()

	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &ecKey.PublicKey, KeyID: "ec1", Use: "sig"}}})
	}))
	b.Cleanup(idp.Close)
	if _, err := apimstore.New(apim).CreateKeyManager(context.Background(), model.KeyManager{
		Name: "IdP", Type: "custom", Enabled: true, Issuer: idp.URL, JWKSURI: idp.URL + "/jwks",
	}); err != nil {
		b.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: ecKey}, (&jose.SignerOptions{}).WithHeader("kid", "ec1"))
	if err != nil {
		b.Fatal(err)
	}
	var id, secret string
	ctx := context.Background()
	if err := pgx.BeginFunc(ctx, apim, func(tx pgx.Tx) error {
		id, secret, err = insertClient(ctx, tx, clientKindApplication, "bob", "bench", []string{GrantJWTBearer}, nil)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	client := e.ts.Client()
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		now := time.Now().Unix()
		assertion, err := josejwt.Signed(signer).Claims(map[string]any{
			"iss": idp.URL, "sub": "carol", "aud": e.ts.URL + PathToken, "iat": now, "exp": now + 300, "jti": uuid.NewString(),
		}).Serialize()
		if err != nil {
			b.Fatal(err)
		}
		body := url.Values{"grant_type": {GrantJWTBearer}, "assertion": {assertion}}.Encode()
		b.StartTimer()
		req, _ := http.NewRequest(http.MethodPost, e.ts.URL+PathToken, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(id, secret)
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || resp.StatusCode != http.StatusOK || tok.AccessToken == "" {
			b.Fatalf("token: %d, %v", resp.StatusCode, err)
		}
		resp.Body.Close()
	}
}

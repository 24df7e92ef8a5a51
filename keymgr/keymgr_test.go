package keymgr

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// lockedBuffer collects log output written from handler goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type testEnv struct {
	s      *Server
	ts     *httptest.Server
	apim   *pgxpool.Pool
	shared *pgxpool.Pool
	logs   *lockedBuffer
}

func newEnv(t *testing.T) *testEnv {
	t.Helper()
	apim, shared := newDatabases(t)
	return newEnvOn(t, apim, shared)
}

func newEnvOn(t *testing.T, apim, shared *pgxpool.Pool, opts ...func(*Config)) *testEnv {
	t.Helper()
	e := &testEnv{apim: apim, shared: shared, logs: &lockedBuffer{}}
	var h http.Handler
	e.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	t.Cleanup(e.ts.Close)
	logger := zerolog.New(io.MultiWriter(e.logs, zerolog.NewTestWriter(t)))
	cfg := Config{BaseURL: e.ts.URL, APIM: apim, Shared: shared, Logger: logger}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.s, h = s, s.Handler()
	return e
}

func (e *testEnv) user(t *testing.T, name, password string, roles ...string) {
	t.Helper()
	if _, err := EnsureUser(context.Background(), e.shared, name, password, roles); err != nil {
		t.Fatalf("EnsureUser: %v", err)
	}
}

// client registers a REST client of owner's, as DCR does.
func (e *testEnv) client(t *testing.T, owner, name string, grants ...string) (id, secret string) {
	t.Helper()
	ctx := context.Background()
	err := pgx.BeginFunc(ctx, e.apim, func(tx pgx.Tx) error {
		var err error
		id, secret, err = insertClient(ctx, tx, clientKindREST, owner, name, grants, nil)
		return err
	})
	if err != nil {
		t.Fatalf("insertClient: %v", err)
	}
	return id, secret
}

// appClient registers an application's client, as the devportal's
// generate-keys does.
func (e *testEnv) appClient(t *testing.T, owner, name string, grants ...string) (id, secret string) {
	t.Helper()
	ctx := context.Background()
	err := pgx.BeginFunc(ctx, e.apim, func(tx pgx.Tx) error {
		var err error
		id, secret, err = e.s.RegisterClient(ctx, tx, owner, name, grants, "")
		return err
	})
	if err != nil {
		t.Fatalf("RegisterClient: %v", err)
	}
	return id, secret
}

func (e *testEnv) ccConfig(id, secret string, scopes ...string) *clientcredentials.Config {
	return &clientcredentials.Config{ClientID: id, ClientSecret: secret, TokenURL: e.ts.URL + PathToken, Scopes: scopes}
}

func (e *testEnv) pwConfig(id, secret string, scopes ...string) *oauth2.Config {
	return &oauth2.Config{ClientID: id, ClientSecret: secret, Endpoint: oauth2.Endpoint{TokenURL: e.ts.URL + PathToken}, Scopes: scopes}
}

// verifyWithJWKS checks the token as an outside party would: with the keys
// published at the JWKS endpoint. It returns the header and the claims.
func (e *testEnv) verifyWithJWKS(t *testing.T, raw string) (jose.Header, map[string]any) {
	t.Helper()
	resp, err := http.Get(e.ts.URL + PathJWKS)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatalf("decode jwks: %v", err)
	}
	tok, err := josejwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatalf("parse token: %v", err)
	}
	keys := set.Key(tok.Headers[0].KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %q: %d keys in the JWKS", tok.Headers[0].KeyID, len(keys))
	}
	claims := map[string]any{}
	if err := tok.Claims(keys[0].Key, &claims); err != nil {
		t.Fatalf("verify token with the JWKS: %v", err)
	}
	return tok.Headers[0], claims
}

func retrieveError(t *testing.T, err error) *oauth2.RetrieveError {
	t.Helper()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		t.Fatalf("want *oauth2.RetrieveError, got %v", err)
	}
	return re
}

func TestClientCredentialsGrant(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.user(t, "alice", "alice-password-1", "Internal/subscriber")
	id, secret := e.client(t, "alice", "shop", GrantClientCredentials)
	if len(id) != 28 || len(secret) != 43 {
		t.Errorf("client id %q (%d chars), secret of %d chars; want 28 and 43", id, len(id), len(secret))
	}

	for name, style := range map[string]oauth2.AuthStyle{
		"client_secret_basic": oauth2.AuthStyleInHeader,
		"client_secret_post":  oauth2.AuthStyleInParams,
	} {
		t.Run(name, func(t *testing.T) {
			cfg := e.ccConfig(id, secret, "apim:subscribe", "apim:api_create", "default", "apim:subscribe")
			cfg.AuthStyle = style
			before := time.Now().Truncate(time.Second)
			tok, err := cfg.Token(ctx)
			if err != nil {
				t.Fatalf("Token: %v", err)
			}
			if tok.TokenType != "Bearer" {
				t.Errorf("token_type %q, want Bearer", tok.TokenType)
			}
			// apim:api_create is not allowed to alice's roles: dropped, not an error.
			if got := tok.Extra("scope"); got != "apim:subscribe default" {
				t.Errorf("scope %q, want %q", got, "apim:subscribe default")
			}
			if d := time.Until(tok.Expiry); d < 59*time.Minute || d > time.Hour+time.Second {
				t.Errorf("expires in %v, want 1h", d)
			}

			hdr, claims := e.verifyWithJWKS(t, tok.AccessToken)
			if hdr.KeyID != e.s.keys.Load().active.kid || hdr.Algorithm != "RS256" {
				t.Errorf("header kid %q alg %q", hdr.KeyID, hdr.Algorithm)
			}
			want := map[string]any{
				"iss": e.ts.URL + "/oauth2/token", "sub": id, "azp": id, "client_id": id,
				"scope": "apim:subscribe default", "aud": []any{id},
			}
			for k, v := range want {
				if got, _ := json.Marshal(claims[k]); string(got) != mustJSON(t, v) {
					t.Errorf("claim %s = %s, want %s", k, got, mustJSON(t, v))
				}
			}
			iat, nbf, exp := claims["iat"].(float64), claims["nbf"].(float64), claims["exp"].(float64)
			if int64(iat) < before.Unix() || nbf != iat || exp-iat < 3599 || exp-iat > 3601 {
				t.Errorf("iat %v nbf %v exp %v", iat, nbf, exp)
			}
			if jti, _ := claims["jti"].(string); jti == "" {
				t.Error("no jti")
			}

			p, err := e.s.VerifyToken(ctx, tok.AccessToken)
			if err != nil {
				t.Fatalf("VerifyToken: %v", err)
			}
			if p.Subject != id || p.ClientID != id || !slices.Equal(p.Scopes, []string{"apim:subscribe", "default"}) ||
				p.ExpiresAt.Unix() != int64(exp) {
				t.Errorf("principal %+v", p)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPasswordGrant(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.user(t, "admin", "admin-password-1", "admin")
	e.user(t, "bob", "bob-password-1", "Internal/creator")
	id, secret := e.client(t, "admin", "rest_api_publisher", GrantPassword, GrantRefreshToken)

	tests := map[string]struct {
		scopes    []string
		wantScope string
	}{
		"allowed and not allowed": {[]string{"apim:api_create", "apim:admin", "apim:api_view"}, "apim:api_create apim:api_view"},
		"none allowed":            {[]string{"apim:admin"}, "default"},
		"none requested":          {nil, "default"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tok, err := e.pwConfig(id, secret, tc.scopes...).PasswordCredentialsToken(ctx, "bob", "bob-password-1")
			if err != nil {
				t.Fatalf("PasswordCredentialsToken: %v", err)
			}
			if got := tok.Extra("scope"); got != tc.wantScope {
				t.Errorf("scope %q, want %q", got, tc.wantScope)
			}
			if !strings.HasPrefix(tok.RefreshToken, refreshTokenPrefix) {
				t.Errorf("refresh token %q: want one, the client has the refresh grant", tok.RefreshToken)
			}
			_, claims := e.verifyWithJWKS(t, tok.AccessToken)
			if claims["sub"] != "bob" || claims["client_id"] != id || claims["scope"] != tc.wantScope {
				t.Errorf("claims %v", claims)
			}
			p, err := e.s.VerifyToken(ctx, tok.AccessToken)
			if err != nil || p.Subject != "bob" || p.ClientID != id {
				t.Errorf("VerifyToken = %+v, %v", p, err)
			}
		})
	}
}

func TestTokenErrors(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.user(t, "alice", "alice-password-1", "Internal/subscriber")
	ccID, ccSecret := e.client(t, "alice", "cc-only", GrantClientCredentials)
	pwID, pwSecret := e.client(t, "alice", "pw", GrantPassword)

	tests := map[string]struct {
		do         func() error
		wantStatus int
		wantCode   string
	}{
		"wrong secret": {
			func() error { _, err := e.ccConfig(ccID, "wrong-secret").Token(ctx); return err },
			http.StatusUnauthorized, "invalid_client",
		},
		"unknown client": {
			func() error { _, err := e.ccConfig("no-such-client", ccSecret).Token(ctx); return err },
			http.StatusUnauthorized, "invalid_client",
		},
		"wrong password": {
			func() error {
				_, err := e.pwConfig(pwID, pwSecret).PasswordCredentialsToken(ctx, "alice", "wrong-password")
				return err
			},
			http.StatusBadRequest, "invalid_grant",
		},
		"unknown user": {
			func() error {
				_, err := e.pwConfig(pwID, pwSecret).PasswordCredentialsToken(ctx, "nobody", "alice-password-1")
				return err
			},
			http.StatusBadRequest, "invalid_grant",
		},
		"grant not allowed to the client": {
			func() error {
				_, err := e.pwConfig(ccID, ccSecret).PasswordCredentialsToken(ctx, "alice", "alice-password-1")
				return err
			},
			http.StatusBadRequest, "unauthorized_client",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			re := retrieveError(t, tc.do())
			if re.Response.StatusCode != tc.wantStatus || re.ErrorCode != tc.wantCode {
				t.Errorf("status %d error %q (%s), want %d %q", re.Response.StatusCode, re.ErrorCode, re.ErrorDescription, tc.wantStatus, tc.wantCode)
			}
		})
	}
}

func TestDiscoveryAndJWKS(t *testing.T) {
	e := newEnv(t)
	var doc map[string]any
	getJSON(t, e.ts.URL+PathDiscovery, &doc)
	want := map[string]any{
		"issuer":                e.ts.URL + "/oauth2/token",
		"token_endpoint":        e.ts.URL + "/oauth2/token",
		"jwks_uri":              e.ts.URL + "/oauth2/jwks",
		"registration_endpoint": e.ts.URL + "/client-registration/v0.17/register",
	}
	for k, v := range want {
		if doc[k] != v {
			t.Errorf("%s = %v, want %v", k, doc[k], v)
		}
	}
	if got := mustJSON(t, doc["grant_types_supported"]); got != `["client_credentials","password","refresh_token","authorization_code","urn:ietf:params:oauth:grant-type:jwt-bearer"]` {
		t.Errorf("grant_types_supported %s", got)
	}
	if got := mustJSON(t, doc["token_endpoint_auth_methods_supported"]); got != `["client_secret_basic","client_secret_post"]` {
		t.Errorf("token_endpoint_auth_methods_supported %s", got)
	}

	var jwks struct {
		Keys []map[string]any `json:"keys"`
	}
	getJSON(t, e.ts.URL+PathJWKS, &jwks)
	if len(jwks.Keys) != 1 {
		t.Fatalf("%d keys", len(jwks.Keys))
	}
	k := jwks.Keys[0]
	if k["kty"] != "RSA" || k["use"] != "sig" || k["alg"] != "RS256" || k["kid"] != e.s.keys.Load().active.kid || k["n"] == nil || k["e"] == nil {
		t.Errorf("jwk %v", k)
	}
	if _, private := k["d"]; private {
		t.Error("the JWKS publishes a private key")
	}
	if got := e.s.PublicKeys(); len(got) != 1 || !got[0].IsPublic() || got[0].KeyID != e.s.keys.Load().active.kid {
		t.Errorf("PublicKeys() = %v", got)
	}
	if e.s.Issuer() != e.ts.URL+"/oauth2/token" {
		t.Errorf("Issuer() = %q", e.s.Issuer())
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

func TestSigningKeyCreatedOnceAcrossReplicas(t *testing.T) {
	apim, shared := newDatabases(t)
	ctx := context.Background()
	const replicas = 4
	servers := make([]*Server, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Go(func() {
			servers[i], errs[i] = New(ctx, Config{BaseURL: "https://localhost:9443", APIM: apim, Shared: shared, Logger: zerolog.Nop()})
		})
	}
	wg.Wait()
	for i := range replicas {
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		if servers[i].keys.Load().active.kid != servers[0].keys.Load().active.kid {
			t.Errorf("replica %d signs with %s, replica 0 with %s", i, servers[i].keys.Load().active.kid, servers[0].keys.Load().active.kid)
		}
	}
	var n int
	if err := apim.QueryRow(ctx, `SELECT count(*) FROM signing_keys`).Scan(&n); err != nil || n != 1 {
		t.Errorf("%d signing keys (%v), want 1", n, err)
	}

	// A restart reuses the stored key, and verifies the other replicas' tokens.
	e := newEnvOn(t, apim, shared)
	if e.s.keys.Load().active.kid != servers[0].keys.Load().active.kid {
		t.Errorf("restart signs with a new key %s", e.s.keys.Load().active.kid)
	}
	e.user(t, "alice", "alice-password-1")
	id, secret := e.client(t, "alice", "app", GrantClientCredentials)
	tok, err := e.ccConfig(id, secret).Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := servers[1].keys.Load().verifyToken(tok.AccessToken, e.s.Issuer(), time.Now()); err != nil {
		t.Errorf("another replica rejects the token: %v", err)
	}
}

// signTest signs claims as our tokens are signed, for crafting bad tokens.
func signTest(t testing.TB, key *rsa.PrivateKey, kid string, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithHeader(jose.HeaderKey("kid"), kid).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := josejwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func validClaims(iss string) map[string]any {
	now := time.Now().Unix()
	return map[string]any{
		"iss": iss, "sub": "bob", "client_id": "c1", "azp": "c1", "aud": []string{"c1"},
		"scope": "apim:api_view default", "iat": now, "nbf": now, "exp": now + 3600, "jti": "j1",
	}
}

func TestVerifyTokenRejects(t *testing.T) {
	const iss = "https://localhost:9443/oauth2/token"
	key := testKey(t)
	other := testKey(t)
	ks := newKeySet(signingKey{kid: "k1", priv: key})
	verify := func(raw string) (*verified, error) { return ks.verifyToken(raw, iss, time.Now()) }

	good := signTest(t, key, "k1", validClaims(iss))
	p, err := verify(good)
	if err != nil || p.Subject != "bob" || p.ClientID != "c1" || !p.HasScope("apim:api_view") {
		t.Fatalf("good token: %+v, %v", p, err)
	}

	with := func(k, v string) map[string]any {
		c := validClaims(iss)
		if v == "" {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	past := func(k string) map[string]any {
		c := validClaims(iss)
		c[k] = time.Now().Add(-time.Hour).Unix()
		return c
	}
	future := func(k string) map[string]any {
		c := validClaims(iss)
		c[k] = time.Now().Add(time.Hour).Unix()
		return c
	}
	parts := strings.Split(good, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	forged := strings.Replace(string(payload), "apim:api_view default", "apim:admin default", 1)
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sig[0] ^= 1

	tests := map[string]struct {
		raw  string
		want error
	}{
		"empty":              {"", ErrTokenMalformed},
		"garbage":            {"not.a.jwt", ErrTokenMalformed},
		"payload tampered":   {parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(forged)) + "." + parts[2], ErrTokenSignature},
		"signature tampered": {parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig), ErrTokenSignature},
		"alg none":           {base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"k1"}`)) + "." + parts[1] + ".", ErrTokenMalformed},
		"unknown kid":        {signTest(t, key, "k2", validClaims(iss)), ErrTokenSignature},
		"other key":          {signTest(t, other, "k1", validClaims(iss)), ErrTokenSignature},
		"other issuer":       {signTest(t, key, "k1", with("iss", "https://evil.example/oauth2/token")), ErrTokenClaims},
		"no issuer":          {signTest(t, key, "k1", with("iss", "")), ErrTokenClaims},
		"expired":            {signTest(t, key, "k1", past("exp")), ErrTokenClaims},
		"no exp":             {signTest(t, key, "k1", with("exp", "")), ErrTokenClaims},
		"not yet valid":      {signTest(t, key, "k1", future("nbf")), ErrTokenClaims},
		"no client_id":       {signTest(t, key, "k1", with("client_id", "")), ErrTokenClaims},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p, err := verify(tc.raw)
			if !errors.Is(err, tc.want) {
				t.Errorf("VerifyToken = %+v, %v; want %v", p, err, tc.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := map[string]struct {
		cfg  Config
		want []string
	}{
		"empty":        {Config{}, []string{"BaseURL is required", "Issuer is required", "APIM is required", "Shared is required"}},
		"relative URL": {Config{BaseURL: "localhost:9443"}, []string{"BaseURL \"localhost:9443\" is invalid"}},
		"negative TTL": {Config{BaseURL: "https://h", AccessTokenTTL: -time.Second}, []string{"AccessTokenTTL is invalid"}},
		"negative password hash limits": {
			Config{BaseURL: "https://h", MaxPasswordHashes: -1, PasswordHashWait: -time.Second},
			[]string{"MaxPasswordHashes is invalid", "PasswordHashWait is invalid"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tc.cfg.setDefaults()
			err := tc.cfg.Validate()
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v, want it to say %q", err, w)
				}
			}
		})
	}
	if _, err := New(context.Background(), Config{}); !errors.Is(err, ErrConfigRequired) {
		t.Errorf("New(empty config) = %v", err)
	}
}

func TestEnsureUserAndAuthenticate(t *testing.T) {
	e := newEnv(t)
	shared := e.shared
	ctx := context.Background()
	created, err := EnsureUser(ctx, shared, "carol", "carol-password-1", []string{"Internal/subscriber", "team-x"})
	if err != nil || !created {
		t.Fatalf("EnsureUser = %v, %v; want created", created, err)
	}
	created, err = EnsureUser(ctx, shared, "carol", "another-password", []string{"Internal/creator"})
	if err != nil || created {
		t.Fatalf("second EnsureUser = %v, %v; want not created", created, err)
	}
	roles, err := e.s.Authenticate(ctx, "carol", "carol-password-1")
	if err != nil || !slices.Equal(roles, []string{"Internal/creator", "Internal/subscriber", "team-x"}) {
		t.Errorf("Authenticate = %v, %v", roles, err)
	}
	// The devportal's visibility asks for them without a password.
	if got, err := e.s.UserRoles(ctx, "carol"); err != nil || !slices.Equal(got, roles) {
		t.Errorf("UserRoles = %v, %v; want %v", got, err, roles)
	}
	if got, err := e.s.UserRoles(ctx, "nobody"); err != nil || len(got) != 0 {
		t.Errorf("UserRoles of an unknown user = %v, %v; want none", got, err)
	}
	var hash string
	if err := shared.QueryRow(ctx, `SELECT password_hash FROM users WHERE name = 'carol'`).Scan(&hash); err != nil || !strings.HasPrefix(hash, "$argon2id$") {
		t.Errorf("stored hash %q, %v", hash, err)
	}
	for name, pw := range map[string]string{"carol": "another-password", "nobody": "carol-password-1", "": ""} {
		if _, err := e.s.Authenticate(ctx, name, pw); !errors.Is(err, ErrBadCredentials) {
			t.Errorf("Authenticate(%q) = %v, want ErrBadCredentials", name, err)
		}
	}
	if _, err := EnsureUser(ctx, shared, "dave", "", nil); err == nil {
		t.Error("EnsureUser with an empty password succeeded")
	}
}

func TestRegisterClientValidates(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tests := map[string]struct {
		owner, name string
		grants      []string
		want        error
	}{
		"no name":       {"alice", "", []string{GrantPassword}, ErrClientNameRequired},
		"no owner":      {"", "app", []string{GrantPassword}, ErrClientOwnerRequired},
		"no grants":     {"alice", "app", nil, ErrGrantTypes},
		"unknown grant": {"alice", "app", []string{"magic"}, ErrGrantTypes},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := pgx.BeginFunc(ctx, e.apim, func(tx pgx.Tx) error {
				_, _, err := e.s.RegisterClient(ctx, tx, tc.owner, tc.name, tc.grants, "")
				return err
			})
			if !errors.Is(err, tc.want) {
				t.Errorf("RegisterClient = %v, want %v", err, tc.want)
			}
		})
	}
	// A rolled-back transaction leaves no client behind.
	tx, err := e.apim.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := e.s.RegisterClient(ctx, tx, "alice", "app", []string{GrantClientCredentials}, "")
	if err != nil {
		t.Fatal(err)
	}
	_ = tx.Rollback(ctx)
	if _, err := (&store{apim: e.apim}).GetClient(ctx, id); err == nil {
		t.Error("client survives its rolled-back transaction")
	}
}

package authz

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/gwstate"
	"github.com/apim-dev/apim/internal/model"
)

const (
	idpIssuer   = "https://idp.example"
	otherIssuer = "https://other-idp.example"
	offIssuer   = "https://off-idp.example"
)

// extProvider is an external provider's signing keys behind a JWKS URL.
type extProvider struct {
	rsa     *rsa.PrivateKey
	ec      *ecdsa.PrivateKey
	srv     *httptest.Server
	fetches atomic.Int32
}

func newExtProvider(t testing.TB) *extProvider {
	t.Helper()
	_, other := keys(t) // the resident key manager signs with the other one
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := &extProvider{rsa: other, ec: ec}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.fetches.Add(1)
		body, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
			{Key: &p.rsa.PublicKey, KeyID: "ext-rsa", Algorithm: "RS256", Use: "sig"},
			{Key: &p.ec.PublicKey, KeyID: "ext-ec", Algorithm: "ES256", Use: "sig"},
		}})
		if err != nil {
			t.Error(err)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// extState is testState with three external key managers and an
// application whose production key is a client of the first: "ck-prod",
// the very id of a resident client of app-1.
func extState(jwks string) *model.GatewayState {
	st := testState()
	st.KeyManagers = []model.KeyManager{
		{ID: "km-idp", Name: "Hydra", Type: "Hydra", Enabled: true, Issuer: idpIssuer, JWKSURI: jwks, ScopesClaim: "scp", Generation: 1},
		{ID: "km-other", Name: "Other", Type: "custom", Enabled: true, Issuer: otherIssuer, JWKSURI: jwks, ConsumerKeyClaim: "cid", Generation: 1},
		{ID: "km-off", Name: "Off", Type: "custom", Enabled: false, Issuer: offIssuer, JWKSURI: jwks, Generation: 1},
	}
	st.Applications = append(st.Applications, model.Application{ID: "app-ext", Name: "ExtApp", Owner: "bob", ThrottlingPolicy: "Unlimited", Status: "APPROVED", Generation: 1})
	st.KeyMappings = append(st.KeyMappings,
		model.KeyMapping{ID: "map-idp", ApplicationID: "app-ext", KeyType: model.KeyTypeProduction, ConsumerKey: "ck-prod", KeyManager: "Hydra", KeyManagerID: "km-idp", Generation: 1},
		model.KeyMapping{ID: "map-idp-s", ApplicationID: "app-ext", KeyType: model.KeyTypeSandbox, ConsumerKey: "hydra-sbx", KeyManager: "Hydra", KeyManagerID: "km-idp", Generation: 1},
		model.KeyMapping{ID: "map-off", ApplicationID: "app-ext", KeyType: model.KeyTypeProduction, ConsumerKey: "off-client", KeyManager: "Off", KeyManagerID: "km-off", Generation: 1},
	)
	st.Subscriptions = append(st.Subscriptions,
		model.Subscription{ID: "sub-ext", ApplicationID: "app-ext", APIID: "api-ext", ThrottlingPolicy: "Unlimited", Status: model.SubUnblocked, Generation: 1})
	return st
}

func newExtServer(t testing.TB, p *extProvider) *Server {
	t.Helper()
	s := newTestServer(t, func() time.Time { return testNow })
	s.state.Replace(extState(p.srv.URL))
	ext, err := NewExternalKeys(ExternalKeysConfig{State: s.state, Client: p.srv.Client(), Logger: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	s.ext = ext
	return s
}

// hydraClaims are an Ory Hydra access token's claims: client_id (no azp)
// and the scopes as the array scp.
func hydraClaims(iss, client string, over map[string]any) map[string]any {
	c := tokenClaims(client, map[string]any{"iss": iss, "azp": nil, "aud": []string{}, "scope": nil, "client_id": client, "scp": []string{"read:pets"}, "sub": client})
	for k, v := range over {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func TestCheckExternalKeyManager(t *testing.T) {
	p := newExtProvider(t)
	key, _ := keys(t)
	s := newExtServer(t, p)
	rs := func(c map[string]any) string { return "Bearer " + sign(t, jose.RS256, p.rsa, "ext-rsa", c) }
	ext := func(api, client string, extra ...string) map[string]string {
		m := map[string]string{
			"api_id": api, "application_id": "app-ext", "application_name": "ExtApp",
			"key_type": "PRODUCTION", "user": client, "client_id": client,
		}
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i]] = extra[i+1]
		}
		return m
	}
	invalid := denied{401, "900901", "Invalid Credentials", "Invalid Credentials. Make sure you have provided the correct security credentials", true}
	noSub := denied{403, "900908", "Resource forbidden", "", false}

	allowed := map[string]struct {
		api, token string
		ext        map[string]string
		want       *authv3.CheckResponse
	}{
		"hydra token of a mapped client": {
			api: "api-ext", token: rs(hydraClaims(idpIssuer, "ck-prod", nil)),
			want: tokenOK("PRODUCTION", ext("api-ext", "ck-prod")),
		},
		"ES256": {
			api: "api-ext", token: "Bearer " + sign(t, jose.ES256, p.ec, "ext-ec", hydraClaims(idpIssuer, "ck-prod", map[string]any{"jti": "es"})),
			want: tokenOK("PRODUCTION", ext("api-ext", "ck-prod")),
		},
		"scopes from the scp array": {
			api: "api-ext", token: rs(hydraClaims(idpIssuer, "ck-prod", map[string]any{"jti": "scp"})), ext: map[string]string{ExtScopes: "read:pets"},
			want: tokenOK("PRODUCTION", ext("api-ext", "ck-prod")),
		},
		"sandbox client": {
			api: "api-ext", token: rs(hydraClaims(idpIssuer, "hydra-sbx", nil)),
			want: tokenOK("SANDBOX", ext("api-ext", "hydra-sbx", "key_type", "SANDBOX")),
		},
		// The resident token of client ck-prod is app-1's, not app-ext's.
		"resident token of the same client id": {
			api: "api-gold", token: "Bearer " + sign(t, jose.RS256, key, testKid, tokenClaims("ck-prod", nil)),
			want: tokenOK("PRODUCTION", map[string]string{
				"api_id": "api-gold", "application_id": "app-1", "application_name": "PizzaApp", "key_type": "PRODUCTION",
				"user": "alice@carbon.super", "client_id": "ck-prod", "subscription_id": "sub-gold", "subscription_tier": "Gold",
			}),
		},
	}
	for name, tc := range allowed {
		t.Run(name, func(t *testing.T) {
			for range 2 { // the second time from the token cache
				resp, err := s.Check(context.Background(), request(tc.api, tc.token, tc.ext))
				if err != nil {
					t.Fatal(err)
				}
				if resp.GetOkResponse() == nil {
					t.Fatalf("denied: %s", resp.GetDeniedResponse().GetBody())
				}
				if d := cmp.Diff(tc.want, resp, protocmp.Transform()); d != "" {
					t.Errorf("(-want +got):\n%s", d)
				}
			}
		})
	}

	refused := map[string]struct {
		api, token string
		ext        map[string]string
		want       denied
	}{
		// The mapped app is not subscribed to api-gold; the resident
		// mapping of ck-prod (app-1, which is) must not be used.
		"hydra token, resident client's API": {api: "api-gold", token: rs(hydraClaims(idpIssuer, "ck-prod", nil)), want: noSub},
		"resident token, external app's API": {api: "api-ext", token: "Bearer " + sign(t, jose.RS256, key, testKid, tokenClaims("ck-prod", nil)), want: noSub},
		// ck-prod is mapped under Hydra, not under Other.
		"other key manager, same client id": {api: "api-ext", token: rs(hydraClaims(otherIssuer, "x", map[string]any{"cid": "ck-prod"})), want: invalid},
		"client id in the wrong claim":      {api: "api-ext", token: rs(hydraClaims(otherIssuer, "ck-prod", nil)), want: invalid},
		"unknown issuer":                    {api: "api-ext", token: rs(hydraClaims("https://evil.example", "ck-prod", nil)), want: invalid},
		"disabled key manager":              {api: "api-ext", token: rs(hydraClaims(offIssuer, "off-client", nil)), want: invalid},
		"unmapped client":                   {api: "api-ext", token: rs(hydraClaims(idpIssuer, "stranger", nil)), want: invalid},
		"no client id":                      {api: "api-ext", token: rs(hydraClaims(idpIssuer, "ck-prod", map[string]any{"client_id": nil})), want: invalid},
		"signed by the resident key":        {api: "api-ext", token: "Bearer " + sign(t, jose.RS256, key, "ext-rsa", hydraClaims(idpIssuer, "ck-prod", nil)), want: invalid},
		"unknown kid":                       {api: "api-ext", token: "Bearer " + sign(t, jose.RS256, p.rsa, "nope", hydraClaims(idpIssuer, "ck-prod", nil)), want: invalid},
		"HS256 with a public key's bytes":   {api: "api-ext", token: "Bearer " + sign(t, jose.HS256, []byte("0123456789abcdef0123456789abcdef"), "ext-rsa", hydraClaims(idpIssuer, "ck-prod", nil)), want: invalid},
		"ES256 header, RSA key":             {api: "api-ext", token: "Bearer " + sign(t, jose.ES256, p.ec, "ext-rsa", hydraClaims(idpIssuer, "ck-prod", nil)), want: invalid},
		"expired":                           {api: "api-ext", token: rs(hydraClaims(idpIssuer, "ck-prod", map[string]any{"exp": testNow.Add(-time.Minute).Unix()})), want: invalid},
		"no exp":                            {api: "api-ext", token: rs(hydraClaims(idpIssuer, "ck-prod", map[string]any{"exp": nil})), want: invalid},
		"an ID token (at_hash)":             {api: "api-ext", token: rs(hydraClaims(idpIssuer, "ck-prod", map[string]any{"at_hash": "x"})), want: invalid},
		"a Keycloak ID token (typ ID)":      {api: "api-ext", token: rs(hydraClaims(idpIssuer, "ck-prod", map[string]any{"typ": "ID"})), want: invalid},
		"scope missing":                     {api: "api-ext", token: rs(hydraClaims(idpIssuer, "ck-prod", nil)), ext: map[string]string{ExtScopes: "write:pets"}, want: denied{403, "900910", "The access token does not allow you to access the requested resource", "", false}},
		// scope (a string) is not the claim Hydra's key manager names.
		"scopes in the unnamed claim": {api: "api-ext", token: rs(hydraClaims(idpIssuer, "ck-prod", map[string]any{"scp": nil, "scope": "read:pets"})), ext: map[string]string{ExtScopes: "read:pets"}, want: denied{403, "900910", "The access token does not allow you to access the requested resource", "", false}},
	}
	for name, tc := range refused {
		t.Run(name, func(t *testing.T) {
			for range 2 {
				resp, err := s.Check(context.Background(), request(tc.api, tc.token, tc.ext))
				if err != nil {
					t.Fatal(err)
				}
				assertDenied(t, resp, tc.want)
			}
		})
	}
	t.Run("external token as an API key", func(t *testing.T) {
		req := request("api-ext", "", map[string]string{ExtSecuritySchemes: model.SchemeAPIKey})
		req.Attributes.Request.Http.Headers[HeaderAPIKey] = sign(t, jose.RS256, p.rsa, "ext-rsa", hydraClaims(idpIssuer, "ck-prod", map[string]any{"jti": "as-key"}))
		resp, err := s.Check(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		assertDenied(t, resp, invalid)
	})
}

// A key manager disabled or deleted by an event refuses its tokens at once,
// cached or not; enabled again, they pass again.
func TestCheckExternalKeyManagerEvents(t *testing.T) {
	p := newExtProvider(t)
	s := newExtServer(t, p)
	tok := "Bearer " + sign(t, jose.RS256, p.rsa, "ext-rsa", hydraClaims(idpIssuer, "ck-prod", nil))
	check := func() *authv3.CheckResponse {
		t.Helper()
		resp, err := s.Check(context.Background(), request("api-ext", tok, nil))
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	gen := int64(10)
	apply := func(op events.Op, km model.KeyManager) {
		t.Helper()
		gen++
		data, _ := json.Marshal(km)
		if err := s.state.Apply(events.Event{Kind: events.KindKeyManager, Op: op, ID: km.ID, Generation: gen, Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	invalid := denied{401, "900901", "Invalid Credentials", "", true}
	if resp := check(); resp.GetOkResponse() == nil {
		t.Fatalf("denied: %s", resp.GetDeniedResponse().GetBody())
	}
	hydra := model.KeyManager{ID: "km-idp", Name: "Hydra", Type: "Hydra", Issuer: idpIssuer, JWKSURI: p.srv.URL, ScopesClaim: "scp"}
	apply(events.OpUpsert, hydra) // disabled
	assertDenied(t, check(), invalid)
	hydra.Enabled = true
	apply(events.OpUpsert, hydra)
	if resp := check(); resp.GetOkResponse() == nil {
		t.Fatalf("denied after re-enabling: %s", resp.GetDeniedResponse().GetBody())
	}
	apply(events.OpDelete, model.KeyManager{ID: "km-idp"})
	assertDenied(t, check(), invalid)
	// A fresh token of the deleted key manager: its issuer is unknown.
	fresh := "Bearer " + sign(t, jose.RS256, p.rsa, "ext-rsa", hydraClaims(idpIssuer, "ck-prod", map[string]any{"jti": "fresh"}))
	resp, err := s.Check(context.Background(), request("api-ext", fresh, nil))
	if err != nil {
		t.Fatal(err)
	}
	assertDenied(t, resp, invalid)
}

// Start fetches the key set of each enabled key manager once, before any
// token needs it, and a new key manager's as its event arrives.
func TestExternalKeysStart(t *testing.T) {
	p := newExtProvider(t)
	st := gwstate.NewStore()
	state := extState(p.srv.URL)
	state.KeyManagers = state.KeyManagers[:1] // Hydra only
	st.Replace(state)
	ext, err := NewExternalKeys(ExternalKeysConfig{State: st, Client: p.srv.Client(), Sync: 5 * time.Millisecond, Logger: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- ext.Start(ctx) }()
	waitFetches := func(n int32) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); p.fetches.Load() < n && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		if got := p.fetches.Load(); got != n {
			t.Fatalf("fetches = %d, want %d", got, n)
		}
	}
	waitFetches(1)
	// Another key manager, with its own JWKS URL, arrives by event.
	data, _ := json.Marshal(model.KeyManager{ID: "km-2", Name: "Two", Type: "custom", Enabled: true, Issuer: otherIssuer, JWKSURI: p.srv.URL + "/two"})
	if err := st.Apply(events.Event{Kind: events.KindKeyManager, Op: events.OpUpsert, ID: "km-2", Generation: 50, Data: data}); err != nil {
		t.Fatal(err)
	}
	waitFetches(2)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Start = %v", err)
	}
	// The keys were there before any token asked.
	km, _ := st.Load().KeyManagerByIssuer(idpIssuer)
	j, err := ext.keys(km)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := (*j.keys.Load())["ext-rsa"]; !ok {
		t.Error("Hydra's key set was not fetched")
	}
	if n := len(*ext.sets.Load()); n != 2 {
		t.Errorf("%d key sets, want 2", n)
	}
}

func TestVerifySignatureAlgorithms(t *testing.T) {
	p := newExtProvider(t)
	ec384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	weak, err := rsa.GenerateKey(rand.Reader, 1024) //nolint:gosec // G403: the weak key under test
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		alg  jose.SignatureAlgorithm
		sign any
		pub  any
		ok   bool
	}{
		{jose.RS256, p.rsa, &p.rsa.PublicKey, true},
		{jose.RS384, p.rsa, &p.rsa.PublicKey, true},
		{jose.RS512, p.rsa, &p.rsa.PublicKey, true},
		{jose.PS256, p.rsa, &p.rsa.PublicKey, true},
		{jose.PS512, p.rsa, &p.rsa.PublicKey, true},
		{jose.ES256, p.ec, &p.ec.PublicKey, true},
		{jose.ES384, ec384, &ec384.PublicKey, true},
		{jose.ES384, ec384, &p.ec.PublicKey, false}, // curve of another alg
		{jose.RS256, weak, &weak.PublicKey, false},  // under 2048 bits
		{jose.ES256, p.ec, &p.rsa.PublicKey, false},
		{jose.HS256, []byte("0123456789abcdef0123456789abcdef"), &p.rsa.PublicKey, false},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s %T", tc.alg, tc.pub), func(t *testing.T) {
			tok, err := parseJWT(sign(t, tc.alg, tc.sign, "k", hydraClaims(idpIssuer, "c", nil)))
			if err != nil {
				t.Fatal(err)
			}
			err = verifySignature(tok.alg, tc.pub, tok.signingInput, tok.sig)
			if (err == nil) != tc.ok {
				t.Errorf("verifySignature = %v, want ok %v", err, tc.ok)
			}
			if tc.ok { // and a flipped signature fails
				tok.sig[len(tok.sig)/2] ^= 1
				if verifySignature(tok.alg, tc.pub, tok.signingInput, tok.sig) == nil {
					t.Error("a tampered signature verified")
				}
			}
		})
	}
}

func TestScopeClaim(t *testing.T) {
	for raw, want := range map[string]string{
		``:                    "",
		`"a  b c"`:            "a b c",
		`["a","b"]`:           "a b",
		`["a"," ","b c","d"]`: "a d",
		`42`:                  "",
		`{"a":1}`:             "",
		`["a",1]`:             "",
	} {
		if got := scopeClaim(json.RawMessage(raw)); got != want {
			t.Errorf("scopeClaim(%s) = %q, want %q", raw, got, want)
		}
	}
}

// The warm path of an external token allocates nothing, as a resident
// one's.
func TestCheckExternalWarmNoAlloc(t *testing.T) {
	p := newExtProvider(t)
	s := newExtServer(t, p)
	req := request("api-ext", "Bearer "+sign(t, jose.RS256, p.rsa, "ext-rsa", hydraClaims(idpIssuer, "ck-prod", nil)), nil)
	if resp, _ := s.Check(context.Background(), req); resp.GetOkResponse() == nil {
		t.Fatalf("denied: %s", resp.GetDeniedResponse().GetBody())
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = s.Check(context.Background(), req) }); n != 0 {
		t.Errorf("%v allocations per warm check, want 0", n)
	}
}

package authz

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"net/http/httptest"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-cmp/cmp"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/model"
)

// withBackendJWTSigner gives s a backend JWT signer with otherKey, and
// returns it.
func withBackendJWTSigner(t testing.TB, s *Server) *BackendJWTSigner {
	t.Helper()
	_, other := keys(t)
	signer, err := NewBackendJWTSigner(BackendJWTConfig{Key: other})
	if err != nil {
		t.Fatal(err)
	}
	s.jwt = signer
	return signer
}

// assertion returns the X-JWT-Assertion an allowed response sends the
// backend, failing the test unless there is at most one and it overwrites
// the client's.
func assertion(t *testing.T, resp *authv3.CheckResponse) (string, bool) {
	t.Helper()
	ok := resp.GetOkResponse()
	if ok == nil {
		t.Fatalf("denied: %v", resp)
	}
	var got []*corev3.HeaderValueOption
	for _, h := range ok.GetHeaders() {
		if h.GetHeader().GetKey() == HeaderJWTAssertion {
			got = append(got, h)
		}
	}
	switch len(got) {
	case 0:
		return "", false
	case 1:
		if got[0].GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			t.Errorf("x-jwt-assertion append action %v: a client's header would reach the backend", got[0].GetAppendAction())
		}
		return got[0].GetHeader().GetValue(), true
	}
	t.Fatalf("%d x-jwt-assertion headers", len(got))
	return "", false
}

// verifyBackendJWT checks the JWT's signature against the JWKS the
// signer's handler serves, as a backend would, and returns its header and
// claims.
func verifyBackendJWT(t *testing.T, signer *BackendJWTSigner, tok string) (jose.Header, map[string]any) {
	t.Helper()
	srv := httptest.NewServer(signer.JWKSHandler())
	defer srv.Close()
	res, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("JWKS content type %q", ct)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatalf("JWKS %s: %v", body, err)
	}
	parsed, err := josejwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatalf("parse backend JWT: %v", err)
	}
	h := parsed.Headers[0]
	keys := set.Key(h.KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %q: %d keys in the JWKS %s", h.KeyID, len(keys), body)
	}
	claims := map[string]any{}
	if err := parsed.Claims(keys[0].Key, &claims); err != nil {
		t.Fatalf("backend JWT does not verify with the JWKS: %v", err)
	}
	return h, claims
}

func TestBackendJWT(t *testing.T) {
	key, _ := keys(t)
	s := newTestServer(t, func() time.Time { return testNow })
	signer := withBackendJWTSigner(t, s)
	ctx := context.Background()
	on := map[string]string{ExtBackendJWT: "true"}
	exp := testNow.Add(time.Hour).Unix()
	claimsOf := func(over map[string]any) map[string]any {
		c := map[string]any{
			"iss": DefaultBackendJWTIssuer, "iat": float64(testNow.Unix()), "exp": float64(exp),
			ClaimSubscriber: "alice", ClaimApplicationID: "app-1", ClaimApplicationName: "PizzaApp",
			ClaimApplicationTier: "Unlimited", ClaimAPIContext: "/pets/1.0.0", ClaimVersion: "1.0.0",
			ClaimTier: "Gold", ClaimKeyType: model.KeyTypeProduction,
			ClaimUserType: UserTypeApplicationUser, ClaimEndUser: "alice@carbon.super",
		}
		for k, v := range over {
			c[k] = v
		}
		return c
	}
	apiKeyReq := keyRequest("api-gold", "api_key", "127.0.0.1", map[string]string{
		"apikey": sign(t, jose.RS256, key, testKid, apiKeyClaims("app-1", model.KeyTypeProduction, nil)),
	})
	apiKeyReq.Attributes.ContextExtensions = request("api-gold", "", map[string]string{ExtSecuritySchemes: "api_key", ExtBackendJWT: "true"}).Attributes.ContextExtensions
	tests := map[string]struct {
		req  *authv3.CheckRequest
		want map[string]any // nil: no header
	}{
		"flag off": {
			req: request("api-gold", "Bearer "+sign(t, jose.RS256, key, testKid, benchClaims(0)), nil),
		},
		"flag on, a user's token": {
			req:  request("api-gold", "Bearer "+sign(t, jose.RS256, key, testKid, benchClaims(0)), on),
			want: claimsOf(nil),
		},
		"flag on, an application's own token": {
			// Client credentials: sub is the client, the end user the
			// application's owner, as WSO2 says.
			req: request("api-unl", "Bearer "+sign(t, jose.RS256, key, testKid,
				tokenClaims("ck-prod", map[string]any{"sub": "ck-prod", "aut": "APPLICATION"})), on),
			want: claimsOf(map[string]any{ClaimTier: "Unlimited", ClaimUserType: UserTypeApplication, ClaimEndUser: "alice"}),
		},
		"flag on, a sandbox key": {
			req:  request("api-gold", "Bearer "+sign(t, jose.RS256, key, testKid, tokenClaims("ck-sbx", nil)), on),
			want: claimsOf(map[string]any{ClaimKeyType: model.KeyTypeSandbox}),
		},
		"flag on, an API key": {
			req:  apiKeyReq,
			want: claimsOf(map[string]any{ClaimUserType: UserTypeApplication, ClaimEndUser: "alice"}),
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			resp, err := s.Check(ctx, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			tok, ok := assertion(t, resp)
			if tc.want == nil {
				if ok {
					t.Fatalf("x-jwt-assertion on a route without backend_jwt: %s", tok)
				}
				return
			}
			if !ok {
				t.Fatal("no x-jwt-assertion on a route with backend_jwt")
			}
			h, got := verifyBackendJWT(t, signer, tok)
			if h.KeyID != signer.KeyID() || h.Algorithm != "RS256" || h.ExtraHeaders["typ"] != "JWT" {
				t.Errorf("header kid %q alg %q typ %v, want kid %q, RS256, JWT", h.KeyID, h.Algorithm, h.ExtraHeaders["typ"], signer.KeyID())
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("claims (-want +got):\n%s", d)
			}
			// The caller's credential still goes no further.
			if rm := resp.GetOkResponse().GetHeadersToRemove(); len(rm) != 1 || (rm[0] != "authorization" && rm[0] != HeaderAPIKey) {
				t.Errorf("headers to remove %v", rm)
			}
		})
	}
}

// The JWT is built once per token and API, into the memoised response:
// later requests get the very same response; a route whose flag changes
// gets one built for it.
func TestBackendJWTMemoised(t *testing.T) {
	key, _ := keys(t)
	now := testNow
	s := newTestServer(t, func() time.Time { return now })
	withBackendJWTSigner(t, s)
	ctx := context.Background()
	tok := "Bearer " + sign(t, jose.RS256, key, testKid, benchClaims(0))
	check := func(ext map[string]string) *authv3.CheckResponse {
		t.Helper()
		resp, err := s.Check(ctx, request("api-gold", tok, ext))
		if err != nil || resp.GetOkResponse() == nil {
			t.Fatalf("Check = %v, %v", resp, err)
		}
		return resp
	}
	on := map[string]string{ExtBackendJWT: "true"}
	first := check(on)
	jwt1, _ := assertion(t, first)
	now = now.Add(time.Minute) // a new JWT would say so in iat
	if again := check(on); again != first {
		t.Error("second request built a new response; want the memoised one")
	}
	// The application is replaced in the index, its claims stay: the
	// response is built anew, the JWT reused, not signed again.
	apply := func(app model.Application) {
		t.Helper()
		data, _ := json.Marshal(app)
		if err := s.state.Apply(events.Event{Kind: events.KindApplication, Op: events.OpUpsert, ID: app.ID, Generation: app.Generation, Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	app := testState().Applications[0]
	app.Generation = 2 // a new entry, the same content
	apply(app)
	rebuilt := check(on)
	if rebuilt == first {
		t.Fatal("the application changed: the old response, want one built anew")
	}
	if jwt, _ := assertion(t, rebuilt); jwt != jwt1 {
		t.Error("same claims: the JWT was signed again, want it reused")
	}
	// Its tier changes: a JWT that says so.
	app.Generation, app.ThrottlingPolicy = 3, "10PerMin"
	apply(app)
	jwtTier, _ := assertion(t, check(on))
	if _, claims := verifyBackendJWT(t, s.jwt, jwtTier); claims[ClaimApplicationTier] != "10PerMin" {
		t.Errorf("applicationtier %v after the change, want 10PerMin", claims[ClaimApplicationTier])
	}
	plain := check(nil)
	if _, ok := assertion(t, plain); ok {
		t.Error("the flag turned off: x-jwt-assertion still sent")
	}
	back := check(on)
	jwt2, ok := assertion(t, back)
	if !ok {
		t.Fatal("the flag turned on again: no x-jwt-assertion")
	}
	if jwt2 == jwt1 {
		t.Error("the flag turned on again: the old JWT, want one built anew")
	}
	// The API's context changed (a new revision): the JWT says the new one.
	moved := check(map[string]string{ExtBackendJWT: "true", ExtAPIContext: "/animals"})
	jwt3, _ := assertion(t, moved)
	if _, claims := verifyBackendJWT(t, s.jwt, jwt3); claims[ClaimAPIContext] != "/animals/1.0.0" {
		t.Errorf("apicontext %v after the context changed, want /animals/1.0.0", claims[ClaimAPIContext])
	}
}

// The warm path with the backend JWT allocates no more than without it.
func TestBackendJWTWarmAllocs(t *testing.T) {
	key, _ := keys(t)
	s := newTestServer(t, func() time.Time { return testNow })
	withBackendJWTSigner(t, s)
	ctx := context.Background()
	tok := "Bearer " + sign(t, jose.RS256, key, testKid, benchClaims(0))
	allocs := func(api string, ext map[string]string) float64 {
		req := request(api, tok, ext)
		check := func() {
			if resp, err := s.Check(ctx, req); err != nil || resp.GetOkResponse() == nil {
				t.Fatalf("Check = %v, %v", resp, err)
			}
		}
		check()
		return testing.AllocsPerRun(100, check)
	}
	plain := allocs("api-unl", nil)
	withJWT := allocs("api-gold", map[string]string{ExtBackendJWT: "true"})
	if withJWT > plain {
		t.Errorf("warm Check with the backend JWT: %v allocs, without: %v", withJWT, plain)
	}
}

// A resource without a credential on such an API sends no JWT and lets no
// client's X-JWT-Assertion through.
func TestBackendJWTUnsecuredResource(t *testing.T) {
	s := newTestServer(t, func() time.Time { return testNow })
	withBackendJWTSigner(t, s)
	for flag, wantRemoved := range map[string]bool{"true": true, "": false} {
		req := request("api-gold", "", map[string]string{ExtAuthType: model.AuthNone, ExtBackendJWT: flag})
		req.Attributes.Request.Http.Headers[HeaderJWTAssertion] = "forged"
		resp, err := s.Check(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := assertion(t, resp); ok {
			t.Errorf("backend_jwt %q: x-jwt-assertion on a resource without a credential", flag)
		}
		rm := resp.GetOkResponse().GetHeadersToRemove()
		if removed := len(rm) == 1 && rm[0] == HeaderJWTAssertion; removed != wantRemoved {
			t.Errorf("backend_jwt %q: headers to remove %v", flag, rm)
		}
	}
}

// Without a signer a route that asks for the JWT is refused, never sent on
// without one.
func TestBackendJWTNoSigner(t *testing.T) {
	key, _ := keys(t)
	s := newTestServer(t, func() time.Time { return testNow })
	resp, err := s.Check(context.Background(), request("api-gold", "Bearer "+sign(t, jose.RS256, key, testKid, benchClaims(0)),
		map[string]string{ExtBackendJWT: "true"}))
	if err != nil {
		t.Fatal(err)
	}
	assertDenied(t, resp, denied{500, "900900", "Unclassified Authentication Failure", "", false})
}

func TestNewBackendJWTSigner(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024) //nolint:gosec // G403: the weak key under test
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]BackendJWTConfig{"no key": {}, "1024 bits": {Key: small}} {
		if _, err := NewBackendJWTSigner(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	_, other := keys(t)
	s, err := NewBackendJWTSigner(BackendJWTConfig{Key: other, Issuer: "https://gw.example"})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.sign(&backendClaims{Issuer: s.issuer, Expiry: 1})
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := josejwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	var c josejwt.Claims
	if err := parsed.Claims(&other.PublicKey, &c); err != nil || c.Issuer != "https://gw.example" {
		t.Errorf("claims %+v, %v; want iss https://gw.example", c, err)
	}
}

// BenchmarkCheckBackendJWT: the warm path of a route with the backend JWT
// (to compare with BenchmarkCheck/warm-cache), and the cold path, where the
// allowed response, JWT included, is built and signed.
func BenchmarkCheckBackendJWT(b *testing.B) {
	key, _ := keys(b)
	s := newTestServer(b, func() time.Time { return testNow })
	withBackendJWTSigner(b, s)
	withRevocations(s, 10_000) // as BenchmarkCheck
	ctx := context.Background()
	ext := map[string]string{ExtScopes: "read:pets", ExtBackendJWT: "true"}

	b.Run("warm-cache", func(b *testing.B) {
		benchAllowed(b, s, request("api-gold", "Bearer "+sign(b, jose.RS256, key, testKid, benchClaims(0)), ext))
	})

	// Every token new to the cache: verify, build and sign.
	b.Run("cold", func(b *testing.B) {
		const n = 500
		reqs := make([]*authv3.CheckRequest, n)
		for i := range reqs {
			reqs[i] = request("api-gold", "Bearer "+sign(b, jose.RS256, key, testKid, benchClaims(i)), ext)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			if i%n == 0 {
				b.StopTimer()
				s.cache = newTokenCache(0)
				b.StartTimer()
			}
			resp, err := s.Check(ctx, reqs[i%n])
			if err != nil || resp.GetOkResponse() == nil {
				b.Fatalf("Check = %v, %v", resp, err)
			}
		}
	})

	// The signature alone, RS256-2048.
	b.Run("sign", func(b *testing.B) {
		c := &backendClaims{Issuer: DefaultBackendJWTIssuer, Expiry: testNow.Unix(), Subscriber: "alice", EndUser: "alice@carbon.super"}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.jwt.sign(c); err != nil {
				b.Fatal(err)
			}
		}
	})
}

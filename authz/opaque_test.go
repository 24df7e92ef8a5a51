package authz

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-jose/go-jose/v4"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/model"
)

// opaqueTok is an opaque access token of the key manager's format.
func opaqueTok(c byte) string { return opaquePrefix + strings.Repeat(string(c), 43) }

// keyManager answers introspections from a table of tokens, counting them.
type keyManager struct {
	mu     sync.Mutex
	tokens map[string]*Introspection
	calls  atomic.Int64
	err    error
	gate   chan struct{} // when set, each answer waits for it
}

func (k *keyManager) Introspect(ctx context.Context, tok string) (*Introspection, error) {
	k.calls.Add(1)
	if k.gate != nil {
		select {
		case <-k.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.err != nil {
		return nil, k.err
	}
	if in, ok := k.tokens[tok]; ok {
		cp := *in
		return &cp, nil
	}
	return &Introspection{}, nil
}

// active is the introspection of a live token of client issued at iat.
func active(client, jti string, iat time.Time) *Introspection {
	return &Introspection{
		Active: true, TokenType: "Bearer", ClientID: client, Subject: "alice@carbon.super", Scope: "default read:pets",
		JTI: jti, Issuer: testIssuer, IssuedAt: iat.Unix(), NotBefore: iat.Unix(), ExpiresAt: testNow.Add(time.Hour).Unix(),
	}
}

func newOpaqueServer(t testing.TB, now *time.Time, k Introspector) *Server {
	t.Helper()
	s := newTestServer(t, func() time.Time { return *now })
	s.opaque = newOpaqueTokens(OpaqueConfig{Introspector: k, InactiveTTL: 10 * time.Second})
	return s
}

func check(t testing.TB, s *Server, tok string) *authv3.CheckResponse {
	t.Helper()
	resp, err := s.Check(context.Background(), request("api-gold", "Bearer "+tok, nil))
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func clientRevocationEvent(t testing.TB, client string, gen int64, before time.Time) events.Event {
	t.Helper()
	data, err := json.Marshal(model.Revocation{ClientID: client, IssuedBefore: before, ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return events.Event{Kind: events.KindRevocation, Op: events.OpUpsert, ID: "client:" + client, Generation: gen, Data: data}
}

func TestOpaqueTokens(t *testing.T) {
	now := testNow
	good, revoked, dead := opaqueTok('A'), opaqueTok('B'), opaqueTok('C')
	k := &keyManager{tokens: map[string]*Introspection{
		good:    active("ck-prod", "jti-good", testNow.Add(-time.Minute)),
		revoked: active("ck-prod", "jti-revoked", testNow.Add(-time.Minute)),
	}}
	s := newOpaqueServer(t, &now, k)
	invalid := denied{401, "900901", "Invalid Credentials", "", true}

	resp := check(t, s, good)
	ok := resp.GetOkResponse()
	if ok == nil {
		t.Fatalf("opaque token denied: %v", resp)
	}
	meta := resp.GetDynamicMetadata().GetFields()
	if meta[MetaClientID].GetStringValue() != "ck-prod" || meta[MetaApplicationID].GetStringValue() != "app-1" ||
		meta[MetaUser].GetStringValue() != "alice@carbon.super" || !slices.Contains(ok.GetHeadersToRemove(), "authorization") {
		t.Errorf("metadata %v, headers to remove %v", meta, ok.GetHeadersToRemove())
	}
	// Cached until its exp: no more calls to the key manager.
	for range 5 {
		if check(t, s, good).GetOkResponse() == nil {
			t.Fatal("cached opaque token denied")
		}
	}
	if n := k.calls.Load(); n != 1 {
		t.Errorf("%d introspections for one token, want 1", n)
	}
	// Scopes are checked as a JWT's are.
	resp, _ = s.Check(context.Background(), request("api-gold", "Bearer "+good, map[string]string{ExtScopes: "write:pets"}))
	assertDenied(t, resp, denied{403, "900910", "The access token does not allow you to access the requested resource", "", false})

	// An inactive token: 401, remembered for InactiveTTL, then asked again.
	calls := k.calls.Load()
	for range 3 {
		assertDenied(t, check(t, s, dead), invalid)
	}
	if n := k.calls.Load() - calls; n != 1 {
		t.Errorf("%d introspections of an inactive token within its TTL, want 1", n)
	}
	now = now.Add(11 * time.Second)
	assertDenied(t, check(t, s, dead), invalid)
	if n := k.calls.Load() - calls; n != 2 {
		t.Errorf("%d introspections after the inactive TTL, want 2", n)
	}

	// A revocation event refuses the cached token by its jti.
	if check(t, s, revoked).GetOkResponse() == nil {
		t.Fatal("denied before revocation")
	}
	if err := s.state.Apply(revocationEvent(t, "jti-revoked", 100, time.Now().Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	assertDenied(t, check(t, s, revoked), invalid)
	if check(t, s, good).GetOkResponse() == nil {
		t.Error("another token of the client denied after a jti revocation")
	}

	// Nothing that is not of the opaque format reaches the key manager.
	calls = k.calls.Load()
	for _, tok := range []string{"opaque-but-not-ours", opaquePrefix + "short", opaquePrefix + strings.Repeat("!", 43), good + "A"} {
		assertDenied(t, check(t, s, tok), invalid)
	}
	// Nor an opaque token sent as an API key.
	req := request("api-gold", "", map[string]string{ExtSecuritySchemes: "api_key"})
	req.Attributes.Request.Http.Headers[HeaderAPIKey] = opaqueTok('K')
	if resp, _ := s.Check(context.Background(), req); resp.GetOkResponse() != nil {
		t.Error("an opaque token allowed as an API key")
	}
	if n := k.calls.Load() - calls; n != 0 {
		t.Errorf("%d introspections of strings that are not opaque tokens", n)
	}
}

func TestOpaqueAnswersRefused(t *testing.T) {
	now := testNow
	invalid := denied{401, "900901", "Invalid Credentials", "", true}
	cases := map[string]*Introspection{
		"refresh token":  {Active: true, TokenType: "refresh_token", ClientID: "ck-prod", JTI: "j", ExpiresAt: testNow.Add(time.Hour).Unix()},
		"other issuer":   {Active: true, ClientID: "ck-prod", JTI: "j", Issuer: "https://evil.test", ExpiresAt: testNow.Add(time.Hour).Unix()},
		"no jti":         {Active: true, ClientID: "ck-prod", ExpiresAt: testNow.Add(time.Hour).Unix()},
		"no client":      {Active: true, JTI: "j", ExpiresAt: testNow.Add(time.Hour).Unix()},
		"no exp":         {Active: true, ClientID: "ck-prod", JTI: "j"},
		"expired":        {Active: true, ClientID: "ck-prod", JTI: "j", ExpiresAt: testNow.Add(-time.Minute).Unix()},
		"unknown client": {Active: true, ClientID: "ck-nobody", JTI: "j", ExpiresAt: testNow.Add(time.Hour).Unix()},
	}
	k := &keyManager{tokens: map[string]*Introspection{}}
	toks := map[string]string{}
	c := byte('a')
	for name, in := range cases {
		toks[name] = opaqueTok(c)
		k.tokens[toks[name]] = in
		c++
	}
	s := newOpaqueServer(t, &now, k)
	for name := range cases {
		t.Run(name, func(t *testing.T) { assertDenied(t, check(t, s, toks[name]), invalid) })
	}

	t.Run("no introspector", func(t *testing.T) {
		s := newTestServer(t, func() time.Time { return testNow })
		assertDenied(t, check(t, s, opaqueTok('Z')), invalid)
	})

	t.Run("key manager unreachable", func(t *testing.T) {
		tok := opaqueTok('Q')
		k := &keyManager{tokens: map[string]*Introspection{tok: active("ck-prod", "jti-q", testNow)}, err: errors.New("connection refused")}
		s := newOpaqueServer(t, &now, k)
		// The token may be good: a 503, not the 401 of a bad token.
		assertDenied(t, check(t, s, tok), denied{503, "900900", "Service unavailable", "The access token could not be validated: the key manager did not answer; try again", false})
		// Not remembered as inactive: once the key manager answers, the
		// token works.
		k.mu.Lock()
		k.err = nil
		k.mu.Unlock()
		if check(t, s, tok).GetOkResponse() == nil {
			t.Error("token denied after the key manager came back")
		}
	})
}

// TestClientRevocationAtGateway regenerates a client's secret (its
// revocation event): the client's earlier tokens, JWT or opaque, cached or
// not, are refused; its later ones and other clients' are not.
func TestClientRevocationAtGateway(t *testing.T) {
	key, _ := keys(t)
	now := testNow
	regen := testNow.Add(-10 * time.Second)
	before, after := opaqueTok('B'), opaqueTok('A')
	k := &keyManager{tokens: map[string]*Introspection{
		before: active("ck-prod", "jti-1", regen.Add(-time.Second)),
		after:  active("ck-prod", "jti-2", regen),
	}}
	s := newOpaqueServer(t, &now, k)
	jwt := func(iat time.Time, client string) string {
		return sign(t, jose.RS256, key, testKid, tokenClaims(client, map[string]any{"iat": iat.Unix(), "jti": "j-" + client + iat.String()}))
	}
	jwtBefore, jwtAfter, sbxBefore := jwt(regen.Add(-time.Second), "ck-prod"), jwt(regen, "ck-prod"), jwt(regen.Add(-time.Second), "ck-sbx")
	noIat := sign(t, jose.RS256, key, testKid, tokenClaims("ck-prod", map[string]any{"iat": nil}))
	for _, tok := range []string{before, jwtBefore, noIat} { // in the cache before the event
		if check(t, s, tok).GetOkResponse() == nil {
			t.Fatal("denied before the regeneration")
		}
	}
	if err := s.state.Apply(clientRevocationEvent(t, "ck-prod", 50, regen)); err != nil {
		t.Fatal(err)
	}
	invalid := denied{401, "900901", "Invalid Credentials", "", true}
	for name, tok := range map[string]string{"opaque": before, "JWT": jwtBefore, "JWT without iat": noIat} {
		t.Run("earlier "+name, func(t *testing.T) { assertDenied(t, check(t, s, tok), invalid) })
	}
	for name, tok := range map[string]string{"later opaque": after, "later JWT": jwtAfter, "another client's": sbxBefore} {
		t.Run(name, func(t *testing.T) {
			if resp := check(t, s, tok); resp.GetOkResponse() == nil {
				t.Errorf("denied: %v", resp)
			}
		})
	}
}

// TestOpaqueIntrospectionShared sends many requests with one new token at
// once: one introspection answers all of them.
func TestOpaqueIntrospectionShared(t *testing.T) {
	now := testNow
	tok := opaqueTok('S')
	k := &keyManager{tokens: map[string]*Introspection{tok: active("ck-prod", "jti-s", testNow)}, gate: make(chan struct{})}
	s := newOpaqueServer(t, &now, k)
	const n = 16
	var wg sync.WaitGroup
	results := make(chan bool, n)
	for range n {
		wg.Go(func() {
			resp, err := s.Check(context.Background(), request("api-gold", "Bearer "+tok, nil))
			results <- err == nil && resp.GetOkResponse() != nil
		})
	}
	// Wait until the one call is in flight, then let it answer.
	waitCall(t, k)
	close(k.gate)
	wg.Wait()
	close(results)
	for ok := range results {
		if !ok {
			t.Error("a request was denied")
		}
	}
	if c := k.calls.Load(); c != 1 {
		t.Errorf("%d introspections for %d concurrent requests, want 1", c, n)
	}

	// A request that gives up before the answer does not waste it.
	tok2 := opaqueTok('T')
	k2 := &keyManager{tokens: map[string]*Introspection{tok2: active("ck-prod", "jti-t", testNow)}, gate: make(chan struct{})}
	s2 := newOpaqueServer(t, &now, k2)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := s2.Check(ctx, request("api-gold", "Bearer "+tok2, nil)); err == nil {
			t.Error("a cancelled Check returned no error")
		}
	}()
	waitCall(t, k2)
	cancel()
	<-done
	close(k2.gate)
	// The introspection completes on its own and fills the cache.
	for i := 0; s2.cache.get(keyOf(tok2)) == nil; i++ {
		if i > 5000 {
			t.Fatal("the abandoned introspection never filled the cache")
		}
		time.Sleep(time.Millisecond)
	}
	if check(t, s2, tok2).GetOkResponse() == nil || k2.calls.Load() != 1 {
		t.Errorf("after the abandoned request: %d introspections", k2.calls.Load())
	}
}

// While every introspection slot is taken, a new opaque token is answered
// at once with a 503, and asks the key manager nothing: a flood of made-up
// tokens piles up neither goroutines nor calls.
func TestOpaqueSlotsBusy(t *testing.T) {
	now := testNow
	slow, other := opaqueTok('W'), opaqueTok('X')
	k := &keyManager{tokens: map[string]*Introspection{slow: active("ck-prod", "jti-w", testNow), other: active("ck-prod", "jti-x", testNow)}, gate: make(chan struct{})}
	s := newTestServer(t, func() time.Time { return now })
	s.opaque = newOpaqueTokens(OpaqueConfig{Introspector: k, InactiveTTL: 10 * time.Second, MaxInFlight: 1})
	done := make(chan *authv3.CheckResponse, 1)
	go func() { done <- check(t, s, slow) }()
	waitCall(t, k)
	assertDenied(t, check(t, s, other), denied{503, "900900", "Service unavailable", "The access token could not be validated: the key manager did not answer; try again", false})
	if c := k.calls.Load(); c != 1 {
		t.Errorf("%d introspections, want only the one in flight", c)
	}
	close(k.gate)
	if resp := <-done; resp.GetOkResponse() == nil {
		t.Errorf("the token in flight: denied %v", resp)
	}
	if check(t, s, other).GetOkResponse() == nil {
		t.Error("refused once a slot was free")
	}
}

// waitCall waits, for at most 5s, until k has been asked.
func waitCall(t *testing.T, k *keyManager) {
	t.Helper()
	for i := 0; k.calls.Load() == 0; i++ {
		if i > 5000 {
			t.Fatal("the key manager was never asked")
		}
		time.Sleep(time.Millisecond)
	}
}

func keyOf(tok string) *tokenKey {
	k := tokenKey(sha256.Sum256([]byte(tok)))
	return &k
}

func TestHTTPIntrospector(t *testing.T) {
	const gwToken = "gateway-token-0123456789abcdef0123"
	tok := opaqueTok('H')
	var got struct {
		auth, ctype, token string
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.auth, got.ctype = r.Header.Get("Authorization"), r.Header.Get("Content-Type")
		_ = r.ParseForm()
		got.token = r.PostForm.Get("token")
		switch {
		case got.auth != "Bearer "+gwToken:
			w.WriteHeader(http.StatusUnauthorized)
		case got.token == tok:
			_ = json.NewEncoder(w).Encode(map[string]any{"active": true, "client_id": "ck", "jti": "j", "exp": 123, "iat": 100, "scope": "a b", "token_type": "Bearer", "aud": []string{"ck"}})
		default:
			_ = json.NewEncoder(w).Encode(map[string]any{"active": false})
		}
	}))
	t.Cleanup(srv.Close)
	h, err := NewHTTPIntrospector(HTTPIntrospectorConfig{URL: srv.URL + "/internal/data/v1/introspect", Token: gwToken, Client: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	in, err := h.Introspect(context.Background(), tok)
	if err != nil || !in.Active || in.ClientID != "ck" || in.JTI != "j" || in.ExpiresAt != 123 || in.IssuedAt != 100 || in.Scope != "a b" {
		t.Fatalf("Introspect = %+v, %v", in, err)
	}
	if got.token != tok || got.ctype != "application/x-www-form-urlencoded" {
		t.Errorf("the key manager got %+v", got)
	}
	if in, err := h.Introspect(context.Background(), opaqueTok('X')); err != nil || in.Active {
		t.Errorf("unknown token: %+v, %v", in, err)
	}
	// A refused gateway token is an error, which names neither token.
	bad, _ := NewHTTPIntrospector(HTTPIntrospectorConfig{URL: srv.URL, Token: "wrong-token", Client: srv.Client()})
	if _, err := bad.Introspect(context.Background(), tok); err == nil || strings.Contains(err.Error(), tok) || strings.Contains(err.Error(), "wrong-token") {
		t.Errorf("refused: %v", err)
	}
	if _, err := NewHTTPIntrospector(HTTPIntrospectorConfig{URL: "not a url"}); err == nil ||
		!strings.Contains(err.Error(), "url") || !strings.Contains(err.Error(), "gateway.token") || !strings.Contains(err.Error(), "client") {
		t.Errorf("NewHTTPIntrospector(bad) = %v", err)
	}
}

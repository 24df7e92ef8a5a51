package authz

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-jose/go-jose/v4"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/model"
)

// The access token is the gateway's credential: the backend never sees it,
// whether the response is built or memoised, on any API the token is used on.
func TestCheckRemovesAuthorization(t *testing.T) {
	key, _ := keys(t)
	s := newTestServer(t, func() time.Time { return testNow })
	tok := "Bearer " + sign(t, jose.RS256, key, testKid, tokenClaims("ck-prod", nil))
	for _, api := range []string{"api-gold", "api-unl", "api-gold", "api-unl"} {
		resp, err := s.Check(context.Background(), request(api, tok, nil))
		if err != nil {
			t.Fatal(err)
		}
		ok := resp.GetOkResponse()
		if ok == nil {
			t.Fatalf("%s denied: %v", api, resp)
		}
		if got := ok.GetHeadersToRemove(); len(got) != 1 || got[0] != "authorization" {
			t.Errorf("%s: headers to remove = %q, want [authorization]", api, got)
		}
		if h := ok.GetHeaders(); len(h) != 1 || h[0].GetHeader().GetKey() != HeaderKeyType || h[0].GetHeader().GetValue() != model.KeyTypeProduction {
			t.Errorf("%s: headers = %v, want %s: PRODUCTION", api, h, HeaderKeyType)
		}
	}
}

func TestBearerScheme(t *testing.T) {
	const tok = "eyJ.eyJ.sig"
	tests := map[string]struct {
		headers map[string]string
		raw     *corev3.HeaderMap // Envoy's header_map, when headers is not sent
		want    string
	}{
		"Bearer":            {headers: map[string]string{"authorization": "Bearer " + tok}, want: tok},
		"bearer":            {headers: map[string]string{"authorization": "bearer " + tok}, want: tok},
		"BEARER":            {headers: map[string]string{"authorization": "BEARER " + tok}, want: tok},
		"bEaReR":            {headers: map[string]string{"authorization": "bEaReR " + tok}, want: tok},
		"header map, value": {raw: headerMap("Authorization", "BEARER "+tok, nil), want: tok},
		"header map, raw":   {raw: headerMap("authorization", "", []byte("Bearer "+tok)), want: tok},
		"Basic":             {headers: map[string]string{"authorization": "Basic " + tok}},
		"no space":          {headers: map[string]string{"authorization": "Bearer" + tok}},
		"Bearerx":           {headers: map[string]string{"authorization": "Bearerx " + tok}},
		"scheme only":       {headers: map[string]string{"authorization": "Bearer "}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, ok := bearer(&authv3.AttributeContext_HttpRequest{Headers: tc.headers, HeaderMap: tc.raw})
			if got != tc.want || ok != (tc.want != "") {
				t.Errorf("bearer = %q, %v; want %q", got, ok, tc.want)
			}
		})
	}
}

func headerMap(k, v string, raw []byte) *corev3.HeaderMap {
	return &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: k, Value: v, RawValue: raw}}}
}

// countingKeys counts the key lookups a check makes: every RSA verify is
// preceded by one.
func countingKeys(pub *rsa.PublicKey, n *atomic.Int64) Keys {
	return KeysFunc(func(kid string) (crypto.PublicKey, bool) {
		n.Add(1)
		if kid == testKid {
			return pub, true
		}
		return nil, false
	})
}

// A token that fails on its claims is refused before its key is looked up,
// let alone its signature verified.
func TestCheckClaimsBeforeSignature(t *testing.T) {
	key, _ := keys(t)
	tests := map[string]map[string]any{
		"expired":        {"exp": testNow.Add(-time.Hour).Unix()},
		"no exp":         {"exp": nil},
		"not yet valid":  {"nbf": testNow.Add(time.Hour).Unix()},
		"foreign issuer": {"iss": "https://evil.example"},
		"no client id":   {"azp": nil, "aud": nil},
	}
	for name, over := range tests {
		t.Run(name, func(t *testing.T) {
			var lookups atomic.Int64
			s := newTestServer(t, func() time.Time { return testNow })
			s.keys = countingKeys(&key.PublicKey, &lookups)
			req := request("api-gold", "Bearer "+sign(t, jose.RS256, key, testKid, tokenClaims("ck-prod", over)), nil)
			for range 2 {
				resp, err := s.Check(context.Background(), req)
				if err != nil {
					t.Fatal(err)
				}
				assertDenied(t, resp, denied{401, "900901", "Invalid Credentials", "", true})
			}
			if n := lookups.Load(); n != 0 {
				t.Errorf("%d key lookups, want 0", n)
			}
		})
	}
}

// A token whose signature failed is refused again without being parsed or
// verified, until the entry expires; it is never remembered against a key
// other than the one it failed with.
func TestCheckBadSignatureRemembered(t *testing.T) {
	key, other := keys(t)
	now := testNow
	s := newTestServer(t, func() time.Time { return now })
	var pub atomic.Pointer[rsa.PublicKey]
	pub.Store(&key.PublicKey)
	s.keys = KeysFunc(func(kid string) (crypto.PublicKey, bool) {
		if kid == testKid {
			return pub.Load(), true
		}
		return nil, false
	})
	// Signed by other, presented under the kid of key.
	tok := sign(t, jose.RS256, other, testKid, tokenClaims("ck-prod", nil))
	req := request("api-gold", "Bearer "+tok, nil)
	check := func() *authv3.CheckResponse {
		t.Helper()
		resp, err := s.Check(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	invalid := denied{401, "900901", "Invalid Credentials", "", true}
	assertDenied(t, check(), invalid)
	k := tokenKey(sha256.Sum256([]byte(tok)))
	if !s.bad.bad(&k, s.keys, now) {
		t.Fatal("bad signature not remembered")
	}
	// Remembered: no parse, no verify, so no allocation.
	deny := s.deny[codeInvalid].resp
	if allocs := testing.AllocsPerRun(100, func() {
		if check() != deny {
			t.Fatal("not denied 900901")
		}
	}); allocs != 0 {
		t.Errorf("replayed bad token: %v allocs per check, want 0", allocs)
	}
	// Forgotten after the TTL, and remembered again on the next failure.
	now = now.Add(badTokenTTL)
	if s.bad.bad(&k, s.keys, now) {
		t.Error("still remembered after the TTL")
	}
	assertDenied(t, check(), invalid)
	if !s.bad.bad(&k, s.keys, now) {
		t.Fatal("bad signature not remembered again")
	}
	// The kid now names the key that did sign the token: it is valid.
	pub.Store(&other.PublicKey)
	if resp := check(); resp.GetOkResponse() == nil {
		t.Errorf("valid token denied after the kid's key changed: %v", resp)
	}
}

func TestBadTokensBounded(t *testing.T) {
	key, _ := keys(t)
	ks := KeysFunc(func(string) (crypto.PublicKey, bool) { return &key.PublicKey, true })
	c := newBadTokens(3)
	tk := func(i byte) *tokenKey { return &tokenKey{i} }
	for i := range byte(5) {
		c.add(tk(i), testKid, &key.PublicKey, testNow)
	}
	c.add(tk(4), testKid, &key.PublicKey, testNow) // again: no new slot
	if len(c.m) != 3 {
		t.Fatalf("%d entries, want 3", len(c.m))
	}
	for i, want := range []bool{false, false, true, true, true} {
		if got := c.bad(tk(byte(i)), ks, testNow); got != want {
			t.Errorf("token %d remembered = %v, want %v", i, got, want)
		}
	}
}

// A token used on several APIs in turn keeps one allowed response per API:
// no allocation once warm, and each follows the entries it was built from.
func TestCheckMemoPerAPI(t *testing.T) {
	key, _ := keys(t)
	s := newTestServer(t, func() time.Time { return testNow })
	tok := "Bearer " + sign(t, jose.RS256, key, testKid, tokenClaims("ck-prod", nil))
	gold, unl := request("api-gold", tok, nil), request("api-unl", tok, nil)
	check := func(req *authv3.CheckRequest) *authv3.CheckResponse {
		t.Helper()
		resp, err := s.Check(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetOkResponse() == nil {
			t.Fatalf("denied: %v", resp)
		}
		return resp
	}
	tier := func(resp *authv3.CheckResponse) string {
		return resp.GetDynamicMetadata().GetFields()[MetaSubscriptionTier].GetStringValue()
	}
	check(gold)
	check(unl)
	if allocs := testing.AllocsPerRun(100, func() { check(gold); check(unl) }); allocs != 0 {
		t.Errorf("two APIs in turn: %v allocs per pair, want 0", allocs)
	}
	// api-unl's subscription moves to Gold: its response changes, api-gold's
	// stays.
	data, _ := json.Marshal(model.Subscription{ID: "sub-unl", ApplicationID: "app-1", APIID: "api-unl", ThrottlingPolicy: "Gold", Status: model.SubUnblocked})
	if err := s.state.Apply(events.Event{Kind: events.KindSubscription, Op: events.OpUpsert, ID: "sub-unl", Generation: 2, Data: data}); err != nil {
		t.Fatal(err)
	}
	if got := tier(check(unl)); got != "Gold" {
		t.Errorf("api-unl tier = %q after the move, want Gold", got)
	}
	if got := tier(check(gold)); got != "Gold" {
		t.Errorf("api-gold tier = %q, want Gold", got)
	}
	if got := tier(check(unl)); got != "Gold" {
		t.Errorf("api-unl tier = %q from the memo, want Gold", got)
	}
}

// The memos of one token are bounded, the newest kept, one per API.
func TestMemosBounded(t *testing.T) {
	v := &verified{}
	subs := make([]*model.Subscription, maxOKMemos+3)
	for i := range subs {
		subs[i] = &model.Subscription{APIID: string(rune('a' + i))}
		v.remember(&okMemo{sub: subs[i], resp: &authv3.CheckResponse{}})
	}
	resub := &model.Subscription{APIID: subs[len(subs)-1].APIID} // the last API's entry replaced
	v.remember(&okMemo{sub: resub, resp: &authv3.CheckResponse{}})
	ms := v.ok.Load()
	if ms.n > maxOKMemos {
		t.Errorf("%d memos, want at most %d", ms.n, maxOKMemos)
	}
	seen := map[string]bool{}
	for _, m := range ms.m[:ms.n] {
		if seen[m.sub.APIID] {
			t.Errorf("two memos for API %s", m.sub.APIID)
		}
		seen[m.sub.APIID] = true
	}
	if v.memo(nil, nil, subs[0], tiers{}, backendJWTRoute{}, false) != nil {
		t.Error("oldest memo kept")
	}
	if v.memo(nil, nil, subs[len(subs)-2], tiers{}, backendJWTRoute{}, false) == nil {
		t.Error("a recent memo dropped")
	}
	if v.memo(nil, nil, subs[len(subs)-1], tiers{}, backendJWTRoute{}, false) != nil || v.memo(nil, nil, resub, tiers{}, backendJWTRoute{}, false) == nil {
		t.Error("a replaced subscription's memo still answers")
	}
}

// With encode_raw_headers (the listener's setting) Envoy sends the headers
// as a list of raw bytes: the token is read in place, so the warm path
// still does not allocate.
func TestRawHeadersWarmPath(t *testing.T) {
	key, _ := keys(t)
	s := newTestServer(t, func() time.Time { return testNow })
	req := rawHeaders(request("api-gold", "Bearer "+sign(t, jose.RS256, key, testKid, benchClaims(0)), map[string]string{ExtScopes: "read:pets"}))
	if resp, _ := s.Check(context.Background(), req); resp.GetOkResponse() == nil {
		t.Fatalf("denied: %v", resp)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = s.Check(context.Background(), req) }); n != 0 {
		t.Errorf("warm Check with raw headers: %v allocs, want 0", n)
	}
}

package authz

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/gwstate"
	"github.com/apim-dev/apim/internal/model"
)

// denied is what a client sees of a denied request.
type denied struct {
	status      int
	code        string
	message     string
	description string
	challenge   bool
}

func TestCheckDenied(t *testing.T) {
	key, other := keys(t)
	bearer := func(c map[string]any) string { return "Bearer " + sign(t, jose.RS256, key, testKid, c) }
	good := bearer(tokenClaims("ck-prod", nil))
	parts := strings.Split(strings.TrimPrefix(good, "Bearer "), ".")
	tampered := "Bearer " + parts[0] + "." + b64.EncodeToString([]byte(`{"iss":"`+testIssuer+`","azp":"ck-prod","exp":9999999999}`)) + "." + parts[2]

	invalid := denied{401, "900901", "Invalid Credentials", "Invalid Credentials. Make sure you have provided the correct security credentials", true}
	tests := map[string]struct {
		api   string
		token string
		ext   map[string]string
		want  denied
	}{
		"no api_id": {
			api: "", token: good,
			want: denied{404, "900906", "No matching resource found for given API Request", "No matching resource found in the API for the given request", false},
		},
		"no authorization header": {
			api:  "api-gold",
			want: denied{401, "900902", "Missing Credentials", "Invalid Credentials. Make sure your API invocation call has a header: 'Authorization : Bearer ACCESS_TOKEN' or 'Authorization : Basic ACCESS_TOKEN' or 'apikey: API_KEY'", true},
		},
		"basic scheme":                 {api: "api-gold", token: "Basic YWxpY2U6c2VjcmV0", want: denied{401, "900902", "Missing Credentials", "", true}},
		"empty bearer":                 {api: "api-gold", token: "Bearer   ", want: denied{401, "900902", "Missing Credentials", "", true}},
		"not a jwt":                    {api: "api-gold", token: "Bearer 3f1a9c0e-opaque", want: invalid},
		"tampered payload":             {api: "api-gold", token: tampered, want: invalid},
		"signed by another key":        {api: "api-gold", token: "Bearer " + sign(t, jose.RS256, other, testKid, tokenClaims("ck-prod", nil)), want: invalid},
		"unknown kid":                  {api: "api-gold", token: "Bearer " + sign(t, jose.RS256, key, "k2", tokenClaims("ck-prod", nil)), want: invalid},
		"no kid":                       {api: "api-gold", token: "Bearer " + sign(t, jose.RS256, key, "", tokenClaims("ck-prod", nil)), want: invalid},
		"HS256":                        {api: "api-gold", token: "Bearer " + sign(t, jose.HS256, []byte("0123456789abcdef0123456789abcdef"), testKid, tokenClaims("ck-prod", nil)), want: invalid},
		"PS256":                        {api: "api-gold", token: "Bearer " + sign(t, jose.PS256, key, testKid, tokenClaims("ck-prod", nil)), want: invalid},
		"expired":                      {api: "api-gold", token: bearer(tokenClaims("ck-prod", map[string]any{"exp": testNow.Add(-time.Minute).Unix()})), want: invalid},
		"no exp":                       {api: "api-gold", token: bearer(tokenClaims("ck-prod", map[string]any{"exp": nil})), want: invalid},
		"not yet valid":                {api: "api-gold", token: bearer(tokenClaims("ck-prod", map[string]any{"nbf": testNow.Add(time.Minute).Unix()})), want: invalid},
		"foreign issuer":               {api: "api-gold", token: bearer(tokenClaims("ck-prod", map[string]any{"iss": "https://evil.example"})), want: invalid},
		"unknown client":               {api: "api-gold", token: bearer(tokenClaims("ck-nobody", nil)), want: invalid},
		"key of a deleted app":         {api: "api-gold", token: bearer(tokenClaims("ck-orphan", nil)), want: invalid},
		"sandbox key, no sandbox":      {api: "api-gold", token: bearer(tokenClaims("ck-sbx", nil)), ext: map[string]string{ExtHasSandbox: "false"}, want: invalid},
		"production key, sandbox only": {api: "api-gold", token: good, ext: map[string]string{ExtHasProduction: "false"}, want: invalid},
		"no subscription": {
			api: "api-other", token: good,
			want: denied{403, "900908", "Resource forbidden", "User is NOT authorized to access the Resource. API Subscription validation failed.", false},
		},
		"blocked":                  {api: "api-blk", token: good, want: denied{401, "900907", "The requested API is temporarily blocked", "", true}},
		"blocked sandbox key too":  {api: "api-blk", token: bearer(tokenClaims("ck-sbx", nil)), want: denied{401, "900907", "The requested API is temporarily blocked", "", true}},
		"production-only blocked":  {api: "api-pob", token: good, want: denied{401, "900907", "The requested API is temporarily blocked", "", true}},
		"on hold":                  {api: "api-hold", token: good, want: denied{401, "900909", "The subscription to the API is inactive", "", true}},
		"rejected":                 {api: "api-rej", token: good, want: denied{401, "900909", "The subscription to the API is inactive", "", true}},
		"scope missing":            {api: "api-gold", token: good, ext: map[string]string{ExtScopes: "write:pets admin"}, want: denied{403, "900910", "The access token does not allow you to access the requested resource", "", false}},
		"scope missing, no scopes": {api: "api-gold", token: bearer(tokenClaims("ck-prod", map[string]any{"scope": nil})), ext: map[string]string{ExtScopes: "read:pets"}, want: denied{403, "900910", "The access token does not allow you to access the requested resource", "", false}},
	}
	s := newTestServer(t, func() time.Time { return testNow })
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			for range 2 { // the second time from the token cache, where there is one
				resp, err := s.Check(context.Background(), request(tc.api, tc.token, tc.ext))
				if err != nil {
					t.Fatalf("Check returned a gRPC error: %v", err)
				}
				assertDenied(t, resp, tc.want)
			}
		})
	}
}

func assertDenied(t *testing.T, resp *authv3.CheckResponse, want denied) {
	t.Helper()
	if resp.GetStatus().GetCode() == int32(codes.OK) {
		t.Fatalf("allowed; want %d %s", want.status, want.code)
	}
	d := resp.GetDeniedResponse()
	if d == nil {
		t.Fatalf("no denied response: %v", resp)
	}
	if got := int(d.GetStatus().GetCode()); got != want.status {
		t.Errorf("HTTP status = %d, want %d", got, want.status)
	}
	var body struct{ Code, Message, Description string }
	if err := json.Unmarshal([]byte(d.GetBody()), &body); err != nil {
		t.Fatalf("body %q: %v", d.GetBody(), err)
	}
	if body.Code != want.code || body.Message != want.message {
		t.Errorf("body = %s, want code %s message %q", d.GetBody(), want.code, want.message)
	}
	if want.description != "" && body.Description != want.description {
		t.Errorf("description = %q, want %q", body.Description, want.description)
	}
	headers := map[string]string{}
	for _, h := range d.GetHeaders() {
		headers[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	if headers["content-type"] != "application/json" {
		t.Errorf("content-type = %q", headers["content-type"])
	}
	if _, ok := headers["www-authenticate"]; ok != want.challenge {
		t.Errorf("www-authenticate present = %v, want %v", ok, want.challenge)
	}
}

func okWant(keyType string, meta map[string]string) *authv3.CheckResponse {
	fields := map[string]*structpb.Value{}
	for k, v := range meta {
		fields[k] = structpb.NewStringValue(v)
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{{
				Header:       &corev3.HeaderValue{Key: "x-apim-key-type", Value: keyType},
				AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			}},
		}},
		DynamicMetadata: &structpb.Struct{Fields: fields},
	}
}

// tokenOK is okWant for a request the access token allowed: the token's
// Authorization header is not passed to the backend.
func tokenOK(keyType string, meta map[string]string) *authv3.CheckResponse {
	resp := okWant(keyType, meta)
	resp.GetOkResponse().HeadersToRemove = []string{"authorization"}
	return resp
}

func TestCheckAllowed(t *testing.T) {
	key, _ := keys(t)
	bearer := func(c map[string]any) string { return "Bearer " + sign(t, jose.RS256, key, testKid, c) }
	meta := func(api, keyType, client string, sub ...string) map[string]string {
		m := map[string]string{
			"api_id": api, "application_id": "app-1", "application_name": "PizzaApp",
			"key_type": keyType, "user": "alice@carbon.super", "client_id": client,
		}
		if len(sub) == 2 {
			m["subscription_id"], m["subscription_tier"] = sub[0], sub[1]
		}
		return m
	}
	tests := map[string]struct {
		api   string
		token string
		ext   map[string]string
		want  *authv3.CheckResponse
	}{
		"auth type None, no token": {
			api: "api-gold", ext: map[string]string{ExtAuthType: model.AuthNone},
			want: okWant("PRODUCTION", map[string]string{"api_id": "api-gold", "key_type": "PRODUCTION"}),
		},
		"auth type None keeps its resource limit": {
			api: "api-gold", ext: map[string]string{ExtAuthType: model.AuthNone, ExtTier: "10KPerMin"},
			want: okWant("PRODUCTION", map[string]string{
				"api_id": "api-gold", "key_type": "PRODUCTION",
				"resource": "GET /pets/{id}", "resource_tier": "10KPerMin",
			}),
		},
		"gold subscription carries the tier": {
			api: "api-gold", token: bearer(tokenClaims("ck-prod", nil)),
			want: tokenOK("PRODUCTION", meta("api-gold", "PRODUCTION", "ck-prod", "sub-gold", "Gold")),
		},
		"unlimited subscription carries no tier": {
			api: "api-unl", token: bearer(tokenClaims("ck-prod", nil)),
			want: tokenOK("PRODUCTION", meta("api-unl", "PRODUCTION", "ck-prod")),
		},
		"sandbox key": {
			api: "api-gold", token: bearer(tokenClaims("ck-sbx", nil)),
			want: tokenOK("SANDBOX", meta("api-gold", "SANDBOX", "ck-sbx", "sub-gold", "Gold")),
		},
		"sandbox key on production-only blocked": {
			api: "api-pob", token: bearer(tokenClaims("ck-sbx", nil)),
			want: tokenOK("SANDBOX", meta("api-pob", "SANDBOX", "ck-sbx", "sub-pob", "Gold")),
		},
		"lower-case scheme": {
			api: "api-unl", token: "bearer " + sign(t, jose.RS256, key, testKid, tokenClaims("ck-prod", nil)),
			want: tokenOK("PRODUCTION", meta("api-unl", "PRODUCTION", "ck-prod")),
		},
		"upper-case scheme": {
			api: "api-unl", token: "BEARER " + sign(t, jose.RS256, key, testKid, tokenClaims("ck-prod", nil)),
			want: tokenOK("PRODUCTION", meta("api-unl", "PRODUCTION", "ck-prod")),
		},
		"mixed-case scheme": {
			api: "api-unl", token: "bEaReR " + sign(t, jose.RS256, key, testKid, tokenClaims("ck-prod", nil)),
			want: tokenOK("PRODUCTION", meta("api-unl", "PRODUCTION", "ck-prod")),
		},
		"one matching scope": {
			api: "api-unl", token: bearer(tokenClaims("ck-prod", nil)), ext: map[string]string{ExtScopes: "admin read:pets"},
			want: tokenOK("PRODUCTION", meta("api-unl", "PRODUCTION", "ck-prod")),
		},
		"client_id claim": {
			api: "api-unl", token: bearer(tokenClaims("", map[string]any{"azp": nil, "aud": nil, "client_id": "ck-prod"})),
			want: tokenOK("PRODUCTION", meta("api-unl", "PRODUCTION", "ck-prod")),
		},
		"single aud": {
			api: "api-unl", token: bearer(tokenClaims("", map[string]any{"azp": nil, "aud": []string{"ck-prod"}})),
			want: tokenOK("PRODUCTION", meta("api-unl", "PRODUCTION", "ck-prod")),
		},
		"expired within leeway": {
			api: "api-unl", token: bearer(tokenClaims("ck-prod", map[string]any{"exp": testNow.Add(-2 * time.Second).Unix()})),
			want: tokenOK("PRODUCTION", meta("api-unl", "PRODUCTION", "ck-prod")),
		},
	}
	s := newTestServer(t, func() time.Time { return testNow })
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			for range 2 {
				got, err := s.Check(context.Background(), request(tc.api, tc.token, tc.ext))
				if err != nil {
					t.Fatal(err)
				}
				if d := cmp.Diff(tc.want, got, protocmp.Transform()); d != "" {
					t.Errorf("response (-want +got):\n%s", d)
				}
			}
		})
	}
}

// A cached token is still checked against the clock and the current state.
func TestCheckCachedTokenFollowsClockAndState(t *testing.T) {
	key, _ := keys(t)
	now := testNow
	s := newTestServer(t, func() time.Time { return now })
	tok := "Bearer " + sign(t, jose.RS256, key, testKid, tokenClaims("ck-prod", nil))
	check := func() *authv3.CheckResponse {
		t.Helper()
		resp, err := s.Check(context.Background(), request("api-gold", tok, nil))
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if got := check(); got.GetOkResponse() == nil {
		t.Fatalf("first check denied: %v", got)
	}
	// The subscription is blocked by an event: the next request sees it.
	data, _ := json.Marshal(model.Subscription{ID: "sub-gold", ApplicationID: "app-1", APIID: "api-gold", ThrottlingPolicy: "Gold", Status: model.SubBlocked})
	if err := s.state.Apply(events.Event{Kind: events.KindSubscription, Op: events.OpUpsert, ID: "sub-gold", Generation: 2, Data: data}); err != nil {
		t.Fatal(err)
	}
	assertDenied(t, check(), denied{401, "900907", "The requested API is temporarily blocked", "", true})
	// Unblocked, moved to Unlimited: allowed without the tier.
	data, _ = json.Marshal(model.Subscription{ID: "sub-gold", ApplicationID: "app-1", APIID: "api-gold", ThrottlingPolicy: "Unlimited", Status: model.SubUnblocked})
	if err := s.state.Apply(events.Event{Kind: events.KindSubscription, Op: events.OpUpsert, ID: "sub-gold", Generation: 3, Data: data}); err != nil {
		t.Fatal(err)
	}
	got := check()
	if _, ok := got.GetDynamicMetadata().GetFields()[MetaSubscriptionTier]; ok || got.GetOkResponse() == nil {
		t.Errorf("after move to Unlimited: %v", got)
	}
	// The token expires while cached.
	now = testNow.Add(2 * time.Hour)
	assertDenied(t, check(), denied{401, "900901", "Invalid Credentials", "", true})
}

func TestCheckContextDone(t *testing.T) {
	key, _ := keys(t)
	s := newTestServer(t, func() time.Time { return testNow })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.Check(ctx, request("api-gold", "Bearer "+sign(t, jose.RS256, key, testKid, tokenClaims("ck-prod", nil)), nil))
	if status.Code(err) != codes.Canceled {
		t.Errorf("err = %v, want Canceled", err)
	}
}

func TestNewRequiresConfig(t *testing.T) {
	_, err := New(Config{})
	for _, want := range []string{"keys", "issuers", "state"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New(Config{}) = %v, want it to name %s", err, want)
		}
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	st := gwstate.NewStore()
	st.Replace(testState())
	s, err := New(Config{Keys: KeysFunc(nil), Issuers: []string{testIssuer}, State: st, Registry: reg, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := s.Check(context.Background(), request("api-gold", "", nil)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Check(context.Background(), request("api-gold", "", map[string]string{ExtAuthType: model.AuthNone})); err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "apim_authz_decisions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var result, code string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "result":
					result = l.GetValue()
				case "code":
					code = l.GetValue()
				}
			}
			got[result+"/"+code] = m.GetCounter().GetValue()
		}
	}
	codes := map[string]bool{}
	for _, d := range denials {
		codes[d.code] = true
	}
	if got["allow/"] != 1 || got["deny/900902"] != 3 || got["deny/900901"] != 0 || len(got) != 2+len(codes) { // allow and throttle
		t.Errorf("counters = %v", got)
	}
}

func TestAnyScope(t *testing.T) {
	tests := map[string]struct {
		want, have string
		ok         bool
	}{
		"one of many":   {"a b c", "x c", true},
		"none":          {"a b", "ab ba", false},
		"empty have":    {"a", "", false},
		"double spaces": {"a  b", " b ", true},
		"prefix is not": {"read", "read:pets", false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := anyScope(tc.want, tc.have); got != tc.ok {
				t.Errorf("anyScope(%q, %q) = %v", tc.want, tc.have, got)
			}
		})
	}
}

func TestParseJWTErrors(t *testing.T) {
	for name, tok := range map[string]string{
		"empty":           "",
		"two parts":       "a.b",
		"four parts":      "a.b.c.d",
		"bad base64":      "a*.b.c",
		"header not json": b64.EncodeToString([]byte("x")) + ".e30.c2ln",
		"crit":            b64.EncodeToString([]byte(`{"alg":"RS256","crit":["x"]}`)) + ".e30.c2ln",
		"too long":        strings.Repeat("a", maxTokenLen+1),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := parseJWT(tok); !errors.Is(err, errMalformed) {
				t.Errorf("err = %v, want errMalformed", err)
			}
		})
	}
}

func FuzzParseJWT(f *testing.F) {
	key, _ := keys(f)
	f.Add(sign(f, jose.RS256, key, testKid, tokenClaims("ck-prod", nil)))
	f.Add("e30.e30.e30")
	f.Add(b64.EncodeToString([]byte(`{"alg":"RS256","kid":"k1"}`)) + "." + b64.EncodeToString([]byte(`{"aud":["a","b"],"exp":1.5}`)) + ".AA")
	f.Add("..")
	f.Fuzz(func(t *testing.T, tok string) {
		j, err := parseJWT(tok)
		if err != nil {
			return
		}
		if !strings.HasPrefix(tok, j.signingInput+".") {
			t.Fatalf("signing input %q is not a prefix of %q", j.signingInput, tok)
		}
		if strings.Count(tok, ".") != 2 {
			t.Fatalf("accepted %d dots", strings.Count(tok, "."))
		}
		_ = j.claims.clientID()
		// Verification of garbage must fail, not panic.
		if err := j.verify(KeysFunc(func(string) (crypto.PublicKey, bool) { return &key.PublicKey, true })); err == nil && j.alg != "RS256" {
			t.Fatalf("verified alg %q", j.alg)
		}
	})
}

// FuzzParseClaims checks the claims scanner against encoding/json: whatever
// both accept, they read alike.
func FuzzParseClaims(f *testing.F) {
	f.Add(`{"iss":"a","sub":"b\u0041","aud":["x"],"exp":1.5e9,"nbf":7,"scope":"s t","x":{"y":[1,"}"]}}`)
	f.Add(`{"azp":"c","client_id":"d","aud":"e"}`)
	f.Add(`{}`)
	f.Add(` { "exp" : -1 , "iss" : "\"" } `)
	f.Fuzz(func(t *testing.T, in string) {
		var got claims
		err := parseClaims([]byte(in), &got)
		var want claims
		jerr := json.Unmarshal([]byte(in), &want)
		if err != nil || jerr != nil {
			return
		}
		// encoding/json matches member names case-insensitively; JWT claim
		// names are case-sensitive, and so is the scanner.
		lower := strings.ToLower(in)
		for _, name := range []string{"iss", "sub", "azp", "client_id", "aud", "exp", "nbf", "scope"} {
			if strings.Count(lower, name) != strings.Count(in, name) || strings.Contains(in, `\u`) {
				return
			}
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Fatalf("parseClaims(%q) differs from encoding/json (-json +scan):\n%s", in, d)
		}
	})
}

package authz

import (
	"context"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-jose/go-jose/v4"

	"github.com/apim-dev/apim/internal/model"
)

// apiKeyClaims are the claims keymgr.SignAPIKey writes, with overrides (a
// nil value deletes the claim).
func apiKeyClaims(app, keyType string, over map[string]any) map[string]any {
	c := map[string]any{
		"iss": testIssuer, "sub": "alice", "jti": "key-" + app + "-" + keyType,
		"iat": testNow.Add(-time.Minute).Unix(), "exp": testNow.Add(time.Hour).Unix(),
		"token_type": "apiKey", "keytype": keyType,
		"application": map[string]any{"id": app, "uuid": app, "name": "PizzaApp", "owner": "alice", "tier": "Unlimited"},
	}
	for k, v := range over {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// keyRequest is a request to api carrying headers (apikey, authorization,
// referer) from source, on a route with these security schemes.
func keyRequest(api, schemes, source string, headers map[string]string) *authv3.CheckRequest {
	req := request(api, "", map[string]string{ExtSecuritySchemes: schemes})
	for k, v := range headers {
		req.Attributes.Request.Http.Headers[k] = v
	}
	req.Attributes.Source = &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
		SocketAddress: &corev3.SocketAddress{Address: source, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40000}},
	}}}
	return req
}

func TestCheckAPIKey(t *testing.T) {
	key, other := keys(t)
	apiKey := func(c map[string]any) string { return sign(t, jose.RS256, key, testKid, c) }
	good := apiKey(apiKeyClaims("app-1", model.KeyTypeProduction, nil))
	access := sign(t, jose.RS256, key, testKid, tokenClaims("ck-prod", nil))
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + b64.EncodeToString([]byte(`{"iss":"`+testIssuer+`","token_type":"apiKey","keytype":"PRODUCTION","jti":"x","exp":9999999999,"application":{"id":"app-1"}}`)) + "." + parts[2]

	invalid := denied{401, "900901", "Invalid Credentials", "Invalid Credentials. Make sure you have provided the correct security credentials", true}
	wrongType := denied{401, "900905", "Incorrect Access Token Type is provided", "", true}
	missing := denied{401, "900902", "Missing Credentials", "", true}
	forbidden := denied{403, "900908", "Resource forbidden", "Access forbidden for the invocations: the API key does not permit this IP address or referrer.", false}
	const both = "oauth2 api_key"
	tests := map[string]struct {
		api, schemes, source string
		headers              map[string]string
		want                 *denied // nil: allowed
	}{
		"api key on oauth2+api_key":           {api: "api-gold", schemes: both, headers: map[string]string{"apikey": good}},
		"api key on api_key only":             {api: "api-gold", schemes: "api_key", headers: map[string]string{"apikey": good}},
		"api key ignored on oauth2 only":      {api: "api-gold", schemes: "oauth2", headers: map[string]string{"apikey": good}, want: &missing},
		"api key ignored on default schemes":  {api: "api-gold", schemes: "", headers: map[string]string{"apikey": good}, want: &missing},
		"bearer ignored on api_key only":      {api: "api-gold", schemes: "api_key", headers: map[string]string{"authorization": "Bearer " + access}, want: &missing},
		"api key as bearer token":             {api: "api-gold", schemes: both, headers: map[string]string{"authorization": "Bearer " + good}, want: &wrongType},
		"access token as api key":             {api: "api-gold", schemes: both, headers: map[string]string{"apikey": access}, want: &wrongType},
		"forged api key as bearer token":      {api: "api-gold", schemes: both, headers: map[string]string{"authorization": "Bearer " + sign(t, jose.RS256, other, testKid, apiKeyClaims("app-1", model.KeyTypeProduction, nil))}, want: &invalid},
		"expired":                             {api: "api-gold", schemes: both, headers: map[string]string{"apikey": apiKey(apiKeyClaims("app-1", model.KeyTypeProduction, map[string]any{"exp": testNow.Add(-time.Hour).Unix()}))}, want: &invalid},
		"tampered":                            {api: "api-gold", schemes: both, headers: map[string]string{"apikey": tampered}, want: &invalid},
		"signed by another key":               {api: "api-gold", schemes: both, headers: map[string]string{"apikey": sign(t, jose.RS256, other, testKid, apiKeyClaims("app-1", model.KeyTypeProduction, nil))}, want: &invalid},
		"garbage":                             {api: "api-gold", schemes: both, headers: map[string]string{"apikey": "not-a-key"}, want: &invalid},
		"deleted application":                 {api: "api-gold", schemes: both, headers: map[string]string{"apikey": apiKey(apiKeyClaims("app-gone", model.KeyTypeProduction, nil))}, want: &invalid},
		"no application claim":                {api: "api-gold", schemes: both, headers: map[string]string{"apikey": apiKey(apiKeyClaims("app-1", model.KeyTypeProduction, map[string]any{"application": nil}))}, want: &invalid},
		"bad key type":                        {api: "api-gold", schemes: both, headers: map[string]string{"apikey": apiKey(apiKeyClaims("app-1", "OTHER", nil))}, want: &invalid},
		"no subscription":                     {api: "api-none", schemes: both, headers: map[string]string{"apikey": good}, want: &denied{403, "900908", "Resource forbidden", "User is NOT authorized to access the Resource. API Subscription validation failed.", false}},
		"blocked subscription":                {api: "api-blk", schemes: both, headers: map[string]string{"apikey": good}, want: &denied{401, "900907", "The requested API is temporarily blocked", "", true}},
		"sandbox key on prod-only blocked":    {api: "api-pob", schemes: both, headers: map[string]string{"apikey": apiKey(apiKeyClaims("app-1", model.KeyTypeSandbox, nil))}},
		"production key on prod-only blocked": {api: "api-pob", schemes: both, headers: map[string]string{"apikey": good}, want: &denied{401, "900907", "The requested API is temporarily blocked", "", true}},
		"ip permitted": {api: "api-gold", schemes: both, source: "10.1.2.3", headers: map[string]string{
			"apikey": apiKey(apiKeyClaims("app-1", model.KeyTypeProduction, map[string]any{"permittedIP": "192.168.1.1, 10.0.0.0/8"})),
		}},
		"ip not permitted": {api: "api-gold", schemes: both, source: "127.0.0.1", headers: map[string]string{
			"apikey": apiKey(apiKeyClaims("app-1", model.KeyTypeProduction, map[string]any{"permittedIP": "192.168.1.1,10.0.0.0/8"})),
		}, want: &forbidden},
		"ip not permitted, spoofed x-forwarded-for": {api: "api-gold", schemes: both, source: "127.0.0.1", headers: map[string]string{
			"x-forwarded-for": "10.1.2.3",
			"apikey":          apiKey(apiKeyClaims("app-1", model.KeyTypeProduction, map[string]any{"permittedIP": "10.0.0.0/8"})),
		}, want: &forbidden},
		"referer permitted": {api: "api-gold", schemes: both, headers: map[string]string{
			"referer": "https://shop.example.com/cart",
			"apikey":  apiKey(apiKeyClaims("app-1", model.KeyTypeProduction, map[string]any{"permittedReferer": "https://*.example.com/*"})),
		}},
		"referer not permitted": {api: "api-gold", schemes: both, headers: map[string]string{
			"referer": "https://evil.test/https://x.example.com/",
			"apikey":  apiKey(apiKeyClaims("app-1", model.KeyTypeProduction, map[string]any{"permittedReferer": "https://*.example.com/*"})),
		}, want: &forbidden},
		"no referer": {api: "api-gold", schemes: both, headers: map[string]string{
			"apikey": apiKey(apiKeyClaims("app-1", model.KeyTypeProduction, map[string]any{"permittedReferer": "https://*.example.com/*"})),
		}, want: &forbidden},
		"bad permittedIP claim": {api: "api-gold", schemes: both, headers: map[string]string{
			"apikey": apiKey(apiKeyClaims("app-1", model.KeyTypeProduction, map[string]any{"permittedIP": "10.0.0.0/99"})),
		}, want: &invalid},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := newTestServer(t, func() time.Time { return testNow })
			source := tc.source
			if source == "" {
				source = "127.0.0.1"
			}
			resp, err := s.Check(context.Background(), keyRequest(tc.api, tc.schemes, source, tc.headers))
			if err != nil {
				t.Fatal(err)
			}
			if tc.want != nil {
				assertDenied(t, resp, *tc.want)
				return
			}
			ok := resp.GetOkResponse()
			if ok == nil {
				t.Fatalf("denied: %v", resp.GetDeniedResponse())
			}
			if got := ok.GetHeadersToRemove(); len(got) != 1 || got[0] != HeaderAPIKey {
				t.Errorf("headers to remove = %v, want [apikey]", got)
			}
			md := resp.GetDynamicMetadata().GetFields()
			if md[MetaApplicationID].GetStringValue() != "app-1" || md[MetaUser].GetStringValue() != "alice" {
				t.Errorf("metadata = %v", md)
			}
		})
	}
}

// The verified-token cache is keyed by the credential alone: a string
// verified as an API key is not an access token afterwards, nor the reverse:
// 900905, WSO2's incorrect access token type.
func TestCheckAPIKeyCacheKeepsKind(t *testing.T) {
	key, _ := keys(t)
	s := newTestServer(t, func() time.Time { return testNow })
	apiKey := sign(t, jose.RS256, key, testKid, apiKeyClaims("app-1", model.KeyTypeProduction, nil))
	access := sign(t, jose.RS256, key, testKid, tokenClaims("ck-prod", nil))
	check := func(h map[string]string) *authv3.CheckResponse {
		t.Helper()
		resp, err := s.Check(context.Background(), keyRequest("api-gold", "oauth2 api_key", "127.0.0.1", h))
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	wrongType := denied{401, "900905", "Incorrect Access Token Type is provided", "", true}
	if check(map[string]string{"apikey": apiKey}).GetOkResponse() == nil {
		t.Fatal("api key denied")
	}
	assertDenied(t, check(map[string]string{"authorization": "Bearer " + apiKey}), wrongType)
	if check(map[string]string{"authorization": "Bearer " + access}).GetOkResponse() == nil {
		t.Fatal("access token denied")
	}
	assertDenied(t, check(map[string]string{"apikey": access}), wrongType)
}

// A revoked API key is refused like a revoked token, from the cache too.
func TestCheckAPIKeyRevoked(t *testing.T) {
	key, _ := keys(t)
	s := newTestServer(t, func() time.Time { return testNow })
	apiKey := sign(t, jose.RS256, key, testKid, apiKeyClaims("app-1", model.KeyTypeProduction, map[string]any{"jti": "key-to-revoke"}))
	req := keyRequest("api-gold", "api_key", "127.0.0.1", map[string]string{"apikey": apiKey})
	resp, err := s.Check(context.Background(), req)
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("before revocation: %v %v", resp, err)
	}
	// The gateway's clock decides when a revocation may be forgotten.
	if err := s.state.Apply(revocationEvent(t, "key-to-revoke", 100, time.Now().Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	resp, err = s.Check(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	assertDenied(t, resp, denied{401, "900901", "Invalid Credentials", "", true})
}

// The warm path of an API key, restrictions included, allocates nothing.
func TestCheckAPIKeyWarmNoAlloc(t *testing.T) {
	key, _ := keys(t)
	s := newTestServer(t, func() time.Time { return testNow })
	apiKey := sign(t, jose.RS256, key, testKid, apiKeyClaims("app-1", model.KeyTypeProduction, map[string]any{
		"permittedIP": "127.0.0.0/8", "permittedReferer": "https://*.example.com/*",
	}))
	req := keyRequest("api-gold", "oauth2 api_key", "127.0.0.1", map[string]string{"apikey": apiKey, "referer": "https://a.example.com/x"})
	check := func() {
		resp, err := s.Check(context.Background(), req)
		if err != nil || resp.GetOkResponse() == nil {
			t.Fatalf("denied: %v %v", resp, err)
		}
	}
	check()
	if allocs := testing.AllocsPerRun(100, check); allocs != 0 {
		t.Errorf("warm api key check: %v allocs, want 0", allocs)
	}
}

func TestWildcardMatch(t *testing.T) {
	tests := map[string]struct {
		pattern, s string
		want       bool
	}{
		"exact":              {"https://a.com/", "https://a.com/", true},
		"exact mismatch":     {"https://a.com/", "https://b.com/", false},
		"star suffix":        {"https://a.com/*", "https://a.com/x/y", true},
		"star empty":         {"https://a.com/*", "https://a.com/", true},
		"star middle":        {"https://*.a.com/*", "https://www.a.com/p", true},
		"star middle no dot": {"https://*.a.com/*", "https://a.com/p", false},
		"only star":          {"*", "anything", true},
		"backtrack":          {"*ab*c", "aabxabc", true},
		"prefix not whole":   {"https://a.com", "https://a.com.evil/", false},
		"host star no slash": {"https://*.a.com/*", "https://evil.test/https://x.a.com/", false},
		"path star slashes":  {"https://a.com/*/end", "https://a.com/x/y/end", true},
		"no scheme":          {"*.a.com", "www.a.com", true},
	}
	for name, tc := range tests {
		if got := wildcardMatch(tc.pattern, tc.s); got != tc.want {
			t.Errorf("%s: wildcardMatch(%q, %q) = %v, want %v", name, tc.pattern, tc.s, got, tc.want)
		}
	}
}

// TestWSO2StyleAccessToken: WSO2's access tokens carry an application claim
// whose "id" is a number beside its "uuid"; such a token is a valid bearer
// token, not a malformed API key.
func TestWSO2StyleAccessToken(t *testing.T) {
	key, _ := keys(t)
	s := newTestServer(t, func() time.Time { return testNow })
	req := request("api-gold", "Bearer "+sign(t, jose.RS256, key, testKid, benchClaims(0)), nil)
	if resp, err := s.Check(context.Background(), req); err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("Check = %v, %v; want allowed", resp, err)
	}
}

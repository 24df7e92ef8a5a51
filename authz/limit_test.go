package authz

import (
	"context"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-jose/go-jose/v4"
	"github.com/rs/zerolog"

	"github.com/apim-dev/apim/ratelimit"
)

// On a route that has Check decide the limits, an allowed request carries
// the draft-03 headers and the bandwidth metadata only; the request past the
// limit is the RLS's 429 with its body and Retry-After. A route without the
// flag is not limited by Check.
func TestLimitInCheck(t *testing.T) {
	key, _ := keys(t)
	s := newTestServer(t, func() time.Time { return testNow })
	rl, err := ratelimit.New(ratelimit.Config{State: s.state, Logger: zerolog.Nop(), Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	s.limiter = rl
	tok := "Bearer " + sign(t, jose.RS256, key, testKid, benchClaims(0))
	inCheck := request("api-gold", tok, map[string]string{ExtLimitInAuthz: "true"}) // Gold: 5000/min
	ctx := context.Background()
	for i := 1; i <= 5000; i++ {
		resp, _ := s.Check(ctx, inCheck)
		ok := resp.GetOkResponse()
		if ok == nil {
			t.Fatalf("call %d denied: %v", i, resp)
		}
		if i == 1 {
			got := map[string]string{}
			for _, h := range ok.GetResponseHeadersToAdd() {
				got[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
			}
			if got["x-ratelimit-remaining"] != "4999" || !strings.HasPrefix(got["x-ratelimit-limit"], "5000, 5000;w=60") || got["x-ratelimit-reset"] == "" {
				t.Errorf("draft-03 headers %v", got)
			}
			if f := resp.GetDynamicMetadata().GetFields(); len(f) != 0 {
				t.Errorf("metadata %v, want none without a bandwidth quota", f)
			}
		}
	}
	resp, _ := s.Check(ctx, inCheck)
	d := resp.GetDeniedResponse()
	if d.GetStatus().GetCode() != 429 || !strings.Contains(d.GetBody(), `"code":"900804"`) {
		t.Fatalf("call 5001 = %v, want 429 900804", resp)
	}
	retry := false
	for _, h := range d.GetHeaders() {
		retry = retry || h.GetHeader().GetKey() == "retry-after"
	}
	if !retry {
		t.Errorf("429 without retry-after: %v", d.GetHeaders())
	}
	if resp, _ := s.Check(ctx, request("api-gold", tok, nil)); resp.GetOkResponse() == nil {
		t.Errorf("a route without %s was limited by Check: %v", ExtLimitInAuthz, resp)
	}

	// Only Unlimited tiers: nothing to decide, and no metadata for Envoy
	// where Check decides; all of it for Envoy's rate-limit filter where
	// it does not.
	for _, inAuthz := range []bool{true, false} {
		req := request("api-unl", tok, nil)
		if inAuthz {
			req = request("api-unl", tok, map[string]string{ExtLimitInAuthz: "true"})
		}
		resp, _ := s.Check(ctx, req)
		if resp.GetOkResponse() == nil {
			t.Fatalf("unlimited, in Check %v: denied %v", inAuthz, resp)
		}
		if n := len(resp.GetDynamicMetadata().GetFields()); inAuthz != (n == 0) {
			t.Errorf("unlimited, in Check %v: metadata %v", inAuthz, resp.GetDynamicMetadata())
		}
	}
}

// A subscription tier that does not stop on quota reach: past its limit
// the request is allowed and the backend told so; a client cannot send
// that flag itself.
func TestQuotaExceededFlag(t *testing.T) {
	key, _ := keys(t)
	s := newTestServer(t, func() time.Time { return testNow })
	state := testState()
	for i, p := range state.Policies {
		if p.Name == "Gold" {
			state.Policies[i].RequestCount, state.Policies[i].StopOnQuotaReach = 1, false
		}
	}
	s.state.Replace(state)
	rl, err := ratelimit.New(ratelimit.Config{State: s.state, Logger: zerolog.Nop(), Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	s.limiter = rl
	tok := "Bearer " + sign(t, jose.RS256, key, testKid, benchClaims(0))
	flags := func(resp *authv3.CheckResponse) (set, removed []string) {
		ok := resp.GetOkResponse()
		if ok == nil {
			t.Fatalf("denied: %v", resp)
		}
		for _, h := range ok.GetHeaders() {
			if h.GetHeader().GetKey() == ratelimit.HeaderQuotaExceeded {
				set = append(set, h.GetHeader().GetValue())
			}
		}
		for _, h := range ok.GetHeadersToRemove() {
			if h == ratelimit.HeaderQuotaExceeded {
				removed = append(removed, h)
			}
		}
		return set, removed
	}
	req := func(spoof bool) *authv3.CheckRequest {
		r := request("api-gold", tok, map[string]string{ExtLimitInAuthz: "true"})
		if spoof {
			r.Attributes.Request.Http.Headers[ratelimit.HeaderQuotaExceeded] = "none"
		}
		return r
	}
	ctx := context.Background()

	// Within the limit: nothing set; a client's own flag removed, even an
	// empty first copy before a forged one (raw headers, as Envoy sends).
	forged := rawHeaders(request("api-gold", tok, map[string]string{ExtLimitInAuthz: "true"}))
	forged.Attributes.Request.Http.HeaderMap.Headers = append(forged.Attributes.Request.Http.HeaderMap.Headers,
		&corev3.HeaderValue{Key: ratelimit.HeaderQuotaExceeded}, &corev3.HeaderValue{Key: ratelimit.HeaderQuotaExceeded, RawValue: []byte("subscription/Free")})
	resp, _ := s.Check(ctx, forged)
	if set, removed := flags(resp); len(set) != 0 || len(removed) != 1 {
		t.Errorf("within the limit, flag sent by the client: set %v, removed %v", set, removed)
	}
	// Past it: allowed, flagged (replacing any client's value).
	for _, spoof := range []bool{false, true} {
		resp, _ := s.Check(ctx, req(spoof))
		if set, removed := flags(resp); len(set) != 1 || set[0] != "subscription/Gold" || len(removed) != 0 {
			t.Errorf("past the limit (client flag %v): set %v, removed %v", spoof, set, removed)
		}
	}
}

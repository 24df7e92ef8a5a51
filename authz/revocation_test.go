package authz

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-jose/go-jose/v4"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/model"
)

func revocationEvent(t testing.TB, jti string, gen int64, exp time.Time) events.Event {
	t.Helper()
	data, err := json.Marshal(model.Revocation{JTI: jti, ExpiresAt: exp})
	if err != nil {
		t.Fatal(err)
	}
	return events.Event{Kind: events.KindRevocation, Op: events.OpUpsert, ID: jti, Generation: gen, Data: data}
}

// TestCheckRevokedToken checks a revoked token is refused with 401 900901,
// though it verified and sits in the verified-token cache, and that a
// token with another jti of the same client is still allowed.
func TestCheckRevokedToken(t *testing.T) {
	key, _ := keys(t)
	s := newTestServer(t, func() time.Time { return testNow })
	// The gateway's clock, not the test's fixed one, decides when a
	// revocation may be forgotten; keep it an hour past the real now.
	exp := time.Now().Add(time.Hour)
	revoked := "Bearer " + sign(t, jose.RS256, key, testKid, tokenClaims("ck-prod", map[string]any{"jti": "jti-revoked"}))
	other := "Bearer " + sign(t, jose.RS256, key, testKid, tokenClaims("ck-prod", map[string]any{"jti": "jti-other"}))
	check := func(tok string) *authv3.CheckResponse {
		t.Helper()
		resp, err := s.Check(context.Background(), request("api-gold", tok, nil))
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for _, tok := range []string{revoked, other} {
		if got := check(tok); got.GetOkResponse() == nil {
			t.Fatalf("before revocation: denied %v", got)
		}
	}
	if err := s.state.Apply(revocationEvent(t, "jti-revoked", 100, exp)); err != nil {
		t.Fatal(err)
	}
	// The same wording as any bad token: nothing says it was revoked.
	assertDenied(t, check(revoked), denied{401, "900901", "Invalid Credentials", "", true})
	if got := check(other); got.GetOkResponse() == nil {
		t.Errorf("unrevoked token of the same client denied: %v", got)
	}
	// A fresh server that loads the revocation in its full state refuses
	// the token on the cold path too.
	s2 := newTestServer(t, func() time.Time { return testNow })
	st := testState()
	st.Revocations = []model.Revocation{{JTI: "jti-revoked", ExpiresAt: exp}}
	s2.state.Replace(st)
	resp, err := s2.Check(context.Background(), request("api-gold", revoked, nil))
	if err != nil {
		t.Fatal(err)
	}
	assertDenied(t, resp, denied{401, "900901", "Invalid Credentials", "", true})
}

// withRevocations loads n revocations into the server's state, so that
// benchmarks measure Check with a realistic revocation set held.
func withRevocations(s *Server, n int) {
	st := testState()
	exp := time.Now().Add(time.Hour)
	for i := range n {
		st.Revocations = append(st.Revocations, model.Revocation{JTI: fmt.Sprintf("revoked-%d", i), ExpiresAt: exp})
	}
	s.state.Replace(st)
}

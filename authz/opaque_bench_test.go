package authz

import (
	"context"
	"fmt"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/rs/zerolog"

	"github.com/apim-dev/apim/internal/model"
)

// TestOpaqueWarmPathDoesNotAllocate checks a cached opaque token costs what
// a cached JWT costs: no allocation, with revocations of jtis and of
// clients held.
func TestOpaqueWarmPathDoesNotAllocate(t *testing.T) {
	now := testNow
	tok := opaqueTok('W')
	s := newOpaqueServer(t, &now, &keyManager{tokens: map[string]*Introspection{tok: active("ck-prod", "jti-w", testNow)}})
	withOpaqueRevocations(s, 1000)
	req := request("api-gold", "Bearer "+tok, nil)
	if resp, _ := s.Check(context.Background(), req); resp.GetOkResponse() == nil {
		t.Fatalf("denied: %v", resp)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = s.Check(context.Background(), req) }); n != 0 {
		t.Errorf("a cached opaque token's Check allocates %v times", n)
	}
}

// withOpaqueRevocations holds n revoked jtis and n/10 revoked clients
// (none of them the benchmark's).
func withOpaqueRevocations(s *Server, n int) {
	st := testState()
	exp := time.Now().Add(time.Hour)
	for i := range n {
		st.Revocations = append(st.Revocations, model.Revocation{JTI: fmt.Sprintf("revoked-%d", i), ExpiresAt: exp})
	}
	for i := range n / 10 {
		st.Revocations = append(st.Revocations, model.Revocation{ClientID: fmt.Sprintf("client-%d", i), IssuedBefore: testNow, ExpiresAt: exp})
	}
	s.state.Replace(st)
}

// BenchmarkOpaqueCheck measures Check with an opaque access token: warm (the
// introspection cached, as for every request after a token's first) and
// cold (every token new, introspected by an in-process key manager answer,
// so the figure is the gateway's own cost without the network call).
func BenchmarkOpaqueCheck(b *testing.B) {
	now := testNow
	ctx := context.Background()

	b.Run("warm-cache", func(b *testing.B) {
		tok := opaqueTok('W')
		s := newOpaqueServer(b, &now, &keyManager{tokens: map[string]*Introspection{tok: active("ck-prod", "jti-w", testNow)}})
		withOpaqueRevocations(s, 10_000)
		s.log = zerolog.Nop()
		benchAllowed(b, s, request("api-gold", "Bearer "+tok, map[string]string{ExtScopes: "read:pets"}))
	})

	b.Run("cold", func(b *testing.B) {
		const n = 2000
		k := &keyManager{tokens: map[string]*Introspection{}}
		reqs := make([]*authv3.CheckRequest, n)
		for i := range reqs {
			tok := fmt.Sprintf("%s%043d", opaquePrefix, i)
			k.tokens[tok] = active("ck-prod", fmt.Sprintf("jti-%d", i), testNow)
			reqs[i] = request("api-gold", "Bearer "+tok, nil)
		}
		s := newOpaqueServer(b, &now, k)
		s.log = zerolog.Nop()
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if i%n == 0 { // every token is new to the cache
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
}

package ratelimit

import (
	"slices"
	"strings"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/rs/zerolog"

	"github.com/apim-dev/apim/internal/gwstate"
	"github.com/apim-dev/apim/internal/model"
)

// fleetFunc adapts a function to Fleet.
type fleetFunc func(FleetCount, time.Time) bool

func (f fleetFunc) Admit(c FleetCount, now time.Time) bool { return f(c, now) }

func TestFleetDecides(t *testing.T) {
	now := t0
	st := gwstate.NewStore()
	st.Replace(&model.GatewayState{Environment: model.DefaultEnvironment, Policies: policies()})
	var seen []FleetCount
	s, err := New(Config{
		State: st, Logger: zerolog.New(zerolog.NewTestWriter(t)), Now: func() time.Time { return now },
		// The fleet admits two requests per key.
		Fleet: fleetFunc(func(c FleetCount, _ time.Time) bool {
			seen = append(seen, c)
			return c.Count <= 2
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	var codes []rlsv3.RateLimitResponse_Code
	for range 4 {
		codes = append(codes, call(t, s, rlReq("sub-1", "Three")).GetOverallCode())
	}
	ok, over := rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OVER_LIMIT
	if want := []rlsv3.RateLimitResponse_Code{ok, ok, over, over}; !slices.Equal(codes, want) {
		t.Fatalf("codes %v, want %v", codes, want)
	}
	// Refused requests are taken off the count: the fleet saw 1, 2, 3, 3.
	var counts []int64
	for _, c := range seen {
		counts = append(counts, c.Count)
	}
	if want := []int64{1, 2, 3, 3}; !slices.Equal(counts, want) {
		t.Errorf("counts offered to the fleet %v, want %v", counts, want)
	}
	start := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	if c := seen[0]; c.Key != FleetKey(kindSubscription, "sub-1", "", start) || c.Limit != 3 ||
		!c.Start.Equal(start) || !c.End.Equal(start.Add(time.Minute)) {
		t.Errorf("fleet count %+v", c)
	}
	if k := FleetKey(kindSubscription, "a|1", "b", start); k == FleetKey(kindSubscription, "a", "1|b", start) {
		t.Errorf("keys collide: %q", k)
	}
	// A policy that does not stop on quota reach never asks the fleet.
	seen = nil
	call(t, s, rlReq("sub-2", "Billed"))
	if len(seen) != 0 {
		t.Errorf("the fleet was asked about a billed-only policy")
	}
	body := string(call(t, s, rlReq("sub-1", "Three")).GetRawBody())
	if want := `"code":"900804"`; !strings.Contains(body, want) {
		t.Errorf("body %s, want %s", body, want)
	}
}

package ratelimit

import (
	"slices"
	"strings"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/apim-dev/apim/internal/gwstate"
	"github.com/apim-dev/apim/internal/model"
)

// fleetFunc adapts a function to Fleet.
type fleetFunc func(FleetCount, time.Time) bool

func (f fleetFunc) Admit(c FleetCount, now time.Time) bool { return f(c, now) }

func (f fleetFunc) Record(FleetCount) {}

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
	// A policy that does not stop on quota reach (Billed, 1 a minute)
	// shares its count with the fleet too, and admits whatever it says:
	// past the limit, here or fleet-wide, the request is flagged.
	seen = nil
	var flagged []bool
	for range 3 {
		r := call(t, s, rlReq("sub-2", "Billed"))
		if r.GetOverallCode() != rlsv3.RateLimitResponse_OK {
			t.Fatalf("a billed policy refused: %v", r)
		}
		flagged = append(flagged, len(r.GetRequestHeadersToAdd()) == 1)
	}
	if len(seen) != 3 || !slices.Equal(flagged, []bool{false, true, true}) {
		t.Errorf("billed policy: %d counts offered to the fleet, flagged %v; want 3, [false true true]", len(seen), flagged)
	}
	body := string(call(t, s, rlReq("sub-1", "Three")).GetRawBody())
	if want := `"code":"900804"`; !strings.Contains(body, want) {
		t.Errorf("body %s, want %s", body, want)
	}
}

// bytesFleet is a fleet whose other gateways have sent others bytes: it
// admits while the fleet's total is under the limit, and keeps what is
// recorded.
type bytesFleet struct {
	others   int64
	recorded []FleetCount
}

func (f *bytesFleet) Admit(c FleetCount, _ time.Time) bool { return c.Count+f.others < c.Limit }

func (f *bytesFleet) Record(c FleetCount) { f.recorded = append(f.recorded, c) }

// A bandwidth quota is fleet-wide: the bytes of finished streams are
// recorded with the fleet, and the request path asks it, so a gateway
// refuses once the fleet has sent the quota though it sent less itself.
func TestFleetBandwidth(t *testing.T) {
	now := time.Date(2026, 2, 27, 12, 0, 20, 0, time.UTC)
	st := gwstate.NewStore()
	st.Replace(&model.GatewayState{Policies: []model.Policy{
		{Level: model.LevelSubscription, Name: "1KB", QuotaType: model.QuotaBandwidth, DataAmount: 1, DataUnit: "KB", UnitTime: 1, TimeUnit: "min", StopOnQuotaReach: true},
	}})
	fleet := &bytesFleet{others: 600}
	s, err := New(Config{State: st, Logger: zerolog.New(zerolog.NewTestWriter(t)), Now: func() time.Time { return now }, Fleet: fleet})
	if err != nil {
		t.Fatal(err)
	}
	check := &rlsv3.RateLimitRequest{Domain: Domain, Descriptors: []*ratelimitv3.RateLimitDescriptor{desc(KeySubscription, "sub-1", KeyTier, "1KB")}}
	sent := func(n uint64) {
		d := desc(KeyBandwidth, strings.Join([]string{BandwidthSubscription, "sub-1", "", "1KB"}, CustomKeySep))
		d.HitsAddend = wrapperspb.UInt64(n)
		call(t, s, &rlsv3.RateLimitRequest{Domain: Domain, Descriptors: []*ratelimitv3.RateLimitDescriptor{d}})
	}
	over := func() bool { return call(t, s, check).GetOverallCode() == rlsv3.RateLimitResponse_OVER_LIMIT }

	if over() {
		t.Fatal("refused before this gateway sent a byte")
	}
	sent(400)
	if over() {
		t.Fatal("refused at 400 + 600 of 1024 bytes")
	}
	sent(30)
	if !over() {
		t.Fatal("admitted at 430 + 600 of 1024 bytes: the fleet's bytes were not counted")
	}
	start := time.Date(2026, 2, 27, 12, 0, 0, 0, time.UTC)
	want := []FleetCount{
		{Key: FleetKey(kindSubscription, "sub-1", "", start), Start: start, End: start.Add(time.Minute), Limit: 1024, Count: 400},
		{Key: FleetKey(kindSubscription, "sub-1", "", start), Start: start, End: start.Add(time.Minute), Limit: 1024, Count: 430},
	}
	if !slices.EqualFunc(fleet.recorded, want, func(a, b FleetCount) bool {
		return a.Key == b.Key && a.Start.Equal(b.Start) && a.End.Equal(b.End) && a.Limit == b.Limit && a.Count == b.Count
	}) {
		t.Errorf("recorded %+v, want %+v", fleet.recorded, want)
	}
}

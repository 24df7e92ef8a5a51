package trafficmgr

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

var (
	wStart = t0.Truncate(time.Minute)
	wEnd   = wStart.Add(time.Minute)
)

func newTestView(self string, minFleet int) *view {
	return newView(self, minFleet, 3*time.Second, 5*time.Second, nil)
}

// admitN offers n requests for key and returns how many were admitted,
// counting like ratelimit.Server does (refused hits are taken off again).
func admitN(v *view, local *int64, key string, limit int64, n int, now time.Time) int {
	admitted := 0
	for range n {
		*local++
		if v.admit(key, wStart, wEnd, limit, *local, now) {
			admitted++
		} else {
			*local--
		}
	}
	return admitted
}

func heartbeat(v *view, now time.Time) {
	v.apply(Message{SchemaVersion: 1, Type: TypeHeartbeat, From: "tm", Time: now}, now)
}

func TestLoneGatewayIsExact(t *testing.T) {
	// No traffic manager ever heard from, fleet of one: the limit exactly.
	v := newTestView("gw-a", 0)
	var local int64
	if got := admitN(v, &local, "k", 3, 4, t0); got != 3 {
		t.Fatalf("admitted %d of 4 at 3/min, want 3", got)
	}
	heartbeat(v, t0)
	local = 0
	if got := admitN(v, &local, "k2", 3, 4, t0); got != 3 {
		t.Fatalf("connected: admitted %d of 4 at 3/min, want 3", got)
	}
	// Only the first three were admitted while disconnected.
	if got := testutil.ToFloat64(v.met.admittedDisconnected); got != 3 {
		t.Errorf("apim_throttle_agent_admitted_disconnected_total %v, want 3", got)
	}
	if got := testutil.ToFloat64(v.met.refusedShare); got != 2 {
		t.Errorf(`apim_throttle_agent_refused_total{reason="share"} %v, want 2`, got)
	}
}

func TestShareOfWhatIsLeft(t *testing.T) {
	tests := map[string]struct {
		self   string
		counts map[string]int64
		silent bool
		limit  int64
		want   int64 // the highest own count admitted
	}{
		"nothing reported":                   {self: "gw-a", limit: 100, want: 50},
		"remainder to the first id":          {self: "gw-a", limit: 3, want: 2},
		"remainder not to the second":        {self: "gw-b", limit: 3, want: 1},
		"reported counts":                    {self: "gw-a", counts: map[string]int64{"gw-a": 40, "gw-b": 30}, limit: 100, want: 55},
		"limit reached":                      {self: "gw-b", counts: map[string]int64{"gw-a": 60, "gw-b": 40}, limit: 100, want: 40},
		"a dead gateway's count stays":       {self: "gw-a", counts: map[string]int64{"gw-old": 90}, limit: 100, want: 5},
		"silent: share of the limit at most": {self: "gw-a", counts: map[string]int64{"gw-a": 10}, silent: true, limit: 100, want: 50},
		"silent: frozen report still binds":  {self: "gw-a", counts: map[string]int64{"gw-a": 10, "gw-b": 80}, silent: true, limit: 100, want: 15},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			v := newTestView(tc.self, 0)
			for _, id := range []string{"gw-a", "gw-b"} {
				v.apply(Message{SchemaVersion: 1, Type: TypePresence, From: id, Time: t0}, t0)
			}
			now := t0
			v.apply(Message{SchemaVersion: 1, Type: TypeDecision, Key: "k", WindowEnd: wEnd, Limit: tc.limit, Counts: tc.counts}, now)
			if tc.silent {
				now = now.Add(10 * time.Second) // nothing heard since
			}
			if v.size() != 2 {
				t.Fatalf("fleet size %d, want 2", v.size())
			}
			local := tc.counts[tc.self]
			admitN(v, &local, "k", tc.limit, 1000, now)
			if local != tc.want {
				t.Errorf("own count reached %d, want %d", local, tc.want)
			}
		})
	}
}

func TestDecisionThrottlesUntilWindowEndOnly(t *testing.T) {
	var applied []string
	v := newView("gw-a", 0, 3*time.Second, 5*time.Second, func(key string, _, _ time.Time) { applied = append(applied, key) })
	heartbeat(v, t0)
	// A decision about an ended window (say, replayed after a restart)
	// throttles nothing.
	v.apply(Message{SchemaVersion: 1, Type: TypeDecision, Key: "old", WindowEnd: t0.Add(-time.Second), ThrottledUntil: t0.Add(-time.Second), Limit: 1, Counts: map[string]int64{"gw-b": 5}}, t0)
	if !v.admit("old", wStart, wEnd, 100, 1, t0) {
		t.Fatal("a decision of an ended window throttled")
	}
	v.apply(Message{SchemaVersion: 1, Type: TypeDecision, Key: "k", WindowEnd: wEnd, ThrottledUntil: wEnd, Limit: 100, Count: 100, Counts: map[string]int64{"gw-b": 100}}, t0)
	if v.admit("k", wStart, wEnd, 100, 1, t0) {
		t.Fatal("a throttled key admitted")
	}
	if len(applied) != 1 || applied[0] != "k" {
		t.Errorf("OnThrottle calls %v, want [k]", applied)
	}
	if got := testutil.ToFloat64(v.met.applied); got != 1 {
		t.Errorf("apim_throttle_agent_decisions_applied_total %v, want 1 (not the ended window's)", got)
	}
	if got := testutil.ToFloat64(v.met.refusedDecision); got != 1 {
		t.Errorf(`apim_throttle_agent_refused_total{reason="decision"} %v, want 1`, got)
	}
	// The next window is another key: admitted.
	if !v.admit("k-next", wEnd, wEnd.Add(time.Minute), 100, 1, wEnd) {
		t.Fatal("the next window was throttled")
	}
}

func TestFleetMembershipExpiresOnlyWhenConnected(t *testing.T) {
	v := newTestView("gw-b", 0)
	heartbeat(v, t0)
	v.apply(Message{SchemaVersion: 1, Type: TypePresence, From: "gw-a", Time: t0}, t0)
	if v.size() != 2 || v.fleet.Load().rank != 1 {
		t.Fatalf("fleet %+v, want 2 with rank 1", *v.fleet.Load())
	}
	// Silent (no heartbeat for 10s): gw-a is kept.
	v.refreshFleet(t0.Add(10 * time.Second))
	if v.size() != 2 {
		t.Fatalf("silent: fleet size %d, want 2 kept", v.size())
	}
	// Connected, gw-a quiet for longer than the TTL: gone.
	heartbeat(v, t0.Add(10*time.Second))
	v.refreshFleet(t0.Add(10 * time.Second))
	if v.size() != 1 {
		t.Fatalf("fleet size %d, want 1", v.size())
	}
	if v := newTestView("gw-b", 3); v.size() != 3 {
		t.Errorf("configured fleet size 3, got %d", v.size())
	}
}

// TestEstimateBoundsTheFleet drives two gateways with skewed, bursty load
// through an aggregator that reports back only every few requests (the
// traffic manager's lag), and checks that the fleet admits no more than the
// limit and not much less.
func TestEstimateBoundsTheFleet(t *testing.T) {
	for _, limit := range []int64{3, 100, 10_000} {
		for _, skew := range []float64{0.5, 0.8, 1} {
			rng := rand.New(rand.NewPCG(uint64(limit), uint64(skew*10))) //nolint:gosec // G115: limit is a positive test constant, a seed only
			ids := []string{"gw-a", "gw-b"}
			views := []*view{newTestView("gw-a", 0), newTestView("gw-b", 0)}
			for _, v := range views {
				heartbeat(v, t0)
				for _, id := range ids {
					v.apply(Message{SchemaVersion: 1, Type: TypePresence, From: id, Time: t0}, t0)
				}
			}
			agg := newAggregator()
			locals := make([]int64, 2)
			admitted := int64(0)
			lag := int(max(limit/20, 1)) // requests between two reports
			for i := range 3 * int(limit) {
				g := 0
				if rng.Float64() >= skew {
					g = 1
				}
				admitted += int64(admitN(views[g], &locals[g], "k", limit, 1, t0))
				if i%lag == 0 {
					for j, v := range views {
						for _, c := range v.changed(ids[j], t0, false) {
							agg.add(c, t0)
						}
					}
					for _, d := range agg.decisions("tm", t0, false) {
						for _, v := range views {
							v.apply(d, t0)
						}
					}
				}
			}
			if admitted > limit || admitted < limit-1 {
				t.Errorf("limit %d, %.0f%% on gw-a: admitted %d, want %d (or one less)", limit, skew*100, admitted, limit)
			}
		}
	}
}

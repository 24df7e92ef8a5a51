package trafficmgr

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 20, 0, time.UTC)

func count(gw, key string, n, limit int64) Count {
	return Count{
		SchemaVersion: SchemaVersion, Gateway: gw, Key: key,
		WindowStart: t0.Truncate(time.Minute), WindowEnd: t0.Truncate(time.Minute).Add(time.Minute),
		Count: n, Limit: limit,
	}
}

func TestAggregatorSumsCumulativeCountsOnce(t *testing.T) {
	a := newAggregator()
	end := t0.Truncate(time.Minute).Add(time.Minute)
	for _, c := range []Count{
		count("gw-a", "k", 30, 100),
		count("gw-b", "k", 20, 100),
		count("gw-a", "k", 30, 100), // duplicate
		count("gw-a", "k", 10, 100), // an older count, replayed after a rebalance
		count("gw-b", "k", 25, 100),
	} {
		if !a.add(c, t0) {
			t.Fatalf("add %+v refused", c)
		}
	}
	got := a.decisions("tm-1", t0, false)
	want := []Message{{
		SchemaVersion: 1, Type: TypeDecision, From: "tm-1", Time: t0, Key: "k", WindowEnd: end,
		Limit: 100, Count: 55, Counts: map[string]int64{"gw-a": 30, "gw-b": 25},
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("decisions (-want +got):\n%s", diff)
	}
	if got := a.decisions("tm-1", t0, false); len(got) != 0 {
		t.Errorf("nothing changed, yet decisions %v", got)
	}

	a.add(count("gw-b", "k", 70, 100), t0)
	got = a.decisions("tm-1", t0, false)
	if len(got) != 1 || got[0].Count != 100 || !got[0].ThrottledUntil.Equal(end) {
		t.Fatalf("at the limit: decisions %+v, want throttled until %s with count 100", got, end)
	}
}

func TestAggregatorNeverDecidesFromStaleWindows(t *testing.T) {
	a := newAggregator()
	old := count("gw-a", "old", 500, 100)
	old.WindowStart, old.WindowEnd = old.WindowStart.Add(-time.Minute), old.WindowStart
	if a.add(old, t0) {
		t.Fatal("a count of an ended window was taken")
	}
	a.add(count("gw-a", "k", 100, 100), t0)
	if got := a.decisions("tm", t0, true); len(got) != 1 || got[0].ThrottledUntil.IsZero() {
		t.Fatalf("decisions %+v, want k throttled", got)
	}
	// The window ends: the key, and its throttling, are gone.
	later := t0.Truncate(time.Minute).Add(time.Minute)
	if got := a.decisions("tm", later, true); len(got) != 0 {
		t.Fatalf("after the window: decisions %+v, want none", got)
	}
	if a.len() != 0 {
		t.Errorf("%d keys held after the window", a.len())
	}
}

package gwstate

import (
	"fmt"
	"testing"
	"time"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/model"
)

// clockStore is a store whose clock the test moves.
func clockStore(now *time.Time) *Store {
	s := NewStore()
	s.now = func() time.Time { return *now }
	return s
}

func revocation(t testing.TB, jti string, gen int64, exp time.Time) events.Event {
	t.Helper()
	return event(t, events.KindRevocation, events.OpUpsert, jti, gen, model.Revocation{JTI: jti, ExpiresAt: exp})
}

func TestRevocations(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	s := clockStore(&now)
	if s.Load().Revoked("j1") {
		t.Fatal("empty index holds a revocation")
	}
	if err := s.Apply(revocation(t, "j1", 10, now.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	// Duplicates, an older generation and a delete change nothing.
	for _, ev := range []events.Event{
		revocation(t, "j1", 10, now.Add(time.Hour)),
		revocation(t, "j1", 3, now.Add(time.Hour)),
		{SchemaVersion: events.SchemaVersion, Kind: events.KindRevocation, Op: events.OpDelete, ID: "j1", Generation: 11},
	} {
		if err := s.Apply(ev); err != nil {
			t.Fatal(err)
		}
	}
	x := s.Load()
	if !x.Revoked("j1") || x.Revoked("j2") || x.Revoked("") {
		t.Fatalf("Revoked j1=%v j2=%v", x.Revoked("j1"), x.Revoked("j2"))
	}
	if n := x.Counts()[events.KindRevocation]; n != 1 {
		t.Errorf("count = %d, want 1", n)
	}
	// A revocation of a token already past its expiry and the grace is
	// not kept: the token is refused for its expiry.
	if err := s.Apply(revocation(t, "old", 12, now.Add(-RevocationGrace-time.Second))); err != nil {
		t.Fatal(err)
	}
	if s.Load().Revoked("old") {
		t.Error("expired revocation kept")
	}
	// Within the grace after expiry it is still kept.
	if err := s.Apply(revocation(t, "recent", 13, now.Add(-time.Second))); err != nil {
		t.Fatal(err)
	}
	if !s.Load().Revoked("recent") {
		t.Error("revocation within the grace dropped")
	}
}

func TestRevocationErrors(t *testing.T) {
	s := NewStore()
	for name, ev := range map[string]events.Event{
		"no expiry": event(t, events.KindRevocation, events.OpUpsert, "j", 1, map[string]string{"jti": "j"}),
		"no jti":    event(t, events.KindRevocation, events.OpUpsert, "", 1, map[string]any{"expiresAt": time.Now().Add(time.Hour)}),
		"bad json":  {Kind: events.KindRevocation, Op: events.OpUpsert, ID: "j", Generation: 1, Data: []byte(`{`)},
	} {
		t.Run(name, func(t *testing.T) {
			if err := s.Apply(ev); err == nil {
				t.Error("Apply returned nil")
			}
		})
	}
}

// TestRevocationsArePruned checks the set stays bounded: once tokens
// expire (plus the grace), a sweep drops them, and the shard an event copies
// is pruned on the way.
func TestRevocationsArePruned(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	s := clockStore(&now)
	const n = 2000
	for i := range n {
		if err := s.Apply(revocation(t, fmt.Sprintf("j%d", i), int64(i+1), now.Add(10*time.Minute))); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.Load().Counts()[events.KindRevocation]; got != n {
		t.Fatalf("count = %d, want %d", got, n)
	}
	now = now.Add(10*time.Minute + RevocationGrace + time.Second)
	if err := s.Apply(revocation(t, "fresh", n+1, now.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	x := s.Load()
	if got := x.Counts()[events.KindRevocation]; got != 1 {
		t.Errorf("after expiry count = %d, want 1", got)
	}
	if !x.Revoked("fresh") || x.Revoked("j7") {
		t.Errorf("fresh=%v j7=%v", x.Revoked("fresh"), x.Revoked("j7"))
	}
}

// TestReplaceRevocations checks a full load brings the unexpired
// revocations, keeps those applied before it (a revocation is never undone)
// and drops expired ones.
func TestReplaceRevocations(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	s := clockStore(&now)
	if err := s.Apply(revocation(t, "applied", 1, now.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	s.Replace(&model.GatewayState{Environment: "Default", Revocations: []model.Revocation{
		{JTI: "loaded", ExpiresAt: now.Add(time.Hour)},
		{JTI: "expired", ExpiresAt: now.Add(-time.Hour)},
	}})
	x := s.Load()
	for jti, want := range map[string]bool{"applied": true, "loaded": true, "expired": false} {
		if got := x.Revoked(jti); got != want {
			t.Errorf("Revoked(%s) = %v, want %v", jti, got, want)
		}
	}
}

func TestRevokedDoesNotAllocate(t *testing.T) {
	s := NewStore()
	st := bigState(10, 10)
	for i := range 1000 {
		st.Revocations = append(st.Revocations, model.Revocation{JTI: fmt.Sprintf("j%d", i), ExpiresAt: time.Now().Add(time.Hour)})
	}
	s.Replace(st)
	x := s.Load()
	if allocs := testing.AllocsPerRun(100, func() { x.Revoked("j7"); x.Revoked("nope") }); allocs != 0 {
		t.Errorf("Revoked allocates %v times", allocs)
	}
}

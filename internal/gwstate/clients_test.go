package gwstate

import (
	"testing"
	"time"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/model"
)

func clientRevocationEvent(t testing.TB, client string, gen int64, before, exp time.Time) events.Event {
	t.Helper()
	return event(t, events.KindRevocation, events.OpUpsert, "client:"+client, gen,
		model.Revocation{ClientID: client, IssuedBefore: before, ExpiresAt: exp})
}

func TestClientRevocations(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	s := clockStore(&now)
	before := now.Add(2 * time.Second)
	iat := func(d time.Duration) int64 { return before.Add(d).Unix() }
	if s.Load().RevokedClient("ck", 0) {
		t.Fatal("empty index revokes a client")
	}
	if err := s.Apply(clientRevocationEvent(t, "ck", 10, before, before.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	x := s.Load()
	for name, c := range map[string]struct {
		client string
		iat    int64
		want   bool
	}{
		"issued before":       {"ck", iat(-time.Second), true},
		"no iat":              {"ck", 0, true},
		"issued at the time":  {"ck", iat(0), false},
		"issued after":        {"ck", iat(time.Minute), false},
		"another client":      {"other", iat(-time.Second), false},
		"no client (api key)": {"", iat(-time.Second), false},
	} {
		if got := x.RevokedClient(c.client, c.iat); got != c.want {
			t.Errorf("%s: RevokedClient = %v, want %v", name, got, c.want)
		}
	}
	// A jti revocation is not a client's, nor the reverse.
	if x.Revoked("client:ck") || x.Revoked("ck") {
		t.Error("a client revocation revokes a jti")
	}
	if n := x.Counts()[events.KindRevocation]; n != 1 {
		t.Errorf("count = %d, want 1", n)
	}

	// An earlier regeneration arriving late, a duplicate and a delete
	// change nothing; a later one moves the time on, whatever the
	// generations say.
	for _, ev := range []events.Event{
		clientRevocationEvent(t, "ck", 11, before.Add(-time.Minute), before.Add(30*time.Minute)),
		clientRevocationEvent(t, "ck", 10, before, before.Add(time.Hour)),
		{SchemaVersion: events.SchemaVersion, Kind: events.KindRevocation, Op: events.OpDelete, ID: "client:ck", Generation: 12},
	} {
		if err := s.Apply(ev); err != nil {
			t.Fatal(err)
		}
	}
	if s.Load() != x {
		t.Error("an event that changes nothing published a new index")
	}
	later := before.Add(time.Minute)
	if err := s.Apply(clientRevocationEvent(t, "ck", 5, later, later.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	if !s.Load().RevokedClient("ck", iat(30*time.Second)) || s.Load().RevokedClient("ck", later.Unix()) {
		t.Error("a second regeneration did not move the time on")
	}

	// A full load keeps what the index held and adds what it brings;
	// expired entries go.
	s.Replace(&model.GatewayState{Revocations: []model.Revocation{
		{ClientID: "loaded", IssuedBefore: before, ExpiresAt: before.Add(time.Hour)},
		{ClientID: "expired", IssuedBefore: before, ExpiresAt: now.Add(-RevocationGrace - time.Second)},
		{JTI: "j1", ExpiresAt: now.Add(time.Hour)},
	}})
	x = s.Load()
	if !x.RevokedClient("ck", iat(30*time.Second)) || !x.RevokedClient("loaded", iat(-time.Second)) ||
		x.RevokedClient("expired", iat(-time.Second)) || !x.Revoked("j1") {
		t.Errorf("after Replace: ck %v loaded %v expired %v j1 %v", x.RevokedClient("ck", iat(30*time.Second)),
			x.RevokedClient("loaded", iat(-time.Second)), x.RevokedClient("expired", iat(-time.Second)), x.Revoked("j1"))
	}

	// Once every token it revokes has expired (and the grace passed), an
	// entry is pruned when its shard is next copied, and a revocation of
	// that age is not taken at all.
	now = later.Add(time.Hour + RevocationGrace + time.Second)
	if err := s.Apply(clientRevocationEvent(t, "old", 20, before, before.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	if s.Load().RevokedClient("old", 0) {
		t.Error("an expired client revocation was kept")
	}
}

func TestClientRevocationErrors(t *testing.T) {
	s := NewStore()
	for name, r := range map[string]model.Revocation{
		"no issuedBefore": {ClientID: "ck", ExpiresAt: time.Now().Add(time.Hour)},
		"no expiresAt":    {ClientID: "ck", IssuedBefore: time.Now()},
	} {
		if err := s.Apply(event(t, events.KindRevocation, events.OpUpsert, "client:ck", 1, r)); err == nil {
			t.Errorf("%s: Apply returned nil", name)
		}
	}
}

func TestRevokedClientDoesNotAllocate(t *testing.T) {
	s := NewStore()
	now := time.Now()
	if err := s.Apply(clientRevocationEvent(t, "ck", 1, now, now.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	x := s.Load()
	if n := testing.AllocsPerRun(100, func() { _ = x.RevokedClient("ck", now.Unix()) }); n != 0 {
		t.Errorf("RevokedClient allocates %v times", n)
	}
}

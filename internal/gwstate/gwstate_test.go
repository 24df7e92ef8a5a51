package gwstate

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/model"
)

func event(t testing.TB, kind events.Kind, op events.Op, id string, gen int64, v any) events.Event {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return events.Event{SchemaVersion: events.SchemaVersion, Kind: kind, Op: op, ID: id, Generation: gen, Data: data}
}

func sub(id, app, api, status string, gen int64) model.Subscription {
	return model.Subscription{ID: id, ApplicationID: app, APIID: api, ThrottlingPolicy: "Gold", Status: status, Generation: gen}
}

func TestApplyOrdering(t *testing.T) {
	type step struct {
		kind events.Kind
		op   events.Op
		id   string
		gen  int64
		data any
	}
	type want struct {
		status string // "" means absent
	}
	tests := map[string]struct {
		steps []step
		want  want
	}{
		"upsert then newer upsert": {
			steps: []step{
				{events.KindSubscription, events.OpUpsert, "s1", 5, sub("s1", "a1", "api1", model.SubUnblocked, 5)},
				{events.KindSubscription, events.OpUpsert, "s1", 6, sub("s1", "a1", "api1", model.SubBlocked, 6)},
			},
			want: want{model.SubBlocked},
		},
		"older upsert after newer is dropped": {
			steps: []step{
				{events.KindSubscription, events.OpUpsert, "s1", 6, sub("s1", "a1", "api1", model.SubBlocked, 6)},
				{events.KindSubscription, events.OpUpsert, "s1", 5, sub("s1", "a1", "api1", model.SubUnblocked, 5)},
			},
			want: want{model.SubBlocked},
		},
		"same generation is dropped": {
			steps: []step{
				{events.KindSubscription, events.OpUpsert, "s1", 6, sub("s1", "a1", "api1", model.SubBlocked, 6)},
				{events.KindSubscription, events.OpUpsert, "s1", 6, sub("s1", "a1", "api1", model.SubUnblocked, 6)},
			},
			want: want{model.SubBlocked},
		},
		"delete removes": {
			steps: []step{
				{events.KindSubscription, events.OpUpsert, "s1", 5, sub("s1", "a1", "api1", model.SubUnblocked, 5)},
				{events.KindSubscription, events.OpDelete, "s1", 7, map[string]string{"id": "s1"}},
			},
		},
		"tombstone stops replayed upsert": {
			steps: []step{
				{events.KindSubscription, events.OpUpsert, "s1", 5, sub("s1", "a1", "api1", model.SubUnblocked, 5)},
				{events.KindSubscription, events.OpDelete, "s1", 7, map[string]string{"id": "s1"}},
				{events.KindSubscription, events.OpUpsert, "s1", 6, sub("s1", "a1", "api1", model.SubUnblocked, 6)},
				{events.KindSubscription, events.OpUpsert, "s1", 5, sub("s1", "a1", "api1", model.SubUnblocked, 5)},
			},
		},
		"delete before its upsert arrives": {
			steps: []step{
				{events.KindSubscription, events.OpDelete, "s1", 7, sub("s1", "a1", "api1", "", 7)},
				{events.KindSubscription, events.OpUpsert, "s1", 5, sub("s1", "a1", "api1", model.SubUnblocked, 5)},
			},
		},
		"re-create after delete with newer generation": {
			steps: []step{
				{events.KindSubscription, events.OpUpsert, "s1", 5, sub("s1", "a1", "api1", model.SubUnblocked, 5)},
				{events.KindSubscription, events.OpDelete, "s1", 7, map[string]string{"id": "s1"}},
				{events.KindSubscription, events.OpUpsert, "s1", 8, sub("s1", "a1", "api1", model.SubOnHold, 8)},
			},
			want: want{model.SubOnHold},
		},
		"stale delete of an old id keeps the new subscription in the slot": {
			steps: []step{
				{events.KindSubscription, events.OpUpsert, "s1", 5, sub("s1", "a1", "api1", model.SubUnblocked, 5)},
				{events.KindSubscription, events.OpUpsert, "s2", 9, sub("s2", "a1", "api1", model.SubBlocked, 9)},
				{events.KindSubscription, events.OpDelete, "s1", 8, sub("s1", "a1", "api1", "", 8)},
			},
			want: want{model.SubBlocked},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := NewStore()
			for _, st := range tc.steps {
				if err := s.Apply(event(t, st.kind, st.op, st.id, st.gen, st.data)); err != nil {
					t.Fatal(err)
				}
			}
			got := ""
			if x, ok := s.Load().Subscription("a1", "api1"); ok {
				got = x.Status
			}
			if got != tc.want.status {
				t.Errorf("subscription status = %q, want %q", got, tc.want.status)
			}
		})
	}
}

func TestApplyKinds(t *testing.T) {
	s := NewStore()
	s.Replace(&model.GatewayState{Environment: "Default"})
	before := s.Load()
	evs := []events.Event{
		event(t, events.KindApplication, events.OpUpsert, "a1", 1, model.Application{ID: "a1", Name: "app"}),
		event(t, events.KindKeyMapping, events.OpUpsert, "k1", 2, model.KeyMapping{ID: "k1", ApplicationID: "a1", KeyType: model.KeyTypeSandbox, ConsumerKey: "ck"}),
		event(t, events.KindPolicy, events.OpUpsert, "subscription/Gold", 3, model.Policy{Level: model.LevelSubscription, Name: "Gold", RequestCount: 10, UnitTime: 1, TimeUnit: "min"}),
		event(t, events.KindDeployment, events.OpUpsert, "api1", 4, model.Deployment{APIID: "api1", Environment: "Default"}),
		event(t, events.KindDeployment, events.OpUpsert, "api2", 5, model.Deployment{APIID: "api2", Environment: "Other"}),
		event(t, events.KindAPI, events.OpUpsert, "api1", 6, model.API{ID: "api1"}),
	}
	for _, ev := range evs {
		if err := s.Apply(ev); err != nil {
			t.Fatal(err)
		}
	}
	x := s.Load()
	if _, ok := before.Application("a1"); ok {
		t.Error("an earlier index changed: copy-on-write broken")
	}
	if a, ok := x.Application("a1"); !ok || a.Name != "app" {
		t.Errorf("application = %v, %v", a, ok)
	}
	if k, ok := x.KeyMapping("ck"); !ok || k.KeyType != model.KeyTypeSandbox {
		t.Errorf("key mapping = %v, %v", k, ok)
	}
	if p, ok := x.Policy(model.LevelSubscription, "Gold"); !ok || p.RequestCount != 10 {
		t.Errorf("policy = %v, %v", p, ok)
	}
	if _, ok := x.Deployment("api1"); !ok {
		t.Error("deployment api1 missing")
	}
	if _, ok := x.Deployment("api2"); ok {
		t.Error("deployment of another environment applied")
	}

	// Key mapping moves to a new consumer key: the old one stops resolving.
	if err := s.Apply(event(t, events.KindKeyMapping, events.OpUpsert, "k1", 7, model.KeyMapping{ID: "k1", ApplicationID: "a1", KeyType: model.KeyTypeSandbox, ConsumerKey: "ck2"})); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Load().KeyMapping("ck"); ok {
		t.Error("old consumer key still resolves")
	}
	// Delete with only the id.
	if err := s.Apply(events.Event{Kind: events.KindKeyMapping, Op: events.OpDelete, ID: "k1", Generation: 8}); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Load().KeyMapping("ck2"); ok {
		t.Error("deleted key mapping still resolves")
	}
	// Policy delete by "level/name" id.
	if err := s.Apply(events.Event{Kind: events.KindPolicy, Op: events.OpDelete, ID: "subscription/Gold", Generation: 9}); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Load().Policy(model.LevelSubscription, "Gold"); ok {
		t.Error("deleted policy still there")
	}
	got := s.Load().Counts()
	want := map[events.Kind]int{events.KindDeployment: 1, events.KindApplication: 1, events.KindKeyMapping: 0, events.KindSubscription: 0, events.KindPolicy: 0, events.KindDenyPolicy: 0, events.KindRevocation: 0, events.KindKeyManager: 0}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("counts (-want +got):\n%s", d)
	}
}

func TestApplyErrors(t *testing.T) {
	s := NewStore()
	tests := map[string]events.Event{
		"unknown kind":             {Kind: "widget", Op: events.OpUpsert, ID: "w", Generation: 1, Data: []byte(`{}`)},
		"unknown op":               {Kind: events.KindApplication, Op: "merge", ID: "a", Generation: 1, Data: []byte(`{}`)},
		"bad json":                 {Kind: events.KindApplication, Op: events.OpUpsert, ID: "a", Generation: 1, Data: []byte(`{`)},
		"upsert without data":      {Kind: events.KindApplication, Op: events.OpUpsert, ID: "a", Generation: 1},
		"subscription without api": event(t, events.KindSubscription, events.OpUpsert, "s", 1, model.Subscription{ID: "s", ApplicationID: "a"}),
	}
	for name, ev := range tests {
		t.Run(name, func(t *testing.T) {
			if err := s.Apply(ev); err == nil {
				t.Error("Apply returned nil")
			}
		})
	}
	if err := s.Apply(tests["unknown kind"]); !errors.Is(err, ErrUnknownKind) {
		t.Errorf("err = %v, want ErrUnknownKind", err)
	}
	// A failed event does not poison its entity's generation.
	if err := s.Apply(event(t, events.KindSubscription, events.OpUpsert, "s", 1, sub("s", "a", "api", model.SubUnblocked, 1))); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Load().Subscription("a", "api"); !ok {
		t.Error("subscription missing")
	}
}

func TestReplaceKeepsTombstones(t *testing.T) {
	s := NewStore()
	if err := s.Apply(event(t, events.KindSubscription, events.OpUpsert, "s1", 5, sub("s1", "a1", "api1", model.SubUnblocked, 5))); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(event(t, events.KindSubscription, events.OpDelete, "s1", 7, map[string]string{"id": "s1"})); err != nil {
		t.Fatal(err)
	}
	s.Replace(&model.GatewayState{
		Environment:   "Default",
		Subscriptions: []model.Subscription{sub("s2", "a2", "api1", model.SubUnblocked, 10)},
	})
	// Replayed events older than what the load and the tombstone hold.
	for _, ev := range []events.Event{
		event(t, events.KindSubscription, events.OpUpsert, "s1", 6, sub("s1", "a1", "api1", model.SubUnblocked, 6)),
		event(t, events.KindSubscription, events.OpUpsert, "s2", 9, sub("s2", "a2", "api1", model.SubBlocked, 9)),
	} {
		if err := s.Apply(ev); err != nil {
			t.Fatal(err)
		}
	}
	x := s.Load()
	if _, ok := x.Subscription("a1", "api1"); ok {
		t.Error("deleted subscription came back")
	}
	if got, ok := x.Subscription("a2", "api1"); !ok || got.Status != model.SubUnblocked {
		t.Errorf("s2 = %v, %v; want the loaded UNBLOCKED one", got, ok)
	}
	if x.Environment() != "Default" {
		t.Errorf("environment = %q", x.Environment())
	}
}

func TestLookupsDoNotAllocate(t *testing.T) {
	s := NewStore()
	s.Replace(bigState(100, 1000))
	x := s.Load()
	allocs := testing.AllocsPerRun(100, func() {
		x.KeyMapping("ck-7")
		x.Application("app-7")
		x.Subscription("app-7", "api-7")
		x.Policy(model.LevelSubscription, "Gold")
	})
	if allocs != 0 {
		t.Errorf("lookups allocate %v times", allocs)
	}
}

func bigState(apps, subs int) *model.GatewayState {
	st := &model.GatewayState{Environment: "Default"}
	for i := range apps {
		id := fmt.Sprintf("app-%d", i)
		st.Applications = append(st.Applications, model.Application{ID: id, Name: id, Generation: 1})
		st.KeyMappings = append(st.KeyMappings, model.KeyMapping{ID: fmt.Sprintf("km-%d", i), ApplicationID: id, KeyType: model.KeyTypeProduction, ConsumerKey: fmt.Sprintf("ck-%d", i), Generation: 1})
	}
	for i := range subs {
		st.Subscriptions = append(st.Subscriptions, sub(fmt.Sprintf("sub-%d", i), fmt.Sprintf("app-%d", i%apps), fmt.Sprintf("api-%d", i/apps), model.SubUnblocked, 1))
	}
	st.Policies = []model.Policy{{Level: model.LevelSubscription, Name: "Gold", RequestCount: 5000, UnitTime: 1, TimeUnit: "min", Generation: 1}}
	return st
}

func BenchmarkGwstateApply(b *testing.B) {
	s := NewStore()
	s.Replace(bigState(10_000, 100_000))
	const n = 1024
	evs := make([]events.Event, n)
	for i := range evs {
		j := i * 97 % 100_000
		evs[i] = event(b, events.KindSubscription, events.OpUpsert, fmt.Sprintf("sub-%d", j), 0,
			sub(fmt.Sprintf("sub-%d", j), fmt.Sprintf("app-%d", j%10_000), fmt.Sprintf("api-%d", j/10_000), model.SubBlocked, 0))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		ev := evs[i%n]
		ev.Generation = int64(i + 2)
		if err := s.Apply(ev); err != nil {
			b.Fatal(err)
		}
	}
}

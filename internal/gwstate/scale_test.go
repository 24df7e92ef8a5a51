package gwstate

import (
	"encoding/json"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/model"
)

// Scale of the gateway-index benchmarks: issue 4's 10,000 applications,
// 100,000 subscriptions and 1,000 APIs.
const (
	scaleApps = 10_000
	scaleSubs = 100_000
	scaleAPIs = 1_000
)

// uuid is a UUID-shaped id, as the control plane hands out, unique per
// (kind, i).
func uuid(kind, i int) string {
	return fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", i*2654435761%(1<<32), kind, i%4096, (i/4096)%4096, i)
}

// scaleState is the full state of one gateway environment at issue 4's
// scale, with realistic ids and sizes: UUID ids, two key mappings
// (production, sandbox) per application, each application subscribed to ten
// of the APIs, and every API deployed with five operations.
func scaleState() *model.GatewayState {
	st := &model.GatewayState{Environment: model.DefaultEnvironment}
	deployed := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for i := range scaleAPIs {
		id := uuid(1, i)
		ops := make([]model.Operation, 0, 5)
		for _, o := range []struct{ verb, target string }{
			{"GET", "/items"}, {"POST", "/items"}, {"GET", "/items/{itemId}"}, {"PUT", "/items/{itemId}"}, {"DELETE", "/items/{itemId}"},
		} {
			ops = append(ops, model.Operation{Target: o.target, Verb: o.verb, AuthType: "Application & Application User", ThrottlingPolicy: "Unlimited"})
		}
		st.Deployments = append(st.Deployments, model.Deployment{
			APIID: id, RevisionID: uuid(2, i), Environment: model.DefaultEnvironment, VHost: "localhost", DeployedAt: deployed,
			API: model.API{
				ID: id, Name: fmt.Sprintf("Inventory%d", i), Context: fmt.Sprintf("/inventory%d", i), Version: "1.0.0",
				Provider: "admin", Status: "PUBLISHED",
				Production: &model.Endpoint{URL: fmt.Sprintf("http://backend-%d.internal:8080/v1", i)},
				Operations: ops, Policies: []string{"Gold", "Unlimited"}, Generation: 3,
			},
		})
	}
	for i := range scaleApps {
		id := uuid(3, i)
		st.Applications = append(st.Applications, model.Application{
			ID: id, Name: fmt.Sprintf("App%d", i), Owner: fmt.Sprintf("user%d", i%2000),
			ThrottlingPolicy: "Unlimited", TokenType: "JWT", Status: "APPROVED", Generation: 1,
		})
		for k, typ := range []string{model.KeyTypeProduction, model.KeyTypeSandbox} {
			st.KeyMappings = append(st.KeyMappings, model.KeyMapping{
				ID: uuid(4+k, i), ApplicationID: id, KeyType: typ,
				ConsumerKey: fmt.Sprintf("ck%026d%d", i, k), KeyManager: "Resident Key Manager", Generation: 1,
			})
		}
	}
	for i := range scaleSubs {
		app, k := i%scaleApps, i/scaleApps // k in 0..9: ten distinct APIs per application
		st.Subscriptions = append(st.Subscriptions, model.Subscription{
			ID: uuid(6, i), ApplicationID: uuid(3, app), APIID: uuid(1, (app+k*100)%scaleAPIs),
			ThrottlingPolicy: "Gold", Status: model.SubUnblocked, Generation: 1,
		})
	}
	for _, p := range []model.Policy{
		{Level: model.LevelSubscription, Name: "Gold", RequestCount: 5000, UnitTime: 1, TimeUnit: "min", StopOnQuotaReach: true},
		{Level: model.LevelSubscription, Name: "Silver", RequestCount: 2000, UnitTime: 1, TimeUnit: "min", StopOnQuotaReach: true},
		{Level: model.LevelSubscription, Name: "Unlimited", UnitTime: 1, TimeUnit: "min"},
		{Level: model.LevelApplication, Name: "Unlimited", UnitTime: 1, TimeUnit: "min"},
		{Level: model.LevelAPI, Name: "Unlimited", UnitTime: 1, TimeUnit: "min"},
	} {
		p.Generation = 1
		st.Policies = append(st.Policies, p)
	}
	return st
}

// heapInUse is the heap in use after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestScaleState checks that the benchmarks' state is what they say: every
// entity is indexed and reachable.
func TestScaleState(t *testing.T) {
	s := NewStore()
	s.Replace(scaleState())
	c := s.Load().Counts()
	if c[events.KindDeployment] != scaleAPIs || c[events.KindApplication] != scaleApps ||
		c[events.KindKeyMapping] != 2*scaleApps || c[events.KindSubscription] != scaleSubs {
		t.Fatalf("counts = %v", c)
	}
	if _, ok := s.Load().Subscription(uuid(3, 42), uuid(1, (42+900)%scaleAPIs)); !ok {
		t.Error("subscription of app 42 to its tenth API not found")
	}
}

// BenchmarkGwstateReplace is a full rebuild of the gateway index from the
// state of 10,000 applications, 20,000 key mappings, 100,000 subscriptions
// and 1,000 deployed APIs (Store.Replace, as the sidecar does after loading
// the state from the control plane). It reports the heap the index keeps
// after a collection once its input is dropped (heap-MB; the strings it
// shares with its input are counted, since the input is gone), and the heap
// of the decoded input state alone as the baseline (state-MB).
func BenchmarkGwstateReplace(b *testing.B) {
	base := heapInUse()
	st := scaleState()
	stateMB := float64(heapInUse()-base) / (1 << 20)
	s := NewStore()
	s.Replace(st)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		s.Replace(st)
	}
	b.StopTimer()
	st = nil //nolint:ineffassign,wastedassign // drop the input before measuring
	heap := heapInUse()
	runtime.KeepAlive(s)
	b.ReportMetric(float64(heap-base)/(1<<20), "heap-MB")
	b.ReportMetric(stateMB, "state-MB")
}

// BenchmarkGwstateLoad is the gateway's whole load of the same state: JSON
// decode of the control plane's answer, then Replace into a new store.
func BenchmarkGwstateLoad(b *testing.B) {
	data, err := json.Marshal(scaleState())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		var st model.GatewayState
		if err := json.Unmarshal(data, &st); err != nil {
			b.Fatal(err)
		}
		NewStore().Replace(&st)
	}
	b.ReportMetric(float64(len(data))/(1<<20), "json-MB")
}

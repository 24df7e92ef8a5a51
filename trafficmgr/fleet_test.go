package trafficmgr

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/gwstate"
	"github.com/apim-dev/apim/internal/kafkatest"
	"github.com/apim-dev/apim/internal/model"
	"github.com/apim-dev/apim/ratelimit"
)

// fleetWindow is the policies' window in the fleet tests: 10s rather than a
// minute, with the request counts of 100/min and 10,000/min, to keep the
// test short. What matters to accuracy is the traffic managers' lag against
// the rate, and the rate here is six times that of a minute window.
const fleetWindow = 10 * time.Second

func TestFleetEmbeddedKafka(t *testing.T) {
	t.Parallel()
	emb, err := events.StartEmbedded(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	fleetAccuracy(t, emb.Brokers(), 4)
}

func TestFleetApacheKafka(t *testing.T) {
	t.Parallel()
	fleetAccuracy(t, kafkatest.StartApache(t), 3)
}

type fleetLimit struct {
	name  string
	limit int64
}

// windowStats are one limit's numbers in one window.
type windowStats struct {
	offered, admitted int64
	beforeFirst429    int64 // admitted when the first request was refused; -1 if none was
}

// fleetAccuracy runs two gateways (ratelimit.Server with an Agent each) and
// two traffic managers on brokers, offers each limit twice its count per
// window, 60% on one gateway and 40% on the other, and checks the admitted
// requests per window. The second traffic manager stops two seconds into
// the second window and starts again at the start of the last one. Then it
// checks the metrics of the run, stops the traffic managers and checks that
// the gateways say so and admit their share of a limit only.
func fleetAccuracy(t *testing.T, brokers []string, windows int) {
	ctx := t.Context()
	if err := events.EnsureTopics(ctx, brokers, 4, TopicCounts, TopicDecisions); err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	limits := []fleetLimit{{"Hundred", 100}, {"TenThousand", 10_000}}
	st := gwstate.NewStore()
	var pols []model.Policy
	for _, l := range limits {
		pols = append(pols, model.Policy{
			Level: model.LevelSubscription, Name: l.name, RequestCount: l.limit,
			UnitTime: int64(fleetWindow / time.Second), TimeUnit: "sec", StopOnQuotaReach: true, Generation: 1,
		})
	}
	st.Replace(&model.GatewayState{Environment: model.DefaultEnvironment, Policies: pols})

	// Every manager started, with its stop, in order: tm-1, tm-2, tm-2
	// again; each with a registry of its own.
	var managers []*Manager
	var stops []func()
	startManager := func(id string) (stop func()) {
		m, err := NewManager(ManagerConfig{Brokers: brokers, ID: id, Logger: log.With().Str("tm", id).Logger(), Registry: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- m.Start(ctx) }()
		stop = func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("traffic manager %s: %v", id, err)
			}
		}
		t.Cleanup(func() {
			if ctx.Err() == nil {
				stop()
			}
		})
		managers, stops = append(managers, m), append(stops, stop)
		return stop
	}
	startManager("tm-1")
	stopTM2 := startManager("tm-2")

	var lagMu sync.Mutex
	var lags []time.Duration
	var clock atomic.Pointer[time.Time]
	now := func() time.Time { return *clock.Load() }
	clock.Store(new(time.Now()))
	var servers []*ratelimit.Server
	var agents []*Agent
	var agentRegs []*prometheus.Registry
	var wg sync.WaitGroup
	agentCtx, stopAgents := context.WithCancel(ctx)
	t.Cleanup(func() { stopAgents(); wg.Wait() })
	for _, id := range []string{"gw-a", "gw-b"} {
		reg := prometheus.NewRegistry()
		agentRegs = append(agentRegs, reg)
		a, err := NewAgent(AgentConfig{
			Brokers: brokers, GatewayID: id, Logger: log.With().Str("gateway", id).Logger(), Registry: reg,
			OnThrottle: func(_ string, published, applied time.Time) {
				lagMu.Lock()
				lags = append(lags, applied.Sub(published))
				lagMu.Unlock()
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			if err := a.Start(agentCtx); err != nil {
				t.Errorf("agent %s: %v", id, err)
			}
		})
		s, err := ratelimit.New(ratelimit.Config{State: st, Logger: log, Now: now, Fleet: a})
		if err != nil {
			t.Fatal(err)
		}
		servers, agents = append(servers, s), append(agents, a)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !agents[0].Connected() || !agents[1].Connected() || agents[0].FleetSize() != 2 || agents[1].FleetSize() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("agents not connected with a fleet of 2: %v/%d %v/%d", agents[0].Connected(), agents[0].FleetSize(), agents[1].Connected(), agents[1].FleetSize())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i, a := range agents {
		if c, n := testutil.ToFloat64(a.view.met.connected), testutil.ToFloat64(a.view.met.fleetSize); c != 1 || n != 2 {
			t.Errorf("agent %d: apim_throttle_agent_connected %v, fleet_size %v; want 1, 2", i, c, n)
		}
	}

	// Start at the next window boundary.
	first := time.Now().Truncate(fleetWindow).Add(fleetWindow)
	time.Sleep(time.Until(first))
	stats := make([][]windowStats, len(limits))
	for i := range stats {
		stats[i] = make([]windowStats, windows)
		for w := range stats[i] {
			stats[i][w].beforeFirst429 = -1
		}
	}
	sent := make([]int64, len(limits))
	keysHeld := 0.0 // by the traffic managers when tm-2 stopped
	tm2Stopped, tm2Restarted := false, false
	end := first.Add(time.Duration(windows) * fleetWindow)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for n := time.Now(); n.Before(end); n = <-tick.C {
		n = time.Now()
		w := int(n.Sub(first) / fleetWindow)
		if w >= windows {
			break
		}
		into := n.Sub(first) - time.Duration(w)*fleetWindow
		if w == 1 && into >= 2*time.Second && !tm2Stopped {
			tm2Stopped = true
			keysHeld = testutil.ToFloat64(managers[0].met.keys) + testutil.ToFloat64(managers[1].met.keys)
			stopTM2()
			t.Logf("traffic manager tm-2 stopped at %s", n.Format("15:04:05.000"))
		}
		if w == windows-1 && windows > 2 && !tm2Restarted {
			tm2Restarted = true
			startManager("tm-2")
			t.Logf("traffic manager tm-2 started again at %s", n.Format("15:04:05.000"))
		}
		clock.Store(&n)
		for i, l := range limits {
			// Twice the limit per window, evenly.
			due := int64(float64(2*l.limit) * float64(n.Sub(first)) / float64(fleetWindow))
			for ; sent[i] < due; sent[i]++ {
				g := 0
				if sent[i]%5 >= 3 {
					g = 1 // 60% on gw-a, 40% on gw-b
				}
				ws := &stats[i][w]
				ws.offered++
				resp, err := servers[g].ShouldRateLimit(ctx, rlReq(fmt.Sprintf("sub-%s", l.name), l.name))
				if err != nil {
					t.Fatal(err)
				}
				if resp.GetOverallCode() == rlsv3.RateLimitResponse_OK {
					ws.admitted++
				} else if ws.beforeFirst429 < 0 {
					ws.beforeFirst429 = ws.admitted
				}
			}
		}
	}

	var refusedWant int64
	for i, l := range limits {
		for w, ws := range stats[i] {
			refusedWant += ws.offered - ws.admitted
			over := float64(ws.admitted-l.limit) / float64(l.limit) * 100
			t.Logf("limit %d per %s, window %d: offered %d, admitted %d (%+.2f%%), admitted before the first 429: %d",
				l.limit, fleetWindow, w, ws.offered, ws.admitted, over, ws.beforeFirst429)
			if float64(ws.admitted) > float64(l.limit)*1.05 {
				t.Errorf("limit %d, window %d: admitted %d > limit × 1.05", l.limit, w, ws.admitted)
			}
			// Nothing throttled early: the whole limit is admitted (within 5%)
			// in every window, the one after the restart included.
			if float64(ws.admitted) < float64(l.limit)*0.95 {
				t.Errorf("limit %d, window %d: admitted %d < limit × 0.95", l.limit, w, ws.admitted)
			}
		}
	}
	checkFleetMetrics(t, managers, agents, agentRegs, keysHeld, refusedWant, len(limits))

	// The traffic managers running now (tm-1 and, after its restart, tm-2)
	// share the partitions of the counts between them.
	running := []*Manager{managers[0], managers[len(managers)-1]}
	partitions := func(m *Manager) float64 { return testutil.ToFloat64(m.met.partitions) }
	for deadline := time.Now().Add(30 * time.Second); partitions(running[0])+partitions(running[1]) != 4 || partitions(running[0]) == 0 || partitions(running[1]) == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("apim_trafficmgr_assigned_partitions of tm-1, tm-2: %v, %v; want 4 partitions between them", partitions(running[0]), partitions(running[1]))
		}
		time.Sleep(100 * time.Millisecond)
	}
	stops[0]()
	stops[len(stops)-1]()
	for i, m := range running {
		if p := partitions(m); p != 0 {
			t.Errorf("traffic manager %d stopped: apim_trafficmgr_assigned_partitions %v, want 0", i, p)
		}
	}
	checkDisconnected(t, agents, servers, &clock)

	lagMu.Lock()
	defer lagMu.Unlock()
	if len(lags) == 0 {
		t.Fatal("no throttle decision reached a gateway")
	}
	slices.Sort(lags)
	p99 := lags[(len(lags)*99+99)/100-1] // nearest rank
	t.Logf("throttle decision published → applied at a gateway: %d samples, median %s, p99 %s, max %s",
		len(lags), lags[len(lags)/2], p99, lags[len(lags)-1])
	if p99 > time.Second {
		t.Errorf("decision → gateway p99 %s > 1s", p99)
	}
}

// checkFleetMetrics checks the metrics of a fleet run: the managers
// consumed counts and published decisions, the agents published counts and
// applied decisions, and the requests the gateways refused are those the
// agents count as refused.
func checkFleetMetrics(t *testing.T, managers []*Manager, agents []*Agent, agentRegs []*prometheus.Registry, keysHeld float64, refusedWant int64, keys int) {
	t.Helper()
	var consumed, invalid, stale, decisions, publishErrors float64
	for _, m := range managers {
		consumed += testutil.ToFloat64(m.met.consumedOK)
		invalid += testutil.ToFloat64(m.met.consumedInvalid)
		stale += testutil.ToFloat64(m.met.consumedStale)
		decisions += testutil.ToFloat64(m.met.decisions)
		publishErrors += testutil.ToFloat64(m.met.publishErrors)
	}
	t.Logf("traffic managers: counts consumed %v (invalid %v, stale %v), decisions published %v, publish errors %v, keys held when tm-2 stopped %v",
		consumed, invalid, stale, decisions, publishErrors, keysHeld)
	if consumed == 0 || decisions == 0 {
		t.Errorf("apim_trafficmgr_counts_consumed_total{result=ok} %v, decisions_published_total %v; want both > 0", consumed, decisions)
	}
	if invalid != 0 {
		t.Errorf("apim_trafficmgr_counts_consumed_total{result=invalid} %v, want 0", invalid)
	}
	if keysHeld < float64(keys) {
		t.Errorf("apim_trafficmgr_keys of tm-1 and tm-2 %v while both limits were in use, want >= %d", keysHeld, keys)
	}
	var refused float64
	for i, a := range agents {
		met := a.view.met
		batches, counts, applied := testutil.ToFloat64(met.batches), testutil.ToFloat64(met.counts), testutil.ToFloat64(met.applied)
		byDecision, byShare := testutil.ToFloat64(met.refusedDecision), testutil.ToFloat64(met.refusedShare)
		refused += byDecision + byShare
		t.Logf("agent %d: batches %v, counts %v published (errors %v), decisions applied %v, refused by decision %v, by share %v, admitted disconnected %v",
			i, batches, counts, testutil.ToFloat64(met.publishErrors), applied, byDecision, byShare, testutil.ToFloat64(met.admittedDisconnected))
		if batches == 0 || counts < batches || applied == 0 {
			t.Errorf("agent %d: apim_throttle_agent_batches_published_total %v, counts_published_total %v, decisions_applied_total %v; want > 0, >= batches, > 0", i, batches, counts, applied)
		}
		if testutil.ToFloat64(met.invalid) != 0 {
			t.Errorf("agent %d: apim_throttle_agent_messages_invalid_total %v, want 0", i, testutil.ToFloat64(met.invalid))
		}
		// What an operator scrapes: every metric registered, once.
		names := []string{
			"apim_throttle_agent_batches_published_total", "apim_throttle_agent_counts_published_total",
			"apim_throttle_agent_publish_errors_total", "apim_throttle_agent_messages_invalid_total",
			"apim_throttle_agent_decisions_applied_total", "apim_throttle_agent_refused_total",
			"apim_throttle_agent_admitted_disconnected_total", "apim_throttle_agent_connected", "apim_throttle_agent_fleet_size",
		}
		if n, err := testutil.GatherAndCount(agentRegs[i], names...); err != nil || n != len(names)+1 { // refused_total has two series
			t.Errorf("agent %d: %d series of %d metrics gathered (%v), want %d", i, n, len(names), err, len(names)+1)
		}
	}
	if refused != float64(refusedWant) {
		t.Errorf("apim_throttle_agent_refused_total of the gateways %v, want %d (the requests answered OVER_LIMIT)", refused, refusedWant)
	}
	var byDecision float64
	for _, a := range agents {
		byDecision += testutil.ToFloat64(a.view.met.refusedDecision)
	}
	if byDecision == 0 {
		t.Error(`apim_throttle_agent_refused_total{reason="decision"} 0: no request was refused by a traffic manager's decision`)
	}
}

// checkDisconnected checks, once every traffic manager stopped, that the
// agents say they are disconnected and that a gateway admits its share of a
// fresh limit only, as counted by its metrics.
func checkDisconnected(t *testing.T, agents []*Agent, servers []*ratelimit.Server, clock *atomic.Pointer[time.Time]) {
	t.Helper()
	connected := func() float64 {
		return testutil.ToFloat64(agents[0].view.met.connected) + testutil.ToFloat64(agents[1].view.met.connected)
	}
	for deadline := time.Now().Add(30 * time.Second); connected() != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("traffic managers stopped: apim_throttle_agent_connected of the gateways sum to %v, want 0", connected())
		}
		time.Sleep(100 * time.Millisecond)
	}
	met := agents[0].view.met
	admitted0, refused0 := testutil.ToFloat64(met.admittedDisconnected), testutil.ToFloat64(met.refusedShare)
	clock.Store(new(time.Now()))
	admitted := 0
	for range 100 {
		resp, err := servers[0].ShouldRateLimit(t.Context(), rlReq("sub-disconnected", "Hundred"))
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetOverallCode() == rlsv3.RateLimitResponse_OK {
			admitted++
		}
	}
	// Two gateways in the fleet: gw-a's share of 100 is 50.
	gotAdmitted, gotRefused := testutil.ToFloat64(met.admittedDisconnected)-admitted0, testutil.ToFloat64(met.refusedShare)-refused0
	if admitted != 50 || gotAdmitted != 50 || gotRefused != 50 {
		t.Errorf("disconnected, 100 requests on a limit of 100: %d admitted, apim_throttle_agent_admitted_disconnected_total +%v, refused_total{reason=share} +%v; want 50 each", admitted, gotAdmitted, gotRefused)
	}
}

func rlReq(sub, tier string) *rlsv3.RateLimitRequest {
	return &rlsv3.RateLimitRequest{Domain: ratelimit.Domain, Descriptors: []*ratelimitv3.RateLimitDescriptor{{
		Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: ratelimit.KeySubscription, Value: sub}, {Key: ratelimit.KeyTier, Value: tier}},
	}}}
}

// Bandwidth quotas across a fleet, through a traffic manager on Kafka: two
// gateways that each sent less than the quota, but more together, both
// refuse once the decision reaches them.
func TestFleetBandwidth(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	emb, err := events.StartEmbedded(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	brokers := emb.Brokers()
	if err := events.EnsureTopics(ctx, brokers, 4, TopicCounts, TopicDecisions); err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	st := gwstate.NewStore()
	st.Replace(&model.GatewayState{Environment: model.DefaultEnvironment, Policies: []model.Policy{{
		Level: model.LevelSubscription, Name: "10KB", QuotaType: model.QuotaBandwidth, DataAmount: 10, DataUnit: "KB",
		UnitTime: 1, TimeUnit: "hour", StopOnQuotaReach: true, Generation: 1,
	}}})
	m, err := NewManager(ManagerConfig{Brokers: brokers, ID: "tm-1", Logger: log, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	runCtx, stop := context.WithCancel(ctx)
	t.Cleanup(func() { stop(); wg.Wait() })
	wg.Go(func() {
		if err := m.Start(runCtx); err != nil {
			t.Errorf("traffic manager: %v", err)
		}
	})
	var servers []*ratelimit.Server
	for _, id := range []string{"gw-a", "gw-b"} {
		a, err := NewAgent(AgentConfig{Brokers: brokers, GatewayID: id, Logger: log, Registry: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			if err := a.Start(runCtx); err != nil {
				t.Errorf("agent %s: %v", id, err)
			}
		})
		s, err := ratelimit.New(ratelimit.Config{State: st, Logger: log, Fleet: a})
		if err != nil {
			t.Fatal(err)
		}
		servers = append(servers, s)
	}
	check := rlReq("sub-1", "10KB")
	over := func(s *ratelimit.Server) bool {
		r, err := s.ShouldRateLimit(ctx, check)
		if err != nil {
			t.Fatal(err)
		}
		return r.GetOverallCode() == rlsv3.RateLimitResponse_OVER_LIMIT
	}
	sent := func(s *ratelimit.Server, n uint64) {
		if _, err := s.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: ratelimit.Domain, Descriptors: []*ratelimitv3.RateLimitDescriptor{{
			Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{
				Key:   ratelimit.KeyBandwidth,
				Value: strings.Join([]string{ratelimit.BandwidthSubscription, "sub-1", "", "10KB"}, ratelimit.CustomKeySep),
			}},
			HitsAddend: wrapperspb.UInt64(n),
		}}}); err != nil {
			t.Fatal(err)
		}
	}

	// 4,000 bytes on each: within either's own view and the fleet's.
	sent(servers[0], 4000)
	sent(servers[1], 4000)
	for i, s := range servers {
		if over(s) {
			t.Fatalf("gateway %d refused at 8,000 of 10,240 bytes", i)
		}
	}
	// 7,000 and 4,000: each alone is under the quota, together over it.
	// gw-b learns of gw-a's bytes from the traffic manager only, with no
	// request on gw-a to carry them.
	sent(servers[0], 3000)
	deadline := time.Now().Add(15 * time.Second)
	for !over(servers[1]) {
		if time.Now().After(deadline) {
			t.Fatal("11,000 of 10,240 bytes sent by the fleet, gw-b still admits")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for !over(servers[0]) { // the decision reaches each gateway in its own time
		if time.Now().After(deadline) {
			t.Fatal("11,000 of 10,240 bytes sent by the fleet, gw-a still admits")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

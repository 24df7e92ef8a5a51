package trafficmgr

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/rs/zerolog"

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
// the second window and starts again at the start of the last one.
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

	startManager := func(id string) (stop func()) {
		m, err := NewManager(ManagerConfig{Brokers: brokers, ID: id, Logger: log.With().Str("tm", id).Logger()})
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
	var wg sync.WaitGroup
	agentCtx, stopAgents := context.WithCancel(ctx)
	t.Cleanup(func() { stopAgents(); wg.Wait() })
	for _, id := range []string{"gw-a", "gw-b"} {
		a, err := NewAgent(AgentConfig{
			Brokers: brokers, GatewayID: id, Logger: log.With().Str("gateway", id).Logger(),
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

	for i, l := range limits {
		for w, ws := range stats[i] {
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

func rlReq(sub, tier string) *rlsv3.RateLimitRequest {
	return &rlsv3.RateLimitRequest{Domain: ratelimit.Domain, Descriptors: []*ratelimitv3.RateLimitDescriptor{{
		Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: ratelimit.KeySubscription, Value: sub}, {Key: ratelimit.KeyTier, Value: tier}},
	}}}
}

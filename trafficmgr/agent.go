package trafficmgr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/apim-dev/apim/internal/runner"
	"github.com/apim-dev/apim/ratelimit"
)

// AgentConfig configures a gateway's Agent.
type AgentConfig struct {
	Brokers []string
	// GatewayID names this gateway in the fleet. It must be unique per
	// process start: a restarted gateway has lost its counts, and its old
	// counts must stay in the window's sum under the old id.
	GatewayID string
	// FleetSize is the least number of gateways to assume (0: 1). The
	// fleet is learnt from the gateways' presence messages; set it when the
	// fleet is known, so that a gateway never assumes fewer.
	FleetSize int
	// FlushInterval is how often changed counts are published; 50ms if 0.
	FlushInterval time.Duration
	// RefreshInterval is how often every live count is published, changed
	// or not, and presence is announced; 1s if 0.
	RefreshInterval time.Duration
	// Silence is how long without a traffic manager's message before the
	// gateway falls back to its share of each limit; 3s if 0.
	Silence time.Duration
	Now     func() time.Time
	Logger  zerolog.Logger
	// OnThrottle, when set, is called when a key is first throttled by a
	// decision, with the decision's publishing time and the time applied.
	OnThrottle func(key string, published, applied time.Time)
	// Registry, when set, gets the metrics apim_throttle_agent_*: counts
	// published, publish errors, decisions applied, requests refused by
	// reason and admitted while disconnected, connected and fleet size.
	Registry *prometheus.Registry
}

// Agent is a gateway's part of fleet-wide throttling: the ratelimit.Fleet
// that publishes this gateway's counts to TopicCounts in small batches, reads
// TopicDecisions, and admits requests by its estimate of the fleet's count.
// Admit never waits on Kafka.
type Agent struct {
	cfg  AgentConfig
	view *view
}

var _ ratelimit.Fleet = (*Agent)(nil)

// NewAgent checks cfg and returns an agent; Start runs it. An agent that is
// not started (or cannot reach Kafka) admits each gateway's share of every
// limit: never more.
func NewAgent(cfg AgentConfig) (*Agent, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("throttle agent: no Kafka brokers")
	}
	if cfg.GatewayID == "" {
		return nil, errors.New("throttle agent: no gateway id")
	}
	if cfg.FleetSize < 0 {
		return nil, fmt.Errorf("throttle agent: fleet size %d", cfg.FleetSize)
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 50 * time.Millisecond
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = time.Second
	}
	if cfg.Silence <= 0 {
		cfg.Silence = 3 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &Agent{cfg: cfg, view: newView(cfg.GatewayID, cfg.FleetSize, cfg.Silence, 5*cfg.RefreshInterval, cfg.OnThrottle)}
	a.view.met.addGauges(a.Connected, a.FleetSize)
	if cfg.Registry != nil {
		if err := register(cfg.Registry, a.view.met.collectors); err != nil {
			return nil, fmt.Errorf("throttle agent: register metrics: %w", err)
		}
	}
	return a, nil
}

// Admit implements ratelimit.Fleet.
func (a *Agent) Admit(c ratelimit.FleetCount, now time.Time) bool {
	return a.view.admit(c.Key, c.Start, c.End, c.Limit, c.Count, now)
}

// Record implements ratelimit.Fleet.
func (a *Agent) Record(c ratelimit.FleetCount) {
	a.view.record(c.Key, c.Start, c.End, c.Limit, c.Count)
}

// FleetSize is the number of gateways this one currently assumes.
func (a *Agent) FleetSize() int { return a.view.size() }

// Connected reports whether a traffic manager was heard from within the
// silence threshold.
func (a *Agent) Connected() bool { return !a.view.silent(a.cfg.Now()) }

// Start publishes counts and presence and applies decisions until ctx is
// done; it returns nil then. Losing Kafka is logged and retried.
func (a *Agent) Start(ctx context.Context) error {
	log := a.cfg.Logger
	w := newWriter(a.cfg.Brokers, "apim-gateway-"+a.cfg.GatewayID, log)
	defer w.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	// Announce presence first, so the others count this gateway in before
	// it serves much; then read the decisions of the last few seconds,
	// which hold every live key's counts (the traffic managers republish
	// them each RefreshInterval) and the other gateways' presence.
	a.presence(ctx, w)
	since := a.cfg.Now().Add(-3 * a.cfg.RefreshInterval)
	wg.Go(runner.Safe(cancel, func() {
		for ctx.Err() == nil {
			ps, err := partitions(ctx, a.cfg.Brokers, TopicDecisions)
			if err != nil {
				log.Warn().Err(err).Msg("throttle decisions: no partitions yet")
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
				continue
			}
			var rg sync.WaitGroup
			for _, p := range ps {
				rg.Go(runner.Safe(cancel, func() {
					readBroadcast(ctx, a.cfg.Brokers, TopicDecisions, p, since, log, func(m kafka.Message) {
						msg, err := decodeMessage(m.Value)
						if err != nil {
							a.view.met.invalid.Inc()
							log.Warn().Err(err).Int64("offset", m.Offset).Msg("skipping throttle message")
							return
						}
						a.view.apply(msg, a.cfg.Now())
					})
				}))
			}
			rg.Wait()
			return
		}
	}))

	flush := time.NewTicker(a.cfg.FlushInterval)
	defer flush.Stop()
	refresh := time.NewTicker(a.cfg.RefreshInterval)
	defer refresh.Stop()
	all := false
	for {
		select {
		case <-ctx.Done():
			return runner.Cause(ctx)
		case <-refresh.C:
			all = true
			a.presence(ctx, w)
			a.view.refreshFleet(a.cfg.Now())
			continue
		case <-flush.C:
		}
		counts := a.view.changed(a.cfg.GatewayID, a.cfg.Now(), all)
		all = false
		if len(counts) == 0 {
			continue
		}
		msgs := make([]kafka.Message, 0, len(counts))
		for _, c := range counts {
			b, err := json.Marshal(c)
			if err != nil {
				// Not reachable with model.WindowStart's bounded windows;
				// one count that cannot be encoded must not stop the others.
				a.view.met.publishErrors.Inc()
				log.Error().Err(err).Str("key", c.Key).Msg("encode throttle count; skipped")
				continue
			}
			msgs = append(msgs, kafka.Message{Topic: TopicCounts, Key: []byte(c.Key), Value: b})
		}
		wctx, cancel := context.WithTimeout(ctx, writeTimeout)
		err := w.WriteMessages(wctx, msgs...)
		cancel()
		switch {
		case err == nil:
			a.view.met.batches.Inc()
			a.view.met.counts.Add(float64(len(msgs)))
		case ctx.Err() == nil:
			// Counts are cumulative: publishing all of them next time
			// makes up for the lost batch.
			all = true
			a.view.met.publishErrors.Inc()
			log.Warn().Err(err).Int("counts", len(msgs)).Msg("publish throttle counts")
		}
	}
}

func (a *Agent) presence(ctx context.Context, w *kafka.Writer) {
	b, err := json.Marshal(Message{SchemaVersion: SchemaVersion, Type: TypePresence, From: a.cfg.GatewayID, Time: a.cfg.Now()})
	if err != nil {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	if err := w.WriteMessages(wctx, kafka.Message{Topic: TopicDecisions, Key: []byte(a.cfg.GatewayID), Value: b}); err != nil && ctx.Err() == nil {
		a.view.met.publishErrors.Inc()
		a.cfg.Logger.Warn().Err(err).Msg("announce gateway presence")
	}
}

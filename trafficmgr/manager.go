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
)

// ManagerConfig configures a traffic manager.
type ManagerConfig struct {
	Brokers []string
	// ID names this replica in its messages.
	ID string
	// FlushInterval is how often decisions of changed keys are published;
	// 20ms if 0.
	FlushInterval time.Duration
	// RefreshInterval is how often the decisions of every live key are
	// republished, with a heartbeat, so that a gateway that starts or
	// missed some learns them; 1s if 0.
	RefreshInterval time.Duration
	Now             func() time.Time
	Logger          zerolog.Logger
	// Registry, when set, gets the metrics apim_trafficmgr_*: counts
	// consumed by result, decisions published, publish errors, keys held
	// and partitions assigned.
	Registry *prometheus.Registry
}

// Manager is one traffic-manager replica. The replicas share the consumer
// group GroupID on TopicCounts, so Kafka gives each partition, hence each
// throttle key, to exactly one of them: a key's counts are summed once, by
// one replica, whatever the number of replicas.
type Manager struct {
	cfg ManagerConfig
	met *managerMetrics

	mu  sync.Mutex
	agg *aggregator
}

// NewManager checks cfg and returns a manager; Start runs it.
func NewManager(cfg ManagerConfig) (*Manager, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("traffic manager: no Kafka brokers")
	}
	if cfg.ID == "" {
		return nil, errors.New("traffic manager: no id")
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 20 * time.Millisecond
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := &Manager{cfg: cfg, agg: newAggregator()}
	m.met = newManagerMetrics(m.Keys)
	if cfg.Registry != nil {
		if err := register(cfg.Registry, m.met.collectors); err != nil {
			return nil, fmt.Errorf("traffic manager: register metrics: %w", err)
		}
	}
	return m, nil
}

// Start consumes counts and publishes decisions until ctx is done; it
// returns nil then, having left the group so that the other replicas take
// its partitions over at once.
func (m *Manager) Start(ctx context.Context) error {
	log := m.cfg.Logger
	clientID := "apim-traffic-manager-" + m.cfg.ID
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: m.cfg.Brokers, GroupID: GroupID, Topic: TopicCounts,
		// The default dialer's settings, with a client id by which the
		// group's description tells this replica's partitions.
		Dialer:   &kafka.Dialer{ClientID: clientID, Timeout: 10 * time.Second, DualStack: true},
		MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 100 * time.Millisecond,
		// A fresh group starts at the end: counts are republished every
		// second, so nothing older is needed. Offsets are committed in the
		// background: a new owner of a partition replays at most about a
		// second and keeps the highest count per gateway.
		StartOffset:       kafka.LastOffset,
		CommitInterval:    time.Second,
		HeartbeatInterval: 500 * time.Millisecond,
		SessionTimeout:    6 * time.Second,
		RebalanceTimeout:  5 * time.Second,
		JoinGroupBackoff:  200 * time.Millisecond,
		ReadBackoffMin:    20 * time.Millisecond,
		ReadBackoffMax:    500 * time.Millisecond,
		Logger:            kafkaLogger{log, zerolog.DebugLevel},
		ErrorLogger:       kafkaLogger{log, zerolog.WarnLevel},
	})
	w := newWriter(m.cfg.Brokers, clientID, log)
	defer w.Close()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	wg.Go(runner.Safe(cancel, func() {
		for {
			msg, err := r.ReadMessage(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				log.Warn().Err(err).Msg("read throttle counts")
				select {
				case <-ctx.Done():
					return
				case <-time.After(200 * time.Millisecond):
				}
				continue
			}
			c, err := decodeCount(msg.Value)
			if err != nil {
				m.met.consumedInvalid.Inc()
				log.Warn().Err(err).Int("partition", msg.Partition).Int64("offset", msg.Offset).Msg("skipping throttle count")
				continue
			}
			m.mu.Lock()
			live := m.agg.add(c, m.cfg.Now())
			m.mu.Unlock()
			if live {
				m.met.consumedOK.Inc()
			} else {
				m.met.consumedStale.Inc()
			}
		}
	}))
	wg.Go(runner.Safe(cancel, func() { m.watchPartitions(ctx, clientID) }))
	defer func() {
		cancel(nil)
		wg.Wait()
		if err := r.Close(); err != nil {
			log.Debug().Err(err).Msg("close counts reader")
		}
	}()

	flush := time.NewTicker(m.cfg.FlushInterval)
	defer flush.Stop()
	refresh := time.NewTicker(m.cfg.RefreshInterval)
	defer refresh.Stop()
	for {
		all := false
		select {
		case <-ctx.Done():
			return runner.Cause(ctx)
		case <-refresh.C:
			all = true
		case <-flush.C:
		}
		now := m.cfg.Now()
		m.mu.Lock()
		ds := m.agg.decisions(m.cfg.ID, now, all)
		m.mu.Unlock()
		if all {
			ds = append(ds, Message{SchemaVersion: SchemaVersion, Type: TypeHeartbeat, From: m.cfg.ID, Time: now})
		}
		if len(ds) == 0 {
			continue
		}
		if err := m.publish(ctx, w, ds); err != nil {
			if ctx.Err() == nil {
				// The next refresh republishes every live key.
				m.met.publishErrors.Inc()
				log.Warn().Err(err).Int("decisions", len(ds)).Msg("publish throttle decisions")
			}
		} else if all {
			m.met.decisions.Add(float64(len(ds) - 1)) // the heartbeat is last
		} else {
			m.met.decisions.Add(float64(len(ds)))
		}
	}
}

func (m *Manager) publish(ctx context.Context, w *kafka.Writer, ds []Message) error {
	msgs := make([]kafka.Message, 0, len(ds))
	for _, d := range ds {
		b, err := json.Marshal(d)
		if err != nil {
			return fmt.Errorf("encode decision: %w", err)
		}
		key := d.Key
		if key == "" {
			key = d.From
		}
		msgs = append(msgs, kafka.Message{Topic: TopicDecisions, Key: []byte(key), Value: b})
	}
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	return w.WriteMessages(ctx, msgs...)
}

// watchPartitions sets the assigned-partitions gauge from the group's
// description each RefreshInterval until ctx is done, and to 0 then.
func (m *Manager) watchPartitions(ctx context.Context, clientID string) {
	transport := &kafka.Transport{ClientID: clientID + "-admin"}
	defer transport.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(m.cfg.Brokers...), Timeout: writeTimeout, Transport: transport}
	defer m.met.partitions.Set(0)
	t := time.NewTicker(m.cfg.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := assignedPartitions(ctx, client, clientID)
		if err != nil {
			if ctx.Err() == nil {
				m.cfg.Logger.Debug().Err(err).Msg("assigned partitions")
			}
			continue
		}
		m.met.partitions.Set(float64(n))
	}
}

// Keys is the number of throttle keys this replica holds.
func (m *Manager) Keys() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.agg.len()
}

package events

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
)

// relayLockKey is the PostgreSQL advisory lock that elects the one relay
// publishing at a time ("apimoutb" in ASCII).
const relayLockKey int64 = 0x6170696d6f757462

// RelayConfig configures a Relay.
type RelayConfig struct {
	// DB is the API-manager database, which holds the outbox.
	DB *pgxpool.Pool
	// Brokers are the Kafka bootstrap addresses. The outbox's topics must
	// exist (EnsureTopics): the relay does not create them.
	Brokers []string
	// BatchSize is the most rows published in one round; 100 if zero.
	BatchSize int
	// PollInterval is how often the relay looks at the outbox when no
	// notification wakes it, and how often a standby relay tries to take over;
	// 1s if zero.
	PollInterval time.Duration
	Logger       zerolog.Logger
}

// Relay publishes the outbox to Kafka. Of all the control-plane replicas, one
// relay publishes at a time: the one holding a PostgreSQL advisory lock on a
// dedicated connection. The others retry every PollInterval, so one takes
// over when the holder's session ends.
//
// Each round reads the oldest rows, publishes them synchronously with acks
// from all in-sync replicas and then deletes them. A crash between publish
// and delete publishes those rows again: delivery is at least once, and
// consumers drop duplicates by Generation. When Kafka is down, the relay backs
// off and retries; rows stay in the outbox until they are published.
type Relay struct {
	cfg       RelayConfig
	leader    atomic.Bool
	published atomic.Uint64
}

// NewRelay checks cfg and returns a relay; Start runs it.
func NewRelay(cfg RelayConfig) (*Relay, error) {
	if cfg.DB == nil {
		return nil, errors.New("relay: DB is nil")
	}
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("relay: no Kafka brokers")
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 100
	}
	if cfg.BatchSize < 0 {
		return nil, fmt.Errorf("relay: batch size %d", cfg.BatchSize)
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.PollInterval < 0 {
		return nil, fmt.Errorf("relay: poll interval %s", cfg.PollInterval)
	}
	return &Relay{cfg: cfg}, nil
}

// Leader reports whether this relay holds the lock and publishes.
func (r *Relay) Leader() bool { return r.leader.Load() }

// Published counts the outbox rows this relay has published.
func (r *Relay) Published() uint64 { return r.published.Load() }

// Start runs the relay until ctx is done; it returns nil then. Losing the
// database or Kafka is logged and retried, never returned.
func (r *Relay) Start(ctx context.Context) error {
	// A transport of its own, whose metadata (and a broker's absence) is
	// refreshed every 2s rather than kafka-go's default 6s.
	transport := &kafka.Transport{ClientID: "apim-relay", MetadataTTL: 2 * time.Second}
	defer transport.CloseIdleConnections()
	w := &kafka.Writer{
		Addr:      kafka.TCP(r.cfg.Brokers...),
		Transport: transport,
		// Murmur2 by key, as the Java clients partition, so an entity's
		// events land in one partition whichever client produced them.
		Balancer:     kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll,
		// The default of 1s would hold every deploy back by a second.
		BatchTimeout:    time.Millisecond,
		BatchSize:       r.cfg.BatchSize,
		MaxAttempts:     3,
		WriteBackoffMin: 50 * time.Millisecond,
		WriteBackoffMax: 500 * time.Millisecond,
		WriteTimeout:    10 * time.Second,
		Logger:          kafkaLogger{r.cfg.Logger, zerolog.DebugLevel},
		ErrorLogger:     kafkaLogger{r.cfg.Logger, zerolog.WarnLevel},
	}
	defer w.Close()
	for {
		err := r.lead(ctx, w)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			r.cfg.Logger.Warn().Err(err).Msg("outbox relay lost its lead; retrying")
		}
		if !sleep(ctx, r.cfg.PollInterval) {
			return nil
		}
	}
}

// lead takes the lock if it is free and publishes until ctx is done or the
// lock's connection fails. It returns nil at once if another relay leads.
func (r *Relay) lead(ctx context.Context, w *kafka.Writer) error {
	conn, err := r.cfg.DB.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire lock connection: %w", err)
	}
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, relayLockKey).Scan(&got); err != nil {
		conn.Release()
		return fmt.Errorf("try relay lock: %w", err)
	}
	if !got {
		conn.Release()
		return nil
	}
	// Closing the session releases the lock and the LISTEN, whatever state
	// the connection is in; it never goes back to the pool.
	defer func() {
		pc := conn.Hijack()
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = pc.Close(closeCtx)
	}()
	r.leader.Store(true)
	defer r.leader.Store(false)
	r.cfg.Logger.Info().Msg("outbox relay took the lead")

	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{OutboxChannel}.Sanitize()); err != nil {
		return fmt.Errorf("listen %s: %w", OutboxChannel, err)
	}
	failures := 0
	for {
		n, err := r.round(ctx, w)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			failures++
			d := backoff(failures)
			r.cfg.Logger.Warn().Err(err).Int("failures", failures).Dur("retry_in", d).Msg("outbox relay round failed")
			if !sleep(ctx, d) {
				return nil
			}
			continue
		}
		failures = 0
		if n == r.cfg.BatchSize {
			continue // more rows are waiting
		}
		// Wait for a commit's NOTIFY, or poll. Notifications that arrive
		// during a round are queued on the connection and end this wait at once.
		wctx, cancel := context.WithTimeout(ctx, r.cfg.PollInterval)
		_, err = conn.Conn().WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case conn.Conn().IsClosed():
			return fmt.Errorf("relay lock connection closed: %w", err)
		case err != nil && !pgconn.Timeout(err) && !errors.Is(err, context.DeadlineExceeded):
			return fmt.Errorf("wait for outbox notification: %w", err)
		}
	}
}

// round publishes up to BatchSize of the oldest outbox rows and deletes them.
func (r *Relay) round(ctx context.Context, w *kafka.Writer) (int, error) {
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rows, err := r.cfg.DB.Query(qctx, `SELECT id, topic, key, payload FROM outbox ORDER BY id LIMIT $1`, r.cfg.BatchSize)
	if err != nil {
		return 0, fmt.Errorf("read outbox: %w", err)
	}
	var (
		ids  []int64
		msgs []kafka.Message
	)
	for rows.Next() {
		var (
			id         int64
			topic, key string
			payload    []byte
		)
		if err := rows.Scan(&id, &topic, &key, &payload); err != nil {
			rows.Close()
			return 0, fmt.Errorf("read outbox: %w", err)
		}
		ids = append(ids, id)
		msgs = append(msgs, kafka.Message{Topic: topic, Key: []byte(key), Value: payload})
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read outbox: %w", err)
	}
	if len(msgs) == 0 {
		return 0, nil
	}

	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	start := time.Now()
	if err := w.WriteMessages(wctx, msgs...); err != nil {
		return 0, fmt.Errorf("publish %d outbox rows (ids %d..%d): %w", len(ids), ids[0], ids[len(ids)-1], err)
	}
	r.published.Add(uint64(len(ids)))

	dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer dcancel()
	if _, err := r.cfg.DB.Exec(dctx, `DELETE FROM outbox WHERE id = ANY($1)`, ids); err != nil {
		// They will be published again: consumers drop the duplicates.
		return 0, fmt.Errorf("delete %d published outbox rows: %w", len(ids), err)
	}
	r.cfg.Logger.Debug().Int("rows", len(ids)).Int64("last_id", ids[len(ids)-1]).
		Dur("publish", time.Since(start)).Msg("published outbox rows")
	return len(ids), nil
}

// backoff is 100ms doubling per failure, at most 5s.
func backoff(failures int) time.Duration {
	d := 100 * time.Millisecond
	for i := 1; i < failures && d < 5*time.Second; i++ {
		d *= 2
	}
	return min(d, 5*time.Second)
}

// sleep waits d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// kafkaLogger routes kafka-go's logs into zerolog at one level.
type kafkaLogger struct {
	l     zerolog.Logger
	level zerolog.Level
}

func (k kafkaLogger) Printf(format string, args ...any) {
	k.l.WithLevel(k.level).Str("lib", "kafka-go").Msgf(format, args...)
}

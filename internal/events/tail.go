package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/apim-dev/apim/internal/runner"
)

// tailMaxWait bounds how long a fetch waits on an idle partition. Fetches
// return as soon as a message arrives (MinBytes 1), so this mostly bounds
// how fast a reader notices a broker it lost; it is kept small because an
// event should reach every gateway promptly.
const tailMaxWait = 100 * time.Millisecond

// TailConfig configures a Tail.
type TailConfig struct {
	Brokers []string
	Topic   string
	Logger  zerolog.Logger
	// Name labels the tail's metrics (consumer="gateway"); with Registry.
	Name string
	// Registry, when set, gets the tail's counters:
	// apim_event_tail_skipped_total (malformed messages passed over) and
	// apim_event_tail_reloads_total (full reloads after missed events).
	Registry prometheus.Registerer
}

// ErrMissed is Run's error when a partition's next message is not the one
// after the last it read: the broker no longer has the events in between
// (retention removed them while this instance was away). The state built
// from events is then incomplete; Follow reloads it.
var ErrMissed = errors.New("events were missed")

// Tail reads a broadcast topic, such as TopicNotifications, in which every
// instance (each gateway, each xDS server) needs every event.
//
// It uses no consumer group: a group would split the partitions between the
// instances, while each of them needs all of them. Nor does it commit
// offsets: an instance rebuilds its state from PostgreSQL when it starts, so
// it only needs the events from that moment on. Mark records the end of
// every partition before that load, and Run reads from there, so nothing
// written in between is missed; an event that the load already saw comes
// again and is dropped by its Generation.
type Tail struct {
	cfg     TailConfig
	mu      sync.Mutex
	marks   map[int]int64 // partition → next offset to read
	skipped atomic.Uint64
	reloads atomic.Uint64
	met     struct{ skipped, reloads prometheus.Counter }
}

// NewTail checks cfg and returns a tail; call Mark, load the state, then Run.
func NewTail(cfg TailConfig) (*Tail, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("tail: no Kafka brokers")
	}
	if cfg.Topic == "" {
		return nil, errors.New("tail: no topic")
	}
	t := &Tail{cfg: cfg}
	labels := prometheus.Labels{"consumer": cfg.Name}
	t.met.skipped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "apim_event_tail_skipped_total", Help: "Malformed event messages passed over.", ConstLabels: labels,
	})
	t.met.reloads = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "apim_event_tail_reloads_total", Help: "Full state reloads after events were missed.", ConstLabels: labels,
	})
	if cfg.Registry != nil {
		for _, c := range []prometheus.Collector{t.met.skipped, t.met.reloads} {
			if err := cfg.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("tail %s: %w", cfg.Name, err)
			}
		}
	}
	return t, nil
}

// Skipped counts the malformed messages Run has skipped.
func (t *Tail) Skipped() uint64 { return t.skipped.Load() }

// Reloads counts the reloads Follow has made after missed events.
func (t *Tail) Reloads() uint64 { return t.reloads.Load() }

// Follow runs the tail with handle, as Run does, and when events were
// missed (ErrMissed) marks the partitions' ends, calls reload to load the
// full state again, and runs on from the new marks: the same order as at
// start-up, so nothing written in between is lost. A failing Mark or
// reload is logged and retried with backoff. Follow returns when ctx is
// done (nil) or with handle's error.
func (t *Tail) Follow(ctx context.Context, reload func(context.Context) error, handle func(context.Context, Event) error) error {
	for {
		err := t.Run(ctx, handle)
		if !errors.Is(err, ErrMissed) {
			return err
		}
		t.cfg.Logger.Warn().Err(err).Msg("events were missed; reloading the full state")
		for failures := 1; ; failures++ {
			if err = t.Mark(ctx); err == nil {
				err = reload(ctx)
			}
			if err == nil {
				break
			}
			d := backoff(failures)
			t.cfg.Logger.Error().Err(err).Dur("retry_in", d).Msg("reload after missed events failed")
			if !sleep(ctx, d) {
				return nil
			}
		}
		t.reloads.Add(1)
		t.met.reloads.Inc()
		t.cfg.Logger.Info().Msg("full state reloaded after missed events")
	}
}

// Mark records the current end offset of every partition of the topic. Call
// it before loading the full state from the database.
func (t *Tail) Mark(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	client, done := t.client()
	defer done()
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{t.cfg.Topic}})
	if err != nil {
		return fmt.Errorf("tail %s: metadata: %w", t.cfg.Topic, err)
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil {
		var terr error
		if len(md.Topics) == 1 {
			terr = md.Topics[0].Error
		}
		return fmt.Errorf("tail %s: topic not found: %w", t.cfg.Topic, errors.Join(terr, kafka.UnknownTopicOrPartition))
	}
	var reqs []kafka.OffsetRequest
	for _, p := range md.Topics[0].Partitions {
		reqs = append(reqs, kafka.LastOffsetOf(p.ID))
	}
	var marks map[int]int64
	for {
		marks, err = t.listOffsets(ctx, client, reqs)
		// A topic just created may name a leader in the metadata before
		// that broker serves it: retry such errors until the timeout.
		var kerr kafka.Error
		if err == nil || !errors.As(err, &kerr) || !kerr.Temporary() {
			break
		}
		if !sleep(ctx, 100*time.Millisecond) {
			break
		}
	}
	if err != nil {
		return err
	}
	if len(marks) != len(reqs) {
		return fmt.Errorf("tail %s: offsets of %d of %d partitions", t.cfg.Topic, len(marks), len(reqs))
	}
	t.mu.Lock()
	t.marks = marks
	t.mu.Unlock()
	return nil
}

func (t *Tail) listOffsets(ctx context.Context, client *kafka.Client, reqs []kafka.OffsetRequest) (map[int]int64, error) {
	res, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{t.cfg.Topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("tail %s: list offsets: %w", t.cfg.Topic, err)
	}
	marks := make(map[int]int64, len(reqs))
	for _, po := range res.Topics[t.cfg.Topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("tail %s: offset of partition %d: %w", t.cfg.Topic, po.Partition, po.Error)
		}
		marks[po.Partition] = po.LastOffset
	}
	return marks, nil
}

// client is a Kafka client for the tail's metadata and offset requests;
// call done when finished with it.
func (t *Tail) client() (c *kafka.Client, done func()) {
	transport := &kafka.Transport{ClientID: "apim-tail"}
	return &kafka.Client{Addr: kafka.TCP(t.cfg.Brokers...), Timeout: 10 * time.Second, Transport: transport}, transport.CloseIdleConnections
}

// bounds returns the first offset a partition still holds and its end (the
// offset the next message will get).
func (t *Tail) bounds(ctx context.Context, partition int) (first, end int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	client, done := t.client()
	defer done()
	res, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
		t.cfg.Topic: {kafka.FirstOffsetOf(partition), kafka.LastOffsetOf(partition)},
	}})
	if err != nil {
		return 0, 0, err
	}
	for _, po := range res.Topics[t.cfg.Topic] {
		if po.Partition == partition {
			return po.FirstOffset, po.LastOffset, po.Error
		}
	}
	return 0, 0, fmt.Errorf("tail %s: no offsets of partition %d", t.cfg.Topic, partition)
}

// Run reads every partition from the marked offsets (marking now if Mark was
// not called) and calls handle with each event, from one goroutine at a time,
// in order within a partition. A message that is not a valid Event is logged,
// counted in Skipped and passed over. Run returns nil when ctx is done, and
// handle's error if it returns one: return nil from handle to go on.
// Broker outages are logged and retried.
func (t *Tail) Run(ctx context.Context, handle func(context.Context, Event) error) error {
	t.mu.Lock()
	marks := t.marks
	t.mu.Unlock()
	if marks == nil {
		if err := t.Mark(ctx); err != nil {
			return err
		}
		t.mu.Lock()
		marks = t.marks
		t.mu.Unlock()
	}

	ctx, cancel := context.WithCancelCause(ctx)
	msgs := make(chan kafka.Message, 64)
	missed := make(chan error, len(marks))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel(nil) // runs before wg.Wait
	for p, off := range marks {
		wg.Go(runner.Safe(cancel, func() { t.readPartition(ctx, p, off, msgs, missed) }))
	}
	for {
		var m kafka.Message
		select {
		case <-ctx.Done():
			return runner.Cause(ctx)
		case err := <-missed:
			return err
		case m = <-msgs:
		}
		ev, err := decode(m.Value)
		if err != nil {
			t.skipped.Add(1)
			t.met.skipped.Inc()
			t.cfg.Logger.Error().Err(err).Str("topic", m.Topic).Int("partition", m.Partition).
				Int64("offset", m.Offset).Msg("skipping malformed event")
			continue
		}
		p, err := handleRecovering(ctx, handle, ev)
		if p != nil {
			// One event that makes the handler panic must not stop every
			// event after it: skipped, as a malformed one is.
			t.skipped.Add(1)
			t.met.skipped.Inc()
			t.cfg.Logger.Error().Str("panic", fmt.Sprint(p.Value)).Str("stack", string(p.Stack)).Str("kind", string(ev.Kind)).
				Str("id", ev.ID).Int64("offset", m.Offset).Msg("event handler panicked; event skipped")
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("handle %s event %s (generation %d): %w", ev.Kind, ev.ID, ev.Generation, err)
		}
	}
}

func handleRecovering(ctx context.Context, handle func(context.Context, Event) error, ev Event) (p *runner.PanicError, err error) {
	defer func() {
		if v := recover(); v != nil {
			p = &runner.PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return nil, handle(ctx, ev)
}

// readPartition sends the messages of one partition, from offset on, to msgs
// until ctx is done. A failing reader is replaced at the next offset.
// Events are missed when the broker no longer has the next offset: it
// dropped it (retention, while this instance was away) or its log starts
// over (the topic was made again). That is checked each time a reader
// starts, and by every message read (a reader skips forward to what the
// broker has); it ends the partition's reading with ErrMissed on missed,
// the message not sent.
func (t *Tail) readPartition(ctx context.Context, partition int, offset int64, msgs chan<- kafka.Message, missed chan<- error) {
	log := t.cfg.Logger.With().Str("topic", t.cfg.Topic).Int("partition", partition).Logger()
	failures := 0
	for ctx.Err() == nil {
		if first, end, err := t.bounds(ctx, partition); err == nil && (first > offset || end < offset) {
			missed <- fmt.Errorf("tail %s: partition %d holds offsets %d to %d, the next to read is %d: %w",
				t.cfg.Topic, partition, first, end-1, offset, ErrMissed)
			return
		} // an error: the reader below fails the same way, and is retried

		r := kafka.NewReader(kafka.ReaderConfig{
			Brokers:        t.cfg.Brokers,
			Topic:          t.cfg.Topic,
			Partition:      partition,
			MinBytes:       1,
			MaxBytes:       10 << 20,
			MaxWait:        tailMaxWait,
			ReadBackoffMin: 50 * time.Millisecond,
			ReadBackoffMax: time.Second,
			Logger:         kafkaLogger{log, zerolog.DebugLevel},
			ErrorLogger:    kafkaLogger{log, zerolog.WarnLevel},
		})
		if err := r.SetOffset(offset); err != nil {
			log.Error().Err(errors.Join(err, r.Close())).Int64("offset", offset).Msg("set reader offset")
			return
		}
		var readErr error
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				readErr = err
				break
			}
			if m.Offset > offset {
				missed <- fmt.Errorf("tail %s: partition %d: offsets %d to %d are gone: %w", t.cfg.Topic, partition, offset, m.Offset-1, ErrMissed)
				if err := r.Close(); err != nil {
					log.Debug().Err(err).Msg("close partition reader")
				}
				return
			}
			failures = 0
			offset = m.Offset + 1
			select {
			case msgs <- m:
			case <-ctx.Done():
			}
		}
		if err := r.Close(); err != nil {
			log.Debug().Err(err).Msg("close partition reader")
		}
		if ctx.Err() != nil {
			return
		}
		failures++
		d := backoff(failures)
		log.Warn().Err(readErr).Int64("offset", offset).Dur("retry_in", d).Msg("partition reader failed; restarting it")
		if !sleep(ctx, d) {
			return
		}
	}
}

// decode parses and checks an Event envelope.
func decode(b []byte) (Event, error) {
	var ev Event
	if err := json.Unmarshal(b, &ev); err != nil {
		return Event{}, fmt.Errorf("decode event: %w", err)
	}
	var errs []error
	if ev.SchemaVersion != SchemaVersion {
		errs = append(errs, fmt.Errorf("schemaVersion %d, want %d", ev.SchemaVersion, SchemaVersion))
	}
	if ev.Kind == "" {
		errs = append(errs, errors.New("no kind"))
	}
	if ev.Op != OpUpsert && ev.Op != OpDelete {
		errs = append(errs, fmt.Errorf("op %q", ev.Op))
	}
	if ev.ID == "" {
		errs = append(errs, errors.New("no id"))
	}
	if err := errors.Join(errs...); err != nil {
		return Event{}, fmt.Errorf("invalid event: %w", err)
	}
	return ev, nil
}

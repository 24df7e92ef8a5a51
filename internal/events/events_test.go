package events_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func testLogger(t *testing.T) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
}

func newPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	apimURL, _ := pgtest.New(t)
	pool, err := pgxpool.New(context.Background(), apimURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func ensureTopic(t *testing.T, brokers []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := events.EnsureTopics(ctx, brokers, 4, events.TopicNotifications); err != nil {
		t.Fatal(err)
	}
}

// appendEvents writes evs to the outbox in one transaction, committed or not.
func appendEvents(t *testing.T, pool *pgxpool.Pool, commit bool, evs ...events.Event) {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if err := events.Append(ctx, tx, ev); err != nil {
			t.Fatal(err)
		}
	}
	if commit {
		err = tx.Commit(ctx)
	} else {
		err = tx.Rollback(ctx)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func apiEvent(id string, gen int64) events.Event {
	return events.Event{
		Kind: events.KindAPI, Op: events.OpUpsert, ID: id, Generation: gen,
		Data: json.RawMessage(fmt.Sprintf(`{"id":%q}`, id)),
	}
}

func outboxRows(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// runRelay starts a relay and returns the function that stops it and waits.
func runRelay(t *testing.T, cfg events.RelayConfig) (*events.Relay, func()) {
	t.Helper()
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 200 * time.Millisecond
	}
	cfg.Logger = testLogger(t).With().Str("component", "relay").Logger()
	r, err := events.NewRelay(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Start(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("relay Start returned %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return r, stop
}

// received collects what a tail hands to its handler.
type received struct {
	mu   sync.Mutex
	evs  []events.Event
	at   []time.Time
	tail *events.Tail
}

func (r *received) snapshot() []events.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]events.Event(nil), r.evs...)
}

// waitFor polls until cond holds on the received events, or fails the test.
func (r *received) waitFor(t *testing.T, d time.Duration, what string, cond func([]events.Event) bool) []events.Event {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		evs := r.snapshot()
		if cond(evs) {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; received %d events", what, len(evs))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func runTail(t *testing.T, brokers []string) *received {
	t.Helper()
	tail, err := events.NewTail(events.TailConfig{
		Brokers: brokers, Topic: events.TopicNotifications,
		Logger: testLogger(t).With().Str("component", "tail").Logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := tail.Mark(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	rec := &received{tail: tail}
	done := make(chan error, 1)
	go func() {
		done <- tail.Run(ctx, func(_ context.Context, ev events.Event) error {
			rec.mu.Lock()
			rec.evs = append(rec.evs, ev)
			rec.at = append(rec.at, time.Now())
			rec.mu.Unlock()
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("tail Run returned %v", err)
		}
	})
	return rec
}

func hasID(id string) func([]events.Event) bool {
	return func(evs []events.Event) bool {
		for _, ev := range evs {
			if ev.ID == id {
				return true
			}
		}
		return false
	}
}

func TestCommittedEventReachesTailRolledBackDoesNot(t *testing.T) {
	pool := newPool(t)
	kafkaBroker := startEmbedded(t)
	brokers := kafkaBroker.Brokers()
	ensureTopic(t, brokers)
	rec := runTail(t, brokers)
	// A long poll interval: only the NOTIFY can make delivery prompt.
	relay, _ := runRelay(t, events.RelayConfig{DB: pool, Brokers: brokers, PollInterval: 30 * time.Second})
	deadline := time.Now().Add(10 * time.Second)
	for !relay.Leader() {
		if time.Now().After(deadline) {
			t.Fatal("the only relay never took the lead")
		}
		time.Sleep(10 * time.Millisecond)
	}

	appendEvents(t, pool, false, apiEvent("rolled-back", 1))
	want := apiEvent("committed", 2)
	want.Environment = "Default"
	start := time.Now()
	appendEvents(t, pool, true, want)
	evs := rec.waitFor(t, 5*time.Second, "the committed event", hasID("committed"))
	latency := time.Since(start)
	t.Logf("commit → tail handler: %s", latency)
	if latency > 500*time.Millisecond {
		t.Errorf("commit → tail took %s, want well under 500ms", latency)
	}
	got := evs[len(evs)-1]
	if got.SchemaVersion != events.SchemaVersion || got.Kind != want.Kind || got.Op != want.Op ||
		got.Generation != 2 || got.Environment != "Default" || got.Time.IsZero() || string(got.Data) != `{"id": "committed"}` && string(got.Data) != `{"id":"committed"}` {
		t.Fatalf("received %+v (data %s)", got, got.Data)
	}
	// Give a stray event time to show up.
	time.Sleep(300 * time.Millisecond)
	for _, ev := range rec.snapshot() {
		if ev.ID == "rolled-back" {
			t.Fatal("the rolled-back event was published")
		}
	}
	if n := len(rec.snapshot()); n != 1 {
		t.Fatalf("tail received %d events, want 1", n)
	}
	if n := outboxRows(t, pool); n != 0 {
		t.Fatalf("%d rows left in the outbox", n)
	}
}

func TestRelayStoppedMidwayLosesNothing(t *testing.T) {
	pool := newPool(t)
	kafkaBroker := startEmbedded(t)
	brokers := kafkaBroker.Brokers()
	ensureTopic(t, brokers)
	rec := runTail(t, brokers)

	const n = 400
	var evs []events.Event
	for i := range n {
		evs = append(evs, apiEvent(fmt.Sprintf("api-%d", i%20), int64(i+1)))
	}
	appendEvents(t, pool, true, evs...)

	relay, stop := runRelay(t, events.RelayConfig{DB: pool, Brokers: brokers, BatchSize: 5})
	deadline := time.Now().Add(10 * time.Second)
	for relay.Published() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("nothing published")
		}
		time.Sleep(time.Millisecond)
	}
	stop()
	left := outboxRows(t, pool)
	t.Logf("stopped after %d published, %d rows left", relay.Published(), left)
	if left == 0 {
		t.Fatal("the relay finished before it was stopped; the test proves nothing")
	}

	runRelay(t, events.RelayConfig{DB: pool, Brokers: brokers, BatchSize: 50})
	seen := func(evs []events.Event) map[int64]bool {
		m := map[int64]bool{}
		for _, ev := range evs {
			m[ev.Generation] = true
		}
		return m
	}
	got := rec.waitFor(t, 20*time.Second, "every event", func(evs []events.Event) bool { return len(seen(evs)) == n })
	// Per entity, generations arrive in order (a re-published one may repeat).
	last := map[string]int64{}
	for _, ev := range got {
		if ev.Generation < last[ev.ID] {
			t.Fatalf("%s: generation %d after %d", ev.ID, ev.Generation, last[ev.ID])
		}
		last[ev.ID] = ev.Generation
	}
	deadline = time.Now().Add(5 * time.Second)
	for outboxRows(t, pool) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d rows never left the outbox", outboxRows(t, pool))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTailSkipsMalformedMessages(t *testing.T) {
	kafkaBroker := startEmbedded(t)
	brokers := kafkaBroker.Brokers()
	ensureTopic(t, brokers)
	rec := runTail(t, brokers)

	good, err := json.Marshal(events.Event{SchemaVersion: 1, Kind: events.KindApplication, Op: events.OpDelete, ID: "app-1", Generation: 9})
	if err != nil {
		t.Fatal(err)
	}
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: events.TopicNotifications, Balancer: kafka.Murmur2Balancer{}, BatchTimeout: time.Millisecond}
	defer w.Close()
	ctx := context.Background()
	// All with one key: one partition, in this order.
	key := []byte("app-1")
	if err := w.WriteMessages(ctx,
		kafka.Message{Key: key, Value: []byte("not json")},
		kafka.Message{Key: key, Value: []byte(`{"schemaVersion":99,"kind":"api","op":"upsert","id":"x"}`)},
		kafka.Message{Key: key, Value: []byte(`{"schemaVersion":1,"kind":"api","op":"upsert"}`)},
		kafka.Message{Key: key, Value: good},
	); err != nil {
		t.Fatal(err)
	}
	got := rec.waitFor(t, 5*time.Second, "the good event", hasID("app-1"))
	if len(got) != 1 || got[0].Op != events.OpDelete || got[0].Generation != 9 {
		t.Fatalf("received %+v", got)
	}
	if s := rec.tail.Skipped(); s != 3 {
		t.Fatalf("Skipped() = %d, want 3", s)
	}
}

func TestRelayWaitsForKafka(t *testing.T) {
	pool := newPool(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	appendEvents(t, pool, true, apiEvent("early-1", 1), apiEvent("early-2", 2))
	runRelay(t, events.RelayConfig{DB: pool, Brokers: []string{addr}})
	time.Sleep(1500 * time.Millisecond) // several failed rounds
	if n := outboxRows(t, pool); n != 2 {
		t.Fatalf("outbox holds %d rows while Kafka is down, want 2", n)
	}

	kafkaBroker, err := events.StartEmbedded(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kafkaBroker.Close)
	// Read from the beginning: the tail starts after the broker.
	ensureTopic(t, kafkaBroker.Brokers())
	tail, err := events.NewTail(events.TailConfig{Brokers: kafkaBroker.Brokers(), Topic: events.TopicNotifications, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Mark at the empty topic's end (offset 0 everywhere), then read.
	if err := tail.Mark(ctx); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	err = tail.Run(ctx, func(_ context.Context, ev events.Event) error {
		ids[ev.ID] = true
		if len(ids) == 2 {
			cancel()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !ids["early-1"] || !ids["early-2"] {
		t.Fatalf("received %v once Kafka came up", ids)
	}
}

func TestOneRelayLeadsAtATime(t *testing.T) {
	pool := newPool(t)
	kafkaBroker := startEmbedded(t)
	brokers := kafkaBroker.Brokers()
	ensureTopic(t, brokers)
	rec := runTail(t, brokers)

	a, stopA := runRelay(t, events.RelayConfig{DB: pool, Brokers: brokers, PollInterval: 100 * time.Millisecond})
	b, stopB := runRelay(t, events.RelayConfig{DB: pool, Brokers: brokers, PollInterval: 100 * time.Millisecond})
	deadline := time.Now().Add(10 * time.Second)
	for !a.Leader() && !b.Leader() {
		if time.Now().After(deadline) {
			t.Fatal("no relay took the lead")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // several standby retries
	if a.Leader() && b.Leader() {
		t.Fatal("both relays lead")
	}
	leader, standby, stopLeader := a, b, stopA
	if b.Leader() {
		leader, standby, stopLeader = b, a, stopB
	}
	appendEvents(t, pool, true, apiEvent("first", 1))
	rec.waitFor(t, 5*time.Second, "first", hasID("first"))
	// The tail can see the message before the leader's write call returns
	// and counts it.
	deadline = time.Now().Add(5 * time.Second)
	for leader.Published() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if leader.Published() != 1 || standby.Published() != 0 {
		t.Fatalf("published: leader %d, standby %d", leader.Published(), standby.Published())
	}
	stopLeader()
	deadline = time.Now().Add(5 * time.Second)
	for !standby.Leader() {
		if time.Now().After(deadline) {
			t.Fatal("the standby never took over")
		}
		time.Sleep(10 * time.Millisecond)
	}
	appendEvents(t, pool, true, apiEvent("second", 2))
	rec.waitFor(t, 5*time.Second, "second", hasID("second"))
}

// A tail delivers what was written after Mark, even before Run, and nothing
// from before Mark.
func TestTailStartsAtMark(t *testing.T) {
	kafkaBroker := startEmbedded(t)
	brokers := kafkaBroker.Brokers()
	ensureTopic(t, brokers)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: events.TopicNotifications, Balancer: kafka.Murmur2Balancer{}, BatchTimeout: time.Millisecond}
	defer w.Close()
	write := func(id string) {
		b, _ := json.Marshal(apiEvent(id, 1))
		var ev events.Event
		_ = json.Unmarshal(b, &ev)
		ev.SchemaVersion = events.SchemaVersion
		b, _ = json.Marshal(ev)
		if err := w.WriteMessages(ctx, kafka.Message{Key: []byte(id), Value: b}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 8 {
		write(fmt.Sprintf("before-%d", i))
	}
	tail, err := events.NewTail(events.TailConfig{Brokers: brokers, Topic: events.TopicNotifications, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := tail.Mark(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		write(fmt.Sprintf("after-%d", i))
	}
	var got []string
	err = tail.Run(ctx, func(_ context.Context, ev events.Event) error {
		got = append(got, ev.ID)
		if len(got) == 8 {
			cancel()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range got {
		if id[:5] != "after" {
			t.Fatalf("received %s, written before Mark", id)
		}
	}
}

// markedTail is a tail on a fresh broker, marked, and the policy events
// with ids written after the mark, in order on one partition.
func markedTail(ctx context.Context, t *testing.T, ids ...string) *events.Tail {
	t.Helper()
	kafkaBroker := startEmbedded(t)
	brokers := kafkaBroker.Brokers()
	ensureTopic(t, brokers)
	tail, err := events.NewTail(events.TailConfig{Brokers: brokers, Topic: events.TopicNotifications, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := tail.Mark(ctx); err != nil {
		t.Fatal(err)
	}
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: events.TopicNotifications, Balancer: kafka.Murmur2Balancer{}, BatchTimeout: time.Millisecond}
	defer w.Close()
	for _, id := range ids {
		b, _ := json.Marshal(events.Event{SchemaVersion: 1, Kind: events.KindPolicy, Op: events.OpUpsert, ID: id})
		if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("p"), Value: b}); err != nil {
			t.Fatal(err)
		}
	}
	return tail
}

func TestHandlerErrorStopsRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tail := markedTail(ctx, t, "p")
	err := tail.Run(ctx, func(context.Context, events.Event) error { return pgx.ErrNoRows })
	if err == nil || ctx.Err() != nil {
		t.Fatalf("Run = %v (ctx %v), want the handler's error", err, ctx.Err())
	}
}

// TestHandlerPanicSkipsTheEvent: an event that makes the handler panic is
// skipped and counted; the events after it are still handled.
func TestHandlerPanicSkipsTheEvent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tail := markedTail(ctx, t, "poison", "after")
	var handled []string
	err := tail.Run(ctx, func(_ context.Context, ev events.Event) error {
		if ev.ID == "poison" {
			panic("a bug this event exposes")
		}
		handled = append(handled, ev.ID)
		return errors.New("stop here")
	})
	if err == nil || !strings.Contains(err.Error(), "stop here") {
		t.Fatalf("Run = %v, want it to reach the event after the panic", err)
	}
	if len(handled) != 1 || handled[0] != "after" || tail.Skipped() != 1 {
		t.Fatalf("handled %v, skipped %d; want [after] and 1", handled, tail.Skipped())
	}
}

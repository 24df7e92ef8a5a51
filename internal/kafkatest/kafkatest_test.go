package kafkatest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/kafkatest"
	"github.com/apim-dev/apim/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestOutboxRoundTripOnApacheKafka runs the relay and a tail against a real
// Apache Kafka broker: the proof that kafka-go's use here works with it.
func TestOutboxRoundTripOnApacheKafka(t *testing.T) {
	brokers := kafkatest.StartApache(t)
	logger := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for range 2 { // idempotent
		if err := events.EnsureTopics(ctx, brokers, 4, events.TopicNotifications); err != nil {
			t.Fatal(err)
		}
	}

	apimURL, _ := pgtest.New(t)
	pool, err := pgxpool.New(ctx, apimURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	tail, err := events.NewTail(events.TailConfig{Brokers: brokers, Topic: events.TopicNotifications, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	if err := tail.Mark(ctx); err != nil {
		t.Fatal(err)
	}
	relay, err := events.NewRelay(events.RelayConfig{DB: pool, Brokers: brokers, PollInterval: 30 * time.Second, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	wg.Go(func() {
		if err := relay.Start(runCtx); err != nil {
			t.Errorf("relay: %v", err)
		}
	})
	got := make(chan events.Event, 100)
	wg.Go(func() {
		if err := tail.Run(runCtx, func(_ context.Context, ev events.Event) error {
			got <- ev
			return nil
		}); err != nil {
			t.Errorf("tail: %v", err)
		}
	})
	for !relay.Leader() {
		time.Sleep(10 * time.Millisecond)
	}

	appendEvent := func(id string, gen int64) {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if err := events.Append(ctx, tx, events.Event{
			Kind: events.KindDeployment, Op: events.OpUpsert, ID: id, Environment: "Default",
			Generation: gen, Data: json.RawMessage(`{}`),
		}); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// The first event warms up the producer's and the readers' connections.
	for i := range 5 {
		id := fmt.Sprintf("api-%d", i)
		start := time.Now()
		appendEvent(id, int64(i+1))
		select {
		case ev := <-got:
			if ev.ID != id || ev.Generation != int64(i+1) || ev.Kind != events.KindDeployment {
				t.Fatalf("received %+v, want %s", ev, id)
			}
			t.Logf("commit → tail handler on Apache Kafka: %s", time.Since(start))
			if i > 0 && time.Since(start) > 500*time.Millisecond {
				t.Errorf("event %d took %s, want well under 500ms", i, time.Since(start))
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("event %s never arrived", id)
		}
	}
}

// TestConsumerGroupOnApacheKafka covers kafka-go's group reader, which the
// traffic manager's replicas use.
func TestConsumerGroupOnApacheKafka(t *testing.T) {
	brokers := kafkatest.StartApache(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const topic = "probe"
	if err := events.EnsureTopics(ctx, brokers, 2, topic); err != nil {
		t.Fatal(err)
	}
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: kafka.Murmur2Balancer{}, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer w.Close()
	for i := range 10 {
		if err := w.WriteMessages(ctx, kafka.Message{Key: fmt.Appendf(nil, "k%d", i), Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, GroupID: "g", StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	for i := range 10 {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if err := r.CommitMessages(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
}

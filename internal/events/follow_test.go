package events_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/apim-dev/apim/internal/events"
)

// A tail that comes back to find the broker has dropped events it had not
// read (retention) does not go on as if nothing happened: Run reports
// ErrMissed, and Follow reloads the full state, then reads on from the
// partitions' new ends.
func TestFollowReloadsAfterMissedEvents(t *testing.T) {
	kafkaBroker := startEmbedded(t)
	brokers := kafkaBroker.Brokers()
	ensureTopic(t, brokers)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: events.TopicNotifications, Balancer: kafka.Murmur2Balancer{}, BatchTimeout: time.Millisecond}
	defer w.Close()
	key := []byte("app-1") // one key: one partition
	write := func(ids ...string) {
		t.Helper()
		var msgs []kafka.Message
		for _, id := range ids {
			v, err := json.Marshal(events.Event{SchemaVersion: events.SchemaVersion, Kind: events.KindApplication, Op: events.OpUpsert, ID: id, Generation: 1})
			if err != nil {
				t.Fatal(err)
			}
			msgs = append(msgs, kafka.Message{Key: key, Value: v})
		}
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
	}

	reg := prometheus.NewRegistry()
	tail, err := events.NewTail(events.TailConfig{Brokers: brokers, Topic: events.TopicNotifications, Logger: testLogger(t), Name: "test", Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := tail.Mark(ctx); err != nil {
		t.Fatal(err)
	}
	// Written after the mark, then dropped by the broker before the tail
	// reads them: the tail was away past their retention.
	write("lost-1", "lost-2")
	deleteAll(ctx, t, brokers)

	var mu sync.Mutex
	var got []string
	reloads := 0
	handle := func(_ context.Context, ev events.Event) error {
		mu.Lock()
		got = append(got, ev.ID)
		mu.Unlock()
		return nil
	}
	// Noticed though nothing was written since: the broker no longer has
	// the next offset to read.
	if err := tail.Run(ctx, handle); !errors.Is(err, events.ErrMissed) {
		t.Fatalf("Run = %v, want ErrMissed", err)
	}
	// And when a later event is there to read past the gap.
	write("after-gap")
	if err := tail.Run(ctx, handle); !errors.Is(err, events.ErrMissed) {
		t.Fatalf("Run = %v, want ErrMissed", err)
	}
	if len(got) != 0 {
		t.Fatalf("handled %v past a gap", got)
	}

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- tail.Follow(runCtx, func(context.Context) error {
			mu.Lock()
			reloads++
			mu.Unlock()
			return nil
		}, handle)
	}()
	// Follow meets the same gap, reloads, and reads on from the new end.
	deadline := time.Now().Add(10 * time.Second)
	for tail.Reloads() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	write("after-reload")
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Errorf("Follow = %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if reloads != 1 || len(got) != 1 || got[0] != "after-reload" {
		t.Errorf("reloads %d, handled %v; want 1 reload, then only after-reload", reloads, got)
	}
	if want := `
# HELP apim_event_tail_reloads_total Full state reloads after events were missed.
# TYPE apim_event_tail_reloads_total counter
apim_event_tail_reloads_total{consumer="test"} 1
`; testutil.GatherAndCompare(reg, strings.NewReader(want), "apim_event_tail_reloads_total") != nil {
		t.Error("apim_event_tail_reloads_total is not 1")
	}
}

// deleteAll drops every record of the notifications topic's partitions,
// as retention would: DeleteRecords up to each partition's end.
func deleteAll(ctx context.Context, t *testing.T, brokers []string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	lo := kmsg.NewPtrListOffsetsRequest()
	lt := kmsg.NewListOffsetsRequestTopic()
	lt.Topic = events.TopicNotifications
	for p := range int32(4) {
		lp := kmsg.NewListOffsetsRequestTopicPartition()
		lp.Partition, lp.Timestamp = p, -1 // the end
		lt.Partitions = append(lt.Partitions, lp)
	}
	lo.Topics = append(lo.Topics, lt)
	ends, err := lo.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	del := kmsg.NewPtrDeleteRecordsRequest()
	del.TimeoutMillis = 5000
	dt := kmsg.NewDeleteRecordsRequestTopic()
	dt.Topic = events.TopicNotifications
	for _, p := range ends.Topics[0].Partitions {
		if p.ErrorCode != 0 {
			t.Fatalf("end of partition %d: error %d", p.Partition, p.ErrorCode)
		}
		dp := kmsg.NewDeleteRecordsRequestTopicPartition()
		dp.Partition, dp.Offset = p.Partition, p.Offset
		dt.Partitions = append(dt.Partitions, dp)
	}
	del.Topics = append(del.Topics, dt)
	resp, err := del.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range resp.Topics[0].Partitions {
		if p.ErrorCode != 0 {
			t.Fatalf("delete records of partition %d: error %d", p.Partition, p.ErrorCode)
		}
	}
}

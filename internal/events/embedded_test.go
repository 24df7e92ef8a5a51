package events_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/apim-dev/apim/internal/events"
)

func startEmbedded(t *testing.T) *events.Embedded {
	t.Helper()
	e, err := events.StartEmbedded(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// TestKafkaGoAgainstEmbedded proves that the kafka-go parts the project uses
// speak kfake's protocol: Client, Writer, Reader without and with a group.
func TestKafkaGoAgainstEmbedded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := startEmbedded(t)
	brokers := e.Brokers()
	const topic = "probe"
	for range 2 { // idempotent
		if err := events.EnsureTopics(ctx, brokers, 3, topic); err != nil {
			t.Fatal(err)
		}
	}

	w := &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Topic:        topic,
		Balancer:     kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond,
	}
	defer w.Close()
	var msgs []kafka.Message
	for i := range 30 {
		msgs = append(msgs, kafka.Message{Key: fmt.Appendf(nil, "k%d", i%5), Value: fmt.Appendf(nil, "v%d", i)})
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}

	// Reader without a group, one partition.
	total := 0
	for p := range 3 {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p, MaxWait: 50 * time.Millisecond})
		conn, err := kafka.DialLeader(ctx, "tcp", brokers[0], topic, p)
		if err != nil {
			t.Fatal(err)
		}
		last, err := conn.ReadLastOffset()
		conn.Close()
		if err != nil {
			t.Fatal(err)
		}
		for range last {
			if _, err := r.ReadMessage(ctx); err != nil {
				t.Fatalf("partition %d: %v", p, err)
			}
			total++
		}
		r.Close()
	}
	if total != 30 {
		t.Fatalf("read %d messages by partition, want 30", total)
	}

	// Reader in a consumer group.
	gr := kafka.NewReader(kafka.ReaderConfig{
		Brokers: brokers, Topic: topic, GroupID: "probe-group",
		StartOffset: kafka.FirstOffset, MaxWait: 50 * time.Millisecond,
		HeartbeatInterval: 200 * time.Millisecond, SessionTimeout: 6 * time.Second,
	})
	defer gr.Close()
	for i := range 30 {
		m, err := gr.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("group read %d: %v", i, err)
		}
		if err := gr.CommitMessages(ctx, m); err != nil {
			t.Fatalf("commit: %v", err)
		}
	}
	client := &kafka.Client{Addr: kafka.TCP(brokers...)}
	offs, err := client.ConsumerOffsets(ctx, kafka.TopicAndGroup{Topic: topic, GroupId: "probe-group"})
	if err != nil {
		t.Fatal(err)
	}
	committed := int64(0)
	for _, o := range offs {
		committed += o
	}
	if committed != 30 {
		t.Fatalf("committed offsets sum to %d, want 30 (%v)", committed, offs)
	}
}

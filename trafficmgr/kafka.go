package trafficmgr

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
)

// writeTimeout bounds one publish of a batch.
const writeTimeout = 2 * time.Second

// newWriter returns a writer for messages that name their topic. Acks from
// the leader only: counts and decisions are superseded within a second, so
// waiting for every replica buys nothing.
func newWriter(brokers []string, clientID string, log zerolog.Logger) *kafka.Writer {
	return &kafka.Writer{
		Addr:            kafka.TCP(brokers...),
		Transport:       &kafka.Transport{ClientID: clientID, MetadataTTL: 2 * time.Second},
		Balancer:        kafka.Murmur2Balancer{},
		RequiredAcks:    kafka.RequireOne,
		BatchTimeout:    time.Millisecond,
		BatchSize:       1000,
		MaxAttempts:     2,
		WriteBackoffMin: 20 * time.Millisecond,
		WriteBackoffMax: 200 * time.Millisecond,
		WriteTimeout:    writeTimeout,
		Logger:          kafkaLogger{log, zerolog.DebugLevel},
		ErrorLogger:     kafkaLogger{log, zerolog.DebugLevel},
	}
}

// kafkaLogger adapts zerolog to kafka-go's Logger.
type kafkaLogger struct {
	log   zerolog.Logger
	level zerolog.Level
}

func (l kafkaLogger) Printf(format string, args ...any) {
	l.log.WithLevel(l.level).Msgf(format, args...)
}

// partitions lists the partitions of a topic.
func partitions(ctx context.Context, brokers []string, topic string) ([]int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	transport := &kafka.Transport{ClientID: "apim-throttle"}
	defer transport.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: transport}
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("metadata of %s: %w", topic, err)
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil || len(md.Topics[0].Partitions) == 0 {
		var terr error
		if len(md.Topics) == 1 {
			terr = md.Topics[0].Error
		}
		return nil, fmt.Errorf("topic %s not found: %w", topic, errors.Join(terr, kafka.UnknownTopicOrPartition))
	}
	var ps []int
	for _, p := range md.Topics[0].Partitions {
		ps = append(ps, p.ID)
	}
	return ps, nil
}

// readBroadcast reads one partition of a broadcast topic from the first
// message written at or after since, and calls handle with each message
// until ctx is done. A failing reader is replaced at the next offset.
func readBroadcast(ctx context.Context, brokers []string, topic string, partition int, since time.Time, log zerolog.Logger, handle func(kafka.Message)) {
	log = log.With().Str("topic", topic).Int("partition", partition).Logger()
	offset := int64(-1)
	for ctx.Err() == nil {
		r := kafka.NewReader(kafka.ReaderConfig{
			Brokers: brokers, Topic: topic, Partition: partition,
			MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 100 * time.Millisecond,
			ReadBackoffMin: 20 * time.Millisecond, ReadBackoffMax: 500 * time.Millisecond,
			Logger:      kafkaLogger{log, zerolog.DebugLevel},
			ErrorLogger: kafkaLogger{log, zerolog.DebugLevel},
		})
		var err error
		if offset < 0 {
			err = r.SetOffsetAt(ctx, since)
		} else {
			err = r.SetOffset(offset)
		}
		for err == nil {
			var m kafka.Message
			if m, err = r.ReadMessage(ctx); err == nil {
				offset = m.Offset + 1
				handle(m)
			}
		}
		_ = r.Close()
		if ctx.Err() != nil {
			return
		}
		log.Warn().Err(err).Msg("throttle reader failed; restarting it")
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
)

// EnsureTopics creates the topics that do not exist yet, each with the given
// number of partitions and the broker's default replication factor, and
// waits until the broker's metadata lists all of them with their leaders.
// Topics that exist are left as they are, whatever their partition count.
func EnsureTopics(ctx context.Context, brokers []string, partitions int, topics ...string) error {
	if len(brokers) == 0 {
		return errors.New("ensure topics: no brokers")
	}
	if partitions < 1 {
		return fmt.Errorf("ensure topics: %d partitions", partitions)
	}
	// A transport of its own: kafka-go's default one is shared by the process
	// and caches metadata, including a broker's absence, for seconds.
	transport := &kafka.Transport{ClientID: "apim-admin"}
	defer transport.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: transport}
	req := &kafka.CreateTopicsRequest{}
	for _, t := range topics {
		req.Topics = append(req.Topics, kafka.TopicConfig{
			Topic:             t,
			NumPartitions:     partitions,
			ReplicationFactor: -1, // the broker's default.replication.factor
		})
	}
	// A broker that has just started may answer "not available" for a while.
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		err := createTopics(ctx, client, req)
		if err == nil {
			break
		}
		if permanent(err) {
			return fmt.Errorf("create topics %v: %w", topics, err)
		}
		if !sleep(ctx, 200*time.Millisecond) {
			return fmt.Errorf("create topics %v: %w", topics, err)
		}
	}
	return waitTopics(ctx, client, topics)
}

func createTopics(ctx context.Context, client *kafka.Client, req *kafka.CreateTopicsRequest) error {
	res, err := client.CreateTopics(ctx, req)
	if err != nil {
		return err
	}
	var errs []error
	for t, err := range res.Errors {
		if err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
			errs = append(errs, fmt.Errorf("topic %s: %w", t, err))
		}
	}
	return errors.Join(errs...)
}

// waitTopics polls metadata until every topic has a leader for each partition.
func waitTopics(ctx context.Context, client *kafka.Client, topics []string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
		if err == nil && topicsReady(md, len(topics)) {
			return nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = ctx.Err()
			}
			return fmt.Errorf("wait for topics %v: %w", topics, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func topicsReady(md *kafka.MetadataResponse, want int) bool {
	if len(md.Topics) != want {
		return false
	}
	for _, t := range md.Topics {
		if t.Error != nil || len(t.Partitions) == 0 {
			return false
		}
		for _, p := range t.Partitions {
			if p.Error != nil || p.Leader.Host == "" {
				return false
			}
		}
	}
	return true
}

// permanent reports errors that retrying cannot fix.
func permanent(err error) bool {
	for _, e := range []kafka.Error{
		kafka.InvalidTopic, kafka.InvalidPartitionNumber, kafka.InvalidReplicationFactor,
		kafka.InvalidConfiguration, kafka.PolicyViolation, kafka.InvalidRequest,
		kafka.TopicAuthorizationFailed, kafka.ClusterAuthorizationFailed,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

package events

import (
	"context"
	"fmt"
	"net"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Embedded is an in-process Kafka-protocol broker (franz-go's kfake) for the
// all-in-one profile and for tests. It keeps its log in memory only: that is
// enough because PostgreSQL is the source of truth and every consumer
// reloads its state from it at start.
//
// segmentio/kafka-go v0.4.51 works against it unchanged: Writer, Reader
// (with and without GroupID) and Client are covered by the tests.
type Embedded struct {
	c *kfake.Cluster
}

// StartEmbedded starts a single-broker cluster listening on addr
// (host:port; port 0 picks a free one). An empty host means 127.0.0.1: the
// broker advertises the address it listens on, so it must be one clients can
// dial.
func StartEmbedded(ctx context.Context, addr string) (*Embedded, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("embedded kafka address %q: %w", addr, err)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	addr = net.JoinHostPort(host, port)
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.ClusterID("apim-embedded"),
		// kfake always asks for 127.0.0.1:<port>; listen where we were told.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, addr)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("start embedded kafka on %s: %w", addr, err)
	}
	return &Embedded{c: c}, nil
}

// Brokers returns the bootstrap addresses of the broker.
func (e *Embedded) Brokers() []string {
	return e.c.ListenAddrs()
}

// Close stops the broker; its data is gone.
func (e *Embedded) Close() {
	e.c.Close()
}

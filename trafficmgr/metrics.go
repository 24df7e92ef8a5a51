package trafficmgr

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
)

// managerMetrics are a Manager's metrics (apim_trafficmgr_*).
type managerMetrics struct {
	consumedOK, consumedInvalid, consumedStale prometheus.Counter
	decisions, publishErrors                   prometheus.Counter
	partitions                                 prometheus.Gauge
	keys                                       prometheus.GaugeFunc
	collectors                                 []prometheus.Collector
}

func newManagerMetrics(keys func() int) *managerMetrics {
	consumed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "apim", Subsystem: "trafficmgr", Name: "counts_consumed_total",
		Help: "Gateway counts read from " + TopicCounts + " by result: ok, invalid (undecodable or wrong schema; skipped), stale (of a window that had ended; dropped).",
	}, []string{"result"})
	m := &managerMetrics{
		consumedOK:      consumed.WithLabelValues("ok"),
		consumedInvalid: consumed.WithLabelValues("invalid"),
		consumedStale:   consumed.WithLabelValues("stale"),
		decisions: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "apim", Subsystem: "trafficmgr", Name: "decisions_published_total",
			Help: "Throttle decisions written to " + TopicDecisions + " (heartbeats not included).",
		}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "apim", Subsystem: "trafficmgr", Name: "publish_errors_total",
			Help: "Batches of decisions that could not be written to " + TopicDecisions + " (the next refresh republishes every live key).",
		}),
		partitions: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "apim", Subsystem: "trafficmgr", Name: "assigned_partitions",
			Help: "Partitions of " + TopicCounts + " the consumer group currently assigns to this replica.",
		}),
	}
	m.keys = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "apim", Subsystem: "trafficmgr", Name: "keys",
		Help: "Throttle keys this replica currently sums counts for.",
	}, func() float64 { return float64(keys()) })
	m.collectors = []prometheus.Collector{consumed, m.decisions, m.publishErrors, m.partitions, m.keys}
	return m
}

// agentMetrics are an Agent's metrics (apim_throttle_agent_*). The view
// holds the admission counters, resolved here once so that Admit neither
// allocates nor locks for them.
type agentMetrics struct {
	batches, counts, publishErrors, invalid prometheus.Counter
	applied                                 prometheus.Counter
	refusedDecision, refusedShare           prometheus.Counter
	admittedDisconnected                    prometheus.Counter
	connected, fleetSize                    prometheus.GaugeFunc // set by addGauges
	collectors                              []prometheus.Collector
}

func newAgentMetrics() *agentMetrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "apim", Subsystem: "throttle_agent", Name: name, Help: help})
	}
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "apim", Subsystem: "throttle_agent", Name: "refused_total",
		Help: "Requests refused by fleet-wide throttling, by reason: decision (a traffic manager's decision throttles the key until its window ends), share (over this gateway's share of what is left of the limit, or of the whole limit while disconnected).",
	}, []string{"reason"})
	m := &agentMetrics{
		batches: counter("batches_published_total", "Batches of counts written to "+TopicCounts+"."),
		counts:  counter("counts_published_total", "Counts (one per throttle key and window) written to "+TopicCounts+"."),
		publishErrors: counter("publish_errors_total",
			"Failed writes of a batch of counts or of a presence announcement (counts are republished whole on the next flush)."),
		invalid: counter("messages_invalid_total", "Messages on "+TopicDecisions+" skipped as undecodable or of another schema version."),
		applied: counter("decisions_applied_total",
			"Traffic managers' decisions merged into this gateway's view of the fleet (decisions about an ended window not included)."),
		refusedDecision: refused.WithLabelValues("decision"),
		refusedShare:    refused.WithLabelValues("share"),
		admittedDisconnected: counter("admitted_disconnected_total",
			"Requests admitted while no traffic manager was heard from, on this gateway's share of the limit."),
	}
	m.collectors = []prometheus.Collector{
		m.batches, m.counts, m.publishErrors, m.invalid, m.applied, refused, m.admittedDisconnected,
	}
	return m
}

// addGauges adds the gauges that read an Agent's state.
func (m *agentMetrics) addGauges(connected func() bool, fleetSize func() int) {
	m.connected = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "apim", Subsystem: "throttle_agent", Name: "connected",
		Help: "1 when a traffic manager was heard from within the silence threshold, else 0 (the gateway then admits at most its share of each limit).",
	}, func() float64 {
		if connected() {
			return 1
		}
		return 0
	})
	m.fleetSize = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "apim", Subsystem: "throttle_agent", Name: "fleet_size",
		Help: "Number of gateways this one counts in its fleet, hence divides each limit by.",
	}, func() float64 { return float64(fleetSize()) })
	m.collectors = append(m.collectors, m.connected, m.fleetSize)
}

// register registers every collector with reg, or none of them.
func register(reg *prometheus.Registry, cs []prometheus.Collector) error {
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, r := range cs[:i] {
				reg.Unregister(r)
			}
			return err
		}
	}
	return nil
}

// assignedPartitions is the number of partitions of TopicCounts that the
// coordinator of GroupID assigns to the members whose client id is
// clientID: the group's view, as an operator's tools show it.
func assignedPartitions(ctx context.Context, client *kafka.Client, clientID string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	resp, err := client.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{GroupID}})
	if err != nil {
		return 0, fmt.Errorf("describe group %s: %w", GroupID, err)
	}
	n := 0
	for _, g := range resp.Groups {
		if g.Error != nil {
			return 0, fmt.Errorf("describe group %s: %w", GroupID, g.Error)
		}
		for _, mem := range g.Members {
			if mem.ClientID != clientID {
				continue
			}
			for _, t := range mem.MemberAssignments.Topics {
				if t.Topic == TopicCounts {
					n += len(t.Partitions)
				}
			}
		}
	}
	return n, nil
}

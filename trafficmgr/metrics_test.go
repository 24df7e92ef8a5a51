package trafficmgr

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/apim-dev/apim/ratelimit"
)

func TestMetricsRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewManager(ManagerConfig{Brokers: []string{"127.0.0.1:9092"}, ID: "tm-1", Registry: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := NewAgent(AgentConfig{Brokers: []string{"127.0.0.1:9092"}, GatewayID: "gw-a", FleetSize: 3, Registry: reg}); err != nil {
		t.Fatal(err)
	}
	// A second of each in the same registry is refused, whole.
	var already prometheus.AlreadyRegisteredError
	if _, err := NewManager(ManagerConfig{Brokers: []string{"127.0.0.1:9092"}, ID: "tm-2", Registry: reg}); !errors.As(err, &already) {
		t.Errorf("second manager: %v, want AlreadyRegisteredError", err)
	}
	if _, err := NewAgent(AgentConfig{Brokers: []string{"127.0.0.1:9092"}, GatewayID: "gw-b", Registry: reg}); !errors.As(err, &already) {
		t.Errorf("second agent: %v, want AlreadyRegisteredError", err)
	}
	// Not started: never heard from a traffic manager, the configured fleet.
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP apim_throttle_agent_connected 1 when a traffic manager was heard from within the silence threshold, else 0 (the gateway then admits at most its share of each limit).
# TYPE apim_throttle_agent_connected gauge
apim_throttle_agent_connected 0
# HELP apim_throttle_agent_fleet_size Number of gateways this one counts in its fleet, hence divides each limit by.
# TYPE apim_throttle_agent_fleet_size gauge
apim_throttle_agent_fleet_size 3
# HELP apim_trafficmgr_assigned_partitions Partitions of apim.throttle.counts the consumer group currently assigns to this replica.
# TYPE apim_trafficmgr_assigned_partitions gauge
apim_trafficmgr_assigned_partitions 0
# HELP apim_trafficmgr_keys Throttle keys this replica currently sums counts for.
# TYPE apim_trafficmgr_keys gauge
apim_trafficmgr_keys 0
`), "apim_throttle_agent_connected", "apim_throttle_agent_fleet_size", "apim_trafficmgr_assigned_partitions", "apim_trafficmgr_keys"); err != nil {
		t.Error(err)
	}
}

// BenchmarkAdmit measures the agent's part of a rate-limit call, metrics
// included: it must not allocate.
func BenchmarkAdmit(b *testing.B) {
	a, err := NewAgent(AgentConfig{Brokers: []string{"127.0.0.1:9092"}, GatewayID: "gw-a", Registry: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	c := ratelimit.FleetCount{Key: "subscription|1|3:sub|Gold", Start: now.Truncate(time.Minute), Limit: 1 << 40}
	c.End = c.Start.Add(time.Minute)
	b.ReportAllocs()
	for b.Loop() {
		c.Count++
		if !a.Admit(c, now) {
			b.Fatal("refused")
		}
	}
}

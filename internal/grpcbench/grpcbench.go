// Package grpcbench holds what the gRPC benchmarks of several packages
// share: round trips timed against a baseline in the same loop, and an
// ext_authz server that allows everything, the floor of any Check.
package grpcbench

import (
	"context"
	"slices"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
)

// RoundTrips runs base then call, alternately, for the benchmark's loop,
// so that both see the same machine, and reports the p50 of each and
// their ratio as metrics named after name ("check-p50-µs",
// "health-p50-µs", "check/health").
func RoundTrips(b *testing.B, name string, base, call func() error) {
	var calls, bases []time.Duration
	b.ReportAllocs()
	for b.Loop() {
		t0 := time.Now()
		if err := base(); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := call(); err != nil {
			b.Fatal(err)
		}
		bases, calls = append(bases, t1.Sub(t0)), append(calls, time.Since(t1))
	}
	c, h := p50(calls), p50(bases)
	b.ReportMetric(c, name+"-p50-µs")
	b.ReportMetric(h, "health-p50-µs")
	b.ReportMetric(c/h, name+"/health")
}

// p50 is the median of d in microseconds; it sorts d.
func p50(d []time.Duration) float64 {
	slices.Sort(d)
	return float64(d[len(d)/2].Nanoseconds()) / 1000
}

// AllowAll is an ext_authz server that allows every request unread.
type AllowAll struct {
	authv3.UnimplementedAuthorizationServer
}

// Check allows.
func (AllowAll) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
	}, nil
}

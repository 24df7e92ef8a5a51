package runner

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

func testGroup(t *testing.T) Group {
	return Group{Logger: zerolog.New(zerolog.NewTestWriter(t)), Panics: NewPanicCounter(), Backoff: time.Millisecond}
}

func TestPanickingRunnerIsStartedAgain(t *testing.T) {
	g := testGroup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var starts, steadyStopped atomic.Int32
	flaky := Named("flaky", Func(func(ctx context.Context) error {
		if starts.Add(1) <= 2 {
			panic("a bug")
		}
		cancel() // third start: healthy; end the test
		<-ctx.Done()
		return nil
	}))
	steady := Named("steady", Func(func(ctx context.Context) error {
		<-ctx.Done()
		steadyStopped.Add(1)
		return nil
	}))
	if err := g.Run(ctx, flaky, steady); err != nil {
		t.Fatalf("Run = %v, want nil after two recovered panics", err)
	}
	if starts.Load() != 3 || steadyStopped.Load() != 1 {
		t.Fatalf("flaky started %d times, steady stopped %d; want 3 and 1", starts.Load(), steadyStopped.Load())
	}
	if n := testutil.ToFloat64(g.Panics.WithLabelValues("flaky")); n != 2 {
		t.Errorf("apim_panics_total{component=flaky} = %v, want 2", n)
	}
}

func TestGoroutinePanicRestartsItsRunner(t *testing.T) {
	g := testGroup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var starts atomic.Int32
	r := Named("reader", Func(func(ctx context.Context) error {
		if starts.Add(1) > 1 {
			return errors.New("second start")
		}
		ctx, stop := context.WithCancelCause(ctx)
		defer stop(nil)
		go Safe(stop, func() { panic("bad message") })()
		<-ctx.Done()
		return Cause(ctx)
	}))
	err := g.Run(ctx, r)
	if err == nil || err.Error() != "second start" {
		t.Fatalf("Run = %v, want the second start's error (the panic restarted it)", err)
	}
	if n := testutil.ToFloat64(g.Panics.WithLabelValues("reader")); n != 1 {
		t.Errorf("panics counted %v, want 1", n)
	}
}

func TestRunnerPanickingOverAndOverStopsTheGroup(t *testing.T) {
	g := testGroup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := g.Run(ctx, Named("broken", Func(func(context.Context) error { panic("always") })))
	if err == nil || !strings.Contains(err.Error(), "broken panicked 6 times") {
		t.Fatalf("Run = %v, want the group stopped naming the runner", err)
	}
	if err := Run(ctx, Func(func(context.Context) error { return errors.New("plain") })); err == nil || err.Error() != "plain" {
		t.Fatalf("a returned error stops the group as it is: %v", err)
	}
}

type panickingHealth struct {
	healthpb.UnimplementedHealthServer
}

func (panickingHealth) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	var p *healthpb.HealthCheckResponse
	return &healthpb.HealthCheckResponse{Status: p.Status}, nil // nil dereference
}

func TestGRPCRecoveryFailsTheCallNotTheProcess(t *testing.T) {
	panics := NewPanicCounter()
	srv := grpc.NewServer(GRPCRecovery("sidecar", zerolog.New(zerolog.NewTestWriter(t)), panics)...)
	healthpb.RegisterHealthServer(srv, panickingHealth{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range 2 {
		_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if status.Code(err) != codes.Internal {
			t.Fatalf("Check = %v, want Internal", err)
		}
	}
	if n := testutil.ToFloat64(panics.WithLabelValues("sidecar")); n != 2 {
		t.Errorf("panics counted %v, want 2", n)
	}
}

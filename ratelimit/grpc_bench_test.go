package ratelimit

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/apim-dev/apim/internal/grpcbench"
	"github.com/apim-dev/apim/internal/gwstate"
	"github.com/apim-dev/apim/internal/model"
)

// benchKeys is the number of active subscriptions the benchmarks count.
const benchKeys = 100_000

// benchServer is a Server with one subscription policy that never refuses,
// and benchKeys requests, one per subscription, each already counted once.
func benchServer(b *testing.B) (*Server, []*rlsv3.RateLimitRequest) {
	b.Helper()
	s, reqs, err := newBenchServer()
	if err != nil {
		b.Fatal(err)
	}
	return s, reqs
}

func newBenchServer() (*Server, []*rlsv3.RateLimitRequest, error) {
	st := gwstate.NewStore()
	st.Replace(&model.GatewayState{Policies: []model.Policy{
		{Level: model.LevelSubscription, Name: "Gold", RequestCount: 1 << 40, UnitTime: 1, TimeUnit: "day", StopOnQuotaReach: true},
	}})
	s, err := New(Config{State: st, Logger: zerolog.Nop()})
	if err != nil {
		return nil, nil, err
	}
	reqs := make([]*rlsv3.RateLimitRequest, benchKeys)
	for i := range reqs {
		reqs[i] = rlReq(fmt.Sprintf("4f9e2c1a-0000-4000-8000-%012d", i), "Gold")
		if _, err := s.ShouldRateLimit(context.Background(), reqs[i]); err != nil {
			return nil, nil, err
		}
	}
	return s, reqs, nil
}

// serveBench serves s and a health server as the gateway sidecar does (a
// grpc.NewServer with Codec on loopback) and returns a client connection.
func serveBench(b *testing.B, s rlsv3.RateLimitServiceServer) *grpc.ClientConn {
	b.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	g := grpc.NewServer(grpc.ForceServerCodecV2(Codec{}))
	rlsv3.RegisterRateLimitServiceServer(g, s)
	healthpb.RegisterHealthServer(g, health.NewServer())
	go func() { _ = g.Serve(lis) }()
	b.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	return conn
}

// BenchmarkShouldRateLimitGRPCParallel is decisions per second over
// loopback gRPC with parallel callers (RunParallel: GOMAXPROCS×-cpu
// goroutines on one connection, as Envoy multiplexes on one HTTP/2
// connection per worker), 100,000 subscriptions active. Client and server
// share the process, so decisions/s/core counts both sides' CPU.
func BenchmarkShouldRateLimitGRPCParallel(b *testing.B) {
	s, reqs := benchServer(b)
	client := rlsv3.NewRateLimitServiceClient(serveBench(b, s))
	ctx := context.Background()
	b.SetParallelism(16) // 32 callers on 2 cores: Envoy keeps many calls in flight
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime(b, os.Getpid())
	decideInParallel(ctx, b, client, reqs)
	b.StopTimer()
	cpu := cpuTime(b, os.Getpid()) - cpu0
	perSec := float64(b.N) / time.Since(start).Seconds()
	b.ReportMetric(perSec, "decisions/s")
	b.ReportMetric(perSec/float64(runtime.GOMAXPROCS(0)), "decisions/s/core")
	b.ReportMetric(float64(b.N)/cpu.Seconds(), "decisions/cpu-s")
}

// decideInParallel asks client for b.N decisions from RunParallel's
// callers, over reqs in turn; each must be OK.
func decideInParallel(ctx context.Context, b *testing.B, client rlsv3.RateLimitServiceClient, reqs []*rlsv3.RateLimitRequest) {
	var next atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.ShouldRateLimit(ctx, reqs[next.Add(1)%int64(len(reqs))])
			if err != nil || resp.GetOverallCode() != rlsv3.RateLimitResponse_OK {
				b.Errorf("ShouldRateLimit = %v, %v", resp, err)
				return
			}
		}
	})
}

// BenchmarkRLSRoundTrip is one ShouldRateLimit round trip over loopback gRPC
// against its baseline, a gRPC health check on the same server and
// connection, measured alternately in the same loop so that both see the
// same machine. It reports the p50 of each and their ratio. always-ok-server
// does the same with a server that answers OK unread (alwaysOK): the part
// of the ratio that is the messages' size, not the decision.
func BenchmarkRLSRoundTrip(b *testing.B) {
	s, reqs := benchServer(b)
	for _, bm := range []struct {
		name   string
		server rlsv3.RateLimitServiceServer
	}{{"rls", s}, {"always-ok-server", alwaysOK{}}} {
		b.Run(bm.name, func(b *testing.B) {
			conn := serveBench(b, bm.server)
			client := rlsv3.NewRateLimitServiceClient(conn)
			hc := healthpb.NewHealthClient(conn)
			ctx := context.Background()
			hreq := &healthpb.HealthCheckRequest{}
			i := 0
			grpcbench.RoundTrips(b, "rls", func() error {
				_, err := hc.Check(ctx, hreq)
				return err
			}, func() error {
				resp, err := client.ShouldRateLimit(ctx, reqs[i%benchKeys])
				i++
				if err == nil && resp.GetOverallCode() != rlsv3.RateLimitResponse_OK {
					err = fmt.Errorf("ShouldRateLimit = %v", resp)
				}
				return err
			})
		})
	}
}

// alwaysOK answers every request OK, with one status per descriptor as
// the rate-limit service does, without counting anything.
type alwaysOK struct {
	rlsv3.UnimplementedRateLimitServiceServer
}

func (alwaysOK) ShouldRateLimit(_ context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	resp := &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}
	for range req.GetDescriptors() {
		resp.Statuses = append(resp.Statuses, &rlsv3.RateLimitResponse_DescriptorStatus{
			Code:               rlsv3.RateLimitResponse_OK,
			CurrentLimit:       &rlsv3.RateLimitResponse_RateLimit{Name: "Gold", RequestsPerUnit: 5000, Unit: rlsv3.RateLimitResponse_RateLimit_MINUTE},
			LimitRemaining:     4999,
			DurationUntilReset: durationpb.New(30 * time.Second),
		})
	}
	return resp, nil
}

// serveEnv, when set in the environment of the test binary, makes it serve
// the benchmark's RLS (benchServer, behind grpc.NewServer with Codec, as
// the sidecar does) on a loopback port instead of running tests: it prints
// the address and serves until its standard input closes.
// BenchmarkShouldRateLimitGRPCServerCPU runs it so that the server's CPU
// time is its own. A value other than "1"
// is a file to write the server's CPU profile to: run the benchmark with
// -cpuprofile FILE and the server's profile is in FILE.server.
const serveEnv = "APIM_RLS_BENCH_SERVE"

func TestMain(m *testing.M) {
	if os.Getenv(serveEnv) == "" {
		os.Exit(m.Run())
	}
	s, _, err := newBenchServer()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if file := os.Getenv(serveEnv); file != "1" {
		f, err := os.Create(file) //nolint:gosec // G304: the parent benchmark's own profile path
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	g := grpc.NewServer(grpc.ForceServerCodecV2(Codec{}))
	s.Register(g)
	go func() { _ = g.Serve(lis) }()
	fmt.Println(lis.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
	g.Stop()
}

// BenchmarkShouldRateLimitGRPCServerCPU is BenchmarkShouldRateLimitGRPCParallel
// with the server in a process of its own (this test binary, run with
// serveEnv), so that its CPU time can be told from the client's: it reports
// the server's CPU time per decision and decisions per second of server CPU
// (one core fully used). The client's share is reported too.
func BenchmarkShouldRateLimitGRPCServerCPU(b *testing.B) {
	cmd := exec.Command(os.Args[0]) //nolint:gosec // G702: this test binary, run again as the server
	serve := "1"
	if f := flag.Lookup("test.cpuprofile"); f != nil && f.Value.String() != "" {
		serve = f.Value.String() + ".server"
		if !filepath.IsAbs(serve) {
			serve = filepath.Join(testOutputDir(), serve)
		}
	}
	cmd.Env = append(os.Environ(), serveEnv+"="+serve)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = stdin.Close(); _ = cmd.Wait() })
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("serving process: %v", err)
	}
	conn, err := grpc.NewClient(strings.TrimSpace(addr), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	client := rlsv3.NewRateLimitServiceClient(conn)
	ctx := context.Background()
	reqs := make([]*rlsv3.RateLimitRequest, benchKeys)
	for i := range reqs { // the same subscriptions the server counted
		reqs[i] = rlReq(fmt.Sprintf("4f9e2c1a-0000-4000-8000-%012d", i), "Gold")
	}
	if _, err := client.ShouldRateLimit(ctx, reqs[0]); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(16)
	b.ReportAllocs()
	srv0, self0 := cpuTime(b, cmd.Process.Pid), cpuTime(b, os.Getpid())
	start := time.Now()
	b.ResetTimer()
	decideInParallel(ctx, b, client, reqs)
	b.StopTimer()
	wall := time.Since(start)
	srv, self := cpuTime(b, cmd.Process.Pid)-srv0, cpuTime(b, os.Getpid())-self0
	n := float64(b.N)
	b.ReportMetric(n/wall.Seconds(), "decisions/s")
	b.ReportMetric(float64(srv.Microseconds())/n, "server-cpu-µs/decision")
	b.ReportMetric(n/srv.Seconds(), "decisions/server-cpu-s")
	b.ReportMetric(float64(self.Microseconds())/n, "client-cpu-µs/decision")
	b.ReportMetric(n/(srv+self).Seconds(), "decisions/cpu-s")
}

// cpuTime is a process's user and system CPU time, from /proc/<pid>/stat.
func cpuTime(b *testing.B, pid int) time.Duration {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name (in parentheses, may hold spaces):
	// utime is the 14th field of the line, stime the 15th.
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %s", pid, data)
	}
	const clkTck = 100 // USER_HZ
	return time.Duration(utime+stime) * time.Second / clkTck
}

// testOutputDir is where the test binary writes its profiles: -test.outputdir,
// else the working directory.
func testOutputDir() string {
	if f := flag.Lookup("test.outputdir"); f != nil && f.Value.String() != "" {
		return f.Value.String()
	}
	return "."
}

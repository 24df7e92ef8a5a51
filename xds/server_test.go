package xds

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/rs/zerolog"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/apim-dev/apim/internal/model"
)

// fakeSource is an in-memory DeploymentSource that counts its loads.
type fakeSource struct {
	mu    sync.Mutex
	deps  map[string][]model.Deployment
	err   error
	loads int
}

func (f *fakeSource) set(env string, ds []model.Deployment, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deps[env], f.err = ds, err
}

func (f *fakeSource) Deployments(_ context.Context, env string) ([]model.Deployment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loads++
	return f.deps[env], f.err
}

func (f *fakeSource) Environments(context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var envs []string
	for env := range f.deps {
		envs = append(envs, env)
	}
	return envs, nil
}

func (f *fakeSource) loadCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loads
}

var _ DeploymentSource = (*fakeSource)(nil)

// startServer runs a server on a free port until the test ends.
func startServer(t *testing.T, src DeploymentSource) (*Server, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{
		Listener: lis,
		Source:   src,
		Sidecar:  Upstream{Address: "127.0.0.1", Port: 8081},
		HoldOff:  5 * time.Millisecond,
		MaxDelay: 50 * time.Millisecond,
		Logger:   zerolog.New(zerolog.NewTestWriter(t)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Start returned %v after cancel, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Start did not return after cancel")
		}
	})
	return s, lis.Addr().String()
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// routeNames lists the route names in an environment's snapshot.
func routeNames(t *testing.T, s *Server, env string) []string {
	t.Helper()
	snap, err := s.Cache().GetSnapshot(env)
	if err != nil {
		t.Fatalf("no snapshot for %s: %v", env, err)
	}
	var names []string
	for _, r := range snap.GetResources(resource.RouteType) {
		for _, vh := range r.(*routev3.RouteConfiguration).GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				names = append(names, rt.GetName())
			}
		}
	}
	return names
}

func TestRunnerBuildsAndKeepsLastGoodSnapshot(t *testing.T) {
	simple := readDeployments(t, "testdata/in/simple.yaml")
	src := &fakeSource{deps: map[string][]model.Deployment{model.DefaultEnvironment: simple}}
	s, _ := startServer(t, src)

	eventually(t, "the initial snapshot", func() bool { v, _ := s.EnvironmentStatus(model.DefaultEnvironment); return v != "" })
	v1, _ := s.EnvironmentStatus(model.DefaultEnvironment)
	if got := routeNames(t, s, model.DefaultEnvironment); len(got) != 1 || !strings.HasSuffix(got[0], "GET /greet") {
		t.Fatalf("routes = %v, want the GET /greet route", got)
	}

	// A new resource is served after a notification.
	changed := readDeployments(t, "testdata/in/simple.yaml")
	changed[0].API.Operations = append(changed[0].API.Operations, model.Operation{Target: "/bye", Verb: "POST", AuthType: model.AuthNone})
	src.set(model.DefaultEnvironment, changed, nil)
	s.Notify()
	eventually(t, "the changed snapshot", func() bool { v, _ := s.EnvironmentStatus(model.DefaultEnvironment); return v != v1 })
	v2, _ := s.EnvironmentStatus(model.DefaultEnvironment)
	if got := routeNames(t, s, model.DefaultEnvironment); len(got) != 2 {
		t.Fatalf("routes = %v, want GET /greet and POST /bye", got)
	}

	// An invalid API is not pushed: the last good snapshot stays, and why is recorded.
	broken := readDeployments(t, "testdata/in/simple.yaml")
	broken[0].API.Operations[0].Target = "no-slash"
	src.set(model.DefaultEnvironment, broken, nil)
	s.Notify()
	eventually(t, "the translation error", func() bool { _, err := s.EnvironmentStatus(model.DefaultEnvironment); return err != nil })
	v, err := s.EnvironmentStatus(model.DefaultEnvironment)
	if v != v2 || !strings.Contains(err.Error(), "api 0f6a1c2e-0001-4000-8000-000000000001") {
		t.Errorf("status = %q, %v; want version %q and an error naming the API", v, err, v2)
	}
	if snap, _ := s.Cache().GetSnapshot(model.DefaultEnvironment); snap.GetVersion(resource.RouteType) != v2 {
		t.Errorf("cache serves version %q, want the last good %q", snap.GetVersion(resource.RouteType), v2)
	}
	if got := routeNames(t, s, model.DefaultEnvironment); len(got) != 2 {
		t.Errorf("routes = %v, want the last good two", got)
	}

	// Fixing it clears the error; unchanged content keeps the version.
	src.set(model.DefaultEnvironment, changed, nil)
	s.Notify()
	eventually(t, "the error to clear", func() bool { _, err := s.EnvironmentStatus(model.DefaultEnvironment); return err == nil })
	if v, _ := s.EnvironmentStatus(model.DefaultEnvironment); v != v2 {
		t.Errorf("version = %q after an unchanged rebuild, want %q", v, v2)
	}

	// A source failure also keeps the snapshot and is recorded.
	src.set(model.DefaultEnvironment, changed, errors.New("database is down"))
	s.Notify()
	eventually(t, "the load error", func() bool { _, err := s.EnvironmentStatus(model.DefaultEnvironment); return err != nil })
	if _, err := s.EnvironmentStatus(model.DefaultEnvironment); !strings.Contains(err.Error(), "database is down") {
		t.Errorf("error = %v, want the source's", err)
	}
}

func TestRunnerCoalescesNotifications(t *testing.T) {
	src := &fakeSource{deps: map[string][]model.Deployment{model.DefaultEnvironment: readDeployments(t, "testdata/in/simple.yaml")}}
	s, _ := startServer(t, src)
	eventually(t, "the initial snapshot", func() bool { v, _ := s.EnvironmentStatus(model.DefaultEnvironment); return v != "" })
	before := src.loadCount()
	for range 100 {
		s.Notify()
	}
	time.Sleep(200 * time.Millisecond) // longer than MaxDelay
	if got := src.loadCount() - before; got != 1 {
		t.Errorf("100 quick notifications caused %d rebuilds, want 1", got)
	}
}

// TestServerRecordsACKAndNACK talks ADS as an Envoy would: it takes the
// clusters, ACKs them, then rejects a version, and reads the status.
func TestServerRecordsACKAndNACK(t *testing.T) {
	src := &fakeSource{deps: map[string][]model.Deployment{model.DefaultEnvironment: readDeployments(t, "testdata/in/simple.yaml")}}
	s, addr := startServer(t, src)
	eventually(t, "the initial snapshot", func() bool { v, _ := s.EnvironmentStatus(model.DefaultEnvironment); return v != "" })
	version, _ := s.EnvironmentStatus(model.DefaultEnvironment)

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	hc, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v; want SERVING", hc.GetStatus(), err)
	}

	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "gw-1", Cluster: model.DefaultEnvironment}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetVersionInfo() != version || len(resp.GetResources()) != 2 {
		t.Fatalf("got version %q with %d clusters, want %q with the sidecar and the backend", resp.GetVersionInfo(), len(resp.GetResources()), version)
	}
	ack := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}
	if err := stream.Send(ack); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the ACK", func() bool {
		st := s.Status()
		return len(st) == 1 && st[0].Acked[resource.ClusterType] == version
	})

	// A new version, rejected.
	changed := readDeployments(t, "testdata/in/simple.yaml")
	changed[0].API.Production.URL = "http://other:9000"
	src.set(model.DefaultEnvironment, changed, nil)
	s.Notify()
	resp, err = stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	nack := &discoveryv3.DiscoveryRequest{
		Node: node, TypeUrl: resource.ClusterType, VersionInfo: version, ResponseNonce: resp.GetNonce(),
		ErrorDetail: &status.Status{Code: 3, Message: "cluster other: bad"},
	}
	if err := stream.Send(nack); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the NACK", func() bool {
		st := s.Status()
		return len(st) == 1 && st[0].LastNACK != nil
	})
	st := s.Status()[0]
	if st.NodeID != "gw-1" || st.Environment != model.DefaultEnvironment || !st.Connected {
		t.Errorf("status = %+v, want gw-1 of Default, connected", st)
	}
	if st.LastNACK.Version != resp.GetVersionInfo() || st.LastNACK.Message != "cluster other: bad" || st.Acked[resource.ClusterType] != version {
		t.Errorf("NACK = %+v, acked %q; want version %q rejected with its message and %q still acked", st.LastNACK, st.Acked[resource.ClusterType], resp.GetVersionInfo(), version)
	}
}

func TestNewRejectsMissingConfig(t *testing.T) {
	_, err := New(Config{})
	if err == nil {
		t.Fatal("New accepted an empty config")
	}
	for _, want := range []string{"xds.address", "deployment source", "xds.sidecar"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

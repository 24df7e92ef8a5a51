package xds

import (
	"context"
	"fmt"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/apim-dev/apim/internal/model"
)

// newTestServer is a server that is not started: the tests call its rebuild
// steps directly.
func newTestServer(t testing.TB, src DeploymentSource) *Server {
	t.Helper()
	s, err := New(Config{Address: "127.0.0.1:0", Source: src, Sidecar: Upstream{Address: "127.0.0.1", Port: 8081}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRebuildVersions checks when a rebuild pushes a new version: only when
// the resources change, whatever else in the deployments does.
func TestRebuildVersions(t *testing.T) {
	load := func() []model.Deployment { return readDeployments(t, "testdata/in/simple.yaml") }
	src := &fakeSource{deps: map[string][]model.Deployment{model.DefaultEnvironment: load()}}
	s := newTestServer(t, src)
	ctx := context.Background()
	rebuild := func(ds []model.Deployment) string {
		t.Helper()
		src.set(model.DefaultEnvironment, ds, nil)
		v, err := s.rebuildEnvironment(ctx, model.DefaultEnvironment)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := rebuild(load()); v == "" {
		t.Fatal("the first rebuild set no snapshot")
	}

	if v := rebuild(load()); v != "" {
		t.Errorf("an equal reload pushed version %s", v)
	}
	redeployed := load()
	redeployed[0].RevisionID, redeployed[0].DeployedAt = "rev-2", time.Unix(1e9, 0)
	redeployed[0].API.Description, redeployed[0].API.Generation = "edited", 42
	redeployed[0].API.Status = model.StatusDeprecated
	if v := rebuild(redeployed); v != "" {
		t.Errorf("a new revision with the same resources pushed version %s", v)
	}
	if v := rebuild(redeployed); v != "" {
		t.Errorf("reloading it again pushed version %s", v)
	}

	// Back to the first input: still the same content.
	if v := rebuild(load()); v != "" {
		t.Errorf("going back to the first input pushed version %s", v)
	}

	// Blocking the API (an api event, not a deployment) changes the routes.
	blocked := load()
	blocked[0].API.Status = model.StatusBlocked
	v := rebuild(blocked)
	if v == "" {
		t.Fatal("blocking the API pushed nothing")
	}
	snap, err := s.Cache().GetSnapshot(model.DefaultEnvironment)
	if err != nil {
		t.Fatal(err)
	}
	rc := snap.GetResources(resource.RouteType)["http_8280"].(*routev3.RouteConfiguration)
	if got := rc.GetVirtualHosts()[0].GetRoutes()[0].GetDirectResponse().GetStatus(); got != 503 || snap.GetVersion(resource.RouteType) != v {
		t.Errorf("served version %s answers %d, want version %s answering 503", snap.GetVersion(resource.RouteType), got, v)
	}
	if v := rebuild(load()); v == "" {
		t.Error("unblocking the API pushed nothing")
	}
}

// TestServerReady checks that neither Ready nor gRPC health say ready until
// every environment has a snapshot, and that they stay ready when a later
// rebuild fails.
func TestServerReady(t *testing.T) {
	good := readDeployments(t, "testdata/in/simple.yaml")
	broken := readDeployments(t, "testdata/in/simple.yaml")
	broken[0].API.Operations[0].Target = "no-slash"
	staging := readDeployments(t, "testdata/in/simple.yaml")
	staging[0].Environment = "Staging"
	src := &fakeSource{deps: map[string][]model.Deployment{model.DefaultEnvironment: good, "Staging": broken}}
	s, addr := startServer(t, src)
	if s.Ready() {
		t.Fatal("ready before any build")
	}

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := func() healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hc, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return hc.GetStatus()
	}

	eventually(t, "Default's snapshot and Staging's translation error", func() bool {
		v, _ := s.EnvironmentStatus(model.DefaultEnvironment)
		_, err := s.EnvironmentStatus("Staging")
		return v != "" && err != nil
	})
	if s.Ready() || health() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Ready = %v, health %v with Staging never built; want false, NOT_SERVING", s.Ready(), health())
	}

	src.set("Staging", staging, nil)
	s.Notify()
	eventually(t, "ready", s.Ready)
	if v, err := s.EnvironmentStatus("Staging"); v == "" || err != nil {
		t.Errorf("Staging status = %q, %v; want a version", v, err)
	}
	if got := health(); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health = %v once ready, want SERVING", got)
	}

	// A failed rebuild keeps the last good snapshot, and the server ready.
	src.set("Staging", broken, nil)
	s.Notify()
	eventually(t, "Staging's second error", func() bool { _, err := s.EnvironmentStatus("Staging"); return err != nil })
	if !s.Ready() || health() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("Ready = %v, health %v after a failed rebuild; want true, SERVING", s.Ready(), health())
	}
}

// BenchmarkRebuild is one rebuild of an environment of n APIs as the runner
// does it, with the deployments loaded from memory: "changed" alternates
// between deployments that differ in one endpoint, so every rebuild
// translates and pushes a new version; "redeployed" between deployments that
// differ only in their revision, which translates but keeps the version;
// "unchanged" reloads equal deployments, which keeps the version.
func BenchmarkRebuild(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		a := benchDeployments(n, 1, false)
		variant := map[string][]model.Deployment{
			"changed":    benchDeployments(n, 1, false),
			"redeployed": benchDeployments(n, 1, false),
			"unchanged":  benchDeployments(n, 1, false),
		}
		variant["changed"][n/2] = withEndpoint(variant["changed"][n/2], "http://moved.internal:8080/v1")
		variant["redeployed"][n/2].RevisionID = "rev-2"
		for _, mode := range []string{"changed", "redeployed", "unchanged"} {
			b.Run(fmt.Sprintf("apis=%d/%s", n, mode), func(b *testing.B) {
				src := &fakeSource{deps: map[string][]model.Deployment{model.DefaultEnvironment: a}}
				s := newTestServer(b, src)
				ctx := context.Background()
				if _, err := s.rebuildEnvironment(ctx, model.DefaultEnvironment); err != nil {
					b.Fatal(err)
				}
				inputs := [][]model.Deployment{variant[mode], a}
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					src.set(model.DefaultEnvironment, inputs[i%2], nil)
					i++
					v, err := s.rebuildEnvironment(ctx, model.DefaultEnvironment)
					if err != nil {
						b.Fatal(err)
					}
					if (v != "") != (mode == "changed") {
						b.Fatalf("%s rebuild returned version %q", mode, v)
					}
				}
			})
		}
	}
}

// BenchmarkContentHash is the hash of the resources of n APIs alone.
func BenchmarkContentHash(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		res, err := Translate(testInput(benchDeployments(n, 1, false)))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("apis=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := contentHash(res); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

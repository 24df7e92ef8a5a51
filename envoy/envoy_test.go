package envoy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"gopkg.in/yaml.v3"

	"github.com/apim-dev/apim/envoy"
	"github.com/apim-dev/apim/internal/model"
	"github.com/apim-dev/apim/xds"
)

// TestVersionMatchesGoMod keeps .envoy-version and the go-control-plane
// envoy module on the same major.minor.
func TestVersionMatchesGoMod(t *testing.T) {
	ver, err := os.ReadFile(filepath.Join("..", envoy.VersionFile))
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join("..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/envoyproxy/go-control-plane/envoy v(\d+\.\d+)\.`).FindSubmatch(gomod)
	if m == nil {
		t.Fatal("go.mod does not require github.com/envoyproxy/go-control-plane/envoy")
	}
	pinned := strings.TrimSpace(string(ver))
	if !regexp.MustCompile(`^\d+\.\d+\.\d+$`).MatchString(pinned) {
		t.Fatalf("%s holds %q, want a version like 1.40.0", envoy.VersionFile, pinned)
	}
	if !strings.HasPrefix(pinned, string(m[1])+".") {
		t.Errorf("%s is %s but go.mod has go-control-plane/envoy v%s.x", envoy.VersionFile, pinned, m[1])
	}
}

func TestBootstrapRejectsMissingFields(t *testing.T) {
	_, err := envoy.Bootstrap(envoy.BootstrapConfig{XDSPort: 70000})
	if err == nil {
		t.Fatal("Bootstrap accepted an empty config")
	}
	for _, want := range []string{"node id is required", "cluster (the gateway environment) is required", "xds address", "admin address"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// validate runs the real Envoy in validate mode on a config file.
func validate(t *testing.T, config []byte) {
	t.Helper()
	bin, err := envoy.Binary()
	if err != nil {
		t.Fatalf("%v (run scripts/get-envoy.sh once to fetch Envoy)", err)
	}
	path := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(path, config, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--mode", "validate", "-c", path, "--log-level", "warn").CombinedOutput()
	if err != nil {
		t.Fatalf("envoy --mode validate: %v\n%s\nconfig:\n%s", err, out, config)
	}
}

func TestBootstrapValidates(t *testing.T) {
	for name, c := range map[string]envoy.BootstrapConfig{
		"ip":   {NodeID: "gw-1", Cluster: model.DefaultEnvironment, XDSAddress: "127.0.0.1", XDSPort: 18000, AdminAddress: "127.0.0.1", AdminPort: 9901},
		"name": {NodeID: "gw-2", Cluster: "Staging", XDSAddress: "control-plane.internal", XDSPort: 18000, AdminAddress: "0.0.0.0", AdminPort: 0},
	} {
		t.Run(name, func(t *testing.T) {
			out, err := envoy.Bootstrap(c)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"id: " + c.NodeID, "cluster: " + c.Cluster, "clusterName: xds_cluster", "apiType: GRPC"} {
				if !strings.Contains(string(out), want) {
					t.Errorf("bootstrap lacks %q:\n%s", want, out)
				}
			}
			validate(t, out)
		})
	}
}

// TestTranslationValidates proves that the real Envoy accepts what the
// translator produces: every golden input of the xds package is translated
// and loaded statically, its route configuration inlined in the listener.
func TestTranslationValidates(t *testing.T) {
	ins, err := filepath.Glob(filepath.Join("..", "xds", "testdata", "in", "*.yaml"))
	if err != nil || len(ins) == 0 {
		t.Fatalf("no xds test inputs: %v", err)
	}
	for _, in := range ins {
		t.Run(filepath.Base(in), func(t *testing.T) {
			res, err := xds.Translate(xds.Input{
				Environment:       model.DefaultEnvironment,
				Deployments:       readDeployments(t, in),
				ListenerAddress:   "127.0.0.1",
				Sidecar:           xds.Upstream{Address: "127.0.0.1", Port: 8081},
				RateLimitFailOpen: true,
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Routes) != 1 {
				t.Fatalf("got %d route configurations, want 1", len(res.Routes))
			}
			static := &bootstrapv3.Bootstrap_StaticResources{}
			for _, r := range res.Listeners {
				static.Listeners = append(static.Listeners, inlineRoutes(t, r.(*listenerv3.Listener), res.Routes[0].(*routev3.RouteConfiguration)))
			}
			for _, r := range res.Clusters {
				static.Clusters = append(static.Clusters, r.(*clusterv3.Cluster))
			}
			out, err := envoy.MarshalYAML(&bootstrapv3.Bootstrap{StaticResources: static})
			if err != nil {
				t.Fatal(err)
			}
			validate(t, out)
		})
	}
}

// inlineRoutes replaces the listener's RDS reference with the route
// configuration itself, so that Envoy validates both without an xDS server.
func inlineRoutes(t *testing.T, l *listenerv3.Listener, rc *routev3.RouteConfiguration) *listenerv3.Listener {
	t.Helper()
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			var hcm hcmv3.HttpConnectionManager
			if err := f.GetTypedConfig().UnmarshalTo(&hcm); err != nil {
				t.Fatal(err)
			}
			if hcm.GetRds().GetRouteConfigName() != rc.GetName() {
				t.Fatalf("listener %s routes to %q, not %q", l.GetName(), hcm.GetRds().GetRouteConfigName(), rc.GetName())
			}
			hcm.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc}
			a, err := anypb.New(&hcm)
			if err != nil {
				t.Fatal(err)
			}
			f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
		}
	}
	return l
}

// readDeployments reads a YAML list of deployments spelled with the model's
// JSON field names.
func readDeployments(t *testing.T, path string) []model.Deployment {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := yaml.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	var ds []model.Deployment
	if err := dec.Decode(&ds); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return ds
}

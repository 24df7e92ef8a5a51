package xds

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
	"gopkg.in/yaml.v3"

	"github.com/apim-dev/apim/internal/model"
)

var update = flag.Bool("update", false, "rewrite testdata/out from the current translation and delete stale files")

// testInput is the translation input of the golden tests.
func testInput(deployments []model.Deployment) Input {
	return Input{
		Environment:       model.DefaultEnvironment,
		Deployments:       deployments,
		ListenerPort:      8280,
		Sidecar:           Upstream{Address: "127.0.0.1", Port: 8081},
		RateLimitFailOpen: true,
	}
}

// readDeployments reads a YAML list of deployments spelled with the model's
// JSON field names, rejecting unknown fields.
func readDeployments(t testing.TB, path string) []model.Deployment {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := yaml.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	js, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	var ds []model.Deployment
	if err := dec.Decode(&ds); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return ds
}

// toYAML renders resources as a YAML list in protojson's field names.
func toYAML(t testing.TB, rs []types.Resource) []byte {
	t.Helper()
	seq := &yaml.Node{Kind: yaml.SequenceNode}
	for _, r := range rs {
		js, err := protojson.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var n yaml.Node
		if err := yaml.Unmarshal(js, &n); err != nil {
			t.Fatal(err)
		}
		blockStyle(n.Content[0])
		seq.Content = append(seq.Content, n.Content[0])
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(seq); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// blockStyle drops the flow and quoting style the JSON input left on every
// node; the encoder still quotes a string that would read as another type.
func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}

func TestTranslateGolden(t *testing.T) {
	ins, err := filepath.Glob("testdata/in/*.yaml")
	if err != nil || len(ins) == 0 {
		t.Fatalf("no inputs: %v", err)
	}
	want := map[string]bool{}
	for _, in := range ins {
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		t.Run(name, func(t *testing.T) {
			input := testInput(readDeployments(t, in))
			input.LimitInAuthz = strings.HasSuffix(name, "_in_authz") // gateway.rate_limit_mode ext_authz
			res, err := Translate(input)
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			if _, err := res.Snapshot("1"); err != nil {
				t.Fatal(err)
			}
			validateResources(t, res)
			for kind, rs := range map[string][]types.Resource{"listeners": res.Listeners, "routes": res.Routes, "clusters": res.Clusters} {
				out := filepath.Join("testdata", "out", name+"."+kind+".yaml")
				want[out] = true
				got := toYAML(t, rs)
				if *update {
					if err := os.WriteFile(out, got, 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				golden, err := os.ReadFile(out)
				if err != nil {
					t.Fatalf("%v (run go test ./xds -update)", err)
				}
				if d := cmp.Diff(string(golden), string(got)); d != "" {
					t.Errorf("%s differs (-golden +got), run go test ./xds -update if intended:\n%s", out, d)
				}
			}
		})
	}
	outs, _ := filepath.Glob("testdata/out/*")
	for _, out := range outs {
		if want[out] {
			continue
		}
		if *update {
			if err := os.Remove(out); err != nil {
				t.Fatal(err)
			}
			continue
		}
		t.Errorf("stale golden file %s (run go test ./xds -update)", out)
	}
}

// validateResources checks every resource the way Translate no longer does
// for each route and cluster: against its proto validation rules, and that it
// marshals (which needs valid UTF-8).
func validateResources(t testing.TB, res Resources) {
	t.Helper()
	for _, r := range slices.Concat(res.Listeners, res.Routes, res.Clusters) {
		if err := r.(interface{ ValidateAll() error }).ValidateAll(); err != nil {
			t.Errorf("%T %s: %v", r, resourceName(r), err)
		}
		if _, err := proto.Marshal(r); err != nil {
			t.Errorf("%T %s does not marshal: %v", r, resourceName(r), err)
		}
	}
}

// routesOf returns the single route configuration's routes per vhost.
func routesOf(t *testing.T, res Resources) map[string][]*routev3.Route {
	t.Helper()
	if len(res.Routes) != 1 {
		t.Fatalf("got %d route configurations, want 1", len(res.Routes))
	}
	out := map[string][]*routev3.Route{}
	for _, vh := range res.Routes[0].(*routev3.RouteConfiguration).GetVirtualHosts() {
		out[vh.GetName()] = vh.GetRoutes()
	}
	return out
}

// TestTranslateRouting checks what a caller of the gateway sees: which route
// (by Envoy's first-match rule) a request path and method reach.
func TestTranslateRouting(t *testing.T) {
	res, err := Translate(testInput(readDeployments(t, "testdata/in/params_sandbox_https.yaml")))
	if err != nil {
		t.Fatal(err)
	}
	routes := routesOf(t, res)["localhost"]
	first := func(method, path string, sandbox bool) string {
		for _, r := range routes {
			if !regexp.MustCompile(r.GetMatch().GetSafeRegex().GetRegex()).MatchString(path) {
				continue
			}
			ok := true
			for _, h := range r.GetMatch().GetHeaders() {
				v := map[bool]string{true: method, false: ""}[h.GetName() == ":method"]
				if h.GetName() == KeyTypeHeader && sandbox {
					v = model.KeyTypeSandbox
				}
				ok = ok && h.GetStringMatch().GetExact() == v
			}
			if ok {
				return r.GetName()
			}
		}
		return "404"
	}
	const id = "0f6a1c2e-0002-4000-8000-000000000002"
	tests := map[string]struct {
		method, path string
		sandbox      bool
		want         string
	}{
		"literal beats param":   {"GET", "/pets/v2/pets/findByStatus", false, id + ":GET /pets/findByStatus"},
		"param":                 {"GET", "/pets/v2/pets/42", false, id + ":GET /pets/{petId}"},
		"param trailing slash":  {"GET", "/pets/v2/pets/42/", false, id + ":GET /pets/{petId}"},
		"sandbox twin":          {"GET", "/pets/v2/pets/42", true, id + ":GET /pets/{petId}:sandbox"},
		"wildcard rest":         {"PUT", "/pets/v2/pets/42/photos/a/b.png", false, id + ":PUT /pets/{petId}/photos/*"},
		"wildcard empty rest":   {"PUT", "/pets/v2/pets/42/photos", false, id + ":PUT /pets/{petId}/photos/*"},
		"catch-all":             {"GET", "/pets/v2/anything/else", false, id + ":GET /*"},
		"catch-all base only":   {"GET", "/pets/v2", false, id + ":GET /*"},
		"other method":          {"DELETE", "/pets/v2/pets/42", false, "404"},
		"other version":         {"GET", "/pets/v3/pets", false, "404"},
		"wildcard method only":  {"GET", "/pets/v2/pets/42/photos", false, id + ":GET /*"},
		"param needs a segment": {"PUT", "/pets/v2/pets//photos/x", false, "404"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := first(tt.method, tt.path, tt.sandbox); got != tt.want {
				t.Errorf("%s %s sandbox=%v → %s, want %s", tt.method, tt.path, tt.sandbox, got, tt.want)
			}
		})
	}
}

func TestTranslateRewrite(t *testing.T) {
	tests := map[string]struct {
		endpoint, path, want string
	}{
		"root endpoint":              {"http://b", "/ctx/1.0.0/pets/1", "/pets/1"},
		"root endpoint, base only":   {"http://b/", "/ctx/1.0.0", "/"},
		"root endpoint, base slash":  {"http://b", "/ctx/1.0.0/", "/"},
		"endpoint path":              {"http://b/api/v1", "/ctx/1.0.0/pets/1", "/api/v1/pets/1"},
		"endpoint path, slash":       {"http://b/api/v1/", "/ctx/1.0.0/pets/1", "/api/v1/pets/1"},
		"endpoint path, base only":   {"http://b/api", "/ctx/1.0.0", "/api"},
		"base path regex is literal": {"http://b/x", "/ctx/1.0.0/1.0.0", "/x/1.0.0"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			b, err := newBackend(tt.endpoint, DefaultUpstreamCAFile)
			if err != nil {
				t.Fatal(err)
			}
			rw := newTranslator(Input{}).action(b, "/ctx/1.0.0").Route.GetRegexRewrite()
			got := regexp.MustCompile(rw.GetPattern().GetRegex()).ReplaceAllLiteralString(tt.path, rw.GetSubstitution())
			if got != tt.want {
				t.Errorf("%s via %s → %q, want %q", tt.path, tt.endpoint, got, tt.want)
			}
		})
	}
}

func TestTranslateContextExtensions(t *testing.T) {
	res, err := Translate(testInput(readDeployments(t, "testdata/in/params_sandbox_https.yaml")))
	if err != nil {
		t.Fatal(err)
	}
	var post *routev3.Route
	for _, r := range routesOf(t, res)["localhost"] {
		if r.GetName() == "0f6a1c2e-0002-4000-8000-000000000002:POST /pets" {
			post = r
		}
	}
	if post == nil {
		t.Fatal("no route for POST /pets")
	}
	var per extauthzv3.ExtAuthzPerRoute
	if err := post.GetTypedPerFilterConfig()["envoy.filters.http.ext_authz"].UnmarshalTo(&per); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"api_id": "0f6a1c2e-0002-4000-8000-000000000002", "api_name": "PetStore", "api_version": "v2",
		"api_context": "/pets", "environment": "Default", "resource": "POST /pets",
		"auth_type": "Application & Application User", "scopes": "pets:write pets:admin",
		"tier": "10KPerMin", "has_sandbox": "true", "has_production": "true", "security_schemes": "oauth2",
	}
	if n := len(per.GetCheckSettings().GetContextExtensions()); n != 1 {
		t.Errorf("%d context extensions, want only %s", n, model.RouteFieldsKey)
	}
	got, err := model.DecodeRouteFields(per.GetCheckSettings().GetContextExtensions()[model.RouteFieldsKey])
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("route fields (-want +got):\n%s", d)
	}
}

// TestTranslateLifecycle checks what a caller of an API sees in each
// lifecycle status: served, WSO2's 503 without any authorization or rate
// limit, or nothing at all (no route, so the listener's 404).
func TestTranslateLifecycle(t *testing.T) {
	const id = "0f6a1c2e-0001-4000-8000-000000000001"
	type want int
	const (
		served want = iota
		blocked
		gone
	)
	tests := map[model.LifecycleStatus]want{
		"":                     served,
		model.StatusCreated:    served,
		model.StatusPrototyped: served,
		model.StatusPublished:  served,
		model.StatusDeprecated: served,
		model.StatusBlocked:    blocked,
		model.StatusRetired:    gone,
	}
	for status, want := range tests {
		t.Run(string(status), func(t *testing.T) {
			d := readDeployments(t, "testdata/in/simple.yaml")[0]
			d.API.Status = status
			d.API.Sandbox = &model.Endpoint{URL: "http://sandbox:9090"}
			res, err := Translate(testInput([]model.Deployment{d}))
			if err != nil {
				t.Fatal(err)
			}
			validateResources(t, res)
			var clusters []string
			for _, c := range res.Clusters {
				clusters = append(clusters, resourceName(c))
			}
			routes := routesOf(t, res)["localhost"]
			switch want {
			case served:
				if len(routes) != 2 || routes[1].GetRoute().GetCluster() != "http_backend_8080" {
					t.Fatalf("routes = %v, want a sandbox and a production route to the backend", routes)
				}
				var per extauthzv3.ExtAuthzPerRoute
				if err := routes[1].GetTypedPerFilterConfig()[wellknown.HTTPExternalAuthorization].UnmarshalTo(&per); err != nil || !strings.Contains(per.GetCheckSettings().GetContextExtensions()[model.RouteFieldsKey], CtxAPIID+"="+id) {
					t.Errorf("ext_authz per-route config = %v (%v), want the API's context extensions", &per, err)
				}
				if want := []string{SidecarCluster, "http_backend_8080", "http_sandbox_9090"}; !slices.Equal(clusters, want) {
					t.Errorf("clusters = %v, want %v", clusters, want)
				}
			case blocked:
				if len(routes) != 1 {
					t.Fatalf("got %d routes, want one per operation and no sandbox twin", len(routes))
				}
				r := routes[0]
				if r.GetName() != id+":GET /greet" || !regexp.MustCompile(r.GetMatch().GetSafeRegex().GetRegex()).MatchString("/hello/1.0.0/greet") {
					t.Errorf("route %s matches %s, want the GET /greet route", r.GetName(), r.GetMatch().GetSafeRegex().GetRegex())
				}
				dr := r.GetDirectResponse()
				var body map[string]string
				if err := json.Unmarshal([]byte(dr.GetBody().GetInlineString()), &body); err != nil {
					t.Fatalf("body %q: %v", dr.GetBody().GetInlineString(), err)
				}
				wantBody := map[string]string{
					"code": "700700", "message": "API blocked",
					"description": "This API has been blocked temporarily. Please try again later or contact the system administrators.",
				}
				if dr.GetStatus() != 503 || !cmp.Equal(body, wantBody) {
					t.Errorf("direct response %d %v, want 503 %v", dr.GetStatus(), body, wantBody)
				}
				if h := r.GetResponseHeadersToAdd(); len(h) != 1 || h[0].GetHeader().GetKey() != "content-type" || h[0].GetHeader().GetValue() != "application/json" {
					t.Errorf("response headers = %v, want content-type: application/json", h)
				}
				if r.GetRoute() != nil {
					t.Errorf("route action %v: a blocked API must reach no backend nor rate limit", r.GetRoute())
				}
				var per extauthzv3.ExtAuthzPerRoute
				if err := r.GetTypedPerFilterConfig()[wellknown.HTTPExternalAuthorization].UnmarshalTo(&per); err != nil || !per.GetDisabled() {
					t.Errorf("ext_authz per-route config = %v (%v), want disabled", &per, err)
				}
				if want := []string{SidecarCluster}; !slices.Equal(clusters, want) {
					t.Errorf("clusters = %v, want only %v", clusters, want)
				}
			case gone:
				if rc := res.Routes[0].(*routev3.RouteConfiguration); len(rc.GetVirtualHosts()) != 0 {
					t.Errorf("virtual hosts = %v, want none", rc.GetVirtualHosts())
				}
				if want := []string{SidecarCluster}; !slices.Equal(clusters, want) {
					t.Errorf("clusters = %v, want only %v", clusters, want)
				}
			}
		})
	}

	t.Run("unknown status", func(t *testing.T) {
		d := readDeployments(t, "testdata/in/simple.yaml")[0]
		d.API.Status = "ARCHIVED"
		_, err := Translate(testInput([]model.Deployment{d}))
		if err == nil || !strings.Contains(err.Error(), "api "+id) || !strings.Contains(err.Error(), `lifeCycleStatus has an unknown value: "ARCHIVED"`) {
			t.Errorf("err = %v, want one naming the API and its status", err)
		}
	})
	t.Run("retired is not checked", func(t *testing.T) {
		// A retired API is not served, so an invalid one, or one whose base
		// path another API now uses, does not hold the environment back.
		d := readDeployments(t, "testdata/in/simple.yaml")[0]
		retired := d
		retired.API.ID, retired.API.Status = "retired-api", model.StatusRetired
		retired.API.Operations = []model.Operation{{Target: "no-slash", Verb: "GET", AuthType: model.AuthNone}}
		res, err := Translate(testInput([]model.Deployment{retired, d}))
		if err != nil {
			t.Fatal(err)
		}
		if got := routesOf(t, res)["localhost"]; len(got) != 1 || got[0].GetName() != id+":GET /greet" {
			t.Errorf("routes = %v, want only the served API's", got)
		}
	})
}

func TestTranslateErrors(t *testing.T) {
	ok := readDeployments(t, "testdata/in/simple.yaml")[0]
	bad := ok
	bad.API.ID, bad.APIID = "bad-api", "bad-api"
	bad.API.Operations = []model.Operation{{Target: "/x/{", Verb: "GET", AuthType: model.AuthNone}}
	otherEnv := ok
	otherEnv.Environment = "Staging"
	dupBase := ok
	dupBase.API.ID = "other-api"
	badVHost := ok
	badVHost.VHost = "example.com:8443"
	denied := testInput([]model.Deployment{withEndpoint(ok, "http://127.0.0.1:9901/quitquitquit")})
	denied.EndpointDeny = model.DefaultEndpointDeny(9901)
	tests := map[string]struct {
		in   Input
		want []string
	}{
		"denied endpoint":          {denied, []string{"api 0f6a1c2e-0001-4000-8000-000000000001", "127.0.0.1:9901 is a denied destination"}},
		"invalid api named":        {testInput([]model.Deployment{ok, bad}), []string{"api bad-api (Hello 1.0.0)", "operations[0].target"}},
		"two problems joined":      {testInput([]model.Deployment{bad, otherEnv}), []string{"api bad-api", "not Default"}},
		"same api twice":           {testInput([]model.Deployment{ok, ok}), []string{"deployed twice"}},
		"same base path on vhost":  {testInput([]model.Deployment{ok, dupBase}), []string{"/hello/1.0.0 on vhost localhost is already used"}},
		"vhost with port":          {testInput([]model.Deployment{badVHost}), []string{"must be a host name without port"}},
		"no sidecar":               {Input{Environment: "Default"}, []string{"sidecar address and port are required"}},
		"no environment":           {Input{Sidecar: Upstream{Address: "127.0.0.1", Port: 1}}, []string{"environment is required"}},
		"unresolvable port number": {testInput([]model.Deployment{withEndpoint(ok, "http://b:0")}), []string{"bad port"}},
		"name not utf-8":           {testInput([]model.Deployment{withName(ok, "caf\xe9")}), []string{"api 0f6a1c2e-0001-4000-8000-000000000001", "name is invalid: not valid UTF-8"}},
		"host not utf-8":           {testInput([]model.Deployment{withEndpoint(ok, "http://caf\xe9/")}), []string{"api 0f6a1c2e-0001-4000-8000-000000000001", "production_endpoints.url is invalid: not valid UTF-8"}},
		"vhost control character":  {testInput([]model.Deployment{withVHost(ok, "a\nb")}), []string{"api 0f6a1c2e-0001-4000-8000-000000000001 (Hello 1.0.0): vhost", "must be a host name"}},
		"environment not utf-8":    {Input{Environment: "\xff", Sidecar: Upstream{Address: "127.0.0.1", Port: 1}}, []string{"environment \"\\xff\" is not valid UTF-8"}},
		"tls host too long":        {testInput([]model.Deployment{withEndpoint(ok, "https://"+strings.Repeat("a", 256))}), []string{"api 0f6a1c2e-0001-4000-8000-000000000001", "longer than the 255 bytes"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Translate(tt.in)
			if err == nil {
				t.Fatal("Translate succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func withEndpoint(d model.Deployment, u string) model.Deployment {
	d.API.Production = &model.Endpoint{URL: u}
	return d
}

func withName(d model.Deployment, name string) model.Deployment {
	d.API.Name = name
	return d
}

func withVHost(d model.Deployment, vhost string) model.Deployment {
	d.VHost = vhost
	return d
}

func TestTranslateNoDeployments(t *testing.T) {
	res, err := Translate(testInput(nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := res.Snapshot("1"); err != nil {
		t.Fatal(err)
	}
	if len(res.Listeners) != 1 || len(res.Clusters) != 1 {
		t.Errorf("got %d listeners and %d clusters, want the listener and the sidecar cluster", len(res.Listeners), len(res.Clusters))
	}
}

func TestTranslateDeterministic(t *testing.T) {
	ds := readDeployments(t, "testdata/in/two_vhosts.yaml")
	a, err := Translate(testInput(ds))
	if err != nil {
		t.Fatal(err)
	}
	ds[0], ds[2] = ds[2], ds[0]
	b, err := Translate(testInput(ds))
	if err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2][]types.Resource{{a.Listeners, b.Listeners}, {a.Routes, b.Routes}, {a.Clusters, b.Clusters}} {
		if len(pair[0]) != len(pair[1]) {
			t.Fatalf("lengths differ")
		}
		for i := range pair[0] {
			if !proto.Equal(pair[0][i], pair[1][i]) {
				t.Errorf("resource %s depends on the order of deployments:\n%s", resourceName(pair[0][i]), cmp.Diff(pair[0][i], pair[1][i], protocmp.Transform()))
			}
		}
	}
}

func TestClusterName(t *testing.T) {
	tests := map[string]struct {
		scheme, host string
		port         uint32
		want         string
	}{
		"dns name": {"https", "api.example.com", 443, "https_api.example.com_443"},
		"ipv4":     {"http", "10.0.0.1", 8080, "http_10.0.0.1_8080"},
		"ipv6":     {"http", "::1", 80, "http___1_80_"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := ClusterName(tt.scheme, tt.host, tt.port); !strings.HasPrefix(got, tt.want) {
				t.Errorf("ClusterName = %q, want prefix %q", got, tt.want)
			}
		})
	}
	if ClusterName("http", "a_b", 80) == ClusterName("http", "a:b", 80) {
		t.Error("two hosts share a cluster name")
	}
}

func TestPathRegex(t *testing.T) {
	tests := map[string]struct {
		base, target string
		want         string
		match, miss  []string
	}{
		"literal": {
			"/ctx/1.0.0", "/pets", `^/ctx/1\.0\.0/pets/?$`,
			[]string{"/ctx/1.0.0/pets", "/ctx/1.0.0/pets/"},
			[]string{"/ctx/1x0x0/pets", "/ctx/1.0.0/pets/1", "/ctx/1.0.0/petsx"},
		},
		"param": {
			"/ctx/v1", "/pets/{id}", `^/ctx/v1/pets/[^/]+/?$`,
			[]string{"/ctx/v1/pets/1", "/ctx/v1/pets/a.b-c"},
			[]string{"/ctx/v1/pets/", "/ctx/v1/pets/1/2"},
		},
		"wildcard": {
			"/ctx/v1", "/files/*", `^/ctx/v1/files(?:/.*)?$`,
			[]string{"/ctx/v1/files", "/ctx/v1/files/", "/ctx/v1/files/a/b"},
			[]string{"/ctx/v1/filesx", "/ctx/v1"},
		},
		"root": {
			"/ctx/v1", "/", `^/ctx/v1/?$`,
			[]string{"/ctx/v1", "/ctx/v1/"},
			[]string{"/ctx/v1/x"},
		},
		"root wildcard": {
			"/ctx/v1", "/*", `^/ctx/v1(?:/.*)?$`,
			[]string{"/ctx/v1", "/ctx/v1/a/b"},
			[]string{"/ctx/v10"},
		},
		"metacharacters": {
			"/c+x/v1", "/a$b/{p}", `^/c(?:\+|(?i:%2B))x/v1/a(?:\$|(?i:%24))b/[^/]+/?$`,
			[]string{"/c+x/v1/a$b/1", "/c%2bx/v1/a%24b/1"},
			[]string{"/ccx/v1/ab/1", "/cx/v1/a$b/1"},
		},
		"non-ascii and invalid utf-8": {
			"/caf\xc3\xa9", "/\xa8", `^/caf(?i:%C3)(?i:%A9)/(?i:%A8)/?$`,
			[]string{"/caf%C3%A9/%A8", "/caf%c3%a9/%a8"},
			[]string{"/café/\xa8"},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got := PathRegex(tt.base, tt.target)
			if got != tt.want {
				t.Fatalf("PathRegex(%q, %q) = %q, want %q", tt.base, tt.target, got, tt.want)
			}
			re := regexp.MustCompile(got)
			for _, p := range tt.match {
				if !re.MatchString(p) {
					t.Errorf("%s does not match %q", got, p)
				}
			}
			for _, p := range tt.miss {
				if re.MatchString(p) {
					t.Errorf("%s matches %q", got, p)
				}
			}
		})
	}
}

// FuzzPathTemplate checks that every API context and resource template the
// model accepts gives a regex that compiles and matches the template's own
// path with its parameters filled in.
func FuzzPathTemplate(f *testing.F) {
	for _, s := range []string{"/", "/*", "/pets/{id}", "/a.b/{x-y}/c/*", "/(x)|y/[z]", "/$/^/+", "/\\d/é"} {
		f.Add("/ctx", s)
	}
	param := regexp.MustCompile(`\{[^/]*\}`)
	f.Fuzz(func(t *testing.T, context, target string) {
		api := model.API{
			Name: "fuzz", Context: context, Version: "1.0.0", Production: &model.Endpoint{URL: "http://b"},
			Operations: []model.Operation{{Target: target, Verb: "GET", AuthType: model.AuthNone}},
		}
		if api.Validate() != nil {
			return
		}
		re, err := regexp.Compile(PathRegex(api.BasePath(), target))
		if err != nil {
			t.Fatalf("PathRegex(%q, %q) does not compile: %v", api.BasePath(), target, err)
		}
		path := onTheWire(api.BasePath() + param.ReplaceAllString(strings.TrimSuffix(target, "*"), "x"))
		if !re.MatchString(path) {
			t.Errorf("%s does not match its own template path %q", re, path)
		}
	})
}

func TestExtAuthzPerRoute(t *testing.T) {
	tests := map[string][]keyValue{
		"none": nil,
		"one":  {{"api_id", "x"}},
		"unsorted, empty and repeated values": {
			{"tier", "Unlimited"}, {"api_id", "a"}, {"scopes", ""}, {"has_sandbox", "true"}, {"has_production", "true"}, {"b", ""},
		},
		"multi-byte lengths": {{"k", strings.Repeat("v", 200)}, {strings.Repeat("k", 20000), "v"}},
		"unicode":            {{"api_name", "café ☕"}, {"ünïcode", "x"}},
	}
	for name, ext := range tests {
		t.Run(name, func(t *testing.T) {
			m := map[string]string{}
			for _, kv := range ext {
				m[kv.key] = kv.value
			}
			want := &anypb.Any{}
			if err := anypb.MarshalFrom(want, &extauthzv3.ExtAuthzPerRoute{
				Override: &extauthzv3.ExtAuthzPerRoute_CheckSettings{CheckSettings: &extauthzv3.CheckSettings{ContextExtensions: m}},
			}, proto.MarshalOptions{Deterministic: true}); err != nil {
				t.Fatal(err)
			}
			got, err := extAuthzPerRoute(slices.Clone(ext))
			if err != nil {
				t.Fatal(err)
			}
			if got.GetTypeUrl() != want.GetTypeUrl() || !bytes.Equal(got.GetValue(), want.GetValue()) {
				t.Errorf("extAuthzPerRoute = %s %x, want %s %x", got.GetTypeUrl(), got.GetValue(), want.GetTypeUrl(), want.GetValue())
			}
		})
	}
	if _, err := extAuthzPerRoute([]keyValue{{"api_name", "caf\xe9"}}); err == nil || !strings.Contains(err.Error(), "api_name is not valid UTF-8") {
		t.Errorf("invalid UTF-8: err = %v, want one naming api_name", err)
	}
}

// FuzzTranslate checks that Translate either refuses a deployment with an
// error naming its API, or builds resources that pass their proto validation
// rules and marshal: Translate no longer validates each route and cluster
// itself, so the checks of its input must cover every rule.
func FuzzTranslate(f *testing.F) {
	f.Add("/pets", "v2", "/pets/{petId}/photos/*", "GET", "https://petstore.example.com/api/v2/", "http://sandbox:9090", "", "PetStore", "pets:write")
	f.Add("/c+x", "1.0", "/a$b/{p}", "POST", "http://b", "", "api.example.com", "Name", "")
	f.Add("/caf\xc3\xa9", "1", "/\xa8", "PUT", "", "https://10.0.0.7:8443", "", "n", "s")
	f.Add("/x", "1", "/", "GET", "http://caf\xe9", "", "a\rb", "\xff", "\xfe")
	f.Add("/x", "1", "/", "GET", "https://[::1]:8443/a%2fb", "http://h/\x00", "10.0.0.1", "n", "s")
	f.Fuzz(func(t *testing.T, context, version, target, verb, prodURL, sandboxURL, vhost, name, scope string) {
		const id = "fuzz-api"
		api := model.API{
			ID: id, Name: name, Context: context, Version: version,
			Operations: []model.Operation{{Target: target, Verb: verb, AuthType: model.AuthApplication, ThrottlingPolicy: "Gold", Scopes: []string{scope}}},
		}
		if prodURL != "" {
			api.Production = &model.Endpoint{URL: prodURL}
		}
		if sandboxURL != "" {
			api.Sandbox = &model.Endpoint{URL: sandboxURL}
		}
		res, err := Translate(testInput([]model.Deployment{{APIID: id, VHost: vhost, API: api}}))
		if err != nil {
			if !strings.Contains(err.Error(), "api "+id) {
				t.Fatalf("error does not name the API: %v", err)
			}
			return
		}
		validateResources(t, res)
		for _, rs := range routesOf(t, res) {
			for _, r := range rs {
				a := r.GetTypedPerFilterConfig()[wellknown.HTTPExternalAuthorization]
				m, err := a.UnmarshalNew()
				if err != nil {
					t.Fatalf("route %s: %v", r.GetName(), err)
				}
				want, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
				if err != nil || !bytes.Equal(a.GetValue(), want) {
					t.Errorf("route %s: ext_authz config %x, want %x (%v)", r.GetName(), a.GetValue(), want, err)
				}
			}
		}
	})
}

// onTheWire percent-encodes what a client cannot send raw in a path.
func onTheWire(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c >= 0x7f {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// benchDeployments are n APIs with ops operations each, each API with its own
// backend host and, if sandbox is set, a shared sandbox endpoint.
func benchDeployments(n, ops int, sandbox bool) []model.Deployment {
	ds := make([]model.Deployment, n)
	for i := range ds {
		id := fmt.Sprintf("api-%05d", i)
		ds[i] = model.Deployment{APIID: id, Environment: "Default", API: model.API{
			ID: id, Name: "API " + id, Context: "/" + id, Version: "1.0.0",
			Production: &model.Endpoint{URL: fmt.Sprintf("http://backend-%d.internal:8080/v1", i)},
		}}
		if sandbox {
			ds[i].API.Sandbox = &model.Endpoint{URL: "https://sandbox.internal"}
		}
		target := "/items/{id}"
		for j := range ops {
			ds[i].API.Operations = append(ds[i].API.Operations, model.Operation{Target: target, Verb: "GET", AuthType: model.AuthApplicationUser, ThrottlingPolicy: "Unlimited"})
			target = fmt.Sprintf("/items/{id}/sub%d", j)
		}
	}
	return ds
}

func BenchmarkTranslate(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		ds := benchDeployments(n, 1, false)
		b.Run(fmt.Sprintf("apis=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				res, err := Translate(testInput(ds))
				if err != nil {
					b.Fatal(err)
				}
				s, err := res.Snapshot("1")
				if err != nil {
					b.Fatal(err)
				}
				if got := len(s.GetResources(resource.ClusterType)); got != n+1 {
					b.Fatalf("got %d clusters, want %d", got, n+1)
				}
			}
		})
	}
}

// BenchmarkBareSnapshot is the floor BenchmarkTranslate is measured against
// (its sub-benchmarks have the same names): n bare routes, each a path prefix
// to its own cluster, n bare STATIC clusters with their one endpoint inline
// (no EDS), and one listener with RDS over ADS, built with go-control-plane's
// types into a snapshot checked for consistency. No validation, regexes,
// rewrites, ext_authz configuration, rate limits or TLS.
func BenchmarkBareSnapshot(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("apis=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s, err := bareSnapshot(n)
				if err != nil {
					b.Fatal(err)
				}
				if got := len(s.GetResources(resource.ClusterType)); got != n {
					b.Fatalf("got %d clusters, want %d", got, n)
				}
			}
		})
	}
}

func bareSnapshot(n int) (*cachev3.Snapshot, error) {
	const routeName = "http_8280"
	vh := &routev3.VirtualHost{Name: "localhost", Domains: []string{"*"}, Routes: make([]*routev3.Route, 0, n)}
	clusters := make([]types.Resource, 0, n)
	for i := range n {
		name := fmt.Sprintf("api-%05d", i)
		vh.Routes = append(vh.Routes, &routev3.Route{
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/" + name + "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: name}}},
		})
		clusters = append(clusters, &clusterv3.Cluster{
			Name:                 name,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
			LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: socketAddress(fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff), 8080),
				}}}},
			}}},
		})
	}
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		return nil, err
	}
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: routeName,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: routeName,
			ConfigSource: &corev3.ConfigSource{
				ResourceApiVersion:    corev3.ApiVersion_V3,
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: wellknown.Router, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	if err != nil {
		return nil, err
	}
	listener := &listenerv3.Listener{
		Name:    routeName,
		Address: socketAddress("0.0.0.0", 8280),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name:       wellknown.HTTPConnectionManager,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
		}}}},
	}
	s, err := cachev3.NewSnapshot("1", map[resource.Type][]types.Resource{
		resource.ListenerType: {listener},
		resource.RouteType:    {&routev3.RouteConfiguration{Name: routeName, VirtualHosts: []*routev3.VirtualHost{vh}}},
		resource.ClusterType:  clusters,
	})
	if err != nil {
		return nil, err
	}
	return s, s.Consistent()
}

// TestBareSnapshotValidates checks that the baseline benchmark builds
// resources that pass their validation rules, as BenchmarkTranslate's do.
func TestBareSnapshotValidates(t *testing.T) {
	s, err := bareSnapshot(50)
	if err != nil {
		t.Fatal(err)
	}
	var res Resources
	for typ, dst := range map[resource.Type]*[]types.Resource{resource.ListenerType: &res.Listeners, resource.RouteType: &res.Routes, resource.ClusterType: &res.Clusters} {
		for _, r := range s.GetResources(typ) {
			*dst = append(*dst, r)
		}
	}
	if len(res.Listeners) != 1 || len(res.Routes) != 1 || len(res.Clusters) != 50 {
		t.Fatalf("got %d listeners, %d route configurations and %d clusters, want 1, 1 and 50", len(res.Listeners), len(res.Routes), len(res.Clusters))
	}
	validateResources(t, res)
}

// BenchmarkTranslateOperations has APIs of several operations and a sandbox:
// 20,000 routes.
func BenchmarkTranslateOperations(b *testing.B) {
	ds := benchDeployments(1000, 10, true)
	b.ReportAllocs()
	for b.Loop() {
		res, err := Translate(testInput(ds))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := res.Snapshot("1"); err != nil {
			b.Fatal(err)
		}
	}
}

// TestBenchDeploymentsValidate checks that what the benchmarks translate is
// valid, so that they measure the translation that Envoy gets.
func TestBenchDeploymentsValidate(t *testing.T) {
	res, err := Translate(testInput(benchDeployments(50, 10, true)))
	if err != nil {
		t.Fatal(err)
	}
	validateResources(t, res)
	if got := len(routesOf(t, res)["localhost"]); got != 50*10*2 {
		t.Errorf("got %d routes, want %d", got, 50*10*2)
	}
}

package e2e

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"

	"github.com/apim-dev/apim/internal/grpcbench"
)

// Load benchmark settings: bounded runs on loopback, as issue 4 asks.
const (
	loadDuration    = 10 * time.Second
	loadWarmup      = 2 * time.Second
	loadConnections = 32
	loadThreads     = 2
	loadRounds      = 3 // each configuration is run this often; the median is reported
)

// loadModes are the gateway configurations the load benchmark runs, one
// sub-benchmark each: rateLimitMode is gateway.rate_limit_mode (empty: the
// default). In both modes every request of the limited API is counted by
// the rate-limit service (apim_ratelimit_calls_total), in process or over
// gRPC.
var loadModes = []struct{ name, rateLimitMode string }{
	{"rls", "rls"},             // ext_authz Check, then a separate RLS call from Envoy
	{"ext_authz", "ext_authz"}, // the decision made inside the Check
}

// BenchmarkLoad measures requests per second and latency through Envoy with
// wrk, for four configurations in the same run: plain Envoy routing to the
// sample backend (a static bootstrap, no ext_authz or rate-limit filter, the
// same Envoy binary); the same route behind an ext_authz filter whose
// server allows everything unread (the ceiling of any side-call design);
// apim's Envoy with OAuth2 and a subscription tier that limits
// (100,000,000 requests a minute: counted, never refused); and apim's
// Envoy with OAuth2 and only Unlimited tiers (no rate-limit call). Each
// configuration runs loadRounds times, interleaved, and the median run is
// reported. Run it with -benchtime 1x (make bench-load): one iteration is the
// whole series.
func BenchmarkLoad(b *testing.B) {
	if _, err := exec.LookPath("wrk"); err != nil {
		b.Fatalf("wrk is not installed (make deps): %v", err)
	}
	for _, m := range loadModes {
		b.Run(m.name, func(b *testing.B) {
			for range b.N {
				loadSeries(b, m.rateLimitMode)
			}
		})
	}
}

// loadTarget is one configuration under load.
type loadTarget struct {
	name, url, token string
	limited          bool // whether each request is counted by the rate-limit service
}

// loadSeries starts apim with rateLimitMode, publishes the two APIs, starts
// the plain Envoy and runs the rounds; it reports the medians.
func loadSeries(b *testing.B, rateLimitMode string) {
	b.StopTimer()
	e := startWith(b, nil, func(c *apimConfig) { c.RateLimitMode = rateLimitMode })
	admin := e.userToken("admin", e.adminPass, "apim:api_view apim:api_create apim:api_publish apim:subscribe apim:app_manage apim:sub_manage apim:admin apim:tier_manage")
	e.perMinutePolicy(admin, "Load100M", 100_000_000, true) // high enough that nothing is refused
	limited := e.publishAPI(admin, "LoadLimited", "/loadlimited", []string{"Load100M"})
	open := e.publishAPI(admin, "LoadOpen", "/loadopen", []string{"Unlimited"})
	app := e.createApp(admin, "LoadApp")
	e.subscribe(admin, app, limited, "Load100M")
	e.subscribe(admin, app, open, "Unlimited")
	token := e.appToken(admin, app)
	for _, path := range []string{"/loadlimited/1.0.0/items/1", "/loadopen/1.0.0/items/1"} {
		e.eventually(30*time.Second, func() string {
			if status, _, body, _ := e.gateway("GET", path, token); status != 200 {
				return fmt.Sprintf("%s: %d %s", path, status, body)
			}
			return ""
		})
	}
	plain, allow := e.startPlainEnvoy()

	targets := []loadTarget{
		{name: "plain", url: plain + "/backend/items/1"},
		{name: "allow-all-authz", url: allow + "/backend/items/1", token: token},
		{name: "auth-ratelimit", url: e.gwURL + "/loadlimited/1.0.0/items/1", token: token, limited: true},
		{name: "auth-only", url: e.gwURL + "/loadopen/1.0.0/items/1", token: token},
	}
	for _, t := range targets {
		runWrk(b, t, loadWarmup)
	}
	runs := map[string][]wrkResult{}
	for round := range loadRounds {
		for _, t := range targets {
			before, cpu0 := e.rlsCalls(), e.cpuTimes()
			r := runWrk(b, t, loadDuration)
			calls := e.rlsCalls() - before
			// Every request of the limited API is decided by the
			// rate-limit service; an Unlimited-only one never is.
			if t.limited && calls < r.requests || !t.limited && calls != 0 {
				b.Fatalf("%s: %d rate-limit calls for %d requests", t.name, calls, r.requests)
			}
			cpu := e.cpuTimes()
			var where []string
			for _, name := range []string{"envoy", "plain-envoy", "apim", "test"} {
				if d := cpu[name] - cpu0[name]; d > 0 {
					where = append(where, fmt.Sprintf("%s %.0f", name, float64(d.Microseconds())/float64(r.requests)))
				}
			}
			where = append(where, fmt.Sprintf("wrk %.0f", float64(r.cpu.Microseconds())/float64(r.requests)))
			b.Logf("round %d %-14s %6.0f req/s  p50 %6.2f ms  p99 %6.2f ms  (%d requests, %d rate-limit decisions; CPU µs/request: %s)",
				round+1, t.name, r.rps, r.p50.Seconds()*1000, r.p99.Seconds()*1000, r.requests, calls, strings.Join(where, ", "))
			runs[t.name] = append(runs[t.name], r)
		}
	}
	med := map[string]wrkResult{}
	for _, t := range targets {
		rs := runs[t.name]
		slices.SortFunc(rs, func(x, y wrkResult) int { return cmp.Compare(x.rps, y.rps) })
		m := rs[len(rs)/2]
		med[t.name] = m
		b.ReportMetric(m.rps, t.name+"-req/s")
		b.ReportMetric(m.p50.Seconds()*1000, t.name+"-p50-ms")
		b.ReportMetric(m.p99.Seconds()*1000, t.name+"-p99-ms")
	}
	b.ReportMetric(med["auth-ratelimit"].rps/med["plain"].rps, "ratelimit/plain")
	b.ReportMetric(med["auth-only"].rps/med["plain"].rps, "authonly/plain")
	b.ReportMetric(med["allow-all-authz"].rps/med["plain"].rps, "allowall/plain")
}

// wrkResult is what one wrk run measured.
type wrkResult struct {
	rps      float64
	p50, p99 time.Duration
	requests int
	cpu      time.Duration // wrk's own CPU time
}

var (
	wrkRPS      = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkPct      = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	wrkRequests = regexp.MustCompile(`(\d+) requests in`)
	wrkNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkErrors   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// runWrk loads t for d with wrk and parses its report. Any answer other than
// a 2xx, and any socket error, fails the benchmark: a figure is only kept
// for a run that was all successes.
func runWrk(b *testing.B, t loadTarget, d time.Duration) wrkResult {
	b.Helper()
	args := []string{"-t", strconv.Itoa(loadThreads), "-c", strconv.Itoa(loadConnections), "-d", d.String(), "--latency"}
	if t.token != "" {
		args = append(args, "-H", "Authorization: Bearer "+t.token)
	}
	cmd := exec.Command("wrk", append(args, t.url)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("wrk %s: %v\n%s", t.name, err, out)
	}
	report := string(out)
	if m := wrkNon2xx.FindStringSubmatch(report); m != nil {
		b.Fatalf("wrk %s: %s answers were not 2xx:\n%s", t.name, m[1], report)
	}
	if m := wrkErrors.FindStringSubmatch(report); m != nil {
		b.Fatalf("wrk %s: socket errors:\n%s", t.name, report)
	}
	var r wrkResult
	m := wrkRPS.FindStringSubmatch(report)
	n := wrkRequests.FindStringSubmatch(report)
	if m == nil || n == nil {
		b.Fatalf("wrk %s: no throughput in its report:\n%s", t.name, report)
	}
	r.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	r.requests, _ = strconv.Atoi(n[1])
	for _, p := range wrkPct.FindAllStringSubmatch(report, -1) {
		v, _ := strconv.ParseFloat(p[2], 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[p[3]]
		if p[1] == "50" {
			r.p50 = time.Duration(v * float64(unit))
		} else {
			r.p99 = time.Duration(v * float64(unit))
		}
	}
	if r.p50 == 0 || r.p99 == 0 {
		b.Fatalf("wrk %s: no latency distribution in its report:\n%s", t.name, report)
	}
	return r
}

// plainBootstrap is a static Envoy with one route to the sample backend and
// no other filter than the router: the baseline of the load benchmark. A
// second listener puts an ext_authz filter in front of the same route,
// calling a server that allows every request without looking at it: the
// most any ext_authz side call could leave of plain Envoy's throughput.
// Its arguments: the admin port, the two listeners (plainListener) and the
// ports of the backend and of the allow-all server.
const plainBootstrap = `admin:
  address: {socket_address: {address: 127.0.0.1, port_value: %d}}
static_resources:
  listeners:
%s%s  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 5s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %s}}}
  - name: allow_all
    type: STATIC
    connect_timeout: 5s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: allow_all
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}
`

// plainListener is a listener of plainBootstrap: its name, port, and the
// HTTP filters before the router.
const plainListener = `  - name: %[1]s
    address: {socket_address: {address: 127.0.0.1, port_value: %[2]d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: %[1]s
          route_config:
            virtual_hosts:
            - name: backend
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: backend}
          http_filters:
%[3]s          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
`

// allowAllFilter is the ext_authz filter of the allow-all listener.
const allowAllFilter = `          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              encode_raw_headers: true
              grpc_service: {envoy_grpc: {cluster_name: allow_all}}
`

// serveAllowAll serves grpcbench.AllowAll in the test process, beside the sample
// backend, until the test ends, and returns its port.
func (e *env) serveAllowAll() int {
	e.t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	g := grpc.NewServer()
	authv3.RegisterAuthorizationServer(g, grpcbench.AllowAll{})
	go g.Serve(l)
	e.t.Cleanup(g.Stop)
	return l.Addr().(*net.TCPAddr).Port
}

// startPlainEnvoy starts a second Envoy, from the same binary, with
// plainBootstrap, and returns the base URLs of its two listeners, plain and
// with the allow-all ext_authz, once both route to the backend.
func (e *env) startPlainEnvoy() (plain, allow string) {
	e.t.Helper()
	backendPort := e.backend[strings.LastIndexByte(e.backend, ':')+1:]
	adminPort, port, allowPort := freePort(e.t), freePort(e.t), freePort(e.t)
	file := filepath.Join(e.dataDir, "plain-envoy.yaml")
	bootstrap := fmt.Appendf(nil, plainBootstrap, adminPort,
		fmt.Sprintf(plainListener, "plain", port, ""), fmt.Sprintf(plainListener, "allow_all", allowPort, allowAllFilter),
		backendPort, e.serveAllowAll())
	if err := os.WriteFile(file, bootstrap, 0o600); err != nil {
		e.t.Fatal(err)
	}
	p := e.spawn("plain-envoy", envoyBin, "-c", file, "--base-id", strconv.Itoa(adminPort), "--log-level", "warn")
	e.waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/ready", adminPort), p, 60*time.Second)
	plain, allow = fmt.Sprintf("http://127.0.0.1:%d", port), fmt.Sprintf("http://127.0.0.1:%d", allowPort)
	for _, url := range []string{plain, allow} {
		e.eventually(10*time.Second, func() string {
			status, body := e.gatewayAt(url, "/backend/items/1")
			if status != 200 || !strings.Contains(body, `"path":"/backend/items/1"`) {
				return fmt.Sprintf("plain Envoy at %s: %d %s", url, status, body)
			}
			return ""
		})
	}
	return plain, allow
}

// gatewayAt is a GET of base+path; it returns the status and the body.
func (e *env) gatewayAt(base, path string) (int, string) {
	e.t.Helper()
	resp, err := http.Get(base + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// cpuTimes is the CPU time (user and system) each running process of e has
// used so far, by name, and the test process's own as "test" (it serves the
// sample backend).
func (e *env) cpuTimes() map[string]time.Duration {
	e.t.Helper()
	t := map[string]time.Duration{"test": procCPU(e.t, os.Getpid())}
	for _, p := range e.procs {
		select {
		case <-p.done:
		default:
			t[p.name] += procCPU(e.t, p.cmd.Process.Pid)
		}
	}
	return t
}

// procCPU reads a process's utime and stime from /proc/<pid>/stat.
func procCPU(t testing.TB, pid int) time.Duration {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command name, which is in parentheses and may
	// hold spaces: state is field 3, utime 14 and stime 15.
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: %s", pid, data)
	}
	const clkTck = 100 // USER_HZ, 100 on every Linux architecture Go runs on
	return time.Duration(utime+stime) * time.Second / clkTck
}

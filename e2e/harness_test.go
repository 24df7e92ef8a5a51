// Package e2e runs the real apim binary behind a real Envoy, with a real
// PostgreSQL (apim's private cluster) and Kafka (the embedded broker, or a real
// Apache Kafka broker), and drives them as users would.
package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/apim-dev/apim/envoy"
	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/localenv"
	"github.com/apim-dev/apim/internal/pgtest"
	"github.com/apim-dev/apim/internal/samplebackend"
)

var (
	apimBin  string // built once in TestMain, under .cache/e2e
	envoyBin string
	rootDir  string // the module root
)

func TestMain(m *testing.M) {
	var err error
	if rootDir, err = filepath.Abs(".."); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	apimBin = filepath.Join(rootDir, ".cache", "e2e", "apim")
	build := exec.Command("go", "build", "-o", apimBin, "./cmd/apim")
	build.Dir = rootDir
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build apim: %v\n%s", err, out)
		os.Exit(1)
	}
	if envoyBin, err = envoy.Binary(); err != nil {
		fmt.Fprintf(os.Stderr, "no Envoy binary (run scripts/get-envoy.sh): %v\n", err)
		os.Exit(1)
	}
	pgtest.Main(m)
}

// env is one running system: apim all-in-one, Envoy and a sample backend.
type env struct {
	t         testing.TB
	apimURL   string // https://127.0.0.1:port
	gwURL     string // http://localhost:port
	caFile    string
	backend   string
	client    *http.Client // trusts the self-signed certificate
	dataDir   string
	procs     []*proc
	adminPass string
	gwConfig  *apimConfig // the gateway profile's config, in a split env
	opsURL    string      // http://127.0.0.1:port of the all-in-one's /metrics
	apimDB    string      // the API-manager database's URL, in a split env
}

// proc is a child process whose output is kept for the failure report.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *localenv.Output
	done chan struct{} // closed when the process has exited
}

func freePort(t testing.TB) int {
	t.Helper()
	ports, err := localenv.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return ports[0]
}

// apimConfig is the configuration of one apim process in a test.
type apimConfig struct {
	Profile, DataDir, Brokers, DatabaseAPIM, DatabaseShared, Token, CA                  string
	HTTPPort, OpsPort, XDSPort, SidecarPort, GatewayPort, PGPort, KafkaPort, IssuerPort int
	AdminPassword                                                                       string
	// GatewayID and FleetSize are gateway.id and gateway.fleet_size (fleet-wide
	// throttling); empty and 0 keep the defaults.
	GatewayID string
	FleetSize int
	// GatewayExtra are more lines of the gateway section, indented.
	GatewayExtra string
	// RateLimitMode is gateway.rate_limit_mode, where the rate-limit
	// decision is made; rendered only when set, so empty keeps the default.
	RateLimitMode string
}

var configTemplate = template.Must(template.New("apim.yaml").Parse(`profile: {{.Profile}}
data_dir: {{.DataDir}}
log:
  level: debug
database:
  apim_url: "{{.DatabaseAPIM}}"
  shared_url: "{{.DatabaseShared}}"
  private_port: {{.PGPort}}
kafka:
  embedded_address: 127.0.0.1:{{.KafkaPort}}
  brokers: [{{.Brokers}}]
http:
  address: 127.0.0.1:{{.HTTPPort}}
  base_url: https://localhost:{{.IssuerPort}}
ops:
  address: 127.0.0.1:{{.OpsPort}}
xds:
  address: 127.0.0.1:{{.XDSPort}}
gateway:
  sidecar_address: 127.0.0.1:{{.SidecarPort}}
  listener_port: {{.GatewayPort}}
  control_plane_url: https://127.0.0.1:{{.IssuerPort}}
  control_plane_ca: "{{.CA}}"
  token: "{{.Token}}"
  id: "{{.GatewayID}}"
  fleet_size: {{.FleetSize}}
{{- if .RateLimitMode}}
  rate_limit_mode: {{.RateLimitMode}}
{{- end}}
{{- if .GatewayExtra}}
{{.GatewayExtra}}
{{- end}}
key_manager:
  issuer: https://localhost:{{.IssuerPort}}/oauth2/token
admin:
  password: {{.AdminPassword}}
`))

// newEnv makes the data directory and the sample backend.
func newEnv(t testing.TB) *env {
	t.Helper()
	backend := httptest.NewServer(samplebackend.Handler("backend"))
	t.Cleanup(backend.Close)
	e := &env{t: t, dataDir: t.TempDir(), backend: backend.URL, adminPass: "e2e-admin-pw"}
	// The private PostgreSQL cluster runs as the postgres user when we are
	// root: its directory's parents must let that user through.
	if err := os.Chmod(filepath.Dir(e.dataDir), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.report)
	return e
}

// start runs apim all-in-one with the given Kafka brokers (none: embedded),
// then Envoy with apim's own bootstrap, and waits until both are ready.
func start(t testing.TB, brokers []string) *env {
	t.Helper()
	return startWith(t, brokers, nil)
}

// startWith is start with the all-in-one's configuration changed by edit
// (nil: none) before it runs.
func startWith(t testing.TB, brokers []string, edit func(*apimConfig)) *env {
	t.Helper()
	e := newEnv(t)
	c := apimConfig{
		Profile: "all-in-one", DataDir: e.dataDir, Brokers: strings.Join(brokers, ","), AdminPassword: e.adminPass,
		HTTPPort: freePort(t), OpsPort: freePort(t), XDSPort: freePort(t), SidecarPort: freePort(t),
		GatewayPort: freePort(t), PGPort: freePort(t), KafkaPort: freePort(t),
	}
	c.IssuerPort = c.HTTPPort
	if edit != nil {
		edit(&c)
	}
	e.opsURL = fmt.Sprintf("http://127.0.0.1:%d", c.OpsPort)
	cfgFile := e.runAPIM("apim", c)
	e.trust(filepath.Join(e.dataDir, "tls", "server.crt"), c)
	e.startEnvoy(cfgFile)
	return e
}

// startSplit runs the control-plane and gateway profiles as two processes on
// a PostgreSQL and an embedded Kafka broker of the test's own, with Envoy
// beside the gateway.
func startSplit(t testing.TB) *env {
	t.Helper()
	e := newEnv(t)
	apimURL, sharedURL := pgtest.New(t)
	e.apimDB = apimURL
	broker, err := events.StartEmbedded(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	cp := apimConfig{
		Profile: "control-plane", DataDir: filepath.Join(e.dataDir, "cp"), Brokers: strings.Join(broker.Brokers(), ","),
		DatabaseAPIM: apimURL, DatabaseShared: sharedURL, Token: "e2e-gateway-token-0123456789abcdef", AdminPassword: e.adminPass,
		HTTPPort: freePort(t), OpsPort: freePort(t), XDSPort: freePort(t), SidecarPort: freePort(t), GatewayPort: freePort(t),
	}
	cp.IssuerPort = cp.HTTPPort
	e.runAPIM("control-plane", cp)
	caFile := filepath.Join(cp.DataDir, "tls", "server.crt")
	e.trust(caFile, cp)

	gw := cp
	gw.Profile, gw.DataDir, gw.CA = "gateway", filepath.Join(e.dataDir, "gw"), caFile
	gw.DatabaseAPIM, gw.DatabaseShared = "", ""
	gw.HTTPPort, gw.OpsPort = freePort(t), freePort(t)
	gwFile := e.runAPIM("gateway", gw)
	e.gwConfig = &gw
	e.startEnvoy(gwFile)
	return e
}

// runAPIM writes c to a config file in c.DataDir, starts apim with it and
// waits for /readyz. It returns the config file.
func (e *env) runAPIM(name string, c apimConfig) string {
	e.t.Helper()
	if err := os.MkdirAll(c.DataDir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	var b bytes.Buffer
	if err := configTemplate.Execute(&b, c); err != nil {
		e.t.Fatal(err)
	}
	cfgFile := filepath.Join(c.DataDir, "apim.yaml")
	if err := os.WriteFile(cfgFile, b.Bytes(), 0o600); err != nil {
		e.t.Fatal(err)
	}
	p := e.spawn(name, apimBin, "run", "-config", cfgFile)
	e.waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/readyz", c.OpsPort), p, 120*time.Second)
	return cfgFile
}

// trust points the env's REST client at the apim of c, trusting caFile.
func (e *env) trust(caFile string, c apimConfig) {
	e.t.Helper()
	e.apimURL = fmt.Sprintf("https://127.0.0.1:%d", c.HTTPPort)
	e.gwURL = fmt.Sprintf("http://localhost:%d", c.GatewayPort)
	e.caFile = caFile
	pem, err := os.ReadFile(caFile)
	if err != nil {
		e.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	e.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// startEnvoy starts Envoy with the bootstrap that `apim envoy-bootstrap`
// writes for cfgFile and waits until it is ready.
func (e *env) startEnvoy(cfgFile string) {
	e.t.Helper()
	adminPort := freePort(e.t)
	bootstrap := filepath.Join(filepath.Dir(cfgFile), "envoy.yaml")
	out, err := exec.Command(apimBin, "envoy-bootstrap", "-config", cfgFile, "-out", bootstrap, "-admin-port", fmt.Sprint(adminPort)).CombinedOutput()
	if err != nil {
		e.t.Fatalf("envoy-bootstrap: %v\n%s", err, out)
	}
	p := e.spawn("envoy", envoyBin, "-c", bootstrap, "--base-id", fmt.Sprint(adminPort), "--log-level", "info")
	e.waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/ready", adminPort), p, 60*time.Second)
}

// restartGateway stops the gateway profile's process and starts it again
// with the same configuration.
func (e *env) restartGateway() {
	e.t.Helper()
	for _, p := range e.procs {
		if p.name == "gateway" {
			stop(p)
		}
	}
	e.runAPIM("gateway", *e.gwConfig)
}

// stop interrupts p and waits for it to exit, killing it after 20s.
func stop(p *proc) {
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (e *env) spawn(name, bin string, args ...string) *proc {
	e.t.Helper()
	p := &proc{name: name, out: &localenv.Output{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		e.t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	e.procs = append(e.procs, p)
	return p
}

// report stops every process, in reverse order, and prints their logs when
// the test failed.
func (e *env) report() {
	for i := len(e.procs) - 1; i >= 0; i-- {
		stop(e.procs[i])
	}
	if e.t.Failed() {
		for _, p := range e.procs {
			e.t.Logf("===== %s log =====\n%s", p.name, p.out.String())
		}
	}
}

func (e *env) waitHTTP(url string, p *proc, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			e.t.Fatalf("%s exited while starting: %v", p.name, p.cmd.ProcessState)
		default:
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Fatalf("%s not ready at %s after %s", p.name, url, timeout)
}

// call makes a REST call to apim and decodes a JSON answer into out (may be
// nil); it returns the status.
func (e *env) call(method, path, token string, body any, out any) int {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, e.apimURL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			e.t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, data, err)
		}
	}
	return resp.StatusCode
}

// must is call that fails the test unless the status is want.
func (e *env) must(want int, method, path, token string, body any, out any) {
	e.t.Helper()
	var raw json.RawMessage
	if got := e.call(method, path, token, body, &raw); got != want {
		e.t.Fatalf("%s %s = %d %s, want %d", method, path, got, raw, want)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			e.t.Fatal(err)
		}
	}
}

// gateway calls the gateway and returns the status, the WSO2 error code if
// the body is one, the body and the headers.
func (e *env) gateway(method, path, token string) (int, string, string, http.Header) {
	e.t.Helper()
	return e.gatewayWith(method, path, token, nil)
}

// gatewayWith is gateway with more request headers.
func (e *env) gatewayWith(method, path, token string, header map[string]string) (int, string, string, http.Header) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.gwURL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("gateway %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var wso2 struct {
		Code any `json:"code"`
	}
	json.Unmarshal(data, &wso2)
	code := ""
	if wso2.Code != nil {
		code = fmt.Sprint(wso2.Code)
	}
	return resp.StatusCode, code, string(data), resp.Header
}

// eventually polls f every 20ms until it returns "" or the timeout passes;
// it returns how long that took, or fails with f's last message.
func (e *env) eventually(timeout time.Duration, f func() string) time.Duration {
	e.t.Helper()
	start := time.Now()
	var msg string
	for time.Since(start) < timeout {
		if msg = f(); msg == "" {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatalf("after %s: %s", timeout, msg)
	return 0
}

// doJSON sends req and decodes the JSON answer; want 0 accepts any 2xx.
func (e *env) doJSON(req *http.Request, want int, out any) {
	e.t.Helper()
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if (want == 0 && resp.StatusCode/100 != 2) || (want != 0 && resp.StatusCode != want) {
		e.t.Fatalf("%s %s = %d %s", req.Method, req.URL.Path, resp.StatusCode, data)
	}
	if err := json.Unmarshal(data, out); err != nil {
		e.t.Fatalf("%s %s: %v: %s", req.Method, req.URL.Path, err, data)
	}
}

// Package e2e runs the real apim binary behind a real Envoy, with a real
// PostgreSQL (apim's private cluster) and Kafka (the embedded broker, or a real
// Apache Kafka broker), and drives them as users would.
package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apim-dev/apim/envoy"
	"github.com/apim-dev/apim/internal/samplebackend"
)

var (
	apimBin  string // built once in TestMain
	envoyBin string
	rootDir  string // the module root
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "apim-e2e-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		rootDir, _ = filepath.Abs("..")
		apimBin = filepath.Join(dir, "apim")
		build := exec.Command("go", "build", "-o", apimBin, "./cmd/apim")
		build.Dir = rootDir
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build apim: %v\n%s", err, out)
			return 1
		}
		if envoyBin, err = envoy.Binary(); err != nil {
			fmt.Fprintf(os.Stderr, "no Envoy binary (run scripts/get-envoy.sh): %v\n", err)
			return 1
		}
		return m.Run()
	}())
}

// env is one running system: apim all-in-one, Envoy and a sample backend.
type env struct {
	t         testing.TB
	apimURL   string // https://127.0.0.1:port
	gwURL     string // http://localhost:port
	opsURL    string
	caFile    string
	backend   string
	client    *http.Client // trusts the self-signed certificate
	dataDir   string
	procs     []*proc
	adminPass string
}

// proc is a child process whose output is kept for the failure report.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// start runs apim all-in-one with the given Kafka brokers (none: embedded),
// then Envoy with apim's own bootstrap, and waits until both are ready.
func start(t testing.TB, brokers []string) *env {
	t.Helper()
	backend := httptest.NewServer(samplebackend.Handler("backend"))
	t.Cleanup(backend.Close)
	e := &env{t: t, dataDir: t.TempDir(), backend: backend.URL, adminPass: "e2e-admin-pw"}
	// The private PostgreSQL cluster runs as the postgres user when we are
	// root: its directory's parents must let that user through.
	if err := os.Chmod(filepath.Dir(e.dataDir), 0o755); err != nil {
		t.Fatal(err)
	}
	httpPort, opsPort, xdsPort, sidecarPort, gwPort, adminPort, pgPort, kafkaPort :=
		freePort(t), freePort(t), freePort(t), freePort(t), freePort(t), freePort(t), freePort(t), freePort(t)
	e.apimURL = fmt.Sprintf("https://127.0.0.1:%d", httpPort)
	e.gwURL = fmt.Sprintf("http://localhost:%d", gwPort)
	e.opsURL = fmt.Sprintf("http://127.0.0.1:%d", opsPort)
	e.caFile = filepath.Join(e.dataDir, "tls", "server.crt")
	cfg := fmt.Sprintf(`profile: all-in-one
data_dir: %s
log:
  level: debug
database:
  private_port: %d
kafka:
  embedded_address: 127.0.0.1:%d
  brokers: [%s]
http:
  address: 127.0.0.1:%d
  base_url: https://localhost:%d
ops:
  address: 127.0.0.1:%d
xds:
  address: 127.0.0.1:%d
gateway:
  sidecar_address: 127.0.0.1:%d
  listener_port: %d
key_manager:
  issuer: https://localhost:%d/oauth2/token
admin:
  password: %s
`, e.dataDir, pgPort, kafkaPort, strings.Join(brokers, ","), httpPort, httpPort, opsPort, xdsPort, sidecarPort, gwPort, httpPort, e.adminPass)
	cfgFile := filepath.Join(e.dataDir, "apim.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.report)
	apim := e.spawn("apim", apimBin, "run", "-config", cfgFile)
	e.waitHTTP(e.opsURL+"/readyz", apim, 120*time.Second)

	pool := x509.NewCertPool()
	pem, err := os.ReadFile(e.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(pem)
	e.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}

	bootstrap := filepath.Join(e.dataDir, "envoy.yaml")
	out, err := exec.Command(apimBin, "envoy-bootstrap", "-config", cfgFile, "-out", bootstrap, "-admin-port", fmt.Sprint(adminPort)).CombinedOutput()
	if err != nil {
		t.Fatalf("envoy-bootstrap: %v\n%s", err, out)
	}
	ev := e.spawn("envoy", envoyBin, "-c", bootstrap, "--base-id", fmt.Sprint(adminPort), "--log-level", "info")
	e.waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/ready", adminPort), ev, 60*time.Second)
	return e
}

func (e *env) spawn(name, bin string, args ...string) *proc {
	e.t.Helper()
	p := &proc{name: name, out: &syncBuffer{}}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		e.t.Fatalf("start %s: %v", name, err)
	}
	e.procs = append(e.procs, p)
	return p
}

// report stops every process, in reverse order, and prints their logs when
// the test failed.
func (e *env) report() {
	for i := len(e.procs) - 1; i >= 0; i-- {
		p := e.procs[i]
		p.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			p.cmd.Process.Kill()
			<-done
		}
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
		if p.cmd.ProcessState != nil {
			e.t.Fatalf("%s exited while starting", p.name)
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
	req, err := http.NewRequest(method, e.gwURL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
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

// Package hydratest runs Ory Hydra, a real OAuth2/OIDC provider that none
// of this project's code wrote, for the tests of external key managers. It
// builds hydra once (the version is pinned by the separate module in
// tool/, so hydra's dependencies never enter this module's go.mod), gives
// it a fresh PostgreSQL database, migrates it, serves it on free loopback
// ports and registers clients through its admin API.
package hydratest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apim-dev/apim/internal/localenv"
	"github.com/apim-dev/apim/internal/pgtest"
)

// Version is the Hydra release the tests run; tool/go.mod pins the same.
const Version = "v2.3.0"

// Package is hydra's main package, as tool/go.mod's tool directive names it.
const Package = "github.com/ory/hydra/v2"

// EnvBinary names an environment variable with a hydra binary to use
// instead of building one.
const EnvBinary = "APIM_HYDRA_BIN"

// Binary returns the hydra binary, under the module root's
// .cache/hydra/<Version>/, building it first when it is missing or was
// built from another tool/go.mod, tool/go.sum or Go toolchain. Concurrent
// callers, in this process or others, build it once: a file lock
// serialises them, and a second call only hashes two small files.
func Binary(ctx context.Context) (string, error) {
	if bin := os.Getenv(EnvBinary); bin != "" {
		return bin, nil
	}
	root, err := localenv.ModuleRoot()
	if err != nil {
		return "", fmt.Errorf("hydratest: %w", err)
	}
	toolDir := filepath.Join(root, "internal", "hydratest", "tool")
	if _, err := os.Stat(filepath.Join(toolDir, "go.mod")); err != nil {
		// Run from inside tool/ itself, or from outside this module.
		return "", fmt.Errorf("hydratest: no %s: run from this module's root or a package of it: %w", filepath.Join(toolDir, "go.mod"), err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("hydratest: the go command is needed to build hydra: %w", err)
	}
	goVersion, err := exec.CommandContext(ctx, goBin, "env", "GOVERSION").Output() //nolint:gosec // G204: the go command found on PATH
	if err != nil {
		return "", fmt.Errorf("hydratest: go env GOVERSION: %w", err)
	}
	stamp, err := buildStamp(toolDir, strings.TrimSpace(string(goVersion)))
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, ".cache", "hydra", Version)
	bin := filepath.Join(dir, "hydra")
	stampFile := filepath.Join(dir, "stamp")
	if fresh(bin, stampFile, stamp) {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("hydratest: %w", err)
	}
	unlock, err := lock(filepath.Join(dir, "build.lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if fresh(bin, stampFile, stamp) { // built while we waited
		return bin, nil
	}
	tmp := bin + ".tmp"
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-o", tmp, Package) //nolint:gosec // G204: our own arguments
	cmd.Dir = toolDir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("hydratest: build hydra %s in %s (go build -trimpath -o %s %s): %w\n%s", Version, toolDir, tmp, Package, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", fmt.Errorf("hydratest: %w", err)
	}
	if err := os.WriteFile(stampFile, []byte(stamp), 0o644); err != nil { //nolint:gosec // G306: a build stamp, not a secret
		return "", fmt.Errorf("hydratest: %w", err)
	}
	fmt.Fprintf(os.Stderr, "hydratest: built hydra %s in %s\n", Version, time.Since(start).Round(time.Second))
	return bin, nil
}

// buildStamp hashes what decides the binary: the tool module's go.mod and
// go.sum, and the Go version.
func buildStamp(toolDir, goVersion string) (string, error) {
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(toolDir, f)) //nolint:gosec // G304: the tool module's own files
		if err != nil {
			return "", fmt.Errorf("hydratest: %w", err)
		}
		h.Write(b)
	}
	fmt.Fprintf(h, "\n%s %s %s/%s\n", Version, goVersion, runtime.GOOS, runtime.GOARCH)
	return hex.EncodeToString(h.Sum(nil)), nil
}

func fresh(bin, stampFile, stamp string) bool {
	got, err := os.ReadFile(stampFile) //nolint:gosec // G304: our own cache file
	if err != nil || string(got) != stamp {
		return false
	}
	fi, err := os.Stat(bin)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o100 != 0
}

// lock takes an exclusive lock on path, waiting for it.
func lock(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644) //nolint:gosec // G302/G304: a lock file in our cache
	if err != nil {
		return nil, fmt.Errorf("hydratest: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil { //nolint:gosec // G115: a file descriptor fits an int
		_ = f.Close()
		return nil, fmt.Errorf("hydratest: lock %s: %w", path, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN) //nolint:gosec // G115: as above
		_ = f.Close()
	}, nil
}

// Server is a running hydra: `hydra serve all --dev` on loopback ports,
// with JWT access tokens.
type Server struct {
	// Issuer is the iss of its tokens and the base of its discovery URL:
	// the public URL, http://127.0.0.1:<port>.
	Issuer string
	// WellKnown is its OIDC discovery URL.
	WellKnown string
	// TokenURL is its token endpoint.
	TokenURL string
	// AdminURL is the base of its admin API.
	AdminURL string

	client *http.Client
}

// Client is an OAuth client registered at hydra.
type Client struct {
	ID, Secret string
}

// Start builds hydra if needed, gives it a fresh database (pgtest.Empty:
// the calling package's TestMain must run pgtest.Main), migrates it and
// serves it until the test ends; hydra's output is logged if the test
// failed.
func Start(t testing.TB) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bin, err := Binary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dsn := pgtest.Empty(t)
	ports, err := localenv.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	var secret [24]byte
	_, _ = rand.Read(secret[:])
	public := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	s := &Server{
		Issuer:    public,
		WellKnown: public + "/.well-known/openid-configuration",
		TokenURL:  public + "/oauth2/token",
		AdminURL:  fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		client:    &http.Client{Timeout: 30 * time.Second},
	}
	env := []string{
		"HOME=" + t.TempDir(),
		"PATH=" + os.Getenv("PATH"),
		"DSN=" + dsn,
		"SECRETS_SYSTEM=" + hex.EncodeToString(secret[:]),
		"URLS_SELF_ISSUER=" + public,
		"SERVE_PUBLIC_HOST=127.0.0.1",
		fmt.Sprintf("SERVE_PUBLIC_PORT=%d", ports[0]),
		"SERVE_ADMIN_HOST=127.0.0.1",
		fmt.Sprintf("SERVE_ADMIN_PORT=%d", ports[1]),
		"STRATEGIES_ACCESS_TOKEN=jwt", // JWT access tokens, as a gateway verifies them
		"SQA_OPT_OUT=true",            // no telemetry
		"LOG_LEVEL=info",
	}
	out := &localenv.Output{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("===== hydra log =====\n%s", out.String())
		}
	})

	migrate := exec.CommandContext(ctx, bin, "migrate", "sql", "up", "--read-from-env", "--yes") //nolint:gosec // G204: our own binary and arguments
	migrate.Env, migrate.Stdout, migrate.Stderr = env, out, out
	if err := migrate.Run(); err != nil {
		t.Fatalf("hydratest: hydra migrate sql up: %v\n%s", err, out.String())
	}

	cmd := exec.Command(bin, "serve", "all", "--dev", "--sqa-opt-out") //nolint:gosec // G204: as above
	cmd.Env, cmd.Stdout, cmd.Stderr = env, out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("hydratest: start hydra: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	if err := s.waitReady(done, time.Minute); err != nil {
		t.Fatalf("hydratest: %v\n%s", err, out.String())
	}
	return s
}

// waitReady polls the admin API's readiness and the discovery document
// until both answer, hydra exits, or timeout passes.
func (s *Server) waitReady(done <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return errors.New("hydra exited while starting")
		default:
		}
		if last = s.get(s.AdminURL + "/health/ready"); last == nil {
			if last = s.get(s.WellKnown); last == nil {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("hydra not ready after %s: %w", timeout, last)
}

func (s *Server) get(u string) error {
	resp, err := s.client.Get(u) //nolint:noctx // the client has a timeout; loopback only
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return nil
}

// CreateClient registers a client_credentials client with the scopes
// (space-separated) it may ask for, through hydra's admin API.
func (s *Server) CreateClient(t testing.TB, scope string) Client {
	t.Helper()
	body, _ := json.Marshal(map[string]any{
		"client_name":                "apim-test",
		"grant_types":                []string{"client_credentials"},
		"scope":                      scope,
		"token_endpoint_auth_method": "client_secret_basic",
		"access_token_strategy":      "jwt",
	})
	var c struct {
		ID     string `json:"client_id"`
		Secret string `json:"client_secret"`
	}
	s.doJSON(t, http.MethodPost, s.AdminURL+"/admin/clients", "application/json", bytes.NewReader(body), nil, http.StatusCreated, &c)
	if c.ID == "" || c.Secret == "" {
		t.Fatalf("hydratest: hydra made a client without id or secret")
	}
	return Client{ID: c.ID, Secret: c.Secret}
}

// Token gets an access token (a JWT) for c with the client_credentials
// grant; scope may be empty.
func (s *Server) Token(t testing.TB, c Client, scope string) string {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}}
	if scope != "" {
		form.Set("scope", scope)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	s.doJSON(t, http.MethodPost, s.TokenURL, "application/x-www-form-urlencoded", strings.NewReader(form.Encode()),
		&c, http.StatusOK, &tok)
	if strings.Count(tok.AccessToken, ".") != 2 {
		t.Fatalf("hydratest: the access token is not a JWT")
	}
	return tok.AccessToken
}

func (s *Server) doJSON(t testing.TB, method, u, contentType string, body io.Reader, basic *Client, want int, out any) {
	t.Helper()
	req, err := http.NewRequest(method, u, body) //nolint:noctx // the client has a timeout
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Accept", "application/json")
	if basic != nil {
		req.SetBasicAuth(url.QueryEscape(basic.ID), url.QueryEscape(basic.Secret))
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("hydratest: %s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("hydratest: %s %s = %d %s, want %d", method, u, resp.StatusCode, b, want)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("hydratest: %s %s: %v", method, u, err)
	}
}

package app

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/apim-dev/apim/internal/config"
	"github.com/apim-dev/apim/internal/logging"
	"github.com/apim-dev/apim/internal/ops"
	"github.com/apim-dev/apim/internal/runner"
	"github.com/apim-dev/apim/internal/samplebackend"
)

// Version is the build's version, set with -ldflags "-X ...app.Version=...".
var Version = "dev"

// Main runs the command that args name until ctx is done.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseArgs(args, stderr)
	if err != nil {
		return err
	}
	switch o.command {
	case cmdVersion:
		fmt.Fprintln(stdout, "apim", Version)
		return nil
	case cmdSampleBackend:
		return serveSampleBackend(ctx, o.address, stdout)
	}
	cfg, err := config.LoadFile(o.configFile, withProfile(os.Environ(), o.profile))
	if err != nil {
		return err
	}
	log, err := logging.New(stderr, cfg.Log.Level)
	if err != nil {
		return err
	}
	switch o.command {
	case cmdEnvoyBootstrap:
		return writeEnvoyBootstrap(cfg, o)
	case cmdMigrate:
		dbs, err := openDatabases(ctx, cfg, log)
		if err != nil {
			return err
		}
		dbs.close()
		return nil
	case cmdRotateKeys:
		return rotateKeys(ctx, cfg, log, stdout)
	}
	return run(ctx, cfg, log)
}

// withProfile puts a -profile flag in front of the environment's APIM_PROFILE.
func withProfile(environ []string, profile string) []string {
	if profile == "" {
		return environ
	}
	return append(environ, "APIM_PROFILE="+profile)
}

// run starts the parts of the configured profile and runs them until ctx is
// done or one fails.
func run(ctx context.Context, cfg config.Config, root zerolog.Logger) error {
	log := logging.Component(root, "app")
	log.Info().Str("profile", cfg.Profile).Str("version", Version).Msg("starting")
	reg := ops.NewRegistry()
	ready := ops.NewReadiness()
	s := &system{cfg: cfg, root: root, reg: reg, ready: ready, panics: runner.NewPanicCounter()}
	reg.MustRegister(s.panics)
	defer s.close()

	var err error
	switch cfg.Profile {
	case config.ProfileAllInOne:
		err = s.allInOne(ctx)
	case config.ProfileControlPlane:
		err = s.controlPlane(ctx)
	case config.ProfileGateway:
		err = s.gateway(ctx)
	case config.ProfileTrafficManager:
		err = s.trafficManager(ctx)
	}
	if err != nil {
		return err
	}
	opsLn, err := net.Listen("tcp", cfg.Ops.Address)
	if err != nil {
		return fmt.Errorf("ops.address: %w", err)
	}
	opsSrv := &http.Server{Handler: s.opsHandler(ops.Handler(ready, reg)), ReadHeaderTimeout: 5 * time.Second}
	s.add(runner.Named("ops-http", runner.Func(func(ctx context.Context) error {
		return ops.Serve(ctx, opsSrv, opsLn, false)
	})))
	log.Info().Str("ops", cfg.Ops.Address).Msg("started")
	return runner.Group{Logger: log, Panics: s.panics}.Run(ctx, s.runners...)
}

// system is what one process runs: the runners of its profile and what to
// close when they stop.
type system struct {
	cfg     config.Config
	root    zerolog.Logger
	reg     *prometheus.Registry
	ready   *ops.Readiness
	runners []runner.Runner
	// panics counts the panics recovered in runners and gRPC handlers.
	panics  *prometheus.CounterVec
	closers []func()
	// opsRoutes are more routes on the ops listener, by pattern
	// (backendjwt.go).
	opsRoutes map[string]http.Handler
}

func (s *system) add(r ...runner.Runner) { s.runners = append(s.runners, r...) }

func (s *system) onClose(f func()) { s.closers = append(s.closers, f) }

func (s *system) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
}

func (s *system) log(component string) zerolog.Logger { return logging.Component(s.root, component) }

// serveHTTPS serves h on the configured HTTPS address with the configured or
// self-signed certificate, and returns the certificate's PEM file.
func (s *system) serveHTTPS(h http.Handler) (string, error) {
	cert, certFile, err := certsFor(s.cfg)
	if err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", s.cfg.HTTP.Address)
	if err != nil {
		return "", fmt.Errorf("http.address: %w", err)
	}
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          nil,
	}
	s.add(runner.Named("https", runner.Func(func(ctx context.Context) error { return ops.Serve(ctx, srv, ln, true) })))
	return certFile, nil
}

func serveSampleBackend(ctx context.Context, addr string, stdout io.Writer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("sample backend: %w", err)
	}
	fmt.Fprintf(stdout, "sample backend on http://%s\n", ln.Addr())
	srv := &http.Server{Handler: samplebackend.Handler("sample-backend"), ReadHeaderTimeout: 5 * time.Second}
	return ops.Serve(ctx, srv, ln, false)
}

// dataPath is a path under the data directory.
func (s *system) dataPath(parts ...string) string {
	return filepath.Join(append([]string{s.cfg.DataDir}, parts...)...)
}

// writeFile writes a file that holds no secret, such as Envoy's bootstrap:
// it is world-readable so that an Envoy running as another user can read it.
func writeFile(name string, data []byte) error {
	if err := os.WriteFile(name, data, 0o644); err != nil { //nolint:gosec // G306: no secret in it; Envoy may run as another user
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

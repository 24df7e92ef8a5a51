package app

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/apim-dev/apim/authz"
	"github.com/apim-dev/apim/envoy"
	"github.com/apim-dev/apim/internal/certs"
	"github.com/apim-dev/apim/internal/config"
	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/gwstate"
	"github.com/apim-dev/apim/internal/logging"
	"github.com/apim-dev/apim/internal/migrate"
	"github.com/apim-dev/apim/internal/model"
	"github.com/apim-dev/apim/internal/pgcluster"
	"github.com/apim-dev/apim/internal/runner"
	"github.com/apim-dev/apim/internal/store"
	"github.com/apim-dev/apim/keymgr"
	"github.com/apim-dev/apim/portal"
	"github.com/apim-dev/apim/ratelimit"
	"github.com/apim-dev/apim/trafficmgr"
	"github.com/apim-dev/apim/xds"
)

// databases are the two pools, migrated.
type databases struct {
	apim, shared *pgxpool.Pool
	cluster      *pgcluster.Cluster
	log          zerolog.Logger
}

func (d *databases) close() {
	if d.apim != nil {
		d.apim.Close()
	}
	if d.shared != nil {
		d.shared.Close()
	}
	if d.cluster != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := d.cluster.Stop(ctx); err != nil {
			d.log.Error().Err(err).Msg("stop the private PostgreSQL cluster")
		}
	}
}

// openDatabases connects to the configured databases, or starts the private
// cluster when none is configured, and applies the migrations.
func openDatabases(ctx context.Context, cfg config.Config, root zerolog.Logger) (*databases, error) {
	d := &databases{log: logging.Component(root, "postgres")}
	apimURL, sharedURL := cfg.Database.APIMURL, cfg.Database.SharedURL
	if apimURL == "" {
		dir, err := filepath.Abs(filepath.Join(cfg.DataDir, "postgres"))
		if err != nil {
			return nil, fmt.Errorf("data_dir: %w", err)
		}
		c, err := pgcluster.Start(ctx, pgcluster.Config{Dir: dir, Port: cfg.Database.PrivatePort, Logger: d.log})
		if err != nil {
			return nil, fmt.Errorf("start the private PostgreSQL cluster: %w", err)
		}
		d.cluster = c
		for _, db := range []string{"apim", "apim_shared"} {
			if err := c.EnsureDatabase(ctx, db); err != nil {
				d.close()
				return nil, err
			}
		}
		apimURL, sharedURL = c.URL("apim"), c.URL("apim_shared")
	}
	if err := migrate.Migrate(ctx, apimURL, sharedURL); err != nil {
		d.close()
		return nil, err
	}
	var err error
	if d.apim, err = pgxpool.New(ctx, apimURL); err != nil {
		d.close()
		return nil, fmt.Errorf("database.apim_url: %w", err)
	}
	if d.shared, err = pgxpool.New(ctx, sharedURL); err != nil {
		d.close()
		return nil, fmt.Errorf("database.shared_url: %w", err)
	}
	return d, nil
}

// brokers returns the configured Kafka brokers, or starts the embedded broker
// (all-in-one only), and makes sure the topics exist.
func (s *system) brokers(ctx context.Context) ([]string, error) {
	brokers := s.cfg.Kafka.Brokers
	if len(brokers) == 0 {
		emb, err := events.StartEmbedded(ctx, s.cfg.Kafka.EmbeddedAddress)
		if err != nil {
			return nil, fmt.Errorf("start the embedded Kafka broker on kafka.embedded_address: %w", err)
		}
		s.onClose(emb.Close)
		brokers = emb.Brokers()
		log := s.log("kafka")
		log.Info().Strs("brokers", brokers).Msg("embedded Kafka-protocol broker started")
	}
	if err := events.EnsureTopics(ctx, brokers, s.cfg.Kafka.Partitions,
		events.TopicNotifications, trafficmgr.TopicCounts, trafficmgr.TopicDecisions); err != nil {
		return nil, err
	}
	return brokers, nil
}

func (s *system) allInOne(ctx context.Context) error {
	cp, err := s.controlPlaneParts(ctx)
	if err != nil {
		return err
	}
	if err := s.trafficManagerParts(cp.brokers); err != nil {
		return err
	}
	return s.gatewayParts(ctx, cp.brokers, cp.store.GatewayState, cp.keys, []string{cp.keys.Issuer()}, inProcessIntrospector(cp.keys))
}

func (s *system) controlPlane(ctx context.Context) error {
	_, err := s.controlPlaneParts(ctx)
	return err
}

// gateway runs the sidecar of a gateway fleet: it loads its environment's
// state from the control plane over HTTPS and verifies tokens against the
// control plane's JWKS.
func (s *system) gateway(ctx context.Context) error {
	brokers, err := s.brokers(ctx)
	if err != nil {
		return err
	}
	client, err := s.controlPlaneClient()
	if err != nil {
		return err
	}
	base := strings.TrimSuffix(s.cfg.Gateway.ControlPlaneURL, "/")
	keys, err := authz.NewJWKS(authz.JWKSConfig{URL: base + "/oauth2/jwks", Client: client, Logger: s.log("jwks")})
	if err != nil {
		return err
	}
	s.add(runner.Named("jwks", keys))
	load := func(ctx context.Context, env string) (*model.GatewayState, error) {
		return fetchGatewayState(ctx, client, base, env, s.cfg.Gateway.Token)
	}
	intro, err := s.remoteIntrospector(client, base) // opaque.go
	if err != nil {
		return err
	}
	return s.gatewayParts(ctx, brokers, load, keys, []string{s.cfg.KeyManager.Issuer}, intro)
}

// trafficManager runs one traffic-manager replica: it sums the gateways'
// counts of the throttle keys Kafka gives it and publishes the decisions.
func (s *system) trafficManager(ctx context.Context) error {
	brokers, err := s.brokers(ctx)
	if err != nil {
		return err
	}
	return s.trafficManagerParts(brokers)
}

func (s *system) trafficManagerParts(brokers []string) error {
	m, err := trafficmgr.NewManager(trafficmgr.ManagerConfig{Brokers: brokers, ID: instanceID(""), Logger: s.log("traffic-manager"), Registry: s.reg})
	if err != nil {
		return err
	}
	s.add(runner.Named("trafficmgr", m))
	return nil
}

// instanceID is name (the host name if empty) with a suffix unique to this
// process start.
func instanceID(name string) string {
	if name == "" {
		name, _ = os.Hostname()
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return name + "-" + hex.EncodeToString(b[:])
}

// controlPlane holds what the control plane's parts share with a gateway in
// the same process.
type controlPlane struct {
	brokers []string
	store   *store.Store
	keys    *keymgr.Server
}

func (s *system) controlPlaneParts(ctx context.Context) (*controlPlane, error) {
	dbs, err := openDatabases(ctx, s.cfg, s.root)
	if err != nil {
		return nil, err
	}
	s.onClose(dbs.close)
	brokers, err := s.brokers(ctx)
	if err != nil {
		return nil, err
	}
	km, err := keymgr.New(ctx, keyManagerConfig(s.cfg, dbs, s.log("keymgr")))
	if err != nil {
		return nil, err
	}
	s.add(runner.Named("keymgr", km))
	if err := s.ensureAdmin(ctx, dbs.shared); err != nil {
		return nil, err
	}
	st := store.New(dbs.apim)
	if err := st.EnsureDefaultPolicies(ctx); err != nil {
		return nil, err
	}
	deny := s.cfg.EndpointDenyList()
	p, err := portal.New(portal.Config{Store: st, Tokens: km, Clients: km, Logger: s.log("portal"), EndpointDeny: deny})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/api/am/", p.Handler())
	mux.Handle("/", km.Handler())
	mux.Handle("GET /internal/data/v1/gateway-state", s.gatewayStateHandler(st))
	mux.Handle("POST "+keymgr.PathGatewayIntrospect, km.GatewayIntrospectionHandler(s.cfg.Gateway.Token)) // opaque.go
	if _, err := s.serveHTTPS(mux); err != nil {
		return nil, err
	}

	relay, err := events.NewRelay(events.RelayConfig{DB: dbs.apim, Brokers: brokers, Logger: s.log("relay")})
	if err != nil {
		return nil, err
	}
	sidecarHost, sidecarPort, err := splitHostPort(s.cfg.Gateway.SidecarAddress)
	if err != nil {
		return nil, fmt.Errorf("gateway.sidecar_address: %w", err)
	}
	xdsSrv, err := xds.New(xds.Config{
		Address: s.cfg.XDS.Address, Source: st,
		ListenerPort:      uint32(s.cfg.Gateway.ListenerPort), //nolint:gosec // G115: config.Validate keeps it in 1..65535
		Sidecar:           xds.Upstream{Address: sidecarHost, Port: sidecarPort},
		RateLimitFailOpen: s.cfg.Gateway.RateLimitFailOpen,
		LimitInAuthz:      s.cfg.Gateway.RateLimitMode == config.RateLimitInAuthz,
		Logger:            s.log("xds"),
		GRPCOptions:       runner.GRPCRecovery("xds", s.log("xds"), s.panics),
		EndpointDeny:      deny,
		Limits: xds.ListenerLimits{
			RequestHeadersTimeout: s.cfg.Gateway.RequestHeadersTimeout, IdleTimeout: s.cfg.Gateway.IdleTimeout,
			MaxRequestHeadersKB: uint32(s.cfg.Gateway.MaxRequestHeadersKB), //nolint:gosec // G115: config.Validate keeps it in 1..8192
			MaxRequestBodyBytes: uint64(s.cfg.Gateway.MaxRequestBodyBytes), //nolint:gosec // G115: config.Validate keeps it positive
		},
	})
	if err != nil {
		return nil, err
	}
	tail, err := events.NewTail(events.TailConfig{
		Brokers: brokers, Topic: events.TopicNotifications, Logger: s.log("xds-events"), Name: "xds", Registry: s.reg,
	})
	if err != nil {
		return nil, err
	}
	if err := tail.Mark(ctx); err != nil {
		return nil, err
	}
	s.ready.Add("xds", xdsSrv.Ready)
	s.add(runner.Named("outbox-relay", relay), runner.Named("xds", xdsSrv), runner.Named("xds-events", runner.Func(func(ctx context.Context) error {
		// Every rebuild reads PostgreSQL: after missed events, one more
		// rebuild is the reload.
		reload := func(context.Context) error { xdsSrv.Notify(); return nil }
		return tail.Follow(ctx, reload, func(_ context.Context, ev events.Event) error {
			switch ev.Kind {
			case events.KindDeployment, events.KindAPI, events.KindEnvironment:
				xdsSrv.Notify()
			}
			return nil
		})
	})))
	return &controlPlane{brokers: brokers, store: st, keys: km}, nil
}

func keyManagerConfig(cfg config.Config, dbs *databases, log zerolog.Logger) keymgr.Config {
	return keymgr.Config{
		BaseURL: cfg.HTTP.BaseURL, Issuer: cfg.KeyManager.Issuer,
		APIM: dbs.apim, Shared: dbs.shared,
		AccessTokenTTL: cfg.KeyManager.AccessTokenTTL, RefreshTokenTTL: cfg.KeyManager.RefreshTokenTTL,
		KeyRotationInterval: cfg.KeyManager.KeyRotationInterval,
		Logger:              log,
	}
}

// rotateKeys makes a new signing key active: running control planes pick it
// up at their next key reload, and the old key keeps verifying until every
// token it signed has expired.
func rotateKeys(ctx context.Context, cfg config.Config, root zerolog.Logger, stdout io.Writer) error {
	dbs, err := openDatabases(ctx, cfg, root)
	if err != nil {
		return err
	}
	defer dbs.close()
	km, err := keymgr.New(ctx, keyManagerConfig(cfg, dbs, logging.Component(root, "keymgr")))
	if err != nil {
		return err
	}
	if err := km.RotateKeys(ctx); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "rotated the token signing key")
	return nil
}

// ensureAdmin creates the administrator on first start. Only all-in-one may
// fall back to admin/admin, and it says so loudly.
func (s *system) ensureAdmin(ctx context.Context, shared *pgxpool.Pool) error {
	password := s.cfg.Admin.Password
	if password == "" {
		password = "admin"
	}
	created, err := keymgr.EnsureUser(ctx, shared, s.cfg.Admin.Username, password, []string{"admin"})
	if err != nil {
		return fmt.Errorf("create the admin user: %w", err)
	}
	if created && s.cfg.Admin.Password == "" {
		log := s.log("app")
		log.Warn().Str("user", s.cfg.Admin.Username).
			Msg("NO ADMIN PASSWORD CONFIGURED: created the admin user with the default password 'admin'. Set admin.password (APIM_ADMIN_PASSWORD) before exposing this instance, and change it.")
	}
	return nil
}

// gatewayStateHandler serves a gateway environment's full state to gateway
// sidecars that hold the shared gateway.token. Without a token configured it
// serves nothing.
func (s *system) gatewayStateHandler(st *store.Store) http.Handler {
	gateway := keymgr.GatewayTokenCheck(s.cfg.Gateway.Token)
	log := s.log("app")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !gateway(r) {
			http.Error(w, `{"code":401,"message":"Unauthenticated"}`, http.StatusUnauthorized)
			return
		}
		state, err := st.GatewayState(r.Context(), r.URL.Query().Get("environment"))
		if err != nil {
			log.Error().Err(err).Msg("load gateway state")
			http.Error(w, `{"code":500,"message":"Internal error"}`, http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(state); err != nil {
			log.Warn().Err(err).Msg("send gateway state")
		}
	})
}

func fetchGatewayState(ctx context.Context, client *http.Client, base, env, token string) (*model.GatewayState, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/internal/data/v1/gateway-state?"+url.Values{"environment": {env}}.Encode(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("load gateway state from the control plane: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("load gateway state from the control plane: %s", resp.Status)
	}
	var st model.GatewayState
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("decode gateway state: %w", err)
	}
	return &st, nil
}

func (s *system) controlPlaneClient() (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if s.cfg.Gateway.ControlPlaneCA != "" {
		pool, err := certs.Pool(s.cfg.Gateway.ControlPlaneCA)
		if err != nil {
			return nil, fmt.Errorf("gateway.control_plane_ca: %w", err)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, nil
}

type stateLoader func(ctx context.Context, environment string) (*model.GatewayState, error)

// gatewayParts runs the sidecar: it marks the event stream, loads the full
// state, then serves ext_authz and the rate-limit service while applying
// events.
func (s *system) gatewayParts(ctx context.Context, brokers []string, load stateLoader, keys authz.Keys, issuers []string, intro authz.Introspector) error {
	env := s.cfg.Gateway.Environment
	state := gwstate.NewStore()
	tail, err := events.NewTail(events.TailConfig{
		Brokers: brokers, Topic: events.TopicNotifications, Logger: s.log("gateway-events"), Name: "gateway", Registry: s.reg,
	})
	if err != nil {
		return err
	}
	if err := tail.Mark(ctx); err != nil {
		return err
	}
	full, err := load(ctx, env)
	if err != nil {
		return err
	}
	state.Replace(full)
	log := s.log("gateway")
	log.Info().Str("environment", env).Int("deployments", len(full.Deployments)).Int("subscriptions", len(full.Subscriptions)).Msg("loaded gateway state")

	fleet, err := trafficmgr.NewAgent(trafficmgr.AgentConfig{
		Brokers: brokers, GatewayID: instanceID(s.cfg.Gateway.ID), FleetSize: s.cfg.Gateway.FleetSize,
		Logger: s.log("throttle-agent"), Registry: s.reg,
	})
	if err != nil {
		return err
	}
	rl, err := ratelimit.New(ratelimit.Config{State: state, Logger: s.log("ratelimit"), Registry: s.reg, Fleet: fleet})
	if err != nil {
		return err
	}
	// The JWKS of the external key managers in the state, followed as
	// key_manager events arrive; fetched with the system's roots.
	ext, err := authz.NewExternalKeys(authz.ExternalKeysConfig{
		State: state, Client: &http.Client{Timeout: 30 * time.Second}, Logger: s.log("external-jwks"),
	})
	if err != nil {
		return err
	}
	s.add(runner.Named("external-key-managers", ext))
	jwt, err := s.backendJWTSigner() // backendjwt.go
	if err != nil {
		return err
	}
	// The limiter is always at hand: whether a route has ext_authz decide
	// its limits is the control plane's choice, carried in the route.
	az, err := authz.New(authz.Config{
		Keys: keys, Issuers: issuers, State: state, Logger: s.log("authz"), Registry: s.reg, Limiter: rl, External: ext,
		Opaque: authz.OpaqueConfig{Introspector: intro}, BackendJWT: jwt,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", s.cfg.Gateway.SidecarAddress)
	if err != nil {
		return fmt.Errorf("gateway.sidecar_address: %w", err)
	}
	srv := grpc.NewServer(append(runner.GRPCRecovery("sidecar", s.log("sidecar"), s.panics), grpc.ForceServerCodecV2(ratelimit.Codec{}))...) // the RLS messages by hand (ratelimit/codec.go)
	az.Register(srv)
	rl.Register(srv)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	s.add(
		runner.Named("ratelimit", rl),
		runner.Named("throttle-agent", fleet),
		runner.Named("gateway-events", runner.Func(func(ctx context.Context) error {
			// Missed events (the broker dropped them while this gateway
			// was away): the full state again, as at start.
			reload := func(ctx context.Context) error {
				full, err := load(ctx, env)
				if err != nil {
					return err
				}
				state.Replace(full)
				return nil
			}
			return tail.Follow(ctx, reload, func(_ context.Context, ev events.Event) error {
				if ev.Kind == events.KindDeployment && ev.Environment != env {
					return nil
				}
				if err := state.Apply(ev); err != nil {
					log.Warn().Err(err).Str("kind", string(ev.Kind)).Str("id", ev.ID).Msg("event not applied")
				}
				return nil
			})
		})),
		runner.Named("sidecar-grpc", runner.Func(func(ctx context.Context) error {
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(ln) }()
			select {
			case err := <-errc:
				return fmt.Errorf("sidecar gRPC server: %w", err)
			case <-ctx.Done():
				srv.GracefulStop()
				return nil
			}
		})),
	)
	return nil
}

func splitHostPort(addr string) (string, uint32, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	var p uint32
	if _, err := fmt.Sscanf(port, "%d", &p); err != nil {
		return "", 0, fmt.Errorf("bad port in %q", addr)
	}
	return host, p, nil
}

// writeEnvoyBootstrap writes the bootstrap of an Envoy that takes everything
// over ADS from this configuration's xDS server.
func writeEnvoyBootstrap(cfg config.Config, o options) error {
	host, port, err := splitHostPort(cfg.XDS.Address)
	if err != nil {
		return fmt.Errorf("xds.address: %w", err)
	}
	b, err := envoy.Bootstrap(envoy.BootstrapConfig{
		NodeID: o.nodeID, Cluster: cfg.Gateway.Environment,
		XDSAddress: host, XDSPort: int(port),
		AdminAddress: "127.0.0.1", AdminPort: o.adminPort,
	})
	if err != nil {
		return err
	}
	return writeFile(o.out, b)
}

func certsFor(cfg config.Config) (tls.Certificate, string, error) {
	return certs.LoadOrCreate(filepath.Join(cfg.DataDir, "tls"), cfg.HTTP.CertFile, cfg.HTTP.KeyFile)
}

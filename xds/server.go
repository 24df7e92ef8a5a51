package xds

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/apim-dev/apim/internal/logging"
	"github.com/apim-dev/apim/internal/model"
)

// DeploymentSource loads what is deployed; the store implements it.
type DeploymentSource interface {
	// Deployments returns every deployment of one gateway environment. The
	// server keeps what it returns and compares it with the next load, so
	// the source must not modify it afterwards.
	Deployments(ctx context.Context, environment string) ([]model.Deployment, error)
	// Environments returns the names of every gateway environment.
	Environments(ctx context.Context) ([]string, error)
}

// Config configures the xDS server.
type Config struct {
	Address  string       // gRPC listen address, e.g. "127.0.0.1:18000"
	Listener net.Listener // optional: serve here instead of listening on Address
	Source   DeploymentSource

	ListenerAddress   string // Envoy's HTTP listener; default 0.0.0.0
	ListenerPort      uint32 // default 8280
	Sidecar           Upstream
	RateLimitFailOpen bool
	// LimitInAuthz has ext_authz decide rate limits (Input.LimitInAuthz).
	LimitInAuthz   bool
	UpstreamCAFile string

	HoldOff  time.Duration // wait after a change for more; default 10ms
	MaxDelay time.Duration // rebuild at most this long after the first change; default 100ms
	Timeout  time.Duration // per environment load; default 10s
	Logger   zerolog.Logger
	Limits   ListenerLimits
	// EndpointDeny are destinations no cluster is made for (Input.EndpointDeny).
	EndpointDeny model.EndpointDeny
	// GRPCOptions are more options of the ADS server (runner.GRPCRecovery).
	GRPCOptions []grpc.ServerOption
}

// Server translates every environment into a snapshot and serves the
// snapshots over ADS, one per environment: an Envoy's node.cluster names its
// environment. It is a runner.
type Server struct {
	cfg   Config
	log   zerolog.Logger
	cache cachev3.SnapshotCache
	dirty chan struct{}
	// ready is set once every environment has had a snapshot set; gRPC
	// health reports SERVING from then on.
	ready atomic.Bool

	mu      sync.Mutex
	version uint64                  // the last snapshot version handed out
	envs    map[string]*envState    // by environment
	nodes   map[string]*NodeStatus  // by node id
	streams map[int64]*streamStatus // by xDS stream id
}

type envState struct {
	version string   // of the snapshot set in the cache; "" before the first
	hash    [32]byte // of that snapshot's resources
	input   Input    // the last translated input whose content that snapshot has
	lastErr error
}

type streamStatus struct {
	nodeID string
	sent   map[string][2]string // type URL → last response's nonce and version
}

// NodeStatus is what one Envoy has accepted and rejected.
type NodeStatus struct {
	NodeID      string
	Environment string
	Connected   bool
	Acked       map[string]string // type URL → last version ACKed
	LastNACK    *NACK
}

// NACK is a configuration an Envoy rejected, and why.
type NACK struct {
	TypeURL string
	Version string
	Message string
	At      time.Time
}

// environmentHash keys the snapshot cache by node.cluster, the gateway
// environment, so every Envoy of one environment shares one snapshot.
type environmentHash struct{}

func (environmentHash) ID(node *corev3.Node) string { return node.GetCluster() }

var _ cachev3.NodeHash = environmentHash{}

// New checks the configuration and returns a server ready to Start.
func New(cfg Config) (*Server, error) {
	var errs []error
	if cfg.Address == "" && cfg.Listener == nil {
		errs = append(errs, errors.New("xds.address is required"))
	}
	if cfg.Source == nil {
		errs = append(errs, errors.New("xds: a deployment source is required"))
	}
	if cfg.Sidecar.Address == "" || cfg.Sidecar.Port == 0 {
		errs = append(errs, errors.New("xds.sidecar address and port are required"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if cfg.HoldOff <= 0 {
		cfg.HoldOff = 10 * time.Millisecond
	}
	if cfg.MaxDelay <= 0 {
		cfg.MaxDelay = 100 * time.Millisecond
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	return &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		cache:   cachev3.NewSnapshotCache(true, environmentHash{}, logging.XDS{L: cfg.Logger}),
		dirty:   make(chan struct{}, 1),
		envs:    map[string]*envState{},
		nodes:   map[string]*NodeStatus{},
		streams: map[int64]*streamStatus{},
	}, nil
}

// Cache is the snapshot cache the server serves from.
func (s *Server) Cache() cachev3.SnapshotCache { return s.cache }

// Start serves ADS and gRPC health on the configured address and rebuilds
// snapshots as changes are notified, until ctx is cancelled; then it stops
// gracefully and returns nil.
func (s *Server) Start(ctx context.Context) error {
	lis := s.cfg.Listener
	if lis == nil {
		var err error
		if lis, err = (&net.ListenConfig{}).Listen(ctx, "tcp", s.cfg.Address); err != nil {
			return fmt.Errorf("xds: listen on %s: %w", s.cfg.Address, err)
		}
	}
	// ADS streams end when ctx is done, so GracefulStop does not wait forever.
	xdsServer := serverv3.NewServer(ctx, s.cache, s.callbacks())
	grpcServer := grpc.NewServer(s.cfg.GRPCOptions...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(grpcServer, xdsServer)
	healthServer := health.NewServer()
	healthServer.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(grpcServer, healthServer)

	serveErr := make(chan error, 1)
	go func() { serveErr <- grpcServer.Serve(lis) }()
	s.log.Info().Str("address", lis.Addr().String()).Msg("xds server listening")

	// NOT_SERVING until Ready.
	err := s.run(ctx, func() { healthServer.SetServingStatus("", healthpb.HealthCheckResponse_SERVING) }, serveErr)

	healthServer.Shutdown()
	stopped := make(chan struct{})
	go func() { grpcServer.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		grpcServer.Stop()
	}
	return err
}

// Ready reports whether the first build of every environment has succeeded
// and been set in the snapshot cache, so that any Envoy that connects gets
// its configuration. It stays true afterwards: a failed rebuild keeps serving
// the last good snapshot, and an environment added later does not make the
// server unready. gRPC health turns SERVING at the same moment.
func (s *Server) Ready() bool { return s.ready.Load() }

// Notify marks the deployments as changed; it never blocks.
func (s *Server) Notify() {
	select {
	case s.dirty <- struct{}{}:
	default:
	}
}

// Status reports every Envoy that has connected, sorted by node id.
func (s *Server) Status() []NodeStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]NodeStatus, 0, len(s.nodes))
	for _, n := range s.nodes {
		c := *n
		c.Acked = make(map[string]string, len(n.Acked))
		for k, v := range n.Acked {
			c.Acked[k] = v
		}
		if n.LastNACK != nil {
			nack := *n.LastNACK
			c.LastNACK = &nack
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b NodeStatus) int { return strings.Compare(a.NodeID, b.NodeID) })
	return out
}

// EnvironmentStatus reports the snapshot version an environment serves ("" if
// none yet) and why its last rebuild failed (nil if it did not).
func (s *Server) EnvironmentStatus(env string) (version string, lastErr error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.envs[env]; e != nil {
		return e.version, e.lastErr
	}
	return "", nil
}

// callbacks record, per Envoy, the versions it ACKs and the last one it
// rejects (a request carrying error_detail names the nonce it rejects).
func (s *Server) callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamOpenFunc: func(_ context.Context, id int64, _ string) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.streams[id] = &streamStatus{sent: map[string][2]string{}}
			return nil
		},
		StreamClosedFunc: func(id int64, node *corev3.Node) {
			s.mu.Lock()
			defer s.mu.Unlock()
			delete(s.streams, id)
			if n := s.nodes[node.GetId()]; n != nil {
				n.Connected = s.nodeHasStream(n.NodeID)
			}
		},
		StreamRequestFunc: func(id int64, req *discoveryv3.DiscoveryRequest) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			st := s.streams[id]
			if st == nil {
				return nil
			}
			if req.GetNode() != nil && st.nodeID == "" {
				st.nodeID = req.GetNode().GetId()
				n := s.nodes[st.nodeID]
				if n == nil {
					n = &NodeStatus{NodeID: st.nodeID, Acked: map[string]string{}}
					s.nodes[st.nodeID] = n
				}
				n.Environment, n.Connected = req.GetNode().GetCluster(), true
			}
			n := s.nodes[st.nodeID]
			if n == nil {
				return nil
			}
			switch {
			case req.GetErrorDetail() != nil:
				version := req.GetVersionInfo()
				if sent := st.sent[req.GetTypeUrl()]; sent[0] == req.GetResponseNonce() {
					version = sent[1]
				}
				n.LastNACK = &NACK{TypeURL: req.GetTypeUrl(), Version: version, Message: req.GetErrorDetail().GetMessage(), At: time.Now()}
				s.log.Error().Str("node", n.NodeID).Str("environment", n.Environment).Str("type", req.GetTypeUrl()).
					Str("version", version).Str("error", n.LastNACK.Message).Msg("envoy rejected configuration")
			case req.GetResponseNonce() != "":
				n.Acked[req.GetTypeUrl()] = req.GetVersionInfo()
			}
			return nil
		},
		StreamResponseFunc: func(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if st := s.streams[id]; st != nil {
				st.sent[resp.GetTypeUrl()] = [2]string{resp.GetNonce(), resp.GetVersionInfo()}
			}
		},
	}
}

// nodeHasStream reports whether any open stream belongs to the node; s.mu is held.
func (s *Server) nodeHasStream(nodeID string) bool {
	for _, st := range s.streams {
		if st.nodeID == nodeID {
			return true
		}
	}
	return false
}

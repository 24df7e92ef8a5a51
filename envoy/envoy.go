// Package envoy renders the bootstrap that points an Envoy at the xDS server
// and finds the Envoy binary pinned in the repository's .envoy-version file.
package envoy

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/apim-dev/apim/internal/localenv"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"gopkg.in/yaml.v3"
)

// XDSCluster is the static cluster of the xDS server in the bootstrap.
const XDSCluster = "xds_cluster"

// VersionFile is the file, at the repository root, that pins Envoy's version.
const VersionFile = ".envoy-version"

// BootstrapConfig is what an Envoy needs to find its xDS server.
type BootstrapConfig struct {
	NodeID       string
	Cluster      string // the gateway environment: every Envoy of it shares one snapshot
	XDSAddress   string
	XDSPort      int
	AdminAddress string
	AdminPort    int
}

// Bootstrap renders the YAML bootstrap of an Envoy that takes its listeners
// and clusters (and, through them, its routes) over ADS from the xDS server,
// over plaintext HTTP/2.
func Bootstrap(c BootstrapConfig) ([]byte, error) {
	var errs []error
	if c.NodeID == "" {
		errs = append(errs, errors.New("node id is required"))
	}
	if c.Cluster == "" {
		errs = append(errs, errors.New("cluster (the gateway environment) is required"))
	}
	if c.XDSAddress == "" || c.XDSPort <= 0 || c.XDSPort > 65535 {
		errs = append(errs, fmt.Errorf("xds address %s:%d is invalid", c.XDSAddress, c.XDSPort))
	}
	if c.AdminAddress == "" || c.AdminPort < 0 || c.AdminPort > 65535 {
		errs = append(errs, fmt.Errorf("admin address %s:%d is invalid", c.AdminAddress, c.AdminPort))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("envoy bootstrap: %w", errors.Join(errs...))
	}
	xdsPort, adminPort := uint32(c.XDSPort), uint32(c.AdminPort) //nolint:gosec // G115: both checked to be in 0..65535 above
	ads := &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
	b := &bootstrapv3.Bootstrap{
		Node: &corev3.Node{Id: c.NodeID, Cluster: c.Cluster},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:             corev3.ApiConfigSource_GRPC,
				TransportApiVersion: corev3.ApiVersion_V3,
				GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
					EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: XDSCluster},
				}}},
			},
			LdsConfig: ads,
			CdsConfig: ads,
		},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{Clusters: []*clusterv3.Cluster{xdsCluster(c.XDSAddress, xdsPort)}},
		Admin:           &bootstrapv3.Admin{Address: socketAddress(c.AdminAddress, adminPort)},
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("envoy bootstrap: %w", err)
	}
	return MarshalYAML(b)
}

// xdsCluster is the HTTP/2 cluster of the xDS server: STATIC for an IP
// address, STRICT_DNS for a name.
func xdsCluster(host string, port uint32) *clusterv3.Cluster {
	typ := clusterv3.Cluster_STATIC
	if _, err := netip.ParseAddr(host); err != nil {
		typ = clusterv3.Cluster_STRICT_DNS
	}
	// anypb.New only fails for a message that cannot be marshalled; this one
	// is constant and valid.
	h2, _ := anypb.New(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}},
	})
	return &clusterv3.Cluster{
		Name:                 XDSCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: typ},
		ConnectTimeout:       durationpb.New(time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: XDSCluster,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(host, port)}},
			}}}},
		},
		TypedExtensionProtocolOptions: map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": h2},
	}
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// MarshalYAML renders a message as block-style YAML with protojson's field
// names, the form Envoy reads with -c.
func MarshalYAML(m proto.Message) ([]byte, error) {
	js, err := protojson.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("marshal %T: %w", m, err)
	}
	var n yaml.Node
	if err := yaml.Unmarshal(js, &n); err != nil {
		return nil, fmt.Errorf("marshal %T: %w", m, err)
	}
	blockStyle(&n)
	out, err := yaml.Marshal(&n)
	if err != nil {
		return nil, fmt.Errorf("marshal %T: %w", m, err)
	}
	return out, nil
}

func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// Binary finds the Envoy binary: $APIM_ENVOY if set; else the one
// scripts/get-envoy.sh puts in .cache/envoy/<version>/envoy of the module
// that holds the working directory; else envoy on PATH.
func Binary() (string, error) {
	if p := os.Getenv("APIM_ENVOY"); p != "" {
		return p, nil
	}
	if root, err := localenv.ModuleRoot(); err == nil {
		// The version file is the repository's own pin, and the binary is the
		// one scripts/get-envoy.sh put under the module's .cache.
		if ver, err := os.ReadFile(filepath.Join(root, VersionFile)); err == nil { //nolint:gosec // G304: the module's own .envoy-version
			p := filepath.Join(root, ".cache", "envoy", strings.TrimSpace(string(ver)), "envoy")
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 { //nolint:gosec // G703: a path under the module's own .cache
				return p, nil
			}
		}
	}
	p, err := exec.LookPath("envoy")
	if err != nil {
		return "", errors.New("no envoy binary: set APIM_ENVOY or run scripts/get-envoy.sh")
	}
	return p, nil
}

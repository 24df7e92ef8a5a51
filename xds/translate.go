// Package xds turns the deployments of one gateway environment into Envoy
// listeners, routes and clusters (a pure translation), keeps one consistent
// snapshot per environment, and serves it to Envoy over ADS.
package xds

import (
	"cmp"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	ratelimitconfv3 "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	metadatav3 "github.com/envoyproxy/go-control-plane/envoy/type/metadata/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/apim-dev/apim/internal/model"
)

// Names shared with the sidecar and with Envoy's bootstrap.
const (
	// SidecarCluster is the cluster of the gateway sidecar (ext_authz and RLS).
	SidecarCluster = "apim_sidecar"
	// RateLimitDomain is the domain of every rate-limit request.
	RateLimitDomain = "apim"
	// KeyTypeHeader is set by ext_authz on every allowed request (PRODUCTION or
	// SANDBOX, overwriting any client value); the route is then picked again.
	KeyTypeHeader = "x-apim-key-type"
	// ExtAuthzNamespace is the dynamic-metadata namespace ext_authz writes to.
	ExtAuthzNamespace = wellknown.HTTPExternalAuthorization
	// DefaultListenerPort is WSO2's HTTP gateway port.
	DefaultListenerPort = 8280
	// DefaultUpstreamCAFile holds the CAs that verify https backends (Debian
	// and the official Envoy images).
	DefaultUpstreamCAFile = "/etc/ssl/certs/ca-certificates.crt"
	// defaultVHost is the virtual host of deployments without one; it also
	// catches every Host that no other virtual host claims ("*").
	defaultVHost = "localhost"
)

// Context-extension keys the sidecar reads from every Check.
const (
	CtxAPIID         = "api_id"
	CtxAPIName       = "api_name"
	CtxAPIVersion    = "api_version"
	CtxAPIContext    = "api_context"
	CtxEnvironment   = "environment"
	CtxResource      = "resource"
	CtxAuthType      = "auth_type"
	CtxScopes        = "scopes"
	CtxTier          = "tier"
	CtxHasSandbox    = "has_sandbox"
	CtxHasProduction = "has_production"
)

// Dynamic-metadata keys ext_authz sets for the rate-limit step. When they are
// absent (an unlimited tier) Envoy makes no rate-limit call at all.
const (
	MetaSubscriptionID   = "subscription_id"
	MetaSubscriptionTier = "subscription_tier"
)

// notFoundBody is WSO2's body for a request that matches no API resource.
const notFoundBody = `{"code":"900906","message":"No matching resource found for given API Request","description":"The requested resource is not available."}`

// noProductionBody answers a request that ext_authz let through to an API
// without a production endpoint; the sidecar normally denies it first.
const noProductionBody = `{"code":"900908","message":"Resource forbidden","description":"The API has no production endpoint"}`

// Upstream is a host and port Envoy connects to.
type Upstream struct {
	Address string
	Port    uint32
}

// Input is everything one environment's translation depends on.
type Input struct {
	Environment     string
	Deployments     []model.Deployment
	ListenerAddress string // default 0.0.0.0
	ListenerPort    uint32 // default 8280
	Sidecar         Upstream
	// RateLimitFailOpen lets requests through when the rate-limit service
	// cannot be reached. The configuration layer defaults it to true.
	RateLimitFailOpen bool
	// UpstreamCAFile verifies https backends; default DefaultUpstreamCAFile.
	UpstreamCAFile string
}

// Resources are the Envoy resources of one environment.
type Resources struct {
	Listeners []types.Resource
	Routes    []types.Resource
	Clusters  []types.Resource
}

// Snapshot wraps the resources in a snapshot of the given version and checks
// that it is consistent (every referenced route configuration is present).
func (r Resources) Snapshot(version string) (*cachev3.Snapshot, error) {
	s, err := cachev3.NewSnapshot(version, map[resource.Type][]types.Resource{
		resource.ListenerType: r.Listeners,
		resource.RouteType:    r.Routes,
		resource.ClusterType:  r.Clusters,
	})
	if err != nil {
		return nil, fmt.Errorf("new snapshot: %w", err)
	}
	if err := s.Consistent(); err != nil {
		return nil, fmt.Errorf("snapshot %s is inconsistent: %w", version, err)
	}
	return s, nil
}

// Translate turns the deployments of one environment into Envoy resources.
// It is pure: no I/O, no clock. Every problem is reported, each naming its API.
func Translate(in Input) (Resources, error) {
	if in.ListenerAddress == "" {
		in.ListenerAddress = "0.0.0.0"
	}
	if in.ListenerPort == 0 {
		in.ListenerPort = DefaultListenerPort
	}
	if in.UpstreamCAFile == "" {
		in.UpstreamCAFile = DefaultUpstreamCAFile
	}
	var errs []error
	if in.Environment == "" {
		errs = append(errs, errors.New("environment is required"))
	}
	if in.Sidecar.Address == "" || in.Sidecar.Port == 0 {
		errs = append(errs, errors.New("sidecar address and port are required"))
	}
	routeName := "http_" + strconv.FormatUint(uint64(in.ListenerPort), 10)

	clusters := map[string]*clusterv3.Cluster{}
	vhosts := map[string][]routeEntry{}
	seenAPI := map[string]bool{}
	seenBase := map[string]string{} // vhost + base path → API id
	for _, d := range in.Deployments {
		routes, err := translateDeployment(in, d, clusters)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		vh := vhostOf(d)
		base := vh + " " + d.API.BasePath()
		switch {
		case seenAPI[d.API.ID]:
			errs = append(errs, fmt.Errorf("api %s: deployed twice to environment %s", apiName(d.API), in.Environment))
			continue
		case seenBase[base] != "":
			errs = append(errs, fmt.Errorf("api %s: %s on vhost %s is already used by api %s", apiName(d.API), d.API.BasePath(), vh, seenBase[base]))
			continue
		}
		seenAPI[d.API.ID], seenBase[base] = true, d.API.ID
		vhosts[vh] = append(vhosts[vh], routes...)
	}
	if len(errs) > 0 {
		return Resources{}, errors.Join(errs...)
	}

	clusters[SidecarCluster] = sidecarCluster(in.Sidecar)
	listener := httpListener(in, routeName)
	rc := routeConfig(routeName, vhosts)

	out := Resources{Listeners: []types.Resource{listener}, Routes: []types.Resource{rc}}
	for _, name := range slices.Sorted(maps.Keys(clusters)) {
		out.Clusters = append(out.Clusters, clusters[name])
	}
	// Routes were validated per API above; the route configuration is
	// validated here without them, so that each is checked once.
	for _, r := range slices.Concat(out.Listeners, []types.Resource{withoutRoutes(rc)}, out.Clusters) {
		if v, ok := r.(interface{ ValidateAll() error }); ok {
			if err := v.ValidateAll(); err != nil {
				errs = append(errs, fmt.Errorf("%T %s: %w", r, resourceName(r), err))
			}
		}
	}
	if len(errs) > 0 {
		return Resources{}, errors.Join(errs...)
	}
	return out, nil
}

// routeEntry is one route and the key it is sorted by.
type routeEntry struct {
	segs    []string // the full template's segments: literal, "{}" or "*"
	verb    string
	sandbox bool
	apiID   string
	route   *routev3.Route
}

// translateDeployment builds the routes of one deployment, adds the clusters
// they need to clusters, and validates every route on its own so that an
// invalid one names its API.
func translateDeployment(in Input, d model.Deployment, clusters map[string]*clusterv3.Cluster) ([]routeEntry, error) {
	api := d.API
	if d.Environment != "" && d.Environment != in.Environment {
		return nil, fmt.Errorf("api %s: deployment is for environment %s, not %s", apiName(api), d.Environment, in.Environment)
	}
	if err := api.Validate(); err != nil {
		return nil, fmt.Errorf("api %s: %w", apiName(api), err)
	}
	if err := validVHost(d.VHost); err != nil {
		return nil, fmt.Errorf("api %s: vhost %w", apiName(api), err)
	}
	var prod, sandbox *backend
	for _, ep := range []struct {
		e   *model.Endpoint
		dst **backend
	}{{api.Production, &prod}, {api.Sandbox, &sandbox}} {
		if ep.e == nil {
			continue
		}
		b, err := newBackend(ep.e.URL, in.UpstreamCAFile)
		if err != nil {
			return nil, fmt.Errorf("api %s: %w", apiName(api), err)
		}
		clusters[b.cluster.GetName()] = b.cluster
		*ep.dst = b
	}

	base := api.BasePath()
	var out []routeEntry
	var errs []error
	for _, op := range api.Operations {
		ext := map[string]string{
			CtxAPIID:         api.ID,
			CtxAPIName:       api.Name,
			CtxAPIVersion:    api.Version,
			CtxAPIContext:    api.Context,
			CtxEnvironment:   in.Environment,
			CtxResource:      op.Key(),
			CtxAuthType:      op.AuthType,
			CtxScopes:        strings.Join(op.Scopes, " "),
			CtxTier:          op.ThrottlingPolicy,
			CtxHasSandbox:    strconv.FormatBool(sandbox != nil),
			CtxHasProduction: strconv.FormatBool(prod != nil),
		}
		regex := PathRegex(base, op.Target)
		segs := templateSegments(base + op.Target)
		name := api.ID + ":" + op.Key()
		if sandbox != nil {
			r := apiRoute(name+":sandbox", regex, op.Verb, true, ext)
			r.Action = sandbox.action(base)
			out = append(out, routeEntry{segs: segs, verb: op.Verb, sandbox: true, apiID: api.ID, route: r})
		}
		// Without a production endpoint, the route still has to exist: the
		// first route match happens before ext_authz and picks the context
		// extensions the sidecar sees. The sidecar denies production keys for
		// has_production=false; should one get through, it gets a 403 here.
		r := apiRoute(name, regex, op.Verb, false, ext)
		if prod != nil {
			r.Action = prod.action(base)
		} else {
			r.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
				Status: 403,
				Body:   &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: noProductionBody}},
			}}
			r.ResponseHeadersToAdd = []*corev3.HeaderValueOption{{
				Header:       &corev3.HeaderValue{Key: "content-type", Value: "application/json"},
				AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			}}
		}
		out = append(out, routeEntry{segs: segs, verb: op.Verb, apiID: api.ID, route: r})
	}
	for _, e := range out {
		if err := e.route.ValidateAll(); err != nil {
			errs = append(errs, fmt.Errorf("route %s: %w", e.route.GetName(), err))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("api %s: %w", apiName(api), errors.Join(errs...))
	}
	return out, nil
}

// apiRoute is a route of one operation, without its action.
func apiRoute(name, pathRegex, verb string, sandbox bool, ext map[string]string) *routev3.Route {
	headers := []*routev3.HeaderMatcher{exactHeader(":method", verb)}
	if sandbox {
		headers = append(headers, exactHeader(KeyTypeHeader, model.KeyTypeSandbox))
	}
	return &routev3.Route{
		Name: name,
		Match: &routev3.RouteMatch{
			PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: pathRegex}},
			Headers:       headers,
		},
		TypedPerFilterConfig: map[string]*anypb.Any{
			wellknown.HTTPExternalAuthorization: toAny(&extauthzv3.ExtAuthzPerRoute{
				Override: &extauthzv3.ExtAuthzPerRoute_CheckSettings{CheckSettings: &extauthzv3.CheckSettings{ContextExtensions: ext}},
			}),
		},
	}
}

func exactHeader(name, value string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{
		Name: name,
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Exact{Exact: value},
		}},
	}
}

// backend is one endpoint URL and its cluster.
type backend struct {
	host    string // Host header: host[:port] as written in the URL
	path    string // URL path without a trailing slash; "" for the root
	cluster *clusterv3.Cluster
}

func newBackend(raw, caFile string) (*backend, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("endpoint %q: %w", raw, err)
	}
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return nil, fmt.Errorf("endpoint %q: bad port %q", raw, port)
	}
	c := &clusterv3.Cluster{
		Name:                 ClusterName(u.Scheme, host, uint32(p)),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_LOGICAL_DNS},
		DnsLookupFamily:      clusterv3.Cluster_V4_PREFERRED,
		ConnectTimeout:       durationpb.New(5 * time.Second),
		LoadAssignment:       loadAssignment(host, uint32(p)),
	}
	c.LoadAssignment.ClusterName = c.Name
	if u.Scheme == "https" {
		c.TransportSocket = upstreamTLS(host, caFile)
	}
	return &backend{host: u.Host, path: strings.TrimSuffix(u.EscapedPath(), "/"), cluster: c}, nil
}

// action routes to the backend, replacing the API's base path with the
// endpoint's path: /ctx/1.0.0/pets/1?q → {endpoint path}/pets/1?q. Envoy
// matches and rewrites the path without its query string and keeps the query.
func (b *backend) action(basePath string) *routev3.Route_Route {
	pattern, sub := "^"+literalRegex(basePath), b.path
	if b.path == "" {
		// /ctx/1.0.0 alone must become "/", never an empty path.
		pattern, sub = pattern+"/?", "/"
	}
	return &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: b.cluster.GetName()},
		RegexRewrite: &matcherv3.RegexMatchAndSubstitute{
			Pattern:      &matcherv3.RegexMatcher{Regex: pattern},
			Substitution: sub,
		},
		HostRewriteSpecifier: &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: b.host},
		Timeout:              durationpb.New(60 * time.Second),
		RateLimits:           []*routev3.RateLimit{subscriptionRateLimit()},
	}}
}

// subscriptionRateLimit sends the descriptor [subscription, tier] taken from
// ext_authz's dynamic metadata. skip_if_absent stays false on purpose: in
// Envoy 1.40 a metadata action without a value and with skip_if_absent=false
// drops the whole descriptor, so no rate-limit call is made for a request the
// sidecar left untagged (unlimited tier); skip_if_absent=true would instead
// call the service with the entry left out.
func subscriptionRateLimit() *routev3.RateLimit {
	action := func(descriptorKey, metaKey string) *routev3.RateLimit_Action {
		return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_Metadata{Metadata: &routev3.RateLimit_Action_MetaData{
			DescriptorKey: descriptorKey,
			MetadataKey: &metadatav3.MetadataKey{
				Key:  ExtAuthzNamespace,
				Path: []*metadatav3.MetadataKey_PathSegment{{Segment: &metadatav3.MetadataKey_PathSegment_Key{Key: metaKey}}},
			},
			Source: routev3.RateLimit_Action_MetaData_DYNAMIC,
		}}}
	}
	return &routev3.RateLimit{Actions: []*routev3.RateLimit_Action{
		action("subscription", MetaSubscriptionID),
		action("tier", MetaSubscriptionTier),
	}}
}

// upstreamTLS verifies the backend's certificate against caFile and its
// name, and sends SNI unless the host is an IP address.
func upstreamTLS(host, caFile string) *corev3.TransportSocket {
	san := &tlsv3.SubjectAltNameMatcher{
		SanType: tlsv3.SubjectAltNameMatcher_DNS,
		Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: host}},
	}
	sni := host
	if _, err := netip.ParseAddr(host); err == nil {
		san.SanType, sni = tlsv3.SubjectAltNameMatcher_IP_ADDRESS, ""
	}
	return &corev3.TransportSocket{
		Name: wellknown.TransportSocketTLS,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: toAny(&tlsv3.UpstreamTlsContext{
			Sni: sni,
			CommonTlsContext: &tlsv3.CommonTlsContext{
				ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
					TrustedCa:                 &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: caFile}},
					MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{san},
				}},
			},
		})},
	}
}

// ClusterName names the cluster of scheme://host:port. Names are stable and
// safe in stat names; a host with other characters than [a-z0-9.-] gets a
// hash suffix so that two hosts never share a name.
func ClusterName(scheme, host string, port uint32) string {
	safe := strings.Map(func(r rune) rune {
		if r == '.' || r == '-' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, host)
	name := scheme + "_" + safe + "_" + strconv.FormatUint(uint64(port), 10)
	if safe != host {
		h := fnv.New32a()
		h.Write([]byte(host))
		name += fmt.Sprintf("_%08x", h.Sum32())
	}
	return name
}

func loadAssignment(host string, port uint32) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{Endpoints: []*endpointv3.LocalityLbEndpoints{{
		LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: socketAddress(host, port),
		}}}},
	}}}
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// sidecarCluster is the HTTP/2 cluster of the gateway sidecar: STATIC for an
// IP address, STRICT_DNS for a name.
func sidecarCluster(u Upstream) *clusterv3.Cluster {
	typ := clusterv3.Cluster_STATIC
	if _, err := netip.ParseAddr(u.Address); err != nil {
		typ = clusterv3.Cluster_STRICT_DNS
	}
	c := &clusterv3.Cluster{
		Name:                 SidecarCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: typ},
		ConnectTimeout:       durationpb.New(time.Second),
		LoadAssignment:       loadAssignment(u.Address, u.Port),
		TypedExtensionProtocolOptions: map[string]*anypb.Any{
			"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": toAny(&httpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
				}},
			}),
		},
	}
	c.LoadAssignment.ClusterName = SidecarCluster
	return c
}

// httpListener is the plain-HTTP listener; its routes come over ADS (RDS).
func httpListener(in Input, routeName string) *listenerv3.Listener {
	sidecar := &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: SidecarCluster}}}
	authz := &extauthzv3.ExtAuthz{
		Services:            &extauthzv3.ExtAuthz_GrpcService{GrpcService: sidecar},
		TransportApiVersion: corev3.ApiVersion_V3,
		FailureModeAllow:    false, // authz unreachable → deny
		StatusOnError:       &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
		ClearRouteCache:     true, // x-apim-key-type may pick the sandbox route
	}
	rl := &ratelimitv3.RateLimit{
		Domain:  RateLimitDomain,
		Timeout: durationpb.New(100 * time.Millisecond),
		RateLimitService: &ratelimitconfv3.RateLimitServiceConfig{
			GrpcService:         sidecar,
			TransportApiVersion: corev3.ApiVersion_V3,
		},
		FailureModeDeny:                !in.RateLimitFailOpen,
		EnableXRatelimitHeaders:        ratelimitv3.RateLimit_DRAFT_VERSION_03,
		DisableXEnvoyRatelimitedHeader: true,
	}
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix:       routeName,
		CodecType:        hcmv3.HttpConnectionManager_AUTO,
		UseRemoteAddress: wrapperspb.Bool(true),
		NormalizePath:    wrapperspb.Bool(true),
		MergeSlashes:     true,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: routeName,
			ConfigSource: &corev3.ConfigSource{
				ResourceApiVersion:    corev3.ApiVersion_V3,
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			},
		}},
		HttpFilters: []*hcmv3.HttpFilter{
			{Name: wellknown.HTTPExternalAuthorization, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: toAny(authz)}},
			{Name: wellknown.HTTPRateLimit, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: toAny(rl)}},
			{Name: wellknown.Router, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: toAny(&routerv3.Router{})}},
		},
		LocalReplyConfig: &hcmv3.LocalReplyConfig{Mappers: []*hcmv3.ResponseMapper{{
			// Only Envoy's own "no route" reply (flag NR): the 401/403/429
			// bodies of ext_authz and the rate limit pass unchanged.
			Filter: &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ResponseFlagFilter{
				ResponseFlagFilter: &accesslogv3.ResponseFlagFilter{Flags: []string{"NR"}},
			}},
			StatusCode: wrapperspb.UInt32(404),
			Body:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: notFoundBody}},
			BodyFormatOverride: &corev3.SubstitutionFormatString{
				Format:      &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "%LOCAL_REPLY_BODY%"}}},
				ContentType: "application/json",
			},
		}}},
	}
	return &listenerv3.Listener{
		Name:    routeName,
		Address: socketAddress(in.ListenerAddress, in.ListenerPort),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name:       wellknown.HTTPConnectionManager,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: toAny(hcm)},
		}}}},
	}
}

// routeConfig has one virtual host per vhost, sorted by name, each with its
// routes from the most to the least specific. The client's x-apim-key-type is
// matched but never forwarded.
func routeConfig(name string, vhosts map[string][]routeEntry) *routev3.RouteConfiguration {
	rc := &routev3.RouteConfiguration{Name: name, RequestHeadersToRemove: []string{KeyTypeHeader}}
	for _, vh := range slices.Sorted(maps.Keys(vhosts)) {
		entries := vhosts[vh]
		slices.SortStableFunc(entries, compareRoutes)
		domains := []string{vh, vh + ":*"}
		if vh == defaultVHost {
			domains = append(domains, "*")
		}
		v := &routev3.VirtualHost{Name: vh, Domains: domains}
		for _, e := range entries {
			v.Routes = append(v.Routes, e.route)
		}
		rc.VirtualHosts = append(rc.VirtualHosts, v)
	}
	return rc
}

// withoutRoutes is a copy of rc whose virtual hosts have no routes.
func withoutRoutes(rc *routev3.RouteConfiguration) *routev3.RouteConfiguration {
	c := &routev3.RouteConfiguration{Name: rc.GetName(), RequestHeadersToRemove: rc.GetRequestHeadersToRemove()}
	for _, vh := range rc.GetVirtualHosts() {
		c.VirtualHosts = append(c.VirtualHosts, &routev3.VirtualHost{Name: vh.GetName(), Domains: vh.GetDomains()})
	}
	return c
}

// compareRoutes orders routes by template, segment by segment: a literal
// before a {param} before a trailing *, and a longer template before its
// prefix; then by verb, sandbox before production, and API id.
func compareRoutes(a, b routeEntry) int {
	for i := range min(len(a.segs), len(b.segs)) {
		ka, kb := segmentKind(a.segs[i]), segmentKind(b.segs[i])
		if c := cmp.Compare(ka, kb); c != 0 {
			return c
		}
		if c := strings.Compare(a.segs[i], b.segs[i]); c != 0 {
			return c
		}
	}
	if c := cmp.Compare(len(b.segs), len(a.segs)); c != 0 {
		return c
	}
	if c := strings.Compare(a.verb, b.verb); c != 0 {
		return c
	}
	if a.sandbox != b.sandbox {
		if a.sandbox {
			return -1
		}
		return 1
	}
	return strings.Compare(a.apiID, b.apiID)
}

func segmentKind(s string) int {
	switch s {
	case "{}":
		return 1
	case "*":
		return 2
	}
	return 0
}

// templateSegments splits a path template into segments, with every {param}
// written as "{}" so that parameter names do not change the order.
func templateSegments(t string) []string {
	segs := strings.Split(strings.Trim(t, "/"), "/")
	for i, s := range segs {
		if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
			segs[i] = "{}"
		}
	}
	return segs
}

// PathRegex is the RE2 regex of the path basePath+target, matched by Envoy
// against the whole path without its query string: a {param} is one
// non-empty segment, a trailing /* matches the rest of the path (or nothing),
// and a trailing slash is optional. Everything else is literal, as a client
// sends it on the wire (see literalRegex).
func PathRegex(basePath, target string) string {
	t := strings.TrimSuffix(basePath, "/") + target
	wildcard := strings.HasSuffix(t, "/*")
	t = strings.TrimSuffix(strings.TrimSuffix(t, "*"), "/")
	var b strings.Builder
	b.WriteByte('^')
	for _, s := range strings.Split(t, "/")[1:] {
		b.WriteByte('/')
		if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
			b.WriteString("[^/]+")
		} else {
			b.WriteString(literalRegex(s))
		}
	}
	if wildcard {
		b.WriteString("(?:/.*)?$")
	} else {
		b.WriteString("/?$")
	}
	return b.String()
}

// literalRegex matches a literal path as it reaches the route table after
// Envoy's path normalisation: unreserved characters as they are, other
// printable ASCII as it is or percent-encoded, and every other byte (non-ASCII
// UTF-8 included) percent-encoded, hex digits in either case. The result is
// always valid UTF-8, which RE2 requires.
func literalRegex(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '~', c == '/':
			b.WriteByte(c)
		case c == '.':
			b.WriteString(`\.`)
		case c > ' ' && c < 0x7f:
			fmt.Fprintf(&b, "(?:%s|(?i:%%%02X))", regexp.QuoteMeta(string(c)), c)
		default:
			fmt.Fprintf(&b, "(?i:%%%02X)", c)
		}
	}
	return b.String()
}

func vhostOf(d model.Deployment) string {
	if d.VHost == "" {
		return defaultVHost
	}
	return strings.ToLower(d.VHost)
}

// validVHost accepts an empty vhost or a host name or IP address without port.
func validVHost(v string) error {
	if v == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(v); err == nil || strings.ContainsAny(v, "/ *?#@[]") {
		return fmt.Errorf("%w: %q must be a host name without port", model.ErrInvalid, v)
	}
	return nil
}

func apiName(a model.API) string {
	return fmt.Sprintf("%s (%s %s)", a.ID, a.Name, a.Version)
}

func resourceName(r types.Resource) string {
	if n, ok := r.(interface{ GetName() string }); ok {
		return n.GetName()
	}
	return ""
}

// toAny wraps a message the translator built itself, marshalled
// deterministically so that equal content gives equal bytes (maps included).
// Marshalling only fails for an invalid message; the Any is then left empty
// and Envoy rejects the resource rather than the translator panicking.
func toAny(m proto.Message) *anypb.Any {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return &anypb.Any{}
	}
	return a
}

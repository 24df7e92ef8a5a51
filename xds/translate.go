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
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	ratelimitconfv3 "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	bodylimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/body_size_limit/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
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
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/apim-dev/apim/internal/model"
)

// Names shared with the sidecar and with Envoy's bootstrap.
const (
	// bodySizeLimitFilter is Envoy's body size limit filter (no wellknown name).
	bodySizeLimitFilter = "envoy.filters.http.body_size_limit"
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

// Route fields the sidecar reads from every Check, packed into the route's
// one context extension (model.RouteFieldsKey).
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
	// CtxSecuritySchemes is the API's security schemes, space-separated
	// (oauth2, api_key): which credentials the sidecar honours.
	CtxSecuritySchemes = "security_schemes"
	// CtxLimitInAuthz, "true", has ext_authz decide the request's rate
	// limits in its Check (Input.LimitInAuthz); absent otherwise.
	CtxLimitInAuthz = "limit_in_authz"
	// CtxBackendJWT, "true", has ext_authz send the backend a signed JWT
	// of the caller (model.API.EnableBackendJWT); absent otherwise.
	CtxBackendJWT = "backend_jwt"
)

// Dynamic-metadata keys ext_authz sets for the rate-limit step. When they are
// absent (an unlimited tier) Envoy makes no rate-limit call at all.
const (
	MetaSubscriptionID   = "subscription_id"
	MetaSubscriptionTier = "subscription_tier"
	MetaApplicationID    = "application_id"
	MetaUser             = "user"
	MetaApplicationTier  = "application_tier"
	MetaAPIID            = "api_id"
	MetaAPITier          = "api_tier"
	MetaResource         = "resource"
	MetaResourceTier     = "resource_tier"
	MetaCustomRules      = "custom_rules"
	MetaBandwidth        = "bandwidth"
)

// notFoundBody is WSO2's body for a request that matches no API resource.
const notFoundBody = `{"code":"900906","message":"No matching resource found for given API Request","description":"The requested resource is not available."}`

// tooLargeBody is the body of Envoy's 413 for a request body past the
// listener's limit, in WSO2's error shape.
func tooLargeBody(limit uint64) string {
	return `{"code":"413","message":"Payload Too Large","description":"The request body is larger than the gateway accepts (` +
		strconv.FormatUint(limit, 10) + ` bytes)."}`
}

// blockedBody is WSO2's body for a call to a BLOCKED API.
const blockedBody = `{"code":"700700","message":"API blocked","description":"This API has been blocked temporarily. Please try again later or contact the system administrators."}`

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
	// LimitInAuthz says that ext_authz decides the rate limits in its own
	// Check (gateway.rate_limit_mode ext_authz): Envoy then calls the
	// rate-limit service only to count bandwidth when a stream is done.
	LimitInAuthz bool
	Limits       ListenerLimits
	// EndpointDeny are destinations no cluster is made for: an API with an
	// endpoint there is not served, whatever the database holds.
	EndpointDeny model.EndpointDeny
}

// ListenerLimits bound what a client may hold of the listener; a zero
// field takes its default.
type ListenerLimits struct {
	RequestHeadersTimeout time.Duration // all headers received within; default 10s
	IdleTimeout           time.Duration // a connection with no stream is closed after; default 1m
	MaxRequestHeadersKB   uint32        // default 60 (Envoy's)
	MaxRequestBodyBytes   uint64        // a larger body is refused with 413; default 10 MiB
}

func (l ListenerLimits) withDefaults() ListenerLimits {
	if l.RequestHeadersTimeout == 0 {
		l.RequestHeadersTimeout = 10 * time.Second
	}
	if l.IdleTimeout == 0 {
		l.IdleTimeout = time.Minute
	}
	if l.MaxRequestHeadersKB == 0 {
		l.MaxRequestHeadersKB = 60
	}
	if l.MaxRequestBodyBytes == 0 {
		l.MaxRequestBodyBytes = 10 << 20
	}
	return l
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
//
// An API's lifecycle status decides how it is served: a RETIRED API has no
// routes (its paths get the 404 of any unknown path), a BLOCKED API answers
// WSO2's 503 on each of its resources, and every other status is served.
//
// Every input that ends up in a resource is checked here (the model's
// Validate, endpoint URLs, vhosts, UTF-8), so that an invalid one names its
// API; the resources built from checked input are valid by construction,
// which the tests prove by validating every resource they translate. Only the
// resources built from the configuration (the listener, the route
// configuration without its routes and the sidecar cluster) are validated
// here, once each: validating every route and cluster took a fifth of the
// translation time.
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
	switch {
	case in.Environment == "":
		errs = append(errs, errors.New("environment is required"))
	case !utf8.ValidString(in.Environment):
		errs = append(errs, fmt.Errorf("environment %q is not valid UTF-8", in.Environment))
	}
	if in.Sidecar.Address == "" || in.Sidecar.Port == 0 {
		errs = append(errs, errors.New("sidecar address and port are required"))
	}
	routeName := "http_" + strconv.FormatUint(uint64(in.ListenerPort), 10)

	t := newTranslator(in)
	type vhostPath struct{ vhost, path string }
	vhosts := map[string][]routeEntry{}
	seenAPI := make(map[string]bool, len(in.Deployments))
	seenBase := make(map[vhostPath]string, len(in.Deployments)) // → API id
	for _, d := range in.Deployments {
		if d.API.Status == model.StatusRetired {
			// Not served at all: its paths get the 404 of any unknown path.
			continue
		}
		routes, err := t.deployment(d)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		vh, base := vhostOf(d), d.API.BasePath()
		switch {
		case seenAPI[d.API.ID]:
			errs = append(errs, fmt.Errorf("api %s: deployed twice to environment %s", apiName(d.API), in.Environment))
			continue
		case seenBase[vhostPath{vh, base}] != "":
			errs = append(errs, fmt.Errorf("api %s: %s on vhost %s is already used by api %s", apiName(d.API), base, vh, seenBase[vhostPath{vh, base}]))
			continue
		}
		seenAPI[d.API.ID], seenBase[vhostPath{vh, base}] = true, d.API.ID
		vhosts[vh] = append(vhosts[vh], routes...)
	}
	if len(errs) > 0 {
		return Resources{}, errors.Join(errs...)
	}

	sidecar := sidecarCluster(in.Sidecar)
	t.clusters[SidecarCluster] = sidecar
	listener := httpListener(in, routeName)
	rc := routeConfig(routeName, vhosts)

	out := Resources{
		Listeners: []types.Resource{listener},
		Routes:    []types.Resource{rc},
		Clusters:  make([]types.Resource, 0, len(t.clusters)),
	}
	for _, name := range slices.Sorted(maps.Keys(t.clusters)) {
		out.Clusters = append(out.Clusters, t.clusters[name])
	}
	for _, r := range []types.Resource{listener, withoutRoutes(rc), sidecar} {
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

// translator holds what one Translate call builds once and then shares: the
// backends by endpoint URL, the clusters by name, and the sub-messages that
// many routes carry unchanged. Routes share these sub-messages; like every
// resource of a snapshot they are read-only once built.
type translator struct {
	in       Input
	backends map[string]*backend           // by endpoint URL
	clusters map[string]*clusterv3.Cluster // by name

	routeTimeout *durationpb.Duration
	noProduction *routev3.Route_DirectResponse
	blocked      *routev3.Route_DirectResponse
	noAuthz      map[string]*anypb.Any // typed_per_filter_config that disables ext_authz
	// preflightHeaders match the CORS preflights.
	preflightHeaders []*routev3.HeaderMatcher
	jsonHeader       []*corev3.HeaderValueOption
	headers          map[headerKey][]*routev3.HeaderMatcher
}

// headerKey identifies the header matchers of a route.
type headerKey struct {
	verb    string
	sandbox bool
}

func newTranslator(in Input) *translator {
	return &translator{
		in:           in,
		backends:     make(map[string]*backend, len(in.Deployments)),
		clusters:     make(map[string]*clusterv3.Cluster, len(in.Deployments)+1),
		routeTimeout: durationpb.New(60 * time.Second),
		noProduction: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
			Status: 403,
			Body:   &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: noProductionBody}},
		}},
		blocked: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
			Status: 503,
			Body:   &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: blockedBody}},
		}},
		noAuthz: map[string]*anypb.Any{wellknown.HTTPExternalAuthorization: toAny(&extauthzv3.ExtAuthzPerRoute{
			Override: &extauthzv3.ExtAuthzPerRoute_Disabled{Disabled: true},
		})},
		jsonHeader: []*corev3.HeaderValueOption{{
			Header:       &corev3.HeaderValue{Key: "content-type", Value: "application/json"},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		}},
		headers: map[headerKey][]*routev3.HeaderMatcher{},
		preflightHeaders: []*routev3.HeaderMatcher{
			exactHeader(":method", "OPTIONS"),
			{Name: "origin", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}},
			{Name: "access-control-request-method", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}},
		},
	}
}

// routeEntry is one route and the key it is sorted by.
type routeEntry struct {
	segs    []string // the full template's segments: literal, "{}" or "*"
	verb    string
	sandbox bool
	apiID   string
	route   *routev3.Route
}

// deployment checks one deployment, builds its routes and adds the clusters
// they need. Every error names the API.
func (t *translator) deployment(d model.Deployment) ([]routeEntry, error) {
	api := d.API
	if d.Environment != "" && d.Environment != t.in.Environment {
		return nil, fmt.Errorf("api %s: deployment is for environment %s, not %s", apiName(api), d.Environment, t.in.Environment)
	}
	if err := errors.Join(api.Validate(), checkUTF8(d)); err != nil {
		return nil, fmt.Errorf("api %s: %w", apiName(api), err)
	}
	if err := model.ValidateVHost(d.VHost); err != nil {
		return nil, fmt.Errorf("api %s: vhost %w", apiName(api), err)
	}
	switch api.Status {
	case "", model.StatusCreated, model.StatusPrototyped, model.StatusPublished, model.StatusDeprecated:
	case model.StatusBlocked:
		return t.blockedRoutes(api), nil
	default: // RETIRED never gets here
		return nil, fmt.Errorf("api %s: lifeCycleStatus %w: %q", apiName(api), model.ErrUnknownValue, api.Status)
	}
	prod, err := t.backend(api.Production)
	if err != nil {
		return nil, fmt.Errorf("api %s: %w", apiName(api), err)
	}
	sandbox, err := t.backend(api.Sandbox)
	if err != nil {
		return nil, fmt.Errorf("api %s: %w", apiName(api), err)
	}

	// Every route of the API to one backend has the same action.
	base := api.BasePath()
	var prodAction, sandboxAction *routev3.Route_Route
	if prod != nil {
		prodAction = t.action(prod, base)
	}
	if sandbox != nil {
		sandboxAction = t.action(sandbox, base)
	}
	n := len(api.Operations)
	if sandbox != nil {
		n *= 2
	}
	cors := corsPolicy(api.CORS)
	var preflightFilters map[string]*anypb.Any
	var preflights map[string]bool // by target
	if cors != nil {
		n += len(api.Operations)
		preflightFilters = map[string]*anypb.Any{wellknown.HTTPExternalAuthorization: t.noAuthz[wellknown.HTTPExternalAuthorization], wellknown.CORS: cors}
		preflights = make(map[string]bool, len(api.Operations))
	}
	out := make([]routeEntry, 0, n)
	for _, op := range api.Operations {
		if cors != nil && !preflights[op.Target] {
			preflights[op.Target] = true
			action := prodAction
			if action == nil {
				action = sandboxAction
			}
			out = append(out, t.preflightRoute(api, op.Target, preflightFilters, action))
		}
		resource := op.Key()
		perFilter, err := t.contextExtensions(api, op, resource, prod != nil, sandbox != nil, cors)
		if err != nil {
			return nil, fmt.Errorf("api %s: %w", apiName(api), err)
		}
		regex := PathRegex(base, op.Target)
		segs := templateSegments(base + op.Target)
		name := api.ID + ":" + resource
		if sandbox != nil {
			r := t.route(name+":sandbox", regex, op.Verb, true, perFilter)
			r.Action = sandboxAction
			out = append(out, routeEntry{segs: segs, verb: op.Verb, sandbox: true, apiID: api.ID, route: r})
		}
		// Without a production endpoint, the route still has to exist: the
		// first route match happens before ext_authz and picks the context
		// extensions the sidecar sees. The sidecar denies production keys for
		// has_production=false; should one get through, it gets a 403 here.
		r := t.route(name, regex, op.Verb, false, perFilter)
		if prod != nil {
			r.Action = prodAction
		} else {
			r.Action, r.ResponseHeadersToAdd = t.noProduction, t.jsonHeader
		}
		out = append(out, routeEntry{segs: segs, verb: op.Verb, apiID: api.ID, route: r})
	}
	return out, nil
}

// blockedRoutes are the routes of a BLOCKED API: every operation answers
// WSO2's 503 itself, with ext_authz disabled (a blocked API answers the same
// with or without a credential) and without rate limits. No backend is
// reached, so none gets a cluster, and no sandbox twin is needed.
func (t *translator) blockedRoutes(api model.API) []routeEntry {
	base := api.BasePath()
	out := make([]routeEntry, 0, len(api.Operations))
	for _, op := range api.Operations {
		r := t.route(api.ID+":"+op.Key(), PathRegex(base, op.Target), op.Verb, false, t.noAuthz)
		r.Action, r.ResponseHeadersToAdd = t.blocked, t.jsonHeader
		out = append(out, routeEntry{segs: templateSegments(base + op.Target), verb: op.Verb, apiID: api.ID, route: r})
	}
	return out
}

// checkUTF8 reports the strings of d that are not valid UTF-8. Every one of
// them ends up in a resource, and a proto string must be valid UTF-8 for the
// resource to be marshalled at all.
func checkUTF8(d model.Deployment) error {
	api := d.API
	var errs []error
	for _, f := range []struct{ name, value string }{
		{"id", api.ID}, {"name", api.Name}, {"version", api.Version}, {"context", api.Context}, {"vhost", d.VHost},
	} {
		if !utf8.ValidString(f.value) {
			errs = append(errs, fmt.Errorf("%s %w: not valid UTF-8", f.name, model.ErrInvalid))
		}
	}
	for _, ep := range []struct {
		name string
		e    *model.Endpoint
	}{{"production_endpoints", api.Production}, {"sandbox_endpoints", api.Sandbox}} {
		if ep.e != nil && !utf8.ValidString(ep.e.URL) {
			errs = append(errs, fmt.Errorf("endpointConfig.%s.url %w: not valid UTF-8", ep.name, model.ErrInvalid))
		}
	}
	if c := api.CORS; c != nil {
		for i, o := range c.AllowOrigins {
			if !utf8.ValidString(o) {
				errs = append(errs, fmt.Errorf("corsConfiguration.accessControlAllowOrigins[%d] %w: not valid UTF-8", i, model.ErrInvalid))
			}
		}
	}
	for i, op := range api.Operations {
		valid := utf8.ValidString(op.Target) && utf8.ValidString(op.Verb) && utf8.ValidString(op.AuthType) && utf8.ValidString(op.ThrottlingPolicy)
		for _, s := range op.Scopes {
			valid = valid && utf8.ValidString(s)
		}
		if !valid {
			errs = append(errs, fmt.Errorf("operations[%d] %w: not valid UTF-8", i, model.ErrInvalid))
		}
	}
	return errors.Join(errs...)
}

// backend is the backend of an endpoint, nil for none. Endpoints with the
// same URL share one backend, and endpoints with the same scheme, host and
// port one cluster.
func (t *translator) backend(ep *model.Endpoint) (*backend, error) {
	if ep == nil {
		return nil, nil
	}
	if b, ok := t.backends[ep.URL]; ok {
		return b, nil
	}
	if err := t.in.EndpointDeny.Check(ep.URL); err != nil {
		return nil, fmt.Errorf("endpoint %q %w", ep.URL, err)
	}
	b, err := newBackend(ep.URL, t.in.UpstreamCAFile)
	if err != nil {
		return nil, err
	}
	t.backends[ep.URL], t.clusters[b.cluster.GetName()] = b, b.cluster
	return b, nil
}

// contextExtensions is the per-route ext_authz configuration of one
// operation, shared by its production and sandbox routes.
func (t *translator) contextExtensions(api model.API, op model.Operation, resource string, hasProd, hasSandbox bool, cors *anypb.Any) (map[string]*anypb.Any, error) {
	fields := [...][2]string{
		{CtxAPIContext, api.Context},
		{CtxAPIID, api.ID},
		{CtxAPIName, api.Name},
		{CtxAPIVersion, api.Version},
		{CtxAuthType, op.AuthType},
		{CtxEnvironment, t.in.Environment},
		{CtxHasProduction, strconv.FormatBool(hasProd)},
		{CtxHasSandbox, strconv.FormatBool(hasSandbox)},
		{CtxResource, resource},
		{CtxScopes, strings.Join(op.Scopes, " ")},
		{CtxSecuritySchemes, strings.Join(api.Schemes(), " ")},
		{CtxTier, op.ThrottlingPolicy},
		{}, // room for the optional ones below
		{},
	}
	n := len(fields) - 2
	if t.in.LimitInAuthz {
		fields[n], n = [2]string{CtxLimitInAuthz, "true"}, n+1
	}
	if api.EnableBackendJWT {
		fields[n], n = [2]string{CtxBackendJWT, "true"}, n+1
	}
	ext := [...]keyValue{{model.RouteFieldsKey, model.EncodeRouteFields(fields[:n]...)}}
	a, err := extAuthzPerRoute(ext[:])
	if err != nil {
		return nil, fmt.Errorf("operation %s: %w", resource, err)
	}
	if cors != nil {
		return map[string]*anypb.Any{wellknown.HTTPExternalAuthorization: a, wellknown.CORS: cors}, nil
	}
	return map[string]*anypb.Any{wellknown.HTTPExternalAuthorization: a}, nil
}

// corsPolicy is the per-route configuration of Envoy's CORS filter for an
// API, nil when its CORS is not enabled. Envoy echoes an allowed Origin in
// Access-Control-Allow-Origin, for "*" too.
func corsPolicy(c *model.CORS) *anypb.Any {
	if c == nil || !c.Enabled {
		return nil
	}
	p := &corsv3.CorsPolicy{
		AllowMethods:     strings.Join(c.AllowMethods, ","),
		AllowHeaders:     strings.Join(c.AllowHeaders, ","),
		AllowCredentials: wrapperspb.Bool(c.AllowCredentials),
		// Envoy answers every preflight, allowed or not: none reaches
		// ext_authz or the backend.
		ForwardNotMatchingPreflights: wrapperspb.Bool(false),
	}
	for _, o := range c.AllowOrigins {
		m := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: strings.TrimSuffix(o, "/")}, IgnoreCase: true}
		if o == "*" {
			m = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: ".*"}}}
		}
		p.AllowOriginStringMatch = append(p.AllowOriginStringMatch, m)
	}
	return toAny(p)
}

// preflightRoute takes the CORS preflights (OPTIONS with Origin and
// Access-Control-Request-Method) to one path of a CORS-enabled API, with
// ext_authz off. Envoy's CORS filter, ahead of ext_authz, answers every one
// of them itself (forward_not_matching_preflights is false): 200, with the
// Access-Control-Allow-* headers only for an allowed origin. The route needs
// a route action all the same, since Envoy's CORS filter ignores routes
// without one (a direct response); the backend is never reached.
func (t *translator) preflightRoute(api model.API, target string, perFilter map[string]*anypb.Any, action *routev3.Route_Route) routeEntry {
	base := api.BasePath()
	r := &routev3.Route{
		Name: api.ID + ":preflight " + target,
		Match: &routev3.RouteMatch{
			PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: PathRegex(base, target)}},
			Headers:       t.preflightHeaders,
		},
		TypedPerFilterConfig: perFilter,
		Action:               action,
	}
	// Verb "" sorts it before every operation of the same template.
	return routeEntry{segs: templateSegments(base + target), apiID: api.ID, route: r}
}

// route is a route of one operation, without its action.
func (t *translator) route(name, pathRegex, verb string, sandbox bool, perFilter map[string]*anypb.Any) *routev3.Route {
	return &routev3.Route{
		Name: name,
		Match: &routev3.RouteMatch{
			PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: pathRegex}},
			Headers:       t.headerMatchers(verb, sandbox),
		},
		TypedPerFilterConfig: perFilter,
	}
}

// headerMatchers match the method and, for a sandbox route, the key type.
func (t *translator) headerMatchers(verb string, sandbox bool) []*routev3.HeaderMatcher {
	k := headerKey{verb, sandbox}
	if h, ok := t.headers[k]; ok {
		return h
	}
	h := []*routev3.HeaderMatcher{exactHeader(":method", verb)}
	if sandbox {
		h = append(h, exactHeader(KeyTypeHeader, model.KeyTypeSandbox))
	}
	t.headers[k] = h
	return h
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
		switch u.Scheme {
		case "http":
			port = "80"
		case "https":
			port = "443"
		}
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return nil, fmt.Errorf("endpoint %q: bad port %q", raw, port)
	}
	if u.Scheme == "https" && len(host) > maxSNI {
		return nil, fmt.Errorf("endpoint %q: host is longer than the %d bytes of a TLS server name", raw, maxSNI)
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

// maxSNI is the longest server name Envoy accepts in an UpstreamTlsContext.
const maxSNI = 255

// action routes to the backend, replacing the API's base path with the
// endpoint's path: /ctx/1.0.0/pets/1?q → {endpoint path}/pets/1?q. Envoy
// matches and rewrites the path without its query string and keeps the query.
func (t *translator) action(b *backend, basePath string) *routev3.Route_Route {
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
		Timeout:              t.routeTimeout,
	}}
}

// tierRateLimits sends one descriptor per throttling level, each taken from
// ext_authz's dynamic metadata, in the order the rate-limit service reports
// them: API [api, api_tier], resource [resource, resource_api,
// resource_tier], subscription [subscription, tier], application
// [application, user, app_tier], custom rules [custom] (every rule the
// request matched, see authz.MetaCustomRules). skip_if_absent stays false on purpose: in
// Envoy 1.40 a metadata action without a value and with skip_if_absent=false
// drops the whole descriptor, and the sidecar sets a level's tier only when it
// limits, so a request whose tiers are all unlimited makes no rate-limit call
// at all; skip_if_absent=true would instead call the service with the entry
// left out.
//
// The actions sit on the filter, not on each route: they are the same for
// every route, and a route without ext_authz metadata (a 404, a CORS
// preflight) sends no descriptor. Two more, applied when the stream is done,
// count the bytes of requests that a bandwidth quota limits (see
// authz.MetaBandwidth): the bytes received and the bytes sent. With the
// limits decided inside ext_authz (inAuthz), only those two remain.
func rateLimits(inAuthz bool) []*routev3.RateLimit {
	bytes := func(format string) *routev3.RateLimit {
		return &routev3.RateLimit{
			Actions:           []*routev3.RateLimit_Action{metadataAction("bandwidth", MetaBandwidth)},
			ApplyOnStreamDone: true,
			HitsAddend:        &routev3.RateLimit_HitsAddend{Format: format},
		}
	}
	bandwidth := []*routev3.RateLimit{bytes("%BYTES_RECEIVED%"), bytes("%BYTES_SENT%")}
	if inAuthz {
		return bandwidth
	}
	return append(tierRateLimits(), bandwidth...)
}

func metadataAction(descriptorKey, metaKey string) *routev3.RateLimit_Action {
	return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_Metadata{Metadata: &routev3.RateLimit_Action_MetaData{
		DescriptorKey: descriptorKey,
		MetadataKey: &metadatav3.MetadataKey{
			Key:  ExtAuthzNamespace,
			Path: []*metadatav3.MetadataKey_PathSegment{{Segment: &metadatav3.MetadataKey_PathSegment_Key{Key: metaKey}}},
		},
		Source: routev3.RateLimit_Action_MetaData_DYNAMIC,
	}}}
}

func tierRateLimits() []*routev3.RateLimit {
	action := metadataAction
	rl := func(actions ...*routev3.RateLimit_Action) *routev3.RateLimit {
		return &routev3.RateLimit{Actions: actions}
	}
	return []*routev3.RateLimit{
		rl(action("api", MetaAPIID), action("api_tier", MetaAPITier)),
		rl(action("resource", MetaResource), action("resource_api", MetaAPIID), action("resource_tier", MetaResourceTier)),
		rl(action("subscription", MetaSubscriptionID), action("tier", MetaSubscriptionTier)),
		rl(action("application", MetaApplicationID), action("user", MetaUser), action("app_tier", MetaApplicationTier)),
		rl(action("custom", MetaCustomRules)),
	}
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
		_, _ = h.Write([]byte(host)) // a hash.Hash never fails to write
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
		// Headers as a list of raw bytes, not a map of UTF-8 strings: the
		// sidecar decodes no map and validates no value, and reads the
		// token in place (≈ 10% more throughput in make bench-load).
		EncodeRawHeaders: true,
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
		RateLimits:                     rateLimits(in.LimitInAuthz),
	}
	limits := in.Limits.withDefaults()
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix:       routeName,
		CodecType:        hcmv3.HttpConnectionManager_AUTO,
		UseRemoteAddress: wrapperspb.Bool(true),
		NormalizePath:    wrapperspb.Bool(true),
		MergeSlashes:     true,
		// A client that trickles its headers, or holds an idle connection,
		// does not hold it for long.
		RequestHeadersTimeout: durationpb.New(limits.RequestHeadersTimeout),
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{
			IdleTimeout: durationpb.New(limits.IdleTimeout),
		},
		MaxRequestHeadersKb: wrapperspb.UInt32(limits.MaxRequestHeadersKB),
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: routeName,
			ConfigSource: &corev3.ConfigSource{
				ResourceApiVersion:    corev3.ApiVersion_V3,
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			},
		}},
		// CORS first: it answers allowed preflights before ext_authz runs,
		// and as the outermost encoder it adds its headers to ext_authz's
		// and the rate limit's denials too, so a browser can read them.
		// The body limit next: it refuses what is too large before any
		// side call, by Content-Length or as the body streams (nothing is
		// buffered for it).
		HttpFilters: []*hcmv3.HttpFilter{
			{Name: wellknown.CORS, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: toAny(&corsv3.Cors{})}},
			{Name: bodySizeLimitFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: toAny(&bodylimitv3.BodySizeLimit{
				MaxRequestBytes: wrapperspb.UInt64(limits.MaxRequestBodyBytes),
			})}},
			{Name: wellknown.HTTPExternalAuthorization, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: toAny(authz)}},
			{Name: wellknown.HTTPRateLimit, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: toAny(rl)}},
			{Name: wellknown.Router, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: toAny(&routerv3.Router{})}},
		},
		LocalReplyConfig: &hcmv3.LocalReplyConfig{Mappers: []*hcmv3.ResponseMapper{jsonReply(413, tooLargeBody(limits.MaxRequestBodyBytes)), {
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

// jsonReply maps Envoy's own replies of one status to a JSON body.
func jsonReply(status uint32, body string) *hcmv3.ResponseMapper {
	return &hcmv3.ResponseMapper{
		Filter: &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{
			StatusCodeFilter: &accesslogv3.StatusCodeFilter{Comparison: &accesslogv3.ComparisonFilter{
				Op:    accesslogv3.ComparisonFilter_EQ,
				Value: &corev3.RuntimeUInt32{DefaultValue: status, RuntimeKey: "apim.local_reply." + strconv.FormatUint(uint64(status), 10)},
			}},
		}},
		Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: body}},
		BodyFormatOverride: &corev3.SubstitutionFormatString{
			Format:      &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "%LOCAL_REPLY_BODY%"}}},
			ContentType: "application/json",
		},
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
	b.Grow(2*len(t) + len("^(?:/.*)?$"))
	b.WriteByte('^')
	// The segments after the first slash; nothing precedes it in a valid path.
	if _, rest, ok := strings.Cut(t, "/"); ok {
		for s := range strings.SplitSeq(rest, "/") {
			b.WriteByte('/')
			if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
				b.WriteString("[^/]+")
			} else {
				writeLiteralRegex(&b, s)
			}
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
	b.Grow(len(p) + 8)
	writeLiteralRegex(&b, p)
	return b.String()
}

func writeLiteralRegex(b *strings.Builder, p string) {
	const hex = "0123456789ABCDEF"
	encoded := func(c byte) { // (?i:%XX)
		b.WriteString("(?i:%")
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
		b.WriteByte(')')
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '~', c == '/':
			b.WriteByte(c)
		case c == '.':
			b.WriteString(`\.`)
		case c > ' ' && c < 0x7f: // (?:c|(?i:%XX))
			b.WriteString("(?:")
			b.WriteString(regexp.QuoteMeta(string(c)))
			b.WriteByte('|')
			encoded(c)
			b.WriteByte(')')
		default:
			encoded(c)
		}
	}
}

func vhostOf(d model.Deployment) string {
	if d.VHost == "" {
		return defaultVHost
	}
	return strings.ToLower(d.VHost)
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

// keyValue is one entry of a string map.
type keyValue struct{ key, value string }

// extAuthzPerRouteType is the type URL of an ExtAuthzPerRoute in an Any.
const extAuthzPerRouteType = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"

// Field numbers of ExtAuthzPerRoute.check_settings and
// CheckSettings.context_extensions, and of the key and value of a map entry.
const (
	fieldCheckSettings     protowire.Number = 2
	fieldContextExtensions protowire.Number = 1
	fieldMapKey            protowire.Number = 1
	fieldMapValue          protowire.Number = 2
)

// extAuthzPerRoute is ExtAuthzPerRoute{check_settings: {context_extensions:
// ext}} in an Any, encoded as proto.MarshalOptions{Deterministic: true} would
// encode it: the map entries sorted by key, each with its key and value even
// when empty. Every route has its own, and marshalling them through
// reflection (which sorts the keys of every map) took a third of the
// translation time. TestExtAuthzPerRoute compares the two encodings. Like
// proto.Marshal, it refuses strings that are not valid UTF-8. ext is sorted
// in place; its keys must be distinct.
func extAuthzPerRoute(ext []keyValue) (*anypb.Any, error) {
	slices.SortFunc(ext, func(a, b keyValue) int { return strings.Compare(a.key, b.key) })
	// CheckSettings and each map entry are built in a buffer on the stack
	// (unless they outgrow it), then copied behind their length.
	var settingsBuf [1024]byte
	var entryBuf [256]byte
	settings := settingsBuf[:0]
	for _, kv := range ext {
		if !utf8.ValidString(kv.key) || !utf8.ValidString(kv.value) {
			return nil, fmt.Errorf("context extension %s is not valid UTF-8", kv.key)
		}
		entry := protowire.AppendTag(entryBuf[:0], fieldMapKey, protowire.BytesType)
		entry = protowire.AppendString(entry, kv.key)
		entry = protowire.AppendTag(entry, fieldMapValue, protowire.BytesType)
		entry = protowire.AppendString(entry, kv.value)
		settings = protowire.AppendTag(settings, fieldContextExtensions, protowire.BytesType)
		settings = protowire.AppendBytes(settings, entry)
	}
	b := make([]byte, 0, protowire.SizeTag(fieldCheckSettings)+protowire.SizeBytes(len(settings)))
	b = protowire.AppendTag(b, fieldCheckSettings, protowire.BytesType)
	b = protowire.AppendBytes(b, settings)
	return &anypb.Any{TypeUrl: extAuthzPerRouteType, Value: b}, nil
}

// Package authz is the gateway sidecar's Envoy ext_authz service: it checks
// the access token, the application's key and subscription, and the scopes
// of every request, picks production or sandbox, and hands application,
// user and subscription tier to the rate-limit step as dynamic metadata.
package authz

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/apim-dev/apim/internal/gwstate"
	"github.com/apim-dev/apim/internal/model"
	"github.com/apim-dev/apim/ratelimit"
)

// Route fields every route sets (the contract with the xDS translator),
// packed into its one context extension, model.RouteFieldsKey.
const (
	ExtAPIID         = "api_id"
	ExtAPIName       = "api_name"
	ExtAPIVersion    = "api_version"
	ExtAPIContext    = "api_context"
	ExtEnvironment   = "environment"
	ExtResource      = "resource"
	ExtAuthType      = "auth_type"
	ExtScopes        = "scopes"
	ExtTier          = "tier"
	ExtHasSandbox    = "has_sandbox"
	ExtHasProduction = "has_production"
	// ExtSecuritySchemes lists the API's security schemes, space-separated
	// (oauth2, api_key); empty means oauth2 only.
	ExtSecuritySchemes = "security_schemes"
)

// HeaderAPIKey is WSO2's header for an API key.
const HeaderAPIKey = model.APIKeyHeader

// HeaderKeyType is the request header that tells the route which key type,
// and so which cluster, the request is for.
const HeaderKeyType = "x-apim-key-type"

// Dynamic metadata keys of an allowed request. The route's rate_limits read
// MetaSubscriptionID and MetaSubscriptionTier, present only for a limited
// subscription tier.
const (
	MetaAPIID            = "api_id"
	MetaApplicationID    = "application_id"
	MetaApplicationName  = "application_name"
	MetaKeyType          = "key_type"
	MetaUser             = "user"
	MetaClientID         = "client_id"
	MetaSubscriptionID   = "subscription_id"
	MetaSubscriptionTier = "subscription_tier"
	// Set only when the level's tier limits; see tiers.
	MetaApplicationTier = "application_tier"
	MetaAPITier         = "api_tier"
	MetaResource        = "resource"
	MetaResourceTier    = "resource_tier"
	// MetaBandwidth names the counters of the request's bandwidth quotas,
	// for the [bandwidth] descriptors Envoy sends when the stream is done;
	// see tiers.bandwidth. Absent when no level's quota is bandwidth.
	MetaBandwidth = "bandwidth"
)

// Config configures the ext_authz server.
type Config struct {
	Keys    Keys     // verification keys by kid
	Issuers []string // accepted iss values
	State   *gwstate.Store
	Logger  zerolog.Logger
	Now     func() time.Time // defaults to time.Now
	// Leeway is the clock skew allowed on exp and nbf; default 5s.
	Leeway time.Duration
	// CacheSize bounds the verified tokens cached; default 100,000.
	CacheSize int
	// BadTokenCacheSize bounds the tokens remembered, for a minute, as
	// having a bad signature; default 10,000.
	BadTokenCacheSize int
	// Registry, when set, gets the decision counters.
	Registry *prometheus.Registry
	// External, when set, accepts the tokens of the enabled external key
	// managers in State (external.go).
	External *ExternalKeys
	// Limiter decides the rate limits of requests on routes that have
	// ext_authz decide them (ExtLimitInAuthz). Without it such routes are
	// not limited by Check.
	Limiter Limiter
	// Opaque checks opaque access tokens at the key manager (opaque.go).
	Opaque OpaqueConfig
	// BackendJWT signs the JWTs sent to the backends of APIs that enable
	// them (ExtBackendJWT, backendjwt.go). Without it, requests to such
	// APIs are refused (500 900900) rather than sent without one.
	BackendJWT *BackendJWTSigner
}

// Server answers Envoy's ext_authz Check calls.
type Server struct {
	keys    Keys
	issuers []string
	state   *gwstate.Store
	log     zerolog.Logger
	now     func() time.Time
	leeway  int64 // seconds
	cache   *tokenCache
	bad     *badTokens
	allowed prometheus.Counter
	// throttled counts requests Check refused over a rate limit.
	throttled prometheus.Counter
	deny      map[string]*denial // by WSO2 code
	ext       *ExternalKeys
	limiter   Limiter
	opaque    *opaqueTokens
	jwt       *BackendJWTSigner
	routes    routeFields
}

var _ authv3.AuthorizationServer = (*Server)(nil)

// New returns a Server, or an error naming every missing setting.
func New(cfg Config) (*Server, error) {
	var errs []error
	if cfg.Keys == nil {
		errs = append(errs, errors.New("authz: keys is required"))
	}
	if len(cfg.Issuers) == 0 {
		errs = append(errs, errors.New("authz: issuers is required"))
	}
	if cfg.State == nil {
		errs = append(errs, errors.New("authz: state is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Leeway <= 0 {
		cfg.Leeway = 5 * time.Second
	}
	decisions := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "apim", Subsystem: "authz", Name: "decisions_total",
		Help: "ext_authz decisions by result and WSO2 error code.",
	}, []string{"result", "code"})
	introspections := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "apim", Subsystem: "authz", Name: "introspection_failures_total",
		Help: "New opaque tokens refused unchecked: busy (every introspection slot taken) or failed (the key manager did not answer).",
	}, []string{"reason"})
	if cfg.Registry != nil {
		for _, c := range []prometheus.Collector{decisions, introspections} {
			if err := cfg.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("authz: register metrics: %w", err)
			}
		}
	}
	s := &Server{
		keys:      cfg.Keys,
		issuers:   slices.Clone(cfg.Issuers),
		state:     cfg.State,
		log:       cfg.Logger,
		now:       cfg.Now,
		leeway:    int64(math.Ceil(cfg.Leeway.Seconds())),
		cache:     newTokenCache(cfg.CacheSize),
		bad:       newBadTokens(cfg.BadTokenCacheSize),
		allowed:   decisions.WithLabelValues("allow", ""),
		throttled: decisions.WithLabelValues("throttle", ""),
		deny:      make(map[string]*denial, len(denials)),
		ext:       cfg.External,
		limiter:   cfg.Limiter,
		opaque:    newOpaqueTokens(cfg.Opaque),
		jwt:       cfg.BackendJWT,
	}
	s.opaque.busy, s.opaque.failed = introspections.WithLabelValues("busy"), introspections.WithLabelValues("failed")
	for _, d := range denials {
		d.resp = d.response()
		d.count = decisions.WithLabelValues("deny", d.code)
		key := d.code
		if d.key != "" {
			key = d.key
		}
		s.deny[key] = &d
	}
	return s, nil
}

// Register registers the server as envoy.service.auth.v3.Authorization.
func (s *Server) Register(g *grpc.Server) { authv3.RegisterAuthorizationServer(g, s) }

// Check decides one request. A bad or missing credential is a denied
// CheckResponse, never a gRPC error; the only errors are the context's.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	attrs := req.GetAttributes()
	ext := s.routes.fields(attrs)
	resp, d := s.decide(ctx, attrs, ext)
	throttled := false
	if d == nil && s.limiter != nil && ext[ExtLimitInAuthz] == "true" {
		resp, throttled = s.limit(ctx, resp)
	}
	if d == nil && !throttled {
		// Present at all, even empty: every copy goes.
		if _, spoofed := headerValue(attrs.GetRequest().GetHttp(), ratelimit.HeaderQuotaExceeded); spoofed {
			resp = withoutQuotaFlag(resp)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	if d != nil {
		d.count.Inc()
		return d.resp, nil
	}
	if throttled {
		s.throttled.Inc()
		return resp, nil
	}
	s.allowed.Inc()
	return resp, nil
}

// decide returns the allowed response, or the denial, for a request to
// the route with fields ext.
func (s *Server) decide(ctx context.Context, attrs *authv3.AttributeContext, ext map[string]string) (*authv3.CheckResponse, *denial) {
	apiID := ext[ExtAPIID]
	if apiID == "" {
		return nil, s.deny[codeNoResource]
	}
	idx := s.state.Load()
	if idx.Denials() {
		if idx.DeniesAPI(ext[ExtAPIContext], ext[ExtAPIVersion]) || s.deniesIP(idx, attrs) {
			return nil, s.deny[codeDenied]
		}
	}
	if ext[ExtAuthType] == model.AuthNone {
		// No credential, but the API's and the resource's limits still
		// protect the backend.
		t := apiTiers(idx, apiID, ext)
		resp := unsecuredResponse(apiID, t)
		if ext[ExtBackendJWT] == "true" { // no caller to describe: no backend JWT, and no client's either
			resp.GetOkResponse().HeadersToRemove = stripJWTAssertion
		}
		if hasRules(idx, t) {
			resp = withRules(resp, idx, attrs, ext, t, nil, nil)
		}
		return resp, nil
	}

	// The credential: a bearer access token where the API takes oauth2,
	// else an API key where it takes api_key. A header of a scheme the API
	// does not take is ignored, as WSO2 does.
	h := attrs.GetRequest().GetHttp()
	schemes := ext[ExtSecuritySchemes]
	var (
		tok   string
		ok    bool
		isKey bool
	)
	if schemes == "" || hasWord(schemes, model.SchemeOAuth2) {
		tok, ok = bearer(h)
	}
	if !ok && hasWord(schemes, model.SchemeAPIKey) {
		tok, ok = header(h, HeaderAPIKey)
		isKey = ok
	}
	if !ok {
		return nil, s.deny[codeMissing]
	}
	now := s.now()
	// Hash the header's bytes in place: sha256 only reads them, and a copy
	// of a kilobyte token would be the hot path's one allocation. The slice
	// is a read-only view of an immutable string and does not outlive the
	// call (an empty tok gives an empty slice).
	key := tokenKey(sha256.Sum256(unsafe.Slice(unsafe.StringData(tok), len(tok)))) //nolint:gosec // G103: sound, see above
	v := s.cache.get(&key)
	if v == nil && !isKey && isOpaqueToken(tok) { // an opaque access token, introspected (opaque.go)
		var down bool
		if v, down = s.introspect(ctx, tok, &key, now); v == nil {
			if down {
				return nil, s.deny[codeKeyManagerDown]
			}
			return nil, s.deny[codeInvalid]
		}
	}
	if v == nil {
		if s.bad.bad(&key, s.keys, now) {
			return nil, s.deny[codeInvalid]
		}
		var err error
		if v, err = s.verify(tok, &key, now, isKey); err != nil {
			s.log.Debug().Err(err).Str(ExtAPIID, apiID).Msg("token rejected")
			return nil, s.deny[codeInvalid]
		}
		s.cache.put(&key, v, now)
	}
	unix := now.Unix()
	if unix >= v.exp+s.leeway {
		s.cache.remove(&key)
		return nil, s.deny[codeInvalid]
	}
	if v.nbf > unix+s.leeway {
		return nil, s.deny[codeInvalid]
	}
	// A revoked token stays in the cache (it verified) but is refused
	// from the moment its revocation reaches the index: the cache holds
	// its jti, so this is one map lookup, and none while nothing is
	// revoked.
	if idx.Revoked(v.jti) || (v.keyManager == "" && idx.RevokedClient(v.clientID, v.iat)) {
		return nil, s.deny[codeInvalid]
	}
	// An API key sent as a bearer token, or an access token sent as an API
	// key: a valid credential of the wrong type, WSO2's 900905.
	if v.apiKey != isKey {
		return nil, s.deny[codeTokenType]
	}

	km := v.km
	if !v.apiKey {
		if km, ok = keyMapping(idx, v); !ok { // external.go
			return nil, s.deny[codeInvalid]
		}
	} else if (v.ips != nil || v.referers != nil) && !permitted(v, attrs) {
		return nil, s.deny[codeKeyForbidden]
	}
	app, ok := idx.Application(km.ApplicationID)
	if !ok {
		return nil, s.deny[codeInvalid]
	}
	// A key of a type the API has no endpoint for is not a credential for
	// it: 401 900901, as for an unknown key.
	switch km.KeyType {
	case model.KeyTypeProduction:
		if ext[ExtHasProduction] != "true" {
			return nil, s.deny[codeInvalid]
		}
	case model.KeyTypeSandbox:
		if ext[ExtHasSandbox] != "true" {
			return nil, s.deny[codeInvalid]
		}
	default:
		return nil, s.deny[codeInvalid]
	}
	if idx.Denials() && (idx.DeniesApplication(app) || idx.DeniesUser(v.subject)) {
		return nil, s.deny[codeDenied]
	}
	sub, ok := idx.Subscription(app.ID, apiID)
	if !ok {
		return nil, s.deny[codeNoSubscription]
	}
	switch sub.Status {
	case model.SubUnblocked:
	case model.SubBlocked:
		return nil, s.deny[codeBlocked]
	case model.SubProdOnlyBlocked:
		if km.KeyType == model.KeyTypeProduction {
			return nil, s.deny[codeBlocked]
		}
	default: // ON_HOLD, REJECTED, and anything unknown
		return nil, s.deny[codeInactive]
	}
	if want := ext[ExtScopes]; want != "" && !anyScope(want, v.scope) {
		return nil, s.deny[codeScope]
	}
	p, known := idx.Policy(model.LevelSubscription, sub.ThrottlingPolicy)
	t := apiTiers(idx, apiID, ext)
	t.sub = !known || !p.Unlimited()
	t.subBytes = known && t.sub && p.QuotaType == model.QuotaBandwidth
	t.app = limiting(idx, model.LevelApplication, app.ThrottlingPolicy)

	bj := routeBackendJWT(ext) // backendjwt.go
	decided := s.limiter != nil && ext[ExtLimitInAuthz] == "true"
	resp := v.memo(km, app, sub, t, bj, decided)
	if resp == nil {
		jwt, err := s.backendJWT(bj, v, km, app, sub)
		if err != nil {
			s.log.Error().Err(err).Str(ExtAPIID, apiID).Msg("backend JWT not made; request refused")
			return nil, s.deny[codeBackendJWT]
		}
		m := &okMemo{km: km, app: app, sub: sub, tiers: t, jwt: bj, decided: decided, signed: jwt, resp: allowedResponse(v, km, app, sub, t, jwt.value(), decided)}
		v.remember(m)
		resp = m.resp
	}
	if hasRules(idx, t) {
		resp = withRules(resp, idx, attrs, ext, t, v, app)
	}
	return resp, nil
}

// apiTiers are the API-level and resource-level limits of a request.
func apiTiers(idx *gwstate.Index, apiID string, ext map[string]string) tiers {
	var t tiers
	if d, ok := idx.Deployment(apiID); ok && d.API.APIThrottlingPolicy != "" {
		t.api = limiting(idx, model.LevelAPI, d.API.APIThrottlingPolicy)
	}
	if tier := ext[ExtTier]; tier != "" {
		if t.res = limiting(idx, model.LevelAPI, tier); t.res != nil {
			t.resource = ext[ExtResource]
		}
	}
	return t
}

// limiting returns the policy of a level by name if it limits; an unknown
// or unlimited policy gives nil, so the level sends no rate-limit
// descriptor.
func limiting(idx *gwstate.Index, level, name string) *model.Policy {
	p, ok := idx.Policy(level, name)
	if !ok || p.Unlimited() {
		return nil
	}
	return p
}

// deniesIP reports whether an IP deny policy blocks the request's
// downstream address. The address is parsed only when such a policy is on.
func (s *Server) deniesIP(idx *gwstate.Index, attrs *authv3.AttributeContext) bool {
	if !idx.DeniesIPs() {
		return false
	}
	addr, err := netip.ParseAddr(attrs.GetSource().GetAddress().GetSocketAddress().GetAddress())
	return err == nil && idx.DeniesIP(addr)
}

// verify parses and verifies a token never seen before, whose SHA-256 is
// key. The claims are checked first: a token that fails on them costs no
// RSA verify. A token whose signature fails is remembered as bad.
func (s *Server) verify(tok string, key *tokenKey, now time.Time, apiKey bool) (*verified, error) {
	t, err := parseJWT(tok)
	if err != nil {
		return nil, err
	}
	c := &t.claims
	if !slices.Contains(s.issuers, c.Issuer) {
		return s.verifyExternal(t, key, now, apiKey) // external.go
	}
	// The kind (API key or access token) is what the token says; one sent
	// as the other kind still verifies, and decide answers 900905 for it.
	// Deciding that only after the signature keeps the answer from telling
	// a forger anything.
	exp, nbf, err := s.validity(c, now)
	if err != nil {
		return nil, err
	}
	var v *verified
	if c.TokenType == tokenTypeAPIKey {
		if v, err = apiKeyVerified(c, exp, nbf); err != nil {
			return nil, err
		}
	} else {
		clientID := c.clientID()
		if clientID == "" {
			return nil, errNoClientID
		}
		v = &verified{subject: c.Subject, clientID: clientID, scope: c.Scope, jti: c.JTI, exp: exp, nbf: nbf}
		v.iat = c.issuedAt()
	}
	v.payload = t.payload
	pub, err := t.key(s.keys)
	if err != nil {
		return nil, err
	}
	if err := t.verifyWith(pub); err != nil {
		s.bad.add(key, t.kid, pub, now)
		return nil, err
	}
	return v, nil
}

// validity checks a token's exp (required) and nbf against now, with the
// leeway, and returns them in unix seconds.
func (s *Server) validity(c *claims, now time.Time) (exp, nbf int64, err error) {
	if c.Expiry == nil {
		return 0, 0, errNoExpiry
	}
	exp = int64(*c.Expiry)
	if c.NotBefore != nil {
		nbf = int64(math.Ceil(float64(*c.NotBefore)))
	}
	unix := now.Unix()
	if unix >= exp+s.leeway {
		return 0, 0, errExpired
	}
	if nbf > unix+s.leeway {
		return 0, 0, errNotYetValid
	}
	return exp, nbf, nil
}

// apiKeyVerified is what an API key's claims say; its restrictions are
// parsed here, once, so that the warm path only compares.
func apiKeyVerified(c *claims, exp, nbf int64) (*verified, error) {
	if c.AppID == "" || c.JTI == "" || (c.KeyType != model.KeyTypeProduction && c.KeyType != model.KeyTypeSandbox) {
		return nil, errAPIKeyClaim
	}
	v := &verified{
		subject: c.Subject, jti: c.JTI, exp: exp, nbf: nbf, apiKey: true,
		km: &model.KeyMapping{ApplicationID: c.AppID, KeyType: c.KeyType},
	}
	for it := range strings.SplitSeq(c.PermittedIP, ",") {
		if it = strings.TrimSpace(it); it == "" {
			continue
		}
		p, err := netip.ParsePrefix(it)
		if err != nil {
			a, err := netip.ParseAddr(it)
			if err != nil {
				return nil, errAPIKeyClaim
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		v.ips = append(v.ips, p.Masked())
	}
	for it := range strings.SplitSeq(c.PermittedReferer, ",") {
		if it = strings.TrimSpace(it); it != "" {
			v.referers = append(v.referers, it)
		}
	}
	return v, nil
}

// permitted reports whether an API key's IP and referrer restrictions let
// the request through: the downstream address (Envoy's remote address; with
// use_remote_address it is the peer, never a client-set X-Forwarded-For) in
// one of its ranges, and the Referer header matching one of its patterns.
func permitted(v *verified, attrs *authv3.AttributeContext) bool {
	if v.ips != nil {
		addr, err := netip.ParseAddr(attrs.GetSource().GetAddress().GetSocketAddress().GetAddress())
		if err != nil {
			return false
		}
		addr = addr.Unmap()
		in := false
		for _, p := range v.ips {
			if p.Contains(addr) {
				in = true
				break
			}
		}
		if !in {
			return false
		}
	}
	if v.referers != nil {
		ref, ok := header(attrs.GetRequest().GetHttp(), "referer")
		if !ok {
			return false
		}
		for _, p := range v.referers {
			if wildcardMatch(p, ref) {
				return true
			}
		}
		return false
	}
	return true
}

// wildcardMatch reports whether the Referer s matches pattern, in which *
// matches any run of characters (none included) and everything else itself.
// When the pattern is a URL (scheme://), its origin and its path match
// apart, so that a * in the host never reaches into the path:
// https://*.example.com/* does not match https://evil.test/x.example.com/.
func wildcardMatch(pattern, s string) bool {
	pOrigin, pPath := splitOrigin(pattern)
	sOrigin, sPath := splitOrigin(s)
	if pOrigin == "" || sOrigin == "" {
		return globMatch(pattern, s)
	}
	return globMatch(pOrigin, sOrigin) && globMatch(pPath, sPath)
}

// splitOrigin splits a URL at the first / after scheme://; origin is ""
// for a string without scheme://.
func splitOrigin(u string) (origin, path string) {
	i := strings.Index(u, "://")
	if i < 0 {
		return "", u
	}
	if j := strings.IndexByte(u[i+3:], '/'); j >= 0 {
		return u[:i+3+j], u[i+3+j:]
	}
	return u, ""
}

// globMatch reports whether s matches pattern, in which * matches any run
// of characters (none included) and everything else itself.
func globMatch(pattern, s string) bool {
	// The classic greedy match with one backtrack point: linear enough for
	// header-sized input, and allocation-free.
	p, i, star, mark := 0, 0, -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case p < len(pattern) && pattern[p] == s[i]:
			p++
			i++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// hasWord reports whether the space-separated list has word.
func hasWord(list, word string) bool {
	for list != "" {
		var w string
		w, list, _ = strings.Cut(list, " ")
		if w == word {
			return true
		}
	}
	return false
}

// header returns the trimmed, non-empty value of a request header by its
// lower-case name.
func header(h *authv3.AttributeContext_HttpRequest, name string) (string, bool) {
	v, ok := headerValue(h, name)
	v = strings.TrimSpace(v)
	return v, ok && v != ""
}

// headerValue finds a header in the map Envoy sends, or in the raw header
// list it sends instead with encode_raw_headers (the listener's setting:
// no map to decode, no UTF-8 check of every value). A raw value is viewed
// in place, not copied: the request's bytes are never changed, and the
// string keeps them alive as long as it lives.
func headerValue(h *authv3.AttributeContext_HttpRequest, name string) (string, bool) {
	if v, ok := h.GetHeaders()[name]; ok {
		return v, true
	}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		if strings.EqualFold(hv.GetKey(), name) {
			if v := hv.GetValue(); v != "" {
				return v, true
			}
			raw := hv.GetRawValue()
			return unsafe.String(unsafe.SliceData(raw), len(raw)), true //nolint:gosec // G103: sound, see above
		}
	}
	return "", false
}

// headersOf is the request's headers as a map of lower-case names, for
// throttling conditions and custom rules; built from the raw list when
// Envoy sends one. Repeated headers keep the first value.
func headersOf(h *authv3.AttributeContext_HttpRequest) map[string]string {
	if m := h.GetHeaders(); len(m) > 0 {
		return m
	}
	raw := h.GetHeaderMap().GetHeaders()
	m := make(map[string]string, len(raw))
	for _, hv := range raw {
		k := strings.ToLower(hv.GetKey())
		if _, dup := m[k]; dup {
			continue
		}
		v := hv.GetValue()
		if v == "" {
			v = string(hv.GetRawValue())
		}
		m[k] = v
	}
	return m
}

// bearer returns the token of an "Authorization: Bearer" header.
func bearer(h *authv3.AttributeContext_HttpRequest) (string, bool) {
	auth, ok := headerValue(h, "authorization")
	const scheme = "bearer "
	if !ok || len(auth) <= len(scheme) || !strings.EqualFold(auth[:len(scheme)], scheme) {
		return "", false
	}
	tok := strings.TrimSpace(auth[len(scheme):])
	return tok, tok != ""
}

// anyScope reports whether any of the space-separated scopes in want is
// among the space-separated scopes in have.
func anyScope(want, have string) bool {
	for want != "" {
		var w string
		w, want, _ = strings.Cut(want, " ")
		if w == "" {
			continue
		}
		for h, rest := "", have; rest != ""; {
			h, rest, _ = strings.Cut(rest, " ")
			if h == w {
				return true
			}
		}
	}
	return false
}

func keyTypeHeader(keyType string) []*corev3.HeaderValueOption {
	return []*corev3.HeaderValueOption{{
		Header:       &corev3.HeaderValue{Key: HeaderKeyType, Value: keyType},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}}
}

// okResponse allows a request. remove names the header of the credential
// (authorization, apikey) to strip before the request goes to the backend,
// as WSO2 does by default once the gateway has consumed it; "" keeps all.
func okResponse(keyType string, meta map[string]*structpb.Value, remove string) *authv3.CheckResponse {
	ok := &authv3.OkHttpResponse{Headers: keyTypeHeader(keyType)}
	if remove != "" {
		ok.HeadersToRemove = []string{remove}
	}
	return &authv3.CheckResponse{
		Status:          &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse:    &authv3.CheckResponse_OkResponse{OkResponse: ok},
		DynamicMetadata: &structpb.Struct{Fields: meta},
	}
}

// unsecuredResponse allows a request to a resource of auth type None. Any
// Authorization header is not the gateway's credential there and is passed
// on, as WSO2 does (its OAuth authenticator, which strips it, does not run).
func unsecuredResponse(apiID string, t tiers) *authv3.CheckResponse {
	meta := map[string]*structpb.Value{
		MetaAPIID:   structpb.NewStringValue(apiID),
		MetaKeyType: structpb.NewStringValue(model.KeyTypeProduction),
	}
	t.addMeta(meta)
	if bw := t.bandwidth(nil, nil, "", apiID); bw != "" {
		meta[MetaBandwidth] = structpb.NewStringValue(bw)
	}
	return okResponse(model.KeyTypeProduction, meta, "")
}

// addMeta adds the API-level and resource-level tiers' rate-limit metadata.
func (t tiers) addMeta(meta map[string]*structpb.Value) {
	if t.api != nil {
		meta[MetaAPITier] = structpb.NewStringValue(t.api.Name)
	}
	if t.res != nil {
		meta[MetaResource] = structpb.NewStringValue(t.resource)
		meta[MetaResourceTier] = structpb.NewStringValue(t.res.Name)
	}
}

// allowedResponse allows a request with a credential; assertion, when
// not "", is the backend JWT to send the backend (backendjwt.go).
//
// When Check decides the limits (decided), the metadata is only their
// input, and Envoy gets none of it but the bandwidth counter's (limit):
// with no limiting level there is nothing to decide, so resp goes to Envoy
// as built, and is built without the rest.
func allowedResponse(v *verified, km *model.KeyMapping, app *model.Application, sub *model.Subscription, t tiers, assertion string, decided bool) *authv3.CheckResponse {
	meta := map[string]*structpb.Value{
		MetaAPIID:           structpb.NewStringValue(sub.APIID),
		MetaApplicationID:   structpb.NewStringValue(app.ID),
		MetaApplicationName: structpb.NewStringValue(app.Name),
		MetaKeyType:         structpb.NewStringValue(km.KeyType),
		MetaUser:            structpb.NewStringValue(v.subject),
		MetaClientID:        structpb.NewStringValue(v.clientID),
	}
	if t.sub {
		meta[MetaSubscriptionID] = structpb.NewStringValue(sub.ID)
		meta[MetaSubscriptionTier] = structpb.NewStringValue(sub.ThrottlingPolicy)
	}
	if t.app != nil {
		meta[MetaApplicationTier] = structpb.NewStringValue(t.app.Name)
	}
	t.addMeta(meta)
	if decided && !limits(meta) {
		clear(meta)
	}
	if bw := t.bandwidth(sub, app, v.subject, sub.APIID); bw != "" {
		meta[MetaBandwidth] = structpb.NewStringValue(bw)
	}
	remove := "authorization"
	if v.apiKey {
		remove = HeaderAPIKey
	}
	resp := okResponse(km.KeyType, meta, remove)
	if assertion != "" {
		ok := resp.GetOkResponse()
		ok.Headers = withBackendJWT(ok.Headers, assertion)
	}
	return resp
}

// WSO2 error codes the server answers with.
const (
	codeMissing        = "900902"
	codeInvalid        = "900901"
	codeNoResource     = "900906"
	codeBlocked        = "900907"
	codeNoSubscription = "900908"
	codeInactive       = "900909"
	codeScope          = "900910"
	codeDenied         = "900805"
	// codeKeyForbidden is WSO2's API_AUTH_FORBIDDEN (900908, 403) as its
	// API-key authenticator answers a call from an IP or referrer the key
	// does not permit; keyed apart from codeNoSubscription for its own
	// description.
	codeKeyForbidden = "900908/apikey"
	// codeBackendJWT is WSO2's API_AUTH_GENERAL_ERROR, answered with 500
	// when the backend JWT an API asks for cannot be made.
	codeBackendJWT = "900900"
	codeTokenType  = "900905"
	// codeLimiterDown answers a request whose rate limits could not be
	// decided: 503, as Envoy's rate-limit filter fails closed.
	codeLimiterDown = "900900/ratelimit"
	// codeKeyManagerDown answers an opaque token the key manager could not
	// be asked about: 503, since the token may well be good.
	codeKeyManagerDown = "900900/keymanager"
)

// denial is one prepared denied response; they are built once in New and
// shared, since nothing in them depends on the request.
type denial struct {
	key         string // the key in Server.deny, when not code
	code        string
	http        typev3.StatusCode
	grpc        codes.Code
	message     string
	description string
	challenge   string // www-authenticate, for 401s

	resp  *authv3.CheckResponse
	count prometheus.Counter
}

var denials = []denial{
	{
		key:         codeLimiterDown,
		code:        codeBackendJWT, // WSO2's general error code
		http:        typev3.StatusCode_ServiceUnavailable,
		grpc:        codes.Unavailable,
		message:     "Service unavailable",
		description: "The rate limits of the request could not be decided; try again",
	},
	{
		key:         codeKeyManagerDown,
		code:        codeBackendJWT, // WSO2's general error code
		http:        typev3.StatusCode_ServiceUnavailable,
		grpc:        codes.Unavailable,
		message:     "Service unavailable",
		description: "The access token could not be validated: the key manager did not answer; try again",
	},
	{
		code:        codeTokenType,
		http:        typev3.StatusCode_Unauthorized,
		grpc:        codes.Unauthenticated,
		message:     "Incorrect Access Token Type is provided",
		description: "The credential is not of the type this header takes: an API key goes in the apikey header, an access token in Authorization",
		challenge:   `Bearer error="invalid_token"`,
	},
	{
		code:        codeBackendJWT,
		http:        typev3.StatusCode_InternalServerError,
		grpc:        codes.Internal,
		message:     "Unclassified Authentication Failure",
		description: "The gateway could not make the backend JWT this API requires",
	},
	{
		// WSO2 answers a blocking condition with 403 "Message blocked".
		code:        codeDenied,
		http:        typev3.StatusCode_Forbidden,
		grpc:        codes.PermissionDenied,
		message:     "Message blocked",
		description: "You have been blocked from accessing the resource",
	},
	{
		code:        codeMissing,
		http:        typev3.StatusCode_Unauthorized,
		grpc:        codes.Unauthenticated,
		message:     "Missing Credentials",
		description: "Invalid Credentials. Make sure your API invocation call has a header: 'Authorization : Bearer ACCESS_TOKEN' or 'Authorization : Basic ACCESS_TOKEN' or 'apikey: API_KEY'",
		challenge:   `Bearer realm="apim"`,
	},
	{
		code:        codeInvalid,
		http:        typev3.StatusCode_Unauthorized,
		grpc:        codes.Unauthenticated,
		message:     "Invalid Credentials",
		description: "Invalid Credentials. Make sure you have provided the correct security credentials",
		challenge:   `Bearer realm="apim", error="invalid_token"`,
	},
	{
		code:        codeNoResource,
		http:        typev3.StatusCode_NotFound,
		grpc:        codes.NotFound,
		message:     "No matching resource found for given API Request",
		description: "No matching resource found in the API for the given request",
	},
	{
		code:        codeBlocked,
		http:        typev3.StatusCode_Unauthorized,
		grpc:        codes.PermissionDenied,
		message:     "The requested API is temporarily blocked",
		description: "The subscription to the API is blocked",
		challenge:   `Bearer realm="apim"`,
	},
	{
		code:        codeNoSubscription,
		http:        typev3.StatusCode_Forbidden,
		grpc:        codes.PermissionDenied,
		message:     "Resource forbidden",
		description: "User is NOT authorized to access the Resource. API Subscription validation failed.",
	},
	{
		code:        codeInactive,
		http:        typev3.StatusCode_Unauthorized,
		grpc:        codes.PermissionDenied,
		message:     "The subscription to the API is inactive",
		description: "The subscription to the API is on hold or rejected",
		challenge:   `Bearer realm="apim"`,
	},
	{
		key:         codeKeyForbidden,
		code:        codeNoSubscription,
		http:        typev3.StatusCode_Forbidden,
		grpc:        codes.PermissionDenied,
		message:     "Resource forbidden",
		description: "Access forbidden for the invocations: the API key does not permit this IP address or referrer.",
	},
	{
		code:        codeScope,
		http:        typev3.StatusCode_Forbidden,
		grpc:        codes.PermissionDenied,
		message:     "The access token does not allow you to access the requested resource",
		description: "User is NOT authorized to access the Resource. Scope validation failed.",
	},
}

func (d *denial) response() *authv3.CheckResponse {
	body, err := jsonBody(d.code, d.message, d.description)
	if err != nil { // constant strings: cannot happen
		body = `{"code":"` + d.code + `"}`
	}
	headers := []*corev3.HeaderValueOption{{
		Header:       &corev3.HeaderValue{Key: "content-type", Value: "application/json"},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}}
	if d.challenge != "" {
		headers = append(headers, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: "www-authenticate", Value: d.challenge},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	}
	return &authv3.CheckResponse{
		Status: status.New(d.grpc, d.message).Proto(),
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: d.http},
			Headers: headers,
			Body:    body,
		}},
	}
}

// jsonBody is WSO2's error body: {"code":...,"message":...,"description":...}.
func jsonBody(code, message, description string) (string, error) {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	err := enc.Encode(struct {
		Code        string `json:"code"`
		Message     string `json:"message"`
		Description string `json:"description"`
	}{code, message, description})
	return strings.TrimSuffix(b.String(), "\n"), err
}

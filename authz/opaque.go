package authz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Opaque access tokens (an application of tokenType OAUTH) carry nothing
// the gateway can verify: it asks the key manager (RFC 7662 introspection)
// the first time it sees one, and keeps the answer in the verified-token
// cache until the token's exp, like a verified JWT. From then on the warm
// path is the JWT's: a SHA-256 of the header and one map lookup, no
// allocation. The answer carries the token's jti, so a revocation event
// refuses a cached opaque token as it refuses a JWT, and its iat, so a
// client-wide revocation (a regenerated secret) does too. An inactive
// answer is remembered for a short while, so a replayed dead token does not
// cost a call per request.
//
// Only strings of the key manager's opaque format (apim_at_ and 43 base64url
// characters) are introspected; any other non-JWT bearer string is refused
// without a call. Introspections of one token are shared by the requests
// that wait for it, run with their own timeout (an abandoned one still
// fills the cache), and at most OpaqueConfig.MaxInFlight run at once.
// The key manager being unreachable refuses the token (fail closed) with
// the 401 of any invalid credential; nothing is cached then.

// Introspection is RFC 7662's answer about a token.
type Introspection struct {
	Active    bool   `json:"active"`
	TokenType string `json:"token_type"`
	ClientID  string `json:"client_id"`
	Subject   string `json:"sub"`
	Scope     string `json:"scope"` // space-separated
	JTI       string `json:"jti"`
	Issuer    string `json:"iss"`
	IssuedAt  int64  `json:"iat"`
	NotBefore int64  `json:"nbf"`
	ExpiresAt int64  `json:"exp"`
}

// Introspector asks the key manager about an opaque access token. An
// inactive token is an answer with Active false, not an error; an error
// means the key manager could not be asked.
type Introspector interface {
	Introspect(ctx context.Context, token string) (*Introspection, error)
}

// IntrospectorFunc adapts a function to Introspector: the all-in-one
// profile's in-process key manager.
type IntrospectorFunc func(ctx context.Context, token string) (*Introspection, error)

// Introspect calls f.
func (f IntrospectorFunc) Introspect(ctx context.Context, token string) (*Introspection, error) {
	return f(ctx, token)
}

var (
	_ Introspector = IntrospectorFunc(nil)
	_ Introspector = (*HTTPIntrospector)(nil)
)

// OpaqueConfig configures the checking of opaque access tokens.
type OpaqueConfig struct {
	// Introspector asks the key manager; nil refuses every opaque token.
	Introspector Introspector
	// Timeout bounds each introspection; default 2s.
	Timeout time.Duration
	// InactiveTTL is how long an inactive answer is remembered; default 10s.
	InactiveTTL time.Duration
	// InactiveCacheSize bounds the inactive answers remembered; default
	// 10,000.
	InactiveCacheSize int
	// MaxInFlight bounds the introspections running at once; default 64.
	MaxInFlight int
}

// Errors of opaque tokens, for debug logs; every one is a 900901.
var (
	errInactive      = errors.New("opaque token is not active")
	errNotAccess     = errors.New("introspected token is not an access token")
	errOpaqueClaims  = errors.New("introspection lacks client_id, jti or exp")
	errIntrospection = errors.New("no introspection")
)

// opaquePrefix starts every opaque access token of the resident key manager.
const opaquePrefix = "apim_at_"

// opaqueLen is the length of one: the prefix and 43 base64url characters.
const opaqueLen = len(opaquePrefix) + 43

// isOpaqueToken reports whether tok has the form of the key manager's
// opaque access tokens. It does not allocate.
func isOpaqueToken(tok string) bool {
	if len(tok) != opaqueLen || !strings.HasPrefix(tok, opaquePrefix) {
		return false
	}
	for i := len(opaquePrefix); i < len(tok); i++ {
		switch c := tok[i]; {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

// opaqueTokens is the Server's state for opaque tokens.
type opaqueTokens struct {
	intro    Introspector
	timeout  time.Duration
	inactive *expiringSet
	sem      chan struct{}

	mu    sync.Mutex
	calls map[tokenKey]*introCall

	// busy counts new tokens refused while every slot was taken, failed
	// the introspections the key manager did not answer.
	busy, failed prometheus.Counter
}

// introCall is one introspection, shared by the requests for one token.
type introCall struct {
	done chan struct{}
	v    *verified // nil: inactive, or err
	err  error
}

func newOpaqueTokens(cfg OpaqueConfig) *opaqueTokens {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.InactiveTTL <= 0 {
		cfg.InactiveTTL = 10 * time.Second
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 64
	}
	return &opaqueTokens{
		intro:    cfg.Introspector,
		timeout:  cfg.Timeout,
		inactive: newExpiringSet(cfg.InactiveCacheSize, cfg.InactiveTTL),
		sem:      make(chan struct{}, cfg.MaxInFlight),
		calls:    map[tokenKey]*introCall{},
		busy:     prometheus.NewCounter(prometheus.CounterOpts{Name: "unregistered"}),
		failed:   prometheus.NewCounter(prometheus.CounterOpts{Name: "unregistered"}),
	}
}

// introspect returns what the key manager says of an opaque token not in
// the verified-token cache, whose SHA-256 is key, and caches it; nil for a
// token that is inactive or could not be checked, with unavailable true
// when the key manager could not be asked (down, or every slot busy): the
// token may be good, so the answer is a 503, not a 401.
func (s *Server) introspect(ctx context.Context, tok string, key *tokenKey, now time.Time) (_ *verified, unavailable bool) {
	o := s.opaque
	if o == nil || o.intro == nil || o.inactive.has(key, now) {
		return nil, false
	}
	o.mu.Lock()
	c, ok := o.calls[*key]
	if !ok {
		// An introspection may have finished since the caller missed the
		// cache: it caches its answer before it leaves calls.
		if v := s.cache.get(key); v != nil {
			o.mu.Unlock()
			return v, false
		}
		if o.inactive.has(key, now) {
			o.mu.Unlock()
			return nil, false
		}
		// A slot first: while all are busy a new token is refused at once,
		// so made-up tokens cannot pile up goroutines or key-manager calls.
		select {
		case o.sem <- struct{}{}:
		default:
			o.mu.Unlock()
			o.busy.Inc()
			return nil, true
		}
		c = &introCall{done: make(chan struct{})}
		o.calls[*key] = c
		// Its own context: a request that gives up does not waste the
		// answer the next one needs.
		go s.runIntrospection(context.WithoutCancel(ctx), c, tok, *key)
	}
	o.mu.Unlock()
	select {
	case <-c.done:
		return c.v, c.err != nil
	case <-ctx.Done():
		return nil, false
	}
}

// runIntrospection asks the key manager, caches the answer and completes c.
func (s *Server) runIntrospection(ctx context.Context, c *introCall, tok string, key tokenKey) {
	o := s.opaque
	defer func() {
		o.mu.Lock()
		delete(o.calls, key)
		o.mu.Unlock()
		close(c.done)
	}()
	defer func() { <-o.sem }() // taken by introspect
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	in, err := o.intro.Introspect(ctx, tok)
	if err != nil {
		// Counted, and logged at debug: a flood of made-up tokens must not
		// flood the log. The error never quotes the token (it travels in
		// the body).
		c.err = err
		o.failed.Inc()
		s.log.Debug().Err(err).Msg("opaque access token refused: the key manager could not be asked")
		return
	}
	now := s.now()
	v, err := s.opaqueVerified(in, now)
	if err != nil {
		o.inactive.add(&key, now)
		s.log.Debug().Err(err).Msg("opaque access token rejected")
		return
	}
	s.cache.put(&key, v, now)
	c.v = v
}

// opaqueVerified checks an introspection answer and makes the cache entry.
func (s *Server) opaqueVerified(in *Introspection, now time.Time) (*verified, error) {
	switch {
	case in == nil || !in.Active:
		return nil, errInactive
	case in.TokenType != "" && !strings.EqualFold(in.TokenType, "bearer") && !strings.EqualFold(in.TokenType, "access_token"):
		return nil, errNotAccess
	case in.Issuer != "" && !slices.Contains(s.issuers, in.Issuer):
		return nil, errIssuer
	case in.ClientID == "" || in.JTI == "" || in.ExpiresAt == 0:
		// Without a jti no revocation could reach the cached entry.
		return nil, errOpaqueClaims
	case now.Unix() >= in.ExpiresAt+s.leeway:
		return nil, errExpired
	}
	// The introspection answer stands in for a JWT's claims where
	// throttling conditions and custom rules read claims.
	payload, _ := json.Marshal(in) // plain fields: cannot fail
	return &verified{
		subject: in.Subject, clientID: in.ClientID, scope: in.Scope, jti: in.JTI,
		exp: in.ExpiresAt, nbf: in.NotBefore, iat: in.IssuedAt, payload: payload,
	}, nil
}

// expiringSet remembers token hashes for a while, bounded: a ring evicts
// the oldest entry when full, in constant time.
type expiringSet struct {
	ttl  time.Duration
	mu   sync.RWMutex
	m    map[tokenKey]int64 // until, unix nanoseconds
	ring []tokenKey
	next int
}

func newExpiringSet(size int, ttl time.Duration) *expiringSet {
	if size <= 0 {
		size = 10_000
	}
	return &expiringSet{ttl: ttl, m: make(map[tokenKey]int64, size), ring: make([]tokenKey, size)}
}

func (e *expiringSet) has(k *tokenKey, now time.Time) bool {
	e.mu.RLock()
	until, ok := e.m[*k]
	e.mu.RUnlock()
	return ok && now.UnixNano() < until
}

func (e *expiringSet) add(k *tokenKey, now time.Time) {
	until := now.Add(e.ttl).UnixNano()
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.m[*k]; ok {
		e.m[*k] = until
		return
	}
	if len(e.m) == len(e.ring) {
		delete(e.m, e.ring[e.next])
	}
	e.ring[e.next] = *k
	e.next = (e.next + 1) % len(e.ring)
	e.m[*k] = until
}

// HTTPIntrospectorConfig configures an HTTPIntrospector.
type HTTPIntrospectorConfig struct {
	// URL is the control plane's gateway introspection endpoint
	// (keymgr.PathGatewayIntrospect under its base URL).
	URL string
	// Token is the shared gateway.token, sent as a bearer token: the
	// credential gateways already hold for the full-state endpoint.
	Token string
	// Client makes the calls; required (it trusts the control plane's CA).
	Client *http.Client
}

// HTTPIntrospector asks the control plane's key manager over HTTPS: a
// gateway-profile sidecar's Introspector.
type HTTPIntrospector struct {
	cfg HTTPIntrospectorConfig
}

// NewHTTPIntrospector returns an HTTPIntrospector, or an error naming every
// missing setting.
func NewHTTPIntrospector(cfg HTTPIntrospectorConfig) (*HTTPIntrospector, error) {
	var errs []error
	if u, err := url.Parse(cfg.URL); cfg.URL == "" || err != nil || u.Scheme == "" || u.Host == "" {
		errs = append(errs, errors.New("introspection url must be an absolute URL"))
	}
	if cfg.Token == "" {
		errs = append(errs, errors.New("introspection token (gateway.token) is required"))
	}
	if cfg.Client == nil {
		errs = append(errs, errors.New("introspection client is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &HTTPIntrospector{cfg: cfg}, nil
}

// maxIntrospectionBytes bounds an introspection answer.
const maxIntrospectionBytes = 64 << 10

// Introspect implements Introspector: POST token=... (RFC 7662). The token
// is in the body only, so no error or log line can quote it.
func (h *HTTPIntrospector) Introspect(ctx context.Context, token string) (*Introspection, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.cfg.URL, strings.NewReader(url.Values{"token": {token}}.Encode()))
	if err != nil {
		return nil, fmt.Errorf("introspect at %s: %w", h.cfg.URL, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+h.cfg.Token)
	resp, err := h.cfg.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("introspect at %s: %w", h.cfg.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxIntrospectionBytes))
		return nil, fmt.Errorf("introspect at %s: %w: status %d", h.cfg.URL, errIntrospection, resp.StatusCode)
	}
	var in Introspection
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxIntrospectionBytes)).Decode(&in); err != nil {
		return nil, fmt.Errorf("introspect at %s: decode: %w", h.cfg.URL, err)
	}
	return &in, nil
}

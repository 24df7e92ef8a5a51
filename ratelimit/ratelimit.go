// Package ratelimit is the gateway sidecar's Envoy rate-limit service: it
// counts requests per subscription in fixed windows aligned to the
// subscription tier's policy and answers OVER_LIMIT, with WSO2's throttling
// body, once a window's quota is spent.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/apim-dev/apim/internal/gwstate"
	"github.com/apim-dev/apim/internal/model"
)

// Domain is the rate-limit domain of every route's rate_limits.
const Domain = "apim"

// HeaderQuotaExceeded flags, to the backend, a request admitted past the
// limit of a policy that does not stop on quota reach (stopOnQuotaReach
// false: allow and flag, for billing): its value names each such policy
// as level/name, comma-separated, e.g. "subscription/Billed". The sidecar
// removes one a client sent.
const HeaderQuotaExceeded = "x-apim-quota-exceeded"

// Descriptor entry keys, as the routes' rate_limits set them from ext_authz
// dynamic metadata. The first entry of a descriptor names its level.
const (
	KeySubscription = "subscription" // [subscription, tier]
	KeyTier         = "tier"
	KeyApplication  = "application" // [application, user, app_tier]
	KeyUser         = "user"
	KeyAppTier      = "app_tier"
	KeyAPI          = "api" // [api, api_tier]
	KeyAPITier      = "api_tier"
	KeyResource     = "resource" // [resource, resource_api, resource_tier]
	KeyResourceAPI  = "resource_api"
	KeyResourceTier = "resource_tier"
	KeyCustom       = "custom"    // [custom]: every custom rule matched, see CustomRuleSep
	KeyBandwidth    = "bandwidth" // [bandwidth]: sent when the stream is done, see countBytes
)

// Separators within descriptor values. An advanced policy's tier may carry
// the 1-based condition group the request matched after GroupSep
// ("10KPerMin/2"; policy names cannot contain it). The [custom] and
// [bandwidth] values hold several records, split by CustomRuleSep, of fields
// split by CustomKeySep: ASCII's record and unit separators, which neither
// names nor ids, paths or addresses carry.
const (
	GroupSep      = "/"
	CustomRuleSep = "\x1e"
	CustomKeySep  = "\x1f"
)

// Bandwidth record kinds, the first field of a [bandwidth] record.
const (
	BandwidthSubscription = "subscription"
	BandwidthApplication  = "application"
	BandwidthAPI          = "api"
	BandwidthResource     = "resource"
)

func bandwidthKind(k string) (kind byte, level string, ok bool) {
	switch k {
	case BandwidthSubscription:
		return kindSubscription, model.LevelSubscription, true
	case BandwidthApplication:
		return kindApplication, model.LevelApplication, true
	case BandwidthAPI:
		return kindAPI, model.LevelAPI, true
	case BandwidthResource:
		return kindResource, model.LevelAPI, true
	}
	return 0, "", false
}

// WSO2's throttling error codes, one per level.
const (
	CodeAPI          = "900800"
	CodeResource     = "900802"
	CodeApplication  = "900803"
	CodeSubscription = "900804"
	CodeCustom       = "900806"
	CodeBurst        = "900807"
)

// Counter kinds: what a counter counts.
const (
	kindSubscription byte = iota + 1
	kindBurst
	kindApplication
	kindAPI
	kindResource
	kindCustom
)

// Config configures the rate-limit service.
type Config struct {
	State  *gwstate.Store
	Logger zerolog.Logger
	Now    func() time.Time // defaults to time.Now
	// Registry, when set, gets the call counter
	// apim_ratelimit_calls_total{code}, code "" for OK.
	Registry *prometheus.Registry
	// Fleet, when set, shares the counts with the gateway's fleet and has
	// the last word on admitting a request (package trafficmgr). Without
	// it every limit is this sidecar's alone.
	Fleet Fleet
}

// Server answers Envoy's ShouldRateLimit calls from local counters.
type Server struct {
	state    *gwstate.Store
	log      zerolog.Logger
	now      func() time.Time
	counters *counters
	fleet    Fleet
	calls    map[string]prometheus.Counter // by WSO2 code; "" is OK
	// overQuota counts requests admitted past a limit that does not stop
	// on quota reach, by level.
	overQuota *prometheus.CounterVec
}

var _ rlsv3.RateLimitServiceServer = (*Server)(nil)

// New returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.State == nil {
		return nil, errors.New("ratelimit: state is required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	calls := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "apim", Subsystem: "ratelimit", Name: "calls_total",
		Help: "ShouldRateLimit calls by the WSO2 code answered (empty: not limited).",
	}, []string{"code"})
	overQuota := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "apim", Subsystem: "ratelimit", Name: "over_quota_total",
		Help: "Requests admitted past the limit of a policy that does not stop on quota reach, by level (billed, flagged to the backend).",
	}, []string{"level"})
	if cfg.Registry != nil {
		for _, c := range []prometheus.Collector{calls, overQuota} {
			if err := cfg.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("ratelimit: register metrics: %w", err)
			}
		}
	}
	s := &Server{
		state: cfg.State, log: cfg.Logger, now: cfg.Now, counters: newCounters(), fleet: cfg.Fleet,
		calls: map[string]prometheus.Counter{}, overQuota: overQuota,
	}
	for _, c := range []string{"", CodeAPI, CodeResource, CodeApplication, CodeSubscription, CodeCustom, CodeBurst} {
		s.calls[c] = calls.WithLabelValues(c)
	}
	return s, nil
}

// Register registers the server as envoy.service.ratelimit.v3.RateLimitService.
func (s *Server) Register(g *grpc.Server) { rlsv3.RegisterRateLimitServiceServer(g, s) }

// Start sweeps the counters of ended windows every interval (default 10s)
// until ctx is done, so subscriptions that went quiet free their memory too.
func (s *Server) Start(ctx context.Context) error {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.counters.sweep(s.now().UnixNano())
		}
	}
}

// ShouldRateLimit counts the request against every descriptor: API,
// resource, subscription (and its burst) and application levels, each with
// its policy. A descriptor of an unknown or unlimited tier, or of any other
// shape, is OK. Over a limit, the body carries the WSO2 code of the first
// descriptor over its limit, and the request is taken off every counter it
// was added to: a refused request uses no quota, so one throttled client
// cannot use up an API-wide limit that others share. Policy changes apply
// from the next request.
func (s *Server) ShouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	now := s.now()
	idx := s.state.Load()
	descs := req.GetDescriptors()
	ans := newAnswer(len(descs)) // the response and its statuses, in one allocation
	resp := &ans.resp
	var retryAt time.Time // end of the latest window over its limit
	code := ""
	added := tally{ans: ans}
	for i, d := range descs {
		st, c, end := s.count(idx, req, d, now, &added)
		resp.Statuses[i] = st
		if c != "" {
			resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
			if code == "" {
				code = c
			}
			if end.After(retryAt) {
				retryAt = end
			}
		}
	}
	if len(added.overQuota) > 0 && resp.OverallCode == rlsv3.RateLimitResponse_OK {
		resp.RequestHeadersToAdd = []*corev3.HeaderValue{{Key: HeaderQuotaExceeded, Value: strings.Join(added.overQuota, ",")}}
		for _, q := range added.overQuota {
			level, _, _ := strings.Cut(q, "/")
			s.overQuota.WithLabelValues(level).Inc()
		}
	}
	if resp.OverallCode == rlsv3.RateLimitResponse_OVER_LIMIT {
		added.refund(s.counters, now.UnixNano())
		retry := int64(retryAt.Sub(now) / time.Second)
		if retryAt.Sub(now)%time.Second != 0 {
			retry++
		}
		retry = max(retry, 1)
		resp.RawBody = throttledBody(code, retryAt)
		resp.ResponseHeadersToAdd = []*corev3.HeaderValue{
			{Key: "retry-after", Value: strconv.FormatInt(retry, 10)},
			{Key: "content-type", Value: "application/json"},
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	s.calls[code].Inc()
	return resp, nil
}

var okStatus = &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK}

// hit is one addition to a counter, kept so a refused request can be undone.
type hit struct {
	kind       byte
	a, b       string
	start, end int64
	n          int64
}

// tally records a request's additions; a request has a few descriptors, so
// the array keeps it off the heap, and more (many matching custom rules)
// spill into more.
type tally struct {
	hits [8]hit
	n    int
	more []hit
	ans  *answer // where the request's statuses are allocated
	// overQuota names the policies (level/name) whose limit the request
	// passed without being stopped: stopOnQuotaReach false.
	overQuota []string
}

func (t *tally) add(h hit) {
	if t.n < len(t.hits) {
		t.hits[t.n] = h
		t.n++
		return
	}
	t.more = append(t.more, h)
}

func (t *tally) refund(c *counters, nowNs int64) {
	for _, h := range t.hits[:t.n] {
		c.add(h.kind, h.a, h.b, h.start, h.end, -h.n, nowNs)
	}
	for _, h := range t.more {
		c.add(h.kind, h.a, h.b, h.start, h.end, -h.n, nowNs)
	}
}

// count counts one descriptor, recording what it added in added. It returns
// its status, the WSO2 code when it is over its limit ("" otherwise), and the
// end of its window.
func (s *Server) count(idx *gwstate.Index, req *rlsv3.RateLimitRequest, d *ratelimitv3.RateLimitDescriptor, now time.Time, added *tally) (*rlsv3.RateLimitResponse_DescriptorStatus, string, time.Time) {
	entries := d.GetEntries()
	if req.GetDomain() != Domain || len(entries) == 0 {
		return okStatus, "", time.Time{}
	}
	hits := descriptorHits(req, d)
	var a, b, tier, level, code string
	var kind byte
	switch entries[0].GetKey() {
	case KeySubscription:
		kind, level, code = kindSubscription, model.LevelSubscription, CodeSubscription
	case KeyApplication:
		kind, level, code = kindApplication, model.LevelApplication, CodeApplication
	case KeyAPI:
		kind, level, code = kindAPI, model.LevelAPI, CodeAPI
	case KeyResource:
		kind, level, code = kindResource, model.LevelAPI, CodeResource
	case KeyCustom:
		return s.countCustom(idx, entries[0].GetValue(), hits, now, added)
	case KeyBandwidth:
		s.countBytes(idx, entries[0].GetValue(), hits, now)
		return okStatus, "", time.Time{}
	default:
		return okStatus, "", time.Time{}
	}
	a = entries[0].GetValue()
	for _, e := range entries[1:] {
		switch e.GetKey() {
		case KeyTier, KeyAppTier, KeyAPITier, KeyResourceTier:
			tier = e.GetValue()
		case KeyUser, KeyResourceAPI:
			b = e.GetValue()
		}
	}
	// An advanced policy's tier may name the condition group the request
	// matched, "name/2": the group has its own limit and its own counter.
	group := 0
	if name, g, ok := strings.Cut(tier, GroupSep); ok && kind != kindSubscription && kind != kindApplication {
		n, err := strconv.Atoi(g)
		if err != nil || n < 1 {
			return okStatus, "", time.Time{}
		}
		tier, group, b = name, n, b+GroupSep+g
	}
	if a == "" || tier == "" {
		return okStatus, "", time.Time{}
	}
	p, ok := idx.Policy(level, tier)
	if !ok {
		return okStatus, "", time.Time{}
	}
	return s.countPolicy(kind, a, b, p, group, code, hits, now, added)
}

// descriptorHits is what a descriptor adds: its own hits_addend, else the
// request's, else 1; negative when the descriptor says so.
func descriptorHits(req *rlsv3.RateLimitRequest, d *ratelimitv3.RateLimitDescriptor) int64 {
	hits := int64(req.GetHitsAddend())
	if h := d.GetHitsAddend(); h != nil {
		// A descriptor's addend is a uint64: cap it at the request-level
		// addend's range so that it can neither wrap negative (and give
		// quota back) nor overflow the counter.
		hits = int64(min(h.GetValue(), math.MaxUint32))
	} else if hits == 0 {
		hits = 1
	}
	if d.GetIsNegativeHits() {
		hits = -hits
	}
	return hits
}

// countCustom counts a request against every custom rule it matched (the
// [custom] descriptor: "name\x1fkey" records joined by "\x1e"), each rule's
// key apart. The first rule over its limit answers.
func (s *Server) countCustom(idx *gwstate.Index, rules string, hits int64, now time.Time, added *tally) (*rlsv3.RateLimitResponse_DescriptorStatus, string, time.Time) {
	st, end := okStatus, time.Time{}
	for rule := range strings.SplitSeq(rules, CustomRuleSep) {
		name, key, _ := strings.Cut(rule, CustomKeySep)
		p, ok := idx.Policy(model.LevelCustom, name)
		if !ok || key == "" {
			continue
		}
		rst, code, rend := s.countPolicy(kindCustom, name, key, p, 0, CodeCustom, hits, now, added)
		if code != "" {
			return rst, code, rend
		}
		if rst != okStatus && (st == okStatus || rst.GetLimitRemaining() < st.GetLimitRemaining()) {
			st, end = rst, rend
		}
	}
	return st, "", end
}

// countPolicy counts hits against policy p's limit (of condition group
// group, 0 for the default) on the counter (kind, a, b).
func (s *Server) countPolicy(kind byte, a, b string, p *model.Policy, group int, code string, hits int64, now time.Time, added *tally) (*rlsv3.RateLimitResponse_DescriptorStatus, string, time.Time) {
	limit, unitTime, timeUnit := p.Limit(group)
	bandwidth := p.QuotaType == model.QuotaBandwidth && group == 0
	if bandwidth {
		// The request path only checks a bandwidth quota: the bytes are
		// counted when the stream is done (the [bandwidth] descriptor).
		limit, hits = p.Bytes(), 0
	}
	if limit <= 0 {
		return okStatus, "", time.Time{}
	}
	start, end := model.WindowStart(timeUnit, unitTime, now)
	if start.IsZero() {
		return okStatus, "", time.Time{}
	}
	nowNs := now.UnixNano()
	n := s.counters.add(kind, a, b, start.UnixNano(), end.UnixNano(), hits, nowNs)
	counted := hit{kind: kind, a: a, b: b, start: start.UnixNano(), end: end.UnixNano(), n: hits}

	over := n > limit
	if bandwidth {
		over = n >= limit
	}
	if s.fleet != nil && (hits > 0 || bandwidth) {
		c := FleetCount{Key: FleetKey(kind, a, b, start), Start: start, End: end, Limit: limit, Count: n}
		switch {
		case bandwidth:
			// What the fleet has sent counts too: this gateway may go on
			// while its bytes stay within its share of what is left.
			over = over || !s.fleet.Admit(c, now)
		case p.StopOnQuotaReach:
			if over = !s.fleet.Admit(c, now); over {
				// Only admitted requests count: a refused one would eat
				// into the other gateways' share of the limit.
				n = s.counters.add(kind, a, b, start.UnixNano(), end.UnixNano(), -hits, nowNs)
				counted.n = 0
			}
		default:
			// Admitted whatever the fleet says, and flagged past the
			// fleet's limit: the hits are shared either way.
			if !s.fleet.Admit(c, now) {
				over = true
				s.fleet.Record(c)
			}
		}
	}
	if counted.n != 0 {
		added.add(counted)
	}
	st := added.ans.status(rlsv3.RateLimitResponse_OK, p.Name, limit, unitTime, timeUnit, limit-n, end.Sub(now))
	if over && (hits > 0 || bandwidth) {
		if p.StopOnQuotaReach {
			st.Code = rlsv3.RateLimitResponse_OVER_LIMIT
			return st, code, end
		}
		added.overQuota = append(added.overQuota, kindNames[kind]+"/"+p.Name) // allowed, and flagged
	}
	// Burst control (subscription policies): a second counter beside the
	// quota's, over one rateLimitTimeUnit. It blocks even when
	// stopOnQuotaReach is false: it protects the backend, not the bill.
	if bc, bu, ok := p.Burst(); ok && kind == kindSubscription {
		bs, be := model.WindowStart(bu, 1, now)
		burstHits := hits
		if bandwidth {
			burstHits = 1 // a bandwidth quota's burst control still counts requests
		}
		bn := s.counters.add(kindBurst, a, "", bs.UnixNano(), be.UnixNano(), burstHits, nowNs)
		added.add(hit{kind: kindBurst, a: a, start: bs.UnixNano(), end: be.UnixNano(), n: burstHits})
		if bn > bc && burstHits > 0 {
			return added.ans.status(rlsv3.RateLimitResponse_OVER_LIMIT, p.Name, bc, 1, bu, 0, be.Sub(now)), CodeBurst, be
		}
	}
	return st, "", end
}

// countBytes adds a finished request's bytes to each bandwidth counter the
// [bandwidth] descriptor names ("kind\x1fa\x1fb\x1fpolicy" records joined by
// "\x1e", as authz.MetaBandwidth sets them). Envoy sends it when the stream
// is done, twice: with the bytes received and with the bytes sent.
func (s *Server) countBytes(idx *gwstate.Index, counters string, bytes int64, now time.Time) {
	if bytes <= 0 {
		return
	}
	for rec := range strings.SplitSeq(counters, CustomRuleSep) {
		f := strings.SplitN(rec, CustomKeySep, 4)
		if len(f) != 4 {
			continue
		}
		kind, level, ok := bandwidthKind(f[0])
		if !ok {
			continue
		}
		p, ok := idx.Policy(level, f[3])
		if !ok || p.QuotaType != model.QuotaBandwidth {
			continue
		}
		start, end := model.WindowStart(p.TimeUnit, p.UnitTime, now)
		if start.IsZero() {
			continue
		}
		n := s.counters.add(kind, f[1], f[2], start.UnixNano(), end.UnixNano(), bytes, now.UnixNano())
		if s.fleet != nil {
			s.fleet.Record(FleetCount{Key: FleetKey(kind, f[1], f[2], start), Start: start, End: end, Limit: p.Bytes(), Count: n})
		}
	}
}

var units = map[string]rlsv3.RateLimitResponse_RateLimit_Unit{
	"sec":   rlsv3.RateLimitResponse_RateLimit_SECOND,
	"min":   rlsv3.RateLimitResponse_RateLimit_MINUTE,
	"hour":  rlsv3.RateLimitResponse_RateLimit_HOUR,
	"day":   rlsv3.RateLimitResponse_RateLimit_DAY,
	"month": rlsv3.RateLimitResponse_RateLimit_MONTH,
	"year":  rlsv3.RateLimitResponse_RateLimit_YEAR,
}

// currentLimit is the policy as Envoy's X-RateLimit-Limit header states it.
func currentLimit(name string, count, unitTime int64, timeUnit string) *rlsv3.RateLimitResponse_RateLimit {
	l := &rlsv3.RateLimitResponse_RateLimit{
		Name:            name,
		RequestsPerUnit: uint32(min(max(count, 0), int64(^uint32(0)))),
		Unit:            units[timeUnit],
	}
	if unitTime > 1 {
		l.UnitMultiplier = wrapperspb.UInt32(uint32(min(unitTime, int64(^uint32(0)))))
	}
	return l
}

// throttledBody is WSO2's throttling error body for a code.
func throttledBody(code string, retryAt time.Time) []byte {
	b := make([]byte, 0, 192)
	b = append(b, `{"code":"`...)
	b = append(b, code...)
	b = append(b, `","message":"`...)
	b = append(b, messages[code]...)
	b = append(b, `","description":"You have exceeded your quota .You can access API after `...)
	b = retryAt.UTC().AppendFormat(b, "2006-Jan-02 15:04:05-0700 MST")
	return append(b, `"}`...)
}

// messages are WSO2's throttling messages per code.
var messages = map[string]string{
	CodeAPI:          "Message throttled out",
	CodeResource:     "Message throttled out",
	CodeApplication:  "Message throttled out",
	CodeSubscription: "Message throttled out",
	CodeCustom:       "Message throttled out",
	CodeBurst:        "Message throttled out",
}

// Package ratelimit is the gateway sidecar's Envoy rate-limit service: it
// counts requests per subscription in fixed windows aligned to the
// subscription tier's policy and answers OVER_LIMIT, with WSO2's throttling
// body, once a window's quota is spent.
package ratelimit

import (
	"context"
	"errors"
	"math"
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/apim-dev/apim/internal/gwstate"
	"github.com/apim-dev/apim/internal/model"
)

// Domain is the rate-limit domain of every route's rate_limits.
const Domain = "apim"

// Descriptor entry keys, as the routes' rate_limits set them from ext_authz
// dynamic metadata.
const (
	KeySubscription = "subscription"
	KeyTier         = "tier"
)

// Config configures the rate-limit service.
type Config struct {
	State  *gwstate.Store
	Logger zerolog.Logger
	Now    func() time.Time // defaults to time.Now
}

// Server answers Envoy's ShouldRateLimit calls from local counters.
type Server struct {
	state    *gwstate.Store
	log      zerolog.Logger
	now      func() time.Time
	counters *counters
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
	return &Server{state: cfg.State, log: cfg.Logger, now: cfg.Now, counters: newCounters()}, nil
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

// ShouldRateLimit counts the request against every descriptor naming a
// subscription and its tier. A descriptor of an unknown or unlimited tier,
// or of any other shape, is OK. Policy changes apply from the next request.
func (s *Server) ShouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	now := s.now()
	idx := s.state.Load()
	descs := req.GetDescriptors()
	resp := &rlsv3.RateLimitResponse{
		OverallCode: rlsv3.RateLimitResponse_OK,
		Statuses:    make([]*rlsv3.RateLimitResponse_DescriptorStatus, len(descs)),
	}
	var retryAt time.Time // end of the latest window over its limit
	for i, d := range descs {
		st, over, end := s.count(idx, req, d, now)
		resp.Statuses[i] = st
		if over {
			resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
			if end.After(retryAt) {
				retryAt = end
			}
		}
	}
	if resp.OverallCode == rlsv3.RateLimitResponse_OVER_LIMIT {
		retry := int64(retryAt.Sub(now) / time.Second)
		if retryAt.Sub(now)%time.Second != 0 {
			retry++
		}
		retry = max(retry, 1)
		resp.RawBody = throttledBody(retryAt)
		resp.ResponseHeadersToAdd = []*corev3.HeaderValue{
			{Key: "retry-after", Value: strconv.FormatInt(retry, 10)},
			{Key: "content-type", Value: "application/json"},
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	return resp, nil
}

var okStatus = &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK}

// count counts one descriptor. It returns its status, whether it is over
// the limit, and the end of its window.
func (s *Server) count(idx *gwstate.Index, req *rlsv3.RateLimitRequest, d *ratelimitv3.RateLimitDescriptor, now time.Time) (*rlsv3.RateLimitResponse_DescriptorStatus, bool, time.Time) {
	if req.GetDomain() != Domain {
		return okStatus, false, time.Time{}
	}
	var sub, tier string
	for _, e := range d.GetEntries() {
		switch e.GetKey() {
		case KeySubscription:
			sub = e.GetValue()
		case KeyTier:
			tier = e.GetValue()
		}
	}
	if sub == "" || tier == "" {
		return okStatus, false, time.Time{}
	}
	p, ok := idx.Policy(model.LevelSubscription, tier)
	if !ok || p.Unlimited() {
		return okStatus, false, time.Time{}
	}
	window := p.Window()
	if window <= 0 {
		return okStatus, false, time.Time{}
	}
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
	nowNs := now.UnixNano()
	start := nowNs - nowNs%int64(window)
	end := time.Unix(0, start+int64(window))
	n := s.counters.add(sub, start, start+int64(window), hits, nowNs)

	limit := p.RequestCount
	over := n > limit && hits > 0 && p.StopOnQuotaReach
	st := &rlsv3.RateLimitResponse_DescriptorStatus{
		Code:               rlsv3.RateLimitResponse_OK,
		CurrentLimit:       currentLimit(p),
		LimitRemaining:     uint32(min(max(limit-n, 0), int64(^uint32(0)))),
		DurationUntilReset: durationpb.New(end.Sub(now)),
	}
	if over {
		st.Code = rlsv3.RateLimitResponse_OVER_LIMIT
	}
	return st, over, end
}

var units = map[string]rlsv3.RateLimitResponse_RateLimit_Unit{
	"sec":  rlsv3.RateLimitResponse_RateLimit_SECOND,
	"min":  rlsv3.RateLimitResponse_RateLimit_MINUTE,
	"hour": rlsv3.RateLimitResponse_RateLimit_HOUR,
	"day":  rlsv3.RateLimitResponse_RateLimit_DAY,
}

// currentLimit is the policy as Envoy's X-RateLimit-Limit header states it.
func currentLimit(p *model.Policy) *rlsv3.RateLimitResponse_RateLimit {
	l := &rlsv3.RateLimitResponse_RateLimit{
		Name:            p.Name,
		RequestsPerUnit: uint32(min(max(p.RequestCount, 0), int64(^uint32(0)))),
		Unit:            units[p.TimeUnit],
	}
	if p.UnitTime > 1 {
		l.UnitMultiplier = wrapperspb.UInt32(uint32(min(p.UnitTime, int64(^uint32(0)))))
	}
	return l
}

// throttledBody is WSO2's throttling error body.
func throttledBody(retryAt time.Time) []byte {
	b := make([]byte, 0, 160)
	b = append(b, `{"code":"900804","message":"Message throttled out","description":"You have exceeded your quota .You can access API after `...)
	b = retryAt.UTC().AppendFormat(b, "2006-Jan-02 15:04:05-0700 MST")
	return append(b, `"}`...)
}

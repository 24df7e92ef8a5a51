package authz

import (
	"context"
	"slices"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/apim-dev/apim/ratelimit"
)

// Limiter decides rate limits: the rate-limit service, called in process
// when the route has ext_authz decide the limits (ExtLimitInAuthz).
type Limiter interface {
	ShouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error)
}

var _ Limiter = (*ratelimit.Server)(nil)

// ExtLimitInAuthz, "true" on a route, has Check decide the rate limits of
// the requests it allows, from the same in-memory state, instead of Envoy
// calling the rate-limit service after it.
const ExtLimitInAuthz = "limit_in_authz"

// descriptorShapes are the rate-limit descriptors Envoy would build from
// an allowed response's metadata (xds tierRateLimits), in the same order:
// each is sent only when every entry's metadata is there.
var descriptorShapes = [...][]struct{ key, meta string }{
	{{ratelimit.KeyAPI, MetaAPIID}, {ratelimit.KeyAPITier, MetaAPITier}},
	{{ratelimit.KeyResource, MetaResource}, {ratelimit.KeyResourceAPI, MetaAPIID}, {ratelimit.KeyResourceTier, MetaResourceTier}},
	{{ratelimit.KeySubscription, MetaSubscriptionID}, {ratelimit.KeyTier, MetaSubscriptionTier}},
	{{ratelimit.KeyApplication, MetaApplicationID}, {ratelimit.KeyUser, MetaUser}, {ratelimit.KeyAppTier, MetaApplicationTier}},
	{{ratelimit.KeyCustom, MetaCustomRules}},
}

// limits reports whether metadata carries any rate-limit descriptor.
func limits(meta map[string]*structpb.Value) bool {
	for _, shape := range descriptorShapes {
		all := true
		for _, e := range shape {
			_, ok := meta[e.meta]
			all = all && ok
		}
		if all {
			return true
		}
	}
	return false
}

// limit applies the rate limits to an allowed response: over a limit, the
// 429 the rate-limit service would have Envoy send (throttled true); else
// resp with the draft-03 X-RateLimit headers of the tightest limit. A
// request without limiting tiers costs nothing here. A limiter that fails
// refuses the request, as Envoy's rate-limit filter does with
// failure_mode_deny.
func (s *Server) limit(ctx context.Context, resp *authv3.CheckResponse) (_ *authv3.CheckResponse, throttled bool) {
	fields := resp.GetDynamicMetadata().GetFields()
	var buf [len(descriptorShapes)]*ratelimitv3.RateLimitDescriptor
	descs := buf[:0]
	for _, shape := range descriptorShapes {
		if _, ok := fields[shape[0].meta]; !ok {
			continue // the level does not limit: nothing to build
		}
		d := &ratelimitv3.RateLimitDescriptor{Entries: make([]*ratelimitv3.RateLimitDescriptor_Entry, 0, len(shape))}
		for _, e := range shape {
			v, ok := fields[e.meta]
			if !ok {
				d = nil
				break
			}
			d.Entries = append(d.Entries, &ratelimitv3.RateLimitDescriptor_Entry{Key: e.key, Value: v.GetStringValue()})
		}
		if d != nil {
			descs = append(descs, d)
		}
	}
	if len(descs) == 0 {
		return resp, false
	}
	rr, err := s.limiter.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: ratelimit.Domain, Descriptors: descs, HitsAddend: 1})
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error().Err(err).Msg("rate limits not decided; request refused")
		}
		return s.deny[codeLimiterDown].resp, true
	}
	headers := rateLimitHeaders(rr)
	if rr.GetOverallCode() == rlsv3.RateLimitResponse_OVER_LIMIT {
		for _, h := range rr.GetResponseHeadersToAdd() {
			headers = append(headers, &corev3.HeaderValueOption{Header: h, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD})
		}
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(codes.ResourceExhausted)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status: &typev3.HttpStatus{Code: typev3.StatusCode_TooManyRequests}, Headers: headers, Body: string(rr.GetRawBody()),
			}},
		}, true
	}
	// Envoy needs none of the metadata once the limits are decided, but
	// for the bandwidth counters it sends when the stream is done: the
	// rest would only cost it a Struct to parse per request.
	var meta *structpb.Struct
	if bw, ok := fields[MetaBandwidth]; ok {
		meta = &structpb.Struct{Fields: map[string]*structpb.Value{MetaBandwidth: bw}}
	}
	ok := resp.GetOkResponse()
	upstream := ok.GetHeaders()
	if flags := rr.GetRequestHeadersToAdd(); len(flags) > 0 { // admitted past a limit that does not stop: flagged
		upstream = slices.Clone(upstream)
		for _, h := range flags {
			upstream = append(upstream, &corev3.HeaderValueOption{Header: h, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD})
		}
	}
	return &authv3.CheckResponse{
		Status: resp.GetStatus(),
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: upstream, HeadersToRemove: ok.GetHeadersToRemove(), ResponseHeadersToAdd: headers,
		}},
		DynamicMetadata: meta,
	}, false
}

// withoutQuotaFlag is an allowed response that also removes a
// ratelimit.HeaderQuotaExceeded the client sent, unless the response sets
// its own (which replaces it): only the rate-limit service may flag a
// request to the backend.
func withoutQuotaFlag(resp *authv3.CheckResponse) *authv3.CheckResponse {
	ok := resp.GetOkResponse()
	for _, h := range ok.GetHeaders() {
		if h.GetHeader().GetKey() == ratelimit.HeaderQuotaExceeded {
			return resp
		}
	}
	return &authv3.CheckResponse{
		Status: resp.GetStatus(),
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: ok.GetHeaders(), HeadersToRemove: append(slices.Clone(ok.GetHeadersToRemove()), ratelimit.HeaderQuotaExceeded),
			ResponseHeadersToAdd: ok.GetResponseHeadersToAdd(),
		}},
		DynamicMetadata: resp.GetDynamicMetadata(),
	}
}

// rateLimitHeaders are the draft-03 headers Envoy's rate-limit filter sets
// (enable_x_ratelimit_headers DRAFT_VERSION_03) for the descriptor with the
// least remaining: X-RateLimit-Limit as "count, count;w=seconds;
// name=\"policy\"", X-RateLimit-Remaining and X-RateLimit-Reset.
func rateLimitHeaders(rr *rlsv3.RateLimitResponse) []*corev3.HeaderValueOption {
	var tight *rlsv3.RateLimitResponse_DescriptorStatus
	for _, st := range rr.GetStatuses() {
		if st.GetCurrentLimit() == nil {
			continue
		}
		if tight == nil || st.GetLimitRemaining() < tight.GetLimitRemaining() {
			tight = st
		}
	}
	if tight == nil {
		return nil
	}
	l := tight.GetCurrentLimit()
	count := strconv.FormatUint(uint64(l.GetRequestsPerUnit()), 10)
	limit := count + ", " + count + ";w=" + strconv.FormatInt(window(l), 10)
	if l.GetName() != "" {
		limit += `;name="` + l.GetName() + `"`
	}
	reset := tight.GetDurationUntilReset().GetSeconds()
	if tight.GetDurationUntilReset().GetNanos() > 0 {
		reset++
	}
	h := func(k, v string) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}
	}
	return []*corev3.HeaderValueOption{
		h("x-ratelimit-limit", limit),
		h("x-ratelimit-remaining", strconv.FormatUint(uint64(tight.GetLimitRemaining()), 10)),
		h("x-ratelimit-reset", strconv.FormatInt(reset, 10)),
	}
}

var unitSeconds = map[rlsv3.RateLimitResponse_RateLimit_Unit]int64{
	rlsv3.RateLimitResponse_RateLimit_SECOND: 1, rlsv3.RateLimitResponse_RateLimit_MINUTE: 60,
	rlsv3.RateLimitResponse_RateLimit_HOUR: 3600, rlsv3.RateLimitResponse_RateLimit_DAY: 86400,
	rlsv3.RateLimitResponse_RateLimit_WEEK: 7 * 86400, rlsv3.RateLimitResponse_RateLimit_MONTH: 30 * 86400,
	rlsv3.RateLimitResponse_RateLimit_YEAR: 365 * 86400,
}

// window is a rate limit's window in seconds, as Envoy states it.
func window(l *rlsv3.RateLimitResponse_RateLimit) int64 {
	secs := unitSeconds[l.GetUnit()]
	if m := l.GetUnitMultiplier(); m != nil && m.GetValue() > 1 {
		secs *= int64(m.GetValue())
	}
	return secs
}

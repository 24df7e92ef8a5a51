package ratelimit

import (
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// answer is one ShouldRateLimit response together with the messages it
// points to, allocated as one block: one allocation per call where separate
// messages took five (the response, its statuses slice, and per counted
// descriptor a status, its limit and its duration until reset). The block
// has room for as many statuses as the request has descriptors, up to two
// (the routes send one descriptor per level that limits the request, see
// package xds: usually one or two); more are allocated one by one. The
// messages are filled in once and never changed after the response is
// returned.
type answer struct {
	resp  rlsv3.RateLimitResponse
	parts []statusParts // room for statuses, inside the same block
	used  int
}

// answer1 and answer2 are the blocks of an answer to one and two
// descriptors.
type (
	answer1 struct {
		answer
		statuses [1]*rlsv3.RateLimitResponse_DescriptorStatus
		parts    [1]statusParts
	}
	answer2 struct {
		answer
		statuses [2]*rlsv3.RateLimitResponse_DescriptorStatus
		parts    [2]statusParts
	}
)

// statusParts is one descriptor status and the messages it points to.
type statusParts struct {
	st    rlsv3.RateLimitResponse_DescriptorStatus
	limit rlsv3.RateLimitResponse_RateLimit
	mult  wrapperspb.UInt32Value
	dur   durationpb.Duration
}

// newAnswer returns an OK response with room for n statuses.
func newAnswer(n int) *answer {
	var a *answer
	switch n {
	case 1:
		b := &answer1{}
		a = &b.answer
		a.resp.Statuses, a.parts = b.statuses[:], b.parts[:]
	case 2:
		b := &answer2{}
		a = &b.answer
		a.resp.Statuses, a.parts = b.statuses[:], b.parts[:]
	default:
		a = &answer{}
		if n > 0 {
			a.resp.Statuses = make([]*rlsv3.RateLimitResponse_DescriptorStatus, n)
		}
	}
	a.resp.OverallCode = rlsv3.RateLimitResponse_OK
	return a
}

// status returns a descriptor status with the policy's limit as Envoy's
// X-RateLimit-Limit states it, the requests remaining, and the time until
// the window resets; from the answer's block while it has room (a may be
// nil), else newly allocated.
func (a *answer) status(code rlsv3.RateLimitResponse_Code, name string, count, unitTime int64, timeUnit string, remaining int64, untilReset time.Duration) *rlsv3.RateLimitResponse_DescriptorStatus {
	if a == nil || a.used == len(a.parts) {
		return &rlsv3.RateLimitResponse_DescriptorStatus{
			Code:               code,
			CurrentLimit:       currentLimit(name, count, unitTime, timeUnit),
			LimitRemaining:     clampUint32(remaining),
			DurationUntilReset: durationpb.New(untilReset),
		}
	}
	p := &a.parts[a.used]
	a.used++
	p.limit.Name = name
	p.limit.RequestsPerUnit = clampUint32(count)
	p.limit.Unit = unitOf(timeUnit)
	if unitTime > 1 {
		p.mult.Value = uint32(min(unitTime, int64(^uint32(0))))
		p.limit.UnitMultiplier = &p.mult
	}
	// As durationpb.New: whole seconds, and nanoseconds of the same sign.
	p.dur.Seconds = int64(untilReset / time.Second)
	p.dur.Nanos = int32(untilReset % time.Second) //nolint:gosec // G115: a remainder of a second fits
	p.st.Code = code
	p.st.CurrentLimit = &p.limit
	p.st.LimitRemaining = clampUint32(remaining)
	p.st.DurationUntilReset = &p.dur
	return &p.st
}

// clampUint32 is n within 0..MaxUint32.
func clampUint32(n int64) uint32 {
	return uint32(min(max(n, 0), int64(^uint32(0)))) //nolint:gosec // G115: clamped to the range
}

// unitOf is units[timeUnit] without a map lookup: in a call over gRPC the
// map is out of the CPU caches, and the switch costs nothing.
func unitOf(timeUnit string) rlsv3.RateLimitResponse_RateLimit_Unit {
	switch timeUnit {
	case "sec":
		return rlsv3.RateLimitResponse_RateLimit_SECOND
	case "min":
		return rlsv3.RateLimitResponse_RateLimit_MINUTE
	case "hour":
		return rlsv3.RateLimitResponse_RateLimit_HOUR
	case "day":
		return rlsv3.RateLimitResponse_RateLimit_DAY
	case "month":
		return rlsv3.RateLimitResponse_RateLimit_MONTH
	case "year":
		return rlsv3.RateLimitResponse_RateLimit_YEAR
	}
	return rlsv3.RateLimitResponse_RateLimit_UNKNOWN
}

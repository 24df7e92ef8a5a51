package ratelimit

import (
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/apim-dev/apim/internal/gwstate"
	"github.com/apim-dev/apim/internal/model"
)

// TestAnswerStatuses: the statuses of one, two, three and four counted
// descriptors (the first two in the response's own block, the rest
// allocated apart), an uncounted one among them, and a burst refusal all
// answer what Envoy is told: each level's limit, remaining count and time
// until reset. A later call does not change an earlier response.
func TestAnswerStatuses(t *testing.T) {
	now := t0 // 12:00:20
	st := gwstate.NewStore()
	st.Replace(&model.GatewayState{Policies: []model.Policy{
		{Level: model.LevelSubscription, Name: "Gold", RequestCount: 10, UnitTime: 1, TimeUnit: "min", StopOnQuotaReach: true},
		{Level: model.LevelSubscription, Name: "Burst", RequestCount: 100, UnitTime: 1, TimeUnit: "min", RateLimitCount: 1, RateLimitTimeUnit: "sec", StopOnQuotaReach: true},
		{Level: model.LevelApplication, Name: "App", RequestCount: 7, UnitTime: 10, TimeUnit: "min", StopOnQuotaReach: true},
		{Level: model.LevelAPI, Name: "Api", RequestCount: 5, UnitTime: 1, TimeUnit: "hour", StopOnQuotaReach: true},
		{Level: model.LevelAPI, Name: "Res", RequestCount: 3, UnitTime: 2, TimeUnit: "day", StopOnQuotaReach: true},
	}})
	s, err := New(Config{State: st, Logger: zerolog.New(zerolog.NewTestWriter(t)), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	limit := func(name string, n uint32, unit rlsv3.RateLimitResponse_RateLimit_Unit, mult uint32) *rlsv3.RateLimitResponse_RateLimit {
		l := &rlsv3.RateLimitResponse_RateLimit{Name: name, RequestsPerUnit: n, Unit: unit}
		if mult > 1 {
			l.UnitMultiplier = wrapperspb.UInt32(mult)
		}
		return l
	}
	ok := func(l *rlsv3.RateLimitResponse_RateLimit, remaining uint32, reset time.Duration) *rlsv3.RateLimitResponse_DescriptorStatus {
		return &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK, CurrentLimit: l, LimitRemaining: remaining, DurationUntilReset: durationpb.New(reset)}
	}
	sub := desc(KeySubscription, "sub-1", KeyTier, "Gold")
	app := desc(KeyApplication, "app-1", KeyUser, "alice", KeyAppTier, "App")
	api := desc(KeyAPI, "api-1", KeyAPITier, "Api")
	res := desc(KeyResource, "GET /a", KeyResourceAPI, "api-1", KeyResourceTier, "Res")
	unlimited := desc(KeySubscription, "sub-1", KeyTier, "Unknown")
	subOK := ok(limit("Gold", 10, rlsv3.RateLimitResponse_RateLimit_MINUTE, 1), 9, 40*time.Second)
	appOK := ok(limit("App", 7, rlsv3.RateLimitResponse_RateLimit_MINUTE, 10), 6, 9*time.Minute+40*time.Second)
	apiOK := ok(limit("Api", 5, rlsv3.RateLimitResponse_RateLimit_HOUR, 1), 4, 59*time.Minute+40*time.Second)
	_, resEnd := model.WindowStart("day", 2, now)
	resOK := ok(limit("Res", 3, rlsv3.RateLimitResponse_RateLimit_DAY, 2), 2, resEnd.Sub(now))
	okStatus := &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK}

	var first *rlsv3.RateLimitResponse
	var firstWant *rlsv3.RateLimitResponse
	for name, tc := range map[string]struct {
		descs []*ratelimitv3.RateLimitDescriptor
		want  []*rlsv3.RateLimitResponse_DescriptorStatus
	}{
		"one":                    {[]*ratelimitv3.RateLimitDescriptor{sub}, []*rlsv3.RateLimitResponse_DescriptorStatus{subOK}},
		"two":                    {[]*ratelimitv3.RateLimitDescriptor{sub, app}, []*rlsv3.RateLimitResponse_DescriptorStatus{subOK, appOK}},
		"three":                  {[]*ratelimitv3.RateLimitDescriptor{api, sub, app}, []*rlsv3.RateLimitResponse_DescriptorStatus{apiOK, subOK, appOK}},
		"four":                   {[]*ratelimitv3.RateLimitDescriptor{api, res, sub, app}, []*rlsv3.RateLimitResponse_DescriptorStatus{apiOK, resOK, subOK, appOK}},
		"two with one uncounted": {[]*ratelimitv3.RateLimitDescriptor{unlimited, app}, []*rlsv3.RateLimitResponse_DescriptorStatus{okStatus, appOK}},
	} {
		t.Run(name, func(t *testing.T) {
			s.counters = newCounters() // every case starts from empty counters
			got := call(t, s, &rlsv3.RateLimitRequest{Domain: Domain, Descriptors: tc.descs})
			want := &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK, Statuses: tc.want}
			if d := cmp.Diff(want, got, protocmp.Transform()); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
			if first == nil {
				first, firstWant = got, proto.Clone(want).(*rlsv3.RateLimitResponse)
			}
		})
	}

	t.Run("burst refused", func(t *testing.T) {
		s.counters = newCounters()
		req := &rlsv3.RateLimitRequest{Domain: Domain, Descriptors: []*ratelimitv3.RateLimitDescriptor{desc(KeySubscription, "sub-b", KeyTier, "Burst"), app}}
		call(t, s, req)
		got := call(t, s, req)
		want := &rlsv3.RateLimitResponse{
			OverallCode: rlsv3.RateLimitResponse_OVER_LIMIT,
			Statuses: []*rlsv3.RateLimitResponse_DescriptorStatus{
				{Code: rlsv3.RateLimitResponse_OVER_LIMIT, CurrentLimit: limit("Burst", 1, rlsv3.RateLimitResponse_RateLimit_SECOND, 1), DurationUntilReset: durationpb.New(time.Second)},
				ok(limit("App", 7, rlsv3.RateLimitResponse_RateLimit_MINUTE, 10), 5, 9*time.Minute+40*time.Second),
			},
			ResponseHeadersToAdd: []*corev3.HeaderValue{{Key: "retry-after", Value: "1"}, {Key: "content-type", Value: "application/json"}},
			RawBody:              throttledBody(CodeBurst, now.Add(time.Second)),
		}
		if d := cmp.Diff(want, got, protocmp.Transform()); d != "" {
			t.Errorf("(-want +got):\n%s", d)
		}
	})

	if d := cmp.Diff(firstWant, first, protocmp.Transform()); d != "" {
		t.Errorf("a response changed after later calls (-want +got):\n%s", d)
	}
}

// unitOf answers what the units map does, for every unit and an unknown one.
func TestUnitOf(t *testing.T) {
	for _, u := range []string{"sec", "min", "hour", "day", "month", "year", "week", ""} {
		if got, want := unitOf(u), units[u]; got != want {
			t.Errorf("unitOf(%q) = %v, want %v", u, got, want)
		}
	}
}

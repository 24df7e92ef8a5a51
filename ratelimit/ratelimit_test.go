package ratelimit

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/gwstate"
	"github.com/apim-dev/apim/internal/model"
)

// 12:00:20 UTC: 40s left in the minute window.
var t0 = time.Date(2026, 5, 1, 12, 0, 20, 0, time.UTC)

func policies() []model.Policy {
	return []model.Policy{
		{Level: model.LevelSubscription, Name: "Three", RequestCount: 3, UnitTime: 1, TimeUnit: "min", StopOnQuotaReach: true, Generation: 1},
		{Level: model.LevelSubscription, Name: "Unlimited", RequestCount: 0, UnitTime: 1, TimeUnit: "min", Generation: 1},
		{Level: model.LevelSubscription, Name: "FivePer10Min", RequestCount: 5, UnitTime: 10, TimeUnit: "min", StopOnQuotaReach: true, Generation: 1},
		{Level: model.LevelSubscription, Name: "Billed", RequestCount: 1, UnitTime: 1, TimeUnit: "min", StopOnQuotaReach: false, Generation: 1},
		{Level: model.LevelApplication, Name: "AppOnly", RequestCount: 1, UnitTime: 1, TimeUnit: "min", StopOnQuotaReach: true, Generation: 1},
	}
}

func newServer(t testing.TB, now *time.Time) *Server {
	t.Helper()
	st := gwstate.NewStore()
	st.Replace(&model.GatewayState{Environment: model.DefaultEnvironment, Policies: policies()})
	s, err := New(Config{State: st, Logger: zerolog.New(zerolog.NewTestWriter(t)), Now: func() time.Time { return *now }})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func rlReq(sub, tier string) *rlsv3.RateLimitRequest {
	return &rlsv3.RateLimitRequest{Domain: Domain, Descriptors: []*ratelimitv3.RateLimitDescriptor{{
		Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: KeySubscription, Value: sub}, {Key: KeyTier, Value: tier}},
	}}}
}

func call(t testing.TB, s *Server, req *rlsv3.RateLimitRequest) *rlsv3.RateLimitResponse {
	t.Helper()
	resp, err := s.ShouldRateLimit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestLimitThreePerMinute(t *testing.T) {
	now := t0
	s := newServer(t, &now)
	limit := &rlsv3.RateLimitResponse_RateLimit{Name: "Three", RequestsPerUnit: 3, Unit: rlsv3.RateLimitResponse_RateLimit_MINUTE}
	for i := range uint32(3) {
		got := call(t, s, rlReq("sub-1", "Three"))
		want := &rlsv3.RateLimitResponse{
			OverallCode: rlsv3.RateLimitResponse_OK,
			Statuses: []*rlsv3.RateLimitResponse_DescriptorStatus{{
				Code: rlsv3.RateLimitResponse_OK, CurrentLimit: limit,
				LimitRemaining: 2 - i, DurationUntilReset: durationpb.New(40 * time.Second),
			}},
		}
		if d := cmp.Diff(want, got, protocmp.Transform()); d != "" {
			t.Fatalf("request %d (-want +got):\n%s", i+1, d)
		}
	}
	// Another subscription on the same tier has its own count.
	if got := call(t, s, rlReq("sub-2", "Three")); got.GetOverallCode() != rlsv3.RateLimitResponse_OK {
		t.Errorf("sub-2 = %v", got.GetOverallCode())
	}

	now = t0.Add(500 * time.Millisecond)
	got := call(t, s, rlReq("sub-1", "Three"))
	want := &rlsv3.RateLimitResponse{
		OverallCode: rlsv3.RateLimitResponse_OVER_LIMIT,
		Statuses: []*rlsv3.RateLimitResponse_DescriptorStatus{{
			Code: rlsv3.RateLimitResponse_OVER_LIMIT, CurrentLimit: limit,
			LimitRemaining: 0, DurationUntilReset: durationpb.New(39500 * time.Millisecond),
		}},
		ResponseHeadersToAdd: []*corev3.HeaderValue{
			{Key: "retry-after", Value: "40"},
			{Key: "content-type", Value: "application/json"},
		},
		RawBody: []byte(`{"code":"900804","message":"Message throttled out","description":"You have exceeded your quota .You can access API after 2026-May-01 12:01:00+0000 UTC"}`),
	}
	if d := cmp.Diff(want, got, protocmp.Transform()); d != "" {
		t.Fatalf("4th request (-want +got):\n%s", d)
	}
	var body map[string]string
	if err := json.Unmarshal(got.GetRawBody(), &body); err != nil || body["code"] != "900804" {
		t.Errorf("body %s: %v", got.GetRawBody(), err)
	}

	// Next window: counting starts again.
	now = time.Date(2026, 5, 1, 12, 1, 0, 0, time.UTC)
	got = call(t, s, rlReq("sub-1", "Three"))
	if got.GetOverallCode() != rlsv3.RateLimitResponse_OK || got.GetStatuses()[0].GetLimitRemaining() != 2 {
		t.Errorf("after rollover: %v", got)
	}
	if d := got.GetStatuses()[0].GetDurationUntilReset().AsDuration(); d != time.Minute {
		t.Errorf("duration until reset = %v, want 1m", d)
	}
}

func TestShouldRateLimitOK(t *testing.T) {
	ok := &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK}
	tests := map[string]*rlsv3.RateLimitRequest{
		"unlimited tier":           rlReq("sub-1", "Unlimited"),
		"unknown tier":             rlReq("sub-1", "Platinum"),
		"application-level policy": rlReq("sub-1", "AppOnly"),
		"other domain":             {Domain: "other", Descriptors: rlReq("sub-1", "Three").Descriptors},
		"no tier entry": {Domain: Domain, Descriptors: []*ratelimitv3.RateLimitDescriptor{{
			Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: KeySubscription, Value: "sub-1"}},
		}}},
	}
	for name, req := range tests {
		t.Run(name, func(t *testing.T) {
			now := t0
			s := newServer(t, &now)
			for range 10 {
				got := call(t, s, req)
				want := &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK, Statuses: []*rlsv3.RateLimitResponse_DescriptorStatus{ok}}
				if d := cmp.Diff(want, got, protocmp.Transform()); d != "" {
					t.Fatalf("(-want +got):\n%s", d)
				}
			}
		})
	}
	now := t0
	s := newServer(t, &now)
	if got := call(t, s, &rlsv3.RateLimitRequest{Domain: Domain}); got.GetOverallCode() != rlsv3.RateLimitResponse_OK {
		t.Errorf("no descriptors: %v", got)
	}
}

func TestHitsAddend(t *testing.T) {
	now := t0
	s := newServer(t, &now)
	req := rlReq("sub-1", "Three")
	req.HitsAddend = 2
	if got := call(t, s, req); got.GetStatuses()[0].GetLimitRemaining() != 1 {
		t.Fatalf("after 2 hits: %v", got)
	}
	// A descriptor's own hits_addend wins over the request's.
	req.Descriptors[0].HitsAddend = wrapperspb.UInt64(5)
	if got := call(t, s, req); got.GetOverallCode() != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("after 7 hits: %v", got)
	}
	// The refused request used no quota: one more hit still fits.
	req.Descriptors[0].HitsAddend = wrapperspb.UInt64(1)
	if got := call(t, s, req); got.GetOverallCode() != rlsv3.RateLimitResponse_OK || got.GetStatuses()[0].GetLimitRemaining() != 0 {
		t.Fatalf("after 3 hits: %v", got)
	}
	// Negative hits give quota back.
	req.Descriptors[0].IsNegativeHits = true
	req.Descriptors[0].HitsAddend = wrapperspb.UInt64(2)
	if got := call(t, s, req); got.GetOverallCode() != rlsv3.RateLimitResponse_OK || got.GetStatuses()[0].GetLimitRemaining() != 2 {
		t.Fatalf("after giving back 2: %v", got)
	}
	// An addend past int64's range counts as a very large one: it must not
	// wrap around into a negative one and give quota back.
	huge := rlReq("sub-2", "Three")
	huge.Descriptors[0].HitsAddend = wrapperspb.UInt64(math.MaxUint64)
	if got := call(t, s, huge); got.GetOverallCode() != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("after 2^64-1 hits: %v", got)
	}
	// Refused, it used no quota, and it gave none back either.
	huge.Descriptors[0].HitsAddend = nil
	if got := call(t, s, huge); got.GetOverallCode() != rlsv3.RateLimitResponse_OK || got.GetStatuses()[0].GetLimitRemaining() != 2 {
		t.Fatalf("one hit after a refused 2^64-1: %v", got)
	}
}

func TestMultiUnitWindowAndBilledPolicy(t *testing.T) {
	now := t0 // 12:00:20; 10-minute windows start at 12:00
	s := newServer(t, &now)
	got := call(t, s, rlReq("sub-1", "FivePer10Min"))
	st := got.GetStatuses()[0]
	want := &rlsv3.RateLimitResponse_RateLimit{Name: "FivePer10Min", RequestsPerUnit: 5, Unit: rlsv3.RateLimitResponse_RateLimit_MINUTE, UnitMultiplier: wrapperspb.UInt32(10)}
	if d := cmp.Diff(want, st.GetCurrentLimit(), protocmp.Transform()); d != "" {
		t.Errorf("limit (-want +got):\n%s", d)
	}
	if d := st.GetDurationUntilReset().AsDuration(); d != 9*time.Minute+40*time.Second {
		t.Errorf("until reset = %v", d)
	}
	// stopOnQuotaReach false: WSO2 lets the request through (billed), and
	// past the limit (1) the backend is told so, and the metric counts it.
	for i := range 3 {
		got := call(t, s, rlReq("sub-2", "Billed"))
		if got.GetOverallCode() != rlsv3.RateLimitResponse_OK {
			t.Fatalf("billed policy limited: %v", got)
		}
		var flag []string
		for _, h := range got.GetRequestHeadersToAdd() {
			flag = append(flag, h.GetKey()+": "+h.GetValue())
		}
		if want := []string{HeaderQuotaExceeded + ": subscription/Billed"}; i == 0 && len(flag) != 0 || i > 0 && !slices.Equal(flag, want) {
			t.Errorf("call %d: request headers %v", i+1, flag)
		}
	}
	if n := testutil.ToFloat64(s.overQuota.WithLabelValues("subscription")); n != 2 {
		t.Errorf("apim_ratelimit_over_quota_total{level=subscription} = %v, want 2", n)
	}
}

func TestPolicyChangeTakesEffectNextRequest(t *testing.T) {
	now := t0
	s := newServer(t, &now)
	for range 5 {
		call(t, s, rlReq("sub-1", "Unlimited"))
	}
	data, _ := json.Marshal(model.Policy{Level: model.LevelSubscription, Name: "Unlimited", RequestCount: 1, UnitTime: 1, TimeUnit: "min", StopOnQuotaReach: true})
	if err := s.state.Apply(events.Event{Kind: events.KindPolicy, Op: events.OpUpsert, ID: "subscription/Unlimited", Generation: 2, Data: data}); err != nil {
		t.Fatal(err)
	}
	call(t, s, rlReq("sub-1", "Unlimited"))
	if got := call(t, s, rlReq("sub-1", "Unlimited")); got.GetOverallCode() != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Errorf("after the policy became 1/min: %v", got.GetOverallCode())
	}
}

func TestOldWindowsExpire(t *testing.T) {
	now := t0
	s := newServer(t, &now)
	for i := range 1000 {
		call(t, s, rlReq(fmt.Sprintf("sub-%d", i), "Three"))
	}
	if n := s.counters.len(); n != 1000 {
		t.Fatalf("counters = %d", n)
	}
	now = t0.Add(2 * time.Minute)
	for i := range 1000 {
		call(t, s, rlReq(fmt.Sprintf("new-%d", i), "Three"))
	}
	if n := s.counters.len(); n < 1000 || n > 1100 {
		t.Errorf("counters after the old windows ended = %d, want about 1000 (shards sweep as they grow)", n)
	}
	s.counters.sweep(now.UnixNano())
	if n := s.counters.len(); n != 1000 {
		t.Errorf("counters after a full sweep = %d, want 1000", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Start(ctx); err != nil {
		t.Errorf("Start = %v", err)
	}
}

func TestContextDone(t *testing.T) {
	now := t0
	s := newServer(t, &now)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.ShouldRateLimit(ctx, rlReq("sub-1", "Three")); status.Code(err) != codes.Canceled {
		t.Errorf("err = %v, want Canceled", err)
	}
	if _, err := New(Config{}); err == nil {
		t.Error("New without state succeeded")
	}
}

func TestOverGRPC(t *testing.T) {
	now := t0
	s := newServer(t, &now)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	s.Register(g)
	go func() { _ = g.Serve(lis) }()
	defer g.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := rlsv3.NewRateLimitServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var last *rlsv3.RateLimitResponse
	for range 4 {
		if last, err = client.ShouldRateLimit(ctx, rlReq("sub-1", "Three")); err != nil {
			t.Fatal(err)
		}
	}
	if last.GetOverallCode() != rlsv3.RateLimitResponse_OVER_LIMIT || len(last.GetRawBody()) == 0 {
		t.Errorf("4th over gRPC = %v", last)
	}
}

func BenchmarkShouldRateLimit(b *testing.B) {
	now := t0
	st := gwstate.NewStore()
	st.Replace(&model.GatewayState{Policies: []model.Policy{
		{Level: model.LevelSubscription, Name: "Gold", RequestCount: 1 << 40, UnitTime: 1, TimeUnit: "day", StopOnQuotaReach: true},
	}})
	s, err := New(Config{State: st, Logger: zerolog.Nop(), Now: func() time.Time { return now }})
	if err != nil {
		b.Fatal(err)
	}
	const keys = 100_000
	reqs := make([]*rlsv3.RateLimitRequest, keys)
	for i := range reqs {
		reqs[i] = rlReq(fmt.Sprintf("4f9e2c1a-0000-4000-8000-%012d", i), "Gold")
		call(b, s, reqs[i])
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := s.ShouldRateLimit(ctx, reqs[i%keys]); err != nil {
			b.Fatal(err)
		}
	}
}

// TestRefusedRequestUsesNoQuota: a request refused at one level is taken off
// every counter it was added to, so a throttled subscriber cannot use up the
// quota of an application-level limit it shares with nobody else's requests
// being refused.
func TestRefusedRequestUsesNoQuota(t *testing.T) {
	now := t0
	s := newServer(t, &now)
	// AppOnly allows 1 a minute; the subscription "Billed" is irrelevant
	// here, "Three" is the one that refuses.
	both := func(sub string) *rlsv3.RateLimitRequest {
		req := rlReq(sub, "Three")
		req.Descriptors = append(req.Descriptors, desc(KeyApplication, "app-1", KeyAppTier, "AppOnly"))
		return req
	}
	// Exhaust the subscription on its own descriptor.
	for range 3 {
		call(t, s, rlReq("sub-1", "Three"))
	}
	// Refused by the subscription: the application's counter must not move.
	for range 5 {
		if got := call(t, s, both("sub-1")); got.GetOverallCode() != rlsv3.RateLimitResponse_OVER_LIMIT {
			t.Fatalf("exhausted subscription: %v", got)
		}
	}
	if got := call(t, s, both("sub-2")); got.GetOverallCode() != rlsv3.RateLimitResponse_OK {
		t.Fatalf("another subscription of the application was refused by quota the refused requests used: %v", got)
	}
}

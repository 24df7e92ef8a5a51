package ratelimit

import (
	"strings"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/rs/zerolog"

	"github.com/apim-dev/apim/internal/gwstate"
	"github.com/apim-dev/apim/internal/model"
)

func desc(kv ...string) *ratelimitv3.RateLimitDescriptor {
	d := &ratelimitv3.RateLimitDescriptor{}
	for i := 0; i < len(kv); i += 2 {
		d.Entries = append(d.Entries, &ratelimitv3.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]}) //nolint:gosec // G602: callers pass key/value pairs; an odd count should panic
	}
	return d
}

func TestLevelsAndCodes(t *testing.T) {
	now := time.Date(2026, 2, 27, 12, 0, 20, 0, time.UTC)
	st := gwstate.NewStore()
	st.Replace(&model.GatewayState{Policies: []model.Policy{
		{Level: model.LevelApplication, Name: "App2", RequestCount: 2, UnitTime: 1, TimeUnit: "min", StopOnQuotaReach: true},
		{Level: model.LevelAPI, Name: "Api2", RequestCount: 2, UnitTime: 1, TimeUnit: "hour", StopOnQuotaReach: true},
		{Level: model.LevelAPI, Name: "Res2", RequestCount: 2, UnitTime: 1, TimeUnit: "day", StopOnQuotaReach: true},
		{Level: model.LevelSubscription, Name: "Monthly", RequestCount: 2, UnitTime: 1, TimeUnit: "month", StopOnQuotaReach: true},
		{Level: model.LevelSubscription, Name: "Burst", RequestCount: 100, UnitTime: 1, TimeUnit: "min", RateLimitCount: 2, RateLimitTimeUnit: "sec", StopOnQuotaReach: true},
		{Level: model.LevelSubscription, Name: "BilledBurst", RequestCount: 1, UnitTime: 1, TimeUnit: "min", StopOnQuotaReach: false},
	}})
	s, err := New(Config{State: st, Logger: zerolog.New(zerolog.NewTestWriter(t)), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		d        *ratelimitv3.RateLimitDescriptor
		code     string
		retryMax time.Duration
	}{
		"application per user": {desc(KeyApplication, "app-1", KeyUser, "alice", KeyAppTier, "App2"), CodeApplication, 40 * time.Second},
		"api":                  {desc(KeyAPI, "api-1", KeyAPITier, "Api2"), CodeAPI, time.Hour},
		"resource":             {desc(KeyResource, "GET /a", KeyResourceAPI, "api-1", KeyResourceTier, "Res2"), CodeResource, 12 * time.Hour},
		"month":                {desc(KeySubscription, "sub-m", KeyTier, "Monthly"), CodeSubscription, 36 * time.Hour},
		"burst":                {desc(KeySubscription, "sub-b", KeyTier, "Burst"), CodeBurst, time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			req := &rlsv3.RateLimitRequest{Domain: Domain, Descriptors: []*ratelimitv3.RateLimitDescriptor{tc.d}}
			for i := range 2 {
				if r := call(t, s, req); r.GetOverallCode() != rlsv3.RateLimitResponse_OK {
					t.Fatalf("call %d = %v", i+1, r)
				}
			}
			r := call(t, s, req)
			if r.GetOverallCode() != rlsv3.RateLimitResponse_OVER_LIMIT || !strings.Contains(string(r.GetRawBody()), `"code":"`+tc.code+`"`) {
				t.Fatalf("3rd call = %v %s, want %s", r.GetOverallCode(), r.GetRawBody(), tc.code)
			}
			if d := r.GetStatuses()[0].GetDurationUntilReset().AsDuration(); d <= 0 || d > tc.retryMax {
				t.Errorf("reset in %s, want at most %s", d, tc.retryMax)
			}
		})
	}
	// Another user of the same application has its own count.
	other := &rlsv3.RateLimitRequest{Domain: Domain, Descriptors: []*ratelimitv3.RateLimitDescriptor{desc(KeyApplication, "app-1", KeyUser, "bob", KeyAppTier, "App2")}}
	if r := call(t, s, other); r.GetOverallCode() != rlsv3.RateLimitResponse_OK {
		t.Errorf("another user = %v", r.GetOverallCode())
	}
	// The first descriptor over its limit names the code.
	both := &rlsv3.RateLimitRequest{Domain: Domain, Descriptors: []*ratelimitv3.RateLimitDescriptor{
		desc(KeyAPI, "api-1", KeyAPITier, "Api2"), desc(KeyApplication, "app-1", KeyUser, "alice", KeyAppTier, "App2"),
	}}
	if r := call(t, s, both); !strings.Contains(string(r.GetRawBody()), CodeAPI) {
		t.Errorf("two over = %s, want %s", r.GetRawBody(), CodeAPI)
	}
	// stopOnQuotaReach=false never blocks.
	billed := &rlsv3.RateLimitRequest{Domain: Domain, Descriptors: []*ratelimitv3.RateLimitDescriptor{desc(KeySubscription, "sub-x", KeyTier, "BilledBurst")}}
	for range 5 {
		if r := call(t, s, billed); r.GetOverallCode() != rlsv3.RateLimitResponse_OK {
			t.Fatalf("billed policy blocked: %v", r)
		}
	}
	// Next second, the burst window is fresh again.
	now = now.Add(time.Second)
	if r := call(t, s, &rlsv3.RateLimitRequest{Domain: Domain, Descriptors: []*ratelimitv3.RateLimitDescriptor{desc(KeySubscription, "sub-b", KeyTier, "Burst")}}); r.GetOverallCode() != rlsv3.RateLimitResponse_OK {
		t.Errorf("burst after a second = %v", r.GetOverallCode())
	}
}

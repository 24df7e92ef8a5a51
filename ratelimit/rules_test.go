package ratelimit

import (
	"strconv"
	"strings"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/apim-dev/apim/internal/gwstate"
	"github.com/apim-dev/apim/internal/model"
)

// A condition group ("name/N") has its own limit and counter; custom rules
// count per rule and key and answer 900806; a bandwidth quota is only
// checked on the request path and counted from the [bandwidth] descriptor.
func TestGroupsCustomRulesAndBandwidth(t *testing.T) {
	now := time.Date(2026, 2, 27, 12, 0, 20, 0, time.UTC)
	st := gwstate.NewStore()
	st.Replace(&model.GatewayState{Policies: []model.Policy{
		{
			Level: model.LevelAPI, Name: "Cond", RequestCount: 100, UnitTime: 1, TimeUnit: "min", StopOnQuotaReach: true,
			ConditionGroups: []model.ConditionGroup{{Conditions: []model.Condition{{Type: model.CondHeader, Name: "x", Value: "y"}}, RequestCount: 1, UnitTime: 1, TimeUnit: "min"}},
		},
		{Level: model.LevelCustom, Name: "Rule", RequestCount: 2, UnitTime: 1, TimeUnit: "hour", StopOnQuotaReach: true, KeyTemplate: "$userId", Condition: "true"},
		{Level: model.LevelSubscription, Name: "1KB", QuotaType: model.QuotaBandwidth, DataAmount: 1, DataUnit: "KB", UnitTime: 1, TimeUnit: "min", StopOnQuotaReach: true},
	}})
	s, err := New(Config{State: st, Logger: zerolog.New(zerolog.NewTestWriter(t)), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	one := func(d *ratelimitv3.RateLimitDescriptor) *rlsv3.RateLimitRequest {
		return &rlsv3.RateLimitRequest{Domain: Domain, Descriptors: []*ratelimitv3.RateLimitDescriptor{d}}
	}
	want := func(what string, r *rlsv3.RateLimitResponse, code string) {
		t.Helper()
		got := ""
		if r.GetOverallCode() == rlsv3.RateLimitResponse_OVER_LIMIT {
			got = "over"
			if !strings.Contains(string(r.GetRawBody()), `"code":"`+code+`"`) {
				t.Errorf("%s: body %s, want code %s", what, r.GetRawBody(), code)
			}
		}
		if (code == "") != (got == "") {
			t.Errorf("%s = %v, want code %q", what, r.GetOverallCode(), code)
		}
	}

	group := one(desc(KeyAPI, "api-1", KeyAPITier, "Cond"+GroupSep+"1"))
	want("group call 1", call(t, s, group), "")
	want("group call 2", call(t, s, group), CodeAPI)
	want("default limit, own counter", call(t, s, one(desc(KeyAPI, "api-1", KeyAPITier, "Cond"))), "")
	want("a group the policy does not have: its default", call(t, s, one(desc(KeyAPI, "api-1", KeyAPITier, "Cond"+GroupSep+"7"))), "")
	want("a malformed group", call(t, s, one(desc(KeyAPI, "api-1", KeyAPITier, "Cond"+GroupSep+"x"))), "")

	rules := func(keys ...string) *rlsv3.RateLimitRequest {
		var recs []string
		for _, k := range keys {
			recs = append(recs, "Rule"+CustomKeySep+k)
		}
		return one(desc(KeyCustom, strings.Join(recs, CustomRuleSep)))
	}
	want("custom alice 1", call(t, s, rules("alice")), "")
	want("custom alice 2", call(t, s, rules("alice")), "")
	want("custom alice 3", call(t, s, rules("alice")), CodeCustom)
	want("custom bob, own key", call(t, s, rules("bob")), "")
	want("custom bob and alice: alice's is over", call(t, s, rules("bob", "alice")), CodeCustom)
	want("custom bob 2: the refused request was refunded", call(t, s, rules("bob")), "")
	want("unknown rule", call(t, s, one(desc(KeyCustom, "Nope"+CustomKeySep+"alice"))), "")

	check := one(desc(KeySubscription, "sub-1", KeyTier, "1KB"))
	bytes := func(n uint64) {
		d := desc(KeyBandwidth, strings.Join([]string{BandwidthSubscription, "sub-1", "", "1KB"}, CustomKeySep))
		d.HitsAddend = wrapperspb.UInt64(n)
		want("counting bytes", call(t, s, one(d)), "")
	}
	for range 3 { // a check alone spends nothing
		want("bandwidth check", call(t, s, check), "")
	}
	bytes(1000)
	want("1000 of 1024 bytes", call(t, s, check), "")
	bytes(24)
	want("1024 of 1024 bytes", call(t, s, check), CodeSubscription)
	want("another subscription", call(t, s, one(desc(KeySubscription, "sub-2", KeyTier, "1KB"))), "")
}

// A request that matches more custom rules than the tally's array holds
// is still refunded on every counter when one of them refuses it.
func TestRefundBeyondEightCounters(t *testing.T) {
	now := time.Date(2026, 2, 27, 12, 0, 20, 0, time.UTC)
	var pols []model.Policy
	var recs []string
	for i := range 10 {
		name := "R" + strconv.Itoa(i)
		limit := int64(100)
		if i == 9 {
			limit = 1 // the last rule refuses the second request
		}
		pols = append(pols, model.Policy{Level: model.LevelCustom, Name: name, RequestCount: limit, UnitTime: 1, TimeUnit: "hour", StopOnQuotaReach: true, KeyTemplate: "$apiContext", Condition: "true"})
		recs = append(recs, name+CustomKeySep+"/pets/1.0.0")
	}
	st := gwstate.NewStore()
	st.Replace(&model.GatewayState{Policies: pols})
	s, err := New(Config{State: st, Logger: zerolog.New(zerolog.NewTestWriter(t)), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	req := &rlsv3.RateLimitRequest{Domain: Domain, Descriptors: []*ratelimitv3.RateLimitDescriptor{desc(KeyCustom, strings.Join(recs, CustomRuleSep))}}
	if r := call(t, s, req); r.GetOverallCode() != rlsv3.RateLimitResponse_OK {
		t.Fatalf("first request = %v", r.GetOverallCode())
	}
	for range 3 {
		if r := call(t, s, req); r.GetOverallCode() != rlsv3.RateLimitResponse_OVER_LIMIT {
			t.Fatalf("refused request = %v", r.GetOverallCode())
		}
	}
	start, end := model.WindowStart("hour", 1, now)
	for i := range 9 {
		if n := s.counters.add(kindCustom, "R"+strconv.Itoa(i), "/pets/1.0.0", start.UnixNano(), end.UnixNano(), 0, now.UnixNano()); n != 1 {
			t.Errorf("R%d counts %d, want 1: a refused request was not taken back", i, n)
		}
	}
}

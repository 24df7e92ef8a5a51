package model

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestWindowStart(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for name, tc := range map[string]struct {
		unit       string
		n          int64
		now        string
		start, end string
	}{
		"minute":             {UnitMinute, 1, "2026-05-01T12:00:20Z", "2026-05-01T12:00:00Z", "2026-05-01T12:01:00Z"},
		"ten minutes":        {UnitMinute, 10, "2026-05-01T12:17:20Z", "2026-05-01T12:10:00Z", "2026-05-01T12:20:00Z"},
		"second":             {UnitSecond, 1, "2026-05-01T12:00:20.5Z", "2026-05-01T12:00:20Z", "2026-05-01T12:00:21Z"},
		"day":                {UnitDay, 1, "2026-05-01T23:59:59Z", "2026-05-01T00:00:00Z", "2026-05-02T00:00:00Z"},
		"month":              {UnitMonth, 1, "2026-02-28T23:00:00Z", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"},
		"month in UTC":       {UnitMonth, 1, "2026-03-01T01:00:00+02:00", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"},
		"three months":       {UnitMonth, 3, "2026-05-15T00:00:00Z", "2026-04-01T00:00:00Z", "2026-07-01T00:00:00Z"},
		"year":               {UnitYear, 1, "2026-12-31T23:59:59Z", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"},
		"two years":          {UnitYear, 2, "2027-06-01T00:00:00Z", "2026-01-01T00:00:00Z", "2028-01-01T00:00:00Z"},
		"month at its start": {UnitMonth, 1, "2026-12-01T00:00:00Z", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"},
	} {
		t.Run(name, func(t *testing.T) {
			s, e := WindowStart(tc.unit, tc.n, at(tc.now))
			if !s.Equal(at(tc.start)) || !e.Equal(at(tc.end)) {
				t.Errorf("WindowStart = %v .. %v, want %s .. %s", s.UTC(), e.UTC(), tc.start, tc.end)
			}
		})
	}
	// A window stored before the bound counts as the longest one allowed.
	if s, e := WindowStart(UnitYear, 100_000, at("2026-12-05T00:00:00Z")); !s.Equal(at("1970-01-01T00:00:00Z")) || !e.Equal(at("2070-01-01T00:00:00Z")) {
		t.Errorf("WindowStart(year, 100000) = %v .. %v, want the century from 1970", s, e)
	}
	if s, _ := WindowStart("week", 1, time.Now()); !s.IsZero() {
		t.Error("unknown unit must give zero")
	}
}

func TestPolicyValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		p    Policy
		want []string // substrings; none means valid
	}{
		"burst":              {p: Policy{Level: LevelSubscription, Name: "G", RequestCount: 10, UnitTime: 1, TimeUnit: UnitMonth, RateLimitCount: 5, RateLimitTimeUnit: UnitSecond}},
		"bad burst":          {p: Policy{Level: LevelSubscription, Name: "G", RequestCount: 10, UnitTime: 1, TimeUnit: "min", RateLimitCount: 5, RateLimitTimeUnit: "hour"}, want: []string{"rateLimitTimeUnit has an unknown value"}},
		"app burst":          {p: Policy{Level: LevelApplication, Name: "A", RequestCount: 10, UnitTime: 1, TimeUnit: "min", RateLimitCount: 5, RateLimitTimeUnit: "sec"}, want: []string{"rateLimitCount is invalid"}},
		"bandwidth":          {p: Policy{Level: LevelSubscription, Name: "B", QuotaType: QuotaBandwidth, DataAmount: 10, DataUnit: "MB", UnitTime: 1, TimeUnit: UnitYear}},
		"bad unit":           {p: Policy{Level: LevelSubscription, Name: "B", QuotaType: QuotaBandwidth, DataAmount: 10, DataUnit: "GB", UnitTime: 1, TimeUnit: "min"}, want: []string{"defaultLimit.bandwidth.dataUnit"}},
		"custom":             {p: Policy{Level: LevelCustom, Name: "C", RequestCount: 5, UnitTime: 1, TimeUnit: "min", KeyTemplate: "$userId:$apiContext", Condition: `user == "admin" && api_context.startsWith("/pets")`}},
		"custom bad CEL":     {p: Policy{Level: LevelCustom, Name: "C", RequestCount: 5, UnitTime: 1, TimeUnit: "min", KeyTemplate: "$userId", Condition: `user ==`}, want: []string{"siddhiQuery is invalid: CEL:"}},
		"custom not bool":    {p: Policy{Level: LevelCustom, Name: "C", RequestCount: 5, UnitTime: 1, TimeUnit: "min", KeyTemplate: "$userId", Condition: `user`}, want: []string{"siddhiQuery is invalid: CEL: the condition is string, want bool"}},
		"custom unknown var": {p: Policy{Level: LevelCustom, Name: "C", RequestCount: 5, UnitTime: 1, TimeUnit: "min", KeyTemplate: "$user", Condition: `nope == 1`}, want: []string{"keyTemplate has an unknown value", "undeclared reference to 'nope'"}},
		"advanced": {p: Policy{Level: LevelAPI, Name: "A", RequestCount: 5, UnitTime: 1, TimeUnit: "min", ConditionGroups: []ConditionGroup{{
			RequestCount: 1, UnitTime: 1, TimeUnit: "min",
			Conditions: []Condition{{Type: CondHeader, Name: "x-a", Value: "b"}, {Type: CondJWTClaims, Name: "sub", Value: "^adm.*"}, {Type: CondIP, IPType: "IPRANGE", StartIP: "10.0.0.1", EndIP: "10.0.0.9", Invert: true}},
		}}}},
		"advanced bad": {p: Policy{Level: LevelAPI, Name: "A", RequestCount: 5, UnitTime: 1, TimeUnit: "min", ConditionGroups: []ConditionGroup{{
			UnitTime: 1, TimeUnit: "min",
			Conditions: []Condition{{Type: CondJWTClaims, Name: "sub", Value: "("}, {Type: CondIP, IPType: "IPRANGE", StartIP: "10.0.0.9", EndIP: "10.0.0.1"}, {Type: "X"}},
		}}}, want: []string{"conditionalGroups[0].conditions[0].jwtClaimsCondition.attribute", "conditionalGroups[0].conditions[1].ipCondition.startingIP", "conditionalGroups[0].conditions[2].type"}},
		"a century of years":    {p: Policy{Level: LevelApplication, Name: "Y", RequestCount: 5, UnitTime: 100, TimeUnit: UnitYear}},
		"100,000 years":         {p: Policy{Level: LevelApplication, Name: "Y", RequestCount: 5, UnitTime: 100_000, TimeUnit: UnitYear}, want: []string{"defaultLimit.requestCount.unitTime is invalid: must be at most 100 for timeUnit year"}},
		"seconds past int64":    {p: Policy{Level: LevelApplication, Name: "S", RequestCount: 5, UnitTime: 1 << 62, TimeUnit: UnitSecond}, want: []string{"defaultLimit.requestCount.unitTime is invalid: must be at most 3162240000"}},
		"bandwidth of 9k years": {p: Policy{Level: LevelSubscription, Name: "B", QuotaType: QuotaBandwidth, DataAmount: 1, DataUnit: "MB", UnitTime: 9000, TimeUnit: UnitYear}, want: []string{"defaultLimit.bandwidth.unitTime is invalid"}},
		"group of 10k years": {p: Policy{Level: LevelAPI, Name: "A", RequestCount: 5, UnitTime: 1, TimeUnit: "min", ConditionGroups: []ConditionGroup{{
			RequestCount: 1, UnitTime: 10_000, TimeUnit: UnitYear, Conditions: []Condition{{Type: CondHeader, Name: "x-a", Value: "b"}},
		}}}, want: []string{"conditionalGroups[0].limit.requestCount.unitTime is invalid: must be at most 100"}},
		"groups on subscription": {p: Policy{Level: LevelSubscription, Name: "S", RequestCount: 5, UnitTime: 1, TimeUnit: "min", ConditionGroups: []ConditionGroup{{}}}, want: []string{"conditionalGroups is invalid"}},
	} {
		t.Run(name, func(t *testing.T) {
			err := tc.p.Validate()
			if len(tc.want) == 0 && err != nil {
				t.Fatalf("Validate() = %v", err)
			}
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v, want %q", err, w)
				}
			}
		})
	}
}

func TestDenyPolicy(t *testing.T) {
	for name, tc := range map[string]struct {
		d    DenyPolicy
		want string
	}{
		"api":        {DenyPolicy{ConditionType: DenyAPI, Value: "/pets/1.0.0"}, ""},
		"api bad":    {DenyPolicy{ConditionType: DenyAPI, Value: "pets"}, "conditionValue is invalid"},
		"app":        {DenyPolicy{ConditionType: DenyApplication, Value: "bob:app"}, ""},
		"user empty": {DenyPolicy{ConditionType: DenyUser}, "conditionValue is required"},
		"ip":         {DenyPolicy{ConditionType: DenyIP, Value: "10.1.1.1", Invert: true}, ""},
		"ip bad":     {DenyPolicy{ConditionType: DenyIP, Value: "10.1.1"}, "conditionValue.fixedIp is invalid"},
		"range bad":  {DenyPolicy{ConditionType: DenyIPRange, StartIP: "::1", EndIP: "10.0.0.1"}, "conditionValue.startingIp is invalid"},
		"type":       {DenyPolicy{ConditionType: "HOST"}, "conditionType has an unknown value"},
		"invert":     {DenyPolicy{ConditionType: DenyUser, Value: "u", Invert: true}, "conditionValue.invert is invalid"},
	} {
		t.Run(name, func(t *testing.T) {
			err := tc.d.Validate()
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
	ip := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	r := DenyPolicy{ConditionType: DenyIPRange, StartIP: "10.0.0.1", EndIP: "10.0.0.9"}
	if !r.MatchesIP(ip("10.0.0.5")) || r.MatchesIP(ip("10.0.0.10")) || !r.MatchesIP(ip("::ffff:10.0.0.1")) {
		t.Error("range match wrong")
	}
	r.Invert = true
	if r.MatchesIP(ip("10.0.0.5")) || !r.MatchesIP(ip("10.0.1.5")) {
		t.Error("inverted range match wrong")
	}
	one := DenyPolicy{ConditionType: DenyIP, Value: "127.0.0.1"}
	if !one.MatchesIP(ip("127.0.0.1")) || one.MatchesIP(ip("127.0.0.2")) {
		t.Error("ip match wrong")
	}
}

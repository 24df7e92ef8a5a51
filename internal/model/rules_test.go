package model

import (
	"net/netip"
	"testing"
)

func TestRulesGroup(t *testing.T) {
	p := Policy{Level: LevelAPI, Name: "A", RequestCount: 100, UnitTime: 1, TimeUnit: UnitMinute, ConditionGroups: []ConditionGroup{
		{Conditions: []Condition{{Type: CondHeader, Name: "X-Client", Value: "^batch"}}, RequestCount: 1, UnitTime: 1, TimeUnit: UnitMinute},
		{Conditions: []Condition{
			{Type: CondJWTClaims, Name: "groups", Value: "admins"},
			{Type: CondIP, IPType: "IPRANGE", StartIP: "10.0.0.0", EndIP: "10.0.0.255", Invert: true},
		}, RequestCount: 2, UnitTime: 1, TimeUnit: UnitHour},
		{Conditions: []Condition{{Type: CondQuery, Name: "mode", Value: "^bulk$"}}, RequestCount: 3, UnitTime: 1, TimeUnit: UnitDay},
	}}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	r, err := p.Compile()
	if err != nil {
		t.Fatal(err)
	}
	claims := func(m map[string]any) func() map[string]any { return func() map[string]any { return m } }
	query := func(m map[string][]string) func() map[string][]string { return func() map[string][]string { return m } }
	for name, tc := range map[string]struct {
		req  Request
		want int
	}{
		"header":                      {Request{Headers: map[string]string{"x-client": "batch-1"}}, 1},
		"header not matching":         {Request{Headers: map[string]string{"x-client": "web"}}, 0},
		"claim, outside the range":    {Request{Claims: claims(map[string]any{"groups": []any{"users", "admins"}}), ClientIP: netip.MustParseAddr("192.168.1.1")}, 2},
		"claim, inside the range":     {Request{Claims: claims(map[string]any{"groups": "admins"}), ClientIP: netip.MustParseAddr("10.0.0.7")}, 0},
		"claim, IPv4-mapped in range": {Request{Claims: claims(map[string]any{"groups": "admins"}), ClientIP: netip.MustParseAddr("::ffff:10.0.0.7")}, 0},
		"no claims":                   {Request{ClientIP: netip.MustParseAddr("192.168.1.1")}, 0},
		"query":                       {Request{Query: query(map[string][]string{"mode": {"x", "bulk"}})}, 3},
		"first group wins":            {Request{Headers: map[string]string{"x-client": "batch"}, Query: query(map[string][]string{"mode": {"bulk"}})}, 1},
		"nothing":                     {Request{}, 0},
	} {
		if got := r.Group(&tc.req); got != tc.want {
			t.Errorf("%s: group %d, want %d", name, got, tc.want)
		}
	}
	if c, u, tu := p.Limit(2); c != 2 || u != 1 || tu != UnitHour {
		t.Errorf("Limit(2) = %d %d %s", c, u, tu)
	}
	if c, _, tu := p.Limit(0); c != 100 || tu != UnitMinute {
		t.Errorf("Limit(0) = %d %s", c, tu)
	}
}

func TestRulesCustom(t *testing.T) {
	p := Policy{
		Level: LevelCustom, Name: "C", RequestCount: 5, UnitTime: 1, TimeUnit: UnitMinute,
		KeyTemplate: "$userId:$apiContext:$clientIp", Condition: `user == "alice" && headers["x-plan"] == "free" && claims.tier == "t1"`,
	}
	r, err := p.Compile()
	if err != nil {
		t.Fatal(err)
	}
	req := &Request{
		User: "alice", APIContext: "/pets/1.0.0", ClientIP: netip.MustParseAddr("::ffff:127.0.0.1"),
		Headers: map[string]string{"x-plan": "free"}, Claims: func() map[string]any { return map[string]any{"tier": "t1"} },
	}
	if !r.Match(req) {
		t.Error("the rule does not match")
	}
	if got := r.Key(req); got != "alice:/pets/1.0.0:127.0.0.1" {
		t.Errorf("key %q", got)
	}
	// Another request, without claims: claims.tier fails to evaluate, so
	// no match and no error.
	noClaims := &Request{User: req.User, APIContext: req.APIContext, ClientIP: req.ClientIP, Headers: req.Headers}
	if r.Match(noClaims) {
		t.Error("matched without the claim")
	}
}

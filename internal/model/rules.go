package model

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"github.com/google/cel-go/cel"
)

// Request is what a throttling condition or custom rule reads of a request.
// Query and Claims are called only when a condition needs them, since both
// decode on first use.
type Request struct {
	Headers    map[string]string // lower-case names, as Envoy gives them
	Query      func() map[string][]string
	Claims     func() map[string]any
	ClientIP   netip.Addr
	User       string
	APIContext string // with the version, as the gateway path starts: /pets/1.0.0
	APIVersion string
	Resource   string // VERB:/template
	AppID      string

	vars map[string]any // the CEL variables, built on the first Match
}

// Rules is the compiled, request-time form of a policy's condition groups
// or custom rule, built once when the policy reaches a gateway.
type Rules struct {
	groups  []compiledGroup
	program cel.Program // custom rules
	key     []string    // custom rules' key template, split on ':'
}

type compiledGroup struct {
	conds []compiledCond
}

type compiledCond struct {
	typ    string
	invert bool
	name   string
	re     *regexp.Regexp
	ips    netip.Prefix // IPSPECIFIC as a one-address prefix
	lo, hi netip.Addr   // IPRANGE
}

// Compile compiles the policy's condition groups (advanced policies) or CEL
// condition (custom rules). Header, query-parameter and claim values are
// regular expressions matched anywhere in the value, as WSO2's condition
// evaluator does. A policy with neither gives nil.
func (p *Policy) Compile() (*Rules, error) {
	if p.Level == LevelCustom {
		prg, err := CompileCondition(p.Condition)
		if err != nil {
			return nil, fmt.Errorf("custom rule %s: %w", p.Name, err)
		}
		return &Rules{program: prg, key: strings.Split(p.KeyTemplate, ":")}, nil
	}
	if len(p.ConditionGroups) == 0 {
		return nil, nil
	}
	r := &Rules{groups: make([]compiledGroup, len(p.ConditionGroups))}
	for gi, g := range p.ConditionGroups {
		for ci, c := range g.Conditions {
			cc := compiledCond{typ: c.Type, invert: c.Invert, name: c.Name}
			var err error
			switch c.Type {
			case CondHeader:
				cc.name = strings.ToLower(c.Name)
				cc.re, err = regexp.Compile(c.Value)
			case CondQuery, CondJWTClaims:
				cc.re, err = regexp.Compile(c.Value)
			case CondIP:
				if c.IPType == "IPRANGE" {
					if cc.lo, err = netip.ParseAddr(c.StartIP); err == nil {
						cc.hi, err = netip.ParseAddr(c.EndIP)
					}
				} else {
					var a netip.Addr
					if a, err = netip.ParseAddr(c.SpecificIP); err == nil {
						cc.ips = netip.PrefixFrom(a, a.BitLen())
					}
				}
			default:
				err = fmt.Errorf("%w: condition type %q", ErrUnknownValue, c.Type)
			}
			if err != nil {
				return nil, fmt.Errorf("policy %s: conditionalGroups[%d].conditions[%d]: %w", p.Name, gi, ci, err)
			}
			r.groups[gi].conds = append(r.groups[gi].conds, cc)
		}
	}
	return r, nil
}

// Group returns the 1-based index of the first condition group that r
// matches, or 0 when none does (the policy's default limit applies). A group
// matches when each of its conditions does; an inverted condition matches
// when its test fails.
func (r *Rules) Group(req *Request) int {
	if r == nil {
		return 0
	}
	for i := range r.groups {
		if r.groups[i].matches(req) {
			return i + 1
		}
	}
	return 0
}

func (g *compiledGroup) matches(r *Request) bool {
	for i := range g.conds {
		if g.conds[i].test(r) == g.conds[i].invert {
			return false
		}
	}
	return true
}

func (c *compiledCond) test(r *Request) bool {
	switch c.typ {
	case CondHeader:
		v, ok := r.Headers[c.name]
		return ok && c.re.MatchString(v)
	case CondQuery:
		if r.Query == nil {
			return false
		}
		for _, v := range r.Query()[c.name] {
			if c.re.MatchString(v) {
				return true
			}
		}
		return false
	case CondJWTClaims:
		if r.Claims == nil {
			return false
		}
		v, ok := r.Claims()[c.name]
		if !ok {
			return false
		}
		s, isString := v.(string)
		if !isString {
			s = fmt.Sprint(v)
		}
		return c.re.MatchString(s)
	case CondIP:
		if !r.ClientIP.IsValid() {
			return false
		}
		ip := r.ClientIP.Unmap()
		if c.ips.IsValid() {
			return c.ips.Contains(ip)
		}
		return c.lo.BitLen() == ip.BitLen() && !ip.Less(c.lo) && !c.hi.Less(ip)
	}
	return false
}

// Limit returns the request count and window of group (1-based) of the
// policy, or its default limit for group 0 or a group it does not have.
func (p *Policy) Limit(group int) (count, unitTime int64, timeUnit string) {
	if group > 0 && group <= len(p.ConditionGroups) {
		g := &p.ConditionGroups[group-1]
		return g.RequestCount, g.UnitTime, g.TimeUnit
	}
	return p.RequestCount, p.UnitTime, p.TimeUnit
}

// Match evaluates a custom rule's condition on r. It reports false for a
// policy that is not a custom rule, and for a condition that fails to
// evaluate (a claim it reads is missing, say): a rule limits only the
// requests it clearly matches.
func (r *Rules) Match(req *Request) bool {
	if r == nil || r.program == nil {
		return false
	}
	out, _, err := r.program.Eval(req.celVars())
	if err != nil {
		return false
	}
	b, ok := out.Value().(bool)
	return ok && b
}

// celVars are the variables a custom rule's condition reads, built once
// per request however many rules it is matched against.
func (req *Request) celVars() map[string]any {
	if req.vars != nil {
		return req.vars
	}
	var claims map[string]any
	if req.Claims != nil {
		claims = req.Claims()
	}
	if claims == nil {
		claims = map[string]any{}
	}
	headers := req.Headers
	if headers == nil {
		headers = map[string]string{}
	}
	client := ""
	if req.ClientIP.IsValid() {
		client = req.ClientIP.Unmap().String()
	}
	req.vars = map[string]any{
		"user": req.User, "api_context": req.APIContext, "api_version": req.APIVersion,
		"resource": req.Resource, "application_id": req.AppID, "client_ip": client,
		"headers": headers, "claims": claims,
	}
	return req.vars
}

// Key expands a custom rule's key template for r: each of WSO2's variables
// replaced by the request's value, joined by ':'. Tenants are always
// carbon.super, the one tenant apim has.
func (r *Rules) Key(req *Request) string {
	var b strings.Builder
	for i, v := range r.key {
		if i > 0 {
			b.WriteByte(':')
		}
		switch v {
		case "$userId":
			b.WriteString(req.User)
		case "$apiContext":
			b.WriteString(req.APIContext)
		case "$apiVersion":
			b.WriteString(req.APIVersion)
		case "$resourceKey":
			b.WriteString(req.Resource)
		case "$appId":
			b.WriteString(req.AppID)
		case "$appTenant", "$apiTenant":
			b.WriteString("carbon.super")
		case "$clientIp":
			if req.ClientIP.IsValid() {
				b.WriteString(req.ClientIP.Unmap().String())
			}
		}
	}
	return b.String()
}

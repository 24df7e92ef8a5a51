package authz

import (
	"encoding/json"
	"maps"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/apim-dev/apim/internal/gwstate"
	"github.com/apim-dev/apim/internal/model"
	"github.com/apim-dev/apim/ratelimit"
)

// MetaCustomRules carries the custom rules a request matched, for the
// route's [custom] descriptor: each rule as name and key joined by
// ratelimit.CustomKeySep, the rules joined by ratelimit.CustomRuleSep.
// Absent when none matched, so the descriptor is not sent.
const MetaCustomRules = "custom_rules"

// hasRules reports whether the request's limits depend on more than who
// calls what: a condition group of its API or resource policy, or a custom
// rule. Without any, the memoised response stands as it is.
func hasRules(idx *gwstate.Index, t tiers) bool {
	return (t.api != nil && t.api.Rules != nil) || (t.res != nil && t.res.Rules != nil) || len(idx.CustomRules()) > 0
}

// withRules adds to resp the metadata of the condition groups and custom
// rules the request matches. resp is shared (memoised), so a response with
// more metadata is a shallow copy of it.
func withRules(resp *authv3.CheckResponse, idx *gwstate.Index, attrs *authv3.AttributeContext, ext map[string]string, t tiers, v *verified, app *model.Application) *authv3.CheckResponse {
	req := ruleRequest(attrs, ext, v, app)
	extra := map[string]*structpb.Value{}
	if t.api != nil {
		if g := t.api.Rules.Group(req); g > 0 {
			extra[MetaAPITier] = structpb.NewStringValue(t.api.Name + ratelimit.GroupSep + strconv.Itoa(g))
		}
	}
	if t.res != nil {
		if g := t.res.Rules.Group(req); g > 0 {
			extra[MetaResourceTier] = structpb.NewStringValue(t.res.Name + ratelimit.GroupSep + strconv.Itoa(g))
		}
	}
	var custom strings.Builder
	for _, p := range idx.CustomRules() {
		if !p.Rules.Match(req) {
			continue
		}
		if custom.Len() > 0 {
			custom.WriteString(ratelimit.CustomRuleSep)
		}
		custom.WriteString(p.Name)
		custom.WriteString(ratelimit.CustomKeySep)
		custom.WriteString(p.Rules.Key(req))
	}
	if custom.Len() > 0 {
		extra[MetaCustomRules] = structpb.NewStringValue(custom.String())
	}
	if len(extra) == 0 {
		return resp
	}
	fields := make(map[string]*structpb.Value, len(resp.GetDynamicMetadata().GetFields())+len(extra))
	maps.Copy(fields, resp.GetDynamicMetadata().GetFields())
	maps.Copy(fields, extra)
	return &authv3.CheckResponse{Status: resp.GetStatus(), HttpResponse: resp.HttpResponse, DynamicMetadata: &structpb.Struct{Fields: fields}}
}

// ruleRequest is what conditions and custom rules read of a request. The
// query string and the token's claims are decoded only if a condition asks.
func ruleRequest(attrs *authv3.AttributeContext, ext map[string]string, v *verified, app *model.Application) *model.Request {
	h := attrs.GetRequest().GetHttp()
	r := &model.Request{
		Headers:    headersOf(h),
		APIContext: strings.TrimSuffix(ext[ExtAPIContext], "/") + "/" + ext[ExtAPIVersion],
		APIVersion: ext[ExtAPIVersion],
		Resource:   ext[ExtResource],
	}
	r.ClientIP, _ = netip.ParseAddr(attrs.GetSource().GetAddress().GetSocketAddress().GetAddress())
	path := h.GetPath()
	r.Query = sync.OnceValue(func() map[string][]string {
		_, q, _ := strings.Cut(path, "?")
		vals, _ := url.ParseQuery(q) // keeps the pairs that parse
		return vals
	})
	if v != nil {
		r.User = v.subject
		r.Claims = v.claimMap
	}
	if app != nil {
		r.AppID = app.ID
	}
	return r
}

// claimMap decodes the token's claims once, for conditions on claims.
func (v *verified) claimMap() map[string]any {
	if m := v.claims.Load(); m != nil {
		return *m
	}
	m := map[string]any{}
	if len(v.payload) > 0 {
		_ = json.Unmarshal(v.payload, &m) // the payload parsed when the token verified
	}
	v.claims.Store(&m)
	return m
}

// bandwidth lists the counters of the levels whose quota is bandwidth, as
// the rate-limit service's [bandwidth] descriptor reads them: records of
// kind, the counter's two keys and the policy, the same keys the level's
// request-path descriptor counts under. "" when no level's is.
func (t tiers) bandwidth(sub *model.Subscription, app *model.Application, user, apiID string) string {
	var b strings.Builder
	add := func(kind, k1, k2, policy string) {
		if b.Len() > 0 {
			b.WriteString(ratelimit.CustomRuleSep)
		}
		for i, f := range [...]string{kind, k1, k2, policy} {
			if i > 0 {
				b.WriteString(ratelimit.CustomKeySep)
			}
			b.WriteString(f)
		}
	}
	if t.subBytes && sub != nil {
		add(ratelimit.BandwidthSubscription, sub.ID, "", sub.ThrottlingPolicy)
	}
	if t.app != nil && t.app.QuotaType == model.QuotaBandwidth && app != nil {
		add(ratelimit.BandwidthApplication, app.ID, user, t.app.Name)
	}
	if t.api != nil && t.api.QuotaType == model.QuotaBandwidth {
		add(ratelimit.BandwidthAPI, apiID, "", t.api.Name)
	}
	if t.res != nil && t.res.QuotaType == model.QuotaBandwidth {
		add(ratelimit.BandwidthResource, t.resource, apiID, t.res.Name)
	}
	return b.String()
}

package portal

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/apim-dev/apim/internal/model"
)

// policyPaths are the admin API's path segments per policy level.
var policyPaths = map[string]string{
	model.LevelSubscription: "subscription",
	model.LevelApplication:  "application",
	model.LevelAPI:          "advanced",
	model.LevelCustom:       "custom",
}

var policyTypes = map[string]string{
	model.LevelSubscription: "SubscriptionThrottlePolicy",
	model.LevelApplication:  "ApplicationThrottlePolicy",
	model.LevelAPI:          "AdvancedThrottlePolicy",
	model.LevelCustom:       "CustomRule",
}

// policyDTO is the union of WSO2's SubscriptionThrottlePolicy,
// ApplicationThrottlePolicy, AdvancedThrottlePolicy and CustomRule: the
// fields this server keeps. A custom rule's siddhiQuery holds a CEL
// condition, and its limit is defaultLimit (WSO2 writes it into the Siddhi
// query).
type policyDTO struct {
	PolicyID          string                `json:"policyId,omitempty"`
	PolicyName        string                `json:"policyName"`
	DisplayName       string                `json:"displayName,omitempty"`
	Description       string                `json:"description"`
	IsDeployed        bool                  `json:"isDeployed"`
	Type              string                `json:"type,omitempty"`
	DefaultLimit      *limitDTO             `json:"defaultLimit,omitempty"`
	RateLimitCount    *int64                `json:"rateLimitCount,omitempty"`
	RateLimitTimeUnit string                `json:"rateLimitTimeUnit,omitempty"`
	StopOnQuotaReach  *bool                 `json:"stopOnQuotaReach,omitempty"`
	BillingPlan       string                `json:"billingPlan,omitempty"`
	ConditionalGroups []conditionalGroupDTO `json:"conditionalGroups,omitempty"`
	KeyTemplate       string                `json:"keyTemplate,omitempty"`
	SiddhiQuery       string                `json:"siddhiQuery,omitempty"`
}

type limitDTO struct {
	Type         string           `json:"type"`
	RequestCount *requestCountDTO `json:"requestCount,omitempty"`
	Bandwidth    *bandwidthDTO    `json:"bandwidth,omitempty"`
}

type requestCountDTO struct {
	TimeUnit     string `json:"timeUnit"`
	UnitTime     int64  `json:"unitTime"`
	RequestCount int64  `json:"requestCount"`
}

type bandwidthDTO struct {
	TimeUnit   string `json:"timeUnit"`
	UnitTime   int64  `json:"unitTime"`
	DataAmount int64  `json:"dataAmount"`
	DataUnit   string `json:"dataUnit"`
}

type conditionalGroupDTO struct {
	Description string         `json:"description,omitempty"`
	Conditions  []conditionDTO `json:"conditions"`
	Limit       *limitDTO      `json:"limit"`
}

// conditionDTO is WSO2's ThrottleCondition.
type conditionDTO struct {
	Type            string `json:"type"`
	InvertCondition bool   `json:"invertCondition"`
	HeaderCondition *struct {
		HeaderName  string `json:"headerName"`
		HeaderValue string `json:"headerValue"`
	} `json:"headerCondition,omitempty"`
	QueryParameterCondition *struct {
		ParameterName  string `json:"parameterName"`
		ParameterValue string `json:"parameterValue"`
	} `json:"queryParameterCondition,omitempty"`
	JWTClaimsCondition *struct {
		ClaimURL  string `json:"claimUrl"`
		Attribute string `json:"attribute"`
	} `json:"jwtClaimsCondition,omitempty"`
	IPCondition *struct {
		IPConditionType string `json:"ipConditionType"`
		SpecificIP      string `json:"specificIP,omitempty"`
		StartingIP      string `json:"startingIP,omitempty"`
		EndingIP        string `json:"endingIP,omitempty"`
	} `json:"ipCondition,omitempty"`
}

func toLimitDTO(quota string, count, unitTime int64, timeUnit string, amount int64, dataUnit string) *limitDTO {
	if quota == model.QuotaBandwidth {
		return &limitDTO{Type: "BANDWIDTHLIMIT", Bandwidth: &bandwidthDTO{TimeUnit: timeUnit, UnitTime: unitTime, DataAmount: amount, DataUnit: dataUnit}}
	}
	return &limitDTO{Type: "REQUESTCOUNTLIMIT", RequestCount: &requestCountDTO{TimeUnit: timeUnit, UnitTime: unitTime, RequestCount: count}}
}

func toPolicyDTO(p *model.Policy) policyDTO {
	d := policyDTO{
		PolicyID: p.ID, PolicyName: p.Name, DisplayName: p.DisplayName, Description: p.Description, IsDeployed: true,
		Type:         policyTypes[p.Level],
		DefaultLimit: toLimitDTO(p.QuotaType, p.RequestCount, p.UnitTime, p.TimeUnit, p.DataAmount, p.DataUnit),
	}
	switch p.Level {
	case model.LevelSubscription:
		stop, burst := p.StopOnQuotaReach, p.RateLimitCount
		d.StopOnQuotaReach, d.BillingPlan, d.RateLimitCount, d.RateLimitTimeUnit = &stop, p.BillingPlan, &burst, p.RateLimitTimeUnit
	case model.LevelAPI:
		d.ConditionalGroups = make([]conditionalGroupDTO, 0, len(p.ConditionGroups))
		for _, g := range p.ConditionGroups {
			gd := conditionalGroupDTO{Description: g.Description, Limit: toLimitDTO(model.QuotaRequestCount, g.RequestCount, g.UnitTime, g.TimeUnit, 0, "")}
			for _, c := range g.Conditions {
				cd := conditionDTO{Type: c.Type, InvertCondition: c.Invert}
				switch c.Type {
				case model.CondHeader:
					cd.HeaderCondition = &struct {
						HeaderName  string `json:"headerName"`
						HeaderValue string `json:"headerValue"`
					}{c.Name, c.Value}
				case model.CondQuery:
					cd.QueryParameterCondition = &struct {
						ParameterName  string `json:"parameterName"`
						ParameterValue string `json:"parameterValue"`
					}{c.Name, c.Value}
				case model.CondJWTClaims:
					cd.JWTClaimsCondition = &struct {
						ClaimURL  string `json:"claimUrl"`
						Attribute string `json:"attribute"`
					}{c.Name, c.Value}
				case model.CondIP:
					cd.IPCondition = &struct {
						IPConditionType string `json:"ipConditionType"`
						SpecificIP      string `json:"specificIP,omitempty"`
						StartingIP      string `json:"startingIP,omitempty"`
						EndingIP        string `json:"endingIP,omitempty"`
					}{c.IPType, c.SpecificIP, c.StartIP, c.EndIP}
				}
				gd.Conditions = append(gd.Conditions, cd)
			}
			d.ConditionalGroups = append(d.ConditionalGroups, gd)
		}
	case model.LevelCustom:
		d.KeyTemplate, d.SiddhiQuery = p.KeyTemplate, p.Condition
	}
	return d
}

// fromLimit fills the policy's quota from a WSO2 ThrottleLimit; field is
// the DTO path for messages.
func fromLimit(field string, l *limitDTO, quota *string, count, unitTime *int64, timeUnit *string, amount *int64, dataUnit *string) []string {
	switch {
	case l == nil:
		return []string{field + " is required"}
	case l.Type == "REQUESTCOUNTLIMIT" && l.RequestCount != nil:
		rc := l.RequestCount
		*quota, *count, *unitTime, *timeUnit = model.QuotaRequestCount, rc.RequestCount, rc.UnitTime, rc.TimeUnit
	case l.Type == "REQUESTCOUNTLIMIT":
		return []string{field + ".requestCount is required"}
	case l.Type == "BANDWIDTHLIMIT" && l.Bandwidth != nil && amount != nil:
		bw := l.Bandwidth
		*quota, *amount, *dataUnit, *unitTime, *timeUnit = model.QuotaBandwidth, bw.DataAmount, bw.DataUnit, bw.UnitTime, bw.TimeUnit
	case l.Type == "BANDWIDTHLIMIT" && amount != nil:
		return []string{field + ".bandwidth is required"}
	default:
		if amount == nil {
			return []string{field + ".type must be REQUESTCOUNTLIMIT"}
		}
		return []string{field + ".type must be REQUESTCOUNTLIMIT or BANDWIDTHLIMIT"}
	}
	return nil
}

// fromPolicyDTO checks the DTO's shape for a level and builds the policy;
// model.Policy.Validate then checks the values.
func fromPolicyDTO(level string, in *policyDTO) (model.Policy, []string) {
	var problems []string
	if in.PolicyID != "" {
		problems = append(problems, "policyId is read-only")
	}
	if in.Type != "" && in.Type != policyTypes[level] {
		problems = append(problems, "type must be "+policyTypes[level])
	}
	if level != model.LevelSubscription && (in.StopOnQuotaReach != nil || in.BillingPlan != "" || in.RateLimitCount != nil || in.RateLimitTimeUnit != "") {
		problems = append(problems, "stopOnQuotaReach, billingPlan, rateLimitCount and rateLimitTimeUnit apply to subscription policies only")
	}
	if level != model.LevelAPI && len(in.ConditionalGroups) > 0 {
		problems = append(problems, "conditionalGroups apply to advanced policies only")
	}
	if level != model.LevelCustom && (in.KeyTemplate != "" || in.SiddhiQuery != "") {
		problems = append(problems, "keyTemplate and siddhiQuery apply to custom rules only")
	}
	pol := model.Policy{
		Level: level, Name: in.PolicyName, DisplayName: in.DisplayName, Description: in.Description,
		StopOnQuotaReach: true, BillingPlan: strings.ToUpper(in.BillingPlan), RateLimitTimeUnit: in.RateLimitTimeUnit,
		KeyTemplate: in.KeyTemplate, Condition: in.SiddhiQuery,
	}
	if in.StopOnQuotaReach != nil {
		pol.StopOnQuotaReach = *in.StopOnQuotaReach
	}
	if in.RateLimitCount != nil {
		pol.RateLimitCount = *in.RateLimitCount
	}
	var amount *int64
	if level == model.LevelSubscription || level == model.LevelApplication || level == model.LevelAPI {
		amount = &pol.DataAmount
	}
	problems = append(problems, fromLimit("defaultLimit", in.DefaultLimit, &pol.QuotaType, &pol.RequestCount, &pol.UnitTime, &pol.TimeUnit, amount, &pol.DataUnit)...)
	for i, g := range in.ConditionalGroups {
		prefix := "conditionalGroups[" + strconv.Itoa(i) + "]"
		var cg model.ConditionGroup
		var quota, unused string
		cg.Description = g.Description
		problems = append(problems, fromLimit(prefix+".limit", g.Limit, &quota, &cg.RequestCount, &cg.UnitTime, &cg.TimeUnit, nil, &unused)...)
		for j, c := range g.Conditions {
			mc := model.Condition{Type: c.Type, Invert: c.InvertCondition}
			cp := prefix + ".conditions[" + strconv.Itoa(j) + "]"
			switch {
			case c.Type == model.CondHeader && c.HeaderCondition != nil:
				mc.Name, mc.Value = strings.ToLower(c.HeaderCondition.HeaderName), c.HeaderCondition.HeaderValue
			case c.Type == model.CondQuery && c.QueryParameterCondition != nil:
				mc.Name, mc.Value = c.QueryParameterCondition.ParameterName, c.QueryParameterCondition.ParameterValue
			case c.Type == model.CondJWTClaims && c.JWTClaimsCondition != nil:
				mc.Name, mc.Value = c.JWTClaimsCondition.ClaimURL, c.JWTClaimsCondition.Attribute
			case c.Type == model.CondIP && c.IPCondition != nil:
				ip := c.IPCondition
				mc.IPType, mc.SpecificIP, mc.StartIP, mc.EndIP = ip.IPConditionType, ip.SpecificIP, ip.StartingIP, ip.EndingIP
			case c.Type == model.CondHeader || c.Type == model.CondQuery || c.Type == model.CondJWTClaims || c.Type == model.CondIP:
				problems = append(problems, cp+" must carry the object its type names")
			}
			cg.Conditions = append(cg.Conditions, mc)
		}
		pol.ConditionGroups = append(pol.ConditionGroups, cg)
	}
	if pol.BillingPlan != "" && pol.BillingPlan != "FREE" && pol.BillingPlan != "COMMERCIAL" {
		problems = append(problems, "billingPlan must be FREE or COMMERCIAL")
	}
	if len(problems) == 0 {
		if err := pol.Validate(); err != nil {
			problems = append(problems, strings.Split(err.Error(), "\n")...)
		}
	}
	return pol, problems
}

func (p *Portal) createPolicy(level string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var in policyDTO
		if !p.decodeJSON(w, r, &in) {
			return
		}
		pol, problems := fromPolicyDTO(level, &in)
		if len(problems) > 0 {
			badRequest(w, problems)
			return
		}
		created, err := p.store.CreatePolicy(r.Context(), pol)
		if err != nil {
			p.fail(w, r, err)
			return
		}
		w.Header().Set("Location", AdminBase+"/throttling/policies/"+policyPaths[level]+"/"+created.ID)
		writeJSON(w, http.StatusCreated, toPolicyDTO(created))
	}
}

func (p *Portal) updatePolicy(level string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var in policyDTO
		if !p.decodeJSON(w, r, &in) {
			return
		}
		id := chi.URLParam(r, "policyId")
		if in.PolicyID == id {
			in.PolicyID = "" // WSO2 clients send the body they got back
		}
		pol, problems := fromPolicyDTO(level, &in)
		if len(problems) > 0 {
			badRequest(w, problems)
			return
		}
		updated, err := p.store.UpdatePolicy(r.Context(), id, pol)
		if err != nil {
			p.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, toPolicyDTO(updated))
	}
}

func (p *Portal) getPolicy(level string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		pol, err := p.store.GetPolicy(r.Context(), level, chi.URLParam(r, "policyId"))
		if err != nil {
			p.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, toPolicyDTO(pol))
	}
}

func (p *Portal) deletePolicy(level string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := p.store.DeletePolicy(r.Context(), level, chi.URLParam(r, "policyId")); err != nil {
			p.fail(w, r, err)
			return
		}
		w.WriteHeader(http.StatusOK)
	}
}

func (p *Portal) listPolicies(level string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ps, err := p.store.ListPolicies(r.Context(), level)
		if err != nil {
			p.fail(w, r, err)
			return
		}
		out := make([]policyDTO, 0, len(ps))
		for i := range ps {
			out = append(out, toPolicyDTO(&ps[i]))
		}
		writeJSON(w, http.StatusOK, newList(out))
	}
}

// blockingConditionDTO is WSO2's BlockingCondition. conditionValue is a
// string for API, APPLICATION and USER, and an object for IP
// ({"fixedIp","invert"}) and IPRANGE ({"startingIp","endingIp","invert"}).
type blockingConditionDTO struct {
	ConditionID     string `json:"conditionId,omitempty"`
	ConditionType   string `json:"conditionType"`
	ConditionValue  any    `json:"conditionValue"`
	ConditionStatus *bool  `json:"conditionStatus,omitempty"`
}

func toBlockingDTO(d *model.DenyPolicy) blockingConditionDTO {
	on := d.Enabled
	out := blockingConditionDTO{ConditionID: d.ID, ConditionType: d.ConditionType, ConditionStatus: &on, ConditionValue: d.Value}
	switch d.ConditionType {
	case model.DenyIP:
		out.ConditionValue = map[string]any{"fixedIp": d.Value, "invert": d.Invert}
	case model.DenyIPRange:
		out.ConditionValue = map[string]any{"startingIp": d.StartIP, "endingIp": d.EndIP, "invert": d.Invert}
	}
	return out
}

func (p *Portal) createDenyPolicy(w http.ResponseWriter, r *http.Request) {
	var in blockingConditionDTO
	if !p.decodeJSON(w, r, &in) {
		return
	}
	var problems []string
	if in.ConditionID != "" {
		problems = append(problems, "conditionId is read-only")
	}
	d := model.DenyPolicy{ConditionType: in.ConditionType, Enabled: in.ConditionStatus == nil || *in.ConditionStatus}
	switch v := in.ConditionValue.(type) {
	case string:
		if d.ConditionType == model.DenyIP || d.ConditionType == model.DenyIPRange {
			problems = append(problems, "conditionValue must be an object for IP and IPRANGE")
		}
		d.Value = v
	case map[string]any:
		if d.ConditionType != model.DenyIP && d.ConditionType != model.DenyIPRange {
			problems = append(problems, "conditionValue must be a string for "+d.ConditionType)
		}
		str := func(k string) string {
			s, ok := v[k].(string)
			if _, present := v[k]; present && !ok {
				problems = append(problems, "conditionValue."+k+" must be a string")
			}
			return s
		}
		d.StartIP, d.EndIP = str("startingIp"), str("endingIp")
		d.Value = str("fixedIp")
		if inv, present := v["invert"]; present {
			b, ok := inv.(bool)
			if !ok {
				problems = append(problems, "conditionValue.invert must be a boolean")
			}
			d.Invert = b
		}
		for k := range v {
			if k != "fixedIp" && k != "startingIp" && k != "endingIp" && k != "invert" {
				problems = append(problems, "conditionValue."+k+" is unknown")
			}
		}
	case nil:
		problems = append(problems, "conditionValue is required")
	default:
		problems = append(problems, "conditionValue must be a string or an object")
	}
	if len(problems) == 0 {
		if err := d.Validate(); err != nil {
			problems = append(problems, strings.Split(err.Error(), "\n")...)
		}
	}
	if len(problems) > 0 {
		badRequest(w, problems)
		return
	}
	created, err := p.store.CreateDenyPolicy(r.Context(), d)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	w.Header().Set("Location", AdminBase+"/throttling/deny-policies/"+created.ID)
	writeJSON(w, http.StatusCreated, toBlockingDTO(created))
}

func (p *Portal) patchDenyPolicy(w http.ResponseWriter, r *http.Request) {
	var in struct {
		ConditionStatus *bool `json:"conditionStatus"`
	}
	if !p.decodeJSON(w, r, &in) {
		return
	}
	if in.ConditionStatus == nil {
		badRequest(w, []string{"conditionStatus is required"})
		return
	}
	d, err := p.store.SetDenyPolicyStatus(r.Context(), chi.URLParam(r, "conditionId"), *in.ConditionStatus)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toBlockingDTO(d))
}

func (p *Portal) getDenyPolicy(w http.ResponseWriter, r *http.Request) {
	d, err := p.store.GetDenyPolicy(r.Context(), chi.URLParam(r, "conditionId"))
	if err != nil {
		p.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toBlockingDTO(d))
}

func (p *Portal) listDenyPolicies(w http.ResponseWriter, r *http.Request) {
	ds, err := p.store.ListDenyPolicies(r.Context())
	if err != nil {
		p.fail(w, r, err)
		return
	}
	out := make([]blockingConditionDTO, 0, len(ds))
	for i := range ds {
		out = append(out, toBlockingDTO(&ds[i]))
	}
	writeJSON(w, http.StatusOK, newList(out))
}

func (p *Portal) deleteDenyPolicy(w http.ResponseWriter, r *http.Request) {
	if err := p.store.DeleteDenyPolicy(r.Context(), chi.URLParam(r, "conditionId")); err != nil {
		p.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

package portal

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/apim-dev/apim/internal/model"
)

// devPolicyLevels are the devportal's throttling-policy levels: the tiers a
// subscriber picks for a subscription or an application.
var devPolicyLevels = map[string]string{"subscription": model.LevelSubscription, "application": model.LevelApplication}

func (p *Portal) devPolicyRoutes(r chi.Router) {
	r.With(p.authn(true, scopesDevAPIs)).Get("/throttling-policies/{policyLevel}", p.devListPolicies)
	r.With(p.authn(true, scopesDevAPIs)).Get("/throttling-policies/{policyLevel}/{policyId}", p.devGetPolicy)
}

// devPolicyDTO is the devportal's ThrottlingPolicy.
type devPolicyDTO struct {
	Name              string `json:"name"`
	DisplayName       string `json:"displayName"`
	Description       string `json:"description"`
	PolicyLevel       string `json:"policyLevel"`
	RequestCount      int64  `json:"requestCount"`
	DataUnit          string `json:"dataUnit,omitempty"`
	UnitTime          int64  `json:"unitTime"`
	TimeUnit          string `json:"timeUnit"`
	RateLimitCount    int64  `json:"rateLimitCount"`
	RateLimitTimeUnit string `json:"rateLimitTimeUnit,omitempty"`
	QuotaPolicyType   string `json:"quotaPolicyType"`
	TierPlan          string `json:"tierPlan"`
	StopOnQuotaReach  bool   `json:"stopOnQuotaReach"`
}

func toDevPolicyDTO(pol *model.Policy, level string) devPolicyDTO {
	d := devPolicyDTO{
		Name: pol.Name, DisplayName: pol.DisplayName, Description: pol.Description, PolicyLevel: level,
		RequestCount: pol.RequestCount, UnitTime: pol.UnitTime, TimeUnit: pol.TimeUnit,
		RateLimitCount: pol.RateLimitCount, RateLimitTimeUnit: pol.RateLimitTimeUnit,
		QuotaPolicyType: "REQUESTCOUNT", TierPlan: "FREE", StopOnQuotaReach: pol.StopOnQuotaReach,
	}
	if d.DisplayName == "" {
		d.DisplayName = pol.Name
	}
	if pol.QuotaType == model.QuotaBandwidth {
		d.QuotaPolicyType, d.RequestCount, d.DataUnit = "BANDWIDTH", pol.DataAmount, pol.DataUnit
	}
	if pol.BillingPlan != "" {
		d.TierPlan = pol.BillingPlan
	}
	return d
}

// devPolicies are the policies of the path's level, or false when it has
// answered 404.
func (p *Portal) devPolicies(w http.ResponseWriter, r *http.Request) (string, []model.Policy, bool) {
	path := chi.URLParam(r, "policyLevel")
	level, ok := devPolicyLevels[path]
	if !ok {
		writeError(w, http.StatusNotFound, "no throttling-policy level "+path+"; use subscription or application")
		return "", nil, false
	}
	ps, err := p.store.ListPolicies(r.Context(), level)
	if err != nil {
		p.fail(w, r, err)
		return "", nil, false
	}
	return path, ps, true
}

// devListPolicies is GET /throttling-policies/{policyLevel}.
func (p *Portal) devListPolicies(w http.ResponseWriter, r *http.Request) {
	level, ps, ok := p.devPolicies(w, r)
	if !ok {
		return
	}
	limit, offset, problems := pageParams(r)
	if len(problems) > 0 {
		badRequest(w, problems)
		return
	}
	page := ps[min(offset, len(ps)):min(offset+limit, len(ps))]
	out := make([]devPolicyDTO, 0, len(page))
	for i := range page {
		out = append(out, toDevPolicyDTO(&page[i], level))
	}
	writeJSON(w, http.StatusOK, paged(DevportalBase+"/throttling-policies/"+level, out, limit, offset, len(ps)))
}

// devGetPolicy is GET /throttling-policies/{policyLevel}/{policyId}, the
// policy id being its name, as in WSO2's devportal.
func (p *Portal) devGetPolicy(w http.ResponseWriter, r *http.Request) {
	level, ps, ok := p.devPolicies(w, r)
	if !ok {
		return
	}
	name := chi.URLParam(r, "policyId")
	for i := range ps {
		if ps[i].Name == name {
			writeJSON(w, http.StatusOK, toDevPolicyDTO(&ps[i], level))
			return
		}
	}
	writeError(w, http.StatusNotFound, level+" throttling policy "+name+" does not exist")
}

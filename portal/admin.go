package portal

import (
	"embed"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/apim-dev/apim/internal/model"
)

// The OpenAPI documents of the three REST APIs.
//
//go:embed openapi/*.yaml
var docs embed.FS

const (
	publisherDoc = "openapi/publisher.yaml"
	devportalDoc = "openapi/devportal.yaml"
	adminDoc     = "openapi/admin.yaml"
)

func serveDoc(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b, err := docs.ReadFile(name)
		if err != nil {
			writeError(w, http.StatusInternalServerError, "document missing")
			return
		}
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(b)
	}
}

// Admin scopes, as WSO2's admin-api.yaml for throttling policies.
var (
	scopesTierManage = []string{"apim:admin", "apim:tier_manage"}
	scopesTierView   = []string{"apim:admin", "apim:tier_manage", "apim:tier_view"}
)

func (p *Portal) adminRoutes(r chi.Router) {
	r.Get("/openapi.yaml", serveDoc(adminDoc))
	for _, level := range []string{model.LevelSubscription, model.LevelApplication} {
		r.With(p.authorize(scopesTierManage...)).Post("/throttling/policies/"+level, p.createPolicy(level))
		r.With(p.authorize(scopesTierView...)).Get("/throttling/policies/"+level, p.listPolicies(level))
	}
}

// policyDTO is WSO2's SubscriptionThrottlePolicyDTO /
// ApplicationThrottlePolicyDTO, the fields this server keeps.
type policyDTO struct {
	PolicyID         string    `json:"policyId,omitempty"`
	PolicyName       string    `json:"policyName"`
	DisplayName      string    `json:"displayName"`
	Description      string    `json:"description"`
	IsDeployed       bool      `json:"isDeployed"`
	Type             string    `json:"type,omitempty"`
	DefaultLimit     *limitDTO `json:"defaultLimit"`
	StopOnQuotaReach *bool     `json:"stopOnQuotaReach,omitempty"`
	BillingPlan      string    `json:"billingPlan,omitempty"`
}

type limitDTO struct {
	Type         string           `json:"type"`
	RequestCount *requestCountDTO `json:"requestCount,omitempty"`
}

type requestCountDTO struct {
	TimeUnit     string `json:"timeUnit"`
	UnitTime     int64  `json:"unitTime"`
	RequestCount int64  `json:"requestCount"`
}

var policyTypes = map[string]string{
	model.LevelSubscription: "SubscriptionThrottlePolicy",
	model.LevelApplication:  "ApplicationThrottlePolicy",
}

func toPolicyDTO(p *model.Policy) policyDTO {
	stop := p.StopOnQuotaReach
	d := policyDTO{
		PolicyID: p.Name, PolicyName: p.Name, DisplayName: p.DisplayName, Description: p.Description, IsDeployed: true,
		Type: policyTypes[p.Level],
		DefaultLimit: &limitDTO{Type: "REQUESTCOUNTLIMIT", RequestCount: &requestCountDTO{
			TimeUnit: p.TimeUnit, UnitTime: p.UnitTime, RequestCount: p.RequestCount,
		}},
	}
	if p.Level == model.LevelSubscription {
		d.StopOnQuotaReach, d.BillingPlan = &stop, p.BillingPlan
	}
	return d
}

func (p *Portal) createPolicy(level string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var in policyDTO
		if !p.decodeJSON(w, r, &in) {
			return
		}
		var problems []string
		if in.PolicyName == "" {
			problems = append(problems, "policyName is required")
		}
		if in.PolicyID != "" {
			problems = append(problems, "policyId is read-only")
		}
		if in.Type != "" && in.Type != policyTypes[level] {
			problems = append(problems, "type must be "+policyTypes[level])
		}
		if level == model.LevelApplication && (in.StopOnQuotaReach != nil || in.BillingPlan != "") {
			problems = append(problems, "stopOnQuotaReach and billingPlan apply to subscription policies only")
		}
		pol := model.Policy{
			Level: level, Name: in.PolicyName, DisplayName: in.DisplayName, Description: in.Description,
			StopOnQuotaReach: true, BillingPlan: strings.ToUpper(in.BillingPlan),
		}
		if in.StopOnQuotaReach != nil {
			pol.StopOnQuotaReach = *in.StopOnQuotaReach
		}
		switch {
		case in.DefaultLimit == nil:
			problems = append(problems, "defaultLimit is required")
		case in.DefaultLimit.Type != "REQUESTCOUNTLIMIT":
			problems = append(problems, "defaultLimit.type must be REQUESTCOUNTLIMIT")
		case in.DefaultLimit.RequestCount == nil:
			problems = append(problems, "defaultLimit.requestCount is required")
		default:
			rc := in.DefaultLimit.RequestCount
			pol.TimeUnit, pol.UnitTime, pol.RequestCount = rc.TimeUnit, rc.UnitTime, rc.RequestCount
			if err := pol.Validate(); err != nil {
				for _, line := range strings.Split(err.Error(), "\n") {
					if !strings.HasPrefix(line, "policyName ") {
						problems = append(problems, line)
					}
				}
			}
		}
		if pol.BillingPlan != "" && pol.BillingPlan != "FREE" && pol.BillingPlan != "COMMERCIAL" {
			problems = append(problems, "billingPlan must be FREE or COMMERCIAL")
		}
		if len(problems) > 0 {
			badRequest(w, problems)
			return
		}
		created, err := p.store.CreatePolicy(r.Context(), pol)
		if err != nil {
			p.fail(w, r, err)
			return
		}
		w.Header().Set("Location", AdminBase+"/throttling/policies/"+level+"/"+created.Name)
		writeJSON(w, http.StatusCreated, toPolicyDTO(created))
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

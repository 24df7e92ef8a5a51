package portal

import (
	"embed"
	"net/http"

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
	manage, view := r.With(p.authorize(scopesTierManage...)), r.With(p.authorize(scopesTierView...))
	for _, level := range []string{model.LevelSubscription, model.LevelApplication, model.LevelAPI, model.LevelCustom} {
		path := "/throttling/policies/" + policyPaths[level]
		manage.Post(path, p.createPolicy(level))
		view.Get(path, p.listPolicies(level))
		view.Get(path+"/{policyId}", p.getPolicy(level))
		manage.Put(path+"/{policyId}", p.updatePolicy(level))
		manage.Delete(path+"/{policyId}", p.deletePolicy(level))
	}
	manage.Post("/throttling/deny-policies", p.createDenyPolicy)
	view.Get("/throttling/deny-policies", p.listDenyPolicies)
	view.Get("/throttling/deny-policies/{conditionId}", p.getDenyPolicy)
	manage.Patch("/throttling/deny-policies/{conditionId}", p.patchDenyPolicy)
	manage.Delete("/throttling/deny-policies/{conditionId}", p.deleteDenyPolicy)
	p.keyManagerRoutes(r)       // keymanagers.go
	p.environmentRoutes(r)      // environments.go
	p.adminApplicationRoutes(r) // adminapps.go
}

package portal

import (
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/apim-dev/apim/internal/model"
	"github.com/apim-dev/apim/internal/store"
)

// Admin scopes of applications, as WSO2's admin-api.yaml.
var (
	scopesAppAdminView   = []string{"apim:admin", "apim:app_owner_change", "apim:app_import_export", "apim:admin_application_view"}
	scopesAppAdminManage = []string{"apim:admin", "apim:app_owner_change"}
)

// adminApplicationRoutes are the admin API's applications of every user
// and its search of throttling policies of every level.
func (p *Portal) adminApplicationRoutes(r chi.Router) {
	r.With(p.authorize(scopesAppAdminView...)).Get("/applications", p.adminListApplications)
	r.With(p.authorize(scopesAppAdminView...)).Get("/applications/{applicationId}", p.adminGetApplication)
	r.With(p.authorize(scopesAppAdminManage...)).Delete("/applications/{applicationId}", p.adminDeleteApplication)
	r.With(p.authorize(scopesTierView...)).Get("/throttling/policies/search", p.searchPolicies)
}

// adminApplicationDTO is the admin API's ApplicationInfo.
type adminApplicationDTO struct {
	ApplicationID string `json:"applicationId"`
	Name          string `json:"name"`
	Owner         string `json:"owner"`
	Status        string `json:"status"`
	GroupID       string `json:"groupId"`
}

func toAdminApplicationDTO(a *store.Application) adminApplicationDTO {
	return adminApplicationDTO{ApplicationID: a.ID, Name: a.Name, Owner: a.Owner, Status: a.Status, GroupID: strings.Join(a.Groups, ",")}
}

// adminListApplications is GET /applications?user=&name=&limit=&offset=:
// every user's applications, or one user's.
func (p *Portal) adminListApplications(w http.ResponseWriter, r *http.Request) {
	writeApplicationPage(p, w, r, AdminBase+"/applications", r.URL.Query().Get("user"), toAdminApplicationDTO)
}

// writeApplicationPage answers an application list at path: owner's
// applications ("" everyone's) whose name holds the name (admin) or query
// (devportal) parameter, the page the request asks, each shown by to.
func writeApplicationPage[T any](p *Portal, w http.ResponseWriter, r *http.Request, path, owner string, to func(*store.Application) T) {
	limit, offset, problems := pageParams(r)
	if len(problems) > 0 {
		badRequest(w, problems)
		return
	}
	name := r.URL.Query().Get("name")
	if name == "" {
		name = r.URL.Query().Get("query")
	}
	apps, total, err := p.store.ListApplications(r.Context(), store.ApplicationFilter{Owner: owner, Name: name, Limit: limit, Offset: offset})
	if err != nil {
		p.fail(w, r, err)
		return
	}
	out := make([]T, 0, len(apps))
	for i := range apps {
		out = append(out, to(&apps[i]))
	}
	writeJSON(w, http.StatusOK, paged(path, out, limit, offset, total))
}

func (p *Portal) adminGetApplication(w http.ResponseWriter, r *http.Request) {
	app, err := p.store.GetApplication(r.Context(), chi.URLParam(r, "applicationId"), "")
	if err != nil {
		p.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toApplicationDTO(app))
}

// adminDeleteApplication deletes anyone's application, as its owner
// could: its keys, OAuth clients and subscriptions go with it.
func (p *Portal) adminDeleteApplication(w http.ResponseWriter, r *http.Request) {
	if err := p.store.DeleteApplication(r.Context(), chi.URLParam(r, "applicationId"), "", p.clients.DeleteClients); err != nil {
		p.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// policySearchTypes are the type: values of WSO2's policy search, by level.
var policySearchTypes = map[string]string{
	model.LevelSubscription: "sub",
	model.LevelApplication:  "app",
	model.LevelAPI:          "api",
	model.LevelCustom:       "global",
}

// policyDetailsDTO is WSO2's ThrottlePolicyDetails. WSO2's integer
// policyId has no counterpart: uuid is the policy's id.
type policyDetailsDTO struct {
	UUID        string `json:"uuid"`
	PolicyName  string `json:"policyName"`
	DisplayName string `json:"displayName"`
	Description string `json:"description"`
	IsDeployed  bool   `json:"isDeployed"`
	Type        string `json:"type"`
}

// searchPolicies is GET /throttling/policies/search?query=type:T name:N:
// the policies of every level, or of the levels and names asked (any of
// several of each; a name matches exactly, case-insensitively).
func (p *Portal) searchPolicies(w http.ResponseWriter, r *http.Request) {
	terms, err := parseSearch(r.URL.Query().Get("query"))
	if err != nil {
		badRequest(w, []string{err.Error()})
		return
	}
	var types, names []string
	for _, t := range terms {
		switch t.key {
		case "type":
			if !slices.Contains(slices.Collect(maps.Values(policySearchTypes)), t.value) {
				badRequest(w, []string{"query type " + strconv.Quote(t.value) + " is not a policy type; use sub, app, api or global"})
				return
			}
			types = append(types, t.value)
		case "name":
			names = append(names, t.value)
		default:
			badRequest(w, []string{"query key " + strconv.Quote(t.key) + " is not supported; use type: and name:"})
			return
		}
	}
	ps, err := p.store.ListPolicies(r.Context(), "")
	if err != nil {
		p.fail(w, r, err)
		return
	}
	out := []policyDetailsDTO{}
	for i := range ps {
		pol := &ps[i]
		typ := policySearchTypes[pol.Level]
		named := slices.ContainsFunc(names, func(n string) bool { return strings.EqualFold(n, pol.Name) })
		if (len(types) > 0 && !slices.Contains(types, typ)) || (len(names) > 0 && !named) {
			continue
		}
		out = append(out, policyDetailsDTO{
			UUID: pol.ID, PolicyName: pol.Name, DisplayName: pol.DisplayName, Description: pol.Description, IsDeployed: true, Type: typ,
		})
	}
	writeJSON(w, http.StatusOK, newList(out))
}

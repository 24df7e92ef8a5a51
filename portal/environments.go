package portal

import (
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/apim-dev/apim/internal/model"
)

// Gateway environment scopes, as WSO2's admin-api.yaml.
var (
	scopesEnvManage = []string{"apim:admin", "apim:environment_manage"}
	scopesEnvView   = []string{"apim:admin", "apim:environment_manage", "apim:environment_read"}
)

func (p *Portal) environmentRoutes(r chi.Router) {
	manage, view := r.With(p.authorize(scopesEnvManage...)), r.With(p.authorize(scopesEnvView...))
	view.Get("/environments", p.listEnvironments)
	manage.Post("/environments", p.createEnvironment)
	view.Get("/environments/{environmentId}", p.getEnvironment)
	manage.Put("/environments/{environmentId}", p.updateEnvironment)
	manage.Delete("/environments/{environmentId}", p.deleteEnvironment)
}

// environmentDTO is WSO2's EnvironmentDTO. id and isReadOnly are
// read-only: accepted so that a GET body can be PUT back.
type environmentDTO struct {
	ID                   string                 `json:"id,omitempty"`
	Name                 string                 `json:"name"`
	DisplayName          string                 `json:"displayName"`
	Provider             string                 `json:"provider"`
	Type                 string                 `json:"type"`
	GatewayType          string                 `json:"gatewayType"`
	Description          string                 `json:"description"`
	IsReadOnly           bool                   `json:"isReadOnly"`
	VHosts               []model.VHost          `json:"vhosts"`
	EndpointURIs         []endpointURIDTO       `json:"endpointURIs"`
	AdditionalProperties []model.Property       `json:"additionalProperties"`
	Permissions          *environmentPermission `json:"permissions,omitempty"`
}

// endpointURIDTO is WSO2's GatewayEnvironmentProtocolURIDTO.
type endpointURIDTO struct {
	Protocol    string `json:"protocol"`
	EndpointURI string `json:"endpointURI"`
}

// environmentPermission is WSO2's permissions of an environment; apim
// shows every environment to every publisher (docs/wso2-compatibility.md).
type environmentPermission struct {
	PermissionType string   `json:"permissionType"`
	Roles          []string `json:"roles"`
}

func toEnvironmentDTO(e *model.Environment) environmentDTO {
	d := environmentDTO{
		ID: e.ID, Name: e.Name, DisplayName: e.DisplayName, Provider: e.Provider, Type: e.Type, GatewayType: e.GatewayType,
		Description: e.Description, IsReadOnly: e.ReadOnly, VHosts: e.VHosts, AdditionalProperties: e.AdditionalProperties,
		EndpointURIs: []endpointURIDTO{}, Permissions: &environmentPermission{PermissionType: "PUBLIC", Roles: []string{}},
	}
	for _, v := range e.VHosts {
		if v.HTTPPort > 0 {
			d.EndpointURIs = append(d.EndpointURIs, endpointURIDTO{Protocol: "http", EndpointURI: "http://" + net.JoinHostPort(v.Host, strconv.Itoa(v.HTTPPort)) + v.HTTPContext})
		}
		if v.HTTPSPort > 0 {
			d.EndpointURIs = append(d.EndpointURIs, endpointURIDTO{Protocol: "https", EndpointURI: "https://" + net.JoinHostPort(v.Host, strconv.Itoa(v.HTTPSPort)) + v.HTTPContext})
		}
	}
	if d.VHosts == nil {
		d.VHosts = []model.VHost{}
	}
	return d
}

// readEnvironment decodes and checks an EnvironmentDTO body.
func (p *Portal) readEnvironment(w http.ResponseWriter, r *http.Request) (model.Environment, bool) {
	var in environmentDTO
	if !p.decodeJSON(w, r, &in) {
		return model.Environment{}, false
	}
	e := model.Environment{
		Name: in.Name, DisplayName: in.DisplayName, Description: in.Description, Provider: in.Provider, Type: in.Type,
		GatewayType: in.GatewayType, VHosts: in.VHosts, AdditionalProperties: in.AdditionalProperties,
	}
	var problems []string
	if pm := in.Permissions; pm != nil && pm.PermissionType != "" && pm.PermissionType != "PUBLIC" {
		problems = append(problems, "permissions.permissionType "+pm.PermissionType+" is not supported; only PUBLIC")
	}
	check := e
	if check.Name == "" && r.Method == http.MethodPut {
		check.Name = "unchanged" // PUT may leave the name out
	}
	if err := check.Validate(); err != nil {
		problems = append(problems, strings.Split(err.Error(), "\n")...)
	}
	if len(problems) > 0 {
		badRequest(w, problems)
		return model.Environment{}, false
	}
	return e, true
}

func (p *Portal) listEnvironments(w http.ResponseWriter, r *http.Request) {
	envs, err := p.store.ListEnvironments(r.Context())
	if err != nil {
		p.fail(w, r, err)
		return
	}
	out := make([]environmentDTO, 0, len(envs))
	for i := range envs {
		out = append(out, toEnvironmentDTO(&envs[i]))
	}
	writeJSON(w, http.StatusOK, newList(out))
}

func (p *Portal) getEnvironment(w http.ResponseWriter, r *http.Request) {
	envs, err := p.store.ListEnvironments(r.Context())
	if err != nil {
		p.fail(w, r, err)
		return
	}
	id := chi.URLParam(r, "environmentId")
	for i := range envs {
		if envs[i].ID == id {
			writeJSON(w, http.StatusOK, toEnvironmentDTO(&envs[i]))
			return
		}
	}
	writeError(w, http.StatusNotFound, "gateway environment "+id+" does not exist")
}

func (p *Portal) createEnvironment(w http.ResponseWriter, r *http.Request) {
	e, ok := p.readEnvironment(w, r)
	if !ok {
		return
	}
	out, err := p.store.CreateEnvironment(r.Context(), e)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	w.Header().Set("Location", AdminBase+"/environments/"+out.ID)
	writeJSON(w, http.StatusCreated, toEnvironmentDTO(out))
}

func (p *Portal) updateEnvironment(w http.ResponseWriter, r *http.Request) {
	e, ok := p.readEnvironment(w, r)
	if !ok {
		return
	}
	e.ID = chi.URLParam(r, "environmentId")
	out, err := p.store.UpdateEnvironment(r.Context(), e)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toEnvironmentDTO(out))
}

func (p *Portal) deleteEnvironment(w http.ResponseWriter, r *http.Request) {
	if err := p.store.DeleteEnvironment(r.Context(), chi.URLParam(r, "environmentId")); err != nil {
		p.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

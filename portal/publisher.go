package portal

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/apim-dev/apim/internal/model"
	"github.com/apim-dev/apim/internal/store"
)

// Publisher scopes. WSO2 4.x lets apim:api_manage do everything a creator
// or publisher does; deploying a revision takes apim:api_publish,
// apim:api_create or apim:api_manage, as in WSO2's publisher-api.yaml.
var (
	scopesAPIView    = []string{"apim:api_view", "apim:api_create", "apim:api_publish", "apim:api_manage"}
	scopesAPICreate  = []string{"apim:api_create", "apim:api_manage"}
	scopesAPIDeploy  = []string{"apim:api_publish", "apim:api_create", "apim:api_manage"}
	scopesAPIPublish = []string{"apim:api_publish", "apim:api_manage"}
	scopesAPIDelete  = []string{"apim:api_delete", "apim:api_manage"}
	scopesSubView    = []string{"apim:subscription_view", "apim:subscription_manage", "apim:api_manage"}
	scopesSubBlock   = []string{"apim:subscription_block", "apim:subscription_manage", "apim:api_manage"}
)

func (p *Portal) publisherRoutes(r chi.Router) {
	r.Get("/openapi.yaml", serveDoc(publisherDoc))
	r.With(p.authorize(scopesAPIView...)).Get("/apis", p.listAPIs)
	r.With(p.authorize(scopesAPIView...)).Get("/search", p.search(PublisherBase, false)) // search.go
	r.With(p.authorize(scopesAPICreate...)).Post("/apis", p.createAPI)
	r.With(p.authorize(scopesAPICreate...)).Post("/apis/import-openapi", p.importOpenAPI)
	p.projectRoutes(r) // project.go: /apis/export and /apis/import
	r.With(p.authorize(scopesAPIPublish...)).Post("/apis/change-lifecycle", p.changeLifecycle)
	r.With(p.authorize(scopesAPIView...)).Get("/apis/{apiId}", p.getAPI)
	r.With(p.authorize(scopesAPICreate...)).Put("/apis/{apiId}", p.updateAPI)
	r.With(p.authorize(scopesAPIDelete...)).Delete("/apis/{apiId}", p.deleteAPI)
	r.With(p.authorize(scopesAPICreate...)).Post("/apis/{apiId}/revisions", p.createRevision)
	r.With(p.authorize(scopesAPIView...)).Get("/apis/{apiId}/revisions", p.listRevisions)
	r.With(p.authorize(scopesAPIDeploy...)).Post("/apis/{apiId}/deploy-revision", p.deployRevision)
	r.With(p.authorize(scopesAPIDeploy...)).Post("/apis/{apiId}/undeploy-revision", p.undeployRevision)
	r.With(p.authorize(scopesSubView...)).Get("/subscriptions", p.pubListSubscriptions)
	r.With(p.authorize(scopesSubBlock...)).Post("/subscriptions/block-subscription", p.blockSubscription)
	r.With(p.authorize(scopesSubBlock...)).Post("/subscriptions/unblock-subscription", p.unblockSubscription)
	p.revisionRoutes(r)   // revisions.go
	p.definitionRoutes(r) // definitions.go
}

// apiDTO is WSO2's APIDTO (publisher v4): every property of WSO2's
// definition. The ones apim acts on are fields here; apiExtraDTO holds
// those it stores without acting on, apiServerSetDTO those the server sets
// (docs/wso2-compatibility.md). id, provider and lifeCycleStatus are
// read-only: accepted so a GET body can be PUT back.
type apiDTO struct {
	ID              string         `json:"id,omitempty"`
	Name            string         `json:"name"`
	Description     string         `json:"description"`
	Context         string         `json:"context"`
	Version         string         `json:"version"`
	Provider        string         `json:"provider,omitempty"`
	LifeCycleStatus string         `json:"lifeCycleStatus,omitempty"`
	Type            string         `json:"type,omitempty"`
	Operations      []operationDTO `json:"operations"`
	Policies        []string       `json:"policies"`
	// SecurityScheme is WSO2's: oauth2 and/or api_key; default [oauth2].
	SecurityScheme []string `json:"securityScheme"`
	// APIThrottlingPolicy is an advanced policy over all the API's resources.
	APIThrottlingPolicy string   `json:"apiThrottlingPolicy,omitempty"`
	CORSConfiguration   *corsDTO `json:"corsConfiguration,omitempty"`
	// EnableBackendJWT has the gateway send the backend a signed JWT
	// describing the caller, in X-JWT-Assertion; default false. apim's,
	// not WSO2's (WSO2 configures it per gateway).
	EnableBackendJWT        bool                             `json:"enableBackendJWT"`
	Tags                    []string                         `json:"tags"`
	Visibility              string                           `json:"visibility,omitempty"`
	VisibleRoles            []string                         `json:"visibleRoles"`
	Transport               []string                         `json:"transport"`
	IsDefaultVersion        bool                             `json:"isDefaultVersion"`
	BusinessInformation     *businessInfoDTO                 `json:"businessInformation,omitempty"`
	AdditionalProperties    []additionalPropertyDTO          `json:"additionalProperties"`
	AdditionalPropertiesMap map[string]additionalPropertyDTO `json:"additionalPropertiesMap"`
	Scopes                  []apiScopeDTO                    `json:"scopes"`
	apiServerSetDTO
	apiExtraDTO
}

// corsDTO is WSO2's APICorsConfigurationDTO.
type corsDTO struct {
	CorsConfigurationEnabled      bool     `json:"corsConfigurationEnabled"`
	AccessControlAllowOrigins     []string `json:"accessControlAllowOrigins"`
	AccessControlAllowCredentials bool     `json:"accessControlAllowCredentials"`
	AccessControlAllowHeaders     []string `json:"accessControlAllowHeaders"`
	AccessControlAllowMethods     []string `json:"accessControlAllowMethods"`
}

// endpointConf is the part of WSO2's free-form endpointConfig apim acts on.
type endpointConf struct {
	EndpointType string       `json:"endpoint_type,omitempty"`
	Production   *endpointDTO `json:"production_endpoints,omitempty"`
	Sandbox      *endpointDTO `json:"sandbox_endpoints,omitempty"`
}

type endpointDTO struct {
	URL string `json:"url"`
}

// parseEndpointConfig reads the endpoints out of WSO2's endpointConfig: an
// object, or (WSO2 before 3.x) a string holding one. It is free-form, so
// other keys (endpoint_security, timeouts, ...) are kept, not refused.
func parseEndpointConfig(raw json.RawMessage) (*endpointConf, []string) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		raw = json.RawMessage(s)
	}
	var c endpointConf
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, []string{"endpointConfig must be an object with production_endpoints and/or sandbox_endpoints, each {\"url\": ...}: " + err.Error()}
	}
	return &c, nil
}

// operationDTO is WSO2's APIOperationsDTO.
type operationDTO struct {
	Target           string   `json:"target"`
	Verb             string   `json:"verb"`
	AuthType         string   `json:"authType"`
	ThrottlingPolicy string   `json:"throttlingPolicy"`
	Scopes           []string `json:"scopes"`
	operationExtraDTO
}

// toModel turns the DTO into an API, applying WSO2's defaults, and lists
// what is wrong with it.
func (d *apiDTO) toModel() (model.API, []string) {
	var problems []string
	api := model.API{
		Name: strings.TrimSpace(d.Name), Description: d.Description, Context: d.Context, Version: d.Version,
		Policies: d.Policies, Operations: []model.Operation{}, APIThrottlingPolicy: d.APIThrottlingPolicy,
		EnableBackendJWT: d.EnableBackendJWT, Tags: nilIfEmpty(d.Tags), Visibility: d.Visibility,
		VisibleRoles: nilIfEmpty(d.VisibleRoles), Transport: nilIfEmpty(d.Transport), IsDefaultVersion: d.IsDefaultVersion,
	}
	if d.Type != "" && !strings.EqualFold(d.Type, "HTTP") {
		problems = append(problems, "type "+strconv.Quote(d.Type)+" is not supported; only HTTP")
	}
	c, ps := parseEndpointConfig(d.EndpointConfig)
	problems = append(problems, ps...)
	if c != nil {
		if c.EndpointType != "" && c.EndpointType != "http" {
			problems = append(problems, "endpointConfig.endpoint_type "+strconv.Quote(c.EndpointType)+" is not supported; only http")
		}
		if c.Production != nil {
			api.Production = &model.Endpoint{URL: c.Production.URL}
		}
		if c.Sandbox != nil {
			api.Sandbox = &model.Endpoint{URL: c.Sandbox.URL}
		}
	}
	if len(api.Policies) == 0 {
		api.Policies = []string{"Unlimited"}
	}
	if len(d.SecurityScheme) > 0 {
		api.SecurityScheme = d.SecurityScheme
	}
	if c := d.CORSConfiguration; c != nil {
		api.CORS = &model.CORS{
			Enabled: c.CorsConfigurationEnabled, AllowOrigins: c.AccessControlAllowOrigins,
			AllowCredentials: c.AccessControlAllowCredentials, AllowHeaders: c.AccessControlAllowHeaders,
			AllowMethods: upper(c.AccessControlAllowMethods),
		}
	}
	if b := d.BusinessInformation; b != nil && *b != (businessInfoDTO{}) {
		api.BusinessInformation = &model.BusinessInformation{
			BusinessOwner: b.BusinessOwner, BusinessOwnerEmail: b.BusinessOwnerEmail,
			TechnicalOwner: b.TechnicalOwner, TechnicalOwnerEmail: b.TechnicalOwnerEmail,
		}
	}
	props, ps := additionalProperties(d.AdditionalProperties, d.AdditionalPropertiesMap)
	api.AdditionalProperties = props
	problems = append(problems, ps...)
	for _, s := range d.Scopes {
		api.Scopes = append(api.Scopes, model.APIScope{Shared: s.Shared, Scope: model.Scope{
			ID: s.Scope.ID, Name: s.Scope.Name, DisplayName: s.Scope.DisplayName, Description: s.Scope.Description,
			Bindings: nilIfEmpty(s.Scope.Bindings),
		}})
	}
	problems = append(problems, d.enumProblems()...)
	extra, err := encodeExtra(d.apiExtraDTO)
	if err != nil {
		problems = append(problems, err.Error())
	}
	api.Extra = extra
	for i, op := range d.Operations {
		o := model.Operation{
			Target: op.Target, Verb: strings.ToUpper(op.Verb), AuthType: op.AuthType,
			ThrottlingPolicy: op.ThrottlingPolicy, Scopes: op.Scopes,
		}
		if o.AuthType == "" || o.AuthType == "Any" {
			o.AuthType = model.AuthApplicationUser
		}
		if o.ThrottlingPolicy == "" {
			o.ThrottlingPolicy = "Unlimited"
		}
		if len(o.Scopes) == 0 {
			o.Scopes = nil
		}
		if o.Extra, err = encodeExtra(op.operationExtraDTO); err != nil {
			problems = append(problems, fmt.Sprintf("operations[%d]: %v", i, err))
		}
		api.Operations = append(api.Operations, o)
	}
	if err := api.Validate(); err != nil {
		problems = append(problems, strings.Split(err.Error(), "\n")...)
	}
	return api, problems
}

func toAPIDTO(a *model.API) apiDTO {
	d := apiDTO{
		ID: a.ID, Name: a.Name, Description: a.Description, Context: a.Context, Version: a.Version,
		Provider: a.Provider, LifeCycleStatus: string(a.Status), Type: "HTTP",
		Operations:          make([]operationDTO, 0, len(a.Operations)),
		Policies:            a.Policies,
		SecurityScheme:      slices.Clone(a.Schemes()),
		APIThrottlingPolicy: a.APIThrottlingPolicy,
		EnableBackendJWT:    a.EnableBackendJWT,
		// WSO2 always shows corsConfiguration; disabled when not set.
		CORSConfiguration: &corsDTO{
			AccessControlAllowOrigins: []string{}, AccessControlAllowHeaders: []string{}, AccessControlAllowMethods: []string{},
		},
		Tags: nonNilStrings(a.Tags), Visibility: a.Visibility, VisibleRoles: nonNilStrings(a.VisibleRoles),
		Transport: nonNilStrings(a.Transport), IsDefaultVersion: a.IsDefaultVersion,
		AdditionalProperties:    make([]additionalPropertyDTO, 0, len(a.AdditionalProperties)),
		AdditionalPropertiesMap: make(map[string]additionalPropertyDTO, len(a.AdditionalProperties)),
		Scopes:                  make([]apiScopeDTO, 0, len(a.Scopes)),
		apiServerSetDTO: apiServerSetDTO{
			CreatedTime: wso2Millis(a.CreatedAt), LastUpdatedTimestamp: wso2Millis(a.UpdatedAt), LastUpdatedTime: wso2Time(a.UpdatedAt),
		},
	}
	decodeExtra(a.Extra, &d.apiExtraDTO)
	if d.Visibility == "" {
		d.Visibility = model.VisibilityPublic
	}
	if d.Policies == nil {
		d.Policies = []string{}
	}
	d.BusinessInformation = toBusinessInfoDTO(a.BusinessInformation)
	for _, p := range a.AdditionalProperties {
		dp := additionalPropertyDTO{Name: p.Name, Value: p.Value, Display: p.Display}
		d.AdditionalProperties = append(d.AdditionalProperties, dp)
		d.AdditionalPropertiesMap[p.Name] = dp
	}
	for _, s := range a.Scopes {
		d.Scopes = append(d.Scopes, apiScopeDTO{Shared: s.Shared, Scope: scopeDTO{
			ID: s.Scope.ID, Name: s.Scope.Name, DisplayName: s.Scope.DisplayName, Description: s.Scope.Description,
			Bindings: nonNilStrings(s.Scope.Bindings),
		}})
	}
	if c := a.CORS; c != nil {
		d.CORSConfiguration = &corsDTO{
			CorsConfigurationEnabled: c.Enabled, AccessControlAllowOrigins: nonNilStrings(c.AllowOrigins),
			AccessControlAllowCredentials: c.AllowCredentials, AccessControlAllowHeaders: nonNilStrings(c.AllowHeaders),
			AccessControlAllowMethods: nonNilStrings(c.AllowMethods),
		}
	}
	if d.EndpointConfig == nil {
		// Not stored as sent (APIs from before migration 00015): built from the
		// endpoints apim serves.
		c := endpointConf{EndpointType: "http"}
		if a.Production != nil {
			c.Production = &endpointDTO{URL: a.Production.URL}
		}
		if a.Sandbox != nil {
			c.Sandbox = &endpointDTO{URL: a.Sandbox.URL}
		}
		d.EndpointConfig, _ = json.Marshal(c)
	}
	for _, op := range a.Operations {
		scopes := op.Scopes
		if scopes == nil {
			scopes = []string{}
		}
		o := operationDTO{
			Target: op.Target, Verb: op.Verb, AuthType: op.AuthType, ThrottlingPolicy: op.ThrottlingPolicy, Scopes: scopes,
		}
		decodeExtra(op.Extra, &o.operationExtraDTO)
		d.Operations = append(d.Operations, o)
	}
	return d
}

func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func upper(ss []string) []string {
	if ss == nil {
		return nil
	}
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strings.ToUpper(s)
	}
	return out
}

type paginationDTO struct {
	Offset   int    `json:"offset"`
	Limit    int    `json:"limit"`
	Total    int    `json:"total"`
	Next     string `json:"next"`
	Previous string `json:"previous"`
}

type listDTO[T any] struct {
	Count      int            `json:"count"`
	List       []T            `json:"list"`
	Pagination *paginationDTO `json:"pagination,omitempty"`
}

func newList[T any](items []T) listDTO[T] {
	if items == nil {
		items = []T{}
	}
	return listDTO[T]{Count: len(items), List: items}
}

// pageParams reads WSO2's limit and offset query parameters.
func pageParams(r *http.Request) (limit, offset int, problems []string) {
	limit, offset = 25, 0
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			problems = append(problems, "limit must be a number from 1 to 1000")
		}
		limit = n
	}
	if v := r.URL.Query().Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			problems = append(problems, "offset must be a number, at least 0")
		}
		offset = n
	}
	return limit, offset, problems
}

func pagination(base string, limit, offset, total int) *paginationDTO {
	pg := &paginationDTO{Offset: offset, Limit: limit, Total: total}
	if offset+limit < total {
		pg.Next = base + "?limit=" + strconv.Itoa(limit) + "&offset=" + strconv.Itoa(offset+limit)
	}
	if offset > 0 {
		pg.Previous = base + "?limit=" + strconv.Itoa(limit) + "&offset=" + strconv.Itoa(max(0, offset-limit))
	}
	return pg
}

func (p *Portal) listAPIs(w http.ResponseWriter, r *http.Request) {
	writeAPIPage(p, w, r, PublisherBase+"/apis", false, toAPIDTO)
}

func (p *Portal) createAPI(w http.ResponseWriter, r *http.Request) {
	var in apiDTO
	if !p.decodeJSON(w, r, &in) {
		return
	}
	p.create(w, r, in, "")
}

// apiModel is in as an API, with the problems of in and of its endpoints:
// one pointing at a denied destination (Config.EndpointDeny) is refused.
func (p *Portal) apiModel(in *apiDTO) (model.API, []string) {
	api, problems := in.toModel()
	for name, ep := range map[string]*model.Endpoint{"production_endpoints": api.Production, "sandbox_endpoints": api.Sandbox} {
		if ep == nil {
			continue
		}
		if err := p.endpointDeny.Check(ep.URL); err != nil {
			problems = append(problems, "endpointConfig."+name+".url "+err.Error())
		}
	}
	return api, problems
}

// create validates in and stores it as a new API owned by the caller.
// create stores a new API from in, with the OpenAPI definition (JSON) its
// operations came from, "" for none.
func (p *Portal) create(w http.ResponseWriter, r *http.Request, in apiDTO, definition string) {
	api, problems := p.apiModel(&in)
	if len(problems) > 0 {
		badRequest(w, problems)
		return
	}
	api.Provider = subject(r)
	var created *model.API
	var err error
	if definition == "" {
		created, err = p.store.CreateAPI(r.Context(), api)
	} else {
		created, err = p.store.PutAPIWithDefinition(r.Context(), api, definition)
	}
	if err != nil {
		p.fail(w, r, err)
		return
	}
	w.Header().Set("Location", PublisherBase+"/apis/"+created.ID)
	writeJSON(w, http.StatusCreated, toAPIDTO(created))
}

func (p *Portal) getAPI(w http.ResponseWriter, r *http.Request) {
	api, err := p.store.GetAPI(r.Context(), chi.URLParam(r, "apiId"))
	if err != nil {
		p.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toAPIDTO(api))
}

func (p *Portal) updateAPI(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "apiId")
	var in apiDTO
	if !p.decodeJSON(w, r, &in) {
		return
	}
	api, problems := p.apiModel(&in)
	if in.ID != "" && in.ID != id {
		problems = append(problems, "id "+strconv.Quote(in.ID)+" does not match the path's apiId")
	}
	if len(problems) > 0 {
		badRequest(w, problems)
		return
	}
	api.ID = id
	updated, err := p.store.UpdateAPI(r.Context(), api)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toAPIDTO(updated))
}

func (p *Portal) deleteAPI(w http.ResponseWriter, r *http.Request) {
	if err := p.store.DeleteAPI(r.Context(), chi.URLParam(r, "apiId")); err != nil {
		p.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

type revisionRequest struct {
	Description string `json:"description"`
}

// revisionDTO is WSO2's APIRevisionDTO.
type revisionDTO struct {
	ID             string          `json:"id"`
	DisplayName    string          `json:"displayName"`
	Description    string          `json:"description"`
	CreatedTime    string          `json:"createdTime"`
	APIInfo        revisionAPIInfo `json:"apiInfo"`
	DeploymentInfo []deploymentDTO `json:"deploymentInfo"`
}

type revisionAPIInfo struct {
	ID string `json:"id"`
}

// deploymentDTO is WSO2's APIRevisionDeploymentDTO.
type deploymentDTO struct {
	RevisionUUID        string `json:"revisionUuid"`
	Name                string `json:"name"`
	VHost               string `json:"vhost"`
	DisplayOnDevportal  bool   `json:"displayOnDevportal"`
	DeployedTime        string `json:"deployedTime"`
	SuccessDeployedTime string `json:"successDeployedTime"`
	Status              string `json:"status"`
}

func toDeploymentDTOs(deps []store.DeploymentInfo) []deploymentDTO {
	out := make([]deploymentDTO, 0, len(deps))
	for _, d := range deps {
		t := d.DeployedAt.UTC().Format(time.RFC3339)
		out = append(out, deploymentDTO{
			RevisionUUID: d.RevisionID, Name: d.Environment, VHost: d.VHost, DisplayOnDevportal: d.DisplayOnDevportal,
			DeployedTime: t, SuccessDeployedTime: t, Status: "APPROVED",
		})
	}
	return out
}

func toRevisionDTO(rev *store.Revision) revisionDTO {
	return revisionDTO{
		ID: rev.ID, DisplayName: "Revision " + strconv.Itoa(rev.Number), Description: rev.Description,
		CreatedTime: rev.CreatedAt.UTC().Format(time.RFC3339), APIInfo: revisionAPIInfo{ID: rev.APIID},
		DeploymentInfo: toDeploymentDTOs(rev.Deployments),
	}
}

func (p *Portal) createRevision(w http.ResponseWriter, r *http.Request) {
	var in revisionRequest
	if !p.decodeJSON(w, r, &in) {
		return
	}
	rev, err := p.store.CreateRevision(r.Context(), chi.URLParam(r, "apiId"), in.Description)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, toRevisionDTO(rev))
}

// listRevisions takes WSO2's query deployed:true (revisions deployed
// somewhere) or deployed:false.
func (p *Portal) listRevisions(w http.ResponseWriter, r *http.Request) {
	deployed := ""
	if q := r.URL.Query().Get("query"); q != "" {
		v, ok := strings.CutPrefix(q, "deployed:")
		if !ok || (v != "true" && v != "false") {
			badRequest(w, []string{"query " + strconv.Quote(q) + " is not supported; want deployed:true or deployed:false"})
			return
		}
		deployed = v
	}
	revs, err := p.store.ListRevisions(r.Context(), chi.URLParam(r, "apiId"))
	if err != nil {
		p.fail(w, r, err)
		return
	}
	out := make([]revisionDTO, 0, len(revs))
	for i := range revs {
		if deployed == "" || (len(revs[i].Deployments) > 0) == (deployed == "true") {
			out = append(out, toRevisionDTO(&revs[i]))
		}
	}
	writeJSON(w, http.StatusOK, newList(out))
}

// deployTarget is one element of WSO2's deploy-revision body.
type deployTarget struct {
	Name               *string `json:"name"`
	VHost              string  `json:"vhost"`
	DisplayOnDevportal *bool   `json:"displayOnDevportal"`
}

// readTargets reads and checks the body of deploy-revision and
// undeploy-revision.
func (p *Portal) readTargets(w http.ResponseWriter, r *http.Request) ([]store.EnvTarget, bool) {
	var in []deployTarget
	if !p.decodeJSON(w, r, &in) {
		return nil, false
	}
	var problems []string
	if len(in) == 0 {
		problems = append(problems, "body must list at least one environment")
	}
	targets := make([]store.EnvTarget, 0, len(in))
	for i, t := range in {
		if t.Name == nil || *t.Name == "" {
			problems = append(problems, "["+strconv.Itoa(i)+"].name is required")
			continue
		}
		show := true
		if t.DisplayOnDevportal != nil {
			show = *t.DisplayOnDevportal
		}
		targets = append(targets, store.EnvTarget{Name: *t.Name, VHost: t.VHost, DisplayOnDevportal: show})
	}
	if len(problems) > 0 {
		badRequest(w, problems)
		return nil, false
	}
	return targets, true
}

// revisionParam reads the revision of deploy-, undeploy- and restore-revision:
// revisionId, or, as WSO2 takes too (apictl sends it), revisionNumber.
func (p *Portal) revisionParam(w http.ResponseWriter, r *http.Request) (string, bool) {
	q := r.URL.Query()
	if id := q.Get("revisionId"); id != "" {
		return id, true
	}
	num := q.Get("revisionNumber")
	if num == "" {
		badRequest(w, []string{"revisionId or revisionNumber is required"})
		return "", false
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 1 {
		badRequest(w, []string{"revisionNumber must be a whole number from 1"})
		return "", false
	}
	apiID := chi.URLParam(r, "apiId")
	revs, err := p.store.ListRevisions(r.Context(), apiID)
	if err != nil {
		p.fail(w, r, err)
		return "", false
	}
	for _, rev := range revs {
		if rev.Number == n {
			return rev.ID, true
		}
	}
	writeError(w, http.StatusNotFound, "api "+apiID+" has no revision "+num)
	return "", false
}

func (p *Portal) deployRevision(w http.ResponseWriter, r *http.Request) {
	revID, ok := p.revisionParam(w, r)
	if !ok {
		return
	}
	targets, ok := p.readTargets(w, r)
	if !ok {
		return
	}
	deps, err := p.store.Deploy(r.Context(), chi.URLParam(r, "apiId"), revID, targets)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, toDeploymentDTOs(deps))
}

func (p *Portal) undeployRevision(w http.ResponseWriter, r *http.Request) {
	revID, ok := p.revisionParam(w, r)
	if !ok {
		return
	}
	var envs []string
	if r.URL.Query().Get("allEnvironments") != "true" {
		targets, ok := p.readTargets(w, r)
		if !ok {
			return
		}
		for _, t := range targets {
			envs = append(envs, t.Name)
		}
	}
	deps, err := p.store.Undeploy(r.Context(), chi.URLParam(r, "apiId"), revID, envs)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, toDeploymentDTOs(deps))
}

// workflowResponseDTO is WSO2's WorkflowResponseDTO.
type workflowResponseDTO struct {
	WorkflowStatus string            `json:"workflowStatus"`
	JSONPayload    string            `json:"jsonPayload"`
	LifecycleState lifecycleStateDTO `json:"lifecycleState"`
}

type lifecycleStateDTO struct {
	State                string          `json:"state"`
	CheckItems           []any           `json:"checkItems"`
	AvailableTransitions []transitionDTO `json:"availableTransitions"`
}

type transitionDTO struct {
	Event       string `json:"event"`
	TargetState string `json:"targetState"`
}

// stateName is WSO2's display name of a lifecycle state ("Published").
func stateName(s model.LifecycleStatus) string {
	v := strings.ToLower(string(s))
	if v == "" {
		return ""
	}
	return strings.ToUpper(v[:1]) + v[1:]
}

func lifecycleState(s model.LifecycleStatus) lifecycleStateDTO {
	st := lifecycleStateDTO{State: stateName(s), CheckItems: []any{}, AvailableTransitions: []transitionDTO{}}
	for _, a := range store.Actions(s) {
		st.AvailableTransitions = append(st.AvailableTransitions, transitionDTO{Event: a, TargetState: stateName(store.Target(s, a))})
	}
	return st
}

func (p *Portal) changeLifecycle(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var problems []string
	if q.Get("apiId") == "" {
		problems = append(problems, "apiId is required")
	}
	if q.Get("action") == "" {
		problems = append(problems, "action is required")
	}
	if len(problems) > 0 {
		badRequest(w, problems)
		return
	}
	ch, err := p.store.ChangeLifecycle(r.Context(), q.Get("apiId"), q.Get("action"), subject(r))
	if err != nil {
		p.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, workflowResponseDTO{WorkflowStatus: "APPROVED", LifecycleState: lifecycleState(ch.Current)})
}

// pubSubscriptionDTO is the publisher's SubscriptionDTO: a subscription to
// one of the publisher's APIs, with the application that holds it.
type pubSubscriptionDTO struct {
	SubscriptionID            string             `json:"subscriptionId"`
	ApplicationInfo           pubApplicationInfo `json:"applicationInfo"`
	ThrottlingPolicy          string             `json:"throttlingPolicy"`
	RequestedThrottlingPolicy string             `json:"requestedThrottlingPolicy"`
	SubscriptionStatus        string             `json:"subscriptionStatus"`
}

// pubApplicationInfo is WSO2's ApplicationInfoDTO as the publisher shows it.
type pubApplicationInfo struct {
	ApplicationID string `json:"applicationId"`
	Name          string `json:"name"`
	Subscriber    string `json:"subscriber"`
}

// pubListSubscriptions is GET /subscriptions?apiId=: the subscriptions to
// an API, paged with limit and offset.
func (p *Portal) pubListSubscriptions(w http.ResponseWriter, r *http.Request) {
	limit, offset, problems := pageParams(r)
	apiID := r.URL.Query().Get("apiId")
	if apiID == "" {
		problems = append(problems, "apiId is required")
	}
	if len(problems) > 0 {
		badRequest(w, problems)
		return
	}
	subs, err := p.store.ListAPISubscriptions(r.Context(), apiID)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	page := subs[min(offset, len(subs)):min(offset+limit, len(subs))]
	out := make([]pubSubscriptionDTO, 0, len(page))
	for _, s := range page {
		out = append(out, pubSubscriptionDTO{
			SubscriptionID:   s.ID,
			ApplicationInfo:  pubApplicationInfo{ApplicationID: s.ApplicationID, Name: s.ApplicationName, Subscriber: s.ApplicationOwner},
			ThrottlingPolicy: s.ThrottlingPolicy, RequestedThrottlingPolicy: s.RequestedThrottlingPolicy, SubscriptionStatus: s.Status,
		})
	}
	l := newList(out)
	l.Pagination = pagination(PublisherBase+"/subscriptions", limit, offset, len(subs))
	writeJSON(w, http.StatusOK, l)
}

// blockSubscription is POST /subscriptions/block-subscription
// ?subscriptionId=&blockState=BLOCKED|PROD_ONLY_BLOCKED. As WSO2, it
// answers 200 with no body; the gateways learn of it through the
// subscription event.
func (p *Portal) blockSubscription(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var problems []string
	if q.Get("subscriptionId") == "" {
		problems = append(problems, "subscriptionId is required")
	}
	switch st := q.Get("blockState"); st {
	case model.SubBlocked, model.SubProdOnlyBlocked:
	case "":
		problems = append(problems, "blockState is required")
	default:
		problems = append(problems, "blockState "+strconv.Quote(st)+" must be BLOCKED or PROD_ONLY_BLOCKED")
	}
	if len(problems) > 0 {
		badRequest(w, problems)
		return
	}
	p.setSubscriptionStatus(w, r, q.Get("subscriptionId"), q.Get("blockState"))
}

// unblockSubscription is POST /subscriptions/unblock-subscription
// ?subscriptionId=.
func (p *Portal) unblockSubscription(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("subscriptionId")
	if id == "" {
		badRequest(w, []string{"subscriptionId is required"})
		return
	}
	p.setSubscriptionStatus(w, r, id, model.SubUnblocked)
}

func (p *Portal) setSubscriptionStatus(w http.ResponseWriter, r *http.Request, id, status string) {
	if _, err := p.store.SetSubscriptionStatus(r.Context(), id, status); err != nil {
		p.fail(w, r, err)
		return
	}
	p.log.Info().Str("subscription_id", id).Str("status", status).Str("by", subject(r)).Msg("subscription status changed")
	w.WriteHeader(http.StatusOK)
}

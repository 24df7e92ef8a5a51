package portal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/go-chi/chi/v5"

	"github.com/apim-dev/apim/internal/model"
	"github.com/apim-dev/apim/keymgr"
)

// This file holds an API's OpenAPI definition: validating one
// (validate-openapi), reading it (GET /swagger, in the publisher as stored,
// in the devportal with the gateway's URLs) and replacing the resources
// with a new one (PUT /swagger). apim routes by an API's resources; the
// definition they came from is kept beside them, and what GET /swagger
// answers is that definition with its operations made to match the
// resources as they are now.

func (p *Portal) definitionRoutes(r chi.Router) {
	r.With(p.authorize(scopesAPICreate...)).Post("/apis/validate-openapi", p.validateOpenAPI)
	r.With(p.authorize(scopesAPIView...)).Get("/apis/{apiId}/swagger", p.getSwagger)
	r.With(p.authorize(scopesAPICreate...)).Put("/apis/{apiId}/swagger", p.putSwagger)
	r.With(p.authorize(scopesAPIView...)).Get("/apis/{apiId}/deployments", p.listAPIDeployments(false))
	r.With(p.authorize(scopesAPIView...)).Get("/apis/{apiId}/deploy-revision", p.listAPIDeployments(true))
}

// definitionFetchTimeout bounds fetching a definition by URL.
const definitionFetchTimeout = 10 * time.Second

// readDefinition reads the definition of a parsed multipart body: its file
// part, its url field (fetched) or its inline field, exactly one of them.
func (p *Portal) readDefinition(r *http.Request, inline string) ([]byte, error) {
	file, _, ferr := r.FormFile("file")
	if ferr == nil {
		defer file.Close()
	}
	link, text := r.FormValue("url"), r.FormValue(inline)
	given := 0
	for _, ok := range []bool{ferr == nil, link != "", text != ""} {
		if ok {
			given++
		}
	}
	switch {
	case given != 1:
		return nil, fmt.Errorf("give exactly one of file (a multipart file part), url or %s", inline)
	case ferr == nil:
		return io.ReadAll(file)
	case link != "":
		return p.fetchDefinition(r.Context(), link)
	}
	return []byte(text), nil
}

// fetchDefinition GETs a definition by URL: http or https, not a denied
// destination (redirects included), within definitionFetchTimeout and the
// portal's body limit. The control plane makes the call, so the deny list
// that keeps endpoints off apim's own ports applies here too.
func (p *Portal) fetchDefinition(ctx context.Context, raw string) ([]byte, error) {
	check := func(u *url.URL) error {
		if (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
			return fmt.Errorf("url %q: want an absolute http or https URL", u.Redacted())
		}
		if err := p.endpointDeny.Check(u.String()); err != nil {
			return fmt.Errorf("url %w", err)
		}
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("url %q: %w", raw, err)
	}
	if err := check(u); err != nil {
		return nil, err
	}
	// The dialer checks the address each name resolved to, so that a host
	// name cannot lead to a denied address either.
	dialer := &net.Dialer{Timeout: definitionFetchTimeout, Control: func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return err
		}
		return p.endpointDeny.CheckAddr(ap)
	}}
	client := &http.Client{
		Transport: &http.Transport{DialContext: dialer.DialContext, TLSHandshakeTimeout: definitionFetchTimeout},
		Timeout:   definitionFetchTimeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return errors.New("more than 3 redirects")
			}
			return check(req.URL)
		},
	}
	// The URL was checked above against the deny list, and so is every
	// redirect (CheckRedirect).
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil) //nolint:gosec // G704: checked against the deny list above
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req) //nolint:gosec // G704: checked against the deny list above
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", u.Redacted(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch %s: %s", u.Redacted(), resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, p.maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", u.Redacted(), err)
	}
	if int64(len(data)) > p.maxBody {
		return nil, fmt.Errorf("fetch %s: the definition is larger than %d bytes", u.Redacted(), p.maxBody)
	}
	return data, nil
}

// validationDTO is WSO2's OpenAPIDefinitionValidationResponse.
type validationDTO struct {
	IsValid bool               `json:"isValid"`
	Content *string            `json:"content,omitempty"`
	Info    *validationInfoDTO `json:"info,omitempty"`
	Errors  []errorListItem    `json:"errors"`
}

type validationInfoDTO struct {
	Name           string   `json:"name"`
	Version        string   `json:"version"`
	Context        string   `json:"context"`
	Description    string   `json:"description"`
	OpenAPIVersion string   `json:"openAPIVersion"`
	Endpoints      []string `json:"endpoints"`
}

// validateOpenAPI is POST /apis/validate-openapi: a definition as a file,
// a URL or inline (inlineAPIDefinition). As WSO2, an invalid definition
// is a 200 with isValid false and the errors; a request without one is a
// 400.
func (p *Portal) validateOpenAPI(w http.ResponseWriter, r *http.Request) {
	cleanup, ok := p.parseMultipart(w, r)
	if !ok {
		return
	}
	defer cleanup()
	returnContent, problems := boolParam(r.URL.Query().Get("returnContent"), "returnContent", false)
	if len(problems) > 0 {
		badRequest(w, problems)
		return
	}
	data, err := p.readDefinition(r, "inlineAPIDefinition")
	if err != nil {
		badRequest(w, []string{err.Error()})
		return
	}
	out := validationDTO{Errors: []errorListItem{}}
	doc, err := parseOpenAPI(r.Context(), data)
	if err != nil {
		out.Errors = append(out.Errors, errorListItem{Code: "900754", Message: "Invalid OpenAPI definition", Description: err.Error()})
		writeJSON(w, http.StatusOK, out)
		return
	}
	head, _ := readHead(data) // parsed above
	out.IsValid = true
	out.Info = &validationInfoDTO{OpenAPIVersion: head.Version(), Endpoints: []string{}}
	if doc.Info != nil {
		out.Info.Name, out.Info.Version, out.Info.Description = doc.Info.Title, doc.Info.Version, doc.Info.Description
	}
	for _, s := range doc.Servers {
		out.Info.Endpoints = append(out.Info.Endpoints, s.URL)
		if u, err := url.Parse(s.URL); err == nil && out.Info.Context == "" && u.Path != "" && u.Path != "/" {
			out.Info.Context = strings.TrimSuffix(u.Path, "/")
		}
	}
	if returnContent {
		s := string(data)
		out.Content = &s
	}
	writeJSON(w, http.StatusOK, out)
}

// definitionOf is the definition GET /swagger answers for api: the stored
// one (JSON, "" for none) with one operation per resource, those still
// there keeping what the definition said of them (parameters, bodies,
// responses), new ones made from the resource; WSO2's x-auth-type,
// x-throttling-tier and the scopes always from the resource.
func definitionOf(api *model.API, stored string) *openapi3.T {
	made := minimalOpenAPI(api)
	if stored == "" {
		return made
	}
	doc, err := openapi3.NewLoader().LoadFromData([]byte(stored))
	if err != nil || doc.Paths == nil {
		return made
	}
	paths := openapi3.NewPaths()
	for _, op := range api.Operations {
		o := made.Paths.Value(op.Target).GetOperation(op.Verb)
		if old := doc.Paths.Value(op.Target); old != nil {
			if kept := old.GetOperation(op.Verb); kept != nil {
				kept.Security, kept.Extensions = o.Security, mergeExtensions(kept.Extensions, o.Extensions)
				o = kept
			}
		}
		item := paths.Value(op.Target)
		if item == nil {
			item = &openapi3.PathItem{}
			if old := doc.Paths.Value(op.Target); old != nil {
				item.Parameters, item.Summary, item.Description = old.Parameters, old.Summary, old.Description
			}
			paths.Set(op.Target, item)
		}
		item.SetOperation(op.Verb, o)
	}
	doc.Paths = paths
	if doc.Info == nil {
		doc.Info = &openapi3.Info{}
	}
	doc.Info.Title, doc.Info.Version = api.Name, api.Version
	doc.Security = made.Security
	if doc.Components == nil {
		doc.Components = &openapi3.Components{}
	}
	if doc.Components.SecuritySchemes == nil {
		doc.Components.SecuritySchemes = openapi3.SecuritySchemes{}
	}
	doc.Components.SecuritySchemes["default"] = made.Components.SecuritySchemes["default"]
	doc.Extensions = mergeExtensions(doc.Extensions, made.Extensions)
	return doc
}

func mergeExtensions(into, from map[string]any) map[string]any {
	if into == nil {
		into = map[string]any{}
	}
	for k, v := range from {
		into[k] = v
	}
	return into
}

func (p *Portal) getSwagger(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "apiId")
	api, err := p.store.GetAPI(r.Context(), id)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	stored, err := p.store.APIDefinition(r.Context(), id)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, definitionOf(api, stored))
}

// putSwagger is PUT /apis/{apiId}/swagger: the API's resources become the
// operations of the definition given (apiDefinition, url or file), which
// is kept; the rest of the API stays. It answers the new definition.
func (p *Portal) putSwagger(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "apiId")
	cleanup, ok := p.parseMultipart(w, r)
	if !ok {
		return
	}
	defer cleanup()
	data, err := p.readDefinition(r, "apiDefinition")
	if err != nil {
		badRequest(w, []string{err.Error()})
		return
	}
	doc, err := parseOpenAPI(r.Context(), data)
	if err != nil {
		badRequest(w, []string{"the definition is not a valid OpenAPI definition: " + err.Error()})
		return
	}
	cur, err := p.store.GetAPI(r.Context(), id)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	in := toAPIDTO(cur)
	in.Operations = operationsOf(doc)
	api, problems := p.apiModel(&in)
	if len(problems) > 0 {
		badRequest(w, problems)
		return
	}
	api.ID = id
	def, err := json.Marshal(doc)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	updated, err := p.store.PutAPIWithDefinition(r.Context(), api, string(def))
	if err != nil {
		p.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, definitionOf(updated, string(def)))
}

// listAPIDeployments is GET /apis/{apiId}/deployments, where the API's
// revisions are deployed, and, bare, GET /apis/{apiId}/deploy-revision,
// WSO2's list of the same as an array.
func (p *Portal) listAPIDeployments(bare bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		deps, err := p.store.ListDeployments(r.Context(), chi.URLParam(r, "apiId"))
		if err != nil {
			p.fail(w, r, err)
			return
		}
		if bare {
			writeJSON(w, http.StatusOK, toDeploymentDTOs(deps))
			return
		}
		writeJSON(w, http.StatusOK, newList(toDeploymentDTOs(deps)))
	}
}

// devGetSwagger is the devportal's GET /apis/{apiId}/swagger: the
// definition with the gateway URLs of the environments the API is shown
// in (environmentName: one of them) and the security schemes a caller
// uses: OAuth2 with apim's token endpoint, and the apikey header when the
// API takes API keys.
func (p *Portal) devGetSwagger(w http.ResponseWriter, r *http.Request) {
	api, ok := p.shownAPI(w, r)
	if !ok {
		return
	}
	id := api.ID
	stored, err := p.store.APIDefinition(r.Context(), id)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	deps, err := p.store.ListDeployments(r.Context(), id)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	envs, err := p.store.ListEnvironments(r.Context())
	if err != nil {
		p.fail(w, r, err)
		return
	}
	only := r.URL.Query().Get("environmentName")
	doc := definitionOf(api, stored)
	doc.Servers = openapi3.Servers{}
	for _, d := range deps {
		if !d.DisplayOnDevportal || (only != "" && d.Environment != only) {
			continue
		}
		for _, env := range envs {
			if env.Name != d.Environment {
				continue
			}
			for _, v := range env.VHosts {
				if d.VHost != "" && v.Host != d.VHost {
					continue
				}
				base := v.HTTPContext + api.BasePath()
				if v.HTTPSPort > 0 {
					doc.Servers = append(doc.Servers, &openapi3.Server{URL: "https://" + net.JoinHostPort(v.Host, strconv.Itoa(v.HTTPSPort)) + base})
				}
				if v.HTTPPort > 0 {
					doc.Servers = append(doc.Servers, &openapi3.Server{URL: "http://" + net.JoinHostPort(v.Host, strconv.Itoa(v.HTTPPort)) + base})
				}
			}
		}
	}
	if only != "" && len(doc.Servers) == 0 {
		writeError(w, http.StatusNotFound, "api "+id+" is not deployed to environment "+only)
		return
	}
	if scheme := doc.Components.SecuritySchemes["default"]; scheme != nil && scheme.Value != nil && scheme.Value.Flows != nil {
		flow := &openapi3.OAuthFlow{TokenURL: tokenURL(r), Scopes: map[string]string{}}
		if old := scheme.Value.Flows.Implicit; old != nil {
			flow.Scopes = old.Scopes
		}
		scheme.Value.Flows = &openapi3.OAuthFlows{ClientCredentials: flow, Password: flow}
	}
	if slices.Contains(api.Schemes(), model.SchemeAPIKey) {
		doc.Components.SecuritySchemes["api_key"] = &openapi3.SecuritySchemeRef{Value: openapi3.NewSecurityScheme().
			WithType("apiKey").WithIn("header").WithName(model.APIKeyHeader)}
		doc.Security = append(doc.Security, openapi3.SecurityRequirement{"api_key": []string{}})
	}
	writeJSON(w, http.StatusOK, doc)
}

// tokenURL is the resident key manager's token endpoint as the caller
// reaches the control plane.
func tokenURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + keymgr.PathToken
}

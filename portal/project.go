package portal

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/go-chi/chi/v5"
	"gopkg.in/yaml.v3"

	"github.com/apim-dev/apim/internal/model"
	"github.com/apim-dev/apim/internal/store"
)

// This file holds WSO2's API export and import (GET /apis/export, POST
// /apis/import): an API as an apictl project, a zip with one top folder
// <Name>-<Version>/ holding api.yaml, Definitions/swagger.yaml and
// deployment_environments.yaml, in apictl's v4.7.0 format.

// Export and import scopes: those of viewing and creating APIs, or WSO2's
// apim:api_import_export.
var (
	scopesAPIExport = []string{"apim:api_view", "apim:api_create", "apim:api_publish", "apim:api_manage", "apim:api_import_export"}
	scopesAPIImport = []string{"apim:api_create", "apim:api_manage", "apim:api_import_export"}
)

const (
	// projectVersion is the apictl project format apim writes.
	projectVersion = "v4.7.0"
	// maxProjectEntries is how many entries a project zip may have.
	maxProjectEntries = 1000
	typeAPI           = "api"
	typeDeployEnvs    = "deployment_environments"
)

func (p *Portal) projectRoutes(r chi.Router) {
	r.With(p.authorize(scopesAPIExport...)).Get("/apis/export", p.exportAPI)
	r.With(p.authorize(scopesAPIImport...)).Post("/apis/import", p.importAPI)
}

// projectFile is the envelope of every apictl project file.
type projectFile struct {
	Type    string          `json:"type"`
	Version string          `json:"version"`
	Data    json.RawMessage `json:"data"`
}

// deploymentEnvDTO is one entry of deployment_environments.yaml.
type deploymentEnvDTO struct {
	DisplayOnDevportal    *bool  `json:"displayOnDevportal,omitempty"`
	DeploymentEnvironment string `json:"deploymentEnvironment"`
	DeploymentVhost       string `json:"deploymentVhost,omitempty"`
}

// exportAPI answers the API named by apiId, or by name and version (and
// providerName), as an apictl project zip. With latestRevision=true or
// revisionNumber=N it is that revision's definition.
func (p *Portal) exportAPI(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var problems []string
	format := strings.ToUpper(q.Get("format"))
	if format == "" {
		format = "YAML"
	}
	if format != "YAML" && format != "JSON" {
		problems = append(problems, "format "+strconv.Quote(q.Get("format"))+" is not supported; YAML or JSON")
	}
	preserveStatus, ps := boolParam(q.Get("preserveStatus"), "preserveStatus", true)
	problems = append(problems, ps...)
	latest, ps := boolParam(q.Get("latestRevision"), "latestRevision", false)
	problems = append(problems, ps...)
	revNumber := 0
	if v := q.Get("revisionNumber"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			problems = append(problems, "revisionNumber must be a whole number from 1")
		}
		revNumber = n
	}
	if q.Get("apiId") == "" && (q.Get("name") == "" || q.Get("version") == "") {
		problems = append(problems, "apiId, or name and version, are required")
	}
	if len(problems) > 0 {
		badRequest(w, problems)
		return
	}
	api, ok := p.findExported(w, r)
	if !ok {
		return
	}
	if latest || revNumber > 0 {
		if api, ok = p.exportedRevision(w, r, api, revNumber); !ok {
			return
		}
	}
	deps, err := p.store.ListDeployments(r.Context(), api.ID)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	stored, err := p.store.APIDefinition(r.Context(), api.ID)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	data, err := buildProject(api, stored, deps, format, preserveStatus)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/zip")
	w.Header().Set("Content-Disposition", `attachment; filename="`+projectFolder(api)+`.zip"`)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(data)
}

// findExported loads the API export names.
func (p *Portal) findExported(w http.ResponseWriter, r *http.Request) (*model.API, bool) {
	q := r.URL.Query()
	if id := q.Get("apiId"); id != "" {
		api, err := p.store.GetAPI(r.Context(), id)
		if err != nil {
			p.fail(w, r, err)
			return nil, false
		}
		return api, true
	}
	opts := store.ListAPIsOptions{Limit: 2, Matches: []store.APIMatch{
		{Field: "name", Value: q.Get("name"), Exact: true}, {Field: "version", Value: q.Get("version"), Exact: true},
	}}
	if pr := q.Get("providerName"); pr != "" {
		opts.Matches = append(opts.Matches, store.APIMatch{Field: "provider", Value: pr, Exact: true})
	}
	apis, _, err := p.store.ListAPIs(r.Context(), opts)
	if err != nil {
		p.fail(w, r, err)
		return nil, false
	}
	if len(apis) == 0 {
		msg := "api " + q.Get("name") + " version " + q.Get("version")
		if pr := q.Get("providerName"); pr != "" {
			msg += " of provider " + pr
		}
		writeError(w, http.StatusNotFound, msg+" does not exist")
		return nil, false
	}
	return &apis[0], true
}

// exportedRevision is the definition of revision number n of api, or of
// its latest revision when n is 0, with the API's id and status.
func (p *Portal) exportedRevision(w http.ResponseWriter, r *http.Request, api *model.API, n int) (*model.API, bool) {
	revs, err := p.store.ListRevisions(r.Context(), api.ID)
	if err != nil {
		p.fail(w, r, err)
		return nil, false
	}
	var pick *store.Revision
	for i := range revs {
		if (n == 0 && (pick == nil || revs[i].Number > pick.Number)) || revs[i].Number == n {
			pick = &revs[i]
		}
	}
	if pick == nil {
		which := "has no revision"
		if n > 0 {
			which = "has no revision " + strconv.Itoa(n)
		}
		writeError(w, http.StatusNotFound, "api "+api.ID+" "+which)
		return nil, false
	}
	def := pick.API
	def.ID, def.Status, def.Provider = api.ID, api.Status, api.Provider
	return &def, true
}

func projectFolder(api *model.API) string { return api.Name + "-" + api.Version }

// buildProject writes the apictl project of api, with its stored
// definition (definitionOf), deployed at deps.
func buildProject(api *model.API, stored string, deps []store.DeploymentInfo, format string, preserveStatus bool) ([]byte, error) {
	dto := toAPIDTO(api)
	if !preserveStatus {
		dto.LifeCycleStatus = string(model.StatusCreated)
	}
	envs := make([]deploymentEnvDTO, 0, len(deps))
	for _, d := range deps {
		show := d.DisplayOnDevportal
		envs = append(envs, deploymentEnvDTO{DisplayOnDevportal: &show, DeploymentEnvironment: d.Environment, DeploymentVhost: d.VHost})
	}
	def, err := json.Marshal(definitionOf(api, stored))
	if err != nil {
		return nil, fmt.Errorf("encode openapi definition: %w", err)
	}
	files := []struct {
		name string
		body any
	}{
		{"api", projectFile{Type: typeAPI, Version: projectVersion, Data: mustJSON(dto)}},
		{"Definitions/swagger", json.RawMessage(def)},
		{"deployment_environments", projectFile{Type: typeDeployEnvs, Version: projectVersion, Data: mustJSON(envs)}},
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	top := projectFolder(api)
	for _, f := range files {
		raw, err := json.MarshalIndent(f.body, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", f.name, err)
		}
		ext := ".json"
		if format == "YAML" {
			ext = ".yaml"
			if raw, err = jsonToYAML(raw); err != nil {
				return nil, fmt.Errorf("encode %s: %w", f.name, err)
			}
		}
		fw, err := zw.CreateHeader(&zip.FileHeader{Name: top + "/" + f.name + ext, Method: zip.Deflate})
		if err != nil {
			return nil, fmt.Errorf("write %s: %w", f.name, err)
		}
		if _, err := fw.Write(raw); err != nil {
			return nil, fmt.Errorf("write %s: %w", f.name, err)
		}
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("close zip: %w", err)
	}
	return buf.Bytes(), nil
}

// mustJSON encodes a DTO, which always encodes.
func mustJSON(v any) json.RawMessage {
	raw, _ := json.Marshal(v)
	return raw
}

// jsonToYAML re-encodes JSON as block-style YAML, keeping the key order.
func jsonToYAML(raw []byte) ([]byte, error) {
	var n yaml.Node
	if err := yaml.Unmarshal(raw, &n); err != nil {
		return nil, fmt.Errorf("decode json: %w", err)
	}
	var plain func(*yaml.Node)
	plain = func(n *yaml.Node) {
		n.Style = 0
		for _, c := range n.Content {
			plain(c)
		}
	}
	plain(&n)
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return nil, fmt.Errorf("encode yaml: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode yaml: %w", err)
	}
	return out.Bytes(), nil
}

var pathParam = regexp.MustCompile(`\{([^{}]+)\}`)

// minimalOpenAPI is an OpenAPI 3.0 definition of api's resources: apim
// keeps the resources, not the definition they were imported from.
// WSO2's x-auth-type and x-throttling-tier carry each resource's settings.
func minimalOpenAPI(api *model.API) *openapi3.T {
	scopes := map[string]string{}
	for _, s := range api.Scopes {
		scopes[s.Scope.Name] = s.Scope.Description
	}
	doc := &openapi3.T{
		OpenAPI:    "3.0.1",
		Info:       &openapi3.Info{Title: api.Name, Description: api.Description, Version: api.Version},
		Servers:    openapi3.Servers{{URL: "/"}},
		Paths:      openapi3.NewPaths(),
		Security:   openapi3.SecurityRequirements{{"default": []string{}}},
		Extensions: map[string]any{"x-wso2-basePath": api.Context},
	}
	for _, op := range api.Operations {
		item := doc.Paths.Value(op.Target)
		if item == nil {
			item = &openapi3.PathItem{}
			doc.Paths.Set(op.Target, item)
		}
		o := openapi3.NewOperation()
		o.Responses = openapi3.NewResponses(openapi3.WithStatus(200, &openapi3.ResponseRef{Value: openapi3.NewResponse().WithDescription("OK")}))
		for _, m := range pathParam.FindAllStringSubmatch(op.Target, -1) {
			o.AddParameter(openapi3.NewPathParameter(m[1]).WithSchema(openapi3.NewStringSchema()))
		}
		o.Security = &openapi3.SecurityRequirements{{"default": nonNilStrings(op.Scopes)}}
		for _, s := range op.Scopes {
			if _, ok := scopes[s]; !ok {
				scopes[s] = ""
			}
		}
		o.Extensions = map[string]any{"x-auth-type": op.AuthType, "x-throttling-tier": op.ThrottlingPolicy}
		item.SetOperation(op.Verb, o)
	}
	doc.Components = &openapi3.Components{SecuritySchemes: openapi3.SecuritySchemes{"default": &openapi3.SecuritySchemeRef{
		Value: &openapi3.SecurityScheme{Type: "oauth2", Flows: &openapi3.OAuthFlows{Implicit: &openapi3.OAuthFlow{
			AuthorizationURL: "https://test.com", Scopes: scopes,
		}}},
	}}}
	return doc
}

// boolParam reads an optional true/false query parameter.
func boolParam(v, name string, def bool) (bool, []string) {
	switch v {
	case "":
		return def, nil
	case "true":
		return true, nil
	case "false":
		return false, nil
	default:
		return def, []string{name + " must be true or false, got " + strconv.Quote(v)}
	}
}

// importAPI stores the API of an apictl project zip (multipart part file),
// as POST /apis or, with overwrite=true and an API of the same name and
// version, PUT /apis/{apiId}; then, as WSO2, it makes a revision and
// deploys it to the environments of deployment_environments.yaml. All of
// it is one transaction. preserveProvider=false makes the caller the
// provider.
func (p *Portal) importAPI(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var problems []string
	overwrite, ps := boolParam(q.Get("overwrite"), "overwrite", false)
	problems = append(problems, ps...)
	preserveProvider, ps := boolParam(q.Get("preserveProvider"), "preserveProvider", true)
	problems = append(problems, ps...)
	rotate, ps := boolParam(q.Get("rotateRevision"), "rotateRevision", false)
	problems = append(problems, ps...)
	dryRun, ps := boolParam(q.Get("dryRun"), "dryRun", false)
	problems = append(problems, ps...)
	if len(problems) > 0 {
		badRequest(w, problems)
		return
	}
	if dryRun {
		writeError(w, http.StatusNotImplemented, "dryRun (the governance compliance check) is not supported")
		return
	}
	data, ok := p.readFilePart(w, r, "file is required: the API project as a zip file part")
	if !ok {
		return
	}
	proj, perr := readProject(data, p.maxBody)
	if perr != nil {
		perr.write(w)
		return
	}
	in, targets, definition, perr := proj.decode(r)
	if perr != nil {
		perr.write(w)
		return
	}
	api, problems := p.apiModel(&in)
	if in.LifeCycleStatus != "" {
		st := model.LifecycleStatus(strings.ToUpper(in.LifeCycleStatus))
		if !slices.Contains(lifecycleStates, st) {
			problems = append(problems, fmt.Sprintf("lifeCycleStatus %q is not one of %v", in.LifeCycleStatus, lifecycleStates))
		}
		api.Status = st
	}
	if len(problems) > 0 {
		badRequest(w, problems)
		return
	}
	api.Provider = subject(r)
	if preserveProvider && in.Provider != "" {
		api.Provider = in.Provider
	}
	res, err := p.store.ImportAPI(r.Context(), api, store.ImportOptions{
		Overwrite: overwrite, Targets: targets, Rotate: rotate, RevisionDescription: "Imported", Definition: definition,
	})
	if err != nil {
		p.fail(w, r, err)
		return
	}
	p.log.Info().Str("api_id", res.API.ID).Bool("created", res.Created).Str("by", subject(r)).Msg("api imported")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, "API imported successfully.\n")
}

var lifecycleStates = []model.LifecycleStatus{
	model.StatusCreated, model.StatusPrototyped, model.StatusPublished, model.StatusBlocked, model.StatusDeprecated, model.StatusRetired,
}

// readFilePart reads the multipart body's file part. missing is the error
// when there is none.
func (p *Portal) readFilePart(w http.ResponseWriter, r *http.Request, missing string) ([]byte, bool) {
	cleanup, ok := p.parseMultipart(w, r)
	if !ok {
		return nil, false
	}
	defer cleanup()
	file, _, err := r.FormFile("file")
	if err != nil {
		badRequest(w, []string{missing})
		return nil, false
	}
	defer file.Close()
	data, err := io.ReadAll(file)
	if err != nil {
		badRequest(w, []string{"file cannot be read: " + err.Error()})
		return nil, false
	}
	return data, true
}

// projectError is a refused project: its status and WSO2 error body.
type projectError struct {
	status int
	msg    string
	items  []errorListItem
}

func (e *projectError) write(w http.ResponseWriter) {
	items := e.items
	if items == nil && e.status == http.StatusBadRequest {
		items = fieldItems(e.msg)
	}
	writeError(w, e.status, e.msg, items...)
}

func invalidProject(format string, args ...any) *projectError {
	return &projectError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// project is the part of an apictl project zip apim reads: the files at
// these paths under the top folder.
type project struct {
	top   string
	files map[string][]byte
}

// projectPaths are the files apim reads from a project; the rest (Docs,
// Image, Sequences, Policies, api_meta.yaml, ...) are checked for safe
// paths but not read.
var projectPaths = []string{
	"api.yaml", "api.json", "Definitions/swagger.yaml", "Definitions/swagger.json",
	"deployment_environments.yaml", "deployment_environments.json",
}

// readProject opens a project zip. Every entry must lie under one top
// folder, with a relative path without "..". A file apim reads may be at
// most limit bytes uncompressed, whatever its header says.
func readProject(data []byte, limit int64) (*project, *projectError) {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if errors.Is(err, zip.ErrInsecurePath) {
		return nil, invalidProject("file has an entry with an absolute path or a .. component")
	}
	if err != nil {
		return nil, invalidProject("file is not a zip archive: %v", err)
	}
	if len(zr.File) == 0 {
		return nil, invalidProject("file is an empty zip archive; want the API project's top folder")
	}
	if len(zr.File) > maxProjectEntries {
		return nil, invalidProject("file has %d entries; at most %d", len(zr.File), maxProjectEntries)
	}
	proj := &project{files: map[string][]byte{}}
	for _, f := range zr.File {
		name := f.Name
		switch {
		case strings.Contains(name, `\`):
			return nil, invalidProject("file entry %q has a backslash; paths are separated by /", name)
		case path.IsAbs(name) || (len(name) > 1 && name[1] == ':'):
			return nil, invalidProject("file entry %q has an absolute path", name)
		case slices.Contains(strings.Split(name, "/"), ".."):
			return nil, invalidProject("file entry %q leaves the project folder (..)", name)
		}
		top, rel, inFolder := strings.Cut(name, "/")
		if !inFolder || top == "" {
			return nil, invalidProject("file entry %q is outside the project's top folder; want one folder <Name>-<Version>/", name)
		}
		if proj.top == "" {
			proj.top = top
		} else if top != proj.top {
			return nil, invalidProject("file has more than one top folder (%s/ and %s/); want one folder <Name>-<Version>/", proj.top, top)
		}
		if !slices.Contains(projectPaths, rel) || f.FileInfo().IsDir() {
			continue
		}
		if _, dup := proj.files[rel]; dup {
			return nil, invalidProject("file has %s twice", name)
		}
		body, perr := readEntry(f, limit)
		if perr != nil {
			return nil, perr
		}
		proj.files[rel] = body
	}
	return proj, nil
}

// readEntry reads one entry, refusing more than limit bytes.
func readEntry(f *zip.File, limit int64) ([]byte, *projectError) {
	tooBig := &projectError{
		status: http.StatusRequestEntityTooLarge,
		msg:    fmt.Sprintf("file entry %s is larger than %d bytes uncompressed", f.Name, limit),
	}
	// The reader refuses to inflate past the header's size (ErrFormat), so a
	// header that lies cannot take more than limit bytes either.
	rc, err := f.Open()
	if err == nil {
		defer rc.Close()
		var body []byte
		if body, err = io.ReadAll(io.LimitReader(rc, limit+1)); err == nil {
			if int64(len(body)) > limit {
				return nil, tooBig
			}
			return body, nil
		}
	}
	if errors.Is(err, zip.ErrFormat) || errors.Is(err, zip.ErrChecksum) {
		return nil, invalidProject("file entry %s is corrupt: its data does not match its header (%v)", f.Name, err)
	}
	return nil, invalidProject("file entry %s cannot be read: %v", f.Name, err)
}

// decode reads the project's API, with its resources from the definition
// when api.yaml lists none, and where to deploy it.
func (proj *project) decode(r *http.Request) (in apiDTO, targets []store.EnvTarget, definition string, perr *projectError) {
	name, raw := proj.pick("api")
	if raw == nil {
		return in, nil, "", invalidProject("the project has no api.yaml or api.json in its top folder %s/", proj.top)
	}
	if perr := decodeProjectFile(name, raw, typeAPI, &in); perr != nil {
		return in, nil, "", perr
	}
	if name, raw := proj.pick("Definitions/swagger"); raw != nil {
		doc, err := parseOpenAPI(r.Context(), raw)
		if err != nil {
			return in, nil, "", invalidProject("%s is not a valid OpenAPI definition: %v", name, err)
		}
		if len(in.Operations) == 0 {
			in.Operations = operationsOf(doc)
		}
		def, err := json.Marshal(doc)
		if err != nil {
			return in, nil, "", invalidProject("%s cannot be stored: %v", name, err)
		}
		definition = string(def)
	}
	if name, raw := proj.pick("deployment_environments"); raw != nil {
		var envs []deploymentEnvDTO
		if perr := decodeProjectFile(name, raw, typeDeployEnvs, &envs); perr != nil {
			return in, nil, "", perr
		}
		for i, e := range envs {
			if e.DeploymentEnvironment == "" {
				return in, nil, "", invalidProject("%s: data[%d].deploymentEnvironment is required", name, i)
			}
			show := true
			if e.DisplayOnDevportal != nil {
				show = *e.DisplayOnDevportal
			}
			targets = append(targets, store.EnvTarget{Name: e.DeploymentEnvironment, VHost: e.DeploymentVhost, DisplayOnDevportal: show})
		}
	}
	return in, targets, definition, nil
}

// pick is the YAML file of base, else its JSON one, with its name.
func (proj *project) pick(base string) (string, []byte) {
	for _, ext := range []string{".yaml", ".json"} {
		if raw, ok := proj.files[base+ext]; ok {
			return base + ext, raw
		}
	}
	return "", nil
}

// decodeProjectFile checks a project file's envelope is of type want and
// decodes its data strictly into v, as a JSON body is decoded.
func decodeProjectFile(name string, raw []byte, want string, v any) *projectError {
	js, err := yamlToJSON(raw)
	if err != nil {
		return invalidProject("%s is not valid YAML or JSON: %v", name, err)
	}
	var env projectFile
	if perr := decodeStrict(name, js, &env); perr != nil {
		return perr
	}
	if env.Type != want {
		return invalidProject("%s has type %q; want %q", name, env.Type, want)
	}
	if len(env.Data) == 0 || string(env.Data) == "null" {
		return invalidProject("%s has no data", name)
	}
	return decodeStrict(name+": data", env.Data, v)
}

// decodeStrict decodes JSON into v, refusing unknown fields; where names
// the JSON in the error.
func decodeStrict(where string, raw []byte, v any) *projectError {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		return nil
	}
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			field = "the value"
		}
		return invalidProject("%s: %s must be %s, got %s", where, field, jsonKind(typeErr.Type), typeErr.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.TrimPrefix(err.Error(), "json: unknown field ")
		return &projectError{
			status: http.StatusBadRequest, msg: where + ": unknown field " + field,
			items: []errorListItem{{Code: "400", Message: strings.Trim(field, `"`), Description: "is not a known field"}},
		}
	default:
		return invalidProject("%s: %v", where, err)
	}
}

package portal_test

import (
	"bytes"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
)

// multipartFields is a multipart body of plain fields and, when file is
// not empty, a file part named file.
func multipartFields(t *testing.T, file string, fields map[string]string) (*bytes.Buffer, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if file != "" {
		fw, err := mw.CreateFormFile("file", "api.yaml")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = fw.Write([]byte(file))
	}
	for k, v := range fields {
		_ = mw.WriteField(k, v)
	}
	_ = mw.Close()
	return &buf, mw.FormDataContentType()
}

// serveDefinitions serves each path's body as a definition, and redirects
// /redirect to where.
func serveDefinitions(t *testing.T, bodies map[string]string, where string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, where, http.StatusFound)
			return
		}
		body, ok := bodies[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv
}

const openapi31YAML = `openapi: 3.1.0
info: {title: Weather, version: "3", license: {name: MIT, identifier: MIT}}
servers: [{url: "https://weather.example/forecast"}]
paths:
  /days/{day}:
    get:
      parameters: [{name: day, in: path, required: true, schema: {type: [string, "null"]}}]
      responses: {"200": {description: the forecast}}
`

func TestValidateOpenAPI(t *testing.T) {
	e := newEnv(t, 0)
	defs := serveDefinitions(t, map[string]string{"/pets.yaml": openapi3YAML, "/bad.yaml": "openapi: 3.0.0\npaths: {}"}, "http://169.254.169.254/latest/meta-data")
	type result struct {
		IsValid bool
		Content *string
		Info    *struct {
			Name, Version, Context, OpenAPIVersion string
			Endpoints                              []string
		}
		Errors []struct{ Code, Message, Description string }
	}
	validate := func(file string, fields map[string]string, query string) resp {
		body, ct := multipartFields(t, file, fields)
		return e.do("POST", pubBase+"/apis/validate-openapi"+query, "admin-token", ct, body)
	}
	for name, c := range map[string]struct {
		file           string
		fields         map[string]string
		name, version  string
		openAPIVersion string
	}{
		"file":        {openapi3YAML, nil, "Pet Store", "2.0.0", "3.0.3"},
		"url":         {"", map[string]string{"url": defs.URL + "/pets.yaml"}, "Pet Store", "2.0.0", "3.0.3"},
		"inline":      {"", map[string]string{"inlineAPIDefinition": swagger2YAML}, "Stores", "1.0.0", "2.0"},
		"openapi 3.1": {openapi31YAML, nil, "Weather", "3", "3.1.0"},
	} {
		t.Run(name, func(t *testing.T) {
			var out result
			e.must(validate(c.file, c.fields, ""), 200, &out)
			if !out.IsValid || out.Info == nil || out.Info.Name != c.name || out.Info.Version != c.version || out.Info.OpenAPIVersion != c.openAPIVersion {
				t.Fatalf("validation %+v (info %+v)", out, out.Info)
			}
			if out.Content != nil {
				t.Errorf("content without returnContent")
			}
		})
	}
	var out result
	e.must(validate(openapi31YAML, nil, "?returnContent=true"), 200, &out)
	if out.Content == nil || *out.Content != openapi31YAML || out.Info.Context != "/forecast" || len(out.Info.Endpoints) != 1 {
		t.Errorf("with returnContent: %+v %+v", out, out.Info)
	}

	// An invalid definition is a 200 that says so, as WSO2's.
	for name, fields := range map[string]map[string]string{
		"no info":   {"inlineAPIDefinition": "openapi: 3.0.0\npaths:\n  /a:\n    get:\n      responses: {\"200\": {description: ok}}\n"},
		"by url":    {"url": defs.URL + "/bad.yaml"},
		"not a doc": {"inlineAPIDefinition": "{{{ : :"},
	} {
		t.Run(name, func(t *testing.T) {
			var out result
			e.must(validate("", fields, ""), 200, &out)
			if out.IsValid || out.Info != nil || len(out.Errors) != 1 || out.Errors[0].Code != "900754" || out.Errors[0].Description == "" {
				t.Errorf("invalid definition: %+v", out)
			}
		})
	}

	// A request that gives no definition, or two, or one apim must not
	// fetch, is a 400 naming the problem.
	for name, c := range map[string]struct {
		file   string
		fields map[string]string
		want   string
	}{
		"none":             {"", nil, "give exactly one of file"},
		"file and inline":  {openapi3YAML, map[string]string{"inlineAPIDefinition": openapi3YAML}, "give exactly one of file"},
		"metadata address": {"", map[string]string{"url": "http://169.254.169.254/latest/meta-data"}, "169.254.169.254"},
		"admin port":       {"", map[string]string{"url": "http://127.0.0.1:9901/config_dump"}, "9901"},
		"redirect to deny": {"", map[string]string{"url": defs.URL + "/redirect"}, "169.254.169.254"},
		"not http":         {"", map[string]string{"url": "file:///etc/passwd"}, "http or https"},
		"missing":          {"", map[string]string{"url": defs.URL + "/nothing.yaml"}, "404"},
		"bad flag":         {openapi3YAML, nil, "returnContent must be true or false"},
	} {
		t.Run(name, func(t *testing.T) {
			query := ""
			if name == "bad flag" {
				query = "?returnContent=yes"
			}
			e.rejects(400, func() resp { return validate(c.file, c.fields, query) }, c.want)
		})
	}
	e.rejects(403, func() resp {
		body, ct := multipartFields(t, openapi3YAML, nil)
		return e.do("POST", pubBase+"/apis/validate-openapi", "viewer-token", ct, body)
	})

	// A host name is checked at connect time, by the address it resolved
	// to: the machine's own name reaches the loopback admin port too.
	host := loopbackName(t)
	e.rejects(400, func() resp {
		return validate("", map[string]string{"url": "http://" + host + ":9901/config_dump"}, "")
	}, "127.0.0.1:9901 is a denied destination")
}

// loopbackName is a host name (not an address, not localhost) that
// resolves to 127.0.0.1: the machine's own, which /etc/hosts maps there.
func loopbackName(t *testing.T) string {
	t.Helper()
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := net.LookupHost(host)
	if err != nil || !slices.Contains(addrs, "127.0.0.1") {
		t.Fatalf("this test needs the host name %q to resolve to 127.0.0.1 (/etc/hosts); it resolves to %v, %v", host, addrs, err)
	}
	return host
}

func TestImportOpenAPIByURLAndInline(t *testing.T) {
	e := newEnv(t, 0)
	defs := serveDefinitions(t, map[string]string{"/weather.yaml": openapi31YAML}, "")
	props := `{"context":"/weather","endpointConfig":{"production_endpoints":{"url":"http://backend:8080"}}}`
	var api apiOut
	body, ct := multipartFields(t, "", map[string]string{"url": defs.URL + "/weather.yaml", "additionalProperties": props})
	e.must(e.do("POST", pubBase+"/apis/import-openapi", "admin-token", ct, body), 201, &api)
	if api.Name != "Weather" || len(api.Operations) != 1 || api.Operations[0].Target != "/days/{day}" {
		t.Fatalf("imported by url: %+v", api)
	}
	body, ct = multipartFields(t, "", map[string]string{"inlineAPIDefinition": swagger2YAML, "additionalProperties": `{"context":"/stores","endpointConfig":{"production_endpoints":{"url":"http://backend:8080"}}}`})
	e.must(e.do("POST", pubBase+"/apis/import-openapi", "admin-token", ct, body), 201, &api)
	if api.Name != "Stores" || len(api.Operations) != 2 {
		t.Fatalf("imported inline: %+v", api)
	}
}

// definition is the part of an OpenAPI document the tests read.
type definition struct {
	OpenAPI string `json:"openapi"`
	Info    struct{ Title, Version string }
	Servers []struct{ URL string }
	Paths   map[string]map[string]struct {
		Description     string
		Parameters      []struct{ Name, In string }
		Responses       map[string]struct{ Description string }
		XAuthType       string `json:"x-auth-type"`
		XThrottlingTier string `json:"x-throttling-tier"`
	}
	Security   []map[string][]string
	Components struct {
		SecuritySchemes map[string]struct {
			Type, In, Name string
			Flows          map[string]struct {
				TokenURL string `json:"tokenUrl"`
				Scopes   map[string]string
			}
		} `json:"securitySchemes"`
	}
}

func TestSwaggerGetAndPut(t *testing.T) {
	e := newEnv(t, 0)
	var api apiOut
	body, ct := multipartBody(t, openapi3YAML, `{"context":"/imp","endpointConfig":{"production_endpoints":{"url":"http://backend:8080"}}}`)
	e.must(e.do("POST", pubBase+"/apis/import-openapi", "admin-token", ct, body), 201, &api)

	// GET answers the imported definition: what it said of each operation
	// (parameters, responses) is kept.
	var def definition
	e.must(e.call("GET", pubBase+"/apis/"+api.ID+"/swagger", "viewer-token", nil), 200, &def)
	pet := def.Paths["/pets/{petId}"]["get"]
	if def.Info.Title != "PetStore" || len(pet.Parameters) != 1 || pet.Parameters[0].Name != "petId" || pet.XThrottlingTier != "Unlimited" ||
		def.Paths["/pets"]["post"].Responses["201"].Description != "created" {
		t.Fatalf("imported definition: %+v", def)
	}

	// An API edited through PUT /apis: GET follows its resources, keeping
	// what the definition said of those still there.
	var full map[string]any
	e.must(e.call("GET", pubBase+"/apis/"+api.ID, "admin-token", nil), 200, &full)
	full["operations"] = []any{
		map[string]any{"target": "/pets/{petId}", "verb": "GET", "throttlingPolicy": "Unlimited", "authType": "Application & Application User"},
		map[string]any{"target": "/toys", "verb": "GET"},
	}
	e.must(e.call("PUT", pubBase+"/apis/"+api.ID, "admin-token", full), 200, nil)
	def = definition{}
	e.must(e.call("GET", pubBase+"/apis/"+api.ID+"/swagger", "viewer-token", nil), 200, &def)
	if len(def.Paths) != 2 || def.Paths["/pets"] != nil || def.Paths["/toys"]["get"].Responses["200"].Description != "OK" ||
		len(def.Paths["/pets/{petId}"]["get"].Parameters) != 1 {
		t.Fatalf("definition after PUT /apis: %+v", def.Paths)
	}

	// PUT /swagger replaces the resources and emits the API's event.
	events := e.outbox()
	body, ct = multipartFields(t, "", map[string]string{"apiDefinition": swagger2YAML})
	var put definition
	e.must(e.do("PUT", pubBase+"/apis/"+api.ID+"/swagger", "admin-token", ct, body), 200, &put)
	if len(put.Paths) != 2 || put.Paths["/stores/{id}"]["delete"].Parameters[0].Name != "id" {
		t.Fatalf("PUT swagger answered %+v", put.Paths)
	}
	var after apiOut
	e.must(e.call("GET", pubBase+"/apis/"+api.ID, "admin-token", nil), 200, &after)
	if len(after.Operations) != 2 || after.Operations[0].Target != "/stores" || after.Operations[1].Verb != "DELETE" || after.Provider != "admin" || after.Name != "PetStore" {
		t.Fatalf("API after PUT swagger: %+v", after)
	}
	if got := e.outbox(); got != events+1 {
		t.Errorf("%d events after PUT swagger, want %d", got, events+1)
	}

	// A bad definition changes nothing.
	for name, c := range map[string]struct {
		fields map[string]string
		want   string
	}{
		"invalid":      {map[string]string{"apiDefinition": "openapi: 3.0.0\npaths: {}"}, "not a valid OpenAPI definition"},
		"none":         {nil, "give exactly one of file"},
		"denied url":   {map[string]string{"url": "http://169.254.169.254/x"}, "169.254.169.254"},
		"bad resource": {map[string]string{"apiDefinition": "openapi: 3.0.0\ninfo: {title: t, version: '1'}\npaths:\n  /a:\n    get:\n      x-throttling-tier: NoSuchTier\n      responses: {\"200\": {description: ok}}\n"}, "NoSuchTier"},
	} {
		t.Run(name, func(t *testing.T) {
			e.rejects(400, func() resp {
				body, ct := multipartFields(t, "", c.fields)
				return e.do("PUT", pubBase+"/apis/"+api.ID+"/swagger", "admin-token", ct, body)
			}, c.want)
		})
	}
	e.rejects(403, func() resp {
		body, ct := multipartFields(t, "", map[string]string{"apiDefinition": swagger2YAML})
		return e.do("PUT", pubBase+"/apis/"+api.ID+"/swagger", "viewer-token", ct, body)
	})
	e.rejects(404, func() resp {
		return e.call("GET", pubBase+"/apis/00000000-0000-0000-0000-000000000000/swagger", "admin-token", nil)
	})

	// An API made from resources gets a definition made from them.
	made := e.publish()
	def = definition{}
	e.must(e.call("GET", pubBase+"/apis/"+made.ID+"/swagger", "admin-token", nil), 200, &def)
	if !strings.HasPrefix(def.OpenAPI, "3.") || len(def.Paths) != 2 || def.Paths["/pets/{id}"]["get"].Parameters[0].Name != "id" {
		t.Fatalf("made definition %+v", def)
	}
}

func TestDevportalSwagger(t *testing.T) {
	e := newEnv(t, 0)
	api := e.publish()
	var def definition
	e.must(e.call("GET", devBase+"/apis/"+api.ID+"/swagger", "", nil), 200, &def)
	if len(def.Servers) == 0 {
		t.Fatalf("no servers: %+v", def)
	}
	for _, s := range def.Servers {
		if !strings.Contains(s.URL, "localhost") || !strings.HasSuffix(s.URL, "/pets/1.0.0") {
			t.Errorf("server %q is not the Default environment's localhost with the API's base path", s.URL)
		}
	}
	flows := def.Components.SecuritySchemes["default"].Flows
	if cc := flows["clientCredentials"]; !strings.HasSuffix(cc.TokenURL, "/oauth2/token") || cc.Scopes["pets:read"] != "" {
		t.Errorf("oauth2 flows %+v", flows)
	}
	if _, ok := def.Components.SecuritySchemes["api_key"]; ok {
		t.Errorf("an oauth2-only API shows an api_key scheme")
	}
	e.rejects(404, func() resp { return e.call("GET", devBase+"/apis/"+api.ID+"/swagger?environmentName=Nowhere", "", nil) }, "Nowhere")

	// An API that takes API keys shows the apikey header.
	var full map[string]any
	e.must(e.call("GET", pubBase+"/apis/"+api.ID, "admin-token", nil), 200, &full)
	full["securityScheme"] = []string{"oauth2", "api_key"}
	e.must(e.call("PUT", pubBase+"/apis/"+api.ID, "admin-token", full), 200, nil)
	def = definition{}
	e.must(e.call("GET", devBase+"/apis/"+api.ID+"/swagger?environmentName=Default", "bob-token", nil), 200, &def)
	if k := def.Components.SecuritySchemes["api_key"]; k.Type != "apiKey" || k.In != "header" || k.Name != "apikey" {
		t.Errorf("api_key scheme %+v", k)
	}

	// An API not published is not shown.
	var draft apiOut
	b := petstoreBody()
	b["context"], b["version"] = "/draft", "1"
	e.must(e.call("POST", pubBase+"/apis", "admin-token", b), 201, &draft)
	e.rejects(404, func() resp { return e.call("GET", devBase+"/apis/"+draft.ID+"/swagger", "", nil) })
}

func TestAPIDeploymentsList(t *testing.T) {
	e := newEnv(t, 0)
	api := e.publish()
	var list struct {
		Count int
		List  []struct{ Name, RevisionUUID string }
	}
	e.must(e.call("GET", pubBase+"/apis/"+api.ID+"/deployments", "viewer-token", nil), 200, &list)
	if list.Count != 1 || list.List[0].Name != "Default" || list.List[0].RevisionUUID == "" {
		t.Fatalf("deployments %+v", list)
	}
	var bare []struct{ Name string }
	e.must(e.call("GET", pubBase+"/apis/"+api.ID+"/deploy-revision", "viewer-token", nil), 200, &bare)
	if len(bare) != 1 || bare[0].Name != "Default" {
		t.Fatalf("deploy-revision %+v", bare)
	}
}

// TestDefinitionThroughProject: an imported definition goes out in the
// exported project's Definitions/swagger.yaml and, imported into an empty
// apim, comes back from GET /swagger.
func TestDefinitionThroughProject(t *testing.T) {
	e := newEnv(t, 0)
	var api apiOut
	body, ct := multipartBody(t, openapi3YAML, `{"context":"/imp","endpointConfig":{"production_endpoints":{"url":"http://backend:8080"}}}`)
	e.must(e.do("POST", pubBase+"/apis/import-openapi", "admin-token", ct, body), 201, &api)
	res := e.call("GET", pubBase+"/apis/export?apiId="+api.ID, "admin-token", nil)
	e.must(res, 200, nil)
	var swagger string
	for _, f := range unzip(t, res.body) {
		if strings.HasSuffix(f.name, "Definitions/swagger.yaml") {
			swagger = f.body
		}
	}
	if !strings.Contains(swagger, "description: created") || !strings.Contains(swagger, "name: petId") {
		t.Fatalf("exported swagger.yaml lost the definition:\n%s", swagger)
	}

	other := newEnv(t, 0)
	other.must(other.importZip(res.body, ""), 200, nil)
	var def definition
	other.must(other.call("GET", pubBase+"/apis/"+other.apiIDByName("PetStore")+"/swagger", "admin-token", nil), 200, &def)
	if def.Paths["/pets"]["post"].Responses["201"].Description != "created" || len(def.Paths["/pets/{petId}"]["get"].Parameters) != 1 {
		t.Fatalf("imported definition %+v", def.Paths)
	}
}

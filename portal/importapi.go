package portal

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/getkin/kin-openapi/openapi2"
	"github.com/getkin/kin-openapi/openapi2conv"
	"github.com/getkin/kin-openapi/openapi3"
	"gopkg.in/yaml.v3"
)

// maxMultipartMemory is how much of a multipart body is held in memory
// before spilling to temporary files.
const maxMultipartMemory = 8 << 20

// parseMultipart parses a multipart/form-data body, the whole body, file
// parts included, capped at the portal's body limit. On failure it writes
// the error response; on success the caller calls cleanup when done.
func (p *Portal) parseMultipart(w http.ResponseWriter, r *http.Request) (cleanup func(), ok bool) {
	if !isMediaType(r, "multipart/form-data") {
		writeError(w, http.StatusUnsupportedMediaType, "Content-Type must be multipart/form-data with a file part")
		return nil, false
	}
	// Past the limit, parsing fails with a MaxBytesError (413 below).
	r.Body = http.MaxBytesReader(w, r.Body, p.maxBody)
	if err := r.ParseMultipartForm(maxMultipartMemory); err != nil { //nolint:gosec // G120: bounded by MaxBytesReader above, which gosec's taint rule does not see
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", tooBig.Limit))
			return nil, false
		}
		badRequest(w, []string{"malformed multipart body: " + err.Error()})
		return nil, false
	}
	return func() { _ = r.MultipartForm.RemoveAll() }, true
}

func (p *Portal) importOpenAPI(w http.ResponseWriter, r *http.Request) {
	cleanup, ok := p.parseMultipart(w, r)
	if !ok {
		return
	}
	defer cleanup()
	var problems []string
	var in apiDTO
	props := r.FormValue("additionalProperties")
	if props == "" {
		problems = append(problems, "additionalProperties is required: a JSON API object with name, context, version and endpointConfig")
	} else {
		dec := json.NewDecoder(strings.NewReader(props))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil {
			problems = append(problems, "additionalProperties is not a valid API object: "+err.Error())
		}
	}
	data, err := p.readDefinition(r, "inlineAPIDefinition")
	if err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		badRequest(w, problems)
		return
	}
	doc, err := parseOpenAPI(r.Context(), data)
	if err != nil {
		badRequest(w, []string{"the definition is not a valid OpenAPI definition: " + err.Error()})
		return
	}
	if in.Name == "" && doc.Info != nil {
		in.Name = strings.ReplaceAll(doc.Info.Title, " ", "")
	}
	if in.Version == "" && doc.Info != nil {
		in.Version = doc.Info.Version
	}
	if in.Description == "" && doc.Info != nil {
		in.Description = doc.Info.Description
	}
	in.Operations = operationsOf(doc)
	def, err := json.Marshal(doc)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	p.create(w, r, in, string(def))
}

// definitionHead is the version field of a definition.
type definitionHead struct {
	Swagger string `yaml:"swagger"`
	OpenAPI string `yaml:"openapi"`
}

// Version is the definition's own version, "2.0" or "3.x.y".
func (h definitionHead) Version() string {
	if h.Swagger != "" {
		return h.Swagger
	}
	return h.OpenAPI
}

func readHead(data []byte) (definitionHead, error) {
	var head definitionHead
	if err := yaml.Unmarshal(data, &head); err != nil {
		return head, fmt.Errorf("neither JSON nor YAML: %w", err)
	}
	return head, nil
}

// parseOpenAPI parses and validates an OpenAPI 3 (JSON or YAML) or Swagger
// 2 definition, converting Swagger 2 to OpenAPI 3.
func parseOpenAPI(ctx context.Context, data []byte) (*openapi3.T, error) {
	head, err := readHead(data)
	if err != nil {
		return nil, err
	}
	var doc *openapi3.T
	switch {
	case strings.HasPrefix(head.Swagger, "2."):
		raw, err := yamlToJSON(data)
		if err != nil {
			return nil, err
		}
		var doc2 openapi2.T
		if err := json.Unmarshal(raw, &doc2); err != nil {
			return nil, fmt.Errorf("swagger 2: %w", err)
		}
		if doc, err = openapi2conv.ToV3(&doc2); err != nil {
			return nil, fmt.Errorf("convert swagger 2 to openapi 3: %w", err)
		}
	case strings.HasPrefix(head.OpenAPI, "3."):
		loader := openapi3.NewLoader()
		loader.IsExternalRefsAllowed = false
		if doc, err = loader.LoadFromData(data); err != nil {
			return nil, fmt.Errorf("openapi 3: %w", err)
		}
	default:
		return nil, errors.New(`no "openapi: 3.x" or "swagger: 2.0" field at the top`)
	}
	if err := doc.Validate(ctx); err != nil {
		return nil, err
	}
	if doc.Paths == nil || doc.Paths.Len() == 0 {
		return nil, errors.New("paths: the definition has no paths")
	}
	return doc, nil
}

// operationsOf lists the resources of a definition, by path then verb. WSO2's
// x-auth-type and x-throttling-tier extensions are honoured; the scopes are
// those of the operation's security requirements.
func operationsOf(doc *openapi3.T) []operationDTO {
	paths := doc.Paths.Keys()
	sort.Strings(paths)
	verbs := []string{"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
	var out []operationDTO
	for _, path := range paths {
		item := doc.Paths.Value(path)
		for _, verb := range verbs {
			op := item.GetOperation(verb)
			if op == nil {
				continue
			}
			o := operationDTO{Target: path, Verb: verb}
			if v, ok := op.Extensions["x-auth-type"].(string); ok {
				o.AuthType = v
			}
			if v, ok := op.Extensions["x-throttling-tier"].(string); ok {
				o.ThrottlingPolicy = v
			}
			if op.Security != nil {
				seen := map[string]bool{}
				for _, req := range *op.Security {
					for _, scopes := range req {
						for _, s := range scopes {
							if !seen[s] {
								seen[s] = true
								o.Scopes = append(o.Scopes, s)
							}
						}
					}
				}
			}
			out = append(out, o)
		}
	}
	return out
}

// yamlToJSON re-encodes a YAML (or JSON) document as JSON, turning
// non-string map keys such as response codes into strings.
func yamlToJSON(data []byte) ([]byte, error) {
	var v any
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("decode yaml: %w", err)
	}
	out, err := json.Marshal(jsonable(v))
	if err != nil {
		return nil, fmt.Errorf("encode json: %w", err)
	}
	return out, nil
}

func jsonable(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			t[k] = jsonable(e)
		}
		return t
	case map[any]any:
		m := make(map[string]any, len(t))
		for k, e := range t {
			m[fmt.Sprint(k)] = jsonable(e)
		}
		return m
	case []any:
		for i, e := range t {
			t[i] = jsonable(e)
		}
		return t
	default:
		return v
	}
}

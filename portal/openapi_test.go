package portal_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog"

	"github.com/apim-dev/apim/internal/store"
	"github.com/apim-dev/apim/portal"
)

// TestOpenAPIDocuments loads each served document with kin-openapi,
// validates it, and checks every route the router mounts is described.
func TestOpenAPIDocuments(t *testing.T) {
	p, err := portal.New(portal.Config{Store: store.New(nil), Tokens: fakeTokens{}, Clients: &fakeClients{}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	h := p.Handler()
	docs := map[string]*openapi3.T{}
	for _, base := range []string{portal.PublisherBase, portal.DevportalBase, portal.AdminBase} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", base+"/openapi.yaml", nil))
		if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/yaml" {
			t.Fatalf("%s/openapi.yaml: %d %s", base, rec.Code, rec.Header().Get("Content-Type"))
		}
		body, _ := io.ReadAll(rec.Body)
		doc, err := openapi3.NewLoader().LoadFromData(body)
		if err != nil {
			t.Fatalf("%s: load: %v", base, err)
		}
		if err := doc.Validate(context.Background()); err != nil {
			t.Fatalf("%s: validate: %v", base, err)
		}
		if len(doc.Servers) != 1 || doc.Servers[0].URL != base {
			t.Errorf("%s: servers %v", base, doc.Servers)
		}
		docs[base] = doc
	}
	routes := 0
	err = chi.Walk(h.(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		routes++
		for base, doc := range docs {
			path, ok := strings.CutPrefix(route, base)
			if !ok {
				continue
			}
			item := doc.Paths.Value(path)
			if item == nil || item.GetOperation(method) == nil {
				t.Errorf("%s %s is mounted but not in %s/openapi.yaml", method, route, base)
			}
			return nil
		}
		t.Errorf("%s %s is outside every REST API", method, route)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// And the reverse: every documented operation is mounted.
	documented := 0
	for _, doc := range docs {
		for _, item := range doc.Paths.Map() {
			documented += len(item.Operations())
		}
	}
	if documented != routes {
		t.Errorf("%d operations documented, %d routes mounted", documented, routes)
	}
}

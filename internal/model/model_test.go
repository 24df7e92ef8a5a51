package model

import (
	"errors"
	"strings"
	"testing"
)

func validAPI() API {
	return API{
		Name: "Pets", Context: "/pets", Version: "1.0.0",
		Production: &Endpoint{URL: "http://backend:8080/v1"},
		Operations: []Operation{{Target: "/pets/{id}", Verb: "GET", AuthType: AuthApplicationUser}},
	}
}

func TestAPIValidate(t *testing.T) {
	tests := map[string]struct {
		edit func(*API)
		want []string // substrings of the joined error; none means valid
	}{
		"valid":             {edit: func(*API) {}},
		"sandbox only":      {edit: func(a *API) { a.Production, a.Sandbox = nil, &Endpoint{URL: "https://sb"} }},
		"missing fields":    {edit: func(a *API) { a.Name, a.Version, a.Context = " ", "", "" }, want: []string{"name is required", "version is required", "context is required"}},
		"bad context":       {edit: func(a *API) { a.Context = "pets" }, want: []string{"context is invalid"}},
		"root context":      {edit: func(a *API) { a.Context = "/" }, want: []string{"context is invalid"}},
		"no endpoint":       {edit: func(a *API) { a.Production = nil }, want: []string{"endpointConfig is required"}},
		"bad endpoint":      {edit: func(a *API) { a.Production.URL = "ftp://x" }, want: []string{"endpointConfig.production_endpoints.url is invalid"}},
		"bad verb":          {edit: func(a *API) { a.Operations[0].Verb = "FETCH" }, want: []string{"operations[0].verb has an unknown value"}},
		"bad auth type":     {edit: func(a *API) { a.Operations[0].AuthType = "Basic" }, want: []string{"operations[0].authType has an unknown value"}},
		"bad template":      {edit: func(a *API) { a.Operations[0].Target = "/pets/{id" }, want: []string{"operations[0].target is invalid"}},
		"duplicate op":      {edit: func(a *API) { a.Operations = append(a.Operations, a.Operations[0]) }, want: []string{"operations[1].target is invalid: duplicate GET /pets/{id}"}},
		"version with path": {edit: func(a *API) { a.Version = "1/0" }, want: []string{"version is invalid"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			a := validAPI()
			tc.edit(&a)
			err := a.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestPathTemplate(t *testing.T) {
	for tmpl, ok := range map[string]bool{
		"/": true, "/pets": true, "/pets/{id}": true, "/pets/{id}/toys/*": true, "/a/{b_c-d.e}": true,
		"": false, "pets": false, "/pets/{}": false, "/pets/{id": false, "/p*ts": false, "/*/x": false, "/a b": false,
	} {
		err := ValidatePathTemplate(tmpl)
		if (err == nil) != ok {
			t.Errorf("ValidatePathTemplate(%q) = %v, want ok=%v", tmpl, err, ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrRequired) {
			t.Errorf("ValidatePathTemplate(%q) = %v, want a sentinel", tmpl, err)
		}
	}
}

func TestPolicy(t *testing.T) {
	p := Policy{Level: LevelSubscription, Name: "Gold", RequestCount: 5000, UnitTime: 1, TimeUnit: "min"}
	if err := p.Validate(); err != nil || p.Unlimited() {
		t.Fatalf("Gold: err %v unlimited %v", err, p.Unlimited())
	}
	if u := (Policy{Name: "Unlimited", UnitTime: 1, TimeUnit: "min"}); !u.Unlimited() {
		t.Error("a zero request count must be unlimited")
	}
	bad := Policy{RequestCount: -1, UnitTime: 0, TimeUnit: "week"}
	err := bad.Validate()
	for _, w := range []string{"policyName is required", "requestCount is invalid", "timeUnit has an unknown value", "unitTime is invalid"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Validate() = %v, want %q", err, w)
		}
	}
}

func TestBasePath(t *testing.T) {
	a := API{Context: "/pizzashack/", Version: "1.0.0"}
	if got := a.BasePath(); got != "/pizzashack/1.0.0" {
		t.Errorf("BasePath() = %q", got)
	}
}

func TestValidateVHost(t *testing.T) {
	for v, ok := range map[string]bool{
		"": true, "localhost": true, "api.example.com": true,
		"a b": false, "host:8080": false, "x/y": false, "*.example.com": false, "a\nb": false, "[::1]": false,
	} {
		if err := ValidateVHost(v); (err == nil) != ok {
			t.Errorf("ValidateVHost(%q) = %v, want ok=%v", v, err, ok)
		}
	}
}

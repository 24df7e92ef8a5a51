package portal_test

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
)

type searchOut struct {
	Count int
	List  []struct {
		ID, Name, Version, Provider, Type, Status string
	}
	Pagination struct{ Total int }
}

// TestSearch is WSO2's unified search as apictl calls it: name and version
// quoted match exactly (PetStore is not Pet), bare words are substrings,
// and the devportal's search shows only what the devportal shows.
func TestSearch(t *testing.T) {
	e := newEnv(t, 0)
	published := e.publish() // PetStore 1.0.0, published
	for _, b := range []map[string]any{
		{"name": "Pet", "context": "/pet", "version": "1.0.0"},
		{"name": "PetStore", "context": "/pets", "version": "2.0.0"},
		{"name": "Weather", "context": "/weather", "version": "1.0.0", "description": "Forecasts for pet owners"},
	} {
		body := petstoreBody()
		for k, v := range b {
			body[k] = v
		}
		e.must(e.call("POST", pubBase+"/apis", "admin-token", body), 201, nil)
	}
	search := func(base, token, q string) searchOut {
		t.Helper()
		var out searchOut
		e.must(e.call("GET", base+"/search?query="+url.QueryEscape(q), token, nil), 200, &out)
		return out
	}
	names := func(out searchOut) []string {
		var ns []string
		for _, a := range out.List {
			ns = append(ns, a.Name+" "+a.Version)
		}
		return ns
	}
	for q, want := range map[string][]string{
		`name:"PetStore" version:"1.0.0"`:                  {"PetStore 1.0.0"},
		`name:"pet" version:"1.0.0"`:                       {"Pet 1.0.0"},
		`name:"PetStore" version:"1.0.0" provider:"admin"`: {"PetStore 1.0.0"},
		`name:"PetStore" version:"1.0.0" provider:"bob"`:   nil,
		`name:"PetStore" version:"1.0.0" type:"API"`:       {"PetStore 1.0.0"},
		`name:"PetStore" type:"APIProduct"`:                nil,
		`name:pet`:                                         {"Pet 1.0.0", "PetStore 1.0.0", "PetStore 2.0.0"},
		`pet`:                                              {"Pet 1.0.0", "PetStore 1.0.0", "PetStore 2.0.0", "Weather 1.0.0"},
		`pet status:published`:                             {"PetStore 1.0.0"},
		`context:/weather`:                                 {"Weather 1.0.0"},
		`name:"100%"`:                                      nil,
		`name:_`:                                           nil,
		`description:"pet owne"`:                           nil,
	} {
		out := search(pubBase, "viewer-token", q)
		if got := names(out); !reflect.DeepEqual(got, want) || out.Count != len(want) || out.Pagination.Total != len(want) {
			t.Errorf("publisher search %q = %v (count %d, total %d), want %v", q, got, out.Count, out.Pagination.Total, want)
		}
	}
	out := search(pubBase, "viewer-token", `name:"PetStore" version:"1.0.0"`)
	if a := out.List[0]; a.ID != published.ID || a.Type != "API" || a.Status != "PUBLISHED" || a.Provider != "admin" {
		t.Errorf("search result %+v, want the published PetStore as WSO2's APISearchResult", a)
	}
	// The devportal's search: anonymous, only published and prototyped APIs.
	if got := names(search(devBase, "", "pet")); !reflect.DeepEqual(got, []string{"PetStore 1.0.0"}) {
		t.Errorf("devportal search pet = %v, want only the published PetStore", got)
	}
	if got := names(search(devBase, "", "status:created")); got != nil {
		t.Errorf("devportal search status:created = %v, want nothing", got)
	}
	// Paging, and bad queries named.
	var page searchOut
	e.must(e.call("GET", pubBase+"/search?query=pet&limit=2&offset=1", "viewer-token", nil), 200, &page)
	if got := names(page); !reflect.DeepEqual(got, []string{"PetStore 1.0.0", "PetStore 2.0.0"}) || page.Pagination.Total != 4 {
		t.Errorf("page 2 of pet = %v, total %d", got, page.Pagination.Total)
	}
	e.rejects(400, func() resp {
		return e.call("GET", pubBase+"/search?query="+url.QueryEscape(`colour:red`), "viewer-token", nil)
	}, `"colour:red"`)
	e.rejects(400, func() resp {
		return e.call("GET", pubBase+"/search?query="+url.QueryEscape(`name:"x`), "viewer-token", nil)
	}, "unclosed quote")
	e.rejects(400, func() resp { return e.call("GET", pubBase+"/search?limit=0", "viewer-token", nil) }, "limit")
	e.rejects(401, func() resp { return e.call("GET", pubBase+"/search", "", nil) })
	e.rejects(403, func() resp { return e.call("GET", pubBase+"/search", "eve-token", nil) })
	// The API lists take the same query.
	var list searchOut
	e.must(e.call("GET", pubBase+"/apis?query="+url.QueryEscape(`name:"PetStore"`), "viewer-token", nil), 200, &list)
	if got := names(list); !reflect.DeepEqual(got, []string{"PetStore 1.0.0", "PetStore 2.0.0"}) {
		t.Errorf(`/apis?query=name:"PetStore" = %v`, got)
	}
}

// TestAdminApplications: the admin sees and deletes every user's
// applications, filtered by owner and name, a page at a time; a user
// without the admin scopes cannot.
func TestAdminApplications(t *testing.T) {
	e := newEnv(t, 0)
	for _, c := range []struct{ token, name string }{{"bob-token", "bob-one"}, {"bob-token", "bob-two"}, {"eve-token", "eve-one"}} {
		e.must(e.call("POST", devBase+"/applications", c.token, map[string]any{"name": c.name, "throttlingPolicy": "Unlimited", "groups": []string{"g1", "g2"}}), 201, nil)
	}
	type appList struct {
		Count      int
		List       []struct{ ApplicationID, Name, Owner, Status, GroupID string }
		Pagination struct {
			Total int
			Next  string
		}
	}
	list := func(q string) appList {
		t.Helper()
		var out appList
		e.must(e.call("GET", admBase+"/applications"+q, "admin-token", nil), 200, &out)
		return out
	}
	all := list("")
	if all.Count != 3 || all.List[0].Name != "bob-one" || all.List[0].Owner != "bob" || all.List[0].GroupID != "g1,g2" || all.List[0].Status != "APPROVED" {
		t.Fatalf("all applications %+v", all)
	}
	if got := list("?user=eve"); got.Count != 1 || got.List[0].Name != "eve-one" {
		t.Errorf("eve's applications %+v", got)
	}
	if got := list("?name=TWO"); got.Count != 1 || got.List[0].Name != "bob-two" {
		t.Errorf("name=TWO %+v", got)
	}
	if got := list("?limit=2"); got.Count != 2 || got.Pagination.Total != 3 || got.Pagination.Next == "" {
		t.Errorf("limit=2 %+v", got)
	}
	if got := list("?name=%25"); got.Count != 0 {
		t.Errorf("name=%% matched %+v, want none (a literal %%)", got)
	}
	// The devportal lists pages too, of the caller's own.
	var mine appList
	e.must(e.call("GET", devBase+"/applications?limit=1&offset=1", "bob-token", nil), 200, &mine)
	if mine.Count != 1 || mine.List[0].Name != "bob-two" || mine.Pagination.Total != 2 {
		t.Errorf("bob's second page %+v", mine)
	}

	eveApp := list("?user=eve").List[0].ApplicationID
	var got struct{ Name, Owner string }
	e.must(e.call("GET", admBase+"/applications/"+eveApp, "admin-token", nil), 200, &got)
	if got.Name != "eve-one" || got.Owner != "eve" {
		t.Errorf("admin GET eve's application %+v", got)
	}
	e.rejects(403, func() resp { return e.call("GET", admBase+"/applications", "bob-token", nil) })
	e.rejects(403, func() resp { return e.call("DELETE", admBase+"/applications/"+eveApp, "bob-token", nil) })
	n := e.outbox()
	e.must(e.call("DELETE", admBase+"/applications/"+eveApp, "admin-token", nil), 200, nil)
	if e.outbox() == n {
		t.Error("deleting an application appended no event")
	}
	e.rejects(404, func() resp { return e.call("GET", devBase+"/applications/"+eveApp, "eve-token", nil) })
	e.rejects(404, func() resp { return e.call("DELETE", admBase+"/applications/"+eveApp, "admin-token", nil) })
}

// TestPolicySearch is the admin's search over throttling policies of
// every level, as apictl's "get policies rate-limiting -q type:sub".
func TestPolicySearch(t *testing.T) {
	e := newEnv(t, 0)
	type details struct {
		Count int
		List  []struct{ UUID, PolicyName, Type string }
	}
	search := func(q string) details {
		t.Helper()
		var out details
		e.must(e.call("GET", admBase+"/throttling/policies/search?query="+url.QueryEscape(q), "viewer-token", nil), 200, &out)
		return out
	}
	all := search("")
	types := map[string]bool{}
	for _, p := range all.List {
		types[p.Type] = true
		if p.UUID == "" {
			t.Errorf("policy %s has no uuid", p.PolicyName)
		}
	}
	if !types["sub"] || !types["app"] || !types["api"] {
		t.Errorf("all policies %+v, want the default sub, app and api ones", all)
	}
	for _, p := range search("type:sub").List {
		if p.Type != "sub" {
			t.Errorf("type:sub lists %+v", p)
		}
	}
	if got := search(`type:sub name:gold`); got.Count != 1 || got.List[0].PolicyName != "Gold" {
		t.Errorf("type:sub name:gold = %+v", got)
	}
	e.rejects(400, func() resp {
		return e.call("GET", admBase+"/throttling/policies/search?query=type:weekly", "viewer-token", nil)
	}, "weekly")
	e.rejects(403, func() resp { return e.call("GET", admBase+"/throttling/policies/search", "bob-token", nil) })
}

// TestDevportalVisibility: anonymous callers see PUBLIC APIs; signed-in
// ones PRIVATE ones too; RESTRICTED ones only with one of the roles. What
// the devportal hides cannot be got, found or subscribed to, and the
// publisher still lists it.
func TestDevportalVisibility(t *testing.T) {
	e := newEnv(t, 0)
	ids := map[string]string{}
	for _, v := range []struct{ name, visibility string }{{"Open", "PUBLIC"}, {"Members", "PRIVATE"}, {"Partners", "RESTRICTED"}} {
		body := petstoreBody()
		body["name"], body["context"], body["visibility"] = v.name, "/"+v.name, v.visibility
		if v.visibility == "RESTRICTED" {
			body["visibleRoles"] = []string{"partners"}
		}
		var api struct{ ID string }
		e.must(e.call("POST", pubBase+"/apis", "admin-token", body), 201, &api)
		e.must(e.call("POST", pubBase+"/apis/change-lifecycle?apiId="+api.ID+"&action=Publish", "admin-token", nil), 200, nil)
		ids[v.name] = api.ID
	}
	seen := func(token string) []string {
		t.Helper()
		var out searchOut
		e.must(e.call("GET", devBase+"/apis", token, nil), 200, &out)
		var ns []string
		for _, a := range out.List {
			ns = append(ns, a.Name)
		}
		var found searchOut
		e.must(e.call("GET", devBase+"/search?query=e", token, nil), 200, &found)
		if found.Count != len(ns) || out.Pagination.Total != len(ns) {
			t.Errorf("%q: list %v (total %d), search finds %d", token, ns, out.Pagination.Total, found.Count)
		}
		return ns
	}
	for token, want := range map[string][]string{
		"":          {"Open"},
		"eve-token": {"Members", "Open"},
		"bob-token": {"Members", "Open", "Partners"},
	} {
		if got := seen(token); !reflect.DeepEqual(got, want) {
			t.Errorf("devportal APIs for %q = %v, want %v", token, got, want)
		}
	}
	e.rejects(404, func() resp { return e.call("GET", devBase+"/apis/"+ids["Members"], "", nil) })
	e.rejects(404, func() resp { return e.call("GET", devBase+"/apis/"+ids["Partners"], "eve-token", nil) })
	e.must(e.call("GET", devBase+"/apis/"+ids["Partners"], "bob-token", nil), 200, nil)

	var app struct{ ApplicationID string }
	e.must(e.call("POST", devBase+"/applications", "eve-token", `{"name":"eves","throttlingPolicy":"Unlimited"}`), 201, &app)
	e.rejects(404, func() resp {
		return e.call("POST", devBase+"/subscriptions", "eve-token",
			map[string]any{"applicationId": app.ApplicationID, "apiId": ids["Partners"], "throttlingPolicy": "Gold"})
	})
	e.must(e.call("POST", devBase+"/subscriptions", "eve-token",
		map[string]any{"applicationId": app.ApplicationID, "apiId": ids["Members"], "throttlingPolicy": "Gold"}), 201, nil)

	var pub searchOut
	e.must(e.call("GET", pubBase+"/apis", "viewer-token", nil), 200, &pub)
	if pub.Count != 3 {
		t.Errorf("the publisher lists %d APIs, want all 3", pub.Count)
	}
}

// TestNameRules: names, versions, contexts and descriptions follow WSO2's
// length limits and characters; control and bidirectional-override
// characters are refused, with the field named, and nothing is stored.
func TestNameRules(t *testing.T) {
	e := newEnv(t, 0)
	for field, value := range map[string]string{
		"name":        strings.Repeat("n", 61),
		"version":     "1.0\u001e",
		"context":     "/pets\u202e",
		"description": "ok\u0000",
	} {
		body := petstoreBody()
		body[field] = value
		e.rejects(400, func() resp { return e.call("POST", pubBase+"/apis", "admin-token", body) }, field)
	}
	for _, name := range []string{"Pet\u202eerotS", "Pet<script>", "Pets/Dogs"} {
		body := petstoreBody()
		body["name"] = name
		e.rejects(400, func() resp { return e.call("POST", pubBase+"/apis", "admin-token", body) }, "name")
	}
	e.rejects(400, func() resp {
		return e.call("POST", devBase+"/applications", "bob-token", map[string]any{"name": strings.Repeat("a", 101), "throttlingPolicy": "Unlimited"})
	}, "at most 100 characters")
	e.rejects(400, func() resp {
		return e.call("POST", devBase+"/applications", "bob-token", map[string]any{"name": "app\u200f", "throttlingPolicy": "Unlimited"})
	}, "bidirectional")
	var list searchOut
	e.must(e.call("GET", pubBase+"/apis", "viewer-token", nil), 200, &list)
	if list.Count != 0 {
		t.Errorf("refused bodies stored %d APIs", list.Count)
	}
	// WSO2's own kinds of names still pass, multi-line descriptions too.
	body := petstoreBody()
	body["name"], body["version"], body["description"] = "Pet Store-v2_β", "v2.1.0-rc.1", "Line one.\nLine two.\tTabbed."
	e.must(e.call("POST", pubBase+"/apis", "admin-token", body), 201, nil)
}

// TestEndpointDenied: an endpoint at a denied destination (Envoy's admin
// port, a metadata address) is refused when the API is created or updated,
// naming the field; nothing is stored.
func TestEndpointDenied(t *testing.T) {
	e := newEnv(t, 0)
	for field, url := range map[string]string{
		"production_endpoints": "http://127.0.0.1:9901/quitquitquit",
		"sandbox_endpoints":    "http://169.254.169.254/latest/meta-data",
	} {
		body := petstoreBody()
		body["endpointConfig"].(map[string]any)[field] = map[string]any{"url": url}
		e.rejects(400, func() resp { return e.call("POST", pubBase+"/apis", "admin-token", body) },
			"endpointConfig."+field+".url", "denied destination")
	}
	var api struct{ ID string }
	e.must(e.call("POST", pubBase+"/apis", "admin-token", petstoreBody()), 201, &api)
	body := petstoreBody()
	body["endpointConfig"].(map[string]any)["production_endpoints"] = map[string]any{"url": "http://localhost:9901/"}
	e.rejects(400, func() resp { return e.call("PUT", pubBase+"/apis/"+api.ID, "admin-token", body) }, "denied destination")
	var got struct {
		EndpointConfig struct {
			Production struct{ URL string } `json:"production_endpoints"`
		}
	}
	e.must(e.call("GET", pubBase+"/apis/"+api.ID, "viewer-token", nil), 200, &got)
	if got.EndpointConfig.Production.URL != "http://backend.example:8080/v1" {
		t.Errorf("after a refused PUT the endpoint is %q", got.EndpointConfig.Production.URL)
	}
}

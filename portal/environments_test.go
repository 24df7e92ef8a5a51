package portal_test

import (
	"strings"
	"testing"
)

type environmentOut struct {
	ID, Name, DisplayName, Description, Type string
	IsReadOnly                               bool
	VHosts                                   []struct {
		Host      string
		HTTPPort  int `json:"httpPort"`
		HTTPSPort int `json:"httpsPort"`
	}
	EndpointURIs []struct{ Protocol, EndpointURI string } `json:"endpointURIs"`
}

func (e *env) environments() map[string]environmentOut {
	e.t.Helper()
	var list struct {
		Count int
		List  []environmentOut
	}
	e.must(e.call("GET", admBase+"/environments", "admin-token", nil), 200, &list)
	out := map[string]environmentOut{}
	for _, env := range list.List {
		out[env.Name] = env
	}
	if len(out) != list.Count {
		e.t.Fatalf("count %d for %d environments", list.Count, len(out))
	}
	return out
}

func edgeBody() map[string]any {
	return map[string]any{
		"name": "Edge", "displayName": "Edge gateways", "description": "the CDN's edge", "type": "hybrid", "gatewayType": "Regular",
		"vhosts":               []map[string]any{{"host": "edge.example.com", "httpContext": "", "httpPort": 8281, "httpsPort": 8244}},
		"additionalProperties": []map[string]any{{"key": "region", "value": "eu"}},
	}
}

func TestEnvironments(t *testing.T) {
	e := newEnv(t, 0)
	def := e.environments()["Default"]
	if !def.IsReadOnly || len(def.VHosts) != 1 || def.VHosts[0].Host != "localhost" || def.VHosts[0].HTTPPort != 8280 ||
		len(def.EndpointURIs) != 2 || def.EndpointURIs[0].EndpointURI != "http://localhost:8280" {
		t.Fatalf("Default = %+v", def)
	}

	before := e.outbox()
	var edge environmentOut
	r := e.call("POST", admBase+"/environments", "admin-token", edgeBody())
	e.must(r, 201, &edge)
	if r.header.Get("Location") != admBase+"/environments/"+edge.ID || edge.IsReadOnly || edge.DisplayName != "Edge gateways" {
		t.Fatalf("created %+v at %q", edge, r.header.Get("Location"))
	}
	if e.outbox() != before+1 {
		t.Errorf("no environment event in the outbox")
	}
	e.must(e.call("GET", admBase+"/environments/"+edge.ID, "admin-token", nil), 200, nil)
	e.rejects(409, func() resp { return e.call("POST", admBase+"/environments", "admin-token", edgeBody()) }, "already exists")

	t.Run("bad input names the field and writes nothing", func(t *testing.T) {
		e := &env{t: t, ctx: e.ctx, pool: e.pool, srv: e.srv, logs: e.logs}
		for name, tc := range map[string]struct {
			edit func(map[string]any)
			want string
		}{
			"no vhosts":         {func(b map[string]any) { delete(b, "vhosts") }, "vhosts is required"},
			"host with port":    {func(b map[string]any) { b["vhosts"] = []map[string]any{{"host": "a:1"}} }, "vhosts[0].host"},
			"port out of range": {func(b map[string]any) { b["vhosts"] = []map[string]any{{"host": "a", "httpPort": 70000}} }, "vhosts[0].httpPort"},
			"name with space":   {func(b map[string]any) { b["name"] = "my env" }, "name is invalid"},
			"name too long":     {func(b map[string]any) { b["name"] = strings.Repeat("a", 256) }, "name is invalid"},
			"bidi override":     {func(b map[string]any) { b["displayName"] = "abc\u202egpj.exe" }, "displayName is invalid"},
			"control character": {func(b map[string]any) { b["description"] = "a\x1eb" }, "description is invalid"},
			"unknown type":      {func(b map[string]any) { b["type"] = "staging" }, "type has an unknown value"},
			"restricted": {func(b map[string]any) {
				b["permissions"] = map[string]any{"permissionType": "ALLOW", "roles": []string{"x"}}
			}, "only PUBLIC"},
		} {
			t.Run(name, func(t *testing.T) {
				b := edgeBody()
				b["name"] = "Other"
				tc.edit(b)
				e.rejects(400, func() resp { return e.call("POST", admBase+"/environments", "admin-token", b) }, tc.want)
			})
		}
		e.rejects(400, func() resp {
			return e.call("POST", admBase+"/environments", "admin-token", `{"name":"X","vhosts":[{"host":"a","colour":"blue"}]}`)
		}, `unknown field "colour"`)
		e.rejects(403, func() resp { return e.call("POST", admBase+"/environments", "viewer-token", edgeBody()) }, "apim:environment_manage")
		e.rejects(401, func() resp { return e.call("GET", admBase+"/environments", "", nil) })
	})

	t.Run("update", func(t *testing.T) {
		e := &env{t: t, ctx: e.ctx, pool: e.pool, srv: e.srv, logs: e.logs}
		b := edgeBody()
		b["displayName"], b["id"] = "Edge (EU)", edge.ID
		var upd environmentOut
		e.must(e.call("PUT", admBase+"/environments/"+edge.ID, "admin-token", b), 200, &upd)
		if upd.DisplayName != "Edge (EU)" || upd.ID != edge.ID || upd.Name != "Edge" {
			t.Fatalf("updated %+v", upd)
		}
		b["name"] = "Renamed"
		e.rejects(400, func() resp { return e.call("PUT", admBase+"/environments/"+edge.ID, "admin-token", b) }, "name cannot change")
		e.rejects(409, func() resp { return e.call("PUT", admBase+"/environments/"+def.ID, "admin-token", edgeBody()) }, "read-only")
		e.rejects(409, func() resp { return e.call("DELETE", admBase+"/environments/"+def.ID, "admin-token", nil) }, "read-only")
		e.rejects(404, func() resp { return e.call("DELETE", admBase+"/environments/nope", "admin-token", nil) })
	})

	t.Run("delete only when nothing is deployed", func(t *testing.T) {
		e := &env{t: t, ctx: e.ctx, pool: e.pool, srv: e.srv, logs: e.logs}
		api := e.publish()
		var rev struct{ ID string }
		e.must(e.call("POST", pubBase+"/apis/"+api.ID+"/revisions", "admin-token", `{}`), 201, &rev)
		e.must(e.call("POST", pubBase+"/apis/"+api.ID+"/deploy-revision?revisionId="+rev.ID, "admin-token", `[{"name":"Edge"}]`), 201, nil)
		e.rejects(409, func() resp { return e.call("DELETE", admBase+"/environments/"+edge.ID, "admin-token", nil) }, "1 API deployments")
		e.must(e.call("POST", pubBase+"/apis/"+api.ID+"/undeploy-revision?revisionId="+rev.ID, "admin-token", `[{"name":"Edge"}]`), 201, nil)
		e.must(e.call("DELETE", admBase+"/environments/"+edge.ID, "admin-token", nil), 200, nil)
		e.must(e.call("GET", admBase+"/environments/"+edge.ID, "admin-token", nil), 404, nil)
		if _, ok := e.environments()["Edge"]; ok {
			t.Error("Edge still listed after delete")
		}
	})
}

func TestRevisionOperations(t *testing.T) {
	e := newEnv(t, 0)
	api := e.publish() // revision 1, deployed to Default
	var revs struct {
		Count int
		List  []struct {
			ID, Description string
			DeploymentInfo  []any
		}
	}
	e.must(e.call("GET", pubBase+"/apis/"+api.ID+"/revisions", "viewer-token", nil), 200, &revs)
	first := revs.List[0].ID

	full := petstoreBody()
	full["description"] = "changed after revision 1"
	e.must(e.call("PUT", pubBase+"/apis/"+api.ID, "admin-token", full), 200, nil)
	var second struct{ ID string }
	e.must(e.call("POST", pubBase+"/apis/"+api.ID+"/revisions", "admin-token", `{"description":"second"}`), 201, &second)

	e.must(e.call("GET", pubBase+"/apis/"+api.ID+"/revisions?query=deployed:true", "viewer-token", nil), 200, &revs)
	if revs.Count != 1 || revs.List[0].ID != first {
		t.Fatalf("deployed revisions %+v, want only the first", revs)
	}
	e.must(e.call("GET", pubBase+"/apis/"+api.ID+"/revisions?query=deployed:false", "viewer-token", nil), 200, &revs)
	if revs.Count != 1 || revs.List[0].ID != second.ID {
		t.Fatalf("undeployed revisions %+v, want only the second", revs)
	}
	e.rejects(400, func() resp {
		return e.call("GET", pubBase+"/apis/"+api.ID+"/revisions?query=name:x", "viewer-token", nil)
	}, "deployed:true")

	var one struct{ ID, Description string }
	e.must(e.call("GET", pubBase+"/apis/"+api.ID+"/revisions/"+second.ID, "viewer-token", nil), 200, &one)
	if one.ID != second.ID || one.Description != "second" {
		t.Fatalf("revision %+v", one)
	}
	e.rejects(404, func() resp {
		return e.call("GET", pubBase+"/apis/"+api.ID+"/revisions/00000000-0000-0000-0000-000000000000", "viewer-token", nil)
	})

	// Restoring revision 1 brings its description back.
	var restored struct{ ID, Description, LifeCycleStatus string }
	e.must(e.call("POST", pubBase+"/apis/"+api.ID+"/restore-revision?revisionId="+first, "admin-token", nil), 201, &restored)
	if restored.ID != api.ID || restored.Description == "changed after revision 1" || restored.LifeCycleStatus != "PUBLISHED" {
		t.Fatalf("restored %+v", restored)
	}
	var got struct{ Description string }
	e.must(e.call("GET", pubBase+"/apis/"+api.ID, "viewer-token", nil), 200, &got)
	if got.Description != restored.Description {
		t.Fatalf("GET after restore: %q, want %q", got.Description, restored.Description)
	}
	e.rejects(403, func() resp {
		return e.call("POST", pubBase+"/apis/"+api.ID+"/restore-revision?revisionId="+first, "viewer-token", nil)
	})
	e.rejects(400, func() resp { return e.call("POST", pubBase+"/apis/"+api.ID+"/restore-revision", "admin-token", nil) }, "revisionId or revisionNumber is required")
	// WSO2's revisionNumber names it too, as apictl sends it.
	e.must(e.call("POST", pubBase+"/apis/"+api.ID+"/restore-revision?revisionNumber=1", "admin-token", nil), 201, &restored)
	if restored.Description != got.Description {
		t.Fatalf("restored by number %+v, want revision 1's description %q", restored, got.Description)
	}
	e.rejects(404, func() resp {
		return e.call("POST", pubBase+"/apis/"+api.ID+"/restore-revision?revisionNumber=9", "admin-token", nil)
	}, "no revision 9")
	e.rejects(400, func() resp {
		return e.call("POST", pubBase+"/apis/"+api.ID+"/restore-revision?revisionNumber=first", "admin-token", nil)
	}, "whole number")

	// A deployed revision stays; an undeployed one goes.
	e.rejects(409, func() resp { return e.call("DELETE", pubBase+"/apis/"+api.ID+"/revisions/"+first, "admin-token", nil) }, "deployed to Default")
	e.must(e.call("DELETE", pubBase+"/apis/"+api.ID+"/revisions/"+second.ID, "admin-token", nil), 200, &revs)
	if revs.Count != 1 || revs.List[0].ID != first {
		t.Fatalf("after delete %+v", revs)
	}
	e.must(e.call("GET", pubBase+"/apis/"+api.ID+"/revisions/"+second.ID, "viewer-token", nil), 404, nil)
}

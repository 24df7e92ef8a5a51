package portal_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/apim-dev/apim/internal/model"
	"github.com/apim-dev/apim/internal/pgtest"
	"github.com/apim-dev/apim/internal/store"
	"github.com/apim-dev/apim/portal"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// fakeTokens maps a raw token to a principal.
type fakeTokens map[string]*model.Principal

func (f fakeTokens) VerifyToken(_ context.Context, raw string) (*model.Principal, error) {
	if p, ok := f[raw]; ok {
		return p, nil
	}
	return nil, errors.New("unknown token")
}

// fakeRoles are users' roles.
type fakeRoles map[string][]string

func (f fakeRoles) UserRoles(_ context.Context, user string) ([]string, error) { return f[user], nil }

// fakeClients registers OAuth clients in the caller's transaction.
type fakeClients struct{ n int }

func (f *fakeClients) RegisterClient(ctx context.Context, tx pgx.Tx, owner, name string, grantTypes []string, callback string) (string, string, error) {
	f.n++
	id := fmt.Sprintf("client-%d", f.n)
	redirects := []string{}
	if callback != "" {
		redirects = append(redirects, callback)
	}
	_, err := tx.Exec(ctx, `INSERT INTO oauth_clients (client_id, secret_hash, name, owner, grant_types, redirect_uris) VALUES ($1, 'hash', $2, $3, $4, $5)`,
		id, name, owner, grantTypes, redirects)
	return id, "secret-" + id, err
}

func (f *fakeClients) DeleteClients(ctx context.Context, tx pgx.Tx, ids []string) error {
	_, err := tx.Exec(ctx, `DELETE FROM oauth_clients WHERE client_id = ANY($1)`, ids)
	return err
}

var (
	_ portal.TokenVerifier   = fakeTokens(nil)
	_ portal.ClientRegistrar = (*fakeClients)(nil)
)

const (
	pubBase = portal.PublisherBase
	devBase = portal.DevportalBase
	admBase = portal.AdminBase
)

type env struct {
	t    *testing.T
	ctx  context.Context
	pool *pgxpool.Pool
	srv  *httptest.Server
	logs *bytes.Buffer
}

var allScopes = []string{
	"apim:api_view", "apim:api_create", "apim:api_publish", "apim:api_delete", "apim:subscribe",
	"apim:app_manage", "apim:sub_manage", "apim:admin", "apim:tier_view", "apim:tier_manage",
	"apim:subscription_view", "apim:subscription_block",
}

func newEnv(t *testing.T, maxBody int64) *env {
	t.Helper()
	url, _ := pgtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	logs := &bytes.Buffer{}
	p, err := portal.New(portal.Config{
		Store: store.New(pool),
		Tokens: fakeTokens{
			"admin-token":  {Subject: "admin", Scopes: allScopes},
			"bob-token":    {Subject: "bob", Scopes: []string{"apim:subscribe", "apim:app_manage", "apim:sub_manage", "apim:api_view"}},
			"eve-token":    {Subject: "eve", Scopes: []string{"apim:subscribe", "apim:app_manage", "apim:sub_manage"}},
			"viewer-token": {Subject: "viewer", Scopes: []string{"apim:api_view", "apim:tier_view"}},
		},
		Clients:      &fakeClients{},
		Roles:        fakeRoles{"bob": {"partners"}, "eve": {"internal/subscriber"}},
		EndpointDeny: model.DefaultEndpointDeny(9901),
		Logger:       zerolog.New(logs),
		MaxBodyBytes: maxBody,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p.Handler())
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		for _, secret := range []string{"admin-token", "bob-token", "secret-client"} {
			if strings.Contains(logs.String(), secret) {
				t.Errorf("a log line holds %q:\n%s", secret, logs)
			}
		}
	})
	return &env{t: t, ctx: ctx, pool: pool, srv: srv, logs: logs}
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (e *env) do(method, path, token, contentType string, body io.Reader) resp {
	e.t.Helper()
	req, err := http.NewRequestWithContext(e.ctx, method, e.srv.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

// call sends a JSON body (a string is sent as is).
func (e *env) call(method, path, token string, body any) resp {
	e.t.Helper()
	var rd io.Reader
	ct := ""
	switch b := body.(type) {
	case nil:
	case string:
		rd, ct = strings.NewReader(b), "application/json"
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd, ct = bytes.NewReader(raw), "application/json"
	}
	return e.do(method, path, token, ct, rd)
}

// must requires status and decodes the body into out (when not nil).
func (e *env) must(r resp, status int, out any) {
	e.t.Helper()
	if r.status != status {
		e.t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if out != nil {
		r.json(e.t, out)
	}
}

var tables = []string{
	"apis", "api_endpoints", "api_resources", "api_revisions", "api_deployments", "lifecycle_history",
	"applications", "oauth_clients", "key_mappings", "subscriptions", "throttling_policies", "outbox",
}

func (e *env) counts() map[string]int {
	e.t.Helper()
	out := map[string]int{}
	for _, tb := range tables {
		var n int
		if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM `+tb).Scan(&n); err != nil {
			e.t.Fatal(err)
		}
		out[tb] = n
	}
	return out
}

func (e *env) outbox() int { return e.counts()["outbox"] }

// rejects requires the request to fail with status, a WSO2 error body whose
// description holds every want, and no row written anywhere.
func (e *env) rejects(status int, send func() resp, want ...string) {
	e.t.Helper()
	before := e.counts()
	r := send()
	if r.status != status {
		e.t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	var body struct {
		Code        int    `json:"code"`
		Message     string `json:"message"`
		Description string `json:"description"`
		MoreInfo    *string
		Error       []any `json:"error"`
	}
	r.json(e.t, &body)
	if body.Code == 0 || body.Message == "" || body.Error == nil {
		e.t.Errorf("not a WSO2 error body: %s", r.body)
	}
	for _, w := range want {
		if !strings.Contains(body.Description, w) {
			e.t.Errorf("description %q does not mention %q", body.Description, w)
		}
	}
	after := e.counts()
	for _, tb := range tables {
		if before[tb] != after[tb] {
			e.t.Errorf("%s: %d rows before, %d after a rejected request", tb, before[tb], after[tb])
		}
	}
}

func petstoreBody() map[string]any {
	return map[string]any{
		"name": "PetStore", "description": "Pets", "context": "/pets", "version": "1.0.0",
		"endpointConfig": map[string]any{
			"endpoint_type":        "http",
			"production_endpoints": map[string]any{"url": "http://backend.example:8080/v1"},
			"sandbox_endpoints":    map[string]any{"url": "http://sandbox.example:8080/v1"},
		},
		"operations": []any{
			map[string]any{"target": "/pets", "verb": "GET"},
			map[string]any{"target": "/pets/{id}", "verb": "GET", "scopes": []string{"pets:read"}},
		},
		"policies": []string{"Gold", "Unlimited"},
	}
}

type apiOut struct {
	ID              string `json:"id"`
	Name            string `json:"name"`
	Provider        string `json:"provider"`
	LifeCycleStatus string `json:"lifeCycleStatus"`
	Operations      []struct {
		Target, Verb, AuthType, ThrottlingPolicy string
		Scopes                                   []string
	} `json:"operations"`
	Policies       []string `json:"policies"`
	EndpointConfig struct {
		EndpointType string `json:"endpoint_type"`
		Production   struct {
			URL string `json:"url"`
		} `json:"production_endpoints"`
	} `json:"endpointConfig"`
}

// publish creates, revises, deploys and publishes PetStore.
func (e *env) publish() apiOut {
	e.t.Helper()
	var api apiOut
	e.must(e.call("POST", pubBase+"/apis", "admin-token", petstoreBody()), 201, &api)
	var rev struct{ ID string }
	e.must(e.call("POST", pubBase+"/apis/"+api.ID+"/revisions", "admin-token", `{"description":"first"}`), 201, &rev)
	e.must(e.call("POST", pubBase+"/apis/"+api.ID+"/deploy-revision?revisionId="+rev.ID, "admin-token",
		`[{"name":"Default","vhost":"localhost","displayOnDevportal":true}]`), 201, nil)
	e.must(e.call("POST", pubBase+"/apis/change-lifecycle?apiId="+api.ID+"&action=Publish", "admin-token", nil), 200, nil)
	return api
}

func TestCoreFlow(t *testing.T) {
	e := newEnv(t, 0)

	n := e.outbox()
	var api apiOut
	e.must(e.call("POST", pubBase+"/apis", "admin-token", petstoreBody()), 201, &api)
	if api.ID == "" || api.LifeCycleStatus != "CREATED" || api.Provider != "admin" || api.Name != "PetStore" {
		t.Errorf("created %+v", api)
	}
	if len(api.Operations) != 2 || api.Operations[0].AuthType != model.AuthApplicationUser || api.Operations[0].ThrottlingPolicy != "Unlimited" ||
		api.Operations[1].Scopes[0] != "pets:read" || api.EndpointConfig.Production.URL != "http://backend.example:8080/v1" {
		t.Errorf("created operations/endpoints %+v", api)
	}
	if got := e.outbox() - n; got != 1 {
		t.Errorf("create wrote %d outbox rows", got)
	}

	var got apiOut
	e.must(e.call("GET", pubBase+"/apis/"+api.ID, "viewer-token", nil), 200, &got)
	if got.ID != api.ID || len(got.Operations) != 2 {
		t.Errorf("get %+v", got)
	}
	var list struct {
		Count      int
		List       []apiOut
		Pagination struct{ Total int }
	}
	e.must(e.call("GET", pubBase+"/apis", "viewer-token", nil), 200, &list)
	if list.Count != 1 || list.Pagination.Total != 1 {
		t.Errorf("list %+v", list)
	}

	var rev struct {
		ID, DisplayName string
		APIInfo         struct{ ID string } `json:"apiInfo"`
	}
	e.must(e.call("POST", pubBase+"/apis/"+api.ID+"/revisions", "admin-token", `{"description":"first"}`), 201, &rev)
	if rev.DisplayName != "Revision 1" || rev.APIInfo.ID != api.ID {
		t.Errorf("revision %+v", rev)
	}
	n = e.outbox()
	var deps []struct {
		RevisionUUID, Name, VHost string
		DisplayOnDevportal        bool
	}
	e.must(e.call("POST", pubBase+"/apis/"+api.ID+"/deploy-revision?revisionId="+rev.ID, "admin-token",
		`[{"name":"Default","vhost":"localhost","displayOnDevportal":true}]`), 201, &deps)
	if len(deps) != 1 || deps[0].RevisionUUID != rev.ID || deps[0].Name != "Default" || !deps[0].DisplayOnDevportal {
		t.Errorf("deployments %+v", deps)
	}
	if got := e.outbox() - n; got != 1 {
		t.Errorf("deploy wrote %d outbox rows", got)
	}
	var revs struct {
		Count int
		List  []struct {
			DeploymentInfo []any `json:"deploymentInfo"`
		}
	}
	e.must(e.call("GET", pubBase+"/apis/"+api.ID+"/revisions", "viewer-token", nil), 200, &revs)
	if revs.Count != 1 || len(revs.List[0].DeploymentInfo) != 1 {
		t.Errorf("revisions %+v", revs)
	}

	// Not yet published: devportal does not show it, nobody can subscribe.
	var dev struct {
		Count int
		List  []struct {
			ID, LifeCycleStatus string
			ThrottlingPolicies  []string
		}
	}
	e.must(e.call("GET", devBase+"/apis", "", nil), 200, &dev)
	if dev.Count != 0 {
		t.Errorf("devportal shows a CREATED api: %+v", dev)
	}
	e.must(e.call("GET", devBase+"/apis/"+api.ID, "", nil), 404, nil)

	var wf struct {
		WorkflowStatus string
		LifecycleState struct {
			State                string
			AvailableTransitions []struct{ Event, TargetState string }
		}
	}
	e.must(e.call("POST", pubBase+"/apis/change-lifecycle?apiId="+api.ID+"&action=Publish", "admin-token", nil), 200, &wf)
	if wf.WorkflowStatus != "APPROVED" || wf.LifecycleState.State != "Published" || len(wf.LifecycleState.AvailableTransitions) == 0 {
		t.Errorf("workflow %+v", wf)
	}

	e.must(e.call("GET", devBase+"/apis", "", nil), 200, &dev)
	if dev.Count != 1 || dev.List[0].ID != api.ID || dev.List[0].LifeCycleStatus != "PUBLISHED" || len(dev.List[0].ThrottlingPolicies) != 2 {
		t.Errorf("devportal %+v", dev)
	}
	e.must(e.call("GET", devBase+"/apis/"+api.ID, "bob-token", nil), 200, nil)

	var app struct {
		ApplicationID, Name, ThrottlingPolicy, Description, TokenType, Status, Owner string
	}
	e.must(e.call("POST", devBase+"/applications", "bob-token",
		`{"name":"bobapp","throttlingPolicy":"10PerMin","description":"mine","tokenType":"JWT"}`), 201, &app)
	if app.ApplicationID == "" || app.Status != "APPROVED" || app.Owner != "bob" || app.Description != "mine" || app.TokenType != "JWT" {
		t.Errorf("application %+v", app)
	}
	var apps struct{ Count int }
	e.must(e.call("GET", devBase+"/applications", "bob-token", nil), 200, &apps)
	if apps.Count != 1 {
		t.Errorf("bob's applications %+v", apps)
	}
	e.must(e.call("GET", devBase+"/applications", "eve-token", nil), 200, &apps)
	if apps.Count != 0 {
		t.Errorf("eve sees bob's applications %+v", apps)
	}

	n = e.outbox()
	var keys struct {
		KeyMappingID, KeyManager, ConsumerKey, ConsumerSecret, KeyState, KeyType string
		SupportedGrantTypes                                                      []string
		Token                                                                    *struct{}
	}
	r := e.call("POST", devBase+"/applications/"+app.ApplicationID+"/generate-keys", "bob-token",
		`{"keyType":"PRODUCTION","grantTypesToBeSupported":["client_credentials","password"],"callbackUrl":"","scopes":["default"],"validityTime":"3600"}`)
	e.must(r, 200, &keys)
	if keys.ConsumerKey == "" || keys.ConsumerSecret == "" || keys.KeyState != "COMPLETED" || keys.KeyManager != "Resident Key Manager" ||
		keys.KeyType != "PRODUCTION" || len(keys.SupportedGrantTypes) != 2 || keys.Token != nil || !bytes.Contains(r.body, []byte(`"token":null`)) {
		t.Errorf("keys %s", r.body)
	}
	if got := e.outbox() - n; got != 1 {
		t.Errorf("generate-keys wrote %d outbox rows", got)
	}
	e.rejects(409, func() resp {
		return e.call("POST", devBase+"/applications/"+app.ApplicationID+"/generate-keys", "bob-token",
			`{"keyType":"PRODUCTION","grantTypesToBeSupported":["client_credentials"]}`)
	}, "PRODUCTION")

	n = e.outbox()
	var sub struct{ SubscriptionID, ApplicationID, APIID, ThrottlingPolicy, Status string }
	e.must(e.call("POST", devBase+"/subscriptions", "bob-token",
		map[string]string{"applicationId": app.ApplicationID, "apiId": api.ID, "throttlingPolicy": "Gold"}), 201, &sub)
	if sub.SubscriptionID == "" || sub.Status != "UNBLOCKED" || sub.APIID != api.ID || sub.ThrottlingPolicy != "Gold" {
		t.Errorf("subscription %+v", sub)
	}
	if got := e.outbox() - n; got != 1 {
		t.Errorf("subscribe wrote %d outbox rows", got)
	}
	e.rejects(409, func() resp {
		return e.call("POST", devBase+"/subscriptions", "bob-token",
			map[string]string{"applicationId": app.ApplicationID, "apiId": api.ID, "throttlingPolicy": "Gold"})
	}, "already subscribed")
	var subs struct{ Count int }
	e.must(e.call("GET", devBase+"/subscriptions?applicationId="+app.ApplicationID, "bob-token", nil), 200, &subs)
	if subs.Count != 1 {
		t.Errorf("subscriptions %+v", subs)
	}

	// Another user: 404 on everything of bob's.
	for _, c := range []struct{ method, path string }{
		{"GET", devBase + "/applications/" + app.ApplicationID},
		{"DELETE", devBase + "/applications/" + app.ApplicationID},
		{"GET", devBase + "/subscriptions?applicationId=" + app.ApplicationID},
		{"DELETE", devBase + "/subscriptions/" + sub.SubscriptionID},
	} {
		e.rejects(404, func() resp { return e.call(c.method, c.path, "eve-token", nil) })
	}
	e.rejects(404, func() resp {
		return e.call("POST", devBase+"/applications/"+app.ApplicationID+"/generate-keys", "eve-token",
			`{"keyType":"SANDBOX","grantTypesToBeSupported":["client_credentials"]}`)
	})
	e.rejects(404, func() resp {
		return e.call("POST", devBase+"/subscriptions", "eve-token",
			map[string]string{"applicationId": app.ApplicationID, "apiId": api.ID, "throttlingPolicy": "Unlimited"})
	})

	// Undeploy, delete subscription, application and API.
	e.must(e.call("POST", pubBase+"/apis/"+api.ID+"/undeploy-revision?revisionId="+rev.ID, "admin-token",
		`[{"name":"Default","vhost":"localhost","displayOnDevportal":true}]`), 201, &deps)
	if len(deps) != 0 {
		t.Errorf("after undeploy %+v", deps)
	}
	e.must(e.call("DELETE", devBase+"/subscriptions/"+sub.SubscriptionID, "bob-token", nil), 200, nil)
	e.must(e.call("DELETE", devBase+"/applications/"+app.ApplicationID, "bob-token", nil), 200, nil)
	e.must(e.call("GET", devBase+"/applications/"+app.ApplicationID, "bob-token", nil), 404, nil)
	e.must(e.call("DELETE", pubBase+"/apis/"+api.ID, "admin-token", nil), 200, nil)
	e.must(e.call("GET", pubBase+"/apis/"+api.ID, "admin-token", nil), 404, nil)
}

func TestPublisherUpdateAndLifecycle(t *testing.T) {
	e := newEnv(t, 0)
	var api apiOut
	r := e.call("POST", pubBase+"/apis", "admin-token", petstoreBody())
	e.must(r, 201, &api)
	// The body of a GET can be PUT back.
	var full map[string]any
	r.json(t, &full)
	full["description"] = "changed"
	full["operations"] = []any{map[string]any{"target": "/cats", "verb": "post", "authType": "None"}}
	var upd apiOut
	e.must(e.call("PUT", pubBase+"/apis/"+api.ID, "admin-token", full), 200, &upd)
	if len(upd.Operations) != 1 || upd.Operations[0].Verb != "POST" || upd.Operations[0].AuthType != "None" {
		t.Errorf("updated %+v", upd)
	}
	e.rejects(400, func() resp {
		return e.call("POST", pubBase+"/apis/change-lifecycle?apiId="+api.ID+"&action=Retire", "admin-token", nil)
	}, "Retire", "CREATED")
	e.rejects(400, func() resp { return e.call("POST", pubBase+"/apis/change-lifecycle?apiId="+api.ID, "admin-token", nil) }, "action is required")
	e.rejects(404, func() resp {
		return e.call("POST", pubBase+"/apis/change-lifecycle?apiId=00000000-0000-0000-0000-000000000000&action=Publish", "admin-token", nil)
	})
	// Revisions cap at five.
	for i := 0; i < store.MaxRevisions; i++ {
		e.must(e.call("POST", pubBase+"/apis/"+api.ID+"/revisions", "admin-token", `{}`), 201, nil)
	}
	e.rejects(409, func() resp { return e.call("POST", pubBase+"/apis/"+api.ID+"/revisions", "admin-token", `{}`) }, "maximum")
	// Same context and version: 409.
	dup := petstoreBody()
	dup["name"] = "Other"
	e.rejects(409, func() resp { return e.call("POST", pubBase+"/apis", "admin-token", dup) }, "/pets")
	// Unknown environment named.
	var revs struct{ List []struct{ ID string } }
	e.must(e.call("GET", pubBase+"/apis/"+api.ID+"/revisions", "admin-token", nil), 200, &revs)
	e.rejects(400, func() resp {
		return e.call("POST", pubBase+"/apis/"+api.ID+"/deploy-revision?revisionId="+revs.List[0].ID, "admin-token", `[{"name":"Mars"}]`)
	}, `"Mars"`)
	e.rejects(404, func() resp {
		return e.call("POST", pubBase+"/apis/"+api.ID+"/deploy-revision?revisionId=00000000-0000-0000-0000-000000000000", "admin-token", `[{"name":"Default"}]`)
	})
	e.rejects(400, func() resp {
		return e.call("POST", pubBase+"/apis/"+api.ID+"/undeploy-revision?revisionId="+revs.List[0].ID, "admin-token", `[{"name":"Default"}]`)
	}, "not deployed")
}

// badBodies are sent to every JSON endpoint; each must be rejected with a
// message naming the problem and nothing written.
func TestEveryEndpointRejectsBadBodies(t *testing.T) {
	e := newEnv(t, 0)
	api := e.publish()
	var revs struct{ List []struct{ ID string } }
	e.must(e.call("GET", pubBase+"/apis/"+api.ID+"/revisions", "admin-token", nil), 200, &revs)
	revID := revs.List[0].ID
	var app struct{ ApplicationID string }
	e.must(e.call("POST", devBase+"/applications", "bob-token", `{"name":"a","throttlingPolicy":"Unlimited"}`), 201, &app)

	type endpoint struct {
		method, path, token string
		valid               map[string]any // a valid body, for the unknown-field case
		missing             string         // a body missing a required field
		wantMissing         []string       // what the message must name
	}
	endpoints := map[string]endpoint{
		"create api": {
			"POST", pubBase + "/apis", "admin-token", petstoreBody(),
			`{"description":"x","endpointConfig":{"production_endpoints":{"url":"http://b"}}}`,
			[]string{"name is required", "context is required", "version is required"},
		},
		"update api": {
			"PUT", pubBase + "/apis/" + api.ID, "admin-token", petstoreBody(),
			`{"name":"PetStore","version":"1.0.0"}`,
			[]string{"context is required", "endpointConfig is required"},
		},
		"create revision": {
			"POST", pubBase + "/apis/" + api.ID + "/revisions", "admin-token",
			map[string]any{"description": "d"},
			``,
			[]string{"empty"},
		},
		"deploy": {
			"POST", pubBase + "/apis/" + api.ID + "/deploy-revision?revisionId=" + revID, "admin-token", nil,
			`[{"vhost":"localhost"}]`,
			[]string{"[0].name is required"},
		},
		"undeploy": {
			"POST", pubBase + "/apis/" + api.ID + "/undeploy-revision?revisionId=" + revID, "admin-token", nil,
			`[]`,
			[]string{"at least one environment"},
		},
		"create application": {
			"POST", devBase + "/applications", "bob-token",
			map[string]any{"name": "b", "throttlingPolicy": "Unlimited"},
			`{"description":"x"}`,
			[]string{"name is required", "throttlingPolicy is required"},
		},
		"generate keys": {
			"POST", devBase + "/applications/" + app.ApplicationID + "/generate-keys", "bob-token",
			map[string]any{"keyType": "SANDBOX", "grantTypesToBeSupported": []string{"client_credentials"}},
			`{"callbackUrl":""}`,
			[]string{"keyType is required", "grantTypesToBeSupported is required"},
		},
		"subscribe": {
			"POST", devBase + "/subscriptions", "bob-token",
			map[string]any{"applicationId": app.ApplicationID, "apiId": api.ID, "throttlingPolicy": "Gold"},
			`{"apiId":"` + api.ID + `"}`,
			[]string{"applicationId is required", "throttlingPolicy is required"},
		},
		"subscription policy": {
			"POST", admBase + "/throttling/policies/subscription", "admin-token", policyBody("P1"),
			`{"displayName":"x","defaultLimit":{"type":"REQUESTCOUNTLIMIT","requestCount":{"timeUnit":"min"}}}`,
			[]string{"policyName is required", "unitTime"},
		},
		"application policy": {
			"POST", admBase + "/throttling/policies/application", "admin-token",
			map[string]any{"policyName": "A1", "defaultLimit": map[string]any{"type": "REQUESTCOUNTLIMIT", "requestCount": map[string]any{"timeUnit": "min", "unitTime": 1, "requestCount": 5}}},
			`{"policyName":"A2"}`,
			[]string{"defaultLimit is required"},
		},
	}
	for name, ep := range endpoints {
		t.Run(name, func(t *testing.T) {
			e := &env{t: t, ctx: e.ctx, pool: e.pool, srv: e.srv, logs: e.logs}
			e.rejects(400, func() resp { return e.call(ep.method, ep.path, ep.token, `{"name": "x",`) }, "malformed JSON")
			var withUnknown any = []any{map[string]any{"name": "Default", "colour": "blue"}}
			if ep.valid != nil {
				m := map[string]any{}
				for k, v := range ep.valid {
					m[k] = v
				}
				m["colour"] = "blue"
				withUnknown = m
			}
			e.rejects(400, func() resp { return e.call(ep.method, ep.path, ep.token, withUnknown) }, `unknown field "colour"`)
			e.rejects(400, func() resp { return e.call(ep.method, ep.path, ep.token, ep.missing) }, ep.wantMissing...)
			trailing := `{} {}`
			if ep.valid == nil {
				trailing = `[] []`
			}
			e.rejects(400, func() resp { return e.call(ep.method, ep.path, ep.token, trailing) }, "after the JSON value")
			e.rejects(400, func() resp { return e.call(ep.method, ep.path, ep.token, `{"x":1,"x":2}`) }, `duplicate field "x"`)
			e.rejects(400, func() resp { return e.call(ep.method, ep.path, ep.token, `"text"`) }, "body must be")
			e.rejects(415, func() resp { return e.do(ep.method, ep.path, ep.token, "text/plain", strings.NewReader(`{}`)) }, "application/json")
			if ep.valid != nil { // a NUL in a string PostgreSQL cannot store: 400, not 500
				m := map[string]any{}
				for k, v := range ep.valid {
					m[k] = v
					if str, ok := v.(string); ok {
						m[k] = str + "\x00"
					}
				}
				if r := e.call(ep.method, ep.path, ep.token, m); r.status >= 500 {
					t.Errorf("a NUL in every string field = %d %s, want 4xx", r.status, r.body)
				}
			}
		})
	}
	// Semantic errors, each named, nothing written.
	e.rejects(400, func() resp {
		return e.call("POST", devBase+"/applications", "bob-token", `{"name":"c","throttlingPolicy":"Gold"}`)
	}, "throttlingPolicy")
	e.rejects(400, func() resp {
		return e.call("POST", devBase+"/subscriptions", "bob-token",
			map[string]string{"applicationId": app.ApplicationID, "apiId": api.ID, "throttlingPolicy": "Bronze"})
	}, "Bronze")
	e.rejects(400, func() resp {
		b := petstoreBody()
		b["context"], b["name"], b["policies"] = "/x", "X", []string{"Platinum"}
		return e.call("POST", pubBase+"/apis", "admin-token", b)
	}, "Platinum")
	e.rejects(400, func() resp {
		b := petstoreBody()
		b["context"], b["name"] = "/x", "X"
		b["operations"] = []any{map[string]any{"target": "pets", "verb": "FETCH"}}
		return e.call("POST", pubBase+"/apis", "admin-token", b)
	}, "operations[0].verb", "operations[0].target")
	e.rejects(400, func() resp {
		return e.call("POST", admBase+"/throttling/policies/subscription", "admin-token",
			`{"policyName":"Q","defaultLimit":{"type":"REQUESTCOUNTLIMIT","requestCount":{"timeUnit":"week","unitTime":1,"requestCount":1}}}`)
	}, "timeUnit")
	e.rejects(400, func() resp {
		return e.call("POST", pubBase+"/apis/"+api.ID+"/deploy-revision", "admin-token", `[{"name":"Default"}]`)
	}, "revisionId or revisionNumber is required")
}

func policyBody(name string) map[string]any {
	return map[string]any{
		"policyName": name, "displayName": name, "description": "d",
		"defaultLimit":     map[string]any{"type": "REQUESTCOUNTLIMIT", "requestCount": map[string]any{"timeUnit": "min", "unitTime": 1, "requestCount": 100}},
		"stopOnQuotaReach": true, "billingPlan": "FREE",
	}
}

func TestAdminPolicies(t *testing.T) {
	e := newEnv(t, 0)
	n := e.outbox()
	var pol struct {
		PolicyID, PolicyName string
		DefaultLimit         struct {
			Type         string
			RequestCount struct {
				TimeUnit               string
				UnitTime, RequestCount int
			}
		}
	}
	e.must(e.call("POST", admBase+"/throttling/policies/subscription", "admin-token", policyBody("Platinum")), 201, &pol)
	if pol.PolicyID == "" || pol.PolicyID == "Platinum" || pol.DefaultLimit.RequestCount.RequestCount != 100 || pol.DefaultLimit.Type != "REQUESTCOUNTLIMIT" {
		t.Errorf("policy %+v", pol)
	}
	if got := e.outbox() - n; got != 1 {
		t.Errorf("create policy wrote %d outbox rows", got)
	}
	e.rejects(409, func() resp {
		return e.call("POST", admBase+"/throttling/policies/subscription", "admin-token", policyBody("Platinum"))
	}, "Platinum")
	var list struct {
		Count int
		List  []struct{ PolicyName string }
	}
	e.must(e.call("GET", admBase+"/throttling/policies/subscription", "viewer-token", nil), 200, &list)
	if list.Count != 6 {
		t.Errorf("%d subscription policies, want 5 seeded + Platinum", list.Count)
	}
	e.must(e.call("GET", admBase+"/throttling/policies/application", "viewer-token", nil), 200, &list)
	if list.Count != 4 {
		t.Errorf("%d application policies", list.Count)
	}
	e.rejects(403, func() resp {
		return e.call("POST", admBase+"/throttling/policies/application", "viewer-token", policyBody("X"))
	}, "apim:tier_manage")
}

func TestAuth(t *testing.T) {
	e := newEnv(t, 0)
	api := e.publish()
	routes := []struct{ method, path string }{
		{"GET", pubBase + "/apis"},
		{"POST", pubBase + "/apis"},
		{"POST", pubBase + "/apis/import-openapi"},
		{"GET", pubBase + "/apis/" + api.ID},
		{"PUT", pubBase + "/apis/" + api.ID},
		{"DELETE", pubBase + "/apis/" + api.ID},
		{"POST", pubBase + "/apis/" + api.ID + "/revisions"},
		{"GET", pubBase + "/apis/" + api.ID + "/revisions"},
		{"POST", pubBase + "/apis/" + api.ID + "/deploy-revision?revisionId=x"},
		{"POST", pubBase + "/apis/" + api.ID + "/undeploy-revision?revisionId=x"},
		{"POST", pubBase + "/apis/change-lifecycle?apiId=" + api.ID + "&action=Block"},
		{"GET", pubBase + "/subscriptions?apiId=" + api.ID},
		{"POST", pubBase + "/subscriptions/block-subscription?subscriptionId=x&blockState=BLOCKED"},
		{"POST", pubBase + "/subscriptions/unblock-subscription?subscriptionId=x"},
		{"POST", devBase + "/applications"},
		{"GET", devBase + "/applications"},
		{"GET", devBase + "/applications/x"},
		{"DELETE", devBase + "/applications/x"},
		{"POST", devBase + "/applications/x/generate-keys"},
		{"POST", devBase + "/subscriptions"},
		{"GET", devBase + "/subscriptions?applicationId=x"},
		{"DELETE", devBase + "/subscriptions/x"},
		{"POST", admBase + "/throttling/policies/subscription"},
		{"GET", admBase + "/throttling/policies/subscription"},
		{"POST", admBase + "/throttling/policies/application"},
		{"GET", admBase + "/throttling/policies/application"},
	}
	for _, rt := range routes {
		r := e.call(rt.method, rt.path, "", `{}`)
		if r.status != 401 || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s %s without token: %d %q", rt.method, rt.path, r.status, r.header.Get("WWW-Authenticate"))
		}
		if r := e.call(rt.method, rt.path, "forged", `{}`); r.status != 401 {
			t.Errorf("%s %s with a bad token: %d", rt.method, rt.path, r.status)
		}
	}
	// Missing scope: 403, nothing written.
	for _, c := range []struct {
		method, path, token string
		body                any
	}{
		{"POST", pubBase + "/apis", "bob-token", petstoreBody()},
		{"DELETE", pubBase + "/apis/" + api.ID, "bob-token", nil},
		{"POST", pubBase + "/apis/change-lifecycle?apiId=" + api.ID + "&action=Block", "viewer-token", nil},
		{"GET", pubBase + "/apis", "eve-token", nil},
		{"GET", pubBase + "/subscriptions?apiId=" + api.ID, "bob-token", nil},
		{"POST", pubBase + "/subscriptions/block-subscription?subscriptionId=x&blockState=BLOCKED", "bob-token", nil},
		{"POST", pubBase + "/subscriptions/unblock-subscription?subscriptionId=x", "viewer-token", nil},
		{"POST", devBase + "/applications", "viewer-token", `{"name":"v","throttlingPolicy":"Unlimited"}`},
		{"POST", devBase + "/subscriptions", "viewer-token", `{}`},
		{"GET", admBase + "/throttling/policies/subscription", "bob-token", nil},
		{"POST", admBase + "/throttling/policies/subscription", "bob-token", policyBody("X")},
	} {
		e.rejects(403, func() resp { return e.call(c.method, c.path, c.token, c.body) }, "scopes")
	}
	// Anonymous devportal browsing; a bad token is still refused there.
	e.must(e.call("GET", devBase+"/apis", "", nil), 200, nil)
	e.must(e.call("GET", devBase+"/apis/"+api.ID, "", nil), 200, nil)
	e.must(e.call("GET", devBase+"/apis", "forged", nil), 401, nil)
}

func TestBodyLimit(t *testing.T) {
	e := newEnv(t, 512)
	b := petstoreBody()
	b["description"] = strings.Repeat("x", 1024)
	e.rejects(413, func() resp { return e.call("POST", pubBase+"/apis", "admin-token", b) }, "larger than 512 bytes")
	e.rejects(413, func() resp {
		body, ct := multipartBody(t, openapi3YAML, `{"context":"/imp","endpointConfig":{"production_endpoints":{"url":"http://b"}}}`)
		return e.do("POST", pubBase+"/apis/import-openapi", "admin-token", ct, body)
	}, "larger than 512 bytes")
}

const openapi3YAML = `openapi: 3.0.3
info: {title: Pet Store, version: 2.0.0, description: Imported pets}
paths:
  /pets:
    get:
      responses: {"200": {description: ok}}
    post:
      x-auth-type: None
      responses: {"201": {description: created}}
  /pets/{petId}:
    get:
      x-throttling-tier: Unlimited
      security: [{default: [pets:read]}]
      parameters: [{name: petId, in: path, required: true, schema: {type: string}}]
      responses: {"200": {description: ok}}
components:
  securitySchemes:
    default: {type: oauth2, flows: {implicit: {authorizationUrl: "https://example.com/authorize", scopes: {"pets:read": read}}}}
`

const swagger2YAML = `swagger: "2.0"
info: {title: Stores, version: 1.0.0}
basePath: /v1
paths:
  /stores/{id}:
    delete:
      parameters: [{name: id, in: path, required: true, type: string}]
      responses: {200: {description: ok}}
  /stores:
    get:
      responses: {200: {description: ok}}
`

func multipartBody(t *testing.T, file, props string) (io.Reader, string) {
	t.Helper()
	fields := map[string]string{}
	if props != "" {
		fields["additionalProperties"] = props
	}
	return multipartFields(t, file, fields)
}

func TestImportOpenAPI(t *testing.T) {
	e := newEnv(t, 0)
	imp := func(file, props string) resp {
		body, ct := multipartBody(t, file, props)
		return e.do("POST", pubBase+"/apis/import-openapi", "admin-token", ct, body)
	}
	var api apiOut
	e.must(imp(openapi3YAML, `{"context":"/imp","endpointConfig":{"endpoint_type":"http","production_endpoints":{"url":"http://backend:8080"}},"policies":["Gold"]}`), 201, &api)
	if api.Name != "PetStore" || len(api.Operations) != 3 || api.Provider != "admin" {
		t.Fatalf("imported %+v", api)
	}
	want := []string{"GET /pets Application & Application User", "POST /pets None", "GET /pets/{petId} Application & Application User"}
	for i, op := range api.Operations {
		if got := op.Verb + " " + op.Target + " " + op.AuthType; got != want[i] {
			t.Errorf("operation %d: %q, want %q", i, got, want[i])
		}
	}
	if len(api.Operations[2].Scopes) != 1 || api.Operations[2].Scopes[0] != "pets:read" {
		t.Errorf("scopes %+v", api.Operations[2])
	}
	e.must(imp(swagger2YAML, `{"name":"Stores","context":"/stores","version":"1.0.0","endpointConfig":{"production_endpoints":{"url":"http://backend:8080"}}}`), 201, &api)
	if len(api.Operations) != 2 || api.Operations[0].Target != "/stores" || api.Operations[1].Verb != "DELETE" {
		t.Errorf("swagger 2 import %+v", api.Operations)
	}

	props := `{"name":"B","context":"/b","version":"1","endpointConfig":{"production_endpoints":{"url":"http://backend:8080"}}}`
	for name, c := range map[string]struct {
		file, props string
		want        []string
	}{
		"not yaml":           {"{{{ : :", props, []string{"not a valid OpenAPI definition"}},
		"no version field":   {"info: {title: x}\npaths: {}", props, []string{`no "openapi: 3.x" or "swagger: 2.0"`}},
		"missing info":       {"openapi: 3.0.0\npaths:\n  /a:\n    get:\n      responses: {\"200\": {description: ok}}\n", props, []string{"info"}},
		"bad path param":     {"openapi: 3.0.0\ninfo: {title: t, version: '1'}\npaths:\n  /a/{id}:\n    get:\n      responses: {\"200\": {description: ok}}\n", props, []string{"id"}},
		"no paths":           {"openapi: 3.0.0\ninfo: {title: t, version: '1'}\npaths: {}\n", props, []string{"no paths"}},
		"no file":            {"", props, []string{"give exactly one of file"}},
		"no properties":      {openapi3YAML, "", []string{"additionalProperties is required"}},
		"unknown property":   {openapi3YAML, `{"context":"/c","colour":"blue"}`, []string{`unknown field "colour"`}},
		"properties missing": {openapi3YAML, `{"name":"C"}`, []string{"context is required", "endpointConfig is required"}},
		"duplicate context":  {openapi3YAML, `{"context":"/imp","endpointConfig":{"production_endpoints":{"url":"http://b"}}}`, nil},
	} {
		t.Run(name, func(t *testing.T) {
			status := 400
			if name == "duplicate context" {
				status = 409
			}
			e := &env{t: t, ctx: e.ctx, pool: e.pool, srv: e.srv, logs: e.logs}
			e.rejects(status, func() resp { return imp(c.file, c.props) }, c.want...)
		})
	}
	e.rejects(415, func() resp {
		return e.call("POST", pubBase+"/apis/import-openapi", "admin-token", `{}`)
	}, "multipart/form-data")
}

func TestThrottlingPoliciesAdmin(t *testing.T) {
	e := newEnv(t, 0)
	limit := map[string]any{"type": "REQUESTCOUNTLIMIT", "requestCount": map[string]any{"timeUnit": "month", "unitTime": 1, "requestCount": 10}}
	var adv struct {
		PolicyID, PolicyName string
		ConditionalGroups    []any
	}
	e.must(e.call("POST", admBase+"/throttling/policies/advanced", "admin-token", map[string]any{
		"policyName": "Adv", "defaultLimit": limit,
		"conditionalGroups": []any{map[string]any{
			"conditions": []any{map[string]any{"type": "IPCONDITION", "invertCondition": true, "ipCondition": map[string]any{"ipConditionType": "IPRANGE", "startingIP": "10.0.0.1", "endingIP": "10.0.0.9"}}},
			"limit":      limit,
		}},
	}), 201, &adv)
	if adv.PolicyID == "" || len(adv.ConditionalGroups) != 1 {
		t.Fatalf("advanced policy %+v", adv)
	}
	var list struct{ Count int }
	e.must(e.call("GET", admBase+"/throttling/policies/advanced", "viewer-token", nil), 200, &list)
	if list.Count != 5 { // WSO2's 50KPerMin, 20KPerMin, 10KPerMin, Unlimited and Adv
		t.Errorf("%d advanced policies", list.Count)
	}
	e.must(e.call("GET", admBase+"/throttling/policies/advanced/"+adv.PolicyID, "viewer-token", nil), 200, nil)
	e.must(e.call("PUT", admBase+"/throttling/policies/advanced/"+adv.PolicyID, "admin-token", map[string]any{"policyName": "Adv", "defaultLimit": limit}), 200, nil)
	e.must(e.call("DELETE", admBase+"/throttling/policies/advanced/"+adv.PolicyID, "admin-token", nil), 200, nil)
	e.must(e.call("GET", admBase+"/throttling/policies/advanced/"+adv.PolicyID, "viewer-token", nil), 404, nil)

	n := e.outbox()
	e.rejects(400, func() resp {
		return e.call("POST", admBase+"/throttling/policies/custom", "admin-token", map[string]any{
			"policyName": "C", "keyTemplate": "$userId", "siddhiQuery": "user ==", "defaultLimit": limit,
		})
	}, "siddhiQuery is invalid: CEL:")
	e.rejects(400, func() resp {
		return e.call("POST", admBase+"/throttling/policies/subscription", "admin-token", map[string]any{
			"policyName": "S", "defaultLimit": limit, "rateLimitCount": 5, "rateLimitTimeUnit": "hour",
		})
	}, "rateLimitTimeUnit")
	if got := e.outbox() - n; got != 0 {
		t.Errorf("rejected writes wrote %d outbox rows", got)
	}
	e.must(e.call("POST", admBase+"/throttling/policies/custom", "admin-token", map[string]any{
		"policyName": "C", "keyTemplate": "$userId:$apiContext", "siddhiQuery": `user == "admin"`, "defaultLimit": limit,
	}), 201, nil)

	var deny struct {
		ConditionID     string
		ConditionStatus bool
	}
	e.must(e.call("POST", admBase+"/throttling/deny-policies", "admin-token", map[string]any{
		"conditionType": "IPRANGE", "conditionValue": map[string]any{"startingIp": "10.0.0.1", "endingIp": "10.0.0.9", "invert": false},
	}), 201, &deny)
	if !deny.ConditionStatus {
		t.Error("a new deny policy is on by default")
	}
	e.must(e.call("PATCH", admBase+"/throttling/deny-policies/"+deny.ConditionID, "admin-token", map[string]any{"conditionStatus": false}), 200, &deny)
	if deny.ConditionStatus {
		t.Error("PATCH did not switch it off")
	}
	e.rejects(400, func() resp {
		return e.call("POST", admBase+"/throttling/deny-policies", "admin-token", map[string]any{"conditionType": "IP", "conditionValue": map[string]any{"fixedIp": "10.0.0"}})
	}, "conditionValue.fixedIp")
	e.must(e.call("DELETE", admBase+"/throttling/deny-policies/"+deny.ConditionID, "admin-token", nil), 200, nil)
}

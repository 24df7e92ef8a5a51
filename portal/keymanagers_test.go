package portal_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/apim-dev/apim/internal/hydratest"
	"github.com/apim-dev/apim/internal/model"
	"github.com/apim-dev/apim/internal/store"
	"github.com/apim-dev/apim/portal"
)

const kmBase = admBase + "/key-managers"

// newKMEnv is newEnv with tokens that hold one key-manager scope each.
func newKMEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t, 0)
	logs := &bytes.Buffer{}
	p, err := portal.New(portal.Config{
		Store: store.New(e.pool),
		Tokens: fakeTokens{
			"admin-token": {Subject: "admin", Scopes: allScopes},
			"ops-token":   {Subject: "ops", Scopes: []string{"apim:admin_operations"}},
			"km-token":    {Subject: "km", Scopes: []string{"apim:keymanagers_manage"}},
			"tier-token":  {Subject: "tiers", Scopes: []string{"apim:tier_manage", "apim:tier_view"}},
			"bob-token":   {Subject: "bob", Scopes: []string{"apim:subscribe", "apim:app_manage", "apim:sub_manage"}},
			"eve-token":   {Subject: "eve", Scopes: []string{"apim:subscribe", "apim:app_manage", "apim:sub_manage"}},
		},
		Clients: &fakeClients{},
		Logger:  zerolog.New(logs),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(p.Handler())
	t.Cleanup(e.srv.Close)
	t.Cleanup(func() {
		if strings.Contains(logs.String(), "s3cret-of-the-client") {
			t.Errorf("a log line holds the mapped client's secret:\n%s", logs)
		}
	})
	return e
}

// count returns the rows of a table.
func count(t *testing.T, pool *pgxpool.Pool, table string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM `+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// rejectsKM is rejects that also requires key_managers unchanged.
func (e *env) rejectsKM(status int, send func() resp, want ...string) {
	e.t.Helper()
	before := count(e.t, e.pool, "key_managers")
	e.rejects(status, send, want...)
	if after := count(e.t, e.pool, "key_managers"); after != before {
		e.t.Errorf("key_managers: %d rows before, %d after a rejected request", before, after)
	}
}

type kmOut struct {
	ID, Name, Type, Issuer, WellKnownEndpoint, TokenEndpoint string
	Enabled, EnableMapOAuthConsumerApps                      bool
	EnableOAuthAppCreation                                   bool
	Certificates                                             struct{ Type, Value string }
	ClaimMapping                                             []struct{ RemoteClaim, LocalClaim string }
	ScopesClaim                                              string
}

// lastEvent is the newest outbox row's envelope.
func lastEvent(t *testing.T, pool *pgxpool.Pool) (kind, op, id string, data json.RawMessage) {
	t.Helper()
	var raw []byte
	if err := pool.QueryRow(t.Context(), `SELECT payload FROM outbox ORDER BY id DESC LIMIT 1`).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	var ev struct {
		Kind, Op, ID string
		Data         json.RawMessage
	}
	if err := json.Unmarshal(raw, &ev); err != nil {
		t.Fatal(err)
	}
	return ev.Kind, ev.Op, ev.ID, ev.Data
}

// field is a string field of an event's data.
func field(t *testing.T, data json.RawMessage, name string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	s, _ := m[name].(string)
	return s
}

// TestKeyManagersWithHydra registers Ory Hydra by its discovery URL, maps
// one of its clients to an application, and deletes it again.
func TestKeyManagersWithHydra(t *testing.T) {
	h := hydratest.Start(t)
	e := newKMEnv(t)

	n := e.outbox()
	var km kmOut
	r := e.call("POST", kmBase, "ops-token", map[string]any{
		"name": "Hydra", "type": "Hydra", "displayName": "Ory Hydra", "enabled": true,
		"wellKnownEndpoint": h.WellKnown, "claimMapping": []map[string]string{{"remoteClaim": "scp", "localClaim": "scope"}},
		"enableMapOAuthConsumerApps": true, "enableOAuthAppCreation": false,
	})
	e.must(r, 201, &km)
	if km.ID == "" || km.Issuer != h.Issuer || km.Certificates.Type != "JWKS" || km.Certificates.Value != h.Issuer+"/.well-known/jwks.json" ||
		km.TokenEndpoint != h.TokenURL || !km.Enabled || !km.EnableMapOAuthConsumerApps || km.EnableOAuthAppCreation ||
		len(km.ClaimMapping) != 1 || km.ClaimMapping[0].RemoteClaim != "scp" {
		t.Errorf("registered %s", r.body)
	}
	if got := r.header.Get("Location"); got != kmBase+"/"+km.ID {
		t.Errorf("Location = %q", got)
	}
	if got := e.outbox() - n; got != 1 {
		t.Errorf("create wrote %d outbox rows, want 1", got)
	}
	if kind, op, id, data := lastEvent(t, e.pool); kind != "key_manager" || op != "upsert" || id != km.ID ||
		field(t, data, "jwksUri") != h.Issuer+"/.well-known/jwks.json" || field(t, data, "issuer") != h.Issuer {
		t.Errorf("event %s %s %s %s", kind, op, id, data)
	}

	// Read back, by id and by name, and listed.
	var got kmOut
	e.must(e.call("GET", kmBase+"/"+km.ID, "km-token", nil), 200, &got)
	if got.Issuer != h.Issuer || got.Name != "Hydra" {
		t.Errorf("GET by id: %+v", got)
	}
	e.must(e.call("GET", kmBase+"/Hydra", "admin-token", nil), 200, &got)
	var list struct {
		Count int
		List  []struct {
			ID, Name, Type, TokenType string
			Enabled                   bool
		}
	}
	e.must(e.call("GET", kmBase, "ops-token", nil), 200, &list)
	if list.Count != 1 || list.List[0].ID != km.ID || list.List[0].TokenType != "DIRECT" || !list.List[0].Enabled {
		t.Errorf("list %+v", list)
	}

	// The same issuer or name again: 409, nothing written.
	e.rejectsKM(409, func() resp {
		return e.call("POST", kmBase, "ops-token", map[string]any{"name": "Hydra2", "type": "Hydra", "wellKnownEndpoint": h.WellKnown})
	}, "issuer")
	e.rejectsKM(409, func() resp {
		return e.call("POST", kmBase, "ops-token", map[string]any{"name": "Hydra", "type": "Hydra", "issuer": "https://x.example", "certificates": map[string]string{"type": "JWKS", "value": "https://x.example/jwks"}})
	}, "Hydra")

	// Map a Hydra client to bob's application.
	c := h.CreateClient(t, "read")
	var app struct{ ApplicationID string }
	e.must(e.call("POST", devBase+"/applications", "bob-token", map[string]string{"name": "BobApp", "throttlingPolicy": "Unlimited"}), 201, &app)
	mapURL := devBase + "/applications/" + app.ApplicationID + "/map-keys"
	n = e.outbox()
	var keys struct{ KeyMappingID, KeyManager, ConsumerKey, KeyType, Mode, KeyState string }
	// Without the client's secret, or with a wrong one, the client is not
	// the caller's to map: 400, nothing written.
	e.rejects(400, func() resp {
		return e.call("POST", mapURL, "bob-token", map[string]string{"consumerKey": c.ID, "keyType": "PRODUCTION", "keyManager": "Hydra"})
	}, "consumerSecret is required")
	e.rejects(400, func() resp {
		return e.call("POST", mapURL, "bob-token", map[string]string{
			"consumerKey": c.ID, "consumerSecret": "not-" + c.Secret, "keyType": "PRODUCTION", "keyManager": "Hydra",
		})
	}, "consumerSecret does not authenticate consumerKey")
	e.must(e.call("POST", mapURL, "bob-token", map[string]string{
		"consumerKey": c.ID, "consumerSecret": c.Secret, "keyType": "PRODUCTION", "keyManager": "Hydra",
	}), 200, &keys)
	if keys.KeyMappingID == "" || keys.KeyManager != "Hydra" || keys.ConsumerKey != c.ID || keys.KeyType != "PRODUCTION" || keys.Mode != "MAPPED" || keys.KeyState != "COMPLETED" {
		t.Errorf("mapped %+v", keys)
	}
	// Read back: the same keys, never the secret.
	read := e.call("GET", devBase+"/applications/"+app.ApplicationID+"/oauth-keys/"+keys.KeyMappingID, "bob-token", nil)
	if body := string(read.body); read.status != 200 || !strings.Contains(body, `"mode":"MAPPED"`) || !strings.Contains(body, c.ID) || strings.Contains(body, c.Secret) {
		t.Errorf("GET oauth-keys of mapped keys: %d %s", read.status, body)
	}
	if got := e.outbox() - n; got != 1 {
		t.Errorf("map-keys wrote %d outbox rows, want 1", got)
	}
	if kind, op, _, data := lastEvent(t, e.pool); kind != "key_mapping" || op != "upsert" ||
		field(t, data, "keyManagerId") != km.ID || field(t, data, "consumerKey") != c.ID || bytes.Contains(data, []byte(c.Secret)) {
		t.Errorf("event %s %s %s", kind, op, data)
	}
	var hash string
	if err := e.pool.QueryRow(e.ctx, `SELECT consumer_secret_hash FROM key_mappings WHERE id = $1`, keys.KeyMappingID).Scan(&hash); err != nil {
		t.Fatal(err)
	}
	if len(hash) != 64 || strings.Contains(hash, c.Secret) {
		t.Errorf("stored secret %q, want its SHA-256", hash)
	}

	// The same client again, to eve's application: without its secret
	// eve cannot claim it (400); with it, 409; nothing written either way.
	var eveApp struct{ ApplicationID string }
	e.must(e.call("POST", devBase+"/applications", "eve-token", map[string]string{"name": "EveApp", "throttlingPolicy": "Unlimited"}), 201, &eveApp)
	e.rejects(400, func() resp {
		return e.call("POST", devBase+"/applications/"+eveApp.ApplicationID+"/map-keys", "eve-token", map[string]string{
			"consumerKey": c.ID, "keyType": "SANDBOX", "keyManager": km.ID,
		})
	}, "consumerSecret is required")
	e.rejects(409, func() resp {
		return e.call("POST", devBase+"/applications/"+eveApp.ApplicationID+"/map-keys", "eve-token", map[string]string{
			"consumerKey": c.ID, "consumerSecret": c.Secret, "keyType": "SANDBOX", "keyManager": km.ID,
		})
	}, c.ID, "already mapped")
	// bob's app has PRODUCTION keys of Hydra already.
	c2 := h.CreateClient(t, "read")
	e.rejects(409, func() resp {
		return e.call("POST", mapURL, "bob-token", map[string]string{"consumerKey": c2.ID, "consumerSecret": c2.Secret, "keyType": "PRODUCTION", "keyManager": "Hydra"})
	}, "PRODUCTION")

	// Disabled: map-keys refuses it, naming the field.
	body := map[string]any{
		"name": "Hydra", "type": "Hydra", "enabled": false, "wellKnownEndpoint": h.WellKnown,
		"claimMapping": []map[string]string{{"remoteClaim": "scp", "localClaim": "scope"}}, "id": km.ID,
	}
	n = e.outbox()
	e.must(e.call("PUT", kmBase+"/"+km.ID, "ops-token", body), 200, &got)
	if got.Enabled || got.Issuer != h.Issuer {
		t.Errorf("after PUT: %+v", got)
	}
	if got := e.outbox() - n; got != 1 {
		t.Errorf("update wrote %d outbox rows, want 1", got)
	}
	e.rejects(400, func() resp {
		return e.call("POST", devBase+"/applications/"+eveApp.ApplicationID+"/map-keys", "eve-token", map[string]string{
			"consumerKey": "other-client", "keyType": "SANDBOX", "keyManager": "Hydra",
		})
	}, "keyManager Hydra is disabled")
	// The name cannot change.
	body["name"] = "Renamed"
	e.rejectsKM(400, func() resp { return e.call("PUT", kmBase+"/"+km.ID, "ops-token", body) }, "name cannot change")

	// Deleting bob's application leaves a resident client that happens
	// to have the mapped client's id alone.
	if _, err := e.pool.Exec(e.ctx, `INSERT INTO oauth_clients (client_id, secret_hash, name, owner, grant_types) VALUES ($1, 'h', 'victim', 'alice', '{client_credentials}')`, c.ID); err != nil {
		t.Fatal(err)
	}
	e.must(e.call("DELETE", devBase+"/applications/"+app.ApplicationID, "bob-token", nil), 200, nil)
	var clients int
	if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM oauth_clients WHERE client_id = $1`, c.ID).Scan(&clients); err != nil {
		t.Fatal(err)
	}
	if clients != 1 {
		t.Error("deleting an application with a mapped external client deleted a resident OAuth client of the same id")
	}

	// Map again (to eve's app, after re-enabling), then delete the key
	// manager: its mappings go, each with its delete event.
	body["name"], body["enabled"] = "Hydra", true
	e.must(e.call("PUT", kmBase+"/"+km.ID, "ops-token", body), 200, nil)
	e.must(e.call("POST", devBase+"/applications/"+eveApp.ApplicationID+"/map-keys", "eve-token", map[string]string{
		"consumerKey": c.ID, "consumerSecret": c.Secret, "keyType": "SANDBOX", "keyManager": "Hydra",
	}), 200, nil)
	n = e.outbox()
	mappings := count(t, e.pool, "key_mappings")
	e.must(e.call("DELETE", kmBase+"/"+km.ID, "ops-token", nil), 200, nil)
	if got := e.outbox() - n; got != 2 {
		t.Errorf("delete wrote %d outbox rows, want 2 (the mapping's and the key manager's)", got)
	}
	if got := count(t, e.pool, "key_mappings"); got != mappings-1 {
		t.Errorf("key_mappings %d after delete, want %d", got, mappings-1)
	}
	if kind, op, id, _ := lastEvent(t, e.pool); kind != "key_manager" || op != "delete" || id != km.ID {
		t.Errorf("last event %s %s %s", kind, op, id)
	}
	e.rejects(404, func() resp { return e.call("GET", kmBase+"/"+km.ID, "ops-token", nil) }, km.ID)
}

// Every bad key manager is a 400 naming the field, and nothing is written.
func TestKeyManagersRejectBadInput(t *testing.T) {
	e := newKMEnv(t)
	// Discovery documents that are wrong in one way each.
	docs := map[string]func(base string) string{
		"/bad-issuer": func(base string) string {
			return `{"issuer":"https://elsewhere.example","jwks_uri":"` + base + `/jwks"}`
		},
		"/no-issuer":   func(base string) string { return `{"jwks_uri":"` + base + `/jwks"}` },
		"/no-jwks":     func(base string) string { return `{"issuer":"` + base + `/no-jwks"}` },
		"/not-json":    func(string) string { return `<html>hello</html>` },
		"/good":        func(base string) string { return `{"issuer":"` + base + `/good","jwks_uri":"` + base + `/jwks"}` },
		"/trailing":    func(base string) string { return `{"issuer":"` + base + `/trailing/","jwks_uri":"` + base + `/jwks"}` },
		"/weird-types": func(base string) string { return `{"issuer":"` + base + `/weird-types","jwks_uri":7}` },
	}
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		doc, ok := docs[strings.TrimSuffix(r.URL.Path, "/.well-known/openid-configuration")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, doc(srv.URL))
	}))
	t.Cleanup(srv.Close)
	wk := func(path string) string { return srv.URL + path + "/.well-known/openid-configuration" }
	closed := func() string { // a loopback port nobody listens on
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		return "http://" + addr + "/.well-known/openid-configuration"
	}()
	jwks := map[string]string{"type": "JWKS", "value": "https://idp.example/jwks"}

	tests := map[string]struct {
		body any
		want []string
	}{
		"no name":             {map[string]any{"type": "x", "wellKnownEndpoint": wk("/good")}, []string{"name is required"}},
		"no type":             {map[string]any{"name": "K", "wellKnownEndpoint": wk("/good")}, []string{"type is required"}},
		"resident's name":     {map[string]any{"name": "Resident Key Manager", "type": "x", "wellKnownEndpoint": wk("/good")}, []string{"name is invalid"}},
		"id":                  {map[string]any{"id": "x", "name": "K", "type": "x", "wellKnownEndpoint": wk("/good")}, []string{"id is read-only"}},
		"discovery not a URL": {map[string]any{"name": "K", "type": "x", "wellKnownEndpoint": "idp.example/.well-known/openid-configuration"}, []string{"wellKnownEndpoint is invalid"}},
		"discovery suffix":    {map[string]any{"name": "K", "type": "x", "wellKnownEndpoint": srv.URL + "/good/config.json"}, []string{"wellKnownEndpoint must end with /.well-known/openid-configuration"}},
		"unreachable":         {map[string]any{"name": "K", "type": "x", "wellKnownEndpoint": closed}, []string{"wellKnownEndpoint", "could not be resolved"}},
		"404":                 {map[string]any{"name": "K", "type": "x", "wellKnownEndpoint": wk("/missing")}, []string{"wellKnownEndpoint", "404"}},
		"not JSON":            {map[string]any{"name": "K", "type": "x", "wellKnownEndpoint": wk("/not-json")}, []string{"wellKnownEndpoint", "could not be resolved"}},
		"wrong types":         {map[string]any{"name": "K", "type": "x", "wellKnownEndpoint": wk("/weird-types")}, []string{"wellKnownEndpoint"}},
		"issuer mismatch":     {map[string]any{"name": "K", "type": "x", "wellKnownEndpoint": wk("/bad-issuer")}, []string{"wellKnownEndpoint", "does not match its URL"}},
		"no issuer":           {map[string]any{"name": "K", "type": "x", "wellKnownEndpoint": wk("/no-issuer")}, []string{"wellKnownEndpoint", "names no issuer"}},
		"no jwks_uri":         {map[string]any{"name": "K", "type": "x", "wellKnownEndpoint": wk("/no-jwks")}, []string{"wellKnownEndpoint", "names no jwks_uri"}},
		"other issuer given":  {map[string]any{"name": "K", "type": "x", "issuer": "https://idp.example", "wellKnownEndpoint": wk("/good")}, []string{"issuer https://idp.example differs"}},
		"neither":             {map[string]any{"name": "K", "type": "x"}, []string{"wellKnownEndpoint is required"}},
		"issuer only":         {map[string]any{"name": "K", "type": "x", "issuer": "https://idp.example"}, []string{"wellKnownEndpoint is required"}},
		"issuer not a URL":    {map[string]any{"name": "K", "type": "x", "issuer": "idp", "certificates": jwks}, []string{"issuer is invalid"}},
		"PEM":                 {map[string]any{"name": "K", "type": "x", "issuer": "https://idp.example", "certificates": map[string]string{"type": "PEM", "value": "x"}}, []string{"certificates.type must be JWKS"}},
		"JWKS not a URL":      {map[string]any{"name": "K", "type": "x", "issuer": "https://idp.example", "certificates": map[string]string{"type": "JWKS", "value": "file:///etc/passwd"}}, []string{"certificates.value is invalid"}},
		"app creation":        {map[string]any{"name": "K", "type": "x", "wellKnownEndpoint": wk("/good"), "enableOAuthAppCreation": true}, []string{"enableOAuthAppCreation must be false"}},
		"introspection":       {map[string]any{"name": "K", "type": "x", "wellKnownEndpoint": wk("/good"), "enableSelfValidationJWT": false}, []string{"enableSelfValidationJWT must be true"}},
		"token exchange":      {map[string]any{"name": "K", "type": "x", "wellKnownEndpoint": wk("/good"), "tokenType": "EXCHANGED"}, []string{"tokenType must be DIRECT"}},
		"claim mapping":       {map[string]any{"name": "K", "type": "x", "wellKnownEndpoint": wk("/good"), "claimMapping": []map[string]string{{"remoteClaim": "", "localClaim": "scope"}}}, []string{"claimMapping[0].remoteClaim is required"}},
		"client id twice":     {map[string]any{"name": "K", "type": "x", "wellKnownEndpoint": wk("/good"), "claimMapping": []map[string]string{{"remoteClaim": "a", "localClaim": "client_id"}, {"remoteClaim": "b", "localClaim": "azp"}}}, []string{"claimMapping is invalid"}},
		"bad endpoint":        {map[string]any{"name": "K", "type": "x", "wellKnownEndpoint": wk("/good"), "tokenEndpoint": "nope"}, []string{"tokenEndpoint is invalid"}},
		"unknown field":       {map[string]any{"name": "K", "type": "x", "wellKnownEndpoint": wk("/good"), "additionalProperties": map[string]any{"secret": "x"}}, []string{"unknown field"}},
		"enabled not a bool":  {`{"name":"K","type":"x","enabled":"yes"}`, []string{"enabled must be a boolean"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e.t = t
			e.rejectsKM(400, func() resp { return e.call("POST", kmBase, "admin-token", tc.body) }, tc.want...)
		})
	}
	e.t = t

	// A discovery document whose issuer has a trailing slash is the same
	// issuer; the token's iss must then carry the slash too.
	var km kmOut
	e.must(e.call("POST", kmBase, "admin-token", map[string]any{"name": "Slash", "type": "x", "wellKnownEndpoint": wk("/trailing")}), 201, &km)
	if km.Issuer != srv.URL+"/trailing/" || km.Certificates.Value != srv.URL+"/jwks" {
		t.Errorf("registered %+v", km)
	}
	// Without discovery: issuer and certificates as given.
	km = kmOut{}
	e.must(e.call("POST", kmBase, "admin-token", map[string]any{
		"name": "Manual", "type": "custom", "issuer": "https://idp.example", "certificates": jwks, "consumerKeyClaim": "cid",
	}), 201, &km)
	if km.Issuer != "https://idp.example" || km.WellKnownEndpoint != "" || !km.EnableMapOAuthConsumerApps {
		t.Errorf("registered %+v", km)
	}

	// PUT of a key manager that does not exist: 404 before any fetch.
	e.rejectsKM(404, func() resp {
		return e.call("PUT", kmBase+"/00000000-0000-0000-0000-000000000000", "admin-token", map[string]any{"name": "Nope", "type": "x", "wellKnownEndpoint": closed})
	})
	e.rejectsKM(404, func() resp { return e.call("DELETE", kmBase+"/Nope", "admin-token", nil) })
}

// map-keys refuses what it cannot map, naming the field; nothing is
// written.
func TestMapKeysRejects(t *testing.T) {
	e := newKMEnv(t)
	jwks := map[string]string{"type": "JWKS", "value": "https://idp.example/jwks"}
	// The providers' token endpoint knows one client, shared-id, whose
	// secret is "pw".
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, secret, _ := r.BasicAuth(); id != "shared-id" || secret != "pw" {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":"invalid_client"}`)
			return
		}
		_, _ = io.WriteString(w, `{"access_token":"t","token_type":"Bearer"}`)
	}))
	t.Cleanup(idp.Close)
	var on, noMap kmOut
	e.must(e.call("POST", kmBase, "admin-token", map[string]any{"name": "On", "type": "x", "issuer": "https://on.example", "certificates": jwks, "tokenEndpoint": idp.URL + "/token"}), 201, &on)
	e.must(e.call("POST", kmBase, "admin-token", map[string]any{"name": "NoMap", "type": "x", "issuer": "https://nomap.example", "certificates": jwks, "enableMapOAuthConsumerApps": false}), 201, &noMap)
	e.must(e.call("POST", kmBase, "admin-token", map[string]any{"name": "Off", "type": "x", "issuer": "https://off.example", "certificates": jwks, "enabled": false}), 201, nil)
	e.must(e.call("POST", kmBase, "admin-token", map[string]any{"name": "Twin0", "type": "x", "issuer": "https://twin0.example", "certificates": jwks}), 201, nil)
	var app struct{ ApplicationID string }
	e.must(e.call("POST", devBase+"/applications", "bob-token", map[string]string{"name": "BobApp", "throttlingPolicy": "Unlimited"}), 201, &app)
	url := devBase + "/applications/" + app.ApplicationID + "/map-keys"

	tests := map[string]struct {
		token  string
		body   any
		status int
		want   []string
	}{
		"unknown key manager":  {"bob-token", map[string]string{"consumerKey": "c", "keyType": "PRODUCTION", "keyManager": "Nope"}, 400, []string{"keyManager Nope does not exist"}},
		"unknown id":           {"bob-token", map[string]string{"consumerKey": "c", "keyType": "PRODUCTION", "keyManager": "00000000-0000-0000-0000-000000000000"}, 400, []string{"does not exist"}},
		"disabled":             {"bob-token", map[string]string{"consumerKey": "c", "keyType": "PRODUCTION", "keyManager": "Off"}, 400, []string{"keyManager Off is disabled"}},
		"mapping not allowed":  {"bob-token", map[string]string{"consumerKey": "c", "keyType": "PRODUCTION", "keyManager": noMap.ID}, 400, []string{"keyManager NoMap does not allow mapping"}},
		"resident":             {"bob-token", map[string]string{"consumerKey": "c", "keyType": "PRODUCTION", "keyManager": model.ResidentKeyManager}, 400, []string{"use generate-keys"}},
		"no consumerKey":       {"bob-token", map[string]string{"keyType": "PRODUCTION", "keyManager": "On"}, 400, []string{"consumerKey is required"}},
		"spaces":               {"bob-token", map[string]string{"consumerKey": " c", "keyType": "PRODUCTION", "keyManager": "On"}, 400, []string{"consumerKey must be"}},
		"bad keyType":          {"bob-token", map[string]string{"consumerKey": "c", "keyType": "TEST", "keyManager": "On"}, 400, []string{"keyType must be PRODUCTION or SANDBOX"}},
		"no keyManager":        {"bob-token", map[string]string{"consumerKey": "c", "keyType": "PRODUCTION"}, 400, []string{"keyManager is required"}},
		"unknown field":        {"bob-token", map[string]string{"consumerKey": "c", "keyType": "PRODUCTION", "keyManager": "On", "grantTypes": "x"}, 400, []string{"unknown field"}},
		"another user's app":   {"eve-token", map[string]string{"consumerKey": "c", "keyType": "PRODUCTION", "keyManager": "On"}, 404, []string{app.ApplicationID}},
		"no scope":             {"tier-token", map[string]string{"consumerKey": "c", "keyType": "PRODUCTION", "keyManager": "On"}, 403, nil},
		"no token":             {"", map[string]string{"consumerKey": "c", "keyType": "PRODUCTION", "keyManager": "On"}, 401, nil},
		"admin scope, no apps": {"ops-token", map[string]string{"consumerKey": "c", "keyType": "PRODUCTION", "keyManager": "On"}, 403, nil},
		"no secret":            {"bob-token", map[string]string{"consumerKey": "shared-id", "keyType": "PRODUCTION", "keyManager": "On"}, 400, []string{"consumerSecret is required"}},
		"wrong secret":         {"bob-token", map[string]string{"consumerKey": "shared-id", "consumerSecret": "no", "keyType": "PRODUCTION", "keyManager": "On"}, 400, []string{"consumerSecret does not authenticate consumerKey at key manager On"}},
		"no token endpoint":    {"bob-token", map[string]string{"consumerKey": "shared-id", "consumerSecret": "pw", "keyType": "PRODUCTION", "keyManager": "Twin0"}, 400, []string{"names no token_endpoint"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e.t = t
			e.rejectsKM(tc.status, func() resp { return e.call("POST", url, tc.token, tc.body) }, tc.want...)
		})
	}
	e.t = t
	// The key-manager routes need a key-manager scope: tier_manage is not one.
	for _, rt := range []struct{ method, path string }{{"GET", kmBase}, {"POST", kmBase}, {"GET", kmBase + "/" + on.ID}, {"PUT", kmBase + "/" + on.ID}, {"DELETE", kmBase + "/" + on.ID}} {
		e.rejectsKM(403, func() resp { return e.call(rt.method, rt.path, "tier-token", map[string]any{}) }, "apim:admin_operations")
		e.rejectsKM(401, func() resp { return e.call(rt.method, rt.path, "", map[string]any{}) })
	}
	// Mapped once, the same client id maps under another key manager.
	e.must(e.call("POST", url, "bob-token", map[string]string{"consumerKey": "shared-id", "consumerSecret": "pw", "keyType": "PRODUCTION", "keyManager": "On"}), 200, nil)
	var other struct{ ApplicationID string }
	e.must(e.call("POST", devBase+"/applications", "bob-token", map[string]string{"name": "Other", "throttlingPolicy": "Unlimited"}), 201, &other)
	var twin kmOut
	e.must(e.call("POST", kmBase, "admin-token", map[string]any{"name": "Twin", "type": "x", "issuer": "https://twin.example", "certificates": jwks, "tokenEndpoint": idp.URL + "/token"}), 201, &twin)
	e.must(e.call("POST", devBase+"/applications/"+other.ApplicationID+"/map-keys", "bob-token",
		map[string]string{"consumerKey": "shared-id", "consumerSecret": "pw", "keyType": "PRODUCTION", "keyManager": "Twin"}), 200, nil)
}

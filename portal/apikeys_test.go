package portal_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/apim-dev/apim/internal/store"
	"github.com/apim-dev/apim/keymgr"
	"github.com/apim-dev/apim/portal"
)

// fakeAPIKeys records what the portal asks the key manager for.
type fakeAPIKeys struct {
	signed  []keymgr.APIKeyClaims
	revoked []string
}

func (f *fakeAPIKeys) SignAPIKey(_ context.Context, c keymgr.APIKeyClaims) (string, time.Time, error) {
	f.signed = append(f.signed, c)
	return "key-" + c.Application.ID, time.Now().Add(c.Validity), nil
}

func (f *fakeAPIKeys) RevokeAPIKey(_ context.Context, raw, app, keyType string) error {
	if raw != "key-"+app {
		return keymgr.ErrNotAPIKey
	}
	f.revoked = append(f.revoked, raw+"/"+keyType)
	return nil
}

var _ portal.APIKeyIssuer = (*fakeAPIKeys)(nil)

func TestAPIKeys(t *testing.T) {
	e := newEnv(t, 0)
	keys := &fakeAPIKeys{}
	p, err := portal.New(portal.Config{
		Store: store.New(e.pool), Tokens: fakeTokens{
			"bob-token": {Subject: "bob", Scopes: []string{"apim:subscribe"}},
			"eve-token": {Subject: "eve", Scopes: []string{"apim:api_key"}},
		},
		Clients: &fakeClients{}, APIKeys: keys, Logger: zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(p.Handler())
	t.Cleanup(e.srv.Close)

	var app struct{ ApplicationID string }
	e.must(e.call("POST", devBase+"/applications", "bob-token", map[string]any{"name": "KeyApp", "throttlingPolicy": "Unlimited"}), 201, &app)
	gen := devBase + "/applications/" + app.ApplicationID + "/api-keys/PRODUCTION/generate"

	var out struct {
		APIKey       string `json:"apikey"`
		ValidityTime int64  `json:"validityTime"`
	}
	e.must(e.call("POST", gen, "bob-token", map[string]any{
		"validityPeriod": 3600, "additionalProperties": map[string]any{"permittedIP": " 10.0.0.0/8, 127.0.0.1", "permittedReferer": "https://*.example.com/*"},
	}), 200, &out)
	if out.APIKey != "key-"+app.ApplicationID || out.ValidityTime < 3590 || out.ValidityTime > 3600 {
		t.Errorf("generate = %+v", out)
	}
	c := keys.signed[0]
	if c.Subject != "bob" || c.KeyType != "PRODUCTION" || c.Application.Name != "KeyApp" || c.Application.Tier != "Unlimited" ||
		c.PermittedIP != "10.0.0.0/8,127.0.0.1" || c.PermittedReferer != "https://*.example.com/*" || c.Validity != time.Hour {
		t.Errorf("claims = %+v", c)
	}
	// -1 and no body: the longest validity, one year.
	e.must(e.call("POST", gen, "bob-token", map[string]any{"validityPeriod": -1}), 200, nil)
	e.must(e.do("POST", gen, "bob-token", "", nil), 200, nil)
	if keys.signed[1].Validity != keymgr.MaxAPIKeyValidity || keys.signed[2].Validity != keymgr.MaxAPIKeyValidity {
		t.Errorf("validity = %v, %v", keys.signed[1].Validity, keys.signed[2].Validity)
	}

	e.rejects(400, func() resp { return e.call("POST", gen, "bob-token", map[string]any{"validityPeriod": 0}) }, "validityPeriod")
	e.rejects(400, func() resp {
		return e.call("POST", gen, "bob-token", map[string]any{"additionalProperties": map[string]any{"permittedIP": "10.0.0.0/99"}})
	}, "additionalProperties.permittedIP")
	e.rejects(400, func() resp {
		return e.call("POST", strings.Replace(gen, "PRODUCTION", "OTHER", 1), "bob-token", nil)
	}, "keyType")
	// Another user's application is not found, as a missing one.
	e.rejects(404, func() resp { return e.call("POST", gen, "eve-token", nil) })
	e.rejects(404, func() resp {
		return e.call("POST", devBase+"/applications/"+app.ApplicationID+"/api-keys/PRODUCTION/revoke", "eve-token", map[string]any{"apikey": out.APIKey})
	})

	rev := devBase + "/applications/" + app.ApplicationID + "/api-keys/PRODUCTION/revoke"
	e.rejects(400, func() resp { return e.call("POST", rev, "bob-token", map[string]any{"apikey": "other"}) }, "apikey")
	e.must(e.call("POST", rev, "bob-token", map[string]any{"apikey": out.APIKey}), 200, nil)
	if len(keys.revoked) != 1 || keys.revoked[0] != out.APIKey+"/PRODUCTION" {
		t.Errorf("revoked = %v", keys.revoked)
	}
}

func TestAPISecuritySchemeAndCORS(t *testing.T) {
	e := newEnv(t, 0)
	body := petstoreBody()
	body["securityScheme"] = []string{"oauth2", "api_key"}
	body["corsConfiguration"] = map[string]any{
		"corsConfigurationEnabled": true, "accessControlAllowOrigins": []string{"https://app.example.com"},
		"accessControlAllowCredentials": true, "accessControlAllowHeaders": []string{"apikey"}, "accessControlAllowMethods": []string{"get"},
	}
	type out struct {
		ID             string
		SecurityScheme []string `json:"securityScheme"`
		CORS           struct {
			Enabled bool     `json:"corsConfigurationEnabled"`
			Origins []string `json:"accessControlAllowOrigins"`
			Methods []string `json:"accessControlAllowMethods"`
			Creds   bool     `json:"accessControlAllowCredentials"`
		} `json:"corsConfiguration"`
	}
	var created, got out
	e.must(e.call("POST", pubBase+"/apis", "admin-token", body), 201, &created)
	e.must(e.call("GET", pubBase+"/apis/"+created.ID, "admin-token", nil), 200, &got)
	if strings.Join(got.SecurityScheme, ",") != "oauth2,api_key" || !got.CORS.Enabled || !got.CORS.Creds ||
		strings.Join(got.CORS.Origins, ",") != "https://app.example.com" || strings.Join(got.CORS.Methods, ",") != "GET" {
		t.Errorf("GET = %+v", got)
	}
	// Without them: oauth2 only, CORS disabled.
	plain := petstoreBody()
	plain["name"], plain["context"] = "Plain", "/plain"
	e.must(e.call("POST", pubBase+"/apis", "admin-token", plain), 201, &got)
	if strings.Join(got.SecurityScheme, ",") != "oauth2" || got.CORS.Enabled {
		t.Errorf("defaults = %+v", got)
	}

	bad := func(field string, v any) {
		t.Helper()
		b := petstoreBody()
		b["name"], b["context"] = "Bad", "/bad"
		b[field] = v
		e.rejects(400, func() resp { return e.call("POST", pubBase+"/apis", "admin-token", b) })
	}
	bad("securityScheme", []string{"basic_auth"})
	bad("securityScheme", []string{"oauth2", "oauth2"})
	bad("corsConfiguration", map[string]any{"corsConfigurationEnabled": true, "accessControlAllowOrigins": []string{"*"}, "accessControlAllowCredentials": true})
	bad("corsConfiguration", map[string]any{"corsConfigurationEnabled": true, "accessControlAllowOrigins": []string{"app.example.com"}})
	bad("corsConfiguration", map[string]any{"corsConfigurationEnabled": true})
}

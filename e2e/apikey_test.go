package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// publishSecured publishes an API with the given securityScheme and
// corsConfiguration (nil: none) and returns its id.
func (e *env) publishSecured(token, name, context string, schemes []string, cors map[string]any) string {
	e.t.Helper()
	extra := map[string]any{"securityScheme": schemes}
	if cors != nil {
		extra["corsConfiguration"] = cors
	}
	id := e.publishAPIWith(token, name, context, []string{"Unlimited"}, extra)
	var api struct{ SecurityScheme []string }
	e.must(200, "GET", "/api/am/publisher/v4/apis/"+id, token, nil, &api)
	if strings.Join(api.SecurityScheme, " ") != strings.Join(schemes, " ") {
		e.t.Fatalf("securityScheme = %v, want %v", api.SecurityScheme, schemes)
	}
	return id
}

// apiKey generates an API key of keyType for app.
func (e *env) apiKey(token, app, keyType string, body map[string]any) string {
	e.t.Helper()
	var out struct {
		APIKey       string `json:"apikey"`
		ValidityTime int64  `json:"validityTime"`
	}
	e.must(200, "POST", "/api/am/devportal/v3/applications/"+app+"/api-keys/"+keyType+"/generate", token, body, &out)
	if out.APIKey == "" || out.ValidityTime <= 0 {
		e.t.Fatalf("generate api key: %+v", out)
	}
	return out.APIKey
}

func TestAPIKeyAndCORS(t *testing.T) {
	e := start(t, nil)
	admin := e.userToken("admin", e.adminPass, "apim:api_view apim:api_create apim:api_publish apim:subscribe apim:app_manage apim:sub_manage")

	const origin = "https://app.example.com"
	keyed := e.publishSecured(admin, "Keyed", "/keyed", []string{"oauth2", "api_key"}, map[string]any{
		"corsConfigurationEnabled": true, "accessControlAllowOrigins": []string{origin},
		"accessControlAllowHeaders": []string{"apikey", "authorization"}, "accessControlAllowMethods": []string{"GET"},
	})
	oauthOnly := e.publishSecured(admin, "OAuthOnly", "/oauthonly", []string{"oauth2"}, nil)
	app := e.createApp(admin, "KeyApp")
	e.subscribe(admin, app, keyed, "Unlimited")
	e.subscribe(admin, app, oauthOnly, "Unlimited")
	key := e.apiKey(admin, app, "PRODUCTION", map[string]any{"validityPeriod": 3600})

	const keyedPath, oauthPath = "/keyed/1.0.0/items/1", "/oauthonly/1.0.0/items/1"
	e.eventually(10*time.Second, func() string {
		if status, _, body, _ := e.gatewayWith("GET", keyedPath, "", map[string]string{"apikey": key}); status != 200 {
			return fmt.Sprintf("api key call = %d %s", status, body)
		}
		return ""
	})
	// The one 401 body every bad key gets.
	status, _, invalidBody, _ := e.gatewayWith("GET", keyedPath, "", map[string]string{"apikey": key + "x"})
	if status != 401 || !strings.Contains(invalidBody, `"code":"900901"`) {
		t.Fatalf("tampered key = %d %s", status, invalidBody)
	}
	t.Run("API key honoured only where the scheme has api_key", func(t *testing.T) {
		status, _, body, _ := e.gatewayWith("GET", oauthPath, "", map[string]string{"apikey": key})
		if status != 401 || !strings.Contains(body, `"code":"900902"`) {
			t.Errorf("api key on an oauth2-only API = %d %s, want 401 900902", status, body)
		}
		status, _, body, _ = e.gatewayWith("GET", keyedPath, "", map[string]string{"apikey": key})
		if status != 200 || strings.Contains(body, key) {
			t.Errorf("api key call = %d %s (the backend must not see the key)", status, body)
		}
	})
	wrongType := func(t *testing.T, headers map[string]string, why string) {
		t.Helper()
		status, code, body, _ := e.gatewayWith("GET", keyedPath, "", headers)
		if status != 401 || code != "900905" {
			t.Errorf("%s: %d %s, want 401 900905", why, status, body)
		}
	}
	t.Run("Keys and tokens are not interchangeable", func(t *testing.T) {
		wrongType(t, map[string]string{"Authorization": "Bearer " + key}, "api key as a bearer token")
		tok := e.appToken(admin, app)
		// The new key mapping reaches the gateway by an event.
		e.eventually(5*time.Second, func() string {
			if status, _, body, _ := e.gatewayWith("GET", keyedPath, "", map[string]string{"Authorization": "Bearer " + tok}); status != 200 {
				return fmt.Sprintf("access token on oauth2+api_key = %d %s", status, body)
			}
			return ""
		})
		wrongType(t, map[string]string{"apikey": tok}, "access token as an api key")
	})
	t.Run("Expired key", func(t *testing.T) {
		short := e.apiKey(admin, app, "PRODUCTION", map[string]any{"validityPeriod": 1})
		// exp + the sidecar's 5 s leeway.
		e.eventually(15*time.Second, func() string {
			status, _, body, _ := e.gatewayWith("GET", keyedPath, "", map[string]string{"apikey": short})
			if status != 401 || body != invalidBody {
				return fmt.Sprintf("expired key = %d %s", status, body)
			}
			return ""
		})
	})
	t.Run("Revoked key", func(t *testing.T) {
		k := e.apiKey(admin, app, "PRODUCTION", nil)
		if status, _, body, _ := e.gatewayWith("GET", keyedPath, "", map[string]string{"apikey": k}); status != 200 {
			t.Fatalf("before revocation = %d %s", status, body)
		}
		e.must(200, "POST", "/api/am/devportal/v3/applications/"+app+"/api-keys/PRODUCTION/revoke", admin, map[string]any{"apikey": k}, nil)
		e.eventually(5*time.Second, func() string {
			status, _, body, _ := e.gatewayWith("GET", keyedPath, "", map[string]string{"apikey": k})
			if status != 401 || body != invalidBody {
				return fmt.Sprintf("revoked key = %d %s", status, body)
			}
			return ""
		})
	})
	t.Run("Unknown application is not found", func(t *testing.T) {
		status := e.call("POST", "/api/am/devportal/v3/applications/00000000-0000-4000-8000-000000000000/api-keys/PRODUCTION/generate", admin, map[string]any{}, nil)
		if status != 404 {
			t.Errorf("unknown application = %d, want 404", status)
		}
	})
	t.Run("IP restriction", func(t *testing.T) {
		k := e.apiKey(admin, app, "PRODUCTION", map[string]any{"additionalProperties": map[string]any{"permittedIP": "10.0.0.0/8"}})
		status, _, body, _ := e.gatewayWith("GET", keyedPath, "", map[string]string{"apikey": k, "X-Forwarded-For": "10.1.2.3"})
		if status != 403 || !strings.Contains(body, `"code":"900908"`) {
			t.Errorf("key restricted to 10.0.0.0/8 from 127.0.0.1 = %d %s, want 403 900908", status, body)
		}
		ok := e.apiKey(admin, app, "PRODUCTION", map[string]any{"additionalProperties": map[string]any{"permittedIP": "127.0.0.1"}})
		if status, _, body, _ := e.gatewayWith("GET", keyedPath, "", map[string]string{"apikey": ok}); status != 200 {
			t.Errorf("key restricted to 127.0.0.1 = %d %s", status, body)
		}
	})
	t.Run("CORS preflight and actual request", func(t *testing.T) {
		preflight := func(from string) (int, http.Header) {
			status, _, _, h := e.gatewayWith("OPTIONS", keyedPath, "", map[string]string{
				"Origin": from, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "apikey",
			})
			return status, h
		}
		status, h := preflight(origin)
		if status != 200 || h.Get("Access-Control-Allow-Origin") != origin || !strings.Contains(h.Get("Access-Control-Allow-Methods"), "GET") ||
			!strings.Contains(strings.ToLower(h.Get("Access-Control-Allow-Headers")), "apikey") {
			t.Errorf("preflight from %s = %d %v", origin, status, h)
		}
		status, h = preflight("https://evil.example.org")
		if h.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("preflight from another origin = %d with Access-Control-Allow-Origin %q", status, h.Get("Access-Control-Allow-Origin"))
		}
		status, _, _, h = e.gatewayWith("GET", keyedPath, "", map[string]string{"apikey": key, "Origin": origin})
		if status != 200 || h.Get("Access-Control-Allow-Origin") != origin {
			t.Errorf("cross-origin GET = %d, Access-Control-Allow-Origin %q", status, h.Get("Access-Control-Allow-Origin"))
		}
		// A denial is readable by the page too.
		status, _, _, h = e.gatewayWith("GET", keyedPath, "", map[string]string{"Origin": origin})
		if status != 401 || h.Get("Access-Control-Allow-Origin") != origin {
			t.Errorf("cross-origin GET without a key = %d, Access-Control-Allow-Origin %q", status, h.Get("Access-Control-Allow-Origin"))
		}
	})
}

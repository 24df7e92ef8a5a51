package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/apim-dev/apim/internal/kafkatest"
)

func TestCoreFlowEmbeddedKafka(t *testing.T) {
	coreFlow(t, start(t, nil))
}

func TestCoreFlowApacheKafka(t *testing.T) {
	coreFlow(t, start(t, kafkatest.StartApache(t)))
}

// coreFlow runs the README's curl sequence as it is, then every check of the
// core flow through Envoy.
func coreFlow(t *testing.T, e *env) {
	t.Run("demo script", func(t *testing.T) {
		cmd := exec.Command("bash", "scripts/demo.sh")
		cmd.Dir = rootDir
		cmd.Env = append(os.Environ(), "APIM="+e.apimURL, "GW="+e.gwURL, "CA="+e.caFile,
			"BACKEND="+e.backend, "ADMIN_PASSWORD="+e.adminPass)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("scripts/demo.sh: %v\n%s", err, out)
		}
		for _, want := range []string{"PizzaShack 1.0.0 PUBLISHED", "UNBLOCKED", `"path":"/pizza/menu"`} {
			if !strings.Contains(string(out), want) {
				t.Errorf("demo output lacks %q:\n%s", want, out)
			}
		}
	})

	admin := e.userToken("admin", e.adminPass, "apim:api_view apim:api_create apim:api_publish apim:subscribe apim:app_manage apim:sub_manage apim:admin apim:tier_manage")
	subscribed := e.publishAPI(admin, "Orders", "/orders", []string{"Unlimited"})
	e.publishAPI(admin, "Inventory", "/inventory", []string{"Unlimited"})
	app := e.createApp(admin, "OrdersApp")
	e.subscribe(admin, app, subscribed, "Unlimited")
	token := e.appToken(admin, app)

	t.Run("call through Envoy reaches the backend", func(t *testing.T) {
		took := e.eventually(10*time.Second, func() string {
			if status, _, body, _ := e.gateway("GET", "/orders/1.0.0/items/42?x=1", token); status != 200 || !strings.Contains(body, `"path":"/backend/items/42"`) {
				return "got " + http.StatusText(status) + " " + body
			}
			return ""
		})
		t.Logf("first 200 after %s", took)
	})
	t.Run("no token", func(t *testing.T) {
		e.expectDenied("GET", "/orders/1.0.0/items/1", "", 401, "900902")
	})
	t.Run("tampered token", func(t *testing.T) {
		i := strings.LastIndexByte(token, '.') + 5
		flipped := byte('A')
		if token[i] == 'A' {
			flipped = 'B'
		}
		e.expectDenied("GET", "/orders/1.0.0/items/1", token[:i]+string(flipped)+token[i+1:], 401, "900901")
	})
	t.Run("API not subscribed", func(t *testing.T) {
		e.eventually(10*time.Second, func() string {
			if status, _, _, _ := e.gateway("GET", "/inventory/1.0.0/items/1", token); status == 404 {
				return "the Inventory API is not live yet"
			}
			return ""
		})
		e.expectDenied("GET", "/inventory/1.0.0/items/1", token, 403, "900908")
	})
	t.Run("no matching resource", func(t *testing.T) {
		e.expectDenied("GET", "/orders/1.0.0/nothing-here", token, 404, "900906")
	})
	t.Run("subscription policy of 3 per minute", func(t *testing.T) {
		e.must(201, "POST", "/api/am/admin/v4/throttling/policies/subscription", admin, map[string]any{
			"policyName": "ThreePerMin", "displayName": "ThreePerMin", "description": "3 requests a minute",
			"defaultLimit":     map[string]any{"type": "REQUESTCOUNTLIMIT", "requestCount": map[string]any{"timeUnit": "min", "unitTime": 1, "requestCount": 3}},
			"stopOnQuotaReach": true, "billingPlan": "FREE",
		}, nil)
		limited := e.publishAPI(admin, "Limited", "/limited", []string{"ThreePerMin"})
		e.subscribe(admin, app, limited, "ThreePerMin")
		e.eventually(10*time.Second, func() string {
			if status, _, _, _ := e.gateway("GET", "/limited/1.0.0/items/0", "x"); status == 404 {
				return "the Limited API is not live yet"
			}
			return ""
		})
		// The window is a calendar minute: make the four calls well inside one.
		if left := time.Until(time.Now().Truncate(time.Minute).Add(time.Minute)); left < 10*time.Second {
			time.Sleep(left + 100*time.Millisecond)
		}
		// The first call waits for the subscription to reach the gateway:
		// until then it is refused before the rate limit counts it.
		e.eventually(10*time.Second, func() string {
			if status, _, body, _ := e.gateway("GET", "/limited/1.0.0/items/1", token); status != 200 {
				return "call 1: " + body
			}
			return ""
		})
		for i := 2; i <= 3; i++ {
			if status, _, body, _ := e.gateway("GET", "/limited/1.0.0/items/1", token); status != 200 {
				t.Fatalf("call %d = %d %s, want 200", i, status, body)
			}
		}
		status, code, body, h := e.gateway("GET", "/limited/1.0.0/items/1", token)
		if status != 429 || code != "900804" {
			t.Fatalf("4th call = %d %s, want 429 with code 900804", status, body)
		}
		if h.Get("Retry-After") == "" {
			t.Errorf("429 without Retry-After; headers %v", h)
		}
	})
	t.Run("blocking and retiring an API", func(t *testing.T) {
		api := e.publishAPI(admin, "Lifecycle", "/lifecycle", []string{"Unlimited"})
		e.subscribe(admin, app, api, "Unlimited")
		answers := func(wantStatus int, wantCode string) func() string {
			return func() string {
				status, code, body, _ := e.gateway("GET", "/lifecycle/1.0.0/items/1", token)
				if status != wantStatus || code != wantCode {
					return fmt.Sprintf("got %d %s, want %d %s", status, body, wantStatus, wantCode)
				}
				return ""
			}
		}
		lifecycle := func(action string) {
			e.must(200, "POST", "/api/am/publisher/v4/apis/change-lifecycle?apiId="+api+"&action="+url.QueryEscape(action), admin, nil, nil)
		}
		e.eventually(10*time.Second, answers(200, ""))
		lifecycle("Block")
		e.eventually(5*time.Second, answers(503, "700700"))
		lifecycle("Re-Publish")
		e.eventually(5*time.Second, answers(200, ""))
		lifecycle("Deprecate")
		lifecycle("Retire")
		e.eventually(5*time.Second, answers(404, "900906"))
	})
	t.Run("undeploy takes the API off the gateway", func(t *testing.T) {
		var revs struct {
			List []struct {
				ID string `json:"id"`
			} `json:"list"`
		}
		e.must(200, "GET", "/api/am/publisher/v4/apis/"+subscribed+"/revisions", admin, nil, &revs)
		if len(revs.List) == 0 {
			t.Fatal("no revisions listed")
		}
		e.must(201, "POST", "/api/am/publisher/v4/apis/"+subscribed+"/undeploy-revision?revisionId="+revs.List[0].ID, admin,
			[]map[string]any{{"name": "Default", "vhost": "localhost", "displayOnDevportal": true}}, nil)
		took := e.eventually(5*time.Second, func() string {
			if status, code, body, _ := e.gateway("GET", "/orders/1.0.0/items/1", token); status != 404 || code != "900906" {
				return "still " + body
			}
			return ""
		})
		t.Logf("404 after undeploy in %s", took)
	})
}

func (e *env) expectDenied(method, path, token string, wantStatus int, wantCode string) {
	e.t.Helper()
	status, code, body, _ := e.gateway(method, path, token)
	if status != wantStatus || code != wantCode {
		e.t.Errorf("%s %s = %d %s, want %d with code %s", method, path, status, body, wantStatus, wantCode)
	}
}

// userToken registers a REST client and returns a password-grant token.
func (e *env) userToken(user, password, scopes string) string {
	e.t.Helper()
	var client struct{ ClientID, ClientSecret string }
	req, _ := http.NewRequest("POST", e.apimURL+"/client-registration/v0.17/register", strings.NewReader(
		`{"clientName":"e2e_rest_client","owner":"`+user+`","grantType":"client_credentials password refresh_token","saasApp":true}`))
	req.SetBasicAuth(user, password)
	req.Header.Set("Content-Type", "application/json")
	e.doJSON(req, 0, &client)
	return e.token(client.ClientID, client.ClientSecret, "grant_type=password&username="+user+"&password="+password+"&scope="+strings.ReplaceAll(scopes, " ", "+"))
}

func (e *env) token(id, secret, form string) string {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.apimURL+"/oauth2/token", strings.NewReader(form))
	req.SetBasicAuth(id, secret)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	e.doJSON(req, 200, &tok)
	return tok.AccessToken
}

// perMinutePolicy creates a subscription policy of count requests a minute
// that stops on quota reach (stop) or lets requests through flagged.
func (e *env) perMinutePolicy(admin, name string, count int, stop bool) {
	e.t.Helper()
	e.must(201, "POST", "/api/am/admin/v4/throttling/policies/subscription", admin, map[string]any{
		"policyName": name, "displayName": name, "description": "e2e",
		"defaultLimit":     map[string]any{"type": "REQUESTCOUNTLIMIT", "requestCount": map[string]any{"timeUnit": "min", "unitTime": 1, "requestCount": count}},
		"stopOnQuotaReach": stop, "billingPlan": "FREE",
	}, nil)
}

func (e *env) publishAPI(token, name, context string, policies []string) string {
	e.t.Helper()
	return e.publishAPIWith(token, name, context, policies, nil)
}

// publishAPIWith is publishAPI with extra fields of the API body.
func (e *env) publishAPIWith(token, name, context string, policies []string, extra map[string]any) string {
	e.t.Helper()
	body := map[string]any{
		"name": name, "context": context, "version": "1.0.0",
		"endpointConfig": map[string]any{"endpoint_type": "http", "production_endpoints": map[string]any{"url": e.backend + "/backend"}},
		"operations":     []map[string]any{{"target": "/items/{itemId}", "verb": "GET"}},
		"policies":       policies,
	}
	for k, v := range extra {
		body[k] = v
	}
	var api struct{ ID string }
	e.must(201, "POST", "/api/am/publisher/v4/apis", token, body, &api)
	var rev struct{ ID string }
	e.must(201, "POST", "/api/am/publisher/v4/apis/"+api.ID+"/revisions", token, map[string]any{"description": "r1"}, &rev)
	e.must(201, "POST", "/api/am/publisher/v4/apis/"+api.ID+"/deploy-revision?revisionId="+rev.ID, token,
		[]map[string]any{{"name": "Default", "vhost": "localhost", "displayOnDevportal": true}}, nil)
	e.must(200, "POST", "/api/am/publisher/v4/apis/change-lifecycle?apiId="+api.ID+"&action=Publish", token, nil, nil)
	return api.ID
}

func (e *env) createApp(token, name string) string {
	e.t.Helper()
	var app struct{ ApplicationID string }
	e.must(201, "POST", "/api/am/devportal/v3/applications", token, map[string]any{
		"name": name, "throttlingPolicy": "Unlimited", "description": "e2e", "tokenType": "JWT",
	}, &app)
	return app.ApplicationID
}

func (e *env) subscribe(token, app, api, tier string) {
	e.t.Helper()
	var sub struct{ Status string }
	e.must(201, "POST", "/api/am/devportal/v3/subscriptions", token, map[string]any{
		"applicationId": app, "apiId": api, "throttlingPolicy": tier,
	}, &sub)
	if sub.Status != "UNBLOCKED" {
		e.t.Fatalf("subscription status %q, want UNBLOCKED", sub.Status)
	}
}

// appToken generates production keys for app and returns a
// client-credentials token.
func (e *env) appToken(token, app string) string {
	e.t.Helper()
	var keys struct{ ConsumerKey, ConsumerSecret string }
	e.must(200, "POST", "/api/am/devportal/v3/applications/"+app+"/generate-keys", token, map[string]any{
		"keyType": "PRODUCTION", "grantTypesToBeSupported": []string{"client_credentials"},
	}, &keys)
	return e.token(keys.ConsumerKey, keys.ConsumerSecret, "grant_type=client_credentials")
}

// TestSplitProfiles runs the control plane and a gateway as two processes:
// the gateway loads its environment's state from the control plane over
// HTTPS, verifies tokens against its JWKS and follows events on Kafka; after
// a restart it serves the same subscriptions from a fresh full load.
func TestSplitProfiles(t *testing.T) {
	e := startSplit(t)
	admin := e.userToken("admin", e.adminPass, "apim:api_view apim:api_create apim:api_publish apim:subscribe apim:app_manage apim:sub_manage")
	api := e.publishAPI(admin, "Split", "/split", []string{"Unlimited"})
	app := e.createApp(admin, "SplitApp")
	e.subscribe(admin, app, api, "Unlimited")
	token := e.appToken(admin, app)
	live := func() string {
		if status, _, body, _ := e.gateway("GET", "/split/1.0.0/items/7", token); status != 200 || !strings.Contains(body, `"path":"/backend/items/7"`) {
			return "got " + http.StatusText(status) + " " + body
		}
		return ""
	}
	e.eventually(10*time.Second, live)
	e.expectDenied("GET", "/split/1.0.0/items/7", "", 401, "900902")

	e.restartGateway()
	e.eventually(10*time.Second, live)
	e.expectDenied("GET", "/split/1.0.0/items/7", token+"x", 401, "900901")
}

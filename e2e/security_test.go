package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apim-dev/apim/internal/samplebackend"
)

// publishWithSandbox publishes an API whose production endpoint is
// prodURL and whose sandbox endpoint, when not empty, is sandboxURL.
func (e *env) publishWithSandbox(token, name, context, prodURL, sandboxURL string) string {
	e.t.Helper()
	endpoints := map[string]any{"endpoint_type": "http", "production_endpoints": map[string]any{"url": prodURL}}
	if sandboxURL != "" {
		endpoints["sandbox_endpoints"] = map[string]any{"url": sandboxURL}
	}
	var api struct{ ID string }
	e.must(201, "POST", "/api/am/publisher/v4/apis", token, map[string]any{
		"name": name, "context": context, "version": "1.0.0", "endpointConfig": endpoints,
		"operations": []map[string]any{{"target": "/items/{itemId}", "verb": "GET"}},
		"policies":   []string{"Unlimited"},
	}, &api)
	var rev struct{ ID string }
	e.must(201, "POST", "/api/am/publisher/v4/apis/"+api.ID+"/revisions", token, map[string]any{"description": "r1"}, &rev)
	e.must(201, "POST", "/api/am/publisher/v4/apis/"+api.ID+"/deploy-revision?revisionId="+rev.ID, token,
		[]map[string]any{{"name": "Default", "vhost": "localhost", "displayOnDevportal": true}}, nil)
	e.must(200, "POST", "/api/am/publisher/v4/apis/change-lifecycle?apiId="+api.ID+"&action=Publish", token, nil, nil)
	return api.ID
}

// appKeys generates keys of keyType (PRODUCTION or SANDBOX) for app and
// returns the consumer key and secret.
func (e *env) appKeys(token, app, keyType string) (string, string) {
	e.t.Helper()
	var keys struct{ ConsumerKey, ConsumerSecret string }
	e.must(200, "POST", "/api/am/devportal/v3/applications/"+app+"/generate-keys", token, map[string]any{
		"keyType": keyType, "grantTypesToBeSupported": []string{"client_credentials"},
	}, &keys)
	return keys.ConsumerKey, keys.ConsumerSecret
}

func (e *env) clientToken(ck, cs string) string {
	e.t.Helper()
	return e.token(ck, cs, "grant_type=client_credentials")
}

// revoke revokes an access token at /oauth2/revoke as its client.
func (e *env) revoke(ck, cs, tok string) {
	e.t.Helper()
	req, err := http.NewRequest("POST", e.apimURL+"/oauth2/revoke", strings.NewReader("token="+url.QueryEscape(tok)+"&token_type_hint=access_token"))
	if err != nil {
		e.t.Fatal(err)
	}
	req.SetBasicAuth(url.QueryEscape(ck), url.QueryEscape(cs))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		e.t.Fatalf("revoke = %d %s", resp.StatusCode, body)
	}
}

// subscriptionID finds the subscription of app to api through the
// publisher's GET /subscriptions?apiId=.
func (e *env) subscriptionID(token, api, app string) string {
	e.t.Helper()
	var subs struct {
		List []struct {
			SubscriptionID  string `json:"subscriptionId"`
			ApplicationInfo struct {
				ApplicationID string `json:"applicationId"`
			} `json:"applicationInfo"`
		} `json:"list"`
	}
	e.must(200, "GET", "/api/am/publisher/v4/subscriptions?apiId="+api, token, nil, &subs)
	for _, s := range subs.List {
		if s.ApplicationInfo.ApplicationID == app {
			return s.SubscriptionID
		}
	}
	e.t.Fatalf("no subscription of application %s to api %s in %+v", app, api, subs)
	return ""
}

// answers returns a probe for eventually: the call with tok must answer
// wantStatus with WSO2 code wantCode ("" for none), and its body must hold
// every want.
func (e *env) answers(path, tok string, wantStatus int, wantCode string, want ...string) func() string {
	return func() string {
		status, code, body, _ := e.gateway("GET", path, tok)
		if status != wantStatus || code != wantCode {
			return fmt.Sprintf("GET %s = %d %s, want %d %s", path, status, body, wantStatus, wantCode)
		}
		for _, w := range want {
			if !strings.Contains(body, w) {
				return fmt.Sprintf("GET %s = %d %s, lacks %s", path, status, body, w)
			}
		}
		return ""
	}
}

// TestSecurityEnforcement drives, through the real Envoy, subscription
// blocking, production and sandbox keys, token revocation, and deleting
// subscriptions and applications, and checks every refusal is WSO2's code
// and body, the same for every invalid credential.
func TestSecurityEnforcement(t *testing.T) {
	e := start(t, nil)
	sandbox := httptest.NewServer(samplebackend.Handler("sandbox"))
	t.Cleanup(sandbox.Close)
	admin := e.userToken("admin", e.adminPass, "apim:api_view apim:api_create apim:api_publish apim:subscribe apim:app_manage apim:sub_manage apim:subscription_view apim:subscription_block")

	both := e.publishWithSandbox(admin, "Both", "/both", e.backend+"/prod", sandbox.URL+"/sandbox")
	prodOnly := e.publishWithSandbox(admin, "ProdOnly", "/prodonly", e.backend+"/prod", "")
	app := e.createApp(admin, "SecureApp")
	e.subscribe(admin, app, both, "Unlimited")
	e.subscribe(admin, app, prodOnly, "Unlimited")
	pk, ps := e.appKeys(admin, app, "PRODUCTION")
	sk, ss := e.appKeys(admin, app, "SANDBOX")
	prod, sbx := e.clientToken(pk, ps), e.clientToken(sk, ss)

	const bothPath, prodOnlyPath = "/both/1.0.0/items/1", "/prodonly/1.0.0/items/1"
	toProduction := []string{`"service":"backend"`, `"path":"/prod/items/1"`}
	toSandbox := []string{`"service":"sandbox"`, `"path":"/sandbox/items/1"`}
	e.eventually(10*time.Second, e.answers(bothPath, prod, 200, "", toProduction...))
	e.eventually(10*time.Second, e.answers(prodOnlyPath, prod, 200, "", toProduction...))

	// The one body every invalid credential gets, whatever the reason.
	_, _, invalidBody, _ := e.gateway("GET", bothPath, prod+"x")
	if !strings.Contains(invalidBody, `"code":"900901"`) {
		t.Fatalf("tampered token: %s", invalidBody)
	}
	sameAsInvalid := func(t *testing.T, path, tok, why string) {
		t.Helper()
		status, _, body, h := e.gateway("GET", path, tok)
		if status != 401 || body != invalidBody || h.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: %d %s %v, want 401 %s with a challenge", why, status, body, h, invalidBody)
		}
	}

	t.Run("Sandbox key reaches the sandbox endpoint", func(t *testing.T) {
		e.eventually(5*time.Second, e.answers(bothPath, sbx, 200, "", toSandbox...))
		e.eventually(5*time.Second, e.answers(bothPath, prod, 200, "", toProduction...))
	})
	t.Run("Sandbox key refused by an API without a sandbox endpoint", func(t *testing.T) {
		sameAsInvalid(t, prodOnlyPath, sbx, "sandbox key on a production-only API")
		// A client cannot pick the sandbox route for a production key.
		req, _ := http.NewRequest("GET", e.gwURL+bothPath, nil)
		req.Header.Set("Authorization", "Bearer "+prod)
		req.Header.Set("x-apim-key-type", "SANDBOX")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), `"service":"backend"`) {
			t.Errorf("production key with a forged key-type header: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("Blocking a subscription", func(t *testing.T) {
		sub := e.subscriptionID(admin, both, app)
		block := func(state string) {
			e.must(200, "POST", "/api/am/publisher/v4/subscriptions/block-subscription?subscriptionId="+sub+"&blockState="+state, admin, nil, nil)
		}
		blocked := []string{`"message":"The requested API is temporarily blocked"`}
		block("BLOCKED")
		took := e.eventually(5*time.Second, e.answers(bothPath, prod, 401, "900907", blocked...))
		t.Logf("BLOCKED refused after %s", took)
		e.eventually(5*time.Second, e.answers(bothPath, sbx, 401, "900907", blocked...))
		// The other subscription of the application is untouched.
		e.eventually(5*time.Second, e.answers(prodOnlyPath, prod, 200, "", toProduction...))

		block("PROD_ONLY_BLOCKED")
		e.eventually(5*time.Second, e.answers(bothPath, sbx, 200, "", toSandbox...))
		e.eventually(5*time.Second, e.answers(bothPath, prod, 401, "900907", blocked...))

		e.must(200, "POST", "/api/am/publisher/v4/subscriptions/unblock-subscription?subscriptionId="+sub, admin, nil, nil)
		e.eventually(5*time.Second, e.answers(bothPath, prod, 200, "", toProduction...))
		e.eventually(5*time.Second, e.answers(bothPath, sbx, 200, "", toSandbox...))
	})

	t.Run("Revoked token is refused", func(t *testing.T) {
		tok := e.clientToken(pk, ps)
		e.eventually(5*time.Second, e.answers(bothPath, tok, 200, "", toProduction...)) // now in the verified cache
		start := time.Now()
		e.revoke(pk, ps, tok)
		took := e.eventually(5*time.Second, e.answers(bothPath, tok, 401, "900901"))
		t.Logf("revoked token refused %s after the revoke call returned, %s after it started", took, time.Since(start))
		sameAsInvalid(t, bothPath, tok, "revoked token")
		// The client's other token is not revoked.
		e.eventually(5*time.Second, e.answers(bothPath, prod, 200, "", toProduction...))
	})

	t.Run("Deleted subscription", func(t *testing.T) {
		e.must(200, "DELETE", "/api/am/devportal/v3/subscriptions/"+e.subscriptionID(admin, prodOnly, app), admin, nil, nil)
		e.eventually(5*time.Second, e.answers(prodOnlyPath, prod, 403, "900908", `"message":"Resource forbidden"`))
		e.eventually(5*time.Second, e.answers(bothPath, prod, 200, "", toProduction...))
	})

	t.Run("Deleted application", func(t *testing.T) {
		e.must(200, "DELETE", "/api/am/devportal/v3/applications/"+app, admin, nil, nil)
		e.eventually(5*time.Second, e.answers(bothPath, prod, 401, "900901"))
		sameAsInvalid(t, bothPath, prod, "token of a deleted application")
		sameAsInvalid(t, bothPath, sbx, "sandbox token of a deleted application")
	})
}

// BenchmarkRevokeToRefused measures, over 100 revocations, the time from
// the start of the POST /oauth2/revoke call to the first 401 through
// Envoy for a token that was in the gateway's verified-token cache. Run it
// with -benchtime 1x: one iteration is the whole series.
func BenchmarkRevokeToRefused(b *testing.B) {
	for range b.N {
		revokeSeries(b)
	}
}

func revokeSeries(b *testing.B) {
	b.StopTimer()
	e := start(b, nil)
	admin := e.userToken("admin", e.adminPass, "apim:api_view apim:api_create apim:api_publish apim:subscribe apim:app_manage apim:sub_manage")
	api := e.publishAPI(admin, "Revoke", "/revoke", []string{"Unlimited"})
	app := e.createApp(admin, "RevokeApp")
	e.subscribe(admin, app, api, "Unlimited")
	ck, cs := e.appKeys(admin, app, "PRODUCTION")
	const path = "/revoke/1.0.0/items/1"
	e.eventually(10*time.Second, e.answers(path, e.clientToken(ck, cs), 200, ""))

	const revocations = 100
	var took, call []time.Duration
	for i := range revocations {
		tok := e.clientToken(ck, cs)
		if status, _, body, _ := e.gateway("GET", path, tok); status != 200 {
			b.Fatalf("token %d before revocation: %d %s", i, status, body)
		}
		start := time.Now()
		e.revoke(ck, cs, tok)
		call = append(call, time.Since(start))
		for {
			status, code, body, _ := e.gateway("GET", path, tok)
			if status == 401 && code == "900901" {
				break
			}
			if status != 200 {
				b.Fatalf("token %d: %d %s while waiting for 401 900901", i, status, body)
			}
			if time.Since(start) > 10*time.Second {
				b.Fatalf("token %d still allowed 10s after revocation", i)
			}
			time.Sleep(time.Millisecond)
		}
		took = append(took, time.Since(start))
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	slices.Sort(took)
	slices.Sort(call)
	b.ReportMetric(ms(took[len(took)/2]), "p50-ms")
	b.ReportMetric(ms(took[len(took)*99/100]), "p99-ms")
	b.ReportMetric(ms(took[len(took)-1]), "max-ms")
	b.ReportMetric(ms(call[len(call)/2]), "revoke-call-p50-ms")
}

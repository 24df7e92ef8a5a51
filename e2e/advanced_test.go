package e2e

import (
	"strconv"
	"testing"
	"time"
)

// TestAdvancedThrottling shows, through the real Envoy, the limits that
// depend on the request itself: an advanced policy's condition groups (a
// header, and a query parameter with an inverted IP condition) each with
// their own limit beside the default one; a custom rule (a CEL condition
// and a key template) answering 429 900806; and a subscription policy's
// bandwidth quota, counted in response bytes, answering 429 900804 once
// spent. Limits are per hour so that no window ends mid-test. Both
// rate-limit modes: decided in ext_authz's Check, and by a separate call to
// the rate-limit service.
func TestAdvancedThrottling(t *testing.T) {
	forEachRateLimitMode(t, testAdvancedThrottling)
}

// forEachRateLimitMode runs test against an all-in-one in each
// gateway.rate_limit_mode.
func forEachRateLimitMode(t *testing.T, test func(*testing.T, *env)) {
	for _, mode := range []string{"ext_authz", "rls"} {
		t.Run(mode, func(t *testing.T) {
			test(t, startWith(t, nil, func(c *apimConfig) { c.RateLimitMode = mode }))
		})
	}
}

func testAdvancedThrottling(t *testing.T, e *env) {
	admin := e.userToken("admin", e.adminPass, "apim:api_view apim:api_create apim:api_publish apim:subscribe apim:app_manage apim:sub_manage apim:admin apim:tier_manage")
	perHour := func(n int) map[string]any {
		return map[string]any{"type": "REQUESTCOUNTLIMIT", "requestCount": map[string]any{"timeUnit": "hour", "unitTime": 1, "requestCount": n}}
	}
	// expect calls path with header until the first refusal, which must be
	// the WSO2 code after exactly allowed calls.
	expect := func(t *testing.T, path, token string, header map[string]string, allowed int, code string) {
		t.Helper()
		for i := 1; i <= allowed; i++ {
			if status, _, body, _ := e.gatewayWith("GET", path, token, header); status != 200 {
				t.Fatalf("call %d with %v = %d %s, want 200", i, header, status, body)
			}
		}
		if status, got, body, h := e.gatewayWith("GET", path, token, header); status != 429 || got != code {
			t.Fatalf("call %d with %v = %d %s, want 429 %s", allowed+1, header, status, body, code)
		} else if h.Get("Retry-After") == "" {
			t.Errorf("429 %s without Retry-After", code)
		}
	}

	t.Run("condition groups: each its own limit, the default for the rest", func(t *testing.T) {
		e.must(201, "POST", "/api/am/admin/v4/throttling/policies/advanced", admin, map[string]any{
			"policyName": "Conditional", "defaultLimit": perHour(1000),
			"conditionalGroups": []map[string]any{
				{"limit": perHour(2), "conditions": []map[string]any{
					{"type": "HEADERCONDITION", "headerCondition": map[string]any{"headerName": "X-Client", "headerValue": "^batch-"}},
				}},
				{"limit": perHour(1), "conditions": []map[string]any{
					{"type": "QUERYPARAMETERCONDITION", "queryParameterCondition": map[string]any{"parameterName": "mode", "parameterValue": "^bulk$"}},
					// Envoy sees the test's calls from 127.0.0.1: not 10.0.0.1.
					{"type": "IPCONDITION", "invertCondition": true, "ipCondition": map[string]any{"ipConditionType": "IPSPECIFIC", "specificIP": "10.0.0.1"}},
				}},
			},
		}, nil)
		api := e.publishAPIWith(admin, "Conditional", "/conditional", []string{"Unlimited"}, map[string]any{"apiThrottlingPolicy": "Conditional"})
		app := e.createApp(admin, "ConditionalApp")
		e.subscribe(admin, app, api, "Unlimited")
		token := e.appToken(admin, app)
		const path = "/conditional/1.0.0/items/1"
		e.eventually(10*time.Second, func() string {
			if status, _, body, _ := e.gateway("GET", path, token); status != 200 {
				return "got " + strconv.Itoa(status) + " " + body
			}
			return ""
		})
		expect(t, path, token, map[string]string{"X-Client": "batch-7"}, 2, "900800")
		// The header group's counter is its own: other requests go on under
		// the default limit, and a header that does not match is not in it.
		for _, h := range []map[string]string{nil, {"X-Client": "interactive"}} {
			if status, _, body, _ := e.gatewayWith("GET", path, token, h); status != 200 {
				t.Fatalf("with %v after the header group's limit: %d %s, want 200", h, status, body)
			}
		}
		expect(t, path+"?mode=bulk", token, nil, 1, "900800")
		if status, _, body, _ := e.gateway("GET", path+"?mode=bulky", token); status != 200 {
			t.Fatalf("?mode=bulky: %d %s, want 200 (the regex is anchored)", status, body)
		}
	})

	t.Run("custom rule: CEL condition and key template, 429 900806", func(t *testing.T) {
		var failure struct{ Description string }
		if got := e.call("POST", "/api/am/admin/v4/throttling/policies/custom", admin, map[string]any{
			"policyName": "Broken", "keyTemplate": "$appId", "siddhiQuery": `headers["x-custom"] ==`, "defaultLimit": perHour(2),
		}, &failure); got != 400 || failure.Description == "" {
			t.Errorf("a CEL syntax error = %d %q, want 400 with the reason", got, failure.Description)
		}
		e.must(201, "POST", "/api/am/admin/v4/throttling/policies/custom", admin, map[string]any{
			"policyName": "CustomTwo", "keyTemplate": "$appId:$apiContext",
			"siddhiQuery": `headers["x-custom"] == "on" && api_context == "/custom/1.0.0"`, "defaultLimit": perHour(2),
		}, nil)
		api := e.publishAPI(admin, "Custom", "/custom", []string{"Unlimited"})
		apps := []string{e.createApp(admin, "CustomApp1"), e.createApp(admin, "CustomApp2")}
		tokens := make([]string, len(apps))
		for i, app := range apps {
			e.subscribe(admin, app, api, "Unlimited")
			tokens[i] = e.appToken(admin, app)
		}
		const path = "/custom/1.0.0/items/1"
		e.eventually(10*time.Second, func() string {
			if status, _, body, _ := e.gateway("GET", path, tokens[0]); status != 200 {
				return "got " + strconv.Itoa(status) + " " + body
			}
			return ""
		})
		on := map[string]string{"X-Custom": "on"}
		expect(t, path, tokens[0], on, 2, "900806")
		// The key template has $appId: another application has its own count.
		expect(t, path, tokens[1], on, 2, "900806")
		if status, _, body, _ := e.gateway("GET", path, tokens[0]); status != 200 {
			t.Fatalf("without the header: %d %s, want 200", status, body)
		}
	})

	t.Run("bandwidth quota: 429 900804 once the bytes are spent", func(t *testing.T) {
		e.must(201, "POST", "/api/am/admin/v4/throttling/policies/subscription", admin, map[string]any{
			"policyName": "OneKBPerHour", "stopOnQuotaReach": true, "billingPlan": "FREE",
			"defaultLimit": map[string]any{"type": "BANDWIDTHLIMIT", "bandwidth": map[string]any{"timeUnit": "hour", "unitTime": 1, "dataAmount": 1, "dataUnit": "KB"}},
		}, nil)
		api := e.publishAPI(admin, "Metered", "/metered", []string{"OneKBPerHour", "Unlimited"})
		app := e.createApp(admin, "MeteredApp")
		e.subscribe(admin, app, api, "OneKBPerHour")
		token := e.appToken(admin, app)
		const path = "/metered/1.0.0/items/1"
		var sent []int // response body bytes of each admitted call
		e.eventually(10*time.Second, func() string {
			status, _, body, _ := e.gateway("GET", path, token)
			if status != 200 {
				return "got " + strconv.Itoa(status) + " " + body
			}
			sent = append(sent, len(body))
			return ""
		})
		total := sent[0]
		for range 40 {
			status, code, body, _ := e.gateway("GET", path, token)
			if status == 429 {
				if code != "900804" {
					t.Fatalf("refused with %s, want 900804: %s", code, body)
				}
				break
			}
			if status != 200 {
				t.Fatalf("metered call = %d %s", status, body)
			}
			sent = append(sent, len(body))
			total += len(body)
		}
		t.Logf("admitted %d calls, %d response bytes, before the first 429", len(sent), total)
		// The bytes are counted when each stream is done, so the call right
		// after the one that crosses 1 KB may still pass; none after it.
		last := sent[len(sent)-1]
		if total < 1024 || total-last-sent[max(len(sent)-2, 0)] >= 1024 {
			t.Errorf("refused after %d bytes in %d calls %v, want just past 1024", total, len(sent), sent)
		}
	})
}

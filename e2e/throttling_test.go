package e2e

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestThrottling shows, through the real Envoy: an application policy of 3
// per minute answers the 4th call 429 900803 with Retry-After and draft-03
// headers; a request whose tiers are all Unlimited makes no rate-limit call;
// a deny policy on an application answers 403 900805 within a second of
// being switched on, and lets it through again when switched off.
func TestThrottling(t *testing.T) {
	forEachRateLimitMode(t, testThrottling)
}

func testThrottling(t *testing.T, e *env) {
	admin := e.userToken("admin", e.adminPass, "apim:api_view apim:api_create apim:api_publish apim:subscribe apim:app_manage apim:sub_manage apim:admin apim:tier_manage")

	var pol struct{ PolicyID, PolicyName string }
	e.must(201, "POST", "/api/am/admin/v4/throttling/policies/application", admin, map[string]any{
		"policyName": "ThreePerMin", "description": "e2e",
		"defaultLimit": map[string]any{"type": "REQUESTCOUNTLIMIT", "requestCount": map[string]any{"timeUnit": "min", "unitTime": 1, "requestCount": 3}},
	}, &pol)
	api := e.publishAPI(admin, "Throttled", "/throttled", []string{"Unlimited"})
	limitedApp := e.createTieredApp(admin, "LimitedApp", pol.PolicyName)
	openApp := e.createTieredApp(admin, "OpenApp", "Unlimited")
	e.subscribe(admin, limitedApp, api, "Unlimited")
	e.subscribe(admin, openApp, api, "Unlimited")
	limited, open := e.appToken(admin, limitedApp), e.appToken(admin, openApp)
	const path = "/throttled/1.0.0/items/1"

	t.Run("all Unlimited: no rate-limit call", func(t *testing.T) {
		e.eventually(10*time.Second, func() string {
			if status, _, body, _ := e.gateway("GET", path, open); status != 200 {
				return "got " + strconv.Itoa(status) + " " + body
			}
			return ""
		})
		before := e.rlsCalls()
		for range 5 {
			if status, _, body, _ := e.gateway("GET", path, open); status != 200 {
				t.Fatalf("Unlimited call = %d %s", status, body)
			}
		}
		if after := e.rlsCalls(); after != before {
			t.Errorf("rate-limit calls went from %d to %d for Unlimited-only requests", before, after)
		}
	})

	t.Run("application policy 3/min: 4th call 429 900803", func(t *testing.T) {
		if s := time.Now().Second(); s > 45 { // keep the four calls in one minute window
			time.Sleep(time.Duration(61-s) * time.Second)
		}
		before := e.rlsCalls()
		for i := 1; i <= 3; i++ {
			if status, _, body, _ := e.gateway("GET", path, limited); status != 200 {
				t.Fatalf("call %d = %d %s, want 200", i, status, body)
			}
		}
		status, code, body, h := e.gateway("GET", path, limited)
		if status != 429 || code != "900803" {
			t.Fatalf("4th call = %d %s, want 429 900803", status, body)
		}
		if ra, err := strconv.Atoi(h.Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
			t.Errorf("Retry-After %q", h.Get("Retry-After"))
		}
		if h.Get("X-RateLimit-Limit") == "" || h.Get("X-RateLimit-Remaining") != "0" || h.Get("X-RateLimit-Reset") == "" {
			t.Errorf("draft-03 headers: limit %q remaining %q reset %q", h.Get("X-RateLimit-Limit"), h.Get("X-RateLimit-Remaining"), h.Get("X-RateLimit-Reset"))
		}
		if after := e.rlsCalls(); after-before != 4 {
			t.Errorf("%d rate-limit calls for 4 limited requests", after-before)
		}
	})

	t.Run("API-level policy 3/min: 4th call 429 900800", func(t *testing.T) {
		e.must(201, "POST", "/api/am/admin/v4/throttling/policies/advanced", admin, map[string]any{
			"policyName": "ApiThreePerMin", "description": "e2e",
			"defaultLimit": map[string]any{"type": "REQUESTCOUNTLIMIT", "requestCount": map[string]any{"timeUnit": "min", "unitTime": 1, "requestCount": 3}},
		}, nil)
		// A misspelt tier is refused, not silently unlimited.
		var failure struct{ Description string }
		if got := e.call("POST", "/api/am/publisher/v4/apis", admin, map[string]any{
			"name": "Typo", "context": "/typo", "version": "1.0.0", "apiThrottlingPolicy": "ApiThreePerMn",
			"endpointConfig": map[string]any{"endpoint_type": "http", "production_endpoints": map[string]any{"url": e.backend}},
			"operations":     []map[string]any{{"target": "/x", "verb": "GET"}},
		}, &failure); got != 400 || !strings.Contains(failure.Description, "ApiThreePerMn") {
			t.Errorf("unknown apiThrottlingPolicy = %d %q, want 400 naming it", got, failure.Description)
		}
		capped := e.publishAPIWith(admin, "Capped", "/capped", []string{"Unlimited"}, map[string]any{"apiThrottlingPolicy": "ApiThreePerMin"})
		e.subscribe(admin, openApp, capped, "Unlimited")
		if s := time.Now().Second(); s > 45 {
			time.Sleep(time.Duration(61-s) * time.Second)
		}
		// The first call waits for the API and the subscription to reach the
		// gateway; refusals before then are not counted.
		e.eventually(10*time.Second, func() string {
			if status, _, body, _ := e.gateway("GET", "/capped/1.0.0/items/1", open); status != 200 {
				return "call 1: " + body
			}
			return ""
		})
		for i := 2; i <= 3; i++ {
			if status, _, body, _ := e.gateway("GET", "/capped/1.0.0/items/1", open); status != 200 {
				t.Fatalf("call %d = %d %s, want 200", i, status, body)
			}
		}
		if status, code, body, _ := e.gateway("GET", "/capped/1.0.0/items/1", open); status != 429 || code != "900800" {
			t.Fatalf("4th call = %d %s, want 429 900800", status, body)
		}
	})

	t.Run("subscription policy that does not stop: allowed past 2/min, flagged to the backend", func(t *testing.T) {
		e.perMinutePolicy(admin, "BilledTwo", 2, false)
		billed := e.publishAPI(admin, "Billed", "/billed", []string{"BilledTwo"})
		e.subscribe(admin, openApp, billed, "BilledTwo")
		if s := time.Now().Second(); s > 45 {
			time.Sleep(time.Duration(61-s) * time.Second)
		}
		// What the backend saw of the flag; a client's own never arrives.
		flag := func(i int) string {
			status, _, body, _ := e.gatewayWith("GET", "/billed/1.0.0/items/1", open, map[string]string{"X-Apim-Quota-Exceeded": "forged"})
			if status != 200 {
				t.Fatalf("call %d = %d %s, want 200", i, status, body)
			}
			var echo struct{ Headers map[string]string }
			if err := json.Unmarshal([]byte(body), &echo); err != nil {
				t.Fatal(err)
			}
			return echo.Headers["X-Apim-Quota-Exceeded"]
		}
		e.eventually(10*time.Second, func() string { // the API and subscription reach the gateway
			if status, _, body, _ := e.gateway("GET", "/billed/1.0.0/items/1", open); status != 200 {
				return body
			}
			return ""
		})
		if got := flag(2); got != "" {
			t.Errorf("call 2 (within the limit): the backend saw the flag %q", got)
		}
		for i := 3; i <= 4; i++ {
			if got := flag(i); got != "subscription/BilledTwo" {
				t.Errorf("call %d (past the limit): the backend saw the flag %q, want subscription/BilledTwo", i, got)
			}
		}
	})

	t.Run("deny policy on the application: 403 900805 within 1s, then allowed again", func(t *testing.T) {
		var deny struct{ ConditionID string }
		e.must(201, "POST", "/api/am/admin/v4/throttling/deny-policies", admin, map[string]any{
			"conditionType": "APPLICATION", "conditionValue": "admin:OpenApp", "conditionStatus": false,
		}, &deny)
		if status, _, body, _ := e.gateway("GET", path, open); status != 200 {
			t.Fatalf("with the deny policy off: %d %s", status, body)
		}
		e.must(200, "PATCH", "/api/am/admin/v4/throttling/deny-policies/"+deny.ConditionID, admin, map[string]any{"conditionStatus": true}, nil)
		took := e.eventually(5*time.Second, func() string {
			if status, code, body, _ := e.gateway("GET", path, open); status != 403 || code != "900805" {
				return "got " + strconv.Itoa(status) + " " + body
			}
			return ""
		})
		t.Logf("denied %s after switching on", took)
		if took > time.Second {
			t.Errorf("deny policy took %s to reach the gateway, want at most 1s", took)
		}
		e.must(200, "PATCH", "/api/am/admin/v4/throttling/deny-policies/"+deny.ConditionID, admin, map[string]any{"conditionStatus": false}, nil)
		took = e.eventually(5*time.Second, func() string {
			if status, _, body, _ := e.gateway("GET", path, open); status != 200 {
				return "got " + strconv.Itoa(status) + " " + body
			}
			return ""
		})
		t.Logf("allowed again %s after switching off", took)
	})
}

// createTieredApp creates an application with an application throttling
// policy.
func (e *env) createTieredApp(token, name, tier string) string {
	e.t.Helper()
	var app struct{ ApplicationID string }
	e.must(201, "POST", "/api/am/devportal/v3/applications", token, map[string]any{
		"name": name, "throttlingPolicy": tier, "description": "e2e", "tokenType": "JWT",
	}, &app)
	return app.ApplicationID
}

// rlsCalls sums apim_ratelimit_calls_total from the sidecar's /metrics.
func (e *env) rlsCalls() int {
	e.t.Helper()
	resp, err := http.Get(e.opsURL + "/metrics")
	if err != nil {
		e.t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	total := 0
	found := false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apim_ratelimit_calls_total{") {
			continue
		}
		found = true
		f := strings.Fields(line)
		n, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			e.t.Fatalf("metrics line %q: %v", line, err)
		}
		total += int(n)
	}
	if !found {
		e.t.Fatal("no apim_ratelimit_calls_total on /metrics")
	}
	return total
}

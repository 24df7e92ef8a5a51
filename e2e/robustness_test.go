package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestBadPolicyKeepsServing is issue 14's first reproduction: an application
// policy with a window past year 9999 once stopped the gateway at the first
// request of an application on it (the throttle count it published could
// not be encoded), and again at every restart. Such a policy is now refused
// with a 400 naming the field; one stored before the bound counts as the
// longest window allowed, and the gateway keeps serving.
func TestBadPolicyKeepsServing(t *testing.T) {
	e := startSplit(t)
	admin := e.userToken("admin", e.adminPass, "apim:api_view apim:api_create apim:api_publish apim:subscribe apim:app_manage apim:sub_manage apim:admin apim:tier_manage")
	policy := func(name string, years int) map[string]any {
		return map[string]any{
			"policyName": name,
			"defaultLimit": map[string]any{"type": "REQUESTCOUNTLIMIT", "requestCount": map[string]any{
				"timeUnit": "year", "unitTime": years, "requestCount": 3,
			}},
		}
	}
	for _, years := range []int{100_000, 10_000, 9_000} {
		var body struct {
			Description string
			Error       []struct{ Message, Description string }
		}
		if status := e.call("POST", "/api/am/admin/v4/throttling/policies/application", admin, policy(fmt.Sprintf("Y%d", years), years), &body); status != 400 ||
			len(body.Error) != 1 || body.Error[0].Message != "defaultLimit.requestCount.unitTime" || !strings.Contains(body.Error[0].Description, "at most 100") {
			t.Fatalf("%d years: %d %+v, want 400 naming defaultLimit.requestCount.unitTime", years, status, body)
		}
	}

	// The longest window allowed, then made longer behind apim's back, as
	// an apim from before the bound stored it.
	e.must(201, "POST", "/api/am/admin/v4/throttling/policies/application", admin, policy("Century", 100), nil)
	db, err := pgx.Connect(context.Background(), e.apimDB)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	if _, err := db.Exec(context.Background(), `UPDATE throttling_policies SET unit_time = 100000 WHERE name = 'Century'`); err != nil {
		t.Fatal(err)
	}
	api := e.publishAPI(admin, "Centuries", "/centuries", []string{"Unlimited"})
	app := e.createTieredApp(admin, "CenturyApp", "Century")
	e.subscribe(admin, app, api, "Unlimited")
	token := e.appToken(admin, app)
	e.restartGateway() // it loads the stored policy as it is

	const path = "/centuries/1.0.0/items/1"
	e.eventually(10*time.Second, func() string {
		if status, _, body, _ := e.gateway("GET", path, token); status != 200 {
			return "got " + strconv.Itoa(status) + " " + body
		}
		return ""
	})
	for range 3 {
		e.gateway("GET", path, token)
	}
	if status, code, body, _ := e.gateway("GET", path, token); status != 429 || code != "900803" {
		t.Fatalf("past the policy's 3 requests: %d %s, want 429 900803", status, body)
	}
	// The counts of that window, the message that could not be encoded,
	// reach Kafka, and the gateway is still up and ready.
	gwOps := fmt.Sprintf("http://127.0.0.1:%d", e.gwConfig.OpsPort)
	e.eventually(10*time.Second, func() string {
		if m := grepLines(metrics(t, gwOps), "apim_throttle_agent_counts_published_total "); m == "" || strings.HasSuffix(m, " 0") {
			return "no throttle counts published: " + m
		}
		return ""
	})
	latest := map[string]*proc{} // restartGateway left the first gateway in procs
	for _, p := range e.procs {
		latest[p.name] = p
	}
	for name, p := range latest {
		select {
		case <-p.done:
			t.Fatalf("%s exited", name)
		default:
		}
	}
	resp, err := http.Get(gwOps + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("gateway /readyz = %d", resp.StatusCode)
	}
	for _, l := range strings.Split(grepLines(metrics(t, gwOps), "apim_panics_total{"), "\n") {
		if l != "" && !strings.HasSuffix(l, " 0") {
			t.Errorf("the gateway recovered from a panic: %s", l)
		}
	}
}

func metrics(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func grepLines(s string, subs ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, sub := range subs {
			if strings.Contains(l, sub) {
				out = append(out, l)
			}
		}
	}
	return strings.Join(out, "\n")
}

// TestGatewayListenerLimits: the listener refuses a body past the limit
// with 413 and WSO2's error shape (by Content-Length and while it streams),
// and closes a connection whose headers trickle in past the timeout.
func TestGatewayListenerLimits(t *testing.T) {
	e := startWith(t, nil, func(c *apimConfig) {
		c.GatewayExtra = "  max_request_body_bytes: 1048576\n  request_headers_timeout: 2s"
	})
	admin := e.userToken("admin", e.adminPass, "apim:api_view apim:api_create apim:api_publish apim:subscribe apim:app_manage apim:sub_manage")
	api := e.publishAPIWith(admin, "Uploads", "/uploads", []string{"Unlimited"}, map[string]any{
		"operations": []map[string]any{{"target": "/files", "verb": "POST"}},
	})
	app := e.createApp(admin, "Uploader")
	e.subscribe(admin, app, api, "Unlimited")
	token := e.appToken(admin, app)
	post := func(body io.Reader, size int64) (int, string) {
		req, err := http.NewRequest("POST", e.gwURL+"/uploads/1.0.0/files", body)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = size // -1: chunked, as a stream of unknown length
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	e.eventually(10*time.Second, func() string {
		if status, body := post(strings.NewReader("small"), 5); status != 200 {
			return fmt.Sprintf("small body: %d %s", status, body)
		}
		return ""
	})
	big := strings.Repeat("x", 2<<20)
	for name, size := range map[string]int64{"by Content-Length": int64(len(big)), "streamed": -1} {
		status, body := post(strings.NewReader(big), size)
		if status != 413 || !strings.Contains(body, `"code":"413"`) || !strings.Contains(body, "1048576 bytes") {
			t.Errorf("2 MiB body %s: %d %s, want 413 with the limit", name, status, body)
		}
	}

	// Headers sent a byte every 300 ms: closed at the 2 s timeout, well
	// before they end (about 12 s).
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(e.gwURL, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	closed := false
	for _, c := range []byte("GET /uploads/1.0.0/files HTTP/1.1\r\nHost: localhost\r\nX-Slow: a\r\n\r\n") {
		if _, err := conn.Write([]byte{c}); err != nil {
			closed = true
			break
		}
		time.Sleep(300 * time.Millisecond)
		if time.Since(start) > 6*time.Second {
			break
		}
	}
	if !closed {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(conn)
		closed = err == nil && (len(b) == 0 || strings.HasPrefix(string(b), "HTTP/1.1 408"))
		if !closed {
			t.Errorf("slow headers: read %q, %v; want the connection closed by the gateway", b, err)
		}
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("slow headers held the connection %v", d)
	}
}

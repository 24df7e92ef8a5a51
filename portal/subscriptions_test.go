package portal_test

import (
	"encoding/json"
	"testing"

	"github.com/apim-dev/apim/internal/model"
)

// lastSubscriptionEvent returns the newest subscription event in the
// outbox.
func (e *env) lastSubscriptionEvent() (op string, gen int64, sub model.Subscription) {
	e.t.Helper()
	var raw []byte
	if err := e.pool.QueryRow(e.ctx, `SELECT payload FROM outbox ORDER BY id DESC LIMIT 1`).Scan(&raw); err != nil {
		e.t.Fatal(err)
	}
	var ev struct {
		Kind       string          `json:"kind"`
		Op         string          `json:"op"`
		Generation int64           `json:"generation"`
		Data       json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(raw, &ev); err != nil {
		e.t.Fatal(err)
	}
	if ev.Kind != "subscription" {
		e.t.Fatalf("last event is %s, want subscription", ev.Kind)
	}
	if err := json.Unmarshal(ev.Data, &sub); err != nil {
		e.t.Fatal(err)
	}
	return ev.Op, ev.Generation, sub
}

func TestPublisherSubscriptions(t *testing.T) {
	e := newEnv(t, 0)
	api := e.publish()
	var app struct{ ApplicationID string }
	e.must(e.call("POST", devBase+"/applications", "bob-token", `{"name":"bobapp","throttlingPolicy":"Unlimited"}`), 201, &app)
	var sub struct{ SubscriptionID string }
	e.must(e.call("POST", devBase+"/subscriptions", "bob-token",
		map[string]string{"applicationId": app.ApplicationID, "apiId": api.ID, "throttlingPolicy": "Gold"}), 201, &sub)

	type listed struct {
		Count int `json:"count"`
		List  []struct {
			SubscriptionID  string `json:"subscriptionId"`
			ApplicationInfo struct {
				ApplicationID, Name, Subscriber string
			} `json:"applicationInfo"`
			ThrottlingPolicy   string `json:"throttlingPolicy"`
			SubscriptionStatus string `json:"subscriptionStatus"`
		} `json:"list"`
		Pagination struct{ Total int } `json:"pagination"`
	}
	status := func() string {
		t.Helper()
		var l listed
		e.must(e.call("GET", pubBase+"/subscriptions?apiId="+api.ID, "admin-token", nil), 200, &l)
		if l.Count != 1 || l.Pagination.Total != 1 {
			t.Fatalf("listed %+v", l)
		}
		s := l.List[0]
		if s.SubscriptionID != sub.SubscriptionID || s.ApplicationInfo.ApplicationID != app.ApplicationID ||
			s.ApplicationInfo.Name != "bobapp" || s.ApplicationInfo.Subscriber != "bob" || s.ThrottlingPolicy != "Gold" {
			t.Errorf("listed %+v", s)
		}
		return s.SubscriptionStatus
	}
	if got := status(); got != model.SubUnblocked {
		t.Fatalf("status %s", got)
	}

	_, gen0, _ := e.lastSubscriptionEvent()
	for _, st := range []string{model.SubBlocked, model.SubProdOnlyBlocked} {
		n := e.outbox()
		r := e.call("POST", pubBase+"/subscriptions/block-subscription?subscriptionId="+sub.SubscriptionID+"&blockState="+st, "admin-token", nil)
		e.must(r, 200, nil)
		if len(r.body) != 0 {
			t.Errorf("block answered a body: %s", r.body)
		}
		if got := status(); got != st {
			t.Errorf("after block %s: status %s", st, got)
		}
		if got := e.outbox() - n; got != 1 {
			t.Errorf("block %s wrote %d outbox rows, want 1", st, got)
		}
		op, gen, ev := e.lastSubscriptionEvent()
		if op != "upsert" || gen <= gen0 || ev.ID != sub.SubscriptionID || ev.Status != st || ev.Generation != gen ||
			ev.ApplicationID != app.ApplicationID || ev.APIID != api.ID {
			t.Errorf("event %s gen %d (after %d): %+v", op, gen, gen0, ev)
		}
		gen0 = gen
	}
	// Blocking again in the same state changes nothing and emits nothing.
	n := e.outbox()
	e.must(e.call("POST", pubBase+"/subscriptions/block-subscription?subscriptionId="+sub.SubscriptionID+"&blockState=PROD_ONLY_BLOCKED", "admin-token", nil), 200, nil)
	if got := e.outbox() - n; got != 0 {
		t.Errorf("repeated block wrote %d outbox rows", got)
	}
	e.must(e.call("POST", pubBase+"/subscriptions/unblock-subscription?subscriptionId="+sub.SubscriptionID, "admin-token", nil), 200, nil)
	if got := status(); got != model.SubUnblocked {
		t.Errorf("after unblock: status %s", got)
	}
	if _, _, ev := e.lastSubscriptionEvent(); ev.Status != model.SubUnblocked {
		t.Errorf("unblock event %+v", ev)
	}

	// Bad requests and unknown ids write nothing.
	for path, want := range map[string]string{
		"/subscriptions/block-subscription?blockState=BLOCKED":                                           "subscriptionId",
		"/subscriptions/block-subscription?subscriptionId=" + sub.SubscriptionID:                         "blockState",
		"/subscriptions/block-subscription?subscriptionId=" + sub.SubscriptionID + "&blockState=ON_HOLD": "blockState",
		"/subscriptions/unblock-subscription":                                                            "subscriptionId",
	} {
		e.rejects(400, func() resp { return e.call("POST", pubBase+path, "admin-token", nil) }, want)
	}
	e.rejects(400, func() resp { return e.call("GET", pubBase+"/subscriptions", "admin-token", nil) }, "apiId")
	for _, path := range []string{
		"/subscriptions/block-subscription?subscriptionId=00000000-0000-0000-0000-000000000000&blockState=BLOCKED",
		"/subscriptions/unblock-subscription?subscriptionId=not-a-uuid",
		"/subscriptions?apiId=00000000-0000-0000-0000-000000000000",
	} {
		method := "POST"
		if path[:14] == "/subscriptions" && path[14] == '?' {
			method = "GET"
		}
		e.rejects(404, func() resp { return e.call(method, pubBase+path, "admin-token", nil) })
	}
}

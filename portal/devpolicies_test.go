package portal_test

import (
	"bytes"
	"testing"
)

// TestDevportalTiers: anyone may list the subscription and application
// tiers a subscriber picks from, as WSO2's devportal shows them.
func TestDevportalTiers(t *testing.T) {
	e := newEnv(t, 0)
	type tier struct {
		Name, PolicyLevel, QuotaPolicyType, TierPlan, TimeUnit string
		RequestCount, UnitTime                                 int64
	}
	var list struct {
		Count      int
		List       []tier
		Pagination struct{ Total int }
	}
	e.must(e.call("GET", devBase+"/throttling-policies/subscription", "", nil), 200, &list)
	names := map[string]tier{}
	for _, p := range list.List {
		names[p.Name] = p
		if p.PolicyLevel != "subscription" {
			t.Errorf("subscription list holds %+v", p)
		}
	}
	if gold, ok := names["Gold"]; !ok || gold.RequestCount == 0 || gold.QuotaPolicyType != "REQUESTCOUNT" || gold.TierPlan == "" {
		t.Errorf("subscription tiers %+v, want Gold with its limit", list.List)
	}
	e.must(e.call("GET", devBase+"/throttling-policies/application?limit=1&offset=1", "bob-token", nil), 200, &list)
	if list.Count != 1 || list.Pagination.Total < 2 || list.List[0].PolicyLevel != "application" {
		t.Errorf("application tiers page 2 of 1: %+v", list)
	}
	var gold tier
	e.must(e.call("GET", devBase+"/throttling-policies/subscription/Gold", "", nil), 200, &gold)
	if gold.Name != "Gold" || gold.UnitTime == 0 {
		t.Errorf("Gold %+v", gold)
	}
	e.rejects(404, func() resp { return e.call("GET", devBase+"/throttling-policies/subscription/Platinum", "", nil) }, "Platinum")
	e.rejects(404, func() resp { return e.call("GET", devBase+"/throttling-policies/advanced", "", nil) }, "subscription or application")
}

// TestListKeys: an application's keys are listed without their secrets,
// at WSO2's /oauth-keys and its older /keys, to the owner only.
func TestListKeys(t *testing.T) {
	e := newEnv(t, 0)
	var app struct{ ApplicationID string }
	e.must(e.call("POST", devBase+"/applications", "bob-token", `{"name":"keyed","throttlingPolicy":"Unlimited"}`), 201, &app)
	var keys struct{ ConsumerKey, ConsumerSecret string }
	e.must(e.call("POST", devBase+"/applications/"+app.ApplicationID+"/generate-keys", "bob-token",
		`{"keyType":"PRODUCTION","grantTypesToBeSupported":["client_credentials"]}`), 200, &keys)
	for _, path := range []string{"/oauth-keys", "/keys"} {
		r := e.call("GET", devBase+"/applications/"+app.ApplicationID+path, "bob-token", nil)
		var list struct {
			Count int
			List  []struct {
				ConsumerKey, KeyType, Mode string
			}
		}
		e.must(r, 200, &list)
		if list.Count != 1 || list.List[0].ConsumerKey != keys.ConsumerKey || list.List[0].KeyType != "PRODUCTION" || list.List[0].Mode != "CREATED" {
			t.Errorf("%s = %+v", path, list)
		}
		if bytes.Contains(r.body, []byte(keys.ConsumerSecret)) {
			t.Errorf("%s shows the consumer secret", path)
		}
		e.rejects(404, func() resp { return e.call("GET", devBase+"/applications/"+app.ApplicationID+path, "eve-token", nil) })
	}
}

package e2e

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestAPICtlExportImport drives WSO2's apictl through an API's export and
// import as WSO2's users promote APIs: export it, delete it, import the zip
// back and list it; import it again (refused, it exists) and with
// --update; and the gateway serves the imported API where the project said
// it was deployed.
func TestAPICtlExportImport(t *testing.T) {
	e := start(t, nil)
	admin := e.userToken("admin", e.adminPass, "apim:api_view apim:api_create apim:api_publish apim:subscribe apim:app_manage apim:sub_manage")
	e.publishAPI(admin, "Orders", "/orders", []string{"Unlimited"})

	a := e.newAPICtl()
	out := a.must("export", "api", "-n", "Orders", "-v", "1.0.0", "-e", "apim", "-k")
	m := regexp.MustCompile(`Find the exported API at (\S+\.zip)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("apictl export api did not say where the zip is:\n%s", out)
	}
	zipFile := m[1]

	a.must("delete", "api", "-n", "Orders", "-v", "1.0.0", "-e", "apim", "-k")
	if out := a.must("get", "apis", "-e", "apim", "-k"); strings.Contains(out, "Orders") {
		t.Fatalf("Orders still listed after apictl delete api:\n%s", out)
	}

	if out := a.must("import", "api", "-f", zipFile, "-e", "apim", "-k"); !strings.Contains(out, "Successfully imported API.") {
		t.Errorf("apictl import api:\n%s", out)
	}
	if out := a.must("get", "apis", "-e", "apim", "-k"); !regexp.MustCompile(`Orders\s+1\.0\.0\s+/orders`).MatchString(out) {
		t.Errorf("apictl get apis does not show the imported Orders 1.0.0 /orders:\n%s", out)
	}

	if out, err := a.run("import", "api", "-f", zipFile, "-e", "apim", "-k"); err == nil || !strings.Contains(out, "409") {
		t.Errorf("importing an existing API without --update = %v:\n%s\nwant a 409", err, out)
	}
	a.must("import", "api", "-f", zipFile, "-e", "apim", "-k", "--update")

	var list struct {
		Count int
		List  []struct{ ID, Name, LifeCycleStatus string }
	}
	e.must(200, "GET", "/api/am/publisher/v4/apis", admin, nil, &list)
	if list.Count != 1 || list.List[0].Name != "Orders" || list.List[0].LifeCycleStatus != "PUBLISHED" {
		t.Fatalf("APIs after the imports: %+v, want Orders PUBLISHED", list)
	}
	app := e.createApp(admin, "ImportedApp")
	e.subscribe(admin, app, list.List[0].ID, "Unlimited")
	token := e.appToken(admin, app)
	e.eventually(15*time.Second, func() string {
		if status, _, body, _ := e.gateway("GET", "/orders/1.0.0/items/7", token); status != 200 || !strings.Contains(body, `"path":"/backend/items/7"`) {
			return "the imported API through Envoy: " + body
		}
		return ""
	})
}

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// apictlBin is WSO2's CLI as built for the tests (../shared/tools/apictl).
var apictlBin = filepath.Join("..", "..", "shared", "tools", "apictl", "apictl")

// apictl runs WSO2's CLI against one apim, with a HOME of its own where
// it keeps its environments and tokens.
type apictl struct {
	t    testing.TB
	bin  string
	home string
}

// newAPICtl copies WSO2's CLI beside a fresh HOME and adds e's apim as the
// environment "apim", logged in as the admin.
func (e *env) newAPICtl() *apictl {
	e.t.Helper()
	src, err := filepath.Abs(apictlBin)
	if err != nil {
		e.t.Fatal(err)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		e.t.Fatalf("WSO2's apictl is not at %s: %v", src, err)
	}
	home := e.t.TempDir()
	a := &apictl{t: e.t, bin: filepath.Join(home, "apictl"), home: home}
	if err := os.WriteFile(a.bin, b, 0o755); err != nil { //nolint:gosec // the test's own temp dir; it must be executable
		e.t.Fatal(err)
	}
	a.must("add", "env", "apim", "--apim", e.apimURL)
	a.must("login", "apim", "-u", "admin", "-p", e.adminPass, "-k")
	return a
}

// run runs apictl with args, for at most a minute, and returns its
// combined output.
func (a *apictl) run(args ...string) (string, error) {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, a.bin, args...)
	cmd.Dir = a.home
	cmd.Env = append(os.Environ(), "HOME="+a.home)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// must runs apictl and fails the test unless it succeeds.
func (a *apictl) must(args ...string) string {
	a.t.Helper()
	out, err := a.run(args...)
	if err != nil {
		a.t.Fatalf("apictl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// TestAPICtl drives apim with WSO2's own CLI as a WSO2 user would: it
// lists APIs, finds one by name and version to change its lifecycle and
// list its revisions, undeploys and deletes it, and lists applications and
// rate-limiting policies.
func TestAPICtl(t *testing.T) {
	e := start(t, nil)
	admin := e.userToken("admin", e.adminPass, "apim:api_create apim:api_publish apim:api_view apim:subscribe apim:app_manage apim:sub_manage apim:admin")
	id := e.publishAPI(admin, "PetStore", "/petstore", []string{"Unlimited"})
	// A second API whose name holds the first's: finding PetStore by name
	// must not pick it.
	other := e.publishAPI(admin, "PetStoreAdmin", "/petstore-admin", []string{"Unlimited"})
	app := e.createApp(admin, "apictl-listed")
	e.subscribe(admin, app, other, "Unlimited")

	a := e.newAPICtl()
	if out := a.must("get", "apis", "-e", "apim", "-k"); !strings.Contains(out, id) || !strings.Contains(out, "PetStoreAdmin") {
		t.Errorf("apictl get apis:\n%s\nwant both APIs", out)
	}

	// change-status finds the API by name and version (unified search).
	out := a.must("change-status", "api", "-a", "Block", "-n", "PetStore", "-v", "1.0.0", "-e", "apim", "-k")
	var api struct{ LifeCycleStatus string }
	e.must(200, "GET", "/api/am/publisher/v4/apis/"+id, admin, nil, &api)
	if api.LifeCycleStatus != "BLOCKED" {
		t.Fatalf("after apictl change-status Block: %s; output:\n%s", api.LifeCycleStatus, out)
	}
	e.must(200, "GET", "/api/am/publisher/v4/apis/"+other, admin, nil, &api)
	if api.LifeCycleStatus != "PUBLISHED" {
		t.Errorf("PetStoreAdmin is %s after blocking PetStore, want PUBLISHED", api.LifeCycleStatus)
	}
	a.must("change-status", "api", "-a", "Re-Publish", "-n", "PetStore", "-v", "1.0.0", "-e", "apim", "-k")

	if out := a.must("get", "api-revisions", "-n", "PetStore", "-v", "1.0.0", "-e", "apim", "-k"); !strings.Contains(out, "Default") {
		t.Errorf("apictl get api-revisions:\n%s\nwant revision 1 deployed to Default", out)
	}
	if out := a.must("get", "apps", "-e", "apim", "-k"); !strings.Contains(out, "apictl-listed") || !strings.Contains(out, app) {
		t.Errorf("apictl get apps:\n%s\nwant the admin's application", out)
	}
	if out := a.must("get", "policies", "rate-limiting", "-e", "apim", "-k", "-q", "type:sub"); !strings.Contains(out, "Gold") || strings.Contains(out, "10PerMin") {
		t.Errorf("apictl get policies rate-limiting -q type:sub:\n%s\nwant the subscription policies only", out)
	}

	// Undeploy revision 1 from Default: the gateway stops serving it.
	served := func(want bool) func() string {
		return func() string {
			status, _, _, _ := e.gateway("GET", "/petstore/1.0.0/items/1", "")
			if (status != 404) != want {
				return fmt.Sprintf("the gateway answers %d for PetStore, want served %v", status, want)
			}
			return ""
		}
	}
	e.eventually(10*time.Second, served(true))
	a.must("undeploy", "api", "-n", "PetStore", "-v", "1.0.0", "--rev", "1", "-e", "apim", "-k")
	var revs struct {
		List []struct{ Deployments []any }
	}
	e.must(200, "GET", "/api/am/publisher/v4/apis/"+id+"/revisions", admin, nil, &revs)
	if len(revs.List) != 1 || len(revs.List[0].Deployments) != 0 {
		t.Errorf("revisions after apictl undeploy %+v, want revision 1 undeployed", revs.List)
	}
	e.eventually(10*time.Second, served(false))

	// get keys makes its application, subscribes it, generates keys and
	// prints a token that the gateway takes; a second run reuses them.
	for range 2 {
		out := strings.Fields(a.must("get", "keys", "-n", "PetStoreAdmin", "-v", "1.0.0", "-e", "apim", "-k"))
		token := out[len(out)-1]
		if status, _, body, _ := e.gateway("GET", "/petstore-admin/1.0.0/items/7", token); status != 200 {
			t.Fatalf("PetStoreAdmin with apictl's token = %d %s", status, body)
		}
	}
	a.must("delete", "api", "-n", "PetStore", "-v", "1.0.0", "-e", "apim", "-k")
	if status := e.call("GET", "/api/am/publisher/v4/apis/"+id, admin, nil, nil); status != 404 {
		t.Errorf("GET the API apictl deleted = %d, want 404", status)
	}
	// What it cannot find, it says so, and nothing else is touched.
	if out, err := a.run("delete", "api", "-n", "PetStore", "-v", "1.0.0", "-e", "apim", "-k"); err == nil || !strings.Contains(out, "not available") {
		t.Errorf("apictl delete of a deleted API = %v:\n%s\nwant it reported missing", err, out)
	}
	e.must(200, "GET", "/api/am/publisher/v4/apis/"+other, admin, nil, nil)
}

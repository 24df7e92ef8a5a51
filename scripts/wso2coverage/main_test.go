package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReport counts by method and path, whatever the parameters are named,
// and lists what is not served.
func TestReport(t *testing.T) {
	wso2, own := t.TempDir(), t.TempDir()
	write := func(dir, name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range apis {
		write(wso2, a.wso2, "paths:\n  /apis:\n    get: {}\n    post: {}\n    parameters: []\n  /apis/{apiId}/swagger:\n    get: {}\n")
		write(own, a.apim, "openapi: 3.0.3\npaths:\n  /apis:\n    get: {}\n  /apis/{id}/swagger/:\n    get: {}\n  /openapi.yaml:\n    get: {}\n")
	}
	var out strings.Builder
	if err := report(&out, wso2, own, true); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| publisher v4 | 3 | 2 | 67% |", "| all three | 9 | 6 | 67% |", "- admin v4: POST /apis\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report:\n%s\nwant it to hold %q", out.String(), want)
		}
	}
	write(wso2, apis[0].wso2, "swagger: '2.0'\n")
	if err := report(&out, wso2, own, false); err == nil || !strings.Contains(err.Error(), "no operations") {
		t.Errorf("a definition without paths: %v, want it named", err)
	}
}

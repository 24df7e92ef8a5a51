package ops

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

func TestReadyz(t *testing.T) {
	ready := NewReadiness()
	var xds atomic.Bool
	ready.Add("xds", xds.Load)
	h := Handler(ready, NewRegistry())
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "xds") {
		t.Errorf("readyz before xds = %d %q, want 503 naming xds", code, body)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("healthz = %d, want 200 while not ready", code)
	}
	xds.Store(true)
	if code, _ := get("/readyz"); code != http.StatusOK {
		t.Errorf("readyz after xds = %d, want 200", code)
	}
	if code, body := get("/metrics"); code != http.StatusOK || !strings.Contains(body, "go_goroutines") {
		t.Errorf("metrics = %d", code)
	}
}

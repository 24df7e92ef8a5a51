package e2e

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkDeployToLive measures, over 50 deploys, the time from the
// deploy-revision call's answer to the first 200 through Envoy, beside the
// baseline of the same run: one call to a route that is already live. Run it
// with -benchtime 1x: one iteration is the whole series.
func BenchmarkDeployToLive(b *testing.B) {
	for range b.N {
		deploySeries(b)
	}
}

func deploySeries(b *testing.B) {
	b.StopTimer()
	e := start(b, nil)
	admin := e.userToken("admin", e.adminPass, "apim:api_view apim:api_create apim:api_publish")
	const deploys = 50
	var took []time.Duration
	for i := range deploys {
		var api struct{ ID string }
		e.must(201, "POST", "/api/am/publisher/v4/apis", admin, map[string]any{
			"name": fmt.Sprintf("Live%d", i), "context": fmt.Sprintf("/live%d", i), "version": "1.0.0",
			"endpointConfig": map[string]any{"endpoint_type": "http", "production_endpoints": map[string]any{"url": e.backend}},
			"operations":     []map[string]any{{"target": "/ping", "verb": "GET", "authType": "None"}},
		}, &api)
		var rev struct{ ID string }
		e.must(201, "POST", "/api/am/publisher/v4/apis/"+api.ID+"/revisions", admin, map[string]any{"description": "r"}, &rev)
		e.must(201, "POST", "/api/am/publisher/v4/apis/"+api.ID+"/deploy-revision?revisionId="+rev.ID, admin,
			[]map[string]any{{"name": "Default", "vhost": "localhost", "displayOnDevportal": true}}, nil)
		start := time.Now()
		for {
			if status, _, _, _ := e.gateway("GET", fmt.Sprintf("/live%d/1.0.0/ping", i), ""); status == 200 {
				break
			}
			if time.Since(start) > 30*time.Second {
				b.Fatalf("deploy %d not live after 30s", i)
			}
			time.Sleep(2 * time.Millisecond)
		}
		took = append(took, time.Since(start))
	}
	var live []time.Duration
	for range deploys {
		start := time.Now()
		if status, _, _, _ := e.gateway("GET", "/live0/1.0.0/ping", ""); status != 200 {
			b.Fatalf("live route answered %d", status)
		}
		live = append(live, time.Since(start))
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	slices.Sort(took)
	slices.Sort(live)
	b.ReportMetric(ms(took[len(took)/2]), "p50-ms")
	b.ReportMetric(ms(took[len(took)*99/100]), "p99-ms")
	b.ReportMetric(ms(live[len(live)/2]), "live-call-p50-ms")
}

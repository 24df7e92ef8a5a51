package e2e

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkDeployToLive measures, over 50 deploys, the time from the
// deploy-revision call's answer to the first 200 through Envoy. Run it with
// -benchtime 1x: one iteration is the whole series.
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
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(took[len(took)-1].Microseconds())/1000, "max-ms")
}

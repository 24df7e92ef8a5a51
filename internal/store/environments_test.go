package store_test

import (
	"testing"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/model"
	"github.com/apim-dev/apim/internal/store"
)

// TestEnvironmentsKeepDeploymentsApart: what the xDS server builds each
// environment's snapshot from holds only that environment's deployments,
// and undeploying from one leaves the other serving.
func TestEnvironmentsKeepDeploymentsApart(t *testing.T) {
	f := newFixture(t)
	edge, err := f.s.CreateEnvironment(f.ctx, model.Environment{Name: "Edge", VHosts: []model.VHost{{Host: "edge.example.com", HTTPPort: 8281}}})
	if err != nil {
		t.Fatal(err)
	}
	ev := f.oneEvent(events.KindEnvironment, events.OpUpsert, edge.ID)
	if ev.Environment != "Edge" || edge.DisplayName != "Edge" || edge.Type != "hybrid" {
		t.Fatalf("event %+v, environment %+v", ev, edge)
	}
	names, err := f.s.Environments(f.ctx)
	if err != nil || len(names) != 2 || names[0] != "Default" || names[1] != "Edge" {
		t.Fatalf("Environments() = %v, %v", names, err)
	}

	p := petstore()
	p.Policies = []string{"Unlimited"}
	onlyEdge, other := p, p
	onlyEdge.Name, onlyEdge.Context = "EdgeOnly", "/edge-only"
	other.Name, other.Context = "Both", "/both"
	deploy := func(api model.API, envs ...string) (apiID, revID string) {
		a, err := f.s.CreateAPI(f.ctx, api)
		if err != nil {
			t.Fatal(err)
		}
		rev, err := f.s.CreateRevision(f.ctx, a.ID, "")
		if err != nil {
			t.Fatal(err)
		}
		var targets []store.EnvTarget
		for _, e := range envs {
			targets = append(targets, store.EnvTarget{Name: e})
		}
		if _, err := f.s.Deploy(f.ctx, a.ID, rev.ID, targets); err != nil {
			t.Fatal(err)
		}
		return a.ID, rev.ID
	}
	edgeID, _ := deploy(onlyEdge, "Edge")
	bothID, bothRev := deploy(other, "Default", "Edge")
	deployed := func(env string) map[string]string {
		ds, err := f.s.Deployments(f.ctx, env)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, d := range ds {
			out[d.APIID] = d.VHost
		}
		return out
	}
	if d := deployed("Default"); len(d) != 1 || d[bothID] != "localhost" {
		t.Fatalf("Default serves %v, want only Both", d)
	}
	if d := deployed("Edge"); len(d) != 2 || d[edgeID] != "edge.example.com" || d[bothID] != "edge.example.com" {
		t.Fatalf("Edge serves %v, want both APIs on its vhost", d)
	}
	if _, err := f.s.Undeploy(f.ctx, bothID, bothRev, []string{"Default"}); err != nil {
		t.Fatal(err)
	}
	if d := deployed("Default"); len(d) != 0 {
		t.Fatalf("Default serves %v after undeploy", d)
	}
	if d := deployed("Edge"); len(d) != 2 {
		t.Fatalf("Edge serves %v after undeploying Both from Default", d)
	}
	f.newEvents()
	f.failsCleanly(store.ErrConflict, []string{"gateway_environments"}, func() error { return f.s.DeleteEnvironment(f.ctx, edge.ID) })
}

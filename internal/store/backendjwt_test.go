package store_test

import (
	"encoding/json"
	"testing"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/model"
	"github.com/apim-dev/apim/internal/store"
)

// TestBackendJWTRoundTrip follows enableBackendJWT from the publisher's write
// to what the gateway and the xDS server see: the API row, the revision's
// frozen definition, the deployment event and the environment's state.
func TestBackendJWTRoundTrip(t *testing.T) {
	f := newFixture(t)
	s, ctx := f.s, f.ctx

	in := petstore()
	in.EnableBackendJWT = true
	api, err := s.CreateAPI(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if back, err := s.GetAPI(ctx, api.ID); err != nil {
		t.Fatal(err)
	} else if !back.EnableBackendJWT {
		t.Error("enableBackendJWT read back false, want true")
	}
	if ev := f.oneEvent(events.KindAPI, events.OpUpsert, api.ID); !payloadFlag(t, ev.Data, false) {
		t.Errorf("api event payload lacks enableBackendJWT: %s", ev.Data)
	}

	rev, err := s.CreateRevision(ctx, api.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	// Turning it off afterwards changes the API, not the frozen revision.
	off := *api
	off.EnableBackendJWT = false
	if _, err := s.UpdateAPI(ctx, off); err != nil {
		t.Fatal(err)
	}
	if back, err := s.GetAPI(ctx, api.ID); err != nil {
		t.Fatal(err)
	} else if back.EnableBackendJWT {
		t.Error("enableBackendJWT read back true after the update, want false")
	}
	f.newEvents()
	if _, err := s.Deploy(ctx, api.ID, rev.ID, []store.EnvTarget{{Name: model.DefaultEnvironment}}); err != nil {
		t.Fatal(err)
	}
	if ev := f.oneEvent(events.KindDeployment, events.OpUpsert, api.ID); !payloadFlag(t, ev.Data, true) {
		t.Errorf("deployment event's api lacks enableBackendJWT: %s", ev.Data)
	}
	deps, err := s.Deployments(ctx, model.DefaultEnvironment)
	if err != nil {
		t.Fatal(err)
	}
	if len(deps) != 1 || !deps[0].API.EnableBackendJWT {
		t.Errorf("xDS deployments = %+v, want the revision with enableBackendJWT", deps)
	}
	st, err := s.GatewayState(ctx, model.DefaultEnvironment)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Deployments) != 1 || !st.Deployments[0].API.EnableBackendJWT {
		t.Errorf("gateway state deployments = %+v, want the revision with enableBackendJWT", st.Deployments)
	}
}

// payloadFlag reports whether an event payload (an API, or a deployment
// when deployment is set) has enableBackendJWT true.
func payloadFlag(t *testing.T, payload json.RawMessage, deployment bool) bool {
	t.Helper()
	var api model.API
	if deployment {
		var d model.Deployment
		if err := json.Unmarshal(payload, &d); err != nil {
			t.Fatal(err)
		}
		api = d.API
	} else if err := json.Unmarshal(payload, &api); err != nil {
		t.Fatal(err)
	}
	return api.EnableBackendJWT
}

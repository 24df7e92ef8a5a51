package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/model"
	"github.com/apim-dev/apim/internal/pgtest"
	"github.com/apim-dev/apim/internal/store"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type fixture struct {
	t     *testing.T
	ctx   context.Context
	pool  *pgxpool.Pool
	s     *store.Store
	seen  int64 // highest outbox id already checked
	clock int
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	apimURL, _ := pgtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	pool, err := pgxpool.New(ctx, apimURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return &fixture{t: t, ctx: ctx, pool: pool, s: store.New(pool)}
}

// newEvents returns the outbox events appended since the last call.
func (f *fixture) newEvents() []events.Event {
	f.t.Helper()
	rows, err := f.pool.Query(f.ctx, `SELECT id, key, payload FROM outbox WHERE id > $1 ORDER BY id`, f.seen)
	if err != nil {
		f.t.Fatal(err)
	}
	var out []events.Event
	var id int64
	var key string
	var payload []byte
	_, err = pgx.ForEachRow(rows, []any{&id, &key, &payload}, func() error {
		var ev events.Event
		if err := json.Unmarshal(payload, &ev); err != nil {
			return err
		}
		if ev.Key() != key {
			f.t.Errorf("outbox key %q, event id %q", key, ev.ID)
		}
		out = append(out, ev)
		f.seen = id
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

// oneEvent requires exactly one new event of kind/op/id.
func (f *fixture) oneEvent(kind events.Kind, op events.Op, id string) events.Event {
	f.t.Helper()
	evs := f.newEvents()
	if len(evs) != 1 {
		f.t.Fatalf("want one %s %s event, got %d: %+v", kind, op, len(evs), evs)
	}
	ev := evs[0]
	if ev.Kind != kind || ev.Op != op || ev.ID != id {
		f.t.Fatalf("got event %s %s %s, want %s %s %s", ev.Kind, ev.Op, ev.ID, kind, op, id)
	}
	if ev.Generation == 0 || ev.SchemaVersion != events.SchemaVersion {
		f.t.Fatalf("event without generation or version: %+v", ev)
	}
	return ev
}

func (f *fixture) count(table string) int {
	f.t.Helper()
	var n int
	if err := f.pool.QueryRow(f.ctx, `SELECT count(*) FROM `+pgx.Identifier{table}.Sanitize()).Scan(&n); err != nil {
		f.t.Fatal(err)
	}
	return n
}

// failsCleanly runs a write that must fail with want and leave the tables
// and the outbox as they were.
func (f *fixture) failsCleanly(want error, tables []string, write func() error) {
	f.t.Helper()
	before := map[string]int{}
	for _, tb := range append(tables, "outbox") {
		before[tb] = f.count(tb)
	}
	err := write()
	if !errors.Is(err, want) {
		f.t.Fatalf("got error %v, want %v", err, want)
	}
	for _, tb := range append(tables, "outbox") {
		if n := f.count(tb); n != before[tb] {
			f.t.Errorf("%s: %d rows after a failed write, %d before", tb, n, before[tb])
		}
	}
}

func petstore() model.API {
	return model.API{
		Name: "PetStore", Description: "pets", Context: "/pets", Version: "1.0.0", Provider: "alice",
		Production: &model.Endpoint{URL: "http://prod.example:8080/v1"},
		Sandbox:    &model.Endpoint{URL: "http://sandbox.example:8080/v1"},
		Operations: []model.Operation{
			{Target: "/pets", Verb: "GET", AuthType: model.AuthApplicationUser, ThrottlingPolicy: "Unlimited"},
			{Target: "/pets/{id}", Verb: "GET", AuthType: model.AuthApplicationUser, ThrottlingPolicy: "Unlimited", Scopes: []string{"read"}},
			{Target: "/pets", Verb: "POST", AuthType: model.AuthNone, ThrottlingPolicy: "Unlimited"},
		},
		Policies: []string{"Gold", "Unlimited"},
	}
}

func TestAPILifecycleAndEvents(t *testing.T) {
	f := newFixture(t)
	ctx, s := f.ctx, f.s

	api, err := s.CreateAPI(ctx, petstore())
	if err != nil {
		t.Fatal(err)
	}
	if api.Status != model.StatusCreated {
		t.Errorf("status %s", api.Status)
	}
	ev := f.oneEvent(events.KindAPI, events.OpUpsert, api.ID)
	if ev.Generation != api.Generation {
		t.Errorf("event generation %d, row %d", ev.Generation, api.Generation)
	}
	var fromEvent model.API
	if err := json.Unmarshal(ev.Data, &fromEvent); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(*api, fromEvent); diff != "" {
		t.Errorf("event data (-api +event):\n%s", diff)
	}

	got, err := s.GetAPI(ctx, api.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(api, got); diff != "" {
		t.Errorf("GetAPI (-created +got):\n%s", diff)
	}

	// Same context and version: conflict, nothing written.
	dup := petstore()
	dup.Name = "Other"
	f.failsCleanly(store.ErrConflict, []string{"apis", "api_resources", "api_endpoints"}, func() error {
		_, err := s.CreateAPI(ctx, dup)
		return err
	})
	// Unknown subscription policy: invalid, nothing written.
	bad := petstore()
	bad.Context, bad.Name, bad.Policies = "/other", "Other", []string{"Platinum"}
	f.failsCleanly(store.ErrInvalid, []string{"apis"}, func() error {
		_, err := s.CreateAPI(ctx, bad)
		return err
	})
	// Unknown API-level or resource-level (advanced) policy: invalid, and
	// the error names it.
	for _, edit := range []func(*model.API){
		func(a *model.API) { a.APIThrottlingPolicy = "50KPerMn" },
		func(a *model.API) { a.Operations[0].ThrottlingPolicy = "50KPerMn" },
	} {
		bad := petstore()
		bad.Context, bad.Name = "/other", "Other"
		edit(&bad)
		f.failsCleanly(store.ErrInvalid, []string{"apis"}, func() error {
			_, err := s.CreateAPI(ctx, bad)
			if err != nil && !strings.Contains(err.Error(), "50KPerMn") {
				t.Errorf("error does not name the policy: %v", err)
			}
			return err
		})
	}
	// A known one is stored and read back.
	capped := petstore()
	capped.Context, capped.Name, capped.APIThrottlingPolicy = "/capped", "Capped", "50KPerMin"
	cappedAPI, err := s.CreateAPI(ctx, capped)
	if err != nil {
		t.Fatal(err)
	}
	if back, err := s.GetAPI(ctx, cappedAPI.ID); err != nil {
		t.Fatal(err)
	} else if back.APIThrottlingPolicy != "50KPerMin" {
		t.Errorf("apiThrottlingPolicy read back %q, want 50KPerMin", back.APIThrottlingPolicy)
	}
	if err := s.DeleteAPI(ctx, cappedAPI.ID); err != nil {
		t.Fatal(err)
	}
	f.newEvents()
	// Model validation: invalid, nothing written.
	f.failsCleanly(store.ErrInvalid, []string{"apis"}, func() error {
		_, err := s.CreateAPI(ctx, model.API{Provider: "alice"})
		return err
	})

	// Update bumps the generation and reorders operations.
	upd := *api
	upd.Operations = []model.Operation{upd.Operations[2], upd.Operations[0]}
	upd.Sandbox = nil
	upd.Description = "updated"
	updated, err := s.UpdateAPI(ctx, upd)
	if err != nil {
		t.Fatal(err)
	}
	if updated.Generation <= api.Generation {
		t.Errorf("generation %d after %d", updated.Generation, api.Generation)
	}
	f.oneEvent(events.KindAPI, events.OpUpsert, api.ID)
	got, err = s.GetAPI(ctx, api.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(updated, got); diff != "" {
		t.Errorf("after update (-want +got):\n%s", diff)
	}

	// Revisions: numbered, capped at five.
	var revs []*store.Revision
	for i := 1; i <= store.MaxRevisions; i++ {
		rev, err := s.CreateRevision(ctx, api.ID, "r")
		if err != nil {
			t.Fatal(err)
		}
		if rev.Number != i {
			t.Errorf("revision number %d, want %d", rev.Number, i)
		}
		revs = append(revs, rev)
	}
	f.failsCleanly(store.ErrConflict, []string{"api_revisions"}, func() error {
		_, err := s.CreateRevision(ctx, api.ID, "sixth")
		return err
	})
	if len(f.newEvents()) != 0 {
		t.Error("revisions wrote events")
	}

	// Deploy: one event per environment; unknown environment fails cleanly.
	f.failsCleanly(store.ErrInvalid, []string{"api_deployments"}, func() error {
		_, err := s.Deploy(ctx, api.ID, revs[0].ID, []store.EnvTarget{{Name: "Default"}, {Name: "Mars"}})
		if err != nil && !strings.Contains(err.Error(), `"Mars"`) {
			t.Errorf("error does not name the environment: %v", err)
		}
		return err
	})
	// A vhost Envoy cannot serve is refused here, not later in translation,
	// where it would hold back every deployment of the environment.
	f.failsCleanly(store.ErrInvalid, []string{"api_deployments"}, func() error {
		_, err := s.Deploy(ctx, api.ID, revs[0].ID, []store.EnvTarget{{Name: "Default", VHost: "a b"}})
		if err != nil && !strings.Contains(err.Error(), "vhost") {
			t.Errorf("error does not name the vhost: %v", err)
		}
		return err
	})
	deps, err := s.Deploy(ctx, api.ID, revs[0].ID, []store.EnvTarget{{Name: "Default", DisplayOnDevportal: true}})
	if err != nil {
		t.Fatal(err)
	}
	if len(deps) != 1 || deps[0].VHost != "localhost" || deps[0].RevisionID != revs[0].ID {
		t.Errorf("deployments %+v", deps)
	}
	ev = f.oneEvent(events.KindDeployment, events.OpUpsert, api.ID)
	if ev.Environment != "Default" || ev.Generation != deps[0].Generation {
		t.Errorf("deployment event %+v, row %+v", ev, deps[0])
	}
	var dep model.Deployment
	if err := json.Unmarshal(ev.Data, &dep); err != nil {
		t.Fatal(err)
	}
	if dep.RevisionID != revs[0].ID || dep.API.Description != "updated" || dep.API.Name != "PetStore" {
		t.Errorf("deployment event data %+v", dep)
	}
	// Redeploying another revision replaces it.
	if _, err := s.Deploy(ctx, api.ID, revs[1].ID, []store.EnvTarget{{Name: "Default", VHost: "gw.example"}}); err != nil {
		t.Fatal(err)
	}
	f.oneEvent(events.KindDeployment, events.OpUpsert, api.ID)
	list, err := s.Deployments(ctx, "Default")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].RevisionID != revs[1].ID || list[0].VHost != "gw.example" {
		t.Errorf("Deployments %+v", list)
	}

	// Lifecycle.
	f.failsCleanly(store.ErrInvalid, []string{"lifecycle_history"}, func() error {
		_, err := s.ChangeLifecycle(ctx, api.ID, store.ActionRetire, "alice")
		return err
	})
	ch, err := s.ChangeLifecycle(ctx, api.ID, store.ActionPublish, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if ch.Previous != model.StatusCreated || ch.Current != model.StatusPublished {
		t.Errorf("change %+v", ch)
	}
	ev = f.oneEvent(events.KindAPI, events.OpUpsert, api.ID)
	if ev.Generation != ch.API.Generation {
		t.Errorf("generation %d, want %d", ev.Generation, ch.API.Generation)
	}
	hist, err := s.LifecycleHistory(ctx, api.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]store.LifecycleEntry{{Previous: "CREATED", Post: "PUBLISHED", Actor: "alice"}}, hist); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
	list, _ = s.Deployments(ctx, "Default")
	if list[0].API.Status != model.StatusPublished {
		t.Errorf("deployed API status %s, want the API's current status", list[0].API.Status)
	}

	// Undeploy: the wrong revision fails cleanly; the right one emits a delete.
	f.failsCleanly(store.ErrInvalid, []string{"api_deployments"}, func() error {
		_, err := s.Undeploy(ctx, api.ID, revs[0].ID, []string{"Default"})
		return err
	})
	deps, err = s.Undeploy(ctx, api.ID, revs[1].ID, []string{"Default"})
	if err != nil {
		t.Fatal(err)
	}
	if len(deps) != 0 {
		t.Errorf("left deployments %+v", deps)
	}
	ev = f.oneEvent(events.KindDeployment, events.OpDelete, api.ID)
	if ev.Environment != "Default" {
		t.Errorf("undeploy event env %q", ev.Environment)
	}

	// List with a status filter.
	other := petstore()
	other.Name, other.Context = "Other", "/other"
	if _, err := s.CreateAPI(ctx, other); err != nil {
		t.Fatal(err)
	}
	f.newEvents()
	apis, total, err := s.ListAPIs(ctx, store.ListAPIsOptions{Statuses: []model.LifecycleStatus{model.StatusPublished}})
	if err != nil || total != 1 || len(apis) != 1 || apis[0].ID != api.ID {
		t.Errorf("published: %d %v %v", total, apis, err)
	}
	apis, total, err = s.ListAPIs(ctx, store.ListAPIsOptions{Limit: 1, Offset: 1})
	if err != nil || total != 2 || len(apis) != 1 || apis[0].Name != "PetStore" {
		t.Errorf("page 2: %d %v %v", total, apis, err)
	}

	// Delete: the API's event, and nothing found after.
	if err := s.DeleteAPI(ctx, api.ID); err != nil {
		t.Fatal(err)
	}
	f.oneEvent(events.KindAPI, events.OpDelete, api.ID)
	if _, err := s.GetAPI(ctx, api.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after delete: %v", err)
	}
	f.failsCleanly(store.ErrNotFound, []string{"apis"}, func() error { return s.DeleteAPI(ctx, api.ID) })
	f.failsCleanly(store.ErrNotFound, []string{"apis"}, func() error { return s.DeleteAPI(ctx, "not-a-uuid") })
}

func publishedAPI(f *fixture) *model.API {
	f.t.Helper()
	api, err := f.s.CreateAPI(f.ctx, petstore())
	if err != nil {
		f.t.Fatal(err)
	}
	rev, err := f.s.CreateRevision(f.ctx, api.ID, "")
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.s.Deploy(f.ctx, api.ID, rev.ID, []store.EnvTarget{{Name: "Default"}}); err != nil {
		f.t.Fatal(err)
	}
	ch, err := f.s.ChangeLifecycle(f.ctx, api.ID, store.ActionPublish, "alice")
	if err != nil {
		f.t.Fatal(err)
	}
	f.newEvents()
	return ch.API
}

func register(id, secret string) store.RegisterFunc {
	return func(ctx context.Context, tx pgx.Tx) (string, string, error) {
		_, err := tx.Exec(ctx, `INSERT INTO oauth_clients (client_id, secret_hash, name, owner, grant_types) VALUES ($1, 'x', 'n', 'bob', '{client_credentials}')`, id)
		return id, secret, err
	}
}

func TestApplicationsKeysSubscriptionsAndGatewayState(t *testing.T) {
	f := newFixture(t)
	ctx, s := f.ctx, f.s
	api := publishedAPI(f)

	f.failsCleanly(store.ErrInvalid, []string{"applications"}, func() error {
		_, err := s.CreateApplication(ctx, store.Application{Application: model.Application{Name: "app", Owner: "bob", ThrottlingPolicy: "Gold"}})
		return err
	})
	app, err := s.CreateApplication(ctx, store.Application{Application: model.Application{Name: "app", Owner: "bob", ThrottlingPolicy: "10PerMin"}, Description: "d"})
	if err != nil {
		t.Fatal(err)
	}
	ev := f.oneEvent(events.KindApplication, events.OpUpsert, app.ID)
	if ev.Generation != app.Generation || app.Status != "APPROVED" || app.TokenType != "JWT" {
		t.Errorf("app %+v event %+v", app, ev)
	}
	f.failsCleanly(store.ErrConflict, []string{"applications"}, func() error {
		_, err := s.CreateApplication(ctx, store.Application{Application: model.Application{Name: "app", Owner: "bob", ThrottlingPolicy: "10PerMin"}})
		return err
	})
	if _, err := s.GetApplication(ctx, app.ID, "mallory"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("another owner's application: %v", err)
	}
	got, err := s.GetApplication(ctx, app.ID, "bob")
	if err != nil || got.Description != "d" {
		t.Errorf("GetApplication %+v %v", got, err)
	}

	// Keys: the client is registered in the same transaction.
	km, secret, err := s.CreateKeyMapping(ctx, app.ID, "bob", model.KeyTypeProduction, register("ck1", "cs1"))
	if err != nil {
		t.Fatal(err)
	}
	if secret != "cs1" || km.ConsumerKey != "ck1" || km.KeyManager != store.ResidentKeyManager {
		t.Errorf("key mapping %+v %q", km, secret)
	}
	ev = f.oneEvent(events.KindKeyMapping, events.OpUpsert, km.ID)
	if strings.Contains(string(ev.Data), "cs1") {
		t.Error("the event carries the secret")
	}
	f.failsCleanly(store.ErrConflict, []string{"key_mappings", "oauth_clients"}, func() error {
		_, _, err := s.CreateKeyMapping(ctx, app.ID, "bob", model.KeyTypeProduction, register("ck2", "cs2"))
		return err
	})
	f.failsCleanly(store.ErrNotFound, []string{"key_mappings", "oauth_clients"}, func() error {
		_, _, err := s.CreateKeyMapping(ctx, app.ID, "mallory", model.KeyTypeSandbox, register("ck3", "cs3"))
		return err
	})
	// The registrar failing rolls back the client too.
	f.failsCleanly(store.ErrInvalid, []string{"key_mappings", "oauth_clients"}, func() error {
		_, _, err := s.CreateKeyMapping(ctx, app.ID, "bob", model.KeyTypeSandbox, func(ctx context.Context, tx pgx.Tx) (string, string, error) {
			if _, _, err := register("ck4", "cs4")(ctx, tx); err != nil {
				return "", "", err
			}
			return "", "", &store.Error{Kind: store.ErrInvalid, Message: "grant type unknown"}
		})
		return err
	})

	// Subscriptions.
	sub := model.Subscription{ApplicationID: app.ID, APIID: api.ID, ThrottlingPolicy: "Gold"}
	f.failsCleanly(store.ErrInvalid, []string{"subscriptions"}, func() error {
		bad := sub
		bad.ThrottlingPolicy = "Bronze"
		_, err := s.CreateSubscription(ctx, bad, "bob")
		return err
	})
	f.failsCleanly(store.ErrNotFound, []string{"subscriptions"}, func() error {
		_, err := s.CreateSubscription(ctx, sub, "mallory")
		return err
	})
	created, err := s.CreateSubscription(ctx, sub, "bob")
	if err != nil {
		t.Fatal(err)
	}
	f.oneEvent(events.KindSubscription, events.OpUpsert, created.ID)
	if created.Status != model.SubUnblocked {
		t.Errorf("status %s", created.Status)
	}
	f.failsCleanly(store.ErrConflict, []string{"subscriptions"}, func() error {
		_, err := s.CreateSubscription(ctx, sub, "bob")
		return err
	})
	subs, err := s.ListSubscriptions(ctx, store.SubscriptionFilter{ApplicationID: app.ID})
	if err != nil || len(subs) != 1 {
		t.Errorf("ListSubscriptions %v %v", subs, err)
	}

	// An API with subscriptions cannot be deleted.
	f.failsCleanly(store.ErrConflict, []string{"apis", "subscriptions", "api_deployments"}, func() error {
		return s.DeleteAPI(ctx, api.ID)
	})

	// A CREATED API is not in the devportal: subscribing to it finds nothing.
	draft := petstore()
	draft.Name, draft.Context = "Draft", "/draft"
	d, err := s.CreateAPI(ctx, draft)
	if err != nil {
		t.Fatal(err)
	}
	f.newEvents()
	f.failsCleanly(store.ErrNotFound, []string{"subscriptions"}, func() error {
		_, err := s.CreateSubscription(ctx, model.Subscription{ApplicationID: app.ID, APIID: d.ID, ThrottlingPolicy: "Gold"}, "bob")
		return err
	})

	// Policies.
	p, err := s.CreatePolicy(ctx, model.Policy{Level: model.LevelSubscription, Name: "Platinum", RequestCount: 10000, UnitTime: 1, TimeUnit: "min"})
	if err != nil {
		t.Fatal(err)
	}
	f.oneEvent(events.KindPolicy, events.OpUpsert, store.PolicyEventID(model.LevelSubscription, "Platinum"))
	f.failsCleanly(store.ErrConflict, []string{"throttling_policies"}, func() error {
		_, err := s.CreatePolicy(ctx, *p)
		return err
	})
	f.failsCleanly(store.ErrInvalid, []string{"throttling_policies"}, func() error {
		_, err := s.CreatePolicy(ctx, model.Policy{Level: model.LevelSubscription, Name: "Bad", TimeUnit: "week", UnitTime: 1})
		return err
	})

	// The gateway state holds everything written.
	st, err := s.GatewayState(ctx, "Default")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Deployments) != 1 || st.Deployments[0].APIID != api.ID || st.Deployments[0].API.Status != model.StatusPublished {
		t.Errorf("deployments %+v", st.Deployments)
	}
	if diff := cmp.Diff([]model.Application{app.Application}, st.Applications); diff != "" {
		t.Errorf("applications (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]model.KeyMapping{*km}, st.KeyMappings); diff != "" {
		t.Errorf("key mappings (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]model.Subscription{*created}, st.Subscriptions); diff != "" {
		t.Errorf("subscriptions (-want +got):\n%s", diff)
	}
	if !cmp.Equal(p, findPolicy(st.Policies, "Platinum"), cmpopts.EquateEmpty()) {
		t.Errorf("policy %+v not in state", p)
	}
	if len(st.Policies) != 14 {
		t.Errorf("%d policies, want the 13 seeded (WSO2's defaults) and Platinum", len(st.Policies))
	}

	// Deletes emit delete events for the entity and what cascades with it.
	if err := s.DeleteSubscription(ctx, created.ID, "mallory"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("delete another's subscription: %v", err)
	}
	if err := s.DeleteSubscription(ctx, created.ID, "bob"); err != nil {
		t.Fatal(err)
	}
	f.oneEvent(events.KindSubscription, events.OpDelete, created.ID)
	var deletedClients []string
	deleteClients := func(ctx context.Context, tx pgx.Tx, ids []string) error {
		deletedClients = ids
		_, err := tx.Exec(ctx, `DELETE FROM oauth_clients WHERE client_id = ANY($1)`, ids)
		return err
	}
	if err := s.DeleteApplication(ctx, app.ID, "mallory", deleteClients); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("delete another's application: %v", err)
	}
	if err := s.DeleteApplication(ctx, app.ID, "bob", deleteClients); err != nil {
		t.Fatal(err)
	}
	var clientsLeft int
	if err := f.pool.QueryRow(ctx, `SELECT count(*) FROM oauth_clients WHERE client_id = ANY($1)`, deletedClients).Scan(&clientsLeft); err != nil || len(deletedClients) != 1 || clientsLeft != 0 {
		t.Errorf("application's OAuth clients %v: %d left (%v), want 1 deleted", deletedClients, clientsLeft, err)
	}
	evs := f.newEvents()
	if len(evs) != 2 || evs[0].Kind != events.KindKeyMapping || evs[0].Op != events.OpDelete ||
		evs[1].Kind != events.KindApplication || evs[1].Op != events.OpDelete || evs[1].Generation <= evs[0].Generation {
		t.Errorf("delete application events %+v", evs)
	}
	envs, err := s.Environments(ctx)
	if err != nil || !cmp.Equal(envs, []string{"Default"}) {
		t.Errorf("Environments %v %v", envs, err)
	}
}

func findPolicy(ps []model.Policy, name string) *model.Policy {
	for i := range ps {
		if ps[i].Name == name {
			return &ps[i]
		}
	}
	return nil
}

package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/model"
	"github.com/apim-dev/apim/internal/store"
)

func testKeyManager(name, issuer string) model.KeyManager {
	return model.KeyManager{Name: name, Type: "custom", Enabled: true, Issuer: issuer, JWKSURI: issuer + "/jwks", MapConsumerApps: true}
}

// Key managers and their key mappings: each write appends its event in the
// same transaction; the gateway state carries them; a client id is unique
// per key manager only.
func TestKeyManagersStore(t *testing.T) {
	f := newFixture(t)
	ctx, s := f.ctx, f.s
	f.newEvents()

	a, err := s.CreateKeyManager(ctx, testKeyManager("A", "https://a.example"))
	if err != nil {
		t.Fatal(err)
	}
	if evs := f.newEvents(); len(evs) != 1 || evs[0].Kind != events.KindKeyManager || evs[0].ID != a.ID || evs[0].Generation != a.Generation {
		t.Errorf("create events %+v", evs)
	}
	b, err := s.CreateKeyManager(ctx, testKeyManager("B", "https://b.example"))
	if err != nil {
		t.Fatal(err)
	}
	for name, km := range map[string]model.KeyManager{
		"same name":   testKeyManager("A", "https://c.example"),
		"same issuer": testKeyManager("C", "https://a.example"),
	} {
		if _, err := s.CreateKeyManager(ctx, km); !errors.Is(err, store.ErrConflict) {
			t.Errorf("%s: %v, want ErrConflict", name, err)
		}
	}
	if _, err := s.CreateKeyManager(ctx, model.KeyManager{Name: "D"}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("invalid key manager: %v", err)
	}
	f.newEvents()

	// A resident client and the same id at A and at B: three mappings.
	app := func(name string) string {
		a, err := s.CreateApplication(ctx, store.Application{Application: model.Application{Name: name, Owner: "bob", ThrottlingPolicy: "Unlimited"}})
		if err != nil {
			t.Fatal(err)
		}
		return a.ID
	}
	resApp, aApp, bApp := app("res"), app("a"), app("b")
	if _, _, err := s.CreateKeyMapping(ctx, resApp, "bob", model.KeyTypeProduction, func(ctx context.Context, tx pgx.Tx) (string, string, error) {
		_, err := tx.Exec(ctx, `INSERT INTO oauth_clients (client_id, secret_hash, name, owner, grant_types) VALUES ('shared', 'h', 'n', 'bob', '{client_credentials}')`)
		return "shared", "secret", err
	}); err != nil {
		t.Fatal(err)
	}
	f.newEvents()
	ka, err := s.MapKeys(ctx, aApp, "bob", model.KeyTypeProduction, "A", "shared", "")
	if err != nil {
		t.Fatal(err)
	}
	if ka.KeyManagerID != a.ID || ka.KeyManager != "A" {
		t.Errorf("mapping %+v", ka)
	}
	if evs := f.newEvents(); len(evs) != 1 || evs[0].Kind != events.KindKeyMapping || evs[0].ID != ka.ID {
		t.Errorf("map events %+v", evs)
	}
	if _, err := s.MapKeys(ctx, bApp, "bob", model.KeyTypeProduction, b.ID, "shared", "secret"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.MapKeys(ctx, bApp, "bob", model.KeyTypeSandbox, "A", "shared", ""); !errors.Is(err, store.ErrConflict) {
		t.Errorf("the same client of A twice: %v, want ErrConflict", err)
	}
	f.newEvents()

	// The resident key manager's operations refuse the external mapping,
	// though its client id is a resident client's.
	_, err = s.WithKeyMapping(ctx, aApp, ka.ID, "bob", func(context.Context, pgx.Tx, *model.KeyMapping) error {
		t.Error("f called with an external key mapping")
		return nil
	})
	if !errors.Is(err, store.ErrInvalid) {
		t.Errorf("WithKeyMapping of an external mapping: %v, want ErrInvalid", err)
	}

	st, err := s.GatewayState(ctx, model.DefaultEnvironment)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.KeyManagers) != 2 || st.KeyManagers[0].Name != "A" {
		t.Errorf("gateway state key managers %+v", st.KeyManagers)
	}
	byManager := map[string]string{}
	for _, k := range st.KeyMappings {
		byManager[k.KeyManagerID] = k.ApplicationID
	}
	if byManager[""] != resApp || byManager[a.ID] != aApp || byManager[b.ID] != bApp {
		t.Errorf("gateway state key mappings %+v", st.KeyMappings)
	}

	// Deleting app a keeps the resident client "shared".
	if err := s.DeleteApplication(ctx, aApp, "bob", func(ctx context.Context, tx pgx.Tx, ids []string) error {
		if len(ids) != 0 {
			t.Errorf("deleteClients got %v; an external client is not ours to delete", ids)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	f.newEvents()

	// Disable and update B: one event each; the name stays.
	upd := testKeyManager("B", "https://b2.example")
	upd.Enabled = false
	got, err := s.UpdateKeyManager(ctx, "B", upd)
	if err != nil {
		t.Fatal(err)
	}
	if got.Enabled || got.Issuer != "https://b2.example" || got.ID != b.ID || got.Generation <= b.Generation {
		t.Errorf("updated %+v", got)
	}
	if evs := f.newEvents(); len(evs) != 1 || evs[0].Kind != events.KindKeyManager {
		t.Errorf("update events %+v", evs)
	}
	upd.Name = "B2"
	if _, err := s.UpdateKeyManager(ctx, b.ID, upd); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("rename: %v, want ErrInvalid", err)
	}
	upd.Name, upd.Issuer = "B", "https://a.example"
	if _, err := s.UpdateKeyManager(ctx, b.ID, upd); !errors.Is(err, store.ErrConflict) {
		t.Errorf("A's issuer: %v, want ErrConflict", err)
	}
	if _, err := s.MapKeys(ctx, resApp, "bob", model.KeyTypeSandbox, "B", "x", ""); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("map to a disabled key manager: %v, want ErrInvalid", err)
	}
	f.newEvents()

	// Deleting B deletes its mapping, with a delete event for each.
	if err := s.DeleteKeyManager(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	evs := f.newEvents()
	if len(evs) != 2 || evs[0].Kind != events.KindKeyMapping || evs[0].Op != events.OpDelete ||
		evs[1].Kind != events.KindKeyManager || evs[1].Op != events.OpDelete || evs[1].ID != b.ID {
		t.Errorf("delete events %+v", evs)
	}
	if keys, err := s.ListKeyMappings(ctx, bApp, "bob"); err != nil || len(keys) != 0 {
		t.Errorf("b's mappings after delete: %+v, %v", keys, err)
	}
	if _, err := s.GetKeyManager(ctx, b.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("get deleted: %v", err)
	}
	if err := s.DeleteKeyManager(ctx, b.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("delete twice: %v", err)
	}
}

package gwstate

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/model"
)

func kmEvent(t *testing.T, op events.Op, gen int64, km model.KeyManager) events.Event {
	t.Helper()
	data, err := json.Marshal(km)
	if err != nil {
		t.Fatal(err)
	}
	return events.Event{Kind: events.KindKeyManager, Op: op, ID: km.ID, Generation: gen, Data: data}
}

func kmapEvent(t *testing.T, op events.Op, gen int64, k model.KeyMapping) events.Event {
	t.Helper()
	data, err := json.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	return events.Event{Kind: events.KindKeyMapping, Op: op, ID: k.ID, Generation: gen, Data: data}
}

// Key managers load and follow events; the same client id under the
// resident key manager and two external ones names three mappings.
func TestKeyManagers(t *testing.T) {
	s := NewStore()
	s.Replace(&model.GatewayState{
		KeyManagers: []model.KeyManager{
			{ID: "km-a", Name: "A", Issuer: "https://a.example", JWKSURI: "https://a.example/jwks", Enabled: true, Generation: 5},
		},
		KeyMappings: []model.KeyMapping{
			{ID: "m-res", ApplicationID: "app-res", KeyType: model.KeyTypeProduction, ConsumerKey: "client", Generation: 5},
			{ID: "m-a", ApplicationID: "app-a", KeyType: model.KeyTypeProduction, ConsumerKey: "client", KeyManagerID: "km-a", Generation: 5},
		},
	})
	x := s.Load()
	if km, ok := x.KeyManagerByIssuer("https://a.example"); !ok || km.ID != "km-a" {
		t.Fatalf("KeyManagerByIssuer = %v, %v", km, ok)
	}
	if k, ok := x.KeyMapping("client"); !ok || k.ApplicationID != "app-res" {
		t.Errorf("resident KeyMapping(client) = %v, %v", k, ok)
	}
	if k, ok := x.ExternalKeyMapping("km-a", model.MappingKey("km-a", "client")); !ok || k.ApplicationID != "app-a" {
		t.Errorf("ExternalKeyMapping(km-a, client) = %v, %v", k, ok)
	}

	// A second key manager maps the same client id to a third app.
	if err := s.Apply(kmEvent(t, events.OpUpsert, 6, model.KeyManager{ID: "km-b", Name: "B", Issuer: "https://b.example", JWKSURI: "https://b.example/jwks", Enabled: true})); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(kmapEvent(t, events.OpUpsert, 7, model.KeyMapping{ID: "m-b", ApplicationID: "app-b", KeyType: model.KeyTypeProduction, ConsumerKey: "client", KeyManagerID: "km-b"})); err != nil {
		t.Fatal(err)
	}
	x = s.Load()
	for km, app := range map[string]string{"km-a": "app-a", "km-b": "app-b"} {
		if k, ok := x.ExternalKeyMapping(km, model.MappingKey(km, "client")); !ok || k.ApplicationID != app {
			t.Errorf("ExternalKeyMapping(%s, client) = %v, %v; want %s", km, k, ok, app)
		}
	}
	if k, ok := x.KeyMapping("client"); !ok || k.ApplicationID != "app-res" {
		t.Errorf("resident mapping changed: %v, %v", k, ok)
	}
	// A key manager's id cannot reach another's mapping.
	if _, ok := x.ExternalKeyMapping("km-b", model.MappingKey("km-a", "client")); ok {
		t.Error("km-b resolved km-a's mapping")
	}
	if got := x.Counts()[events.KindKeyManager]; got != 2 {
		t.Errorf("key managers counted %d, want 2", got)
	}
	if kms := x.KeyManagers(); len(kms) != 2 || kms[0].Name != "A" || kms[1].Name != "B" {
		t.Errorf("KeyManagers() = %v", kms)
	}

	// Disabled: its mappings stop resolving, and come back with it.
	if err := s.Apply(kmEvent(t, events.OpUpsert, 8, model.KeyManager{ID: "km-a", Name: "A", Issuer: "https://a.example", JWKSURI: "https://a.example/jwks"})); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Load().ExternalKeyMapping("km-a", model.MappingKey("km-a", "client")); ok {
		t.Error("a disabled key manager's mapping resolves")
	}
	if km, ok := s.Load().KeyManagerByIssuer("https://a.example"); !ok || km.Enabled {
		t.Errorf("disabled key manager = %v, %v", km, ok)
	}
	// A replayed older event changes nothing.
	if err := s.Apply(kmEvent(t, events.OpUpsert, 7, model.KeyManager{ID: "km-a", Name: "A", Issuer: "https://a.example", JWKSURI: "https://a.example/jwks", Enabled: true})); err != nil {
		t.Fatal(err)
	}
	if km, _ := s.Load().KeyManager("km-a"); km.Enabled {
		t.Error("an older event re-enabled the key manager")
	}
	// Deleted (with only its id): gone by id and by issuer, and the
	// tombstone keeps a late upsert out.
	if err := s.Apply(events.Event{Kind: events.KindKeyManager, Op: events.OpDelete, ID: "km-b", Generation: 9}); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(kmEvent(t, events.OpUpsert, 8, model.KeyManager{ID: "km-b", Name: "B", Issuer: "https://b.example", JWKSURI: "https://b.example/jwks", Enabled: true})); err != nil {
		t.Fatal(err)
	}
	x = s.Load()
	if _, ok := x.KeyManagerByIssuer("https://b.example"); ok {
		t.Error("deleted key manager found by issuer")
	}
	if _, ok := x.ExternalKeyMapping("km-b", model.MappingKey("km-b", "client")); ok {
		t.Error("deleted key manager's mapping resolves")
	}

	// Deleting the external mapping frees only its own slot.
	if err := s.Apply(kmapEvent(t, events.OpDelete, 10, model.KeyMapping{ID: "m-a", ConsumerKey: "client", KeyManagerID: "km-a"})); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Load().KeyMapping("client"); !ok {
		t.Error("deleting km-a's mapping removed the resident one")
	}
}

// A full load keeps key managers' tombstones and drops what it lacks.
func TestKeyManagersReplace(t *testing.T) {
	s := NewStore()
	km := model.KeyManager{ID: "km-a", Name: "A", Issuer: "https://a.example", JWKSURI: "https://a.example/jwks", Enabled: true, Generation: 3}
	s.Replace(&model.GatewayState{KeyManagers: []model.KeyManager{km}})
	s.Replace(&model.GatewayState{})
	if _, ok := s.Load().KeyManager("km-a"); ok {
		t.Error("a key manager the load lacks is still there")
	}
	if err := s.Apply(kmEvent(t, events.OpUpsert, 3, km)); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Load().KeyManager("km-a"); ok {
		t.Error("a replayed event brought back what the load removed")
	}
}

func TestKeyManagerEventErrors(t *testing.T) {
	s := NewStore()
	err := s.Apply(kmEvent(t, events.OpUpsert, 1, model.KeyManager{ID: "km-x", Name: "X"}))
	if !errors.Is(err, model.ErrRequired) {
		t.Errorf("upsert without issuer: %v, want ErrRequired", err)
	}
	err = s.Apply(events.Event{Kind: events.KindKeyManager, Op: events.OpUpsert, ID: "km-y", Generation: 2, Data: []byte(`{"issuer": 7}`)})
	if err == nil {
		t.Error("a malformed event was applied")
	}
}

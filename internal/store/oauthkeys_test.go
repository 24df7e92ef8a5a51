package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/apim-dev/apim/internal/model"
	"github.com/apim-dev/apim/internal/store"
)

func TestKeyMappingLookups(t *testing.T) {
	f := newFixture(t)
	ctx, s := f.ctx, f.s
	register := func(id string) store.RegisterFunc {
		return func(ctx context.Context, tx pgx.Tx) (string, string, error) {
			_, err := tx.Exec(ctx, `INSERT INTO oauth_clients (client_id, secret_hash, name, owner, grant_types) VALUES ($1, 'h', $1, 'bob', '{client_credentials}')`, id)
			return id, "secret", err
		}
	}
	app, err := s.CreateApplication(ctx, store.Application{Application: model.Application{Name: "app", Owner: "bob", ThrottlingPolicy: "10PerMin", TokenType: "OAUTH"}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.CreateApplication(ctx, store.Application{Application: model.Application{Name: "other", Owner: "bob", ThrottlingPolicy: "10PerMin"}})
	if err != nil {
		t.Fatal(err)
	}
	km, _, err := s.CreateKeyMapping(ctx, app.ID, "bob", model.KeyTypeProduction, register("ck-app"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CreateKeyMapping(ctx, other.ID, "bob", model.KeyTypeProduction, register("ck-other")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetApplication(ctx, app.ID, "bob"); err != nil || got.TokenType != "OAUTH" {
		t.Fatalf("application %+v, %v; want tokenType OAUTH", got, err)
	}
	if got, err := s.GetKeyMapping(ctx, app.ID, km.ID, "bob"); err != nil || got.ConsumerKey != "ck-app" {
		t.Fatalf("GetKeyMapping = %+v, %v", got, err)
	}
	// Another owner, another application's mapping, a malformed id: not
	// found, and f never runs.
	for name, c := range map[string]struct{ app, km, owner string }{
		"another owner":        {app.ID, km.ID, "mallory"},
		"another application":  {other.ID, km.ID, "bob"},
		"malformed mapping id": {app.ID, "nope", "bob"},
		"malformed app id":     {"nope", km.ID, "bob"},
	} {
		if _, err := s.GetKeyMapping(ctx, c.app, c.km, c.owner); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: GetKeyMapping = %v, want not found", name, err)
		}
		_, err := s.WithKeyMapping(ctx, c.app, c.km, c.owner, func(context.Context, pgx.Tx, *model.KeyMapping) error {
			t.Errorf("%s: f ran", name)
			return nil
		})
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: WithKeyMapping = %v, want not found", name, err)
		}
	}
	// f's writes commit with the mapping found, or roll back with its error.
	boom := errors.New("boom")
	f.failsCleanly(boom, []string{"revoked_clients"}, func() error {
		_, err := s.WithKeyMapping(ctx, app.ID, km.ID, "bob", func(ctx context.Context, tx pgx.Tx, km *model.KeyMapping) error {
			if _, err := tx.Exec(ctx, `INSERT INTO revoked_clients (client_id, issued_before, expires_at) VALUES ($1, now(), now() + interval '1 hour')`, km.ConsumerKey); err != nil {
				return err
			}
			return boom
		})
		return err
	})
	got, err := s.WithKeyMapping(ctx, app.ID, km.ID, "bob", func(ctx context.Context, tx pgx.Tx, km *model.KeyMapping) error {
		_, err := tx.Exec(ctx, `INSERT INTO revoked_clients (client_id, issued_before, expires_at) VALUES ($1, $2, $3)`,
			km.ConsumerKey, time.Unix(1_900_000_000, 0), time.Now().Add(time.Hour))
		return err
	})
	if err != nil || got.ID != km.ID || f.count("revoked_clients") != 1 {
		t.Fatalf("WithKeyMapping = %+v, %v", got, err)
	}
}

// TestGatewayStateClientRevocations checks the full state carries the
// client-wide revocations whose tokens have not all expired, beside the
// revoked jtis.
func TestGatewayStateClientRevocations(t *testing.T) {
	f := newFixture(t)
	before := time.Now().UTC().Truncate(time.Second)
	exp := before.Add(time.Hour)
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO oauth_clients (client_id, secret_hash, name, owner, grant_types) VALUES
			('live', 'h', 'live', 'bob', '{client_credentials}'), ('gone', 'h', 'gone', 'bob', '{client_credentials}')`, nil},
		{`INSERT INTO revoked_clients (client_id, issued_before, expires_at) VALUES
			('live', $1, $2), ('gone', $1, now() - interval '1 minute')`, []any{before, exp}},
		{`INSERT INTO revoked_tokens (jti, expires_at) VALUES ('j1', $1), ('x', now() - interval '1 minute')`, []any{exp}},
	} {
		if _, err := f.pool.Exec(f.ctx, q.sql, q.args...); err != nil {
			t.Fatal(err)
		}
	}
	st, err := f.s.GatewayState(f.ctx, "Default")
	if err != nil {
		t.Fatal(err)
	}
	want := []model.Revocation{{JTI: "j1", ExpiresAt: exp}, {ClientID: "live", IssuedBefore: before, ExpiresAt: exp}}
	if len(st.Revocations) != len(want) {
		t.Fatalf("revocations %+v, want %+v", st.Revocations, want)
	}
	for i, r := range st.Revocations {
		if r.JTI != want[i].JTI || r.ClientID != want[i].ClientID || !r.IssuedBefore.Equal(want[i].IssuedBefore) || !r.ExpiresAt.Equal(want[i].ExpiresAt) {
			t.Errorf("revocation %d: %+v, want %+v", i, r, want[i])
		}
	}
}

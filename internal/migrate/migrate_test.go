package migrate_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/apim-dev/apim/internal/migrate"
	"github.com/apim-dev/apim/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func tables(t *testing.T, dbURL string) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM information_schema.tables
		WHERE table_schema = 'public' AND table_name <> 'goose_db_version'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestMigrateTwiceThenDown(t *testing.T) {
	ctx := context.Background()
	apimURL, sharedURL := pgtest.Empty(t), pgtest.Empty(t)
	for i := range 2 { // the second run finds nothing to do
		if err := migrate.Migrate(ctx, apimURL, sharedURL); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	for _, db := range []struct {
		url string
		set migrate.Set
	}{{apimURL, migrate.APIM}, {sharedURL, migrate.Shared}} {
		v, err := migrate.Version(ctx, db.url, db.set)
		if err != nil {
			t.Fatal(err)
		}
		if v < 1 {
			t.Fatalf("%s version = %d", db.set, v)
		}
		if n := tables(t, db.url); n == 0 {
			t.Fatalf("%s: no tables after migrating", db.set)
		}
		if err := migrate.Reset(ctx, db.url, db.set); err != nil {
			t.Fatal(err)
		}
		if n := tables(t, db.url); n != 0 {
			t.Fatalf("%s: %d tables left after Reset", db.set, n)
		}
		if v, err := migrate.Version(ctx, db.url, db.set); err != nil || v != 0 {
			t.Fatalf("%s version after Reset = %d, %v", db.set, v, err)
		}
		// And up again from nothing.
		if err := migrate.Up(ctx, db.url, db.set); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUnknownSet(t *testing.T) {
	if _, err := migrate.Set("nope").FS(); err == nil {
		t.Fatal("unknown set accepted")
	}
}

package pgtest_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/apim-dev/apim/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestNewGivesFreshMigratedDatabases(t *testing.T) {
	ctx := context.Background()
	apim1, shared1 := pgtest.New(t)
	apim2, _ := pgtest.New(t)
	if apim1 == apim2 || apim1 == shared1 {
		t.Fatalf("databases not fresh: %s %s %s", apim1, apim2, shared1)
	}
	count := func(dbURL, sql string) int {
		t.Helper()
		conn, err := pgx.Connect(ctx, dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var n int
		if err := conn.QueryRow(ctx, sql).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	conn, err := pgx.Connect(ctx, apim1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO outbox (topic, key, payload) VALUES ('t', 'k', '{}')`); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if n := count(apim1, `SELECT count(*) FROM outbox`); n != 1 {
		t.Fatalf("outbox rows in first db = %d", n)
	}
	if n := count(apim2, `SELECT count(*) FROM outbox`); n != 0 {
		t.Fatalf("outbox rows in second db = %d, want 0 (not fresh)", n)
	}
	if n := count(shared1, `SELECT count(*) FROM organizations WHERE name = 'carbon.super'`); n != 1 {
		t.Fatalf("shared db not migrated: %d", n)
	}
}

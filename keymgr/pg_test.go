package keymgr

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/apim-dev/apim/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// newDatabases returns pools on two fresh, migrated databases: the
// API-manager database and the shared database.
func newDatabases(t testing.TB) (apim, shared *pgxpool.Pool) {
	t.Helper()
	apimURL, sharedURL := pgtest.New(t)
	return pool(t, apimURL), pool(t, sharedURL)
}

func pool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

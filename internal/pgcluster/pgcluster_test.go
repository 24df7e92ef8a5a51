package pgcluster_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/apim-dev/apim/internal/localenv"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/apim-dev/apim/internal/pgcluster"
)

func freePort(t *testing.T) int {
	t.Helper()
	ports, err := localenv.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return ports[0]
}

func TestStartCreateConnectStop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Not t.TempDir: its parent is mode 0700 and root's, which the postgres
	// user cannot traverse.
	dir, err := os.MkdirTemp("", "pgcluster-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	cfg := pgcluster.Config{Dir: dir + "/data", Port: freePort(t), Ephemeral: true, Logger: zerolog.New(zerolog.NewTestWriter(t))}

	c, err := pgcluster.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = c.Stop(context.Background())
		}
	})
	if c.Reused() {
		t.Fatal("a fresh cluster reported as reused")
	}
	if fi, err := os.Stat(cfg.Dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data dir mode: %v %v", fi.Mode(), err)
	}

	// Starting again on the same dir reuses the running server.
	again, err := pgcluster.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Reused() {
		t.Fatal("second Start did not reuse the running server")
	}
	// The same dir with another port is refused, not silently reused.
	other := cfg
	other.Port = freePort(t)
	if _, err := pgcluster.Start(ctx, other); err == nil {
		t.Fatal("Start on a running dir with another port succeeded")
	}

	for range 2 { // idempotent
		if err := c.EnsureDatabase(ctx, "apim_test-db"); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := pgx.Connect(ctx, c.URL("apim_test-db"))
	if err != nil {
		t.Fatal(err)
	}
	var db string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if db != "apim_test-db" {
		t.Fatalf("current_database() = %q", db)
	}

	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	stopped = true
	if conn, err := pgx.Connect(ctx, c.URL("postgres")); err == nil {
		conn.Close(ctx)
		t.Fatal("connected after Stop")
	}

	// A stopped cluster starts again from its existing data.
	c, err = pgcluster.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	stopped = false
	conn, err = pgx.Connect(ctx, c.URL("apim_test-db"))
	if err != nil {
		t.Fatalf("database lost across restart: %v", err)
	}
	conn.Close(ctx)
}

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/apim-dev/apim/internal/migrate"
	"github.com/apim-dev/apim/internal/pgtest"
)

// TestMigrateCommand runs `apim migrate` against two empty databases, twice.
func TestMigrateCommand(t *testing.T) {
	apimURL, sharedURL := pgtest.Empty(t), pgtest.Empty(t)
	for range 2 {
		cmd := exec.Command(apimBin, "migrate", "-profile", "control-plane")
		cmd.Env = append(os.Environ(), "APIM_DATABASE_APIM_URL="+apimURL, "APIM_DATABASE_SHARED_URL="+sharedURL,
			"APIM_KAFKA_BROKERS=127.0.0.1:1", "APIM_ADMIN_PASSWORD=x", "APIM_DATA_DIR="+t.TempDir())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("apim migrate: %v\n%s", err, out)
		}
	}
	for url, set := range map[string]migrate.Set{apimURL: migrate.APIM, sharedURL: migrate.Shared} {
		v, err := migrate.Version(context.Background(), url, set)
		if err != nil || v == 0 {
			t.Errorf("%s schema version %d, %v; want the migrations applied", set, v, err)
		}
	}
}

// TestConfigErrorsNameTheKey shows what an operator sees for a bad config.
func TestConfigErrorsNameTheKey(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "apim.yaml")
	if err := os.WriteFile(cfg, []byte("profile: gateway\ngateway:\n  listner_port: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		args []string
		env  []string
		want string
	}{
		"unknown key in the file": {args: []string{"run", "-config", cfg}, want: "field listner_port not found"},
		"bad environment value":   {args: []string{"run"}, env: []string{"APIM_GATEWAY_LISTENER_PORT=http"}, want: "APIM_GATEWAY_LISTENER_PORT: want a whole number"},
		"profile needs a key":     {args: []string{"run", "-profile", "control-plane"}, want: "database.apim_url"},
		"unknown command":         {args: []string{"serve"}, want: `unknown command "serve"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(apimBin, tc.args...)
			cmd.Env = append(os.Environ(), tc.env...)
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Errorf("apim %v = %v\n%s\nwant a failure saying %q", tc.args, err, out, tc.want)
			}
		})
	}
}

// TestRotateKeysCommand runs `apim rotate-keys` twice on a fresh database:
// each run adds a signing key and retires the one before it.
func TestRotateKeysCommand(t *testing.T) {
	apimURL, sharedURL := pgtest.New(t)
	for i := range 2 {
		cmd := exec.Command(apimBin, "rotate-keys", "-profile", "control-plane")
		cmd.Env = append(os.Environ(), "APIM_DATABASE_APIM_URL="+apimURL, "APIM_DATABASE_SHARED_URL="+sharedURL,
			"APIM_KAFKA_BROKERS=127.0.0.1:1", "APIM_ADMIN_PASSWORD=x", "APIM_DATA_DIR="+t.TempDir())
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "rotated the token signing key") {
			t.Fatalf("apim rotate-keys (run %d): %v\n%s", i+1, err, out)
		}
	}
	db, err := pgx.Connect(context.Background(), apimURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	var active, retiring int
	if err := db.QueryRow(context.Background(),
		`SELECT count(*) FILTER (WHERE retired_at IS NULL), count(*) FILTER (WHERE retired_at > now()) FROM signing_keys`).Scan(&active, &retiring); err != nil {
		t.Fatal(err)
	}
	// The first run creates the first key and rotates it; the second rotates again.
	if active != 1 || retiring != 2 {
		t.Errorf("signing keys: %d active, %d still verifying; want 1 and 2", active, retiring)
	}
}

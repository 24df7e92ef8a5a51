package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

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

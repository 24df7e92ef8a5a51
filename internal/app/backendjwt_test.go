package app

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/rs/zerolog"

	"github.com/apim-dev/apim/internal/config"
	"github.com/apim-dev/apim/internal/ops"
)

func TestBackendJWTKeyMadeOnceAndKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "backend-jwt", "key.pem")
	first, made, err := loadOrCreateRSAKey("", path)
	if err != nil || !made {
		t.Fatalf("first start: made %v, %v", made, err)
	}
	if first.key.N.BitLen() != 2048 {
		t.Errorf("%d-bit key, want 2048", first.key.N.BitLen())
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	again, made, err := loadOrCreateRSAKey("", path)
	if err != nil || made {
		t.Fatalf("second start: made %v, %v", made, err)
	}
	if !again.key.Equal(first.key) {
		t.Error("second start made a new key; want the first one kept")
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("key directory holds %d files, want the key only", len(entries))
	}
}

func TestBackendJWTKeyConfigured(t *testing.T) {
	dir := t.TempDir()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pkcs1 := filepath.Join(dir, "pkcs1.pem")
	if err := os.WriteFile(pkcs1, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
	generated := filepath.Join(dir, "gen", "key.pem")
	got, made, err := loadOrCreateRSAKey(pkcs1, generated)
	if err != nil || made || !got.key.Equal(key) {
		t.Fatalf("configured PKCS#1 key: made %v, %v", made, err)
	}
	if _, err := os.Stat(generated); !os.IsNotExist(err) {
		t.Error("a key was generated although one is configured")
	}
	for name, file := range map[string]string{"missing": filepath.Join(dir, "nope.pem"), "not PEM": writeTemp(t, dir, "junk")} {
		if _, _, err := loadOrCreateRSAKey(file, generated); err == nil || !strings.Contains(err.Error(), "gateway.backend_jwt_key") {
			t.Errorf("%s: err = %v, want one naming gateway.backend_jwt_key", name, err)
		}
	}
}

func writeTemp(t *testing.T, dir, content string) string {
	t.Helper()
	f := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// The ops listener serves the backend JWT key as a JWKS beside /healthz.
func TestBackendJWKSOnOps(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	s := &system{cfg: cfg, root: zerolog.New(zerolog.NewTestWriter(t))}
	signer, err := s.backendJWTSigner()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.opsHandler(ops.Handler(ops.NewReadiness(), ops.NewRegistry())))
	defer srv.Close()
	res, err := http.Get(srv.URL + PathBackendJWKS)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(res.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 || len(set.Keys) != 1 || set.Keys[0].KeyID != signer.KeyID() || !set.Keys[0].IsPublic() {
		t.Errorf("GET %s = %d %+v, want the public key %s", PathBackendJWKS, res.StatusCode, set.Keys, signer.KeyID())
	}
	if res, err := http.Get(srv.URL + "/healthz"); err != nil || res.StatusCode != 200 {
		t.Errorf("/healthz beside it: %v %v", res, err)
	} else {
		res.Body.Close()
	}
}

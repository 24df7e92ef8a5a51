package hydratest_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/apim-dev/apim/internal/hydratest"
	"github.com/apim-dev/apim/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestHydra starts hydra, registers a client and gets a JWT access token
// for it, as the key-manager tests do; its discovery document names the
// issuer and JWKS a key manager is registered with.
func TestHydra(t *testing.T) {
	h := hydratest.Start(t)
	c := h.CreateClient(t, "read write")
	tok := h.Token(t, c, "read")

	parts := strings.Split(tok, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Iss      string   `json:"iss"`
		ClientID string   `json:"client_id"`
		Scp      []string `json:"scp"`
		Exp      int64    `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	if claims.Iss != h.Issuer || claims.ClientID != c.ID || len(claims.Scp) != 1 || claims.Scp[0] != "read" || claims.Exp == 0 {
		t.Errorf("claims %s; want iss %s, client_id %s, scp [read], exp", payload, h.Issuer, c.ID)
	}

	resp, err := http.Get(h.WellKnown)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if doc.Issuer != h.Issuer || !strings.HasPrefix(doc.JWKSURI, h.Issuer+"/") {
		t.Errorf("discovery: issuer %q, jwks_uri %q", doc.Issuer, doc.JWKSURI)
	}
}

// TestBinaryIsBuiltOnce: a second call finds the binary built and only
// checks its stamp.
func TestBinaryIsBuiltOnce(t *testing.T) {
	ctx := context.Background()
	first, err := hydratest.Binary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	second, err := hydratest.Binary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if first != second {
		t.Errorf("Binary() = %s, then %s", first, second)
	}
	t.Logf("second Binary() call: %s", time.Since(start))
}

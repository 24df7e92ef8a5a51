package jwks

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
)

func TestFetch(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := json.Marshal(map[string]any{"keys": []any{
		jose.JSONWebKey{Key: &rsaKey.PublicKey, KeyID: "rsa", Use: "sig", Algorithm: "RS256"},
		jose.JSONWebKey{Key: &ecKey.PublicKey, KeyID: "ec", Algorithm: "ES256"},
		jose.JSONWebKey{Key: &rsaKey.PublicKey, KeyID: "enc", Use: "enc"},        // not for signatures
		jose.JSONWebKey{Key: rsaKey, KeyID: "private", Use: "sig"},               // a private key published by mistake
		map[string]any{"kty": "OKP", "crv": "X448", "kid": "unknown", "x": "AA"}, // a type we cannot use
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/jwks":
			w.Write(doc)
		case "/big":
			w.Write([]byte(`{"keys":[` + strings.Repeat(" ", MaxBytes) + `]}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	ctx := context.Background()

	keys, err := Fetch(ctx, srv.Client(), srv.URL+"/jwks")
	if err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range keys {
		kids = append(kids, k.KeyID)
	}
	if strings.Join(kids, ",") != "rsa,ec" {
		t.Errorf("keys %v, want the two public signing keys", kids)
	}
	for path, want := range map[string]string{"/missing": "status 404", "/big": "parse jwks"} {
		if _, err := Fetch(ctx, srv.Client(), srv.URL+path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Fetch %s = %v, want an error with %q", path, err, want)
		}
	}
}

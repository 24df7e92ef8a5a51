package authz

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/rs/zerolog"
)

// BenchmarkCheckExternal measures a token of an external key manager: warm
// (from the verified-token cache) and cold (parse, claims by the key
// manager's mapping, signature), with the RSA-2048 key of the tests and
// the RSA-4096 key Ory Hydra signs with.
func BenchmarkCheckExternal(b *testing.B) {
	p := newExtProvider(b)
	s := newExtServer(b, p)
	s.log = zerolog.Nop()
	ctx := context.Background()
	claims := hydraClaims(idpIssuer, "ck-prod", map[string]any{"jti": strings.Repeat("j", 36)})

	b.Run("warm-cache", func(b *testing.B) {
		benchAllowed(b, s, request("api-ext", "Bearer "+sign(b, jose.RS256, p.rsa, "ext-rsa", claims), map[string]string{ExtScopes: "read:pets"}))
	})
	big, err := rsa.GenerateKey(rand.Reader, 4096)
	if err != nil {
		b.Fatal(err)
	}
	for _, k := range []struct {
		name string
		key  *rsa.PrivateKey
	}{{"cold-rs256-2048", p.rsa}, {"cold-rs256-4096", big}} {
		b.Run(k.name, func(b *testing.B) {
			p.rsa = k.key // the JWKS serves it from the next fetch on
			for _, set := range *s.ext.sets.Load() {
				if err := set.jwks.Refresh(ctx); err != nil {
					b.Fatal(err)
				}
			}
			tok := sign(b, jose.RS256, k.key, "ext-rsa", claims)
			key := tokenKey(sha256.Sum256([]byte(tok)))
			now := testNow
			if _, err := s.verify(tok, &key, now, false); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.verify(tok, &key, now, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

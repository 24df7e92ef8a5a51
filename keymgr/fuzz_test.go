package keymgr

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func testKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, rsaBits)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// FuzzVerifyToken: no input panics, and whatever verifies speaks for exactly
// what the genuine token does (a mutation can at most hit an equivalent
// encoding of the same signed content).
func FuzzVerifyToken(f *testing.F) {
	const iss = "https://localhost:9443/oauth2/token"
	key := testKey(f)
	ks := newKeySet(signingKey{kid: "k1", priv: key})
	good := signTest(f, key, "k1", validClaims(iss))
	want, err := ks.verifyToken(good, iss, time.Now())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)-2])
	f.Add(strings.Replace(good, ".", "..", 1))
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := ks.verifyToken(raw, iss, time.Now())
		if err != nil {
			if !errors.Is(err, ErrTokenMalformed) && !errors.Is(err, ErrTokenSignature) && !errors.Is(err, ErrTokenClaims) {
				t.Fatalf("error outside the sentinels: %v", err)
			}
			return
		}
		if p.Subject != want.Subject || p.ClientID != want.ClientID || !slices.Equal(p.Scopes, want.Scopes) || !p.ExpiresAt.Equal(want.ExpiresAt) {
			t.Fatalf("forged principal %+v from %q", p, raw)
		}
	})
}

// FuzzDecodeRegistration: no body panics, and an accepted body has a name
// and only known grant types.
func FuzzDecodeRegistration(f *testing.F) {
	f.Add(publisherDCR)
	f.Add(`{"clientName":"a"}`)
	f.Add(`{"clientName":"a","grantType":"  "}`)
	f.Add(`{"clientName":"a"} x`)
	f.Add(`{"clientName":"a","unknown":1}`)
	f.Add(`null`)
	f.Fuzz(func(t *testing.T, body string) {
		reg, grants, err := decodeRegistration(strings.NewReader(body))
		if err != nil {
			return
		}
		if strings.TrimSpace(reg.ClientName) == "" || len(grants) == 0 {
			t.Fatalf("accepted %q as %+v %v", body, reg, grants)
		}
		if err := validateGrantTypes(grants); err != nil {
			t.Fatalf("accepted %q with %v", body, err)
		}
	})
}

// FuzzSecretHasher: a secret matches its own hash and no other secret's.
func FuzzSecretHasher(f *testing.F) {
	f.Add("s3cr3t", "s3cr3t")
	f.Add("a", "b")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, secret, other string) {
		ctx := context.Background()
		var h sha256Hasher
		hash, err := h.Hash(ctx, []byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Compare(ctx, hash, []byte(secret)); err != nil {
			t.Fatalf("secret does not match its hash: %v", err)
		}
		if err := h.Compare(ctx, hash, []byte(other)); (err == nil) != (secret == other) {
			t.Fatalf("Compare(hash(%q), %q) = %v", secret, other, err)
		}
	})
}

func TestGrantScopes(t *testing.T) {
	allowed := map[string]bool{"a": true, "b": true, DefaultScope: true}
	tests := map[string]struct {
		requested, want []string
	}{
		"keeps order, drops unknown": {[]string{"b", "x", "a"}, []string{"b", "a"}},
		"dedupes":                    {[]string{"a", "a"}, []string{"a"}},
		"nothing allowed":            {[]string{"x"}, []string{DefaultScope}},
		"nothing requested":          {nil, []string{DefaultScope}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := grantScopes(tc.requested, allowed); !slices.Equal(got, tc.want) {
				t.Errorf("grantScopes(%v) = %v, want %v", tc.requested, got, tc.want)
			}
		})
	}
}

package model

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestKeyManagerValidate(t *testing.T) {
	ok := KeyManager{Name: "Hydra", Type: "Hydra", Issuer: "http://127.0.0.1:4444", JWKSURI: "http://127.0.0.1:4444/.well-known/jwks.json"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid key manager: %v", err)
	}
	tests := map[string]struct {
		edit func(*KeyManager)
		want string
	}{
		"no name":           {func(k *KeyManager) { k.Name = "" }, "name is required"},
		"spaces":            {func(k *KeyManager) { k.Name = " Hydra" }, "name is invalid"},
		"resident":          {func(k *KeyManager) { k.Name = "resident key manager" }, "name is invalid"},
		"no type":           {func(k *KeyManager) { k.Type = " " }, "type is required"},
		"relative issuer":   {func(k *KeyManager) { k.Issuer = "/issuer" }, "issuer is invalid"},
		"no jwks":           {func(k *KeyManager) { k.JWKSURI = "" }, "certificates.value is required"},
		"file jwks":         {func(k *KeyManager) { k.JWKSURI = "file:///etc/passwd" }, "certificates.value is invalid"},
		"jwks with user":    {func(k *KeyManager) { k.JWKSURI = "https://u:p@idp.example/jwks" }, "certificates.value is invalid"},
		"claim with spaces": {func(k *KeyManager) { k.ScopesClaim = "scp " }, "scopesClaim is invalid"},
		"local twice": {func(k *KeyManager) {
			k.ClaimMapping = []ClaimMapping{{"a", "scope"}, {"b", "scope"}}
		}, "claimMapping[1].localClaim is invalid"},
	}
	for name, tc := range tests {
		k := ok
		tc.edit(&k)
		err := k.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
		if err != nil && !errors.Is(err, ErrRequired) && !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v wraps no sentinel", name, err)
		}
	}
}

func TestKeyManagerClaims(t *testing.T) {
	var k KeyManager
	if got := k.ClientIDClaims(); !slices.Equal(got, []string{"azp", "client_id"}) || k.ScopesClaimName() != "scope" {
		t.Errorf("defaults: %v %q", got, k.ScopesClaimName())
	}
	k.ClaimMapping = []ClaimMapping{{Remote: "cid", Local: "client_id"}, {Remote: "scp", Local: "scope"}}
	if got := k.ClientIDClaims(); !slices.Equal(got, []string{"cid"}) || k.ScopesClaimName() != "scp" {
		t.Errorf("mapped: %v %q", got, k.ScopesClaimName())
	}
	k.ConsumerKeyClaim, k.ScopesClaim = "appid", "roles"
	if got := k.ClientIDClaims(); !slices.Equal(got, []string{"appid"}) || k.ScopesClaimName() != "roles" {
		t.Errorf("explicit: %v %q", got, k.ScopesClaimName())
	}
	if MappingKey("", "c") != "c" || MappingKey("km", "c") == MappingKey("", "c") || MappingKey("km1", "c") == MappingKey("km2", "c") {
		t.Error("MappingKey does not separate key managers")
	}
}

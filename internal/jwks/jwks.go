// Package jwks fetches JSON Web Key Sets, for the gateway (the key
// manager's and the external key managers' signing keys) and for the key
// manager (the issuers of jwt-bearer assertions).
package jwks

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/go-jose/go-jose/v4"
)

// MaxBytes bounds a JWKS document; the rest is not read.
const MaxBytes = 1 << 20

// Fetch gets the set at url with client and returns its public signing
// keys (Parse). ctx bounds the whole fetch.
func Fetch(ctx context.Context, client *http.Client, url string) ([]jose.JSONWebKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", url, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch jwks %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch jwks %s: status %d", url, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxBytes))
	if err != nil {
		return nil, fmt.Errorf("read jwks %s: %w", url, err)
	}
	keys, err := Parse(body)
	if err != nil {
		return nil, fmt.Errorf("parse jwks %s: %w", url, err)
	}
	return keys, nil
}

// Parse returns the public signing keys of a JWKS document. A key that
// does not parse (a type we cannot use), is private, is not for signatures
// or is not valid is skipped: it does not spoil the others.
func Parse(body []byte) ([]jose.JSONWebKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, err
	}
	keys := make([]jose.JSONWebKey, 0, len(set.Keys))
	for _, raw := range set.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil {
			continue
		}
		if (k.Use != "" && k.Use != "sig") || !k.IsPublic() || !k.Valid() {
			continue
		}
		keys = append(keys, k)
	}
	return keys, nil
}

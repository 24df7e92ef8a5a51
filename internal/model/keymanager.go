package model

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// ResidentKeyManager is the name of the built-in key manager, whose clients
// key mappings name without a key manager id.
const ResidentKeyManager = "Resident Key Manager"

// CertificatesJWKS is the only type of KeyManager certificates the gateway
// uses: a JWKS URL. WSO2's PEM is refused.
const CertificatesJWKS = "JWKS"

// Default claims of an external key manager's access tokens: the client id
// is in azp, else client_id; the scopes in scope (a space-separated string
// or an array).
var (
	DefaultClientIDClaims = []string{"azp", "client_id"}
	DefaultScopesClaim    = "scope"
)

// Local claims a claimMapping entry can map a remote claim to, so that the
// gateway reads the client id or the scopes from it.
const (
	LocalClaimClientID = "client_id"
	LocalClaimAzp      = "azp"
	LocalClaimScope    = "scope"
)

// KeyManager is an external OAuth2/OIDC provider whose access tokens (JWTs)
// the gateways accept, as WSO2's KeyManager: its issuer, the JWKS that
// verifies them, and which claims carry the client id and the scopes.
type KeyManager struct {
	ID                string         `json:"id"`
	Name              string         `json:"name"`
	DisplayName       string         `json:"displayName,omitempty"`
	Type              string         `json:"type"`
	Description       string         `json:"description,omitempty"`
	Enabled           bool           `json:"enabled"`
	Issuer            string         `json:"issuer"`
	WellKnownEndpoint string         `json:"wellKnownEndpoint,omitempty"`
	JWKSURI           string         `json:"jwksUri"`
	ConsumerKeyClaim  string         `json:"consumerKeyClaim,omitempty"`
	ScopesClaim       string         `json:"scopesClaim,omitempty"`
	ClaimMapping      []ClaimMapping `json:"claimMapping,omitempty"`
	// MapConsumerApps is WSO2's enableMapOAuthConsumerApps: developers may
	// map their clients at this provider to applications.
	MapConsumerApps bool `json:"enableMapOAuthConsumerApps"`
	// Endpoints are the provider's endpoints as its discovery document
	// names them (token_endpoint, revocation_endpoint, ...), for display.
	Endpoints  map[string]string `json:"endpoints,omitempty"`
	Generation int64             `json:"generation"`
}

// ClaimMapping maps a claim of the provider's tokens to a local claim.
type ClaimMapping struct {
	Remote string `json:"remoteClaim"`
	Local  string `json:"localClaim"`
}

// Validate reports every problem of k, each naming its WSO2 field.
func (k *KeyManager) Validate() error {
	var errs []error
	field := func(name string, err error) { errs = append(errs, fmt.Errorf("%s %w", name, err)) }
	switch name := strings.TrimSpace(k.Name); {
	case name == "":
		field("name", ErrRequired)
	case name != k.Name || len(name) > 100 || strings.ContainsFunc(name, func(r rune) bool { return r < ' ' || r == 0x7f }):
		field("name", fmt.Errorf("%w: at most 100 printable characters without surrounding spaces", ErrInvalid))
	case strings.EqualFold(name, ResidentKeyManager) || strings.EqualFold(name, "Default"):
		field("name", fmt.Errorf("%w: %q is the resident key manager's", ErrInvalid, name))
	}
	if strings.TrimSpace(k.Type) == "" {
		field("type", ErrRequired)
	}
	if k.Issuer == "" {
		field("issuer", ErrRequired)
	} else if u, err := url.Parse(k.Issuer); err != nil || !u.IsAbs() || u.Host == "" || u.Fragment != "" {
		field("issuer", fmt.Errorf("%w: want an absolute URL, got %q", ErrInvalid, k.Issuer))
	}
	if k.JWKSURI == "" {
		field("certificates.value", ErrRequired)
	} else if err := ValidateFetchURL(k.JWKSURI); err != nil {
		field("certificates.value", err)
	}
	for _, c := range []struct{ name, v string }{{"consumerKeyClaim", k.ConsumerKeyClaim}, {"scopesClaim", k.ScopesClaim}} {
		if c.v != strings.TrimSpace(c.v) {
			field(c.name, fmt.Errorf("%w: surrounding spaces", ErrInvalid))
		}
	}
	seen := map[string]bool{}
	for i, m := range k.ClaimMapping {
		prefix := fmt.Sprintf("claimMapping[%d].", i)
		if strings.TrimSpace(m.Remote) == "" {
			field(prefix+"remoteClaim", ErrRequired)
		}
		if strings.TrimSpace(m.Local) == "" {
			field(prefix+"localClaim", ErrRequired)
		} else if seen[m.Local] {
			field(prefix+"localClaim", fmt.Errorf("%w: %q is mapped twice", ErrInvalid, m.Local))
		}
		seen[m.Local] = true
	}
	if seen[LocalClaimClientID] && seen[LocalClaimAzp] {
		field("claimMapping", fmt.Errorf("%w: map client_id or azp, not both", ErrInvalid))
	}
	return errors.Join(errs...)
}

// ValidateFetchURL checks that u is an absolute http(s) URL the control
// plane or a gateway may fetch: a host, no user info, no fragment.
func ValidateFetchURL(u string) error {
	if u == "" {
		return ErrRequired
	}
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Hostname() == "" || p.User != nil || p.Fragment != "" {
		return fmt.Errorf("%w: want an absolute http or https URL, got %q", ErrInvalid, u)
	}
	return nil
}

// ClientIDClaims are the claims that carry the client id of the provider's
// tokens, in the order they are tried: consumerKeyClaim alone when set,
// else the remote claim mapped to client_id (or azp), else
// DefaultClientIDClaims.
func (k *KeyManager) ClientIDClaims() []string {
	if k.ConsumerKeyClaim != "" {
		return []string{k.ConsumerKeyClaim}
	}
	for _, m := range k.ClaimMapping {
		if m.Local == LocalClaimClientID || m.Local == LocalClaimAzp {
			return []string{m.Remote}
		}
	}
	return DefaultClientIDClaims
}

// ScopesClaimName is the claim that carries the scopes of the provider's
// tokens: scopesClaim when set, else the remote claim mapped to scope, else
// DefaultScopesClaim.
func (k *KeyManager) ScopesClaimName() string {
	if k.ScopesClaim != "" {
		return k.ScopesClaim
	}
	for _, m := range k.ClaimMapping {
		if m.Local == LocalClaimScope {
			return m.Remote
		}
	}
	return DefaultScopesClaim
}

// MappingKey is the key under which the gateway keeps a key mapping: the
// consumer key itself for the resident key manager (keyManagerID ""), and
// the key manager's id, a NUL and the client id for an external one, so
// that the same client id at two providers, or at one provider and here,
// never names the same mapping.
func MappingKey(keyManagerID, consumerKey string) string {
	if keyManagerID == "" {
		return consumerKey
	}
	return keyManagerID + "\x00" + consumerKey
}

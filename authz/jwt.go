package authz

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
)

// maxTokenLen bounds the access tokens the parser accepts; Envoy's own
// header limit is larger, but no token of ours comes near it.
const maxTokenLen = 8 << 10

// Errors of token parsing and verification. Callers map them all to one
// "Invalid Credentials" answer; they exist for tests and debug logs.
var (
	errMalformed = errors.New("malformed token")
	errAlg       = errors.New("unsupported alg")
	errKid       = errors.New("unknown kid")
	errSignature = errors.New("bad signature")

	errIssuer      = errors.New("issuer not accepted")
	errNoExpiry    = errors.New("no exp")
	errExpired     = errors.New("expired")
	errNotYetValid = errors.New("not yet valid")
	errNoClientID  = errors.New("no client id")
	errKindToken   = errors.New("not an api key")
	errIDToken     = errors.New("an ID token, not an access token")
	errAPIKeyClaim = errors.New("api key without application, key type or jti")
)

// jwt is a parsed, not yet verified, compact JWS.
type jwt struct {
	alg, kid     string
	signingInput string // header.payload, as signed
	payload      []byte // decoded
	sig          []byte
	claims       claims
}

type claims struct {
	Issuer    string   `json:"iss"`
	Subject   string   `json:"sub"`
	Azp       string   `json:"azp"`
	ClientID  string   `json:"client_id"`
	Audience  audience `json:"aud"`
	Expiry    *number  `json:"exp"`
	NotBefore *number  `json:"nbf"`
	IssuedAt  *number  `json:"iat"`
	Scope     string   `json:"scope"`
	JTI       string   `json:"jti"`

	// API keys' claims (keymgr.SignAPIKey).
	TokenType        string // token_type; "apiKey" for an API key
	KeyType          string // keytype: PRODUCTION or SANDBOX
	AppID            string // application.id
	PermittedIP      string // comma-separated addresses and CIDR ranges
	PermittedReferer string // comma-separated patterns with * wildcards
}

// tokenTypeAPIKey is the token_type claim of an API key.
const tokenTypeAPIKey = "apiKey"

// number is a NumericDate: seconds, possibly fractional.
type number float64

// audience is the aud claim: one string or an array of them.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*a = audience{s}
		return nil
	}
	var ss []string
	if err := json.Unmarshal(b, &ss); err != nil {
		return err
	}
	*a = ss
	return nil
}

// issuedAt is the iat claim in whole seconds, 0 when absent.
func (c *claims) issuedAt() int64 {
	if c.IssuedAt == nil {
		return 0
	}
	return int64(*c.IssuedAt)
}

// clientID is the OAuth client the token was issued to: azp, else
// client_id, else aud when it names exactly one party.
func (c *claims) clientID() string {
	switch {
	case c.Azp != "":
		return c.Azp
	case c.ClientID != "":
		return c.ClientID
	case len(c.Audience) == 1:
		return c.Audience[0]
	}
	return ""
}

var b64 = base64.RawURLEncoding

// parseJWT splits and decodes a compact JWS without verifying it.
func parseJWT(token string) (*jwt, error) {
	if len(token) > maxTokenLen {
		return nil, errMalformed
	}
	h, rest, ok := strings.Cut(token, ".")
	if !ok {
		return nil, errMalformed
	}
	p, s, ok := strings.Cut(rest, ".")
	if !ok || strings.IndexByte(s, '.') >= 0 || h == "" || p == "" || s == "" {
		return nil, errMalformed
	}
	buf := make([]byte, b64.DecodedLen(len(h))+b64.DecodedLen(len(p))+b64.DecodedLen(len(s)))
	hb, err := decodeSeg(buf, h)
	if err != nil {
		return nil, err
	}
	buf = buf[len(hb):]
	pb, err := decodeSeg(buf, p)
	if err != nil {
		return nil, err
	}
	buf = buf[len(pb):]
	sig, err := decodeSeg(buf, s)
	if err != nil {
		return nil, err
	}
	alg, kid, err := parseHeader(hb)
	if err != nil {
		return nil, errMalformed
	}
	t := &jwt{alg: alg, kid: kid, signingInput: token[:len(h)+1+len(p)], payload: pb, sig: sig}
	if err := parseClaims(pb, &t.claims); err != nil {
		return nil, errMalformed
	}
	return t, nil
}

func decodeSeg(dst []byte, seg string) ([]byte, error) {
	n, err := b64.Decode(dst, []byte(seg))
	if err != nil {
		return nil, errMalformed
	}
	return dst[:n:n], nil
}

// verify checks the RS256 signature of t with the key keys hold for its kid.
func (t *jwt) verify(keys Keys) error {
	pub, err := t.key(keys)
	if err != nil {
		return err
	}
	return t.verifyWith(pub)
}

// key returns the key that verifies t: its alg must be RS256 and its kid
// one keys hold an RSA key for.
func (t *jwt) key(keys Keys) (*rsa.PublicKey, error) {
	if t.alg != "RS256" {
		return nil, errAlg
	}
	if t.kid == "" {
		return nil, errKid
	}
	k, ok := keys.Key(t.kid)
	if !ok {
		return nil, errKid
	}
	pub, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, errKid
	}
	return pub, nil
}

// verifyWith checks the RS256 signature of t with pub: the one expensive
// step of a check.
func (t *jwt) verifyWith(pub *rsa.PublicKey) error {
	digest := sha256.Sum256([]byte(t.signingInput))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], t.sig); err != nil {
		return errSignature
	}
	return nil
}

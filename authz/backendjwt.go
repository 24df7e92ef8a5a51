package authz

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/go-jose/go-jose/v4"

	"github.com/apim-dev/apim/internal/model"
)

// The backend JWT is WSO2's: when an API enables it (the route's
// ExtBackendJWT), every request the gateway allows reaches the backend with
// an X-JWT-Assertion header holding a JWT that the sidecar signs (RS256)
// and that describes the caller with WSO2's claims. It is built once per
// verified token and API, with the rest of the allowed response (okMemo),
// so the warm path neither signs nor allocates; it expires with the access
// token. A client's own X-JWT-Assertion never reaches the backend of such
// an API: ext_authz overwrites it, and removes it on the API's resources
// that need no credential.

// ExtBackendJWT, "true" on a route, has Check add the backend JWT to the
// requests it allows (xds CtxBackendJWT).
const ExtBackendJWT = "backend_jwt"

// HeaderJWTAssertion is WSO2's request header of the backend JWT.
const HeaderJWTAssertion = "x-jwt-assertion"

// DefaultBackendJWTIssuer is the iss of WSO2's backend JWTs.
const DefaultBackendJWTIssuer = "wso2.org/products/am"

// WSO2's claims of the backend JWT (the http://wso2.org/claims dialect).
const (
	ClaimSubscriber      = "http://wso2.org/claims/subscriber"
	ClaimApplicationID   = "http://wso2.org/claims/applicationid"
	ClaimApplicationName = "http://wso2.org/claims/applicationname"
	ClaimApplicationTier = "http://wso2.org/claims/applicationtier"
	ClaimAPIContext      = "http://wso2.org/claims/apicontext"
	ClaimVersion         = "http://wso2.org/claims/version"
	ClaimTier            = "http://wso2.org/claims/tier"
	ClaimKeyType         = "http://wso2.org/claims/keytype"
	ClaimUserType        = "http://wso2.org/claims/usertype"
	ClaimEndUser         = "http://wso2.org/claims/enduser"
)

// Values of ClaimUserType, as WSO2's aut claim spells them: a token of the
// application itself (client credentials, API keys) or of a user of it.
const (
	UserTypeApplication     = "APPLICATION"
	UserTypeApplicationUser = "APPLICATION_USER"
)

// BackendJWTConfig configures the signer of backend JWTs.
type BackendJWTConfig struct {
	// Key signs the JWTs: RSA, at least 2048 bits. Required.
	Key *rsa.PrivateKey
	// Issuer is the iss claim; default DefaultBackendJWTIssuer.
	Issuer string
}

// BackendJWTSigner signs backend JWTs and publishes the key that verifies
// them as a JWKS.
type BackendJWTSigner struct {
	key    *rsa.PrivateKey
	kid    string
	issuer string
	header string // the encoded JOSE header and its dot, the same for every JWT
	jwks   []byte // the JWKS document
}

// NewBackendJWTSigner returns a signer, or an error saying what is wrong
// with the key.
func NewBackendJWTSigner(cfg BackendJWTConfig) (*BackendJWTSigner, error) {
	if cfg.Key == nil {
		return nil, errors.New("backend jwt: key is required")
	}
	if bits := cfg.Key.N.BitLen(); bits < 2048 {
		return nil, fmt.Errorf("backend jwt: the RSA key has %d bits, want at least 2048", bits)
	}
	if err := cfg.Key.Validate(); err != nil {
		return nil, fmt.Errorf("backend jwt: invalid RSA key: %w", err)
	}
	if cfg.Issuer == "" {
		cfg.Issuer = DefaultBackendJWTIssuer
	}
	pub := &cfg.Key.PublicKey
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("backend jwt: key thumbprint: %w", err)
	}
	kid := base64.RawURLEncoding.EncodeToString(tp) // RFC 7638, as the key manager's kids
	header, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Typ string `json:"typ"`
		Kid string `json:"kid"`
	}{"RS256", "JWT", kid})
	if err != nil {
		return nil, fmt.Errorf("backend jwt: header: %w", err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key: pub, KeyID: kid, Use: "sig", Algorithm: string(jose.RS256),
	}}})
	if err != nil {
		return nil, fmt.Errorf("backend jwt: jwks: %w", err)
	}
	return &BackendJWTSigner{
		key: cfg.Key, kid: kid, issuer: cfg.Issuer,
		header: base64.RawURLEncoding.EncodeToString(header) + ".", jwks: jwks,
	}, nil
}

// KeyID is the kid of the JWTs: the RFC 7638 thumbprint of the public key.
func (s *BackendJWTSigner) KeyID() string { return s.kid }

// JWKSHandler serves the public key as a JWKS (RFC 7517), for backends
// that verify the JWTs.
func (s *BackendJWTSigner) JWKSHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		_, _ = w.Write(s.jwks) // a failed write means the client went away
	})
}

// backendClaims is the payload of a backend JWT, in WSO2's claim names.
type backendClaims struct {
	Issuer          string `json:"iss"`
	IssuedAt        int64  `json:"iat"`
	Expiry          int64  `json:"exp"`
	Subscriber      string `json:"http://wso2.org/claims/subscriber"`
	ApplicationID   string `json:"http://wso2.org/claims/applicationid"`
	ApplicationName string `json:"http://wso2.org/claims/applicationname"`
	ApplicationTier string `json:"http://wso2.org/claims/applicationtier"`
	APIContext      string `json:"http://wso2.org/claims/apicontext"`
	Version         string `json:"http://wso2.org/claims/version"`
	Tier            string `json:"http://wso2.org/claims/tier"`
	KeyType         string `json:"http://wso2.org/claims/keytype"`
	UserType        string `json:"http://wso2.org/claims/usertype"`
	EndUser         string `json:"http://wso2.org/claims/enduser"`
}

// sign returns the compact JWS of c.
func (s *BackendJWTSigner) sign(c *backendClaims) (string, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("encode claims: %w", err)
	}
	input := s.header + base64.RawURLEncoding.EncodeToString(payload)
	digest := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(nil, s.key, crypto.SHA256, digest[:])
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// backendJWTRoute is what a route asks of the backend JWT: the API
// context and version the JWT names, read from the route. The zero value
// asks for none. It is comparable, and part of what a memoised allowed
// response was built for (okMemo), so a route whose flag or API context
// changed gets a response built anew.
type backendJWTRoute struct {
	on      bool
	context string // the API's context, without its version
	version string
}

// routeBackendJWT reads the route's backend JWT settings: one map lookup
// on a route that asks for none.
func routeBackendJWT(ext map[string]string) backendJWTRoute {
	if ext[ExtBackendJWT] != "true" {
		return backendJWTRoute{}
	}
	return backendJWTRoute{on: true, context: ext[ExtAPIContext], version: ext[ExtAPIVersion]}
}

// errNoBackendJWTSigner is the error of a route that asks for a backend
// JWT on a server configured without a signer.
var errNoBackendJWTSigner = errors.New("the route asks for a backend JWT, and no backend JWT key is configured")

// signedJWT is a backend JWT and the claims it was signed with, iat
// aside: a response built anew for claims already signed for this token
// (after an unrelated change in the index, or for another resource of the
// API) reuses the JWT instead of signing again.
type signedJWT struct {
	claims backendClaims // IssuedAt zero
	token  string
}

// value is the JWT, "" for none.
func (j *signedJWT) value() string {
	if j == nil {
		return ""
	}
	return j.token
}

// backendJWT is the signed backend JWT of an allowed request, nil when the
// route asks for none. It runs only when an allowed response is built, not
// on the warm path; it signs only claims the token's other responses have
// not signed yet.
func (s *Server) backendJWT(r backendJWTRoute, v *verified, km *model.KeyMapping, app *model.Application, sub *model.Subscription) (*signedJWT, error) {
	if !r.on {
		return nil, nil
	}
	if s.jwt == nil {
		return nil, errNoBackendJWTSigner
	}
	userType := tokenUserType(v)
	endUser := v.subject
	if userType == UserTypeApplication {
		// WSO2's end user of an application's own token is the
		// application's owner; our client-credentials tokens name the
		// client in sub.
		endUser = app.Owner
	}
	c := backendClaims{
		Issuer: s.jwt.issuer, Expiry: v.exp,
		Subscriber: app.Owner, ApplicationID: app.ID, ApplicationName: app.Name, ApplicationTier: app.ThrottlingPolicy,
		// WSO2's apicontext is the context with the version.
		APIContext: strings.TrimSuffix(r.context, "/") + "/" + r.version, Version: r.version, Tier: sub.ThrottlingPolicy,
		KeyType: km.KeyType, UserType: userType, EndUser: endUser,
	}
	if ms := v.ok.Load(); ms != nil {
		for _, m := range ms.m[:ms.n] {
			if m.signed != nil && m.signed.claims == c {
				return m.signed, nil
			}
		}
	}
	signed := c
	signed.IssuedAt = s.now().Unix()
	tok, err := s.jwt.sign(&signed)
	if err != nil {
		return nil, err
	}
	return &signedJWT{claims: c, token: tok}, nil
}

// tokenUserType is WSO2's user type of a verified credential: the token's
// aut claim when it has one; else APPLICATION for an API key or a token
// whose subject is its client (client credentials), APPLICATION_USER for
// any other.
func tokenUserType(v *verified) string {
	var aut string
	if len(v.payload) > 0 {
		_ = scanObject(v.payload, func(key, val []byte) error { // the payload verified; a bad aut is ignored
			if string(key) == "aut" && len(val) > 0 && val[0] == '"' {
				aut, _ = jsonString(val)
			}
			return nil
		})
	}
	switch {
	case aut == UserTypeApplication || aut == UserTypeApplicationUser:
		return aut
	case v.apiKey || v.subject == "" || v.subject == v.clientID:
		return UserTypeApplication
	}
	return UserTypeApplicationUser
}

// withBackendJWT adds the backend JWT to the headers of an allowed
// response, overwriting any the client sent.
func withBackendJWT(headers []*corev3.HeaderValueOption, jwt string) []*corev3.HeaderValueOption {
	return append(headers, &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: HeaderJWTAssertion, Value: jwt},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	})
}

// stripJWTAssertion is the HeadersToRemove of an allowed request without
// a credential to an API that sends backend JWTs: no client-made
// X-JWT-Assertion reaches its backend. Shared, never changed.
var stripJWTAssertion = []string{HeaderJWTAssertion}

package authz

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/apim-dev/apim/internal/gwstate"
	"github.com/apim-dev/apim/internal/model"
)

// Errors of external tokens, beside jwt.go's.
var (
	errKeyManagerOff = errors.New("key manager disabled")
	errWeakKey       = errors.New("key too weak or of the wrong type for alg")
)

// ExternalKeysConfig configures the key sets of the external key managers
// (schema/events.md, key_manager).
type ExternalKeysConfig struct {
	// State is the gateway index whose key managers are followed.
	State *gwstate.Store
	// Client fetches the JWKS documents; required. Its own Timeout is not
	// relied on.
	Client *http.Client
	// Timeout bounds each fetch; default 5s.
	Timeout time.Duration
	// MinRefresh is the least time between fetches of one set caused by an
	// unknown kid; default 5s. Shorter than the resident key manager's: a
	// provider may make its signing key only when it issues its first
	// token (Ory Hydra does), after the set was fetched.
	MinRefresh time.Duration
	// Refresh is the period at which Start fetches every set again;
	// default 15m.
	Refresh time.Duration
	// Sync is how often Start looks for key managers added, changed,
	// disabled or removed; default 1s. A set new to Start is fetched at
	// once.
	Sync   time.Duration
	Logger zerolog.Logger
	Now    func() time.Time
}

// ExternalKeys holds one JWKS key set per enabled external key manager,
// keyed by issuer, and keeps them fetched while Start runs. Requests read
// the sets without locks.
type ExternalKeys struct {
	cfg  ExternalKeysConfig
	sets atomic.Pointer[map[string]*issuerKeys] // by issuer

	mu  sync.Mutex // serialises changes of sets
	bad *badTokens // external tokens whose RSA signature failed
}

// issuerKeys is the key set of one issuer, fetched from url.
type issuerKeys struct {
	url  string
	jwks *JWKS
}

// NewExternalKeys returns the key sets of the external key managers; they
// are fetched by Start, or on a token's first use.
func NewExternalKeys(cfg ExternalKeysConfig) (*ExternalKeys, error) {
	var errs []error
	if cfg.State == nil {
		errs = append(errs, errors.New("external keys: state is required"))
	}
	if cfg.Client == nil {
		errs = append(errs, errors.New("external keys: client is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.MinRefresh <= 0 {
		cfg.MinRefresh = 5 * time.Second
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = 15 * time.Minute
	}
	if cfg.Sync <= 0 {
		cfg.Sync = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	e := &ExternalKeys{cfg: cfg, bad: newBadTokens(0)}
	e.sets.Store(&map[string]*issuerKeys{})
	return e, nil
}

// Start follows the key managers of the index until ctx is done: it makes
// a key set for each enabled one and fetches it at once, drops the sets of
// those disabled or removed, and fetches every set again each Refresh. A
// failed fetch is logged and keeps the keys already held.
func (e *ExternalKeys) Start(ctx context.Context) error {
	t := time.NewTicker(e.cfg.Sync)
	defer t.Stop()
	fetched := map[*JWKS]bool{} // the sets this loop has fetched
	var last []*model.KeyManager
	lastAll := e.cfg.Now()
	for {
		kms := e.cfg.State.Load().KeyManagers()
		all := e.cfg.Now().Sub(lastAll) >= e.cfg.Refresh
		if all {
			lastAll = e.cfg.Now()
			clear(fetched)
		}
		if all || !sameSlice(kms, last) || len(fetched) != len(*e.sets.Load()) {
			last = kms
			e.sync(ctx, kms, fetched)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// sameSlice reports whether a and b are the same slice (the index shares
// its key managers' slice until one of them changes).
func sameSlice(a, b []*model.KeyManager) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// sync makes the sets match the enabled key managers kms and fetches those
// not in fetched.
func (e *ExternalKeys) sync(ctx context.Context, kms []*model.KeyManager, fetched map[*JWKS]bool) {
	e.mu.Lock()
	cur := *e.sets.Load()
	next := make(map[string]*issuerKeys, len(kms))
	for _, km := range kms {
		if !km.Enabled {
			continue
		}
		if s, ok := cur[km.Issuer]; ok && s.url == km.JWKSURI {
			next[km.Issuer] = s
			continue
		}
		s, err := e.newSet(km)
		if err != nil {
			e.cfg.Logger.Warn().Err(err).Str("key_manager", km.Name).Msg("no key set for key manager")
			continue
		}
		next[km.Issuer] = s
	}
	e.sets.Store(&next)
	e.mu.Unlock()

	live := make(map[*JWKS]bool, len(next))
	for iss, s := range next {
		live[s.jwks] = true
		if fetched[s.jwks] {
			continue
		}
		fetched[s.jwks] = true
		if err := s.jwks.Refresh(ctx); err != nil && ctx.Err() == nil {
			e.cfg.Logger.Warn().Err(err).Str("issuer", iss).Msg("external jwks fetch failed")
		}
	}
	for j := range fetched {
		if !live[j] {
			delete(fetched, j)
		}
	}
}

func (e *ExternalKeys) newSet(km *model.KeyManager) (*issuerKeys, error) {
	j, err := NewJWKS(JWKSConfig{
		URL: km.JWKSURI, Client: e.cfg.Client, Timeout: e.cfg.Timeout, MinRefresh: e.cfg.MinRefresh,
		Logger: e.cfg.Logger.With().Str("issuer", km.Issuer).Logger(), Now: e.cfg.Now,
	})
	if err != nil {
		return nil, err
	}
	return &issuerKeys{url: km.JWKSURI, jwks: j}, nil
}

// keys returns the key set of km, making it if Start has not yet: its
// first Key call then fetches it.
func (e *ExternalKeys) keys(km *model.KeyManager) (*JWKS, error) {
	if s, ok := (*e.sets.Load())[km.Issuer]; ok && s.url == km.JWKSURI {
		return s.jwks, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	cur := *e.sets.Load()
	if s, ok := cur[km.Issuer]; ok && s.url == km.JWKSURI {
		return s.jwks, nil
	}
	s, err := e.newSet(km)
	if err != nil {
		return nil, err
	}
	next := make(map[string]*issuerKeys, len(cur)+1)
	for iss, v := range cur {
		next[iss] = v
	}
	next[km.Issuer] = s
	e.sets.Store(&next)
	return s.jwks, nil
}

// verifyExternal verifies a token whose issuer is not the resident key
// manager's: it must be the issuer of an enabled external key manager,
// signed by a key of that key manager's JWKS, and carry a client id in
// the claim the key manager names. The key mapping is then looked up
// under the key manager's id (keyMapping).
func (s *Server) verifyExternal(t *jwt, key *tokenKey, now time.Time, apiKey bool) (*verified, error) {
	if s.ext == nil {
		return nil, errIssuer
	}
	c := &t.claims
	km, ok := s.state.Load().KeyManagerByIssuer(c.Issuer)
	switch {
	case !ok:
		return nil, errIssuer
	case !km.Enabled:
		return nil, errKeyManagerOff
	case apiKey:
		return nil, errKindToken // API keys are ours only
	}
	exp, nbf, err := s.validity(c, now)
	if err != nil {
		return nil, err
	}
	clientID, scope, err := externalClaims(t, km)
	if err != nil {
		return nil, err
	}
	jwks, err := s.ext.keys(km)
	if err != nil {
		return nil, err
	}
	if s.ext.bad.bad(key, jwks, now) {
		return nil, errSignature
	}
	if t.kid == "" {
		return nil, errKid
	}
	pub, ok := jwks.Key(t.kid)
	if !ok {
		return nil, errKid
	}
	if err := verifySignature(t.alg, pub, t.signingInput, t.sig); err != nil {
		if rsaPub, ok := pub.(*rsa.PublicKey); ok && errors.Is(err, errSignature) {
			s.ext.bad.add(key, t.kid, rsaPub, now)
		}
		return nil, err
	}
	return &verified{
		subject: c.Subject, clientID: clientID, scope: scope, jti: c.JTI, exp: exp, nbf: nbf, iat: c.issuedAt(),
		keyManager: km.ID, mappingKey: model.MappingKey(km.ID, clientID), payload: t.payload,
	}, nil
}

// keyMapping returns the key mapping of a verified access token: by client
// id for the resident key manager's tokens, and under the key manager's id
// for an external one's, while that key manager is enabled.
func keyMapping(idx *gwstate.Index, v *verified) (*model.KeyMapping, bool) {
	if v.keyManager == "" {
		return idx.KeyMapping(v.clientID)
	}
	return idx.ExternalKeyMapping(v.keyManager, v.mappingKey)
}

// externalClaims reads the client id and the scopes of an external token
// from the claims its key manager names (model.KeyManager.ClientIDClaims,
// ScopesClaimName). The payload is decoded again, generically: this runs
// once per token, and the claims may be any.
func externalClaims(t *jwt, km *model.KeyManager) (clientID, scope string, err error) {
	var claims map[string]json.RawMessage
	if err := json.Unmarshal(t.payload, &claims); err != nil {
		return "", "", errMalformed
	}
	// An ID token is for the client, not for an API: it carries at_hash or
	// c_hash (OIDC Core 3.1.3.6, 3.3.2.11), or, from Keycloak, typ "ID".
	var typ string
	if _, ok := claims["at_hash"]; ok {
		return "", "", errIDToken
	}
	if _, ok := claims["c_hash"]; ok {
		return "", "", errIDToken
	}
	if v, ok := claims["typ"]; ok && json.Unmarshal(v, &typ) == nil && strings.EqualFold(typ, "ID") {
		return "", "", errIDToken
	}
	for _, name := range km.ClientIDClaims() {
		var id string
		if v, ok := claims[name]; ok && json.Unmarshal(v, &id) == nil && id != "" {
			clientID = id
			break
		}
	}
	if clientID == "" {
		return "", "", errNoClientID
	}
	return clientID, scopeClaim(claims[km.ScopesClaimName()]), nil
}

// scopeClaim reads a scopes claim: a space-separated string or an array of
// strings (as Ory Hydra's scp, Okta's scp); anything else is no scope.
func scopeClaim(v json.RawMessage) string {
	if len(v) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		return strings.Join(strings.Fields(s), " ")
	}
	var ss []string
	if json.Unmarshal(v, &ss) == nil {
		out := ss[:0]
		for _, it := range ss {
			if it = strings.TrimSpace(it); it != "" && !strings.ContainsAny(it, " \t") {
				out = append(out, it)
			}
		}
		return strings.Join(out, " ")
	}
	return ""
}

// minRSABits is the smallest RSA modulus accepted from an external key
// manager.
const minRSABits = 2048

// verifySignature checks a JWS signature over input with pub for the
// algorithms external providers sign access tokens with: RS256/384/512,
// PS256/384/512 and ES256/384/512. Anything else (none, HMAC) is refused.
func verifySignature(alg string, pub crypto.PublicKey, input string, sig []byte) error {
	var h crypto.Hash
	switch alg[min(len(alg), 2):] {
	case "256":
		h = crypto.SHA256
	case "384":
		h = crypto.SHA384
	case "512":
		h = crypto.SHA512
	default:
		return errAlg
	}
	d := h.New()
	d.Write([]byte(input))
	digest := d.Sum(nil)
	switch alg[:min(len(alg), 2)] {
	case "RS", "PS":
		k, ok := pub.(*rsa.PublicKey)
		if !ok || k.N.BitLen() < minRSABits {
			return errWeakKey
		}
		var err error
		if alg[0] == 'R' {
			err = rsa.VerifyPKCS1v15(k, h, digest, sig)
		} else {
			err = rsa.VerifyPSS(k, h, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		}
		if err != nil {
			return errSignature
		}
		return nil
	case "ES":
		k, ok := pub.(*ecdsa.PublicKey)
		want := map[string]elliptic.Curve{"ES256": elliptic.P256(), "ES384": elliptic.P384(), "ES512": elliptic.P521()}[alg]
		if !ok || want == nil || k.Curve != want {
			return errWeakKey
		}
		size := (want.Params().BitSize + 7) / 8
		if len(sig) != 2*size {
			return errSignature
		}
		r, sv := new(big.Int).SetBytes(sig[:size]), new(big.Int).SetBytes(sig[size:])
		if !ecdsa.Verify(k, digest, r, sv) {
			return errSignature
		}
		return nil
	}
	return errAlg
}

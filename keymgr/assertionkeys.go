package keymgr

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/rs/zerolog"

	"github.com/apim-dev/apim/internal/jwks"
)

// Fetching the JWKS of external key managers for the jwt-bearer grant.
const (
	// assertionJWKSTimeout bounds each fetch.
	assertionJWKSTimeout = 5 * time.Second
	// assertionJWKSMaxAge is how long a fetched set is used before it is
	// fetched again (on the next assertion of its issuer).
	assertionJWKSMaxAge = 15 * time.Minute
	// assertionJWKSMinRefresh is the least time between two fetches of one
	// set, so that unknown kids (or a provider that is down) cost at most
	// one fetch per 5 s per key manager. The gateway's external sets use
	// the same figure.
	assertionJWKSMinRefresh = 5 * time.Second
	// maxAssertionJWKSSets bounds the sets held; past it the cache starts
	// over (sets are per key manager, which admins create).
	maxAssertionJWKSSets = 256
)

// errJWKSUnavailable is a key set that could not be fetched and of which
// no earlier copy is held: the token endpoint answers 503.
var errJWKSUnavailable = errors.New("the keys of the assertion's issuer could not be fetched")

// assertionKeys holds the JWKS of the external key managers by URL: fetched
// on an issuer's first assertion, again when older than
// assertionJWKSMaxAge or asked for an unknown kid (each at most once per
// assertionJWKSMinRefresh). A failed fetch keeps the keys already held.
type assertionKeys struct {
	client *http.Client
	log    zerolog.Logger
	now    func() time.Time

	mu   sync.Mutex // guards sets
	sets map[string]*jwksEntry
}

// jwksEntry is one key set.
type jwksEntry struct {
	mu      sync.Mutex // one fetch at a time; guards the fields
	keys    []jose.JSONWebKey
	fetched time.Time // last successful fetch
	tried   time.Time // last fetch
}

func newAssertionKeys(client *http.Client, log zerolog.Logger) *assertionKeys {
	return &assertionKeys{client: client, log: log, now: time.Now, sets: map[string]*jwksEntry{}}
}

func (c *assertionKeys) entry(url string) *jwksEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.sets[url]
	if !ok {
		if len(c.sets) >= maxAssertionJWKSSets {
			clear(c.sets)
		}
		e = &jwksEntry{}
		c.sets[url] = e
	}
	return e
}

// keys returns the signing keys of the set at url, fetching it first when
// it was never fetched, is old, or lacks kid (kid "" lacks nothing).
func (c *assertionKeys) keys(ctx context.Context, url, kid string) ([]jose.JSONWebKey, error) {
	e := c.entry(url)
	e.mu.Lock()
	defer e.mu.Unlock()
	now := c.now()
	stale := e.fetched.IsZero() || now.Sub(e.fetched) >= assertionJWKSMaxAge
	if (stale || !hasKid(e.keys, kid)) && (e.tried.IsZero() || now.Sub(e.tried) >= assertionJWKSMinRefresh) {
		e.tried = now
		fctx, cancel := context.WithTimeout(ctx, assertionJWKSTimeout)
		keys, err := jwks.Fetch(fctx, c.client, url)
		cancel()
		if err != nil {
			c.log.Warn().Err(err).Msg("external jwks fetch failed")
		} else {
			e.keys, e.fetched = keys, now
		}
	}
	if e.fetched.IsZero() {
		return nil, errJWKSUnavailable
	}
	return e.keys, nil
}

func hasKid(keys []jose.JSONWebKey, kid string) bool {
	if kid == "" {
		return true
	}
	for _, k := range keys {
		if k.KeyID == kid {
			return true
		}
	}
	return false
}

package authz

import (
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/apim-dev/apim/internal/model"
)

// verified is what a verified token says, kept until it expires.
type verified struct {
	subject  string
	clientID string
	scope    string // space-separated
	jti      string // the token's id, checked against the revocations
	exp      int64  // unix seconds; 0 means none
	nbf      int64
	iat      int64 // issued at, unix seconds; 0 means none (client revocations)

	// keyManager is the external key manager's id, "" for the resident
	// one's tokens; mappingKey the key mapping's key (model.MappingKey).
	keyManager string
	mappingKey string

	// payload is the token's decoded claims JSON, for throttling conditions
	// and custom rules on claims; claims its map, decoded on first use.
	payload []byte
	claims  atomic.Pointer[map[string]any]

	// An API key (token_type apiKey) carries its application and key type
	// itself: km is a key mapping made from them once, so that the memo
	// below works as for tokens. ips and referers are its restrictions,
	// nil for none.
	apiKey   bool
	km       *model.KeyMapping
	ips      []netip.Prefix
	referers []string

	// ok memoises the allowed responses for this token, one per API it was
	// last allowed on. A memo is reused only while the same index entries
	// decide the request (see okMemo).
	ok atomic.Pointer[okMemos]
}

// maxOKMemos bounds the APIs a token's allowed responses are kept for. A
// token used on more APIs than this in turn rebuilds its responses, as one
// used on a single API never does.
const maxOKMemos = 8

// okMemos is an immutable list of a token's allowed responses, at most one
// per API, oldest first. It is replaced, never changed, so that reading it
// takes one atomic load and no lock.
type okMemos struct {
	n int
	m [maxOKMemos]*okMemo
}

// memo returns the allowed response for sub's API (and resource, when it
// has a limited tier) if it was built from exactly these index entries and
// backend JWT settings.
func (v *verified) memo(km *model.KeyMapping, app *model.Application, sub *model.Subscription, t tiers, jwt backendJWTRoute, decided bool) *authv3.CheckResponse {
	ms := v.ok.Load()
	if ms == nil {
		return nil
	}
	for _, m := range ms.m[:ms.n] {
		if m.sub == sub && m.tiers.resource == t.resource {
			if m.km == km && m.app == app && m.tiers == t && m.jwt == jwt && m.decided == decided {
				return m.resp
			}
			return nil
		}
	}
	return nil
}

// remember adds m to the token's memos, replacing the one for the same API
// and resource (built from entries since replaced) and, when full, the
// oldest.
func (v *verified) remember(m *okMemo) {
	api, res := m.sub.APIID, m.tiers.resource
	for range 4 { // a lost race only costs a rebuild later
		old := v.ok.Load()
		next := &okMemos{}
		if old != nil {
			for _, e := range old.m[:old.n] {
				if e.sub.APIID != api || e.tiers.resource != res {
					next.m[next.n] = e
					next.n++
				}
			}
		}
		if next.n == maxOKMemos {
			copy(next.m[:], next.m[1:])
			next.n--
		}
		next.m[next.n] = m
		next.n++
		if v.ok.CompareAndSwap(old, next) {
			return
		}
	}
}

// okMemo is an allowed response and what it was built from: the entries
// of one gwstate index. Proto messages are safe to marshal concurrently, so
// one response can answer many requests.
type okMemo struct {
	km    *model.KeyMapping
	app   *model.Application
	sub   *model.Subscription
	tiers tiers
	jwt   backendJWTRoute // the route's backend JWT settings (backendjwt.go)
	// decided: the route has Check decide the limits, so resp carries only
	// the metadata they need (allowedResponse).
	decided bool
	// signed is the backend JWT in resp, nil for none.
	signed *signedJWT
	resp   *authv3.CheckResponse
}

// tiers are the limited throttling tiers of a request, which decide the
// rate-limit metadata: nil for a level that does not limit.
type tiers struct {
	sub      bool          // the subscription tier limits (or is unknown)
	subBytes bool          // the subscription tier is a bandwidth quota
	app      *model.Policy // application level
	api      *model.Policy // API level (advanced)
	res      *model.Policy // resource level (advanced)
	resource string        // the resource, when res is set
}

type tokenKey [sha256.Size]byte

const (
	cacheShards = 64
	// defaultCacheSize bounds the verified tokens held, across shards.
	defaultCacheSize = 100_000
)

// tokenCache maps the SHA-256 of a raw token to what verifying it found.
// The raw token itself is never kept. Each shard is bounded; when full, it
// drops expired entries and then, if still full, arbitrary ones.
type tokenCache struct {
	perShard int
	shards   [cacheShards]struct {
		mu sync.RWMutex
		m  map[tokenKey]*verified
		_  [40]byte // keep shards on separate cache lines
	}
}

func newTokenCache(size int) *tokenCache {
	if size <= 0 {
		size = defaultCacheSize
	}
	c := &tokenCache{perShard: max(1, size/cacheShards)}
	for i := range c.shards {
		c.shards[i].m = make(map[tokenKey]*verified)
	}
	return c
}

func (c *tokenCache) shard(k *tokenKey) int {
	return int(binary.LittleEndian.Uint64(k[:8]) % cacheShards)
}

func (c *tokenCache) get(k *tokenKey) *verified {
	s := &c.shards[c.shard(k)]
	s.mu.RLock()
	v := s.m[*k]
	s.mu.RUnlock()
	return v
}

func (c *tokenCache) put(k *tokenKey, v *verified, now time.Time) {
	s := &c.shards[c.shard(k)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) >= c.perShard {
		unix := now.Unix()
		for key, e := range s.m {
			if e.exp != 0 && e.exp <= unix {
				delete(s.m, key)
			}
		}
		for key := range s.m { // map order is random: evicts arbitrary entries
			if len(s.m) < c.perShard {
				break
			}
			delete(s.m, key)
		}
	}
	s.m[*k] = v
}

func (c *tokenCache) remove(k *tokenKey) {
	s := &c.shards[c.shard(k)]
	s.mu.Lock()
	delete(s.m, *k)
	s.mu.Unlock()
}

const (
	// defaultBadTokenCacheSize bounds the tokens remembered as having a bad
	// signature.
	defaultBadTokenCacheSize = 10_000
	// badTokenTTL is how long a bad signature is remembered.
	badTokenTTL = time.Minute
)

// badToken is a token whose signature did not verify with pub, the key its
// kid named at the time.
type badToken struct {
	until int64 // unix nanoseconds
	kid   string
	pub   *rsa.PublicKey
}

// badTokens remembers, by the SHA-256 of the raw token, tokens whose RS256
// signature failed, so that a client replaying one does not cost an RSA
// verify per request. A signature that failed with a key cannot verify with
// that key later, so an entry can never deny a valid token; the entry also
// holds the key and counts only while the kid still names that very key,
// which covers a key set that reuses a kid for a new key.
//
// It is bounded: a ring of keys evicts the oldest entry when full, in
// constant time, however many distinct bad tokens arrive.
type badTokens struct {
	mu   sync.RWMutex
	m    map[tokenKey]badToken
	ring []tokenKey // insertion order; the first len(m) slots used
	next int        // the ring slot to fill (and evict) next
}

func newBadTokens(size int) *badTokens {
	if size <= 0 {
		size = defaultBadTokenCacheSize
	}
	return &badTokens{m: make(map[tokenKey]badToken, size), ring: make([]tokenKey, size)}
}

// bad reports whether k is a token remembered, and not yet forgotten at
// now, to have failed verification with the key keys hold for its kid.
func (c *badTokens) bad(k *tokenKey, keys Keys, now time.Time) bool {
	c.mu.RLock()
	e, ok := c.m[*k]
	c.mu.RUnlock()
	if !ok || now.UnixNano() >= e.until {
		return false
	}
	key, ok := keys.Key(e.kid)
	if !ok {
		return false
	}
	pub, ok := key.(*rsa.PublicKey)
	return ok && pub == e.pub
}

// add remembers k as a token whose signature failed with pub, the key of kid.
func (c *badTokens) add(k *tokenKey, kid string, pub *rsa.PublicKey, now time.Time) {
	e := badToken{until: now.Add(badTokenTTL).UnixNano(), kid: kid, pub: pub}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[*k]; ok {
		c.m[*k] = e // refreshed; keeps its place in the ring
		return
	}
	if len(c.m) == len(c.ring) {
		delete(c.m, c.ring[c.next])
	}
	c.ring[c.next] = *k
	c.next = (c.next + 1) % len(c.ring)
	c.m[*k] = e
}

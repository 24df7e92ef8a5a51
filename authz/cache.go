package authz

import (
	"crypto/sha256"
	"encoding/binary"
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
	exp      int64  // unix seconds; 0 means none
	nbf      int64

	// ok memoises the last allowed response for this token. It is reused
	// only while the same index entries decide the request (see okMemo).
	ok atomic.Pointer[okMemo]
}

// okMemo is an allowed response and what it was built from: the entries
// of one gwstate index. Proto messages are safe to marshal concurrently, so
// one response can answer many requests.
type okMemo struct {
	km      *model.KeyMapping
	app     *model.Application
	sub     *model.Subscription
	limited bool
	resp    *authv3.CheckResponse
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

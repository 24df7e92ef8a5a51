package gwstate

import (
	"hash/maphash"
	"maps"
)

// shardCount is the number of shards of every large map of the index. An
// event copies one shard: with 100,000 subscriptions that is about 400
// entries, a few microseconds, instead of the whole map.
const shardCount = 256

// seed hashes keys to shards. It is fixed for the life of the process, so an
// index and the copies made from it agree on where each key lives.
var seed = maphash.MakeSeed()

func hashString(s string) uint64 { return maphash.String(seed, s) }

func hashPair(a, b string) uint64 {
	return maphash.String(seed, a)*0x9E3779B97F4A7C15 ^ maphash.String(seed, b)
}

// shardedMap is a persistent map: it is never changed after it is published
// in an Index. with returns a new map that shares every shard but the one
// the key lives in, which it copies.
type shardedMap[K comparable, V any] struct {
	shards *[shardCount]map[K]V
	hash   func(K) uint64
	n      int
}

func newShardedMap[K comparable, V any](hash func(K) uint64) shardedMap[K, V] {
	var shards [shardCount]map[K]V
	return shardedMap[K, V]{shards: &shards, hash: hash}
}

func (m shardedMap[K, V]) get(k K) (V, bool) {
	v, ok := m.shards[m.hash(k)%shardCount][k]
	return v, ok
}

// put sets k in place; only for maps that are not yet published.
func (m *shardedMap[K, V]) put(k K, v V) {
	i := m.hash(k) % shardCount
	if m.shards[i] == nil {
		m.shards[i] = make(map[K]V)
	}
	if _, ok := m.shards[i][k]; !ok {
		m.n++
	}
	m.shards[i][k] = v
}

// with returns a copy of m with k set to v.
func (m shardedMap[K, V]) with(k K, v V) shardedMap[K, V] {
	i := m.hash(k) % shardCount
	shards := *m.shards
	s := maps.Clone(shards[i]) // copies the table as is, without rehashing
	if s == nil {
		s = make(map[K]V, 1)
	}
	if _, ok := s[k]; !ok {
		m.n++
	}
	s[k] = v
	shards[i] = s
	m.shards = &shards
	return m
}

// withFiltered is with, also dropping from the copied shard the entries
// keep refuses: a shard that is copied anyway is pruned for free.
func (m shardedMap[K, V]) withFiltered(k K, v V, keep func(K, V) bool) shardedMap[K, V] {
	i := m.hash(k) % shardCount
	shards := *m.shards
	s := make(map[K]V, len(shards[i])+1)
	n := m.n - len(shards[i])
	for key, val := range shards[i] {
		if key != k && keep(key, val) {
			s[key] = val
		}
	}
	s[k] = v
	shards[i] = s
	m.shards = &shards
	m.n = n + len(s)
	return m
}

// filtered returns a copy of m without the entries keep refuses, copying
// only the shards that lose one; m itself when none does.
func (m shardedMap[K, V]) filtered(keep func(K, V) bool) shardedMap[K, V] {
	var shards *[shardCount]map[K]V
	for i, sh := range m.shards {
		drop := 0
		for k, v := range sh {
			if !keep(k, v) {
				drop++
			}
		}
		if drop == 0 {
			continue
		}
		if shards == nil {
			cp := *m.shards
			shards = &cp
		}
		s := make(map[K]V, len(sh)-drop)
		for k, v := range sh {
			if keep(k, v) {
				s[k] = v
			}
		}
		shards[i] = s
		m.n -= drop
	}
	if shards != nil {
		m.shards = shards
	}
	return m
}

// without returns a copy of m without k, or m itself when k is absent.
func (m shardedMap[K, V]) without(k K) shardedMap[K, V] {
	i := m.hash(k) % shardCount
	if _, ok := m.shards[i][k]; !ok {
		return m
	}
	shards := *m.shards
	s := maps.Clone(shards[i])
	delete(s, k)
	shards[i] = s
	m.shards = &shards
	m.n--
	return m
}

func (m shardedMap[K, V]) len() int { return m.n }

func (m shardedMap[K, V]) each(f func(K, V)) {
	for _, s := range m.shards {
		for k, v := range s {
			f(k, v)
		}
	}
}

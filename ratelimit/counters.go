package ratelimit

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

const (
	counterShards = 256
	// sweepEvery is how often a shard drops the counters of ended windows.
	sweepEvery = int64(time.Second)
)

// windowKey names one counter: what it counts (kind), the counted entity
// (a, and b where the key has two parts, such as application and user), and
// the window.
type windowKey struct {
	kind  byte
	a, b  string
	start int64 // window start, unix nanoseconds
}

type counter struct {
	n   atomic.Int64
	end int64 // window end, unix nanoseconds
}

// counters holds one count per (subscription, window). A count is an
// atomic add under a shard's read lock; a new window takes the shard's write
// lock once. Windows that ended are swept from their shard at most once a
// second, when the shard next creates a counter, so memory stays bounded by
// the subscriptions active in current windows.
type counters struct {
	seed   maphash.Seed
	shards [counterShards]struct {
		mu        sync.RWMutex
		m         map[windowKey]*counter
		nextSweep int64
		_         [24]byte
	}
}

func newCounters() *counters {
	c := &counters{seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].m = make(map[windowKey]*counter)
	}
	return c
}

// add adds hits to the count of the window [start, end) of (kind, a, b)
// and returns the new count.
func (c *counters) add(kind byte, a, b string, start, end, hits, now int64) int64 {
	sh := &c.shards[(maphash.String(c.seed, a)+maphash.String(c.seed, b)+uint64(kind))%counterShards]
	k := windowKey{kind, a, b, start}
	sh.mu.RLock()
	ct := sh.m[k]
	sh.mu.RUnlock()
	if ct == nil {
		sh.mu.Lock()
		if ct = sh.m[k]; ct == nil {
			if now >= sh.nextSweep {
				for key, old := range sh.m {
					if old.end <= now {
						delete(sh.m, key)
					}
				}
				sh.nextSweep = now + sweepEvery
			}
			ct = &counter{end: end}
			sh.m[k] = ct
		}
		sh.mu.Unlock()
	}
	return ct.n.Add(hits)
}

// len is the number of counters held.
func (c *counters) len() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}

// sweep drops, from every shard, the counters of windows ended by now.
func (c *counters) sweep(now int64) {
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		for key, ct := range sh.m {
			if ct.end <= now {
				delete(sh.m, key)
			}
		}
		sh.nextSweep = now + sweepEvery
		sh.mu.Unlock()
	}
}

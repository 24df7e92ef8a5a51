package trafficmgr

import (
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

const viewShards = 64

// view is a gateway's picture of the fleet: per throttle key, its own count,
// the counts of every gateway as the traffic managers last reported them,
// and until when the key is throttled; and the gateways alive. It is where
// a gateway decides to admit (admit) and what it publishes (changed).
//
// Admission (see docs/architecture.md, "Fleet-wide throttling"): with the
// fleet's counts c (per gateway, as last reported) and n gateways, each
// gateway may admit, beyond its own reported count, its share of what is
// left: (limit − Σc) / n, the remainder going one each to the first gateways
// in id order. If every gateway holds the same report, their admissions
// add up to at most the limit whatever the request rate. Silence of the
// traffic managers (or of Kafka) freezes the report, which keeps that bound,
// and caps each gateway at its share of the whole limit as well.
type view struct {
	self        string
	minFleet    int
	silence     time.Duration
	presenceTTL time.Duration
	onThrottle  func(key string, published, applied time.Time)
	met         *agentMetrics

	seed   maphash.Seed
	shards [viewShards]struct {
		mu sync.Mutex
		m  map[string]*keyView
		_  [40]byte
	}

	lastTM atomic.Int64 // unix nanoseconds of the last traffic-manager message
	fleet  atomic.Pointer[fleetInfo]

	mu      sync.Mutex
	members map[string]time.Time // gateway id → last presence
}

type fleetInfo struct {
	n, rank int
}

type keyView struct {
	mu             sync.Mutex
	start, end     time.Time
	limit          int64
	local          int64 // this gateway's admitted count
	published      int64 // the local count last published
	seen           map[string]int64
	seenSum        int64
	throttledUntil time.Time
}

func newView(self string, minFleet int, silence, presenceTTL time.Duration, onThrottle func(string, time.Time, time.Time)) *view {
	v := &view{
		self: self, minFleet: max(minFleet, 1), silence: silence, presenceTTL: presenceTTL,
		onThrottle: onThrottle, met: newAgentMetrics(), seed: maphash.MakeSeed(), members: map[string]time.Time{},
	}
	for i := range v.shards {
		v.shards[i].m = map[string]*keyView{}
	}
	v.fleet.Store(&fleetInfo{n: v.minFleet})
	return v
}

func (v *view) key(key string, start, end time.Time, limit int64) *keyView {
	sh := &v.shards[maphash.String(v.seed, key)%viewShards]
	sh.mu.Lock()
	k := sh.m[key]
	if k == nil {
		k = &keyView{start: start, end: end, limit: limit, seen: map[string]int64{}}
		sh.m[key] = k
	}
	sh.mu.Unlock()
	return k
}

// share is gateway rank's share of x among n.
func share(x int64, n, rank int) int64 {
	s := x / int64(n)
	if int64(rank) < x%int64(n) {
		s++
	}
	return s
}

// silent reports whether no traffic manager has been heard from for longer
// than the silence threshold.
func (v *view) silent(now time.Time) bool {
	return now.UnixNano()-v.lastTM.Load() > int64(v.silence)
}

// admit decides on a request whose hits made this gateway's count of key
// count.
func (v *view) admit(key string, start, end time.Time, limit, count int64, now time.Time) bool {
	k := v.key(key, start, end, limit)
	f := v.fleet.Load()
	silent := v.silent(now)
	k.mu.Lock()
	defer k.mu.Unlock()
	k.window(start, limit)
	if now.Before(k.throttledUntil) {
		v.met.refusedDecision.Inc()
		return false
	}
	self := k.seen[v.self]
	allow := self + share(max(limit-k.seenSum, 0), f.n, f.rank)
	if silent {
		allow = min(allow, share(limit, f.n, f.rank))
	}
	if count > allow {
		v.met.refusedShare.Inc()
		return false
	}
	k.local = max(k.local, count)
	if silent {
		v.met.admittedDisconnected.Inc()
	}
	return true
}

// record notes hits that this gateway spent without a decision, which made
// its count of key count: they are published as admitted ones are.
func (v *view) record(key string, start, end time.Time, limit, count int64) {
	k := v.key(key, start, end, limit)
	k.mu.Lock()
	k.window(start, limit)
	k.local = max(k.local, count)
	k.mu.Unlock()
}

// window sets the key's limit, and its start if it was first heard of in
// a decision, which has none. Call with k.mu held.
func (k *keyView) window(start time.Time, limit int64) {
	k.limit = limit
	if k.start.IsZero() {
		k.start = start
	}
}

// apply merges a message from TopicDecisions.
func (v *view) apply(m Message, now time.Time) {
	switch m.Type {
	case TypeHeartbeat:
		v.lastTM.Store(now.UnixNano())
	case TypePresence:
		v.mu.Lock()
		v.members[m.From] = now
		v.mu.Unlock()
		v.refreshFleet(now)
	case TypeDecision:
		v.lastTM.Store(now.UnixNano())
		if !m.WindowEnd.After(now) {
			return
		}
		v.met.applied.Inc()
		k := v.key(m.Key, time.Time{}, m.WindowEnd, m.Limit)
		k.mu.Lock()
		for gw, c := range m.Counts {
			if old := k.seen[gw]; c > old {
				k.seen[gw] = c
				k.seenSum += c - old
			}
		}
		first := false
		if m.ThrottledUntil.After(now) && m.ThrottledUntil.After(k.throttledUntil) {
			first = k.throttledUntil.IsZero()
			// Never beyond the window the decision is about.
			k.throttledUntil = minTime(m.ThrottledUntil, m.WindowEnd)
		}
		k.mu.Unlock()
		if first && v.onThrottle != nil {
			v.onThrottle(m.Key, m.Time, now)
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// refreshFleet recomputes the fleet's size and this gateway's rank from the
// presence seen within presenceTTL. While the traffic managers are silent
// (Kafka may be down) nobody expires: a gateway that stops hearing the
// others must not conclude it is alone and take the whole limit.
func (v *view) refreshFleet(now time.Time) {
	silent := v.silent(now)
	v.mu.Lock()
	ids := []string{v.self}
	for id, at := range v.members {
		if id == v.self {
			continue
		}
		if !silent && now.Sub(at) > v.presenceTTL {
			delete(v.members, id)
			continue
		}
		ids = append(ids, id)
	}
	v.mu.Unlock()
	slices.Sort(ids)
	rank := slices.Index(ids, v.self)
	v.fleet.Store(&fleetInfo{n: max(len(ids), v.minFleet), rank: rank})
}

// changed returns this gateway's counts to publish: those that grew since
// the last call, or every live one when all is set; and forgets keys whose
// window ended.
func (v *view) changed(gateway string, now time.Time, all bool) []Count {
	var out []Count
	for i := range v.shards {
		sh := &v.shards[i]
		sh.mu.Lock()
		for key, k := range sh.m {
			k.mu.Lock()
			if !k.end.After(now) {
				delete(sh.m, key)
			} else if k.local > 0 && (all || k.local > k.published) {
				k.published = k.local
				out = append(out, Count{
					SchemaVersion: SchemaVersion, Gateway: gateway, Key: key,
					WindowStart: k.start, WindowEnd: k.end, Count: k.local, Limit: k.limit,
				})
			}
			k.mu.Unlock()
		}
		sh.mu.Unlock()
	}
	return out
}

// size is the fleet size this gateway assumes.
func (v *view) size() int { return v.fleet.Load().n }

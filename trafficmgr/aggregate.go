package trafficmgr

import (
	"maps"
	"time"
)

// aggregator sums, per throttle key, the counts of every gateway in the
// key's window. A traffic manager holds one for the partitions it owns. It
// is not safe for concurrent use.
//
// Counts are cumulative per gateway and window, so a gateway's count only
// grows: the aggregator keeps the highest seen. A duplicate, a replay from
// an older offset or a message that overtook a newer one changes nothing,
// and an owner that takes a partition over rebuilds the sum from the next
// count of each gateway (they republish every live key each second).
type aggregator struct {
	keys  map[string]*aggKey
	dirty map[string]struct{}
}

type aggKey struct {
	end    time.Time
	limit  int64
	counts map[string]int64
	sum    int64
}

func newAggregator() *aggregator {
	return &aggregator{keys: map[string]*aggKey{}, dirty: map[string]struct{}{}}
}

// add merges a count. A count of a window that has ended by now is stale and
// dropped: nothing is ever decided from it.
func (a *aggregator) add(c Count, now time.Time) bool {
	if !c.WindowEnd.After(now) {
		return false
	}
	k := a.keys[c.Key]
	if k == nil {
		k = &aggKey{end: c.WindowEnd, counts: map[string]int64{}}
		a.keys[c.Key] = k
	}
	k.limit = c.Limit
	if old := k.counts[c.Gateway]; c.Count > old {
		k.counts[c.Gateway] = c.Count
		k.sum += c.Count - old
	}
	a.dirty[c.Key] = struct{}{}
	return true
}

// decisions returns a decision for every key that changed since the last
// call (every live key when all is set), and forgets keys whose window
// ended. A decision throttles its key until the window's end once the sum
// reached the limit; before that it carries the counts only, so that the
// gateways can estimate the fleet's count.
func (a *aggregator) decisions(from string, now time.Time, all bool) []Message {
	var out []Message
	emit := func(key string, k *aggKey) {
		m := Message{
			SchemaVersion: SchemaVersion, Type: TypeDecision, From: from, Time: now,
			Key: key, WindowEnd: k.end, Limit: k.limit, Count: k.sum,
			Counts: maps.Clone(k.counts),
		}
		if k.limit > 0 && k.sum >= k.limit {
			m.ThrottledUntil = k.end
		}
		out = append(out, m)
	}
	if all {
		for key, k := range a.keys {
			if !k.end.After(now) {
				delete(a.keys, key)
				continue
			}
			emit(key, k)
		}
	} else {
		for key := range a.dirty {
			if k := a.keys[key]; k != nil && k.end.After(now) {
				emit(key, k)
			}
		}
	}
	clear(a.dirty)
	return out
}

// len is the number of keys held.
func (a *aggregator) len() int { return len(a.keys) }

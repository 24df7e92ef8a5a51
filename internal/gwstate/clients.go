package gwstate

import (
	"fmt"
	"time"

	"github.com/apim-dev/apim/internal/model"
)

// Client-wide revocations: when an OAuth client's secret is regenerated,
// every access token of that client issued before then is revoked, JWTs and
// opaque tokens alike, without a jti each. The index keeps, per client id,
// the time before which its tokens were issued and when the entry may be
// forgotten (every such token has expired by then, plus RevocationGrace).

// clientRevocation revokes a client's tokens whose iat is before before.
type clientRevocation struct {
	before int64 // unix second: tokens issued (iat) before it are refused
	until  int64 // unix second after which the entry may be forgotten
}

// RevokedClient reports whether an access token of the client issued at
// iat (unix seconds; 0 when the token says nothing) was revoked by a
// client-wide revocation. It does not allocate, and with no client
// revocations held it does not hash.
func (x *Index) RevokedClient(clientID string, iat int64) bool {
	if x.clientRevs.n == 0 || clientID == "" {
		return false
	}
	r, ok := x.clientRevs.get(clientID)
	return ok && iat < r.before
}

// clientRevocationOf checks a client-wide revocation and converts it.
func clientRevocationOf(r model.Revocation) (clientRevocation, error) {
	if r.IssuedBefore.IsZero() || r.ExpiresAt.IsZero() {
		return clientRevocation{}, fmt.Errorf("client revocation of %s: issuedBefore and expiresAt %w", r.ClientID, model.ErrRequired)
	}
	return clientRevocation{before: r.IssuedBefore.Unix(), until: forgetAt(r.ExpiresAt)}, nil
}

// merged is the revocation that holds both a and b: a client revoked twice
// refuses tokens issued before the later time, until the later expiry. It
// makes applying events order-safe and idempotent without generations.
func (a clientRevocation) merged(b clientRevocation) clientRevocation {
	return clientRevocation{before: max(a.before, b.before), until: max(a.until, b.until)}
}

// withClientRevocation returns m with r merged in for clientID, pruning
// the copied shard of entries that may be forgotten at now; ok is false
// when r changes nothing.
func withClientRevocation(m shardedMap[string, clientRevocation], clientID string, r clientRevocation, now time.Time) (shardedMap[string, clientRevocation], bool) {
	unix := now.Unix()
	if r.until <= unix {
		return m, false // every token it revokes has expired
	}
	if cur, ok := m.get(clientID); ok {
		next := cur.merged(r)
		if next == cur {
			return m, false
		}
		r = next
	}
	return m.withFiltered(clientID, r, func(_ string, e clientRevocation) bool { return e.until > unix }), true
}

// loadClientRevocations builds the client revocations of a full load: those
// of the previous index (never undone) merged with the loaded ones, less
// those that may be forgotten at now.
func loadClientRevocations(prev *Index, x *Index, loaded []model.Revocation, now time.Time) {
	unix := now.Unix()
	prev.clientRevs.each(func(id string, r clientRevocation) {
		if r.until > unix {
			x.clientRevs.put(id, r)
		}
	})
	for _, lr := range loaded {
		if lr.ClientID == "" {
			continue
		}
		r, err := clientRevocationOf(lr)
		if err != nil || r.until <= unix {
			continue
		}
		if cur, ok := x.clientRevs.get(lr.ClientID); ok {
			r = cur.merged(r)
		}
		x.clientRevs.put(lr.ClientID, r)
	}
}

// Package gwstate is the gateway sidecar's in-memory state: an immutable
// index of deployments, applications, key mappings, subscriptions and
// throttling policies that ext_authz and the rate-limit service read on every
// request, swapped atomically as entity events arrive.
//
// Copy-on-write: an Index is never changed once published. Each large map is
// split into 256 shards behind one pointer array, so an event copies the
// array (2 KB) and the one shard the entity lives in (for 100,000
// subscriptions, about 400 entries) rather than the whole map. This keeps an
// event well under a millisecond without a persistent-tree dependency, and
// keeps reads to one hash and two map lookups.
//
// Revoked access tokens are kept by jti until they expire (plus
// RevocationGrace), and pruned after: the set is bounded by the revocation
// rate times the token lifetime, not by how long the gateway runs.
package gwstate

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/model"
)

// ErrUnknownKind is returned by Apply for an event of a kind the gateway
// does not keep.
var ErrUnknownKind = errors.New("unknown event kind")

type subKey struct{ app, api string }

type policyKey struct{ level, name string }

// Index is one immutable view of the gateway state. Its lookups do not
// allocate.
type Index struct {
	environment   string
	deployments   shardedMap[string, *model.Deployment]
	applications  shardedMap[string, *model.Application]
	keyMappings   shardedMap[string, *model.KeyMapping]
	subscriptions shardedMap[subKey, *model.Subscription]
	policies      shardedMap[policyKey, *model.Policy]
	deny          *denySet
	denyAll       map[string]*model.DenyPolicy // every deny policy, by id; never changed once published
	revoked       shardedMap[string, int64]    // revoked jti → unix second after which it may be forgotten
	customs       []*model.Policy              // custom rules, by name; never changed once published

	// clientRevs: client id → its tokens issued before a time are revoked (clients.go)
	clientRevs shardedMap[string, clientRevocation]
	// keyManagers are the external key managers (keymanagers.go).
	keyManagers *keyManagerSet
}

func newIndex(env string) *Index {
	return &Index{
		environment:   env,
		deployments:   newShardedMap[string, *model.Deployment](hashString),
		applications:  newShardedMap[string, *model.Application](hashString),
		keyMappings:   newShardedMap[string, *model.KeyMapping](hashString),
		subscriptions: newShardedMap[subKey, *model.Subscription](func(k subKey) uint64 { return hashPair(k.app, k.api) }),
		policies:      newShardedMap[policyKey, *model.Policy](func(k policyKey) uint64 { return hashPair(k.level, k.name) }),
		deny:          newDenySet(nil),
		denyAll:       map[string]*model.DenyPolicy{},
		revoked:       newShardedMap[string, int64](hashString),
		clientRevs:    newShardedMap[string, clientRevocation](hashString),
	}
}

// Environment is the gateway environment the state is for.
func (x *Index) Environment() string { return x.environment }

// Deployment returns the deployment of an API in this environment.
func (x *Index) Deployment(apiID string) (*model.Deployment, bool) {
	return x.deployments.get(apiID)
}

// Application returns an application by id.
func (x *Index) Application(id string) (*model.Application, bool) {
	return x.applications.get(id)
}

// KeyMapping returns the key mapping of an OAuth client (consumer key).
func (x *Index) KeyMapping(consumerKey string) (*model.KeyMapping, bool) {
	return x.keyMappings.get(consumerKey)
}

// Subscription returns an application's subscription to an API.
func (x *Index) Subscription(applicationID, apiID string) (*model.Subscription, bool) {
	return x.subscriptions.get(subKey{applicationID, apiID})
}

// Policy returns a throttling policy by level (model.LevelSubscription, ...)
// and name.
func (x *Index) Policy(level, name string) (*model.Policy, bool) {
	return x.policies.get(policyKey{level, name})
}

// CustomRules returns the custom rules (model.LevelCustom policies) that
// can limit, by name; each has its compiled Rules. The slice must not be
// changed.
func (x *Index) CustomRules() []*model.Policy { return x.customs }

// Revoked reports whether the access token with this jti was revoked. It
// does not allocate, and with no revocations held it does not hash.
func (x *Index) Revoked(jti string) bool {
	if x.revoked.n == 0 || jti == "" {
		return false
	}
	_, ok := x.revoked.get(jti)
	return ok
}

// Counts reports how many entities of each kind the index holds.
func (x *Index) Counts() map[events.Kind]int {
	return map[events.Kind]int{
		events.KindDeployment:   x.deployments.len(),
		events.KindApplication:  x.applications.len(),
		events.KindKeyMapping:   x.keyMappings.len(),
		events.KindSubscription: x.subscriptions.len(),
		events.KindPolicy:       x.policies.len(),
		events.KindDenyPolicy:   len(x.denyAll),
		events.KindKeyManager:   x.keyManagerCount(),
		events.KindRevocation:   x.revoked.len() + x.clientRevs.len(),
	}
}

// RevocationGrace is how long after a revoked token's expiry its jti is
// still kept. It covers the clock leeway ext_authz allows on exp (seconds)
// and clock skew between the key manager and the gateway.
const RevocationGrace = 5 * time.Minute

// pruneEvery is how often, at most, an event triggers a sweep of every
// shard for expired revocations; between sweeps each revocation event
// prunes the shard it copies anyway.
const pruneEvery = time.Minute

// Store holds the current Index. Load is lock-free; Replace and Apply are
// serialised by a mutex and publish a new Index.
type Store struct {
	cur atomic.Pointer[Index]

	mu sync.Mutex
	// gens is the highest generation seen per entity ("kind/id"), deleted
	// entities included: a tombstone that stops a replayed, older upsert
	// from bringing the entity back.
	gens map[string]int64
	// subByID and keyByID find a subscription's or key mapping's slot when
	// a delete event carries only the id.
	subByID map[string]subKey
	keyByID map[string]string

	now       func() time.Time // the clock revocations expire by
	lastPrune time.Time
}

// NewStore returns a store holding an empty index.
func NewStore() *Store {
	s := &Store{gens: map[string]int64{}, subByID: map[string]subKey{}, keyByID: map[string]string{}, now: time.Now}
	s.cur.Store(newIndex(""))
	return s
}

// Load returns the current index. It never blocks.
func (s *Store) Load() *Index { return s.cur.Load() }

func entityKey(kind events.Kind, id string) string { return string(kind) + "/" + id }

func policyID(level, name string) string { return level + "/" + name }

// Replace swaps in the full state st, as loaded from the control plane.
// Generations of the entities in st become the floor for later events. An
// entity that the previous index held and st does not is remembered as
// deleted at its last generation, and earlier tombstones are kept, so
// events replayed after the load cannot bring back what the load removed.
func (s *Store) Replace(st *model.GatewayState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	x := newIndex(st.Environment)
	gens := make(map[string]int64, len(s.gens))
	for k, g := range s.gens { // tombstones and old generations
		gens[k] = g
	}
	subByID := make(map[string]subKey, len(st.Subscriptions))
	keyByID := make(map[string]string, len(st.KeyMappings))
	raise := func(k string, g int64) {
		if g > gens[k] {
			gens[k] = g
		}
	}
	for i := range st.Deployments {
		d := st.Deployments[i]
		if st.Environment != "" && d.Environment != "" && d.Environment != st.Environment {
			continue
		}
		x.deployments.put(d.APIID, &d)
		raise(entityKey(events.KindDeployment, d.APIID), d.API.Generation)
	}
	for i := range st.Applications {
		a := st.Applications[i]
		x.applications.put(a.ID, &a)
		raise(entityKey(events.KindApplication, a.ID), a.Generation)
	}
	for i := range st.KeyMappings {
		k := st.KeyMappings[i]
		slot := model.MappingKey(k.KeyManagerID, k.ConsumerKey)
		x.keyMappings.put(slot, &k)
		keyByID[k.ID] = slot
		raise(entityKey(events.KindKeyMapping, k.ID), k.Generation)
	}
	for i := range st.Subscriptions {
		sub := st.Subscriptions[i]
		key := subKey{sub.ApplicationID, sub.APIID}
		x.subscriptions.put(key, &sub)
		subByID[sub.ID] = key
		raise(entityKey(events.KindSubscription, sub.ID), sub.Generation)
	}
	for i := range st.Policies {
		p := st.Policies[i]
		key := policyKey{p.Level, p.Name}
		if err := compilePolicy(&p); err != nil {
			// Validated when saved, so the control plane and this gateway
			// disagree on the rules: the version in force stays, as Apply
			// keeps it; a first sight goes in without Rules (its default
			// limit only).
			if prev, ok := s.cur.Load().policies.get(key); ok {
				x.policies.put(key, prev)
				continue
			}
		}
		x.policies.put(key, &p)
		raise(entityKey(events.KindPolicy, policyID(p.Level, p.Name)), p.Generation)
	}
	for i := range st.DenyPolicies {
		d := st.DenyPolicies[i]
		x.denyAll[d.ID] = &d
		raise(entityKey(events.KindDenyPolicy, d.ID), d.Generation)
	}
	x.deny = newDenySet(x.denyAll)
	x.customs = customRules(x.policies)
	loadKeyManagers(x, st.KeyManagers, raise)
	// Revocations are never undone, so those the previous index held stay
	// beside the loaded ones; only expired ones go.
	now := s.now()
	keep := unexpired(now)
	s.cur.Load().revoked.each(func(jti string, until int64) {
		if keep(jti, until) {
			x.revoked.put(jti, until)
		}
	})
	for _, r := range st.Revocations {
		if until := forgetAt(r.ExpiresAt); r.JTI != "" && keep(r.JTI, until) {
			if cur, ok := x.revoked.get(r.JTI); !ok || cur < until {
				x.revoked.put(r.JTI, until)
			}
		}
	}
	loadClientRevocations(s.cur.Load(), x, st.Revocations, now)
	s.lastPrune = now
	// Entities the load dropped stay dropped: their generation is already
	// in gens from when they were applied, so only the index changes.
	s.gens, s.subByID, s.keyByID = gens, subByID, keyByID
	s.cur.Store(x)
}

// Apply applies one entity event: an upsert or a delete of a deployment,
// application, key mapping, subscription or policy. An event whose
// generation is not greater than the one held for its entity is dropped
// (nil error). API and environment events are ignored: routes carry what
// the gateway needs.
func (s *Store) Apply(ev events.Event) error {
	if ev.Op != events.OpUpsert && ev.Op != events.OpDelete {
		return fmt.Errorf("apply %s event %s: unknown op %q", ev.Kind, ev.ID, ev.Op)
	}
	del := ev.Op == events.OpDelete
	s.mu.Lock()
	defer s.mu.Unlock()
	x := *s.cur.Load() // shallow copy: shares every map until one is changed

	fresh := func(id string) bool {
		k := entityKey(ev.Kind, id)
		if ev.Generation <= s.gens[k] {
			return false
		}
		s.gens[k] = ev.Generation
		return true
	}

	switch ev.Kind {
	case events.KindAPI, events.KindEnvironment:
		return nil
	case events.KindDeployment:
		var d model.Deployment
		if err := decode(ev, &d); err != nil {
			return err
		}
		if d.APIID == "" {
			d.APIID = ev.ID
		}
		env := d.Environment
		if env == "" {
			env = ev.Environment
		}
		if env != "" && x.environment != "" && env != x.environment {
			return nil // another environment's deployment
		}
		if !fresh(d.APIID) {
			return nil
		}
		if del {
			x.deployments = x.deployments.without(d.APIID)
		} else {
			x.deployments = x.deployments.with(d.APIID, &d)
		}
	case events.KindApplication:
		var a model.Application
		if err := decode(ev, &a); err != nil {
			return err
		}
		if a.ID == "" {
			a.ID = ev.ID
		}
		if !fresh(a.ID) {
			return nil
		}
		if del {
			x.applications = x.applications.without(a.ID)
		} else {
			x.applications = x.applications.with(a.ID, &a)
		}
	case events.KindKeyMapping:
		var k model.KeyMapping
		if err := decode(ev, &k); err != nil {
			return err
		}
		if k.ID == "" {
			k.ID = ev.ID
		}
		if !del && k.ConsumerKey == "" {
			return fmt.Errorf("apply key_mapping event %s: consumerKey %w", ev.ID, model.ErrRequired)
		}
		if !fresh(k.ID) {
			return nil
		}
		// An external client's mapping lives under its key manager's id
		// too (model.MappingKey).
		slot := model.MappingKey(k.KeyManagerID, k.ConsumerKey)
		// Free the slot this mapping held before, if its consumer key
		// changed or it is being deleted.
		if prev, ok := s.keyByID[k.ID]; ok && (del || prev != slot) {
			if cur, ok := x.keyMappings.get(prev); ok && cur.ID == k.ID {
				x.keyMappings = x.keyMappings.without(prev)
			}
			delete(s.keyByID, k.ID)
		}
		if !del {
			if cur, ok := x.keyMappings.get(slot); ok && cur.ID != k.ID {
				delete(s.keyByID, cur.ID)
			}
			x.keyMappings = x.keyMappings.with(slot, &k)
			s.keyByID[k.ID] = slot
		}
	case events.KindSubscription:
		var sub model.Subscription
		if err := decode(ev, &sub); err != nil {
			return err
		}
		if sub.ID == "" {
			sub.ID = ev.ID
		}
		key := subKey{sub.ApplicationID, sub.APIID}
		if !del && (key.app == "" || key.api == "") {
			return fmt.Errorf("apply subscription event %s: applicationId and apiId %w", ev.ID, model.ErrRequired)
		}
		if !fresh(sub.ID) {
			return nil
		}
		if prev, ok := s.subByID[sub.ID]; ok && (del || prev != key) {
			if cur, ok := x.subscriptions.get(prev); ok && cur.ID == sub.ID {
				x.subscriptions = x.subscriptions.without(prev)
			}
			delete(s.subByID, sub.ID)
		}
		if !del {
			if cur, ok := x.subscriptions.get(key); ok && cur.ID != sub.ID {
				delete(s.subByID, cur.ID)
			}
			x.subscriptions = x.subscriptions.with(key, &sub)
			s.subByID[sub.ID] = key
		}
	case events.KindPolicy:
		var p model.Policy
		if err := decode(ev, &p); err != nil {
			return err
		}
		if p.Level == "" && p.Name == "" { // a delete may carry only "level:name" as its id
			var ok bool
			if p.Level, p.Name, ok = strings.Cut(ev.ID, ":"); !ok {
				p.Level, p.Name, _ = strings.Cut(ev.ID, "/")
			}
		}
		if p.Level == "" || p.Name == "" {
			return fmt.Errorf("apply policy event %s: level and name %w", ev.ID, model.ErrRequired)
		}
		// Compiled before the generation is taken: a policy this gateway
		// cannot compile leaves the previous one in force, and a later
		// event or load may still bring it.
		if !del {
			if err := compilePolicy(&p); err != nil {
				return err
			}
		}
		if !fresh(policyID(p.Level, p.Name)) {
			return nil
		}
		key := policyKey{p.Level, p.Name}
		if del {
			x.policies = x.policies.without(key)
		} else {
			x.policies = x.policies.with(key, &p)
		}
		if p.Level == model.LevelCustom {
			x.customs = customRules(x.policies)
		}
	case events.KindRevocation:
		if del {
			return nil // a revocation is never undone
		}
		var r model.Revocation
		if err := decode(ev, &r); err != nil {
			return err
		}
		if r.ClientID != "" { // a client-wide revocation (clients.go)
			cr, err := clientRevocationOf(r)
			if err != nil {
				return fmt.Errorf("apply revocation event %s: %w", ev.ID, err)
			}
			var changed bool
			if x.clientRevs, changed = withClientRevocation(x.clientRevs, r.ClientID, cr, s.now()); !changed {
				return nil
			}
			break
		}
		if r.JTI == "" {
			r.JTI = ev.ID
		}
		if r.JTI == "" || r.ExpiresAt.IsZero() {
			return fmt.Errorf("apply revocation event %s: jti and expiresAt %w", ev.ID, model.ErrRequired)
		}
		now := s.now()
		keep := unexpired(now)
		until := forgetAt(r.ExpiresAt)
		if !keep(r.JTI, until) {
			return nil // the token has expired: refused for that already
		}
		if cur, ok := x.revoked.get(r.JTI); ok && cur >= until {
			return nil // a duplicate
		}
		x.revoked = x.revoked.withFiltered(r.JTI, until, keep)
		if now.Sub(s.lastPrune) >= pruneEvery {
			x.revoked = x.revoked.filtered(keep)
			s.lastPrune = now
		}
	case events.KindDenyPolicy:
		var d model.DenyPolicy
		if err := decode(ev, &d); err != nil {
			return err
		}
		if d.ID == "" {
			d.ID = ev.ID
		}
		if !fresh(d.ID) {
			return nil
		}
		all := make(map[string]*model.DenyPolicy, len(x.denyAll)+1)
		for id, p := range x.denyAll {
			all[id] = p
		}
		if del {
			delete(all, d.ID)
		} else {
			all[d.ID] = &d
		}
		x.denyAll, x.deny = all, newDenySet(all)
	case events.KindKeyManager:
		if changed, err := applyKeyManager(&x, ev, fresh); err != nil || !changed {
			return err
		}
	default:
		return fmt.Errorf("apply event %s: %w %q", ev.ID, ErrUnknownKind, ev.Kind)
	}
	s.cur.Store(&x)
	return nil
}

// forgetAt is the unix second from which a revocation of a token expiring
// at exp may be forgotten.
func forgetAt(exp time.Time) int64 { return exp.Add(RevocationGrace).Unix() }

// unexpired keeps the revocations that may not be forgotten at now.
func unexpired(now time.Time) func(string, int64) bool {
	unix := now.Unix()
	return func(_ string, until int64) bool { return until > unix }
}

func decode(ev events.Event, v any) error {
	if len(ev.Data) == 0 {
		if ev.Op == events.OpDelete {
			return nil // the id is enough
		}
		return fmt.Errorf("apply %s event %s: data %w", ev.Kind, ev.ID, model.ErrRequired)
	}
	if err := json.Unmarshal(ev.Data, v); err != nil {
		return fmt.Errorf("decode %s event %s: %w", ev.Kind, ev.ID, err)
	}
	return nil
}

// compilePolicy sets a policy's compiled Rules. Policies are validated when
// saved, so an error here means the control plane and the gateway disagree
// on the rules: the policy is refused rather than enforced differently.
func compilePolicy(p *model.Policy) error {
	r, err := p.Compile()
	if err != nil {
		return fmt.Errorf("compile policy %s/%s: %w", p.Level, p.Name, err)
	}
	p.Rules = r
	return nil
}

// customRules lists the custom rules of policies that can limit, by name:
// an unlimited one, or one this gateway could not compile, is never
// evaluated.
func customRules(policies shardedMap[policyKey, *model.Policy]) []*model.Policy {
	var out []*model.Policy
	policies.each(func(k policyKey, p *model.Policy) {
		if k.level == model.LevelCustom && p.Rules != nil && !p.Unlimited() {
			out = append(out, p)
		}
	})
	slices.SortFunc(out, func(a, b *model.Policy) int { return strings.Compare(a.Name, b.Name) })
	return out
}

package gwstate

import (
	"fmt"
	"slices"
	"strings"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/model"
)

// keyManagerSet is the external key managers, by id and by issuer. It is
// rebuilt whole on every key_manager event (they are few) and never
// changed once published.
type keyManagerSet struct {
	byID     map[string]*model.KeyManager
	byIssuer map[string]*model.KeyManager
	sorted   []*model.KeyManager // by name, then id
}

func newKeyManagerSet(all map[string]*model.KeyManager) *keyManagerSet {
	s := &keyManagerSet{byID: all, byIssuer: make(map[string]*model.KeyManager, len(all))}
	for _, km := range all {
		s.byIssuer[km.Issuer] = km
		s.sorted = append(s.sorted, km)
	}
	slices.SortFunc(s.sorted, func(a, b *model.KeyManager) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return s
}

// KeyManagerByIssuer returns the external key manager whose tokens carry
// iss, enabled or not.
func (x *Index) KeyManagerByIssuer(iss string) (*model.KeyManager, bool) {
	if x.keyManagers == nil {
		return nil, false
	}
	km, ok := x.keyManagers.byIssuer[iss]
	return km, ok
}

// KeyManager returns an external key manager by id, enabled or not.
func (x *Index) KeyManager(id string) (*model.KeyManager, bool) {
	if x.keyManagers == nil {
		return nil, false
	}
	km, ok := x.keyManagers.byID[id]
	return km, ok
}

// KeyManagers returns every external key manager, by name. The slice must
// not be changed.
func (x *Index) KeyManagers() []*model.KeyManager {
	if x.keyManagers == nil {
		return nil
	}
	return x.keyManagers.sorted
}

// ExternalKeyMapping returns the key mapping of the client clientID of the
// external key manager keyManagerID, while that key manager exists and is
// enabled. mappingKey is model.MappingKey(keyManagerID, clientID), which
// the caller computes once per token, so that this does not allocate.
func (x *Index) ExternalKeyMapping(keyManagerID, mappingKey string) (*model.KeyMapping, bool) {
	km, ok := x.KeyManager(keyManagerID)
	if !ok || !km.Enabled {
		return nil, false
	}
	k, ok := x.keyMappings.get(mappingKey)
	if !ok || k.KeyManagerID != keyManagerID {
		return nil, false
	}
	return k, true
}

func (x *Index) keyManagerCount() int {
	if x.keyManagers == nil {
		return 0
	}
	return len(x.keyManagers.byID)
}

// loadKeyManagers puts the key managers of a full load into x.
func loadKeyManagers(x *Index, kms []model.KeyManager, raise func(string, int64)) {
	all := make(map[string]*model.KeyManager, len(kms))
	for i := range kms {
		km := kms[i]
		all[km.ID] = &km
		raise(entityKey(events.KindKeyManager, km.ID), km.Generation)
	}
	x.keyManagers = newKeyManagerSet(all)
}

// applyKeyManager applies a key_manager event to x; it reports whether x
// changed. fresh is Apply's generation check.
func applyKeyManager(x *Index, ev events.Event, fresh func(string) bool) (bool, error) {
	var km model.KeyManager
	if err := decode(ev, &km); err != nil {
		return false, err
	}
	if km.ID == "" {
		km.ID = ev.ID
	}
	del := ev.Op == events.OpDelete
	if km.ID == "" || (!del && km.Issuer == "") {
		return false, fmt.Errorf("apply key_manager event %s: id and issuer %w", ev.ID, model.ErrRequired)
	}
	if !fresh(km.ID) {
		return false, nil
	}
	var cur map[string]*model.KeyManager
	if x.keyManagers != nil {
		cur = x.keyManagers.byID
	}
	all := make(map[string]*model.KeyManager, len(cur)+1)
	for id, k := range cur {
		all[id] = k
	}
	if del {
		delete(all, km.ID)
	} else {
		all[km.ID] = &km
	}
	x.keyManagers = newKeyManagerSet(all)
	return true, nil
}

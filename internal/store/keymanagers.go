package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/model"
)

// CreateKeyManager stores an external key manager and appends its event.
// Its name and its issuer are unique (ErrConflict).
func (s *Store) CreateKeyManager(ctx context.Context, km model.KeyManager) (*model.KeyManager, error) {
	if err := km.Validate(); err != nil {
		return nil, fmt.Errorf("create key manager %s: %w", km.Name, invalid("%s", joinLines(err)))
	}
	km.ID = newID()
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		claims, endpoints, err := encodeKeyManager(&km)
		if err != nil {
			return err
		}
		err = tx.QueryRow(ctx, `INSERT INTO key_managers
			(id, name, display_name, type, description, enabled, issuer, well_known_endpoint, jwks_uri,
			 consumer_key_claim, scopes_claim, claim_mapping, map_consumer_apps, endpoints)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING generation`,
			km.ID, km.Name, km.DisplayName, km.Type, km.Description, km.Enabled, km.Issuer, km.WellKnownEndpoint, km.JWKSURI,
			km.ConsumerKeyClaim, km.ScopesClaim, claims, km.MapConsumerApps, endpoints,
		).Scan(&km.Generation)
		if err := keyManagerConflict(&km, err); err != nil {
			return err
		}
		return emit(ctx, tx, events.KindKeyManager, events.OpUpsert, km.ID, "", km.Generation, km)
	})
	if err != nil {
		return nil, fmt.Errorf("create key manager %s: %w", km.Name, err)
	}
	return &km, nil
}

// UpdateKeyManager replaces the key manager whose id (or name) is id with
// km and appends its event; the name cannot change. Disabling it keeps its
// key mappings: the gateways refuse its tokens while it is disabled.
func (s *Store) UpdateKeyManager(ctx context.Context, id string, km model.KeyManager) (*model.KeyManager, error) {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		cur, err := getKeyManager(ctx, tx, id, true)
		if err != nil {
			return err
		}
		if km.Name == "" {
			km.Name = cur.Name
		}
		if km.Name != cur.Name {
			return invalid("name cannot change: it is %s", cur.Name)
		}
		km.ID = cur.ID
		if err := km.Validate(); err != nil {
			return invalid("%s", joinLines(err))
		}
		claims, endpoints, err := encodeKeyManager(&km)
		if err != nil {
			return err
		}
		err = tx.QueryRow(ctx, `UPDATE key_managers SET
			display_name = $2, type = $3, description = $4, enabled = $5, issuer = $6, well_known_endpoint = $7,
			jwks_uri = $8, consumer_key_claim = $9, scopes_claim = $10, claim_mapping = $11, map_consumer_apps = $12,
			endpoints = $13, generation = nextval('generation_seq'), updated_at = now()
			WHERE id = $1 RETURNING generation`,
			km.ID, km.DisplayName, km.Type, km.Description, km.Enabled, km.Issuer, km.WellKnownEndpoint,
			km.JWKSURI, km.ConsumerKeyClaim, km.ScopesClaim, claims, km.MapConsumerApps, endpoints,
		).Scan(&km.Generation)
		if err := keyManagerConflict(&km, err); err != nil {
			return err
		}
		return emit(ctx, tx, events.KindKeyManager, events.OpUpsert, km.ID, "", km.Generation, km)
	})
	if err != nil {
		return nil, fmt.Errorf("update key manager %s: %w", id, err)
	}
	return &km, nil
}

// DeleteKeyManager removes a key manager and the key mappings of its
// clients, appending a delete event for each.
func (s *Store) DeleteKeyManager(ctx context.Context, id string) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		cur, err := getKeyManager(ctx, tx, id, true)
		if err != nil {
			return err
		}
		keys, err := loadKeyMappings(ctx, tx, `WHERE key_manager_id = $1 FOR UPDATE`, cur.ID)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM key_managers WHERE id = $1`, cur.ID); err != nil {
			return fmt.Errorf("delete: %w", err)
		}
		for _, k := range keys {
			if err := emitDelete(ctx, tx, events.KindKeyMapping, k.ID, "", k); err != nil {
				return err
			}
		}
		return emitDelete(ctx, tx, events.KindKeyManager, cur.ID, "", model.KeyManager{ID: cur.ID, Name: cur.Name, Issuer: cur.Issuer})
	})
	if err != nil {
		return fmt.Errorf("delete key manager %s: %w", id, err)
	}
	return nil
}

// GetKeyManager loads a key manager by its id or its name.
func (s *Store) GetKeyManager(ctx context.Context, id string) (*model.KeyManager, error) {
	km, err := getKeyManager(ctx, s.pool, id, false)
	if err != nil {
		return nil, fmt.Errorf("get key manager %s: %w", id, err)
	}
	return km, nil
}

// ListKeyManagers returns the external key managers by name.
func (s *Store) ListKeyManagers(ctx context.Context) ([]model.KeyManager, error) {
	kms, err := loadKeyManagers(ctx, s.pool, `ORDER BY name, id`)
	if err != nil {
		return nil, fmt.Errorf("list key managers: %w", err)
	}
	return kms, nil
}

// MapKeys is WSO2's map-keys: it maps a client of an external key manager
// (by id or name), identified by its client id, to an owner's application
// for one key type, and appends the key mapping's event. secret, when not
// empty, is kept only as its SHA-256. The key manager must exist, be
// enabled and allow mapping (ErrInvalid, naming keyManager); the
// application must not have keys of that type from that key manager, and
// the client must not be mapped already (ErrConflict).
func (s *Store) MapKeys(ctx context.Context, appID, owner, keyType, keyManager, consumerKey, secret string) (*model.KeyMapping, error) {
	if keyType != model.KeyTypeProduction && keyType != model.KeyTypeSandbox {
		return nil, invalid("keyType must be %s or %s", model.KeyTypeProduction, model.KeyTypeSandbox)
	}
	if consumerKey == "" {
		return nil, invalid("consumerKey is required")
	}
	var km *model.KeyMapping
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := getApplication(ctx, tx, appID, owner, true); err != nil {
			return err
		}
		// FOR SHARE: a concurrent delete or disable of the key manager
		// waits for this mapping, and then sees it.
		kms, err := loadKeyManagers(ctx, tx, keyManagerWhere(keyManager)+` FOR SHARE`, keyManager)
		if err != nil {
			return err
		}
		if len(kms) == 0 {
			return invalid("keyManager %s does not exist", keyManager)
		}
		m := &kms[0]
		switch {
		case !m.Enabled:
			return invalid("keyManager %s is disabled", m.Name)
		case !m.MapConsumerApps:
			return invalid("keyManager %s does not allow mapping OAuth clients (enableMapOAuthConsumerApps is false)", m.Name)
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM key_mappings WHERE application_id = $1 AND key_type = $2 AND key_manager = $3)`,
			appID, keyType, m.Name).Scan(&exists); err != nil {
			return fmt.Errorf("check keys: %w", err)
		}
		if exists {
			return conflict("application %s already has %s keys of key manager %s", appID, keyType, m.Name)
		}
		hash := ""
		if secret != "" {
			sum := sha256.Sum256([]byte(secret))
			hash = hex.EncodeToString(sum[:])
		}
		km = &model.KeyMapping{ID: newID(), ApplicationID: appID, KeyType: keyType, ConsumerKey: consumerKey, KeyManager: m.Name, KeyManagerID: m.ID}
		err = tx.QueryRow(ctx, `INSERT INTO key_mappings (id, application_id, key_type, key_manager, consumer_key, key_manager_id, consumer_secret_hash)
			VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING generation`,
			km.ID, appID, keyType, m.Name, consumerKey, m.ID, hash).Scan(&km.Generation)
		switch code, constraint := pgCode(err); {
		case code == uniqueViolation && constraint == "key_mappings_client_key":
			return conflict("consumerKey %s of key manager %s is already mapped to an application", consumerKey, m.Name)
		case code == uniqueViolation:
			return conflict("application %s already has %s keys of key manager %s", appID, keyType, m.Name)
		case err != nil:
			return fmt.Errorf("write key mapping: %w", err)
		}
		return emit(ctx, tx, events.KindKeyMapping, events.OpUpsert, km.ID, "", km.Generation, km)
	})
	if err != nil {
		return nil, fmt.Errorf("map %s keys of application %s: %w", keyType, appID, err)
	}
	return km, nil
}

// keyManagerWhere selects a key manager by id when ref is a UUID, else by
// name; the argument is $1.
func keyManagerWhere(ref string) string {
	if validID(ref) {
		return `WHERE id::text = $1`
	}
	return `WHERE name = $1`
}

func getKeyManager(ctx context.Context, q querier, id string, forUpdate bool) (*model.KeyManager, error) {
	tail := keyManagerWhere(id)
	if forUpdate {
		tail += ` FOR UPDATE`
	}
	kms, err := loadKeyManagers(ctx, q, tail, id)
	if err != nil {
		return nil, err
	}
	if len(kms) == 0 {
		return nil, notFound("key manager %s does not exist", id)
	}
	return &kms[0], nil
}

func encodeKeyManager(km *model.KeyManager) (claims, endpoints []byte, err error) {
	if km.ClaimMapping == nil {
		km.ClaimMapping = []model.ClaimMapping{}
	}
	if km.Endpoints == nil {
		km.Endpoints = map[string]string{}
	}
	if claims, err = json.Marshal(km.ClaimMapping); err != nil {
		return nil, nil, fmt.Errorf("encode claimMapping: %w", err)
	}
	if endpoints, err = json.Marshal(km.Endpoints); err != nil {
		return nil, nil, fmt.Errorf("encode endpoints: %w", err)
	}
	return claims, endpoints, nil
}

// keyManagerConflict maps a write's unique violations to ErrConflict
// naming the field.
func keyManagerConflict(km *model.KeyManager, err error) error {
	switch code, constraint := pgCode(err); {
	case err == nil:
		return nil
	case code == uniqueViolation && constraint == "key_managers_issuer_key":
		return conflict("issuer %s is already the issuer of another key manager", km.Issuer)
	case code == uniqueViolation:
		return conflict("a key manager named %s already exists", km.Name)
	default:
		return fmt.Errorf("write key manager: %w", err)
	}
}

func loadKeyManagers(ctx context.Context, q querier, tail string, args ...any) ([]model.KeyManager, error) {
	rows, err := q.Query(ctx, `SELECT id::text, name, display_name, type, description, enabled, issuer, well_known_endpoint,
		jwks_uri, consumer_key_claim, scopes_claim, claim_mapping, map_consumer_apps, endpoints, generation
		FROM key_managers `+tail, args...)
	if err != nil {
		return nil, fmt.Errorf("query key managers: %w", err)
	}
	kms, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.KeyManager, error) {
		var km model.KeyManager
		var claims, endpoints []byte
		if err := r.Scan(&km.ID, &km.Name, &km.DisplayName, &km.Type, &km.Description, &km.Enabled, &km.Issuer,
			&km.WellKnownEndpoint, &km.JWKSURI, &km.ConsumerKeyClaim, &km.ScopesClaim, &claims, &km.MapConsumerApps,
			&endpoints, &km.Generation); err != nil {
			return km, err
		}
		if err := json.Unmarshal(claims, &km.ClaimMapping); err != nil {
			return km, fmt.Errorf("key manager %s: claimMapping: %w", km.ID, err)
		}
		if err := json.Unmarshal(endpoints, &km.Endpoints); err != nil {
			return km, fmt.Errorf("key manager %s: endpoints: %w", km.ID, err)
		}
		return km, nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan key managers: %w", err)
	}
	return kms, nil
}

package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/apim-dev/apim/internal/model"
)

// KeyMappingFunc acts on a key mapping's OAuth client (km.ConsumerKey)
// inside tx, the transaction that found the mapping: regenerating its
// secret, changing its token lifetimes.
type KeyMappingFunc func(ctx context.Context, tx pgx.Tx, km *model.KeyMapping) error

// GetKeyMapping returns the key mapping keyMappingID of an owner's
// application. Another owner's application, or a mapping of another
// application, is ErrNotFound, as if absent.
func (s *Store) GetKeyMapping(ctx context.Context, appID, keyMappingID, owner string) (*model.KeyMapping, error) {
	km, err := getKeyMapping(ctx, s.pool, appID, keyMappingID, owner, false)
	if err != nil {
		return nil, fmt.Errorf("get key mapping %s of application %s: %w", keyMappingID, appID, err)
	}
	return km, nil
}

// WithKeyMapping finds the key mapping keyMappingID of an owner's
// application, as GetKeyMapping does, and calls f with it in the same
// transaction, which locks the application row: f's writes
// commit, with any event they append, only if the mapping still exists.
func (s *Store) WithKeyMapping(ctx context.Context, appID, keyMappingID, owner string, f KeyMappingFunc) (*model.KeyMapping, error) {
	var km *model.KeyMapping
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		if km, err = getKeyMapping(ctx, tx, appID, keyMappingID, owner, true); err != nil {
			return err
		}
		// f acts on one of our OAuth clients by its id: a mapped client
		// of an external key manager is not ours, though its id may be
		// (keymanagers.go).
		if km.KeyManagerID != "" {
			return invalid("keyMappingId %s maps a client of key manager %s, which manages its grant types, lifetimes and secret", km.ID, km.KeyManager)
		}
		return f(ctx, tx, km)
	})
	if err != nil {
		return nil, fmt.Errorf("key mapping %s of application %s: %w", keyMappingID, appID, err)
	}
	return km, nil
}

func getKeyMapping(ctx context.Context, q querier, appID, keyMappingID, owner string, forUpdate bool) (*model.KeyMapping, error) {
	if _, err := getApplication(ctx, q, appID, owner, forUpdate); err != nil {
		return nil, err
	}
	if !validID(keyMappingID) {
		return nil, notFound("key mapping %q does not exist", keyMappingID)
	}
	keys, err := loadKeyMappings(ctx, q, `WHERE id = $1 AND application_id = $2`, keyMappingID, appID)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, notFound("key mapping %s of application %s does not exist", keyMappingID, appID)
	}
	return &keys[0], nil
}

// loadClientRevocations returns the client-wide revocations (regenerated
// secrets) whose tokens have not all expired.
func loadClientRevocations(ctx context.Context, q querier) ([]model.Revocation, error) {
	rows, err := q.Query(ctx, `SELECT client_id, issued_before, expires_at FROM revoked_clients
		WHERE expires_at > now() ORDER BY client_id`)
	if err != nil {
		return nil, fmt.Errorf("query revoked clients: %w", err)
	}
	revs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.Revocation, error) {
		var v model.Revocation
		err := r.Scan(&v.ClientID, &v.IssuedBefore, &v.ExpiresAt)
		v.IssuedBefore, v.ExpiresAt = v.IssuedBefore.UTC(), v.ExpiresAt.UTC()
		return v, err
	})
	if err != nil {
		return nil, fmt.Errorf("scan revoked clients: %w", err)
	}
	return revs, nil
}

package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/apim-dev/apim/internal/model"
)

// MaxDefinitionBytes bounds a stored OpenAPI definition.
const MaxDefinitionBytes = 4 << 20

// APIDefinition returns the OpenAPI definition (JSON) stored with an API,
// "" when it has none.
func (s *Store) APIDefinition(ctx context.Context, id string) (string, error) {
	if !validID(id) {
		return "", notFound("api %q does not exist", id)
	}
	var def string
	err := s.pool.QueryRow(ctx, `SELECT definition FROM apis WHERE id = $1`, id).Scan(&def)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", notFound("api %s does not exist", id)
	}
	if err != nil {
		return "", fmt.Errorf("definition of api %s: %w", id, err)
	}
	return def, nil
}

// PutAPIWithDefinition stores api, created when its ID is empty and
// updated otherwise (as CreateAPI and UpdateAPI, with their checks and
// events), with the OpenAPI definition its operations came from, in one
// transaction.
func (s *Store) PutAPIWithDefinition(ctx context.Context, api model.API, definition string) (*model.API, error) {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		if api.ID == "" {
			err = createAPI(ctx, tx, &api)
		} else {
			err = updateAPI(ctx, tx, &api)
		}
		if err != nil {
			return err
		}
		return setDefinition(ctx, tx, api.ID, definition)
	})
	if err != nil {
		return nil, fmt.Errorf("store api %s %s with its definition: %w", api.Name, api.Version, err)
	}
	return &api, nil
}

// setDefinition keeps definition as the OpenAPI definition of API id.
func setDefinition(ctx context.Context, tx pgx.Tx, id, definition string) error {
	if len(definition) > MaxDefinitionBytes {
		return invalid("the definition is %d bytes, more than %d", len(definition), MaxDefinitionBytes)
	}
	if _, err := tx.Exec(ctx, `UPDATE apis SET definition = $2 WHERE id = $1`, id, definition); err != nil {
		return fmt.Errorf("store definition: %w", err)
	}
	return nil
}

package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/model"
)

const environmentColumns = `id, name, display_name, description, provider, type, gateway_type, vhosts, additional_properties, read_only, generation`

func scanEnvironment(r pgx.Row) (model.Environment, error) {
	var e model.Environment
	err := r.Scan(&e.ID, &e.Name, &e.DisplayName, &e.Description, &e.Provider, &e.Type, &e.GatewayType,
		&e.VHosts, &e.AdditionalProperties, &e.ReadOnly, &e.Generation)
	return e, err
}

// ListEnvironments returns every gateway environment by name.
func (s *Store) ListEnvironments(ctx context.Context) ([]model.Environment, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+environmentColumns+` FROM gateway_environments ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list environments: %w", err)
	}
	envs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.Environment, error) { return scanEnvironment(r) })
	if err != nil {
		return nil, fmt.Errorf("list environments: %w", err)
	}
	return envs, nil
}

// CreateEnvironment stores a new gateway environment and appends its
// environment event. A name in use is ErrConflict.
func (s *Store) CreateEnvironment(ctx context.Context, e model.Environment) (*model.Environment, error) {
	e.ID, e.ReadOnly = newID(), false
	defaultEnvironment(&e)
	if err := e.Validate(); err != nil {
		return nil, invalid("%s", joinLines(err))
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `
			INSERT INTO gateway_environments (id, name, display_name, description, provider, type, gateway_type, vhosts,
				additional_properties, vhost)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING generation`,
			e.ID, e.Name, e.DisplayName, e.Description, e.Provider, e.Type, e.GatewayType, e.VHosts,
			e.AdditionalProperties, e.VHosts[0].Host).Scan(&e.Generation)
		if code, _ := pgCode(err); code == uniqueViolation {
			return conflict("a gateway environment named %s already exists", e.Name)
		}
		if err != nil {
			return fmt.Errorf("insert environment: %w", err)
		}
		return emit(ctx, tx, events.KindEnvironment, events.OpUpsert, e.ID, e.Name, e.Generation, e)
	})
	if err != nil {
		return nil, fmt.Errorf("create environment %s: %w", e.Name, err)
	}
	return &e, nil
}

// UpdateEnvironment replaces what may change of an environment: everything
// but its id and name (the node.cluster its Envoys are started with). A
// read-only environment is ErrConflict.
func (s *Store) UpdateEnvironment(ctx context.Context, e model.Environment) (*model.Environment, error) {
	var out model.Environment
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		cur, err := lockEnvironment(ctx, tx, e.ID)
		if err != nil {
			return err
		}
		if e.Name != "" && e.Name != cur.Name {
			return invalid("name cannot change (it is the node.cluster of the environment's Envoys): %s", cur.Name)
		}
		e.Name, e.ReadOnly = cur.Name, false
		defaultEnvironment(&e)
		if err := e.Validate(); err != nil {
			return invalid("%s", joinLines(err))
		}
		err = tx.QueryRow(ctx, `
			UPDATE gateway_environments SET display_name = $2, description = $3, provider = $4, type = $5,
				gateway_type = $6, vhosts = $7, additional_properties = $8, vhost = $9, generation = nextval('generation_seq')
			WHERE id = $1 RETURNING `+environmentColumns,
			e.ID, e.DisplayName, e.Description, e.Provider, e.Type, e.GatewayType, e.VHosts, e.AdditionalProperties,
			e.VHosts[0].Host).Scan(&out.ID, &out.Name, &out.DisplayName, &out.Description, &out.Provider, &out.Type,
			&out.GatewayType, &out.VHosts, &out.AdditionalProperties, &out.ReadOnly, &out.Generation)
		if err != nil {
			return fmt.Errorf("update environment: %w", err)
		}
		return emit(ctx, tx, events.KindEnvironment, events.OpUpsert, out.ID, out.Name, out.Generation, out)
	})
	if err != nil {
		return nil, fmt.Errorf("update environment %s: %w", e.ID, err)
	}
	return &out, nil
}

// DeleteEnvironment deletes an environment nothing is deployed to. A
// read-only one, or one with deployments, is ErrConflict naming them.
func (s *Store) DeleteEnvironment(ctx context.Context, id string) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		cur, err := lockEnvironment(ctx, tx, id)
		if err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM api_deployments WHERE environment = $1`, cur.Name).Scan(&n); err != nil {
			return fmt.Errorf("count deployments: %w", err)
		}
		if n > 0 {
			return conflict("gateway environment %s has %d API deployments; undeploy them first", cur.Name, n)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM gateway_environments WHERE id = $1`, id); err != nil {
			return fmt.Errorf("delete environment: %w", err)
		}
		return emitDelete(ctx, tx, events.KindEnvironment, id, cur.Name, model.Environment{ID: id, Name: cur.Name})
	})
	if err != nil {
		return fmt.Errorf("delete environment %s: %w", id, err)
	}
	return nil
}

// lockEnvironment loads a changeable environment for update.
func lockEnvironment(ctx context.Context, tx pgx.Tx, id string) (*model.Environment, error) {
	if !validID(id) {
		return nil, notFound("gateway environment %q does not exist", id)
	}
	e, err := scanEnvironment(tx.QueryRow(ctx, `SELECT `+environmentColumns+` FROM gateway_environments WHERE id = $1 FOR UPDATE`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("gateway environment %s does not exist", id)
	}
	if err != nil {
		return nil, fmt.Errorf("load environment: %w", err)
	}
	if e.ReadOnly {
		return nil, conflict("gateway environment %s is read-only: it comes with apim's configuration", e.Name)
	}
	return &e, nil
}

func defaultEnvironment(e *model.Environment) {
	if e.DisplayName == "" {
		e.DisplayName = e.Name
	}
	if e.Provider == "" {
		e.Provider = "wso2"
	}
	if e.Type == "" {
		e.Type = "hybrid"
	}
	if e.GatewayType == "" {
		e.GatewayType = "Regular"
	}
	if e.AdditionalProperties == nil {
		e.AdditionalProperties = []model.Property{}
	}
}

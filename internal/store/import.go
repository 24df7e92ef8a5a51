package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/apim-dev/apim/internal/model"
)

// ImportOptions says how ImportAPI stores an API from an apictl project.
type ImportOptions struct {
	// Overwrite updates the API with the same name and version when there
	// is one (its provider and lifecycle status stay); without it, an API
	// with the same name and version, or context and version, is ErrConflict.
	Overwrite bool
	// Targets are the gateway environments to deploy a new revision of the
	// imported API to; none means no revision is made.
	Targets []EnvTarget
	// Rotate deletes the oldest revision deployed nowhere when the API
	// already has MaxRevisions, as WSO2's rotateRevision; without it that is
	// ErrConflict.
	Rotate bool
	// RevisionDescription describes the new revision.
	RevisionDescription string
	// Definition is the OpenAPI definition (JSON) kept with the API, as
	// PutAPIWithDefinition; "" for none.
	Definition string
}

// ImportResult is what ImportAPI stored.
type ImportResult struct {
	API      *model.API
	Created  bool      // a new API, not an update
	Revision *Revision // nil when no target was given
}

// ImportAPI creates api, or with opts.Overwrite updates the API of the same
// name and version, then freezes a revision and deploys it to opts.Targets,
// all in one transaction: an unknown environment, or any other failure,
// stores nothing. The writes are those of CreateAPI or UpdateAPI,
// CreateRevision and Deploy, with their checks and events.
func (s *Store) ImportAPI(ctx context.Context, api model.API, opts ImportOptions) (*ImportResult, error) {
	var res ImportResult
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var existing string
		if opts.Overwrite {
			err := tx.QueryRow(ctx, `SELECT id FROM apis WHERE name = $1 AND version = $2 FOR UPDATE`, api.Name, api.Version).Scan(&existing)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("find api: %w", err)
			}
		}
		if existing != "" {
			api.ID = existing
			if err := updateAPI(ctx, tx, &api); err != nil {
				return err
			}
		} else {
			api.ID = ""
			if err := createAPI(ctx, tx, &api); err != nil {
				return err
			}
			res.Created = true
		}
		res.API = &api
		if err := setDefinition(ctx, tx, api.ID, opts.Definition); err != nil {
			return err
		}
		if len(opts.Targets) == 0 {
			return nil
		}
		if opts.Rotate {
			if err := rotateRevisions(ctx, tx, api.ID); err != nil {
				return err
			}
		}
		rev, err := createRevision(ctx, tx, api.ID, opts.RevisionDescription)
		if err != nil {
			return err
		}
		res.Revision = rev
		return deploy(ctx, tx, api.ID, rev.ID, opts.Targets)
	})
	if err != nil {
		return nil, fmt.Errorf("import api %s %s: %w", api.Name, api.Version, err)
	}
	return &res, nil
}

// rotateRevisions makes room for one more revision of apiID by deleting its
// oldest revision that is deployed nowhere, when it has MaxRevisions.
func rotateRevisions(ctx context.Context, tx pgx.Tx, apiID string) error {
	var count int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM api_revisions WHERE api_id = $1`, apiID).Scan(&count); err != nil {
		return fmt.Errorf("count revisions: %w", err)
	}
	if count < MaxRevisions {
		return nil
	}
	tag, err := tx.Exec(ctx, `
		DELETE FROM api_revisions WHERE id = (
			SELECT r.id FROM api_revisions r
			WHERE r.api_id = $1 AND NOT EXISTS (SELECT 1 FROM api_deployments d WHERE d.revision_id = r.id)
			ORDER BY r.number LIMIT 1)`, apiID)
	if err != nil {
		return fmt.Errorf("rotate revisions: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return conflict("api %s has the maximum of %d revisions, all deployed; undeploy one first", apiID, MaxRevisions)
	}
	return nil
}

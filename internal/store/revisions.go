package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/model"
)

// MaxRevisions is how many revisions an API may have, as in WSO2.
const MaxRevisions = 5

// Revision is a frozen copy of an API definition.
type Revision struct {
	ID          string
	APIID       string
	Number      int
	Description string
	CreatedAt   time.Time
	API         model.API        // the definition as it was when frozen
	Deployments []DeploymentInfo // where this revision is deployed
}

// EnvTarget names a gateway environment to deploy to.
type EnvTarget struct {
	Name               string
	VHost              string // empty means the environment's default vhost
	DisplayOnDevportal bool
}

// DeploymentInfo is one row of api_deployments.
type DeploymentInfo struct {
	APIID              string
	RevisionID         string
	Environment        string
	VHost              string
	DisplayOnDevportal bool
	DeployedAt         time.Time
	Generation         int64
}

// CreateRevision freezes the current definition of an API as revision
// max+1. An API has at most MaxRevisions revisions; beyond that ErrConflict.
func (s *Store) CreateRevision(ctx context.Context, apiID, description string) (*Revision, error) {
	var rev *Revision
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		rev, err = createRevision(ctx, tx, apiID, description)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create revision of api %s: %w", apiID, err)
	}
	return rev, nil
}

// createRevision is CreateRevision inside tx.
func createRevision(ctx context.Context, tx pgx.Tx, apiID, description string) (*Revision, error) {
	api, err := getAPI(ctx, tx, apiID, true)
	if err != nil {
		return nil, err
	}
	var count, max int
	if err := tx.QueryRow(ctx, `SELECT count(*), coalesce(max(number), 0) FROM api_revisions WHERE api_id = $1`, apiID).Scan(&count, &max); err != nil {
		return nil, fmt.Errorf("count revisions: %w", err)
	}
	if count >= MaxRevisions {
		return nil, conflict("api %s already has the maximum of %d revisions; delete one first", apiID, MaxRevisions)
	}
	def, err := json.Marshal(api)
	if err != nil {
		return nil, fmt.Errorf("encode definition: %w", err)
	}
	rev := &Revision{ID: newID(), APIID: apiID, Number: max + 1, Description: description, API: *api}
	err = tx.QueryRow(ctx, `
		INSERT INTO api_revisions (id, api_id, number, description, definition)
		VALUES ($1, $2, $3, $4, $5) RETURNING created_at`,
		rev.ID, apiID, rev.Number, description, def).Scan(&rev.CreatedAt)
	if err != nil {
		return nil, fmt.Errorf("write revision: %w", err)
	}
	return rev, nil
}

// ListRevisions returns an API's revisions by number, with where each is
// deployed.
func (s *Store) ListRevisions(ctx context.Context, apiID string) ([]Revision, error) {
	if _, err := getAPI(ctx, s.pool, apiID, false); err != nil {
		return nil, fmt.Errorf("list revisions of api %s: %w", apiID, err)
	}
	rows, err := s.pool.Query(ctx, `SELECT id, number, description, created_at, definition
		FROM api_revisions WHERE api_id = $1 ORDER BY number`, apiID)
	if err != nil {
		return nil, fmt.Errorf("list revisions of api %s: %w", apiID, err)
	}
	revs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Revision, error) {
		rev := Revision{APIID: apiID}
		var def []byte
		if err := r.Scan(&rev.ID, &rev.Number, &rev.Description, &rev.CreatedAt, &def); err != nil {
			return rev, err
		}
		return rev, json.Unmarshal(def, &rev.API)
	})
	if err != nil {
		return nil, fmt.Errorf("list revisions of api %s: %w", apiID, err)
	}
	deps, err := listDeployments(ctx, s.pool, apiID)
	if err != nil {
		return nil, fmt.Errorf("list revisions of api %s: %w", apiID, err)
	}
	for i := range revs {
		for _, d := range deps {
			if d.RevisionID == revs[i].ID {
				revs[i].Deployments = append(revs[i].Deployments, d)
			}
		}
	}
	return revs, nil
}

// ListDeployments returns where an API's revisions are deployed.
func (s *Store) ListDeployments(ctx context.Context, apiID string) ([]DeploymentInfo, error) {
	if _, err := getAPI(ctx, s.pool, apiID, false); err != nil {
		return nil, fmt.Errorf("list deployments of api %s: %w", apiID, err)
	}
	deps, err := listDeployments(ctx, s.pool, apiID)
	if err != nil {
		return nil, fmt.Errorf("list deployments of api %s: %w", apiID, err)
	}
	return deps, nil
}

func listDeployments(ctx context.Context, q querier, apiID string) ([]DeploymentInfo, error) {
	rows, err := q.Query(ctx, `SELECT environment, revision_id, vhost, display_on_devportal, deployed_at, generation
		FROM api_deployments WHERE api_id = $1 ORDER BY environment`, apiID)
	if err != nil {
		return nil, fmt.Errorf("query deployments: %w", err)
	}
	deps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (DeploymentInfo, error) {
		d := DeploymentInfo{APIID: apiID}
		return d, r.Scan(&d.Environment, &d.RevisionID, &d.VHost, &d.DisplayOnDevportal, &d.DeployedAt, &d.Generation)
	})
	if err != nil {
		return nil, fmt.Errorf("scan deployments: %w", err)
	}
	return deps, nil
}

// revisionOf loads a revision of apiID inside tx.
func revisionOf(ctx context.Context, tx pgx.Tx, apiID, revisionID string) (*model.API, error) {
	if !validID(revisionID) {
		return nil, notFound("revision %q of api %s does not exist", revisionID, apiID)
	}
	var def []byte
	err := tx.QueryRow(ctx, `SELECT definition FROM api_revisions WHERE id = $1 AND api_id = $2`, revisionID, apiID).Scan(&def)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("revision %s of api %s does not exist", revisionID, apiID)
	}
	if err != nil {
		return nil, fmt.Errorf("load revision %s: %w", revisionID, err)
	}
	var api model.API
	if err := json.Unmarshal(def, &api); err != nil {
		return nil, fmt.Errorf("decode revision %s: %w", revisionID, err)
	}
	return &api, nil
}

// Deploy deploys a revision of an API to each target environment, replacing
// whatever revision was deployed there, and appends a deployment event per
// environment. An unknown environment is ErrInvalid naming it. It returns all
// the API's deployments afterwards.
func (s *Store) Deploy(ctx context.Context, apiID, revisionID string, targets []EnvTarget) ([]DeploymentInfo, error) {
	if len(targets) == 0 {
		return nil, invalid("at least one environment is required")
	}
	var out []DeploymentInfo
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := deploy(ctx, tx, apiID, revisionID, targets); err != nil {
			return err
		}
		var err error
		out, err = listDeployments(ctx, tx, apiID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("deploy revision %s of api %s: %w", revisionID, apiID, err)
	}
	return out, nil
}

// deploy is Deploy inside tx, without the listing.
func deploy(ctx context.Context, tx pgx.Tx, apiID, revisionID string, targets []EnvTarget) error {
	current, err := getAPI(ctx, tx, apiID, true)
	if err != nil {
		return err
	}
	def, err := revisionOf(ctx, tx, apiID, revisionID)
	if err != nil {
		return err
	}
	def.Status = current.Status // the lifecycle is the API's, not the revision's
	for _, t := range targets {
		if err := model.ValidateVHost(t.VHost); err != nil {
			return invalid("vhost of environment %q %v", t.Name, err)
		}
		var defaultVHost string
		err := tx.QueryRow(ctx, `SELECT vhost FROM gateway_environments WHERE name = $1`, t.Name).Scan(&defaultVHost)
		if errors.Is(err, pgx.ErrNoRows) {
			return invalid("gateway environment %q does not exist", t.Name)
		}
		if err != nil {
			return fmt.Errorf("load environment %s: %w", t.Name, err)
		}
		vhost := t.VHost
		if vhost == "" {
			vhost = defaultVHost
		}
		d := model.Deployment{APIID: apiID, RevisionID: revisionID, Environment: t.Name, VHost: vhost, API: *def}
		var gen int64
		err = tx.QueryRow(ctx, `
			INSERT INTO api_deployments (api_id, environment, revision_id, vhost, display_on_devportal)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (api_id, environment) DO UPDATE SET revision_id = EXCLUDED.revision_id,
				vhost = EXCLUDED.vhost, display_on_devportal = EXCLUDED.display_on_devportal,
				generation = nextval('generation_seq'), deployed_at = now()
			RETURNING generation, deployed_at`,
			apiID, t.Name, revisionID, vhost, t.DisplayOnDevportal).Scan(&gen, &d.DeployedAt)
		if err != nil {
			return fmt.Errorf("write deployment to %s: %w", t.Name, err)
		}
		d.API.Generation = gen
		if err := emit(ctx, tx, events.KindDeployment, events.OpUpsert, apiID, t.Name, gen, d); err != nil {
			return err
		}
	}
	return nil
}

// Undeploy removes a revision of an API from the named environments (all
// where it is deployed when envs is empty) and appends a deployment delete
// event for each. Naming an environment where that revision is not deployed
// is ErrInvalid. It returns the API's remaining deployments.
func (s *Store) Undeploy(ctx context.Context, apiID, revisionID string, envs []string) ([]DeploymentInfo, error) {
	var out []DeploymentInfo
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := getAPI(ctx, tx, apiID, true); err != nil {
			return err
		}
		if _, err := revisionOf(ctx, tx, apiID, revisionID); err != nil {
			return err
		}
		if len(envs) == 0 {
			rows, err := tx.Query(ctx, `SELECT environment FROM api_deployments WHERE api_id = $1 AND revision_id = $2`, apiID, revisionID)
			if err != nil {
				return fmt.Errorf("list deployments: %w", err)
			}
			if envs, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
				return fmt.Errorf("list deployments: %w", err)
			}
			if len(envs) == 0 {
				return invalid("revision %s is not deployed anywhere", revisionID)
			}
		}
		for _, env := range envs {
			tag, err := tx.Exec(ctx, `DELETE FROM api_deployments WHERE api_id = $1 AND revision_id = $2 AND environment = $3`,
				apiID, revisionID, env)
			if err != nil {
				return fmt.Errorf("delete deployment from %s: %w", env, err)
			}
			if tag.RowsAffected() == 0 {
				return invalid("revision %s is not deployed to gateway environment %q", revisionID, env)
			}
			d := model.Deployment{APIID: apiID, RevisionID: revisionID, Environment: env}
			if err := emitDelete(ctx, tx, events.KindDeployment, apiID, env, d); err != nil {
				return err
			}
		}
		var err error
		out, err = listDeployments(ctx, tx, apiID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("undeploy revision %s of api %s: %w", revisionID, apiID, err)
	}
	return out, nil
}

// Environments returns the names of all gateway environments.
func (s *Store) Environments(ctx context.Context) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT name FROM gateway_environments ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list environments: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list environments: %w", err)
	}
	return names, nil
}

// Deployments returns every API deployed to an environment, each with its
// revision's frozen definition carrying the API's current lifecycle status.
func (s *Store) Deployments(ctx context.Context, environment string) ([]model.Deployment, error) {
	deps, err := deployments(ctx, s.pool, environment)
	if err != nil {
		return nil, fmt.Errorf("deployments of %s: %w", environment, err)
	}
	return deps, nil
}

func deployments(ctx context.Context, q querier, environment string) ([]model.Deployment, error) {
	rows, err := q.Query(ctx, `
		SELECT d.api_id, d.revision_id, d.environment, d.vhost, d.deployed_at, d.generation, r.definition, a.lifecycle_status
		FROM api_deployments d
		JOIN api_revisions r ON r.id = d.revision_id
		JOIN apis a ON a.id = d.api_id
		WHERE d.environment = $1 ORDER BY d.api_id`, environment)
	if err != nil {
		return nil, fmt.Errorf("query deployments: %w", err)
	}
	deps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.Deployment, error) {
		var d model.Deployment
		var def []byte
		var gen int64
		var status string
		if err := r.Scan(&d.APIID, &d.RevisionID, &d.Environment, &d.VHost, &d.DeployedAt, &gen, &def, &status); err != nil {
			return d, err
		}
		if err := json.Unmarshal(def, &d.API); err != nil {
			return d, fmt.Errorf("decode revision %s: %w", d.RevisionID, err)
		}
		d.API.Status = model.LifecycleStatus(status)
		d.API.Generation = gen
		return d, nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan deployments: %w", err)
	}
	return deps, nil
}

// GetRevision loads one revision of an API, with where it is deployed.
func (s *Store) GetRevision(ctx context.Context, apiID, revisionID string) (*Revision, error) {
	revs, err := s.ListRevisions(ctx, apiID)
	if err != nil {
		return nil, err
	}
	for i := range revs {
		if revs[i].ID == revisionID {
			return &revs[i], nil
		}
	}
	return nil, notFound("revision %s of api %s does not exist", revisionID, apiID)
}

// DeleteRevision deletes a revision that is deployed nowhere; a deployed
// one is ErrConflict naming its environments, as WSO2 refuses it.
func (s *Store) DeleteRevision(ctx context.Context, apiID, revisionID string) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := getAPI(ctx, tx, apiID, true); err != nil {
			return err
		}
		if _, err := revisionOf(ctx, tx, apiID, revisionID); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT environment FROM api_deployments WHERE api_id = $1 AND revision_id = $2 ORDER BY environment`, apiID, revisionID)
		if err != nil {
			return fmt.Errorf("list deployments: %w", err)
		}
		envs, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("list deployments: %w", err)
		}
		if len(envs) > 0 {
			return conflict("revision %s is deployed to %s; undeploy it first", revisionID, strings.Join(envs, ", "))
		}
		if _, err := tx.Exec(ctx, `DELETE FROM api_revisions WHERE id = $1 AND api_id = $2`, revisionID, apiID); err != nil {
			return fmt.Errorf("delete revision: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete revision %s of api %s: %w", revisionID, apiID, err)
	}
	return nil
}

// RestoreRevision makes a revision's definition the API's working copy
// again (its id, provider and lifecycle status stay), as WSO2's
// restore-revision, and appends the api event. Deployments do not change.
func (s *Store) RestoreRevision(ctx context.Context, apiID, revisionID string) (*model.API, error) {
	var def *model.API
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		def, err = revisionOf(ctx, tx, apiID, revisionID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("restore revision %s of api %s: %w", revisionID, apiID, err)
	}
	def.ID = apiID
	return s.UpdateAPI(ctx, *def)
}

package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/model"
)

// WSO2's lifecycle actions.
const (
	ActionPublish   = "Publish"
	ActionPrototype = "Deploy as a Prototype"
	ActionDemote    = "Demote to Created"
	ActionBlock     = "Block"
	ActionRepublish = "Re-Publish"
	ActionDeprecate = "Deprecate"
	ActionRetire    = "Retire"
)

// transitions is WSO2's default API lifecycle (APILifeCycle.xml): per
// state, the actions allowed and where each leads.
var transitions = map[model.LifecycleStatus]map[string]model.LifecycleStatus{
	model.StatusCreated: {
		ActionPublish:   model.StatusPublished,
		ActionPrototype: model.StatusPrototyped,
	},
	model.StatusPrototyped: {
		ActionPublish:   model.StatusPublished,
		ActionPrototype: model.StatusPrototyped,
		ActionDemote:    model.StatusCreated,
	},
	model.StatusPublished: {
		ActionBlock:     model.StatusBlocked,
		ActionDeprecate: model.StatusDeprecated,
		ActionDemote:    model.StatusCreated,
		ActionPrototype: model.StatusPrototyped,
		ActionPublish:   model.StatusPublished,
	},
	model.StatusBlocked: {
		ActionRepublish: model.StatusPublished,
		ActionDeprecate: model.StatusDeprecated,
	},
	model.StatusDeprecated: {
		ActionRetire: model.StatusRetired,
	},
	model.StatusRetired: {},
}

// Actions returns the lifecycle actions allowed from status, sorted.
func Actions(status model.LifecycleStatus) []string {
	out := make([]string, 0, len(transitions[status]))
	for a := range transitions[status] {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// LifecycleChange is the outcome of ChangeLifecycle.
type LifecycleChange struct {
	Previous model.LifecycleStatus
	Current  model.LifecycleStatus
	API      *model.API
}

// ChangeLifecycle applies a WSO2 lifecycle action to an API, records it in
// lifecycle_history and appends the api event. An action not allowed from
// the API's state is ErrInvalid.
func (s *Store) ChangeLifecycle(ctx context.Context, apiID, action, actor string) (*LifecycleChange, error) {
	var out *LifecycleChange
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		api, err := getAPI(ctx, tx, apiID, true)
		if err != nil {
			return err
		}
		next, ok := transitions[api.Status][action]
		if !ok {
			allowed := Actions(api.Status)
			if len(allowed) == 0 {
				return invalid("action %q is not allowed: api is %s and allows no action", action, api.Status)
			}
			return invalid("action %q is not allowed from state %s; allowed: %s", action, api.Status, strings.Join(allowed, ", "))
		}
		prev := api.Status
		err = tx.QueryRow(ctx, `UPDATE apis SET lifecycle_status = $2, generation = nextval('generation_seq'), updated_at = now()
			WHERE id = $1 RETURNING generation`, apiID, string(next)).Scan(&api.Generation)
		if err != nil {
			return fmt.Errorf("update status: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO lifecycle_history (api_id, previous_state, post_state, actor) VALUES ($1, $2, $3, $4)`,
			apiID, string(prev), string(next), actor); err != nil {
			return fmt.Errorf("write lifecycle history: %w", err)
		}
		api.Status = next
		out = &LifecycleChange{Previous: prev, Current: next, API: api}
		return emit(ctx, tx, events.KindAPI, events.OpUpsert, api.ID, "", api.Generation, api)
	})
	if err != nil {
		return nil, fmt.Errorf("change lifecycle of api %s with %q: %w", apiID, action, err)
	}
	return out, nil
}

// LifecycleEntry is one row of an API's lifecycle history.
type LifecycleEntry struct {
	Previous model.LifecycleStatus
	Post     model.LifecycleStatus
	Actor    string
}

// LifecycleHistory returns an API's lifecycle changes, oldest first.
func (s *Store) LifecycleHistory(ctx context.Context, apiID string) ([]LifecycleEntry, error) {
	if !validID(apiID) {
		return nil, notFound("api %q does not exist", apiID)
	}
	rows, err := s.pool.Query(ctx, `SELECT previous_state, post_state, actor FROM lifecycle_history WHERE api_id = $1 ORDER BY id`, apiID)
	if err != nil {
		return nil, fmt.Errorf("lifecycle history of %s: %w", apiID, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (LifecycleEntry, error) {
		var e LifecycleEntry
		var p, q string
		err := r.Scan(&p, &q, &e.Actor)
		e.Previous, e.Post = model.LifecycleStatus(p), model.LifecycleStatus(q)
		return e, err
	})
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("lifecycle history of %s: %w", apiID, err)
	}
	return out, nil
}

// Target returns the state action leads to from status, or "" when the
// action is not allowed there.
func Target(status model.LifecycleStatus, action string) model.LifecycleStatus {
	return transitions[status][action]
}

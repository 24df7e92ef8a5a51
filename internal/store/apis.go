package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/model"
)

// ListAPIsOptions selects a page of APIs.
type ListAPIsOptions struct {
	Limit    int                     // at most this many; 0 means 25
	Offset   int                     // skip this many
	Statuses []model.LifecycleStatus // only these states; empty means all
	Tags     []string                // only APIs with all of these tags
	Matches  []APIMatch              // only APIs matching all of these
	// Viewer, when set, keeps only the APIs it sees (model.Viewer.Sees).
	Viewer *model.Viewer
}

// APIMatch is one term of an API search.
type APIMatch struct {
	// Field is one of the APIFields; "" matches any of name, context and
	// description.
	Field string
	Value string
	// Exact matches the whole value, case-insensitively; otherwise the
	// value is a case-insensitive substring.
	Exact bool
}

// APIFields are the fields an APIMatch can name, with their SQL. WSO2's
// search type (API, APIProduct, MCP) is always API here.
var APIFields = map[string]string{
	"name": "name", "version": "version", "provider": "provider", "context": "context", "description": "description",
	"type": "'API'",
}

// where is the WHERE clause of opts and its arguments, numbered from $1.
func (opts ListAPIsOptions) where() (string, []any) {
	statuses := make([]string, 0, len(opts.Statuses))
	for _, st := range opts.Statuses {
		statuses = append(statuses, string(st))
	}
	args := []any{statuses, nonNil(opts.Tags)}
	clauses := []string{"(cardinality($1::text[]) = 0 OR lifecycle_status = ANY($1))", "tags @> $2::text[]"}
	for _, m := range opts.Matches {
		args = append(args, m.Value)
		arg := fmt.Sprintf("$%d", len(args))
		cols := []string{"name", "context", "description"}
		if m.Field != "" {
			cols = []string{APIFields[m.Field]}
		}
		var ors []string
		for _, c := range cols {
			if m.Exact {
				ors = append(ors, "lower("+c+") = lower("+arg+")")
			} else {
				ors = append(ors, c+" ILIKE '%' || "+likeEscaped(arg)+" || '%'")
			}
		}
		clauses = append(clauses, "("+strings.Join(ors, " OR ")+")")
	}
	if v := opts.Viewer; v != nil {
		args = append(args, v.SignedIn, nonNil(v.Roles))
		n := len(args)
		clauses = append(clauses, fmt.Sprintf(`(visibility IN ('', 'PUBLIC') OR ($%d AND (visibility = 'PRIVATE'
			OR (visibility = 'RESTRICTED' AND visible_roles && $%d::text[]))))`, n-1, n))
	}
	return "WHERE " + strings.Join(clauses, " AND "), args
}

// likeEscaped is the SQL that makes the text in arg a literal LIKE
// pattern: its %, _ and \ match themselves.
func likeEscaped(arg string) string {
	return `replace(replace(replace(` + arg + `, '\', '\\'), '%', '\%'), '_', '\_')`
}

// CreateAPI stores a new API and appends its api event. An empty ID gets a
// fresh UUID, an empty status CREATED.
func (s *Store) CreateAPI(ctx context.Context, api model.API) (*model.API, error) {
	err := s.inTx(ctx, func(tx pgx.Tx) error { return createAPI(ctx, tx, &api) })
	if err != nil {
		return nil, fmt.Errorf("create api %s %s: %w", api.Name, api.Version, err)
	}
	return &api, nil
}

// createAPI is CreateAPI inside tx; it fills in api's ID, status,
// generation and times.
func createAPI(ctx context.Context, tx pgx.Tx, api *model.API) error {
	if api.ID == "" {
		api.ID = newID()
	}
	if api.Status == "" {
		api.Status = model.StatusCreated
	}
	if err := checkAPI(api); err != nil {
		return err
	}
	if err := checkAPIPolicies(ctx, tx, api); err != nil {
		return err
	}
	err := tx.QueryRow(ctx, `
		INSERT INTO apis (id, name, description, context, version, provider, lifecycle_status, policies, security_scheme, cors,
			api_throttling_policy, enable_backend_jwt, tags, visibility, visible_roles, transport, is_default_version,
			business_information, additional_properties, scopes, wso2_extra)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
		RETURNING generation, created_at, updated_at`,
		api.ID, api.Name, api.Description, api.Context, api.Version, api.Provider, string(api.Status), nonNil(api.Policies),
		nonNil(api.SecurityScheme), api.CORS, api.APIThrottlingPolicy, api.EnableBackendJWT,
		nonNil(api.Tags), api.Visibility, nonNil(api.VisibleRoles), nonNil(api.Transport), api.IsDefaultVersion,
		api.BusinessInformation, nonNilSlice(api.AdditionalProperties), nonNilSlice(api.Scopes), extraObject(api.Extra),
	).Scan(&api.Generation, &api.CreatedAt, &api.UpdatedAt)
	if err != nil {
		return apiWriteError(api, err)
	}
	if err := writeAPIChildren(ctx, tx, api); err != nil {
		return err
	}
	return emit(ctx, tx, events.KindAPI, events.OpUpsert, api.ID, "", api.Generation, *api)
}

// UpdateAPI replaces the definition of an existing API (not its provider nor
// its lifecycle status) and appends its api event.
func (s *Store) UpdateAPI(ctx context.Context, api model.API) (*model.API, error) {
	if !validID(api.ID) {
		return nil, notFound("api %q does not exist", api.ID)
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error { return updateAPI(ctx, tx, &api) })
	if err != nil {
		return nil, fmt.Errorf("update api %s: %w", api.ID, err)
	}
	return &api, nil
}

// updateAPI is UpdateAPI inside tx; it fills in api's provider, status,
// generation and times.
func updateAPI(ctx context.Context, tx pgx.Tx, api *model.API) error {
	var status, provider string
	err := tx.QueryRow(ctx, `SELECT lifecycle_status, provider FROM apis WHERE id = $1 FOR UPDATE`, api.ID).Scan(&status, &provider)
	if errors.Is(err, pgx.ErrNoRows) {
		return notFound("api %s does not exist", api.ID)
	}
	if err != nil {
		return fmt.Errorf("lock api: %w", err)
	}
	api.Status, api.Provider = model.LifecycleStatus(status), provider
	if err := checkAPI(api); err != nil {
		return err
	}
	if err := checkAPIPolicies(ctx, tx, api); err != nil {
		return err
	}
	err = tx.QueryRow(ctx, `
		UPDATE apis SET name = $2, description = $3, context = $4, version = $5, policies = $6,
			security_scheme = $7, cors = $8, api_throttling_policy = $9, enable_backend_jwt = $10,
			tags = $11, visibility = $12, visible_roles = $13, transport = $14, is_default_version = $15,
			business_information = $16, additional_properties = $17, scopes = $18, wso2_extra = $19,
			generation = nextval('generation_seq'), updated_at = now()
		WHERE id = $1 RETURNING generation, created_at, updated_at`,
		api.ID, api.Name, api.Description, api.Context, api.Version, nonNil(api.Policies),
		nonNil(api.SecurityScheme), api.CORS, api.APIThrottlingPolicy, api.EnableBackendJWT,
		nonNil(api.Tags), api.Visibility, nonNil(api.VisibleRoles), nonNil(api.Transport), api.IsDefaultVersion,
		api.BusinessInformation, nonNilSlice(api.AdditionalProperties), nonNilSlice(api.Scopes), extraObject(api.Extra),
	).Scan(&api.Generation, &api.CreatedAt, &api.UpdatedAt)
	if err != nil {
		return apiWriteError(api, err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM api_endpoints WHERE api_id = $1`, api.ID); err != nil {
		return fmt.Errorf("clear endpoints: %w", err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM api_resources WHERE api_id = $1`, api.ID); err != nil {
		return fmt.Errorf("clear resources: %w", err)
	}
	if err := writeAPIChildren(ctx, tx, api); err != nil {
		return err
	}
	return emit(ctx, tx, events.KindAPI, events.OpUpsert, api.ID, "", api.Generation, *api)
}

// DeleteAPI removes an API with its revisions and deployments, appending a
// delete event for each deployment. An API with subscriptions is not deleted
// (ErrConflict), as in WSO2. The API row is locked first, so a deployment or
// subscription cannot slip in between the reads and the delete.
func (s *Store) DeleteAPI(ctx context.Context, id string) error {
	if !validID(id) {
		return notFound("api %q does not exist", id)
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := getAPI(ctx, tx, id, true); err != nil {
			return err
		}
		var subscribed int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM subscriptions WHERE api_id = $1`, id).Scan(&subscribed); err != nil {
			return fmt.Errorf("count subscriptions: %w", err)
		}
		if subscribed > 0 {
			return conflict("api %s has %d subscription(s); remove them before deleting the api", id, subscribed)
		}
		rows, err := tx.Query(ctx, `SELECT environment, revision_id FROM api_deployments WHERE api_id = $1`, id)
		if err != nil {
			return fmt.Errorf("list deployments: %w", err)
		}
		deps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.Deployment, error) {
			d := model.Deployment{APIID: id}
			return d, r.Scan(&d.Environment, &d.RevisionID)
		})
		if err != nil {
			return fmt.Errorf("list deployments: %w", err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM apis WHERE id = $1`, id); err != nil {
			return fmt.Errorf("delete: %w", err)
		}
		for _, d := range deps {
			if err := emitDelete(ctx, tx, events.KindDeployment, id, d.Environment, d); err != nil {
				return err
			}
		}
		return emitDelete(ctx, tx, events.KindAPI, id, "", model.API{ID: id})
	})
	if err != nil {
		return fmt.Errorf("delete api %s: %w", id, err)
	}
	return nil
}

// emitDelete appends a delete event with a fresh generation.
func emitDelete(ctx context.Context, tx pgx.Tx, kind events.Kind, id, env string, data any) error {
	gen, err := nextGeneration(ctx, tx)
	if err != nil {
		return err
	}
	return emit(ctx, tx, kind, events.OpDelete, id, env, gen, data)
}

// GetAPI loads one API.
func (s *Store) GetAPI(ctx context.Context, id string) (*model.API, error) {
	api, err := getAPI(ctx, s.pool, id, false)
	if err != nil {
		return nil, fmt.Errorf("get api %s: %w", id, err)
	}
	return api, nil
}

// ListAPIs returns a page of APIs ordered by name and version, and the
// number of APIs that match in all.
func (s *Store) ListAPIs(ctx context.Context, opts ListAPIsOptions) ([]model.API, int, error) {
	if opts.Limit <= 0 {
		opts.Limit = 25
	}
	opts.Offset = max(opts.Offset, 0)
	for _, m := range opts.Matches {
		if _, ok := APIFields[m.Field]; !ok && m.Field != "" {
			return nil, 0, invalid("an API has no searchable field %q", m.Field)
		}
	}
	where, args := opts.where()
	var total int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM apis `+where, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count apis: %w", err)
	}
	n := len(args)
	apis, err := loadAPIs(ctx, s.pool, where+fmt.Sprintf(` ORDER BY name, version, id LIMIT $%d OFFSET $%d`, n+1, n+2),
		append(args, opts.Limit, opts.Offset)...)
	if err != nil {
		return nil, 0, fmt.Errorf("list apis: %w", err)
	}
	return apis, total, nil
}

// checkAPI validates a's fields, returning ErrInvalid naming each problem.
func checkAPI(a *model.API) error {
	if err := a.Validate(); err != nil {
		return invalid("%s", joinLines(err))
	}
	if a.Provider == "" {
		return invalid("provider is required")
	}
	return nil
}

// joinLines turns an errors.Join into one line.
func joinLines(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

// checkAPIPolicies requires the tiers an API offers to exist as
// subscription policies, and its API-level and resource-level tiers as
// advanced (api-level) policies: a misspelt tier must not leave the API
// unlimited without a word.
func checkAPIPolicies(ctx context.Context, q querier, api *model.API) error {
	if err := checkPolicies(ctx, q, "policies", model.LevelSubscription, api.Policies); err != nil {
		return err
	}
	advanced := make([]string, 0, len(api.Operations)+1)
	if api.APIThrottlingPolicy != "" {
		advanced = append(advanced, api.APIThrottlingPolicy)
	}
	for _, op := range api.Operations {
		if op.ThrottlingPolicy != "" {
			advanced = append(advanced, op.ThrottlingPolicy)
		}
	}
	return checkPolicies(ctx, q, "apiThrottlingPolicy/operations[].throttlingPolicy", model.LevelAPI, advanced)
}

// checkPolicies requires every name to exist at level; field names the
// request field in the error.
func checkPolicies(ctx context.Context, q querier, field, level string, names []string) error {
	if len(names) == 0 {
		return nil
	}
	rows, err := q.Query(ctx, `SELECT name FROM throttling_policies WHERE level = $1 AND name = ANY($2)`, level, names)
	if err != nil {
		return fmt.Errorf("check policies: %w", err)
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("check policies: %w", err)
	}
	have := map[string]bool{}
	for _, n := range found {
		have[n] = true
	}
	var missing []string
	for _, n := range names {
		if !have[n] {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return invalid("%s: no %s throttling policy named %s", field, level, strings.Join(missing, ", "))
	}
	return nil
}

func apiWriteError(a *model.API, err error) error {
	code, constraint := pgCode(err)
	if code == uniqueViolation {
		if strings.Contains(constraint, "context") {
			return conflict("an API with context %s and version %s already exists", a.Context, a.Version)
		}
		return conflict("an API named %s with version %s already exists", a.Name, a.Version)
	}
	return fmt.Errorf("write api row: %w", err)
}

func writeAPIChildren(ctx context.Context, tx pgx.Tx, a *model.API) error {
	for kind, ep := range map[string]*model.Endpoint{"production": a.Production, "sandbox": a.Sandbox} {
		if ep == nil {
			continue
		}
		if _, err := tx.Exec(ctx, `INSERT INTO api_endpoints (api_id, kind, url) VALUES ($1, $2, $3)`, a.ID, kind, ep.URL); err != nil {
			return fmt.Errorf("write %s endpoint: %w", kind, err)
		}
	}
	for i, op := range a.Operations {
		if _, err := tx.Exec(ctx, `
			INSERT INTO api_resources (api_id, position, verb, target, auth_type, throttling_policy, scopes, wso2_extra)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			a.ID, i, op.Verb, op.Target, op.AuthType, op.ThrottlingPolicy, nonNil(op.Scopes), extraObject(op.Extra)); err != nil {
			return fmt.Errorf("write operation %s: %w", op.Key(), err)
		}
	}
	return nil
}

// getAPI loads one API, locking its row when forUpdate.
func getAPI(ctx context.Context, q querier, id string, forUpdate bool) (*model.API, error) {
	if !validID(id) {
		return nil, notFound("api %q does not exist", id)
	}
	where := `WHERE id = $1`
	if forUpdate {
		where += ` FOR UPDATE`
	}
	apis, err := loadAPIs(ctx, q, where, id)
	if err != nil {
		return nil, err
	}
	if len(apis) == 0 {
		return nil, notFound("api %s does not exist", id)
	}
	return &apis[0], nil
}

// loadAPIs loads the APIs selected by the SQL tail (WHERE/ORDER/LIMIT) with
// their endpoints and operations.
func loadAPIs(ctx context.Context, q querier, tail string, args ...any) ([]model.API, error) {
	rows, err := q.Query(ctx, `SELECT id, name, description, context, version, provider, lifecycle_status, policies,
		security_scheme, cors, api_throttling_policy, enable_backend_jwt, tags, visibility, visible_roles, transport,
		is_default_version, business_information, additional_properties, scopes, wso2_extra, created_at, updated_at,
		generation FROM apis `+tail, args...)
	if err != nil {
		return nil, fmt.Errorf("query apis: %w", err)
	}
	apis, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.API, error) {
		var a model.API
		var status string
		err := r.Scan(&a.ID, &a.Name, &a.Description, &a.Context, &a.Version, &a.Provider, &status, &a.Policies,
			&a.SecurityScheme, &a.CORS, &a.APIThrottlingPolicy, &a.EnableBackendJWT, &a.Tags, &a.Visibility, &a.VisibleRoles,
			&a.Transport, &a.IsDefaultVersion, &a.BusinessInformation, &a.AdditionalProperties, &a.Scopes, &a.Extra,
			&a.CreatedAt, &a.UpdatedAt, &a.Generation)
		a.Status = model.LifecycleStatus(status)
		a.CreatedAt, a.UpdatedAt = a.CreatedAt.UTC(), a.UpdatedAt.UTC()
		a.SecurityScheme = nilIfEmpty(a.SecurityScheme)
		a.Tags, a.VisibleRoles, a.Transport = nilIfEmpty(a.Tags), nilIfEmpty(a.VisibleRoles), nilIfEmpty(a.Transport)
		a.AdditionalProperties, a.Scopes = nilIfEmpty(a.AdditionalProperties), nilIfEmpty(a.Scopes)
		a.Extra = extraOrNil(a.Extra)
		a.Operations = []model.Operation{}
		return a, err
	})
	if err != nil {
		return nil, fmt.Errorf("scan apis: %w", err)
	}
	if len(apis) == 0 {
		return apis, nil
	}
	ids := make([]string, len(apis))
	byID := make(map[string]*model.API, len(apis))
	for i := range apis {
		ids[i] = apis[i].ID
		byID[apis[i].ID] = &apis[i]
	}
	rows, err = q.Query(ctx, `SELECT api_id, kind, url FROM api_endpoints WHERE api_id = ANY($1::uuid[])`, ids)
	if err != nil {
		return nil, fmt.Errorf("query endpoints: %w", err)
	}
	var apiID, kind, url string
	_, err = pgx.ForEachRow(rows, []any{&apiID, &kind, &url}, func() error {
		a := byID[apiID]
		if kind == "production" {
			a.Production = &model.Endpoint{URL: url}
		} else {
			a.Sandbox = &model.Endpoint{URL: url}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan endpoints: %w", err)
	}
	rows, err = q.Query(ctx, `SELECT api_id, verb, target, auth_type, throttling_policy, scopes, wso2_extra
		FROM api_resources WHERE api_id = ANY($1::uuid[]) ORDER BY api_id, position`, ids)
	if err != nil {
		return nil, fmt.Errorf("query resources: %w", err)
	}
	var op model.Operation
	_, err = pgx.ForEachRow(rows, []any{&apiID, &op.Verb, &op.Target, &op.AuthType, &op.ThrottlingPolicy, &op.Scopes, &op.Extra}, func() error {
		a := byID[apiID]
		o := op
		o.Scopes = nil
		if len(op.Scopes) > 0 {
			o.Scopes = append([]string(nil), op.Scopes...)
		}
		o.Extra = extraOrNil(append(json.RawMessage(nil), op.Extra...))
		a.Operations = append(a.Operations, o)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan resources: %w", err)
	}
	return apis, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// nonNilSlice is nonNil for any slice, so that a jsonb column gets [] and
// not NULL.
func nonNilSlice[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// nonNilMap is nonNil for a map stored as a jsonb object.
func nonNilMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// nilIfEmpty turns an empty slice read from a column into nil, as the
// model holds "none".
func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}

// extraObject is what a wso2_extra column stores for raw: the object, or
// {} for none.
func extraObject(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return json.RawMessage(`{}`)
	}
	return raw
}

// extraOrNil turns a stored empty object back into nil.
func extraOrNil(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 || string(raw) == "{}" {
		return nil
	}
	return raw
}

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

// PolicyEventID is the event id of a policy: level and name.
func PolicyEventID(level, name string) string { return level + ":" + name }

func validatePolicy(p *model.Policy) error {
	if err := p.Validate(); err != nil {
		return invalid("%s", joinLines(err))
	}
	if p.DisplayName == "" {
		p.DisplayName = p.Name
	}
	if p.BillingPlan == "" {
		p.BillingPlan = "FREE"
	}
	if p.QuotaType == "" {
		p.QuotaType = model.QuotaRequestCount
	}
	if p.ConditionGroups == nil {
		p.ConditionGroups = []model.ConditionGroup{}
	}
	return nil
}

// CreatePolicy stores a throttling policy and appends its event.
func (s *Store) CreatePolicy(ctx context.Context, p model.Policy) (*model.Policy, error) {
	if err := validatePolicy(&p); err != nil {
		return nil, fmt.Errorf("create %s policy %s: %w", p.Level, p.Name, err)
	}
	p.ID = newID()
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		groups, err := json.Marshal(p.ConditionGroups)
		if err != nil {
			return fmt.Errorf("encode conditionalGroups: %w", err)
		}
		err = tx.QueryRow(ctx, `INSERT INTO throttling_policies
			(level, name, display_name, description, request_count, unit_time, time_unit, stop_on_quota_reach, billing_plan,
			 policy_id, quota_type, data_amount, data_unit, rate_limit_count, rate_limit_time_unit, conditional_groups, key_template, condition)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) RETURNING generation`,
			p.Level, p.Name, p.DisplayName, p.Description, p.RequestCount, p.UnitTime, p.TimeUnit, p.StopOnQuotaReach, p.BillingPlan,
			p.ID, p.QuotaType, p.DataAmount, p.DataUnit, p.RateLimitCount, p.RateLimitTimeUnit, groups, p.KeyTemplate, p.Condition,
		).Scan(&p.Generation)
		if code, _ := pgCode(err); code == uniqueViolation {
			return conflict("a %s throttling policy named %s already exists", p.Level, p.Name)
		}
		if err != nil {
			return fmt.Errorf("write policy: %w", err)
		}
		return emit(ctx, tx, events.KindPolicy, events.OpUpsert, PolicyEventID(p.Level, p.Name), "", p.Generation, p)
	})
	if err != nil {
		return nil, fmt.Errorf("create %s policy %s: %w", p.Level, p.Name, err)
	}
	return &p, nil
}

// UpdatePolicy replaces the policy of p.Level whose policyId (or name) is
// id with p; the name cannot change. It appends the policy's event.
func (s *Store) UpdatePolicy(ctx context.Context, id string, p model.Policy) (*model.Policy, error) {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		cur, err := getPolicy(ctx, tx, p.Level, id, true)
		if err != nil {
			return err
		}
		if p.Name == "" {
			p.Name = cur.Name
		}
		if p.Name != cur.Name {
			return invalid("policyName cannot change: it is %s", cur.Name)
		}
		p.ID = cur.ID
		if err := validatePolicy(&p); err != nil {
			return err
		}
		groups, err := json.Marshal(p.ConditionGroups)
		if err != nil {
			return fmt.Errorf("encode conditionalGroups: %w", err)
		}
		err = tx.QueryRow(ctx, `UPDATE throttling_policies SET
			display_name = $3, description = $4, request_count = $5, unit_time = $6, time_unit = $7, stop_on_quota_reach = $8,
			billing_plan = $9, quota_type = $10, data_amount = $11, data_unit = $12, rate_limit_count = $13,
			rate_limit_time_unit = $14, conditional_groups = $15, key_template = $16, condition = $17,
			generation = nextval('generation_seq')
			WHERE level = $1 AND name = $2 RETURNING generation`,
			p.Level, p.Name, p.DisplayName, p.Description, p.RequestCount, p.UnitTime, p.TimeUnit, p.StopOnQuotaReach,
			p.BillingPlan, p.QuotaType, p.DataAmount, p.DataUnit, p.RateLimitCount, p.RateLimitTimeUnit, groups, p.KeyTemplate, p.Condition,
		).Scan(&p.Generation)
		if err != nil {
			return fmt.Errorf("write policy: %w", err)
		}
		return emit(ctx, tx, events.KindPolicy, events.OpUpsert, PolicyEventID(p.Level, p.Name), "", p.Generation, p)
	})
	if err != nil {
		return nil, fmt.Errorf("update %s policy %s: %w", p.Level, id, err)
	}
	return &p, nil
}

// DefaultPolicy is the policy of every level that apim falls back to when
// a request names none (an API's subscription tiers, a resource's tier, an
// application's tier): it cannot be deleted.
const DefaultPolicy = "Unlimited"

// policyUses are the queries that count what refers to a policy of each
// level by name ($1), each with what to call the referrer in an error.
var policyUses = map[string][]struct{ what, query string }{
	model.LevelSubscription: {
		{"subscriptions", `SELECT count(*) FROM subscriptions WHERE throttling_policy = $1`},
		{"APIs offering it", `SELECT count(*) FROM apis WHERE $1 = ANY (policies)`},
	},
	model.LevelApplication: {
		{"applications", `SELECT count(*) FROM applications WHERE throttling_policy = $1`},
	},
	model.LevelAPI: {
		{"APIs", `SELECT count(*) FROM apis WHERE api_throttling_policy = $1`},
		{"API resources", `SELECT count(*) FROM api_resources WHERE throttling_policy = $1`},
	},
}

// EnsureDefaultPolicies puts back the DefaultPolicy of every level that
// falls back to one, should it be missing (a database restored from an old
// backup, a row deleted by hand): the control plane calls it at start.
func (s *Store) EnsureDefaultPolicies(ctx context.Context) error {
	for _, level := range []string{model.LevelSubscription, model.LevelApplication, model.LevelAPI} {
		_, err := s.GetPolicy(ctx, level, DefaultPolicy)
		if errors.Is(err, ErrNotFound) {
			_, err = s.CreatePolicy(ctx, model.Policy{
				Level: level, Name: DefaultPolicy, Description: "Allows unlimited requests", UnitTime: 1, TimeUnit: model.UnitMinute,
			})
			if errors.Is(err, ErrConflict) { // another control plane put it back first
				err = nil
			}
		}
		if err != nil {
			return fmt.Errorf("ensure default policies: %w", err)
		}
	}
	return nil
}

// DeletePolicy removes the policy of a level whose policyId (or name) is id
// and appends its delete event. The level's DefaultPolicy, and a policy
// anything refers to, cannot be deleted (ErrConflict naming what does).
func (s *Store) DeletePolicy(ctx context.Context, level, id string) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		cur, err := getPolicy(ctx, tx, level, id, true)
		if err != nil {
			return err
		}
		if cur.Name == DefaultPolicy && level != model.LevelCustom {
			return conflict("%s throttling policy %s is the default of its level; it cannot be deleted", level, cur.Name)
		}
		var uses []string
		for _, u := range policyUses[level] {
			var n int
			if err := tx.QueryRow(ctx, u.query, cur.Name).Scan(&n); err != nil {
				return fmt.Errorf("check use by %s: %w", u.what, err)
			}
			if n > 0 {
				uses = append(uses, fmt.Sprintf("%d %s", n, u.what))
			}
		}
		if len(uses) > 0 {
			return conflict("%s throttling policy %s is in use by %s", level, cur.Name, strings.Join(uses, " and "))
		}
		if _, err := tx.Exec(ctx, `DELETE FROM throttling_policies WHERE level = $1 AND name = $2`, level, cur.Name); err != nil {
			return fmt.Errorf("delete: %w", err)
		}
		return emitDelete(ctx, tx, events.KindPolicy, PolicyEventID(level, cur.Name), "", model.Policy{Level: level, Name: cur.Name, ID: cur.ID})
	})
	if err != nil {
		return fmt.Errorf("delete %s policy %s: %w", level, id, err)
	}
	return nil
}

// GetPolicy loads one throttling policy by its policyId or its name.
func (s *Store) GetPolicy(ctx context.Context, level, id string) (*model.Policy, error) {
	p, err := getPolicy(ctx, s.pool, level, id, false)
	if err != nil {
		return nil, fmt.Errorf("get %s policy %s: %w", level, id, err)
	}
	return p, nil
}

func getPolicy(ctx context.Context, q querier, level, id string, forUpdate bool) (*model.Policy, error) {
	tail := `WHERE level = $1 AND name = $2`
	if validID(id) {
		tail = `WHERE level = $1 AND policy_id::text = $2`
	}
	if forUpdate {
		tail += ` FOR UPDATE`
	}
	ps, err := loadPolicies(ctx, q, tail, level, id)
	if err != nil {
		return nil, err
	}
	if len(ps) == 0 {
		return nil, notFound("%s throttling policy %s does not exist", level, id)
	}
	return &ps[0], nil
}

// ListPolicies returns the throttling policies of a level by name; an empty
// level returns all.
func (s *Store) ListPolicies(ctx context.Context, level string) ([]model.Policy, error) {
	ps, err := loadPolicies(ctx, s.pool, `WHERE $1 = '' OR level = $1 ORDER BY level, name`, level)
	if err != nil {
		return nil, fmt.Errorf("list %s policies: %w", level, err)
	}
	return ps, nil
}

func loadPolicies(ctx context.Context, q querier, tail string, args ...any) ([]model.Policy, error) {
	rows, err := q.Query(ctx, `SELECT level, name, display_name, description, request_count, unit_time, time_unit,
		stop_on_quota_reach, billing_plan, generation, policy_id::text, quota_type, data_amount, data_unit,
		rate_limit_count, rate_limit_time_unit, conditional_groups, key_template, condition
		FROM throttling_policies `+tail, args...)
	if err != nil {
		return nil, fmt.Errorf("query policies: %w", err)
	}
	ps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.Policy, error) {
		var p model.Policy
		var groups []byte
		err := r.Scan(&p.Level, &p.Name, &p.DisplayName, &p.Description, &p.RequestCount, &p.UnitTime, &p.TimeUnit,
			&p.StopOnQuotaReach, &p.BillingPlan, &p.Generation, &p.ID, &p.QuotaType, &p.DataAmount, &p.DataUnit,
			&p.RateLimitCount, &p.RateLimitTimeUnit, &groups, &p.KeyTemplate, &p.Condition)
		if err == nil && len(groups) > 0 && string(groups) != "[]" {
			err = json.Unmarshal(groups, &p.ConditionGroups)
		}
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("scan policies: %w", err)
	}
	return ps, nil
}

// denyValue is WSO2's conditionValue of a blocking condition as stored:
// a JSON string for API, APPLICATION and USER, an object for IP and IPRANGE.
type denyValue struct {
	FixedIP    string `json:"fixedIp,omitempty"`
	StartingIP string `json:"startingIp,omitempty"`
	EndingIP   string `json:"endingIp,omitempty"`
	Invert     bool   `json:"invert"`
}

func encodeDenyValue(d *model.DenyPolicy) ([]byte, error) {
	switch d.ConditionType {
	case model.DenyIP:
		return json.Marshal(denyValue{FixedIP: d.Value, Invert: d.Invert})
	case model.DenyIPRange:
		return json.Marshal(denyValue{StartingIP: d.StartIP, EndingIP: d.EndIP, Invert: d.Invert})
	}
	return json.Marshal(d.Value)
}

func decodeDenyValue(d *model.DenyPolicy, raw []byte) error {
	switch d.ConditionType {
	case model.DenyIP, model.DenyIPRange:
		var v denyValue
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		d.Value, d.StartIP, d.EndIP, d.Invert = v.FixedIP, v.StartingIP, v.EndingIP, v.Invert
		return nil
	}
	return json.Unmarshal(raw, &d.Value)
}

// CreateDenyPolicy stores a deny policy (WSO2's blocking condition) and
// appends its event. The same condition twice is ErrConflict.
func (s *Store) CreateDenyPolicy(ctx context.Context, d model.DenyPolicy) (*model.DenyPolicy, error) {
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("create deny policy: %w", invalid("%s", joinLines(err)))
	}
	d.ID = newID()
	raw, err := encodeDenyValue(&d)
	if err != nil {
		return nil, fmt.Errorf("create deny policy: encode conditionValue: %w", err)
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `INSERT INTO deny_policies (id, condition_type, condition_value, status)
			VALUES ($1, $2, $3, $4) RETURNING generation`, d.ID, d.ConditionType, raw, d.Enabled).Scan(&d.Generation)
		if code, _ := pgCode(err); code == uniqueViolation {
			return conflict("a %s deny policy with this conditionValue already exists", d.ConditionType)
		}
		if err != nil {
			return fmt.Errorf("write deny policy: %w", err)
		}
		return emit(ctx, tx, events.KindDenyPolicy, events.OpUpsert, d.ID, "", d.Generation, d)
	})
	if err != nil {
		return nil, fmt.Errorf("create deny policy: %w", err)
	}
	return &d, nil
}

// SetDenyPolicyStatus switches a deny policy on or off and appends its
// event.
func (s *Store) SetDenyPolicyStatus(ctx context.Context, id string, enabled bool) (*model.DenyPolicy, error) {
	var d *model.DenyPolicy
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		if d, err = getDenyPolicy(ctx, tx, id, true); err != nil {
			return err
		}
		d.Enabled = enabled
		err = tx.QueryRow(ctx, `UPDATE deny_policies SET status = $2, generation = nextval('generation_seq')
			WHERE id = $1 RETURNING generation`, id, enabled).Scan(&d.Generation)
		if err != nil {
			return fmt.Errorf("write deny policy: %w", err)
		}
		return emit(ctx, tx, events.KindDenyPolicy, events.OpUpsert, d.ID, "", d.Generation, d)
	})
	if err != nil {
		return nil, fmt.Errorf("set deny policy %s status: %w", id, err)
	}
	return d, nil
}

// DeleteDenyPolicy removes a deny policy and appends its delete event.
func (s *Store) DeleteDenyPolicy(ctx context.Context, id string) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		d, err := getDenyPolicy(ctx, tx, id, true)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM deny_policies WHERE id = $1`, id); err != nil {
			return fmt.Errorf("delete: %w", err)
		}
		return emitDelete(ctx, tx, events.KindDenyPolicy, id, "", model.DenyPolicy{ID: d.ID, ConditionType: d.ConditionType})
	})
	if err != nil {
		return fmt.Errorf("delete deny policy %s: %w", id, err)
	}
	return nil
}

// GetDenyPolicy loads one deny policy.
func (s *Store) GetDenyPolicy(ctx context.Context, id string) (*model.DenyPolicy, error) {
	d, err := getDenyPolicy(ctx, s.pool, id, false)
	if err != nil {
		return nil, fmt.Errorf("get deny policy %s: %w", id, err)
	}
	return d, nil
}

// ListDenyPolicies returns every deny policy, oldest first.
func (s *Store) ListDenyPolicies(ctx context.Context) ([]model.DenyPolicy, error) {
	ds, err := loadDenyPolicies(ctx, s.pool, `ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list deny policies: %w", err)
	}
	return ds, nil
}

func getDenyPolicy(ctx context.Context, q querier, id string, forUpdate bool) (*model.DenyPolicy, error) {
	if !validID(id) {
		return nil, notFound("deny policy %q does not exist", id)
	}
	tail := `WHERE id = $1`
	if forUpdate {
		tail += ` FOR UPDATE`
	}
	ds, err := loadDenyPolicies(ctx, q, tail, id)
	if err != nil {
		return nil, err
	}
	if len(ds) == 0 {
		return nil, notFound("deny policy %s does not exist", id)
	}
	return &ds[0], nil
}

func loadDenyPolicies(ctx context.Context, q querier, tail string, args ...any) ([]model.DenyPolicy, error) {
	rows, err := q.Query(ctx, `SELECT id::text, condition_type, condition_value, status, generation FROM deny_policies `+tail, args...)
	if err != nil {
		return nil, fmt.Errorf("query deny policies: %w", err)
	}
	ds, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.DenyPolicy, error) {
		var d model.DenyPolicy
		var raw []byte
		if err := r.Scan(&d.ID, &d.ConditionType, &raw, &d.Enabled, &d.Generation); err != nil {
			return d, err
		}
		if err := decodeDenyValue(&d, raw); err != nil {
			return d, errors.Join(fmt.Errorf("deny policy %s: conditionValue", d.ID), err)
		}
		return d, nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan deny policies: %w", err)
	}
	return ds, nil
}

package store

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/model"
)

// SubscriptionFilter selects subscriptions; empty fields match all.
type SubscriptionFilter struct {
	ApplicationID string
	APIID         string
	Owner         string // only subscriptions of this owner's applications
}

// CreateSubscription subscribes an owner's application to an API at a tier
// and appends its event. The API must be PUBLISHED or PROTOTYPED and offer
// the tier; a second subscription of the same pair is ErrConflict.
func (s *Store) CreateSubscription(ctx context.Context, sub model.Subscription, owner string) (*model.Subscription, error) {
	if sub.ID == "" {
		sub.ID = newID()
	}
	if sub.Status == "" {
		sub.Status = model.SubUnblocked
	}
	var errs []string
	if sub.ApplicationID == "" {
		errs = append(errs, "applicationId is required")
	}
	if sub.APIID == "" {
		errs = append(errs, "apiId is required")
	}
	if sub.ThrottlingPolicy == "" {
		errs = append(errs, "throttlingPolicy is required")
	}
	if len(errs) > 0 {
		return nil, invalid("%s", strings.Join(errs, "; "))
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := getApplication(ctx, tx, sub.ApplicationID, owner, true); err != nil {
			return err
		}
		// Locked so that a concurrent DeleteAPI sees this subscription.
		api, err := getAPI(ctx, tx, sub.APIID, true)
		if err != nil {
			return err
		}
		if api.Status != model.StatusPublished && api.Status != model.StatusPrototyped {
			// The devportal does not show it, so it does not exist there.
			return notFound("api %s does not exist", api.ID)
		}
		if err := checkTiers(api, &sub); err != nil {
			return err
		}
		err = tx.QueryRow(ctx, `INSERT INTO subscriptions (id, application_id, api_id, throttling_policy, requested_throttling_policy, status)
			VALUES ($1, $2, $3, $4, $5, $6) RETURNING generation`,
			sub.ID, sub.ApplicationID, sub.APIID, sub.ThrottlingPolicy, sub.RequestedThrottlingPolicy, sub.Status).Scan(&sub.Generation)
		if code, _ := pgCode(err); code == uniqueViolation {
			return conflict("application %s is already subscribed to api %s", sub.ApplicationID, sub.APIID)
		}
		if err != nil {
			return fmt.Errorf("write subscription: %w", err)
		}
		return emit(ctx, tx, events.KindSubscription, events.OpUpsert, sub.ID, "", sub.Generation, sub)
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe application %s to api %s: %w", sub.ApplicationID, sub.APIID, err)
	}
	return &sub, nil
}

// checkTiers requires the API to offer the subscription's tier and its
// requested tier; an empty requested tier becomes the tier.
func checkTiers(api *model.API, sub *model.Subscription) error {
	if sub.RequestedThrottlingPolicy == "" {
		sub.RequestedThrottlingPolicy = sub.ThrottlingPolicy
	}
	for _, f := range []struct{ name, tier string }{
		{"throttlingPolicy", sub.ThrottlingPolicy}, {"requestedThrottlingPolicy", sub.RequestedThrottlingPolicy},
	} {
		if !slices.Contains(api.Policies, f.tier) {
			return invalid("%s %q is not offered by api %s; offered: %s", f.name, f.tier, api.ID, strings.Join(api.Policies, ", "))
		}
	}
	return nil
}

// UpdateSubscription changes the tier and requested tier of a subscription
// of an owner's application (WSO2's devportal PUT) and appends its event,
// in one transaction. Both tiers must be offered by the API. The status is
// not the subscriber's to change.
func (s *Store) UpdateSubscription(ctx context.Context, id, owner, tier, requested string) (*model.Subscription, error) {
	if tier == "" {
		return nil, invalid("throttlingPolicy is required")
	}
	var out *model.Subscription
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		sub, err := getSubscription(ctx, tx, id, owner, true)
		if err != nil {
			return err
		}
		api, err := getAPI(ctx, tx, sub.APIID, false)
		if err != nil {
			return err
		}
		sub.ThrottlingPolicy, sub.RequestedThrottlingPolicy = tier, requested
		if err := checkTiers(api, sub); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `UPDATE subscriptions SET throttling_policy = $2, requested_throttling_policy = $3,
			generation = nextval('generation_seq') WHERE id = $1 RETURNING generation`,
			id, sub.ThrottlingPolicy, sub.RequestedThrottlingPolicy).Scan(&sub.Generation); err != nil {
			return fmt.Errorf("write subscription: %w", err)
		}
		out = sub
		return emit(ctx, tx, events.KindSubscription, events.OpUpsert, sub.ID, "", sub.Generation, sub)
	})
	if err != nil {
		return nil, fmt.Errorf("update subscription %s: %w", id, err)
	}
	return out, nil
}

// GetSubscription loads a subscription; a non-empty owner restricts it to
// that owner's applications.
func (s *Store) GetSubscription(ctx context.Context, id, owner string) (*model.Subscription, error) {
	sub, err := getSubscription(ctx, s.pool, id, owner, false)
	if err != nil {
		return nil, fmt.Errorf("get subscription %s: %w", id, err)
	}
	return sub, nil
}

// ListSubscriptions returns the subscriptions that match f.
func (s *Store) ListSubscriptions(ctx context.Context, f SubscriptionFilter) ([]model.Subscription, error) {
	for _, id := range []string{f.ApplicationID, f.APIID} {
		if id != "" && !validID(id) {
			return []model.Subscription{}, nil
		}
	}
	subs, err := loadSubscriptions(ctx, s.pool, `
		WHERE ($1 = '' OR application_id::text = $1) AND ($2 = '' OR api_id::text = $2)
		AND ($3 = '' OR application_id IN (SELECT id FROM applications WHERE owner = $3))
		ORDER BY created_at, id`, f.ApplicationID, f.APIID, f.Owner)
	if err != nil {
		return nil, fmt.Errorf("list subscriptions: %w", err)
	}
	return subs, nil
}

// DeleteSubscription removes a subscription of an owner's application and
// appends its delete event.
func (s *Store) DeleteSubscription(ctx context.Context, id, owner string) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		sub, err := getSubscription(ctx, tx, id, owner, true)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM subscriptions WHERE id = $1`, id); err != nil {
			return fmt.Errorf("delete: %w", err)
		}
		return emitDelete(ctx, tx, events.KindSubscription, id, "", sub)
	})
	if err != nil {
		return fmt.Errorf("delete subscription %s: %w", id, err)
	}
	return nil
}

// SetSubscriptionStatus changes a subscription's status (model.SubBlocked,
// model.SubProdOnlyBlocked, model.SubUnblocked, ...) and appends its event,
// in one transaction. Setting the status it already has changes nothing
// and appends nothing.
func (s *Store) SetSubscriptionStatus(ctx context.Context, id, status string) (*model.Subscription, error) {
	switch status {
	case model.SubUnblocked, model.SubBlocked, model.SubProdOnlyBlocked, model.SubOnHold, model.SubRejected:
	default:
		return nil, invalid("subscription status %q is not one of %s, %s, %s, %s, %s", status,
			model.SubUnblocked, model.SubBlocked, model.SubProdOnlyBlocked, model.SubOnHold, model.SubRejected)
	}
	var out *model.Subscription
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		sub, err := getSubscription(ctx, tx, id, "", true)
		if err != nil {
			return err
		}
		out = sub
		if sub.Status == status {
			return nil
		}
		if !blockable(sub.Status) || !blockable(status) {
			// Blocking is a publisher's switch between active states; a
			// subscription on hold or rejected is a workflow's to change.
			return invalid("subscription %s is %s; only %s, %s and %s subscriptions can be blocked or unblocked",
				id, sub.Status, model.SubUnblocked, model.SubBlocked, model.SubProdOnlyBlocked)
		}
		sub.Status = status
		if err := tx.QueryRow(ctx, `UPDATE subscriptions SET status = $2, generation = nextval('generation_seq')
			WHERE id = $1 RETURNING generation`, id, status).Scan(&sub.Generation); err != nil {
			return fmt.Errorf("write status: %w", err)
		}
		return emit(ctx, tx, events.KindSubscription, events.OpUpsert, sub.ID, "", sub.Generation, sub)
	})
	if err != nil {
		return nil, fmt.Errorf("set subscription %s to %s: %w", id, status, err)
	}
	return out, nil
}

func blockable(status string) bool {
	return status == model.SubUnblocked || status == model.SubBlocked || status == model.SubProdOnlyBlocked
}

// APISubscription is a subscription with the application it belongs to, as
// the publisher lists them.
type APISubscription struct {
	model.Subscription
	ApplicationName  string
	ApplicationOwner string
}

// ListAPISubscriptions returns the subscriptions to an API, with their
// applications' names and owners; an unknown API is ErrNotFound.
func (s *Store) ListAPISubscriptions(ctx context.Context, apiID string) ([]APISubscription, error) {
	if _, err := getAPI(ctx, s.pool, apiID, false); err != nil {
		return nil, fmt.Errorf("list subscriptions of api %s: %w", apiID, err)
	}
	rows, err := s.pool.Query(ctx, `SELECT s.id, s.application_id, s.api_id, s.throttling_policy,
		coalesce(nullif(s.requested_throttling_policy, ''), s.throttling_policy), s.status, s.generation, a.name, a.owner
		FROM subscriptions s JOIN applications a ON a.id = s.application_id
		WHERE s.api_id = $1 ORDER BY s.created_at, s.id`, apiID)
	if err != nil {
		return nil, fmt.Errorf("list subscriptions of api %s: %w", apiID, err)
	}
	subs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (APISubscription, error) {
		var s APISubscription
		return s, r.Scan(&s.ID, &s.ApplicationID, &s.APIID, &s.ThrottlingPolicy, &s.RequestedThrottlingPolicy, &s.Status, &s.Generation,
			&s.ApplicationName, &s.ApplicationOwner)
	})
	if err != nil {
		return nil, fmt.Errorf("list subscriptions of api %s: %w", apiID, err)
	}
	return subs, nil
}

func getSubscription(ctx context.Context, q querier, id, owner string, forUpdate bool) (*model.Subscription, error) {
	if !validID(id) {
		return nil, notFound("subscription %q does not exist", id)
	}
	tail := `WHERE id = $1 AND ($2 = '' OR application_id IN (SELECT id FROM applications WHERE owner = $2))`
	if forUpdate {
		tail += ` FOR UPDATE`
	}
	subs, err := loadSubscriptions(ctx, q, tail, id, owner)
	if err != nil {
		return nil, err
	}
	if len(subs) == 0 {
		return nil, notFound("subscription %s does not exist", id)
	}
	return &subs[0], nil
}

func loadSubscriptions(ctx context.Context, q querier, tail string, args ...any) ([]model.Subscription, error) {
	rows, err := q.Query(ctx, `SELECT id, application_id, api_id, throttling_policy,
		coalesce(nullif(requested_throttling_policy, ''), throttling_policy), status, generation FROM subscriptions `+tail, args...)
	if err != nil {
		return nil, fmt.Errorf("query subscriptions: %w", err)
	}
	subs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.Subscription, error) {
		var sub model.Subscription
		return sub, r.Scan(&sub.ID, &sub.ApplicationID, &sub.APIID, &sub.ThrottlingPolicy, &sub.RequestedThrottlingPolicy, &sub.Status, &sub.Generation)
	})
	if err != nil {
		return nil, fmt.Errorf("scan subscriptions: %w", err)
	}
	return subs, nil
}

// GatewayState loads, in one consistent snapshot, everything a gateway of
// an environment needs: its deployments and all applications, key mappings,
// subscriptions, policies, deny policies and the unexpired revocations.
func (s *Store) GatewayState(ctx context.Context, environment string) (*model.GatewayState, error) {
	st := &model.GatewayState{Environment: environment}
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		if st.Deployments, err = deployments(ctx, tx, environment); err != nil {
			return err
		}
		apps, err := loadApplications(ctx, tx, `ORDER BY id`)
		if err != nil {
			return err
		}
		st.Applications = make([]model.Application, len(apps))
		for i, a := range apps {
			st.Applications[i] = a.Application
		}
		if st.KeyMappings, err = loadKeyMappings(ctx, tx, `ORDER BY id`); err != nil {
			return err
		}
		if st.Subscriptions, err = loadSubscriptions(ctx, tx, `ORDER BY id`); err != nil {
			return err
		}
		if st.Policies, err = loadPolicies(ctx, tx, `ORDER BY level, name`); err != nil {
			return err
		}
		if st.DenyPolicies, err = loadDenyPolicies(ctx, tx, `ORDER BY created_at, id`); err != nil {
			return err
		}
		if st.KeyManagers, err = loadKeyManagers(ctx, tx, `ORDER BY name, id`); err != nil {
			return err
		}
		st.Revocations, err = loadRevocations(ctx, tx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("gateway state of %s: %w", environment, err)
	}
	return st, nil
}

// loadRevocations returns the revoked access tokens that have not expired,
// then the client-wide revocations.
func loadRevocations(ctx context.Context, q querier) ([]model.Revocation, error) {
	rows, err := q.Query(ctx, `SELECT jti, expires_at FROM revoked_tokens WHERE expires_at > now() ORDER BY jti`)
	if err != nil {
		return nil, fmt.Errorf("query revoked tokens: %w", err)
	}
	revs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.Revocation, error) {
		var v model.Revocation
		err := r.Scan(&v.JTI, &v.ExpiresAt)
		v.ExpiresAt = v.ExpiresAt.UTC()
		return v, err
	})
	if err != nil {
		return nil, fmt.Errorf("scan revoked tokens: %w", err)
	}
	clients, err := loadClientRevocations(ctx, q) // oauthkeys.go
	if err != nil {
		return nil, err
	}
	return append(revs, clients...), nil
}

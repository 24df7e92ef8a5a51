package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/model"
)

// ResidentKeyManager is the name of the built-in key manager.
const ResidentKeyManager = "Resident Key Manager"

// Application is a devportal application with the fields only the portal
// shows: the gateways never need them, so application events (which carry
// model.Application) do not either.
type Application struct {
	model.Application
	Description string
	// Groups and Attributes are WSO2's: stored and returned; application
	// sharing by group is not implemented.
	Groups     []string
	Attributes map[string]string
	// Extra holds the WSO2 properties apim stores but does not act on (a
	// JSON object by WSO2 property name). At most model.MaxExtraBytes.
	Extra     json.RawMessage
	CreatedAt time.Time
	UpdatedAt time.Time
	// SubscriptionCount is the number of its subscriptions when loaded.
	SubscriptionCount int
}

// ApplicationFilter selects a page of applications.
type ApplicationFilter struct {
	Owner  string // only this owner's; "" means everyone's
	Name   string // only names holding this, case-insensitively
	Limit  int    // at most this many; 0 means 25
	Offset int    // skip this many
}

// Limits of an application's WSO2 properties.
const (
	MaxApplicationGroups     = 100
	MaxApplicationAttributes = 100
)

// checkApplication validates what CreateApplication and UpdateApplication
// write, naming each field as WSO2 does.
func checkApplication(app *Application) error {
	var errs []string
	if strings.TrimSpace(app.Name) == "" {
		errs = append(errs, "name is required")
	} else if err := model.CheckText(app.Name, model.MaxAppNameLength); err != nil {
		errs = append(errs, "name "+err.Error())
	}
	if err := model.CheckProse(app.Description, model.MaxDescriptionLength); err != nil {
		errs = append(errs, "description "+err.Error())
	}
	if app.Owner == "" {
		errs = append(errs, "owner is required")
	}
	if app.ThrottlingPolicy == "" {
		errs = append(errs, "throttlingPolicy is required")
	}
	if len(app.Groups) > MaxApplicationGroups {
		errs = append(errs, fmt.Sprintf("groups has more than %d values", MaxApplicationGroups))
	}
	for i, g := range app.Groups {
		if strings.TrimSpace(g) == "" || len(g) > model.MaxPropertyNameLength {
			errs = append(errs, fmt.Sprintf("groups[%d] must be 1 to %d bytes, not blank", i, model.MaxPropertyNameLength))
		}
	}
	if len(app.Attributes) > MaxApplicationAttributes {
		errs = append(errs, fmt.Sprintf("attributes has more than %d values", MaxApplicationAttributes))
	}
	for k, v := range app.Attributes {
		if strings.TrimSpace(k) == "" || len(k) > model.MaxPropertyNameLength || len(v) > model.MaxPropertyValueLength {
			errs = append(errs, fmt.Sprintf("attributes.%s: names are 1 to %d bytes, values at most %d", k, model.MaxPropertyNameLength, model.MaxPropertyValueLength))
		}
	}
	if len(app.Extra) > model.MaxExtraBytes {
		errs = append(errs, fmt.Sprintf("subscriptionScopes take %d bytes, more than %d", len(app.Extra), model.MaxExtraBytes))
	}
	if len(errs) > 0 {
		return invalid("%s", strings.Join(errs, "; "))
	}
	return nil
}

// RegisterFunc creates an OAuth client inside tx, the transaction that also
// writes the key mapping, and returns its credentials.
type RegisterFunc func(ctx context.Context, tx pgx.Tx) (clientID, secret string, err error)

// DeleteClientsFunc deletes OAuth clients inside tx, the transaction that
// deletes the application they belonged to.
type DeleteClientsFunc func(ctx context.Context, tx pgx.Tx, clientIDs []string) error

// CreateApplication stores a new application and appends its event. Its
// throttling policy must exist at application level; an owner's application
// names are unique.
func (s *Store) CreateApplication(ctx context.Context, app Application) (*Application, error) {
	if app.ID == "" {
		app.ID = newID()
	}
	if app.TokenType == "" {
		app.TokenType = "JWT"
	}
	if app.Status == "" {
		app.Status = "APPROVED"
	}
	if err := checkApplication(&app); err != nil {
		return nil, err
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := checkPolicies(ctx, tx, "throttlingPolicy", model.LevelApplication, []string{app.ThrottlingPolicy}); err != nil {
			return invalid("throttlingPolicy: no application throttling policy named %s", app.ThrottlingPolicy)
		}
		err := tx.QueryRow(ctx, `
			INSERT INTO applications (id, name, owner, description, throttling_policy, token_type, status, groups, attributes, wso2_extra)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING generation, created_at, updated_at`,
			app.ID, app.Name, app.Owner, app.Description, app.ThrottlingPolicy, app.TokenType, app.Status,
			nonNil(app.Groups), nonNilMap(app.Attributes), extraObject(app.Extra)).Scan(&app.Generation, &app.CreatedAt, &app.UpdatedAt)
		if code, _ := pgCode(err); code == uniqueViolation {
			return conflict("an application named %s already exists", app.Name)
		}
		if err != nil {
			return fmt.Errorf("write application: %w", err)
		}
		return emit(ctx, tx, events.KindApplication, events.OpUpsert, app.ID, "", app.Generation, app.Application)
	})
	if err != nil {
		return nil, fmt.Errorf("create application %s: %w", app.Name, err)
	}
	return &app, nil
}

// UpdateApplication replaces what an owner may change of an application
// (name, throttling policy, description, token type, groups, attributes
// and the stored WSO2 properties; not its owner nor its status) and
// appends its event, in one transaction.
func (s *Store) UpdateApplication(ctx context.Context, app Application) (*Application, error) {
	if err := checkApplication(&app); err != nil {
		return nil, err
	}
	var out *Application
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		cur, err := getApplication(ctx, tx, app.ID, app.Owner, true)
		if err != nil {
			return err
		}
		if err := checkPolicies(ctx, tx, "throttlingPolicy", model.LevelApplication, []string{app.ThrottlingPolicy}); err != nil {
			return invalid("throttlingPolicy: no application throttling policy named %s", app.ThrottlingPolicy)
		}
		app.Status, app.CreatedAt = cur.Status, cur.CreatedAt
		if app.TokenType == "" {
			app.TokenType = cur.TokenType
		}
		err = tx.QueryRow(ctx, `
			UPDATE applications SET name = $2, description = $3, throttling_policy = $4, token_type = $5, groups = $6,
				attributes = $7, wso2_extra = $8, generation = nextval('generation_seq'), updated_at = now()
			WHERE id = $1 RETURNING generation, updated_at`,
			app.ID, app.Name, app.Description, app.ThrottlingPolicy, app.TokenType, nonNil(app.Groups),
			nonNilMap(app.Attributes), extraObject(app.Extra)).Scan(&app.Generation, &app.UpdatedAt)
		if code, _ := pgCode(err); code == uniqueViolation {
			return conflict("an application named %s already exists", app.Name)
		}
		if err != nil {
			return fmt.Errorf("write application: %w", err)
		}
		out = &app
		return emit(ctx, tx, events.KindApplication, events.OpUpsert, app.ID, "", app.Generation, app.Application)
	})
	if err != nil {
		return nil, fmt.Errorf("update application %s: %w", app.ID, err)
	}
	return out, nil
}

// GetApplication loads an application. A non-empty owner restricts the
// lookup to that owner's: anyone else's is ErrNotFound, as if absent.
func (s *Store) GetApplication(ctx context.Context, id, owner string) (*Application, error) {
	app, err := getApplication(ctx, s.pool, id, owner, false)
	if err != nil {
		return nil, fmt.Errorf("get application %s: %w", id, err)
	}
	return app, nil
}

// ListApplications returns a page of the applications f selects, by
// name, and how many it selects in all.
func (s *Store) ListApplications(ctx context.Context, f ApplicationFilter) ([]Application, int, error) {
	if f.Limit <= 0 {
		f.Limit = 25
	}
	where := `WHERE ($1 = '' OR owner = $1) AND name ILIKE '%' || ` + likeEscaped("$2") + ` || '%'`
	var total int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM applications `+where, f.Owner, f.Name).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count applications of %q: %w", f.Owner, err)
	}
	apps, err := loadApplications(ctx, s.pool, where+` ORDER BY name, id LIMIT $3 OFFSET $4`, f.Owner, f.Name, f.Limit, max(f.Offset, 0))
	if err != nil {
		return nil, 0, fmt.Errorf("list applications of %q: %w", f.Owner, err)
	}
	return apps, total, nil
}

// DeleteApplication removes an owner's application with its key mappings,
// their OAuth clients (through deleteClients) and its subscriptions,
// appending a delete event for each.
func (s *Store) DeleteApplication(ctx context.Context, id, owner string, deleteClients DeleteClientsFunc) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := getApplication(ctx, tx, id, owner, true); err != nil {
			return err
		}
		keys, err := loadKeyMappings(ctx, tx, `WHERE application_id = $1`, id)
		if err != nil {
			return err
		}
		subs, err := loadSubscriptions(ctx, tx, `WHERE application_id = $1`, id)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM applications WHERE id = $1`, id); err != nil {
			return fmt.Errorf("delete: %w", err)
		}
		// The key mappings went with the application; their OAuth clients
		// go now, so the consumer keys cannot mint tokens any more.
		// Only the resident key manager's: an external client's id may
		// equal one of ours and is not ours to delete.
		clientIDs := make([]string, 0, len(keys))
		for _, k := range keys {
			if k.KeyManagerID == "" {
				clientIDs = append(clientIDs, k.ConsumerKey)
			}
		}
		if err := deleteClients(ctx, tx, clientIDs); err != nil {
			return fmt.Errorf("delete oauth clients: %w", err)
		}
		for _, k := range keys {
			if err := emitDelete(ctx, tx, events.KindKeyMapping, k.ID, "", k); err != nil {
				return err
			}
		}
		for _, sub := range subs {
			if err := emitDelete(ctx, tx, events.KindSubscription, sub.ID, "", sub); err != nil {
				return err
			}
		}
		return emitDelete(ctx, tx, events.KindApplication, id, "", model.Application{ID: id, Owner: owner})
	})
	if err != nil {
		return fmt.Errorf("delete application %s: %w", id, err)
	}
	return nil
}

func getApplication(ctx context.Context, q querier, id, owner string, forUpdate bool) (*Application, error) {
	if !validID(id) {
		return nil, notFound("application %q does not exist", id)
	}
	tail := `WHERE id = $1 AND ($2 = '' OR owner = $2)`
	if forUpdate {
		tail += ` FOR UPDATE`
	}
	apps, err := loadApplications(ctx, q, tail, id, owner)
	if err != nil {
		return nil, err
	}
	if len(apps) == 0 {
		return nil, notFound("application %s does not exist", id)
	}
	return &apps[0], nil
}

func loadApplications(ctx context.Context, q querier, tail string, args ...any) ([]Application, error) {
	rows, err := q.Query(ctx, `SELECT id, name, owner, description, throttling_policy, token_type, status, groups,
		attributes, wso2_extra, created_at, updated_at, generation,
		(SELECT count(*) FROM subscriptions s WHERE s.application_id = applications.id)
		FROM applications `+tail, args...)
	if err != nil {
		return nil, fmt.Errorf("query applications: %w", err)
	}
	apps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Application, error) {
		var a Application
		err := r.Scan(&a.ID, &a.Name, &a.Owner, &a.Description, &a.ThrottlingPolicy, &a.TokenType, &a.Status, &a.Groups,
			&a.Attributes, &a.Extra, &a.CreatedAt, &a.UpdatedAt, &a.Generation, &a.SubscriptionCount)
		a.Groups, a.Extra = nilIfEmpty(a.Groups), extraOrNil(a.Extra)
		a.CreatedAt, a.UpdatedAt = a.CreatedAt.UTC(), a.UpdatedAt.UTC()
		if len(a.Attributes) == 0 {
			a.Attributes = nil
		}
		return a, err
	})
	if err != nil {
		return nil, fmt.Errorf("scan applications: %w", err)
	}
	return apps, nil
}

// CreateKeyMapping generates keys of one type for an owner's application:
// register creates the OAuth client in the same transaction, then the key
// mapping row and its event are written. It returns the mapping and the
// client secret, which is never stored in clear. ErrConflict when the
// application already has keys of that type.
func (s *Store) CreateKeyMapping(ctx context.Context, appID, owner, keyType string, register RegisterFunc) (*model.KeyMapping, string, error) {
	if keyType != model.KeyTypeProduction && keyType != model.KeyTypeSandbox {
		return nil, "", invalid("keyType must be %s or %s", model.KeyTypeProduction, model.KeyTypeSandbox)
	}
	var km *model.KeyMapping
	var secret string
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := getApplication(ctx, tx, appID, owner, true); err != nil {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM key_mappings WHERE application_id = $1 AND key_type = $2 AND key_manager = $3)`,
			appID, keyType, ResidentKeyManager).Scan(&exists); err != nil {
			return fmt.Errorf("check keys: %w", err)
		}
		if exists {
			return conflict("application %s already has %s keys", appID, keyType)
		}
		clientID, sec, err := register(ctx, tx)
		if err != nil {
			return fmt.Errorf("register oauth client: %w", err)
		}
		km = &model.KeyMapping{ID: newID(), ApplicationID: appID, KeyType: keyType, ConsumerKey: clientID, KeyManager: ResidentKeyManager}
		err = tx.QueryRow(ctx, `INSERT INTO key_mappings (id, application_id, key_type, key_manager, consumer_key)
			VALUES ($1, $2, $3, $4, $5) RETURNING generation`,
			km.ID, appID, keyType, ResidentKeyManager, clientID).Scan(&km.Generation)
		if code, _ := pgCode(err); code == uniqueViolation {
			return conflict("application %s already has %s keys", appID, keyType)
		}
		if err != nil {
			return fmt.Errorf("write key mapping: %w", err)
		}
		secret = sec
		return emit(ctx, tx, events.KindKeyMapping, events.OpUpsert, km.ID, "", km.Generation, km)
	})
	if err != nil {
		return nil, "", fmt.Errorf("generate %s keys of application %s: %w", keyType, appID, err)
	}
	return km, secret, nil
}

// ListKeyMappings returns an owner's application's key mappings.
func (s *Store) ListKeyMappings(ctx context.Context, appID, owner string) ([]model.KeyMapping, error) {
	if _, err := getApplication(ctx, s.pool, appID, owner, false); err != nil {
		return nil, fmt.Errorf("list keys of application %s: %w", appID, err)
	}
	keys, err := loadKeyMappings(ctx, s.pool, `WHERE application_id = $1 ORDER BY key_type`, appID)
	if err != nil {
		return nil, fmt.Errorf("list keys of application %s: %w", appID, err)
	}
	return keys, nil
}

func loadKeyMappings(ctx context.Context, q querier, tail string, args ...any) ([]model.KeyMapping, error) {
	rows, err := q.Query(ctx, `SELECT id, application_id, key_type, consumer_key, key_manager, coalesce(key_manager_id::text, ''), generation
		FROM key_mappings `+tail, args...)
	if err != nil {
		return nil, fmt.Errorf("query key mappings: %w", err)
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.KeyMapping, error) {
		var k model.KeyMapping
		return k, r.Scan(&k.ID, &k.ApplicationID, &k.KeyType, &k.ConsumerKey, &k.KeyManager, &k.KeyManagerID, &k.Generation)
	})
	if err != nil {
		return nil, fmt.Errorf("scan key mappings: %w", err)
	}
	return keys, nil
}

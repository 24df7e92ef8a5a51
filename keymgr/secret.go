package keymgr

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/ory/fosite"

	"github.com/apim-dev/apim/internal/model"
)

// MaxTokenValidity is the longest lifetime a client's tokens may be given.
const MaxTokenValidity = 365 * 24 * time.Hour

// TokenValidity is one OAuth client's token lifetimes, WSO2's per key
// validity periods. A zero field means the key manager's default
// (Config.AccessTokenTTL, Config.RefreshTokenTTL).
type TokenValidity struct {
	// ApplicationAccessToken is the lifetime of the client's own access
	// tokens (client_credentials): WSO2's validityTime and
	// application_access_token_expiry_time.
	ApplicationAccessToken time.Duration
	// UserAccessToken is the lifetime of access tokens issued for a user
	// (password, authorization_code, refresh_token):
	// user_access_token_expiry_time.
	UserAccessToken time.Duration
	// RefreshToken is the lifetime of refresh tokens:
	// refresh_token_expiry_time.
	RefreshToken time.Duration
}

// ErrValidity is returned by TokenValidity.Validate.
var ErrValidity = errors.New("is not a valid token lifetime")

// Validate checks that each lifetime is zero or a whole number of seconds
// from one second to MaxTokenValidity.
func (v TokenValidity) Validate() error {
	var errs []error
	for name, d := range map[string]time.Duration{
		"application access token": v.ApplicationAccessToken,
		"user access token":        v.UserAccessToken,
		"refresh token":            v.RefreshToken,
	} {
		if d != 0 && (d < time.Second || d > MaxTokenValidity || d%time.Second != 0) {
			errs = append(errs, fmt.Errorf("%s lifetime %s %w: want whole seconds from 1 to %d",
				name, d, ErrValidity, int64(MaxTokenValidity/time.Second)))
		}
	}
	return errors.Join(errs...)
}

// ErrClientNotFound is returned for an OAuth client that does not exist.
var ErrClientNotFound = errors.New("oauth client not found")

func seconds(d time.Duration) *int64 {
	if d <= 0 {
		return nil
	}
	s := int64(d / time.Second)
	return &s
}

// UpdateClient changes an application's OAuth client inside the caller's
// transaction (the one that writes or finds its key mapping): its grant
// types when grantTypes is not empty, its redirect URI when callback is not
// nil ("" for none; kept for the authorization code grant only, so grant
// types without it drop the one it had), its token lifetimes when v is not
// nil. The token and authorize endpoints use them from the next request on.
func (s *Server) UpdateClient(ctx context.Context, tx pgx.Tx, clientID string, grantTypes []string, callback *string, v *TokenValidity) error {
	if callback != nil || len(grantTypes) > 0 {
		if err := setRedirectURIs(ctx, tx, clientID, grantTypes, callback); err != nil {
			return err
		}
	}
	if len(grantTypes) > 0 {
		if err := validateGrantTypes(grantTypes); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `UPDATE oauth_clients SET grant_types = $2 WHERE client_id = $1`, clientID, grantTypes)
		if err != nil {
			return fmt.Errorf("set grant types of %s: %w", clientID, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("set grant types of %s: %w", clientID, ErrClientNotFound)
		}
	}
	if v == nil {
		return nil
	}
	if err := v.Validate(); err != nil {
		return err
	}
	app, user, refresh := seconds(v.ApplicationAccessToken), seconds(v.UserAccessToken), seconds(v.RefreshToken)
	tag, err := tx.Exec(ctx, `
		UPDATE oauth_clients SET app_access_ttl = $2, user_access_ttl = $3, refresh_ttl = $4,
			longest_access_ttl = greatest(longest_access_ttl, coalesce($2, 0), coalesce($3, 0))
		WHERE client_id = $1`, clientID, app, user, refresh)
	if err != nil {
		return fmt.Errorf("set token validity of %s: %w", clientID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("set token validity of %s: %w", clientID, ErrClientNotFound)
	}
	return nil
}

// setRedirectURIs sets a client's redirect URIs from callback (nil: its
// current one) for its grant types (grants, or its current ones when
// empty).
func setRedirectURIs(ctx context.Context, tx pgx.Tx, clientID string, grants []string, callback *string) error {
	var current []string
	var have string
	if err := tx.QueryRow(ctx, `SELECT grant_types, coalesce(redirect_uris[1], '') FROM oauth_clients WHERE client_id = $1 FOR UPDATE`,
		clientID).Scan(&current, &have); errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("set callback URL of %s: %w", clientID, ErrClientNotFound)
	} else if err != nil {
		return fmt.Errorf("set callback URL of %s: %w", clientID, err)
	}
	if len(grants) == 0 {
		grants = current
	}
	if callback == nil {
		callback = &have
	}
	redirects, err := redirectURIs(*callback, grants)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `UPDATE oauth_clients SET redirect_uris = $2 WHERE client_id = $1`, clientID, redirects); err != nil {
		return fmt.Errorf("set callback URL of %s: %w", clientID, err)
	}
	return nil
}

// ClientInfo is what the developer portal shows of an OAuth client.
type ClientInfo struct {
	GrantTypes []string
	// Callback is its redirect URI (WSO2's callbackUrl), "" for none.
	Callback string
	// Validity holds the lifetimes its tokens get: its own, or the key
	// manager's default where it has none.
	Validity TokenValidity
}

// ClientInfo returns an OAuth client's grant types and token lifetimes;
// ErrClientNotFound when it does not exist.
func (s *Server) ClientInfo(ctx context.Context, clientID string) (ClientInfo, error) {
	fc, err := (&store{apim: s.cfg.APIM}).GetClient(ctx, clientID)
	if errors.Is(err, fosite.ErrNotFound) {
		return ClientInfo{}, fmt.Errorf("client %s: %w", clientID, ErrClientNotFound)
	}
	if err != nil {
		return ClientInfo{}, err
	}
	c, ok := fc.(*client)
	if !ok {
		return ClientInfo{}, fmt.Errorf("client %s is %T", clientID, fc)
	}
	v := c.Validity
	if v.ApplicationAccessToken == 0 {
		v.ApplicationAccessToken = s.cfg.AccessTokenTTL
	}
	if v.UserAccessToken == 0 {
		v.UserAccessToken = s.cfg.AccessTokenTTL
	}
	if v.RefreshToken == 0 {
		v.RefreshToken = s.cfg.RefreshTokenTTL
	}
	info := ClientInfo{GrantTypes: c.GrantTypes, Validity: v}
	if len(c.RedirectURIs) > 0 {
		info.Callback = c.RedirectURIs[0]
	}
	return info, nil
}

// revocationMargin is added to the time a secret is regenerated to make the
// client's issued-before time: a token request that read the client (and
// its old secret) before the regeneration committed started before it, so
// its token's iat is before that time too, even if the commit took a moment.
const revocationMargin = 2 * time.Second

// RegenerateSecret gives a client a new secret inside the caller's
// transaction and returns it; only its hash is stored, so it is shown this
// once. The old secret stops working at the commit. Every refresh token of
// the client is revoked, and so is every access token it was issued before
// now, JWT or opaque: the client-wide revocation is kept in revoked_clients
// until those tokens have all expired, and announced to the gateways by a
// revocation event (schema/events.md) in the same transaction. The tokens
// the client gets with its new secret carry an iat at or after the
// revocation's time (issuedAt).
func (s *Server) RegenerateSecret(ctx context.Context, tx pgx.Tx, clientID string) (string, error) {
	secret, err := randomToken(secretBytes)
	if err != nil {
		return "", err
	}
	var longest int64
	err = tx.QueryRow(ctx, `
		UPDATE oauth_clients SET secret_hash = $2 WHERE client_id = $1
		RETURNING greatest(longest_access_ttl, coalesce(app_access_ttl, 0), coalesce(user_access_ttl, 0))`,
		clientID, hashSecret(secret)).Scan(&longest)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("regenerate the secret of %s: %w", clientID, ErrClientNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("regenerate the secret of %s: %w", clientID, err)
	}
	if _, err := tx.Exec(ctx, `
		UPDATE oauth_refresh_tokens SET revoked_at = coalesce(revoked_at, now())
		WHERE client_id = $1 AND expires_at > now()`, clientID); err != nil {
		return "", fmt.Errorf("revoke the refresh tokens of %s: %w", clientID, err)
	}
	ttl := max(time.Duration(longest)*time.Second, s.cfg.AccessTokenTTL)
	before := time.Now().UTC().Truncate(time.Second).Add(revocationMargin)
	r := model.Revocation{ClientID: clientID}
	if err := tx.QueryRow(ctx, `
		INSERT INTO revoked_clients (client_id, issued_before, expires_at) VALUES ($1, $2, $3)
		ON CONFLICT (client_id) DO UPDATE SET
			issued_before = greatest(revoked_clients.issued_before, excluded.issued_before),
			expires_at = greatest(revoked_clients.expires_at, excluded.expires_at),
			revoked_at = now()
		RETURNING issued_before, expires_at`, clientID, before, before.Add(ttl+clockLeeway)). // a token verifies until exp + leeway
		Scan(&r.IssuedBefore, &r.ExpiresAt); err != nil {
		return "", fmt.Errorf("revoke the tokens of %s: %w", clientID, err)
	}
	r.IssuedBefore, r.ExpiresAt = r.IssuedBefore.UTC(), r.ExpiresAt.UTC()
	if err := appendRevocation(ctx, tx, ClientRevocationID(clientID), r); err != nil {
		return "", fmt.Errorf("revoke the tokens of %s: %w", clientID, err)
	}
	return secret, nil
}

// ClientRevocationID is the event id (and message key) of a client-wide
// revocation: "client:" and the client id, apart from any jti.
func ClientRevocationID(clientID string) string { return "client:" + clientID }

// issuedAt is the iat of a token whose request started at start, for
// client c: whole seconds, and never before the client's IssuedNotBefore,
// so that a token issued with a regenerated secret in the same second as
// the regeneration is not refused with the earlier ones.
func issuedAt(start time.Time, c *client) time.Time {
	iat := start.UTC().Truncate(time.Second)
	if iat.Before(c.IssuedNotBefore) {
		return c.IssuedNotBefore
	}
	return iat
}

package keymgr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/pkce"
	"github.com/ory/fosite/storage"
)

// Prefixes of the opaque tokens, so that a leaked one is recognisable (and
// secret scanners can find it) and the revocation endpoint knows which kind
// it holds without a lookup.
const (
	refreshTokenPrefix = "apim_rt_"
	authzCodePrefix    = "apim_ac_"
	// opaqueTokenBytes is the entropy of refresh tokens and codes.
	opaqueTokenBytes = 32
)

// opaqueStrategy issues refresh tokens and authorization codes as random
// strings whose fosite "signature" (the storage key) is their SHA-256. No
// server secret is involved, so tokens survive restarts and work on every
// replica, and a database dump holds no usable token.
type opaqueStrategy struct{}

var (
	_ oauth2.RefreshTokenStrategy  = opaqueStrategy{}
	_ oauth2.AuthorizeCodeStrategy = opaqueStrategy{}
)

func newOpaque(prefix string) (token, signature string, err error) {
	r, err := randomToken(opaqueTokenBytes)
	if err != nil {
		return "", "", err
	}
	token = prefix + r
	return token, hashSecret(token), nil
}

func validateExpiry(r fosite.Requester, tt fosite.TokenType) error {
	if exp := r.GetSession().GetExpiresAt(tt); !exp.IsZero() && exp.Before(time.Now().UTC()) {
		return fosite.ErrTokenExpired.WithHintf("The %s expired.", tt)
	}
	return nil
}

// RefreshTokenSignature implements oauth2.RefreshTokenStrategy.
func (opaqueStrategy) RefreshTokenSignature(_ context.Context, token string) string {
	return hashSecret(token)
}

// GenerateRefreshToken implements oauth2.RefreshTokenStrategy.
func (opaqueStrategy) GenerateRefreshToken(context.Context, fosite.Requester) (string, string, error) {
	return newOpaque(refreshTokenPrefix)
}

// ValidateRefreshToken implements oauth2.RefreshTokenStrategy.
func (opaqueStrategy) ValidateRefreshToken(_ context.Context, r fosite.Requester, _ string) error {
	return validateExpiry(r, fosite.RefreshToken)
}

// AuthorizeCodeSignature implements oauth2.AuthorizeCodeStrategy.
func (opaqueStrategy) AuthorizeCodeSignature(_ context.Context, token string) string {
	return hashSecret(token)
}

// GenerateAuthorizeCode implements oauth2.AuthorizeCodeStrategy.
func (opaqueStrategy) GenerateAuthorizeCode(context.Context, fosite.Requester) (string, string, error) {
	return newOpaque(authzCodePrefix)
}

// ValidateAuthorizeCode implements oauth2.AuthorizeCodeStrategy.
func (opaqueStrategy) ValidateAuthorizeCode(_ context.Context, r fosite.Requester, _ string) error {
	return validateExpiry(r, fosite.AuthorizeCode)
}

// opaqueCore is the strategy fosite's JWT strategy delegates refresh tokens
// and codes to. Access tokens are the JWT strategy's own, so its access-token
// methods are never called.
type opaqueCore struct{ opaqueStrategy }

var _ oauth2.CoreStrategy = opaqueCore{}

var errNotAccessStrategy = errors.New("opaque strategy does not handle access tokens")

// AccessTokenSignature implements oauth2.AccessTokenStrategy; unused.
func (opaqueCore) AccessTokenSignature(context.Context, string) string { return "" }

// GenerateAccessToken implements oauth2.AccessTokenStrategy; unused.
func (opaqueCore) GenerateAccessToken(context.Context, fosite.Requester) (string, string, error) {
	return "", "", errNotAccessStrategy
}

// ValidateAccessToken implements oauth2.AccessTokenStrategy; unused.
func (opaqueCore) ValidateAccessToken(context.Context, fosite.Requester, string) error {
	return errNotAccessStrategy
}

// Transactions: fosite opens one around a refresh-token rotation (and the
// reuse handling), so marking the old token used and storing the new one
// commit together. The transaction travels in the context.

type txKey struct{}

var _ storage.Transactional = (*store)(nil)

// querier is what a pool and a transaction have in common.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func (st *store) db(ctx context.Context) querier {
	if tx, ok := ctx.Value(txKey{}).(pgx.Tx); ok {
		return tx
	}
	return st.apim
}

// BeginTX implements storage.Transactional.
func (st *store) BeginTX(ctx context.Context) (context.Context, error) {
	tx, err := st.apim.Begin(ctx)
	if err != nil {
		return ctx, fmt.Errorf("begin: %w", err)
	}
	return context.WithValue(ctx, txKey{}, tx), nil
}

// Commit implements storage.Transactional.
func (st *store) Commit(ctx context.Context) error {
	tx, ok := ctx.Value(txKey{}).(pgx.Tx)
	if !ok {
		return errors.New("commit: no transaction")
	}
	return tx.Commit(ctx)
}

// Rollback implements storage.Transactional.
func (st *store) Rollback(ctx context.Context) error {
	tx, ok := ctx.Value(txKey{}).(pgx.Tx)
	if !ok {
		return errors.New("rollback: no transaction")
	}
	return tx.Rollback(ctx)
}

// sessionOf is the JWT session of a request, which every request of ours has.
func sessionOf(r fosite.Requester) (*oauth2.JWTSession, error) {
	s, ok := r.GetSession().(*oauth2.JWTSession)
	if !ok {
		return nil, fmt.Errorf("session is %T, want *oauth2.JWTSession", r.GetSession())
	}
	return s, nil
}

// CreateRefreshTokenSession stores a refresh token by its hash. The
// request id is the token family: fosite keeps it across rotations.
func (st *store) CreateRefreshTokenSession(ctx context.Context, signature, _ string, r fosite.Requester) error {
	sess, err := sessionOf(r)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(sess)
	if err != nil {
		return fmt.Errorf("encode session: %w", err)
	}
	exp := sess.GetExpiresAt(fosite.RefreshToken)
	if exp.IsZero() {
		return errors.New("refresh token without expiry")
	}
	var accessExp *time.Time
	if t := sess.GetExpiresAt(fosite.AccessToken); !t.IsZero() {
		accessExp = &t
	}
	var jti string
	if sess.JWTClaims != nil {
		jti = sess.JWTClaims.JTI
	}
	if _, err := st.db(ctx).Exec(ctx, `
		INSERT INTO oauth_refresh_tokens (token_hash, family_id, client_id, subject, scopes, requested_scopes,
			audience, session, access_jti, access_expires_at, requested_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
		signature, r.GetID(), r.GetClient().GetID(), sess.Subject, nonNil(r.GetGrantedScopes()),
		nonNil(r.GetRequestedScopes()), nonNil(r.GetGrantedAudience()), raw, jti, accessExp,
		r.GetRequestedAt(), exp); err != nil {
		return fmt.Errorf("store refresh token: %w", err)
	}
	return nil
}

func nonNil(a []string) []string {
	if a == nil {
		return []string{}
	}
	return a
}

// GetRefreshTokenSession loads a refresh token. A used or revoked one is
// returned together with fosite.ErrInactiveToken, which makes fosite revoke
// its family (reuse detection) and answer invalid_grant.
func (st *store) GetRefreshTokenSession(ctx context.Context, signature string, sess fosite.Session) (fosite.Requester, error) {
	var (
		familyID, clientID     string
		scopes, requested, aud []string
		rawSession             []byte
		requestedAt            time.Time
		used                   bool
	)
	err := st.db(ctx).QueryRow(ctx, `
		SELECT family_id, client_id, scopes, requested_scopes, audience, session, requested_at,
			used_at IS NOT NULL OR revoked_at IS NOT NULL
		FROM oauth_refresh_tokens WHERE token_hash = $1`, signature).
		Scan(&familyID, &clientID, &scopes, &requested, &aud, &rawSession, &requestedAt, &used)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fosite.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get refresh token: %w", err)
	}
	c, err := st.GetClient(ctx, clientID)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(rawSession, sess); err != nil {
		return nil, fmt.Errorf("decode session: %w", err)
	}
	req := &fosite.Request{
		ID: familyID, RequestedAt: requestedAt, Client: c,
		RequestedScope: requested, GrantedScope: scopes,
		RequestedAudience: aud, GrantedAudience: aud,
		Form: url.Values{}, Session: sess,
	}
	if used {
		return req, fosite.ErrInactiveToken
	}
	return req, nil
}

// DeleteRefreshTokenSession revokes one refresh token; fosite calls it on
// reuse, before revoking the family. Rows are kept until they expire, so a
// replay of any token of a revoked family is still recognised.
func (st *store) DeleteRefreshTokenSession(ctx context.Context, signature string) error {
	if _, err := st.db(ctx).Exec(ctx, `
		UPDATE oauth_refresh_tokens SET revoked_at = now()
		WHERE token_hash = $1 AND revoked_at IS NULL`, signature); err != nil {
		return fmt.Errorf("revoke refresh token: %w", err)
	}
	return nil
}

// RotateRefreshToken marks the presented refresh token used. Of two
// concurrent uses of one token, only one finds it unused: the other is
// refused, and the family revoked as for any reuse.
func (st *store) RotateRefreshToken(ctx context.Context, requestID, signature string) error {
	tag, err := st.db(ctx).Exec(ctx, `
		UPDATE oauth_refresh_tokens SET used_at = now()
		WHERE token_hash = $1 AND family_id = $2 AND used_at IS NULL AND revoked_at IS NULL`,
		signature, requestID)
	if err != nil {
		return fmt.Errorf("rotate refresh token: %w", err)
	}
	if tag.RowsAffected() == 0 {
		// Revoke outside the caller's transaction, which is rolled back.
		if err := revokeFamily(ctx, st.apim, requestID); err != nil {
			return err
		}
		return fosite.ErrInactiveToken
	}
	return nil
}

// RevokeRefreshToken revokes every refresh token of the family and the
// access tokens issued with them.
func (st *store) RevokeRefreshToken(ctx context.Context, requestID string) error {
	return revokeFamily(ctx, st.db(ctx), requestID)
}

// RevokeAccessToken is in opaque.go: it revokes the access tokens a
// request id (a grant) issued, opaque ones and the one of an authorization
// code; RevokeRefreshToken revokes those recorded with refresh tokens.

// beginner starts a transaction: a pool, or a transaction (a savepoint).
type beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// revokeFamily revokes a refresh-token family and records the jtis of the
// access tokens issued with it as revoked, with an outbox event each, in one
// transaction.
func revokeFamily(ctx context.Context, db querier, familyID string) error {
	b, ok := db.(beginner)
	if !ok {
		return fmt.Errorf("revoke family: %T cannot begin a transaction", db)
	}
	err := pgx.BeginFunc(ctx, b, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
			UPDATE oauth_refresh_tokens SET revoked_at = coalesce(revoked_at, now())
			WHERE family_id = $1
			RETURNING access_jti, access_expires_at`, familyID)
		if err != nil {
			return err
		}
		type issued struct {
			jti string
			exp *time.Time
		}
		var access []issued
		for rows.Next() {
			var a issued
			if err := rows.Scan(&a.jti, &a.exp); err != nil {
				rows.Close()
				return err
			}
			if a.jti != "" && a.exp != nil && a.exp.After(time.Now()) {
				access = append(access, a)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, a := range access {
			if err := revokeJTI(ctx, tx, a.jti, *a.exp); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("revoke token family: %w", err)
	}
	return nil
}

// CreateAuthorizeCodeSession stores an authorization code by its hash.
func (st *store) CreateAuthorizeCodeSession(ctx context.Context, signature string, r fosite.Requester) error {
	sess, err := sessionOf(r)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(sess)
	if err != nil {
		return fmt.Errorf("encode session: %w", err)
	}
	exp := sess.GetExpiresAt(fosite.AuthorizeCode)
	if exp.IsZero() {
		return errors.New("authorization code without expiry")
	}
	if _, err := st.db(ctx).Exec(ctx, `
		INSERT INTO oauth_authorization_codes (code_hash, request_id, client_id, subject, scopes,
			requested_scopes, audience, redirect_uri, session, requested_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		signature, r.GetID(), r.GetClient().GetID(), sess.Subject, nonNil(r.GetGrantedScopes()),
		nonNil(r.GetRequestedScopes()), nonNil(r.GetGrantedAudience()),
		r.GetRequestForm().Get("redirect_uri"), raw, r.GetRequestedAt(), exp); err != nil {
		return fmt.Errorf("store authorization code: %w", err)
	}
	return nil
}

// codeRequest loads an authorization code's request; used reports whether
// the code was exchanged already.
func (st *store) codeRequest(ctx context.Context, signature string) (req *fosite.Request, used bool, challenge, method *string, err error) {
	var (
		requestID, clientID, redirectURI string
		scopes, requested, aud           []string
		rawSession                       []byte
		requestedAt                      time.Time
		sess                             *oauth2.JWTSession
	)
	err = st.db(ctx).QueryRow(ctx, `
		SELECT request_id, client_id, scopes, requested_scopes, audience, redirect_uri, session,
			requested_at, used_at IS NOT NULL, code_challenge, code_challenge_method
		FROM oauth_authorization_codes WHERE code_hash = $1`, signature).
		Scan(&requestID, &clientID, &scopes, &requested, &aud, &redirectURI, &rawSession,
			&requestedAt, &used, &challenge, &method)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil, nil, fosite.ErrNotFound
	}
	if err != nil {
		return nil, false, nil, nil, fmt.Errorf("get authorization code: %w", err)
	}
	c, err := st.GetClient(ctx, clientID)
	if err != nil {
		return nil, false, nil, nil, err
	}
	// A fresh session, not the caller's: fosite reads the code twice per
	// exchange, and decoding into the request's session the second time
	// would undo the claims the token endpoint set in between.
	sess = &oauth2.JWTSession{}
	if err := json.Unmarshal(rawSession, sess); err != nil {
		return nil, false, nil, nil, fmt.Errorf("decode session: %w", err)
	}
	form := url.Values{}
	if redirectURI != "" {
		form.Set("redirect_uri", redirectURI)
	}
	return &fosite.Request{
		ID: requestID, RequestedAt: requestedAt, Client: c,
		RequestedScope: requested, GrantedScope: scopes,
		RequestedAudience: aud, GrantedAudience: aud,
		Form: form, Session: sess,
	}, used, challenge, method, nil
}

// GetAuthorizeCodeSession implements oauth2.AuthorizeCodeStorage. A used
// code comes with fosite.ErrInvalidatedAuthorizeCode, which makes fosite
// revoke what the code's first exchange issued.
func (st *store) GetAuthorizeCodeSession(ctx context.Context, signature string, _ fosite.Session) (fosite.Requester, error) {
	req, used, _, _, err := st.codeRequest(ctx, signature)
	if err != nil {
		return nil, err
	}
	if used {
		return req, fosite.ErrInvalidatedAuthorizeCode
	}
	return req, nil
}

// InvalidateAuthorizeCodeSession marks a code used; of two concurrent
// exchanges only one succeeds.
func (st *store) InvalidateAuthorizeCodeSession(ctx context.Context, signature string) error {
	tag, err := st.db(ctx).Exec(ctx, `
		UPDATE oauth_authorization_codes SET used_at = now() WHERE code_hash = $1 AND used_at IS NULL`, signature)
	if err != nil {
		return fmt.Errorf("invalidate authorization code: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fosite.ErrInvalidatedAuthorizeCode
	}
	return nil
}

var _ pkce.PKCERequestStorage = (*store)(nil)

// CreatePKCERequestSession records the code's PKCE challenge with the code.
func (st *store) CreatePKCERequestSession(ctx context.Context, signature string, r fosite.Requester) error {
	f := r.GetRequestForm()
	tag, err := st.db(ctx).Exec(ctx, `
		UPDATE oauth_authorization_codes SET code_challenge = $2, code_challenge_method = $3
		WHERE code_hash = $1`, signature, f.Get("code_challenge"), f.Get("code_challenge_method"))
	if err != nil {
		return fmt.Errorf("store pkce challenge: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fosite.ErrNotFound
	}
	return nil
}

// GetPKCERequestSession returns the code's request with its challenge in
// the form, as fosite's PKCE handler reads it.
func (st *store) GetPKCERequestSession(ctx context.Context, signature string, _ fosite.Session) (fosite.Requester, error) {
	req, _, challenge, method, err := st.codeRequest(ctx, signature)
	if err != nil {
		return nil, err
	}
	if challenge == nil {
		return nil, fosite.ErrNotFound
	}
	req.Form.Set("code_challenge", *challenge)
	req.Form.Set("code_challenge_method", strings.TrimSpace(deref(method)))
	return req, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// DeletePKCERequestSession forgets the challenge; the code is single-use anyway.
func (st *store) DeletePKCERequestSession(ctx context.Context, signature string) error {
	if _, err := st.db(ctx).Exec(ctx, `
		UPDATE oauth_authorization_codes SET code_challenge = NULL, code_challenge_method = NULL
		WHERE code_hash = $1`, signature); err != nil {
		return fmt.Errorf("delete pkce challenge: %w", err)
	}
	return nil
}

package keymgr

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
)

// store implements the fosite storage of the served grants on PostgreSQL.
// Clients are read from oauth_clients. JWT access tokens are self-contained
// and not stored; opaque access tokens (an application of tokenType OAUTH)
// are stored hashed with their claims (opaque.go). Either kind is revoked by
// its jti (revoked_tokens). Refresh tokens and authorization codes are
// stored hashed (tokens.go).
type store struct {
	apim   *pgxpool.Pool
	shared *pgxpool.Pool
	hashes *hashLimiter
}

var (
	_ fosite.Storage                                      = (*store)(nil)
	_ oauth2.ClientCredentialsGrantStorage                = (*store)(nil)
	_ oauth2.ResourceOwnerPasswordCredentialsGrantStorage = (*store)(nil)
	_ oauth2.CoreStorage                                  = (*store)(nil)
	_ oauth2.TokenRevocationStorage                       = (*store)(nil)
)

// client is an oauth_clients row as fosite sees it.
type client struct {
	fosite.DefaultClient
	Owner string
	Kind  string // clientKindApplication or clientKindREST
	// TokenType is the access-token format: its application's tokenType
	// (TokenTypeJWT or TokenTypeOAuth); TokenTypeJWT for a REST client.
	TokenType string
	// Validity holds the client's own token lifetimes (zero: the default).
	Validity TokenValidity
	// IssuedNotBefore, when not zero, is the earliest iat the client's new
	// tokens may carry: the client's tokens issued before it were revoked
	// (a regenerated secret, secret.go).
	IssuedNotBefore time.Time
}

var _ fosite.ClientWithCustomTokenLifespans = (*client)(nil)

// Kinds of OAuth client (oauth_clients.kind).
const (
	// clientKindApplication holds an application's keys; it is created by
	// RegisterClient and granted no role scopes.
	clientKindApplication = "application"
	// clientKindREST is registered through DCR to call the REST APIs; it is
	// granted the scopes its user's roles allow.
	clientKindREST = "rest"
)

// GetClient implements fosite.ClientManager.
func (st *store) GetClient(ctx context.Context, id string) (fosite.Client, error) {
	c := &client{}
	var appTTL, userTTL, refreshTTL int64
	var notBefore *time.Time
	err := st.apim.QueryRow(ctx, `
		SELECT c.client_id, c.secret_hash, c.owner, c.kind, c.grant_types, c.redirect_uris,
			coalesce(a.token_type, 'JWT'), coalesce(c.app_access_ttl, 0), coalesce(c.user_access_ttl, 0),
			coalesce(c.refresh_ttl, 0), r.issued_before
		FROM oauth_clients c
		LEFT JOIN key_mappings km ON km.resident_client_id = c.client_id -- not an external client of the same id
		LEFT JOIN applications a ON a.id = km.application_id
		LEFT JOIN revoked_clients r ON r.client_id = c.client_id AND r.expires_at > now()
		WHERE c.client_id = $1`, id).
		Scan(&c.ID, &c.Secret, &c.Owner, &c.Kind, &c.GrantTypes, &c.RedirectURIs,
			&c.TokenType, &appTTL, &userTTL, &refreshTTL, &notBefore)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fosite.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get client: %w", err)
	}
	c.Audience = []string{c.ID}
	c.Validity = TokenValidity{
		ApplicationAccessToken: time.Duration(appTTL) * time.Second,
		UserAccessToken:        time.Duration(userTTL) * time.Second,
		RefreshToken:           time.Duration(refreshTTL) * time.Second,
	}
	if notBefore != nil {
		c.IssuedNotBefore = notBefore.UTC()
	}
	return c, nil
}

// GetEffectiveLifespan implements fosite.ClientWithCustomTokenLifespans:
// the client's own lifetimes, WSO2's application access token for
// client_credentials, its user access token for the grants that act for a
// user, its refresh token; the fallback where it has none.
func (c *client) GetEffectiveLifespan(gt fosite.GrantType, tt fosite.TokenType, fallback time.Duration) time.Duration {
	var d time.Duration
	switch tt {
	case fosite.AccessToken:
		if gt == fosite.GrantTypeClientCredentials {
			d = c.Validity.ApplicationAccessToken
		} else {
			d = c.Validity.UserAccessToken
		}
	case fosite.RefreshToken:
		d = c.Validity.RefreshToken
	}
	if d <= 0 {
		return fallback
	}
	return d
}

// ClientAssertionJWTValid implements fosite.ClientManager; JWT client
// assertions are not accepted (clients are not OpenID Connect clients), so
// no jti is ever known.
func (st *store) ClientAssertionJWTValid(context.Context, string) error { return nil }

// SetClientAssertionJWT implements fosite.ClientManager; see ClientAssertionJWTValid.
func (st *store) SetClientAssertionJWT(context.Context, string, time.Time) error { return nil }

// CreateAccessTokenSession, GetAccessTokenSession and
// DeleteAccessTokenSession are in opaque.go: JWTs are not stored, opaque
// access tokens are.

// Authenticate implements the password grant's user check against the shared
// database. Bad credentials are fosite.ErrNotFound, which fosite answers with
// invalid_grant; ErrBusy passes through, wrapped, for the token endpoint to
// answer 503.
func (st *store) Authenticate(ctx context.Context, name, password string) (string, error) {
	if _, err := authenticate(ctx, st.shared, st.hashes, name, password); err != nil {
		if errors.Is(err, ErrBadCredentials) {
			return "", fosite.ErrNotFound
		}
		return "", err
	}
	return name, nil
}

// sha256Hasher is the client-secret hasher. fosite's default is bcrypt,
// which is for low-entropy passwords and costs ~100 ms per token call; our
// client secrets are 32 random bytes, which no one brute-forces, so an
// unsalted SHA-256 (hex) is enough and costs a microsecond. Compare is
// constant-time.
type sha256Hasher struct{}

var _ fosite.Hasher = sha256Hasher{}

var errSecretMismatch = errors.New("client secret does not match")

// Hash implements fosite.Hasher.
func (sha256Hasher) Hash(_ context.Context, data []byte) ([]byte, error) {
	return []byte(hashSecret(string(data))), nil
}

// Compare implements fosite.Hasher.
func (sha256Hasher) Compare(_ context.Context, hash, data []byte) error {
	if subtle.ConstantTimeCompare(hash, []byte(hashSecret(string(data)))) != 1 {
		return errSecretMismatch
	}
	return nil
}

func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Sizes of generated credentials, in random bytes: a 21-byte client id is 28
// base64url characters, like a WSO2 consumer key.
const (
	clientIDBytes = 21
	secretBytes   = 32
)

func randomToken(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// knownGrantTypes are the grant types a client may be registered with.
// client_credentials, password, refresh_token, authorization_code and
// jwt-bearer (RFC 7523, jwtbearer.go) are served; the others are stored so
// WSO2 tooling that asks for them keeps working.
var knownGrantTypes = map[string]bool{
	GrantClientCredentials: true,
	GrantPassword:          true,
	GrantRefreshToken:      true,
	GrantAuthorizationCode: true,
	"implicit":             true,
	"iwa:ntlm":             true,
	"urn:ietf:params:oauth:grant-type:jwt-bearer":     true,
	"urn:ietf:params:oauth:grant-type:saml2-bearer":   true,
	"urn:ietf:params:oauth:grant-type:token-exchange": true,
	"urn:ietf:params:oauth:grant-type:device_code":    true,
}

// Sentinel client registration errors.
var (
	ErrClientNameRequired  = errors.New("client name is required")
	ErrClientOwnerRequired = errors.New("client owner is required")
	ErrGrantTypes          = errors.New("grant types are invalid")
	ErrRedirectURI         = errors.New("callbackUrl is invalid")
)

// maxRedirectURI bounds a callback URL's length.
const maxRedirectURI = 2048

// ValidateRedirectURI checks a client's callback URL by the rules the
// authorize endpoint applies when it redirects (fosite's): an absolute URL
// without a fragment (RFC 6749 3.1.2); plain http only to the loopback
// host (RFC 8252; anything else would send the code in the clear); custom
// schemes for native apps, but no script or local-content scheme. A URL
// it accepts is one the code flow then uses, on an exact match.
func ValidateRedirectURI(uri string) error {
	if len(uri) > maxRedirectURI {
		return fmt.Errorf("%w: longer than %d characters", ErrRedirectURI, maxRedirectURI)
	}
	u, err := url.Parse(uri)
	switch {
	case err != nil || !u.IsAbs():
		return fmt.Errorf("%w: %q is not an absolute URL", ErrRedirectURI, uri)
	case u.Fragment != "" || strings.Contains(uri, "#"):
		return fmt.Errorf("%w: %q has a fragment", ErrRedirectURI, uri)
	case forbiddenSchemes[strings.ToLower(u.Scheme)]:
		return fmt.Errorf("%w: scheme %s is not allowed", ErrRedirectURI, u.Scheme)
	case (u.Scheme == "http" || u.Scheme == "https") && u.Host == "":
		return fmt.Errorf("%w: %q has no host", ErrRedirectURI, uri)
	case !fosite.IsValidRedirectURI(u):
		return fmt.Errorf("%w: %q is not a valid URL", ErrRedirectURI, uri)
	case !fosite.IsRedirectURISecure(context.Background(), u):
		return fmt.Errorf("%w: %q: plain http only to localhost; use https", ErrRedirectURI, uri)
	}
	return nil
}

// forbiddenSchemes run code or read local content in the browser that
// follows the redirect.
var forbiddenSchemes = map[string]bool{"javascript": true, "data": true, "vbscript": true, "file": true, "blob": true}

// redirectURIs is the redirect URI list of a client of grants with
// callback. Only the authorization code grant redirects, and it needs one:
// for a client without it the callback is not kept, and not checked
// (WSO2's own DCR example sends "www.google.lk" with client_credentials).
func redirectURIs(callback string, grants []string) ([]string, error) {
	switch {
	case !slices.Contains(grants, GrantAuthorizationCode):
		return []string{}, nil
	case callback == "":
		return nil, fmt.Errorf("%w: required for the authorization_code grant", ErrRedirectURI)
	}
	if err := ValidateRedirectURI(callback); err != nil {
		return nil, err
	}
	return []string{callback}, nil
}

func validateGrantTypes(grantTypes []string) error {
	if len(grantTypes) == 0 {
		return fmt.Errorf("%w: none given", ErrGrantTypes)
	}
	for _, g := range grantTypes {
		if !knownGrantTypes[g] {
			return fmt.Errorf("%w: unknown grant type %q", ErrGrantTypes, g)
		}
	}
	return nil
}

// RegisterClient creates an application's OAuth client inside the caller's
// transaction and returns its id and secret. Only the secret's hash is
// stored, so the secret is shown this once. The client is an application
// client: its tokens get the default scope, never its owner's role scopes.
// callback, when not "", is its one redirect URI (WSO2's callbackUrl),
// kept for the authorization code grant only.
func (s *Server) RegisterClient(ctx context.Context, tx pgx.Tx, owner, name string, grantTypes []string, callback string) (clientID, secret string, err error) {
	redirects, err := redirectURIs(callback, grantTypes)
	if err != nil {
		return "", "", err
	}
	return insertClient(ctx, tx, clientKindApplication, owner, name, grantTypes, redirects)
}

// DeleteClients deletes OAuth clients, an application's, inside the caller's
// transaction. Their tokens already issued stay valid until they expire (they
// are self-contained JWTs), but the gateway refuses them once the key
// mappings are gone, and no new token is issued.
//
// key_mappings.consumer_key references the clients, so the key mappings
// must be gone first: the caller deletes the application (which cascades to
// its key mappings) earlier in the same transaction. Ids of clients that do
// not exist are ignored.
func (s *Server) DeleteClients(ctx context.Context, tx pgx.Tx, clientIDs []string) error {
	if len(clientIDs) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, `DELETE FROM oauth_clients WHERE client_id = ANY($1)`, clientIDs); err != nil {
		return fmt.Errorf("delete oauth clients: %w", err)
	}
	return nil
}

func insertClient(ctx context.Context, tx pgx.Tx, kind, owner, name string, grantTypes, redirectURIs []string) (clientID, secret string, err error) {
	switch {
	case name == "":
		return "", "", ErrClientNameRequired
	case owner == "":
		return "", "", ErrClientOwnerRequired
	}
	if err := validateGrantTypes(grantTypes); err != nil {
		return "", "", err
	}
	if clientID, err = randomToken(clientIDBytes); err != nil {
		return "", "", err
	}
	if secret, err = randomToken(secretBytes); err != nil {
		return "", "", err
	}
	if redirectURIs == nil {
		redirectURIs = []string{}
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO oauth_clients (client_id, secret_hash, name, owner, grant_types, redirect_uris, kind)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		clientID, hashSecret(secret), name, owner, grantTypes, redirectURIs, kind); err != nil {
		return "", "", fmt.Errorf("insert client %q of %q: %w", name, owner, err)
	}
	return clientID, secret, nil
}

// Package keymgr is the resident key manager: an OAuth 2.0 / OIDC server on
// ory/fosite that registers clients (WSO2 DCR), issues access tokens, RS256
// JWTs or opaque reference tokens per application (client_credentials,
// password, authorization_code with PKCE, and rotating refresh tokens),
// revokes, introspects and verifies them, regenerates client secrets, and
// rotates its signing keys.
package keymgr

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
	fjwt "github.com/ory/fosite/token/jwt"
	"github.com/rs/zerolog"
)

// Paths served by Handler, at WSO2 API-M's paths.
const (
	PathRegister   = "/client-registration/v0.17/register"
	PathToken      = "/oauth2/token" //nolint:gosec // G101: a URL path, not a credential
	PathJWKS       = "/oauth2/jwks"
	PathDiscovery  = "/.well-known/openid-configuration"
	PathRevoke     = "/oauth2/revoke"
	PathIntrospect = "/oauth2/introspect"
	PathUserinfo   = "/oauth2/userinfo"
	PathAuthorize  = "/oauth2/authorize"
	// PathIssuerDiscovery is the discovery document under the issuer
	// (BaseURL/oauth2/token, as WSO2's), where OIDC clients such as go-oidc
	// look for it.
	PathIssuerDiscovery = PathToken + PathDiscovery
)

// Grant types served at the token endpoint.
const (
	GrantClientCredentials = "client_credentials"
	GrantPassword          = "password"
	GrantRefreshToken      = "refresh_token"
	GrantAuthorizationCode = "authorization_code"
)

// DefaultScope is granted when nothing else is, as WSO2 does.
const DefaultScope = "default"

// DefaultAccessTokenTTL is the access-token lifetime when Config leaves it zero.
const DefaultAccessTokenTTL = time.Hour

// DefaultRefreshTokenTTL is the refresh-token lifetime when Config leaves it
// zero: WSO2's default of a day.
const DefaultRefreshTokenTTL = 24 * time.Hour

// authorizeCodeTTL is the authorization codes' lifetime.
const authorizeCodeTTL = 5 * time.Minute

// DefaultPasswordHashWait is Config.PasswordHashWait when left zero.
const DefaultPasswordHashWait = 2 * time.Second

// retryAfter is the Retry-After, in seconds, of a 503 for ErrBusy.
const retryAfter = "1"

// Config configures a Server.
type Config struct {
	// BaseURL is the key manager's external URL, e.g. https://localhost:9443;
	// the discovery document's endpoint URLs derive from it.
	BaseURL string
	// Issuer is the tokens' iss; defaults to BaseURL + "/oauth2/token", as WSO2's.
	Issuer string
	// APIM is the API-manager database (oauth_clients, signing_keys).
	APIM *pgxpool.Pool
	// Shared is the shared database (users, roles, role_scopes).
	Shared *pgxpool.Pool
	// AccessTokenTTL is the access tokens' lifetime; defaults to DefaultAccessTokenTTL.
	AccessTokenTTL time.Duration
	// RefreshTokenTTL is the refresh tokens' lifetime; defaults to
	// DefaultRefreshTokenTTL. Each refresh issues a new one with a fresh
	// lifetime.
	RefreshTokenTTL time.Duration
	// KeyRotationInterval rotates the signing key when the active one is
	// this old (Start checks every KeyReloadInterval); 0 never rotates on a
	// schedule.
	KeyRotationInterval time.Duration
	// KeyReloadInterval is how often Start reloads the key set from the
	// database; defaults to DefaultKeyReloadInterval.
	KeyReloadInterval time.Duration
	// MaxPasswordHashes bounds the password hashes (64 MiB of argon2id each)
	// computed at once by the password grant and DCR; defaults to
	// runtime.NumCPU().
	MaxPasswordHashes int
	// PasswordHashWait is how long a password check waits for a free slot
	// before the request is answered 503; defaults to DefaultPasswordHashWait.
	PasswordHashWait time.Duration
	// ExternalJWKSClient fetches the JWKS of external key managers for the
	// JWT bearer grant (jwtbearer.go); default: an http.Client with the
	// system's roots. Each fetch has its own timeout.
	ExternalJWKSClient *http.Client
	// Logger is the component's logger.
	Logger zerolog.Logger
}

// Sentinel configuration errors.
var (
	ErrConfigRequired = errors.New("is required")
	ErrConfigInvalid  = errors.New("is invalid")
)

func (c *Config) setDefaults() {
	c.BaseURL = strings.TrimRight(c.BaseURL, "/")
	if c.Issuer == "" && c.BaseURL != "" {
		c.Issuer = c.BaseURL + PathToken
	}
	if c.AccessTokenTTL == 0 {
		c.AccessTokenTTL = DefaultAccessTokenTTL
	}
	if c.RefreshTokenTTL == 0 {
		c.RefreshTokenTTL = DefaultRefreshTokenTTL
	}
	if c.KeyReloadInterval == 0 {
		c.KeyReloadInterval = DefaultKeyReloadInterval
	}
	if c.MaxPasswordHashes == 0 {
		c.MaxPasswordHashes = runtime.NumCPU()
	}
	if c.PasswordHashWait == 0 {
		c.PasswordHashWait = DefaultPasswordHashWait
	}
}

// Validate reports every invalid field, naming it.
func (c *Config) Validate() error {
	var errs []error
	if c.BaseURL == "" {
		errs = append(errs, fmt.Errorf("BaseURL %w", ErrConfigRequired))
	} else if u, err := url.Parse(c.BaseURL); err != nil || u.Scheme == "" || u.Host == "" {
		errs = append(errs, fmt.Errorf("BaseURL %q %w: want an absolute URL", c.BaseURL, ErrConfigInvalid))
	}
	if c.Issuer == "" {
		errs = append(errs, fmt.Errorf("Issuer %w", ErrConfigRequired))
	}
	if c.APIM == nil {
		errs = append(errs, fmt.Errorf("APIM %w", ErrConfigRequired))
	}
	if c.Shared == nil {
		errs = append(errs, fmt.Errorf("Shared %w", ErrConfigRequired)) //nolint:staticcheck // ST1005: names the Config field, like the messages above
	}
	if c.AccessTokenTTL < 0 {
		errs = append(errs, fmt.Errorf("AccessTokenTTL %w: must not be negative", ErrConfigInvalid))
	}
	if c.RefreshTokenTTL < 0 {
		errs = append(errs, fmt.Errorf("RefreshTokenTTL %w: must not be negative", ErrConfigInvalid))
	}
	if c.KeyRotationInterval < 0 {
		errs = append(errs, fmt.Errorf("KeyRotationInterval %w: must not be negative", ErrConfigInvalid))
	} else if c.KeyRotationInterval > 0 && c.KeyRotationInterval < c.AccessTokenTTL {
		// Rotating faster than tokens expire piles up verifying keys.
		errs = append(errs, fmt.Errorf("KeyRotationInterval %w: must be 0 or at least AccessTokenTTL", ErrConfigInvalid))
	}
	if c.KeyReloadInterval < 0 {
		errs = append(errs, fmt.Errorf("KeyReloadInterval %w: must not be negative", ErrConfigInvalid))
	}
	if c.MaxPasswordHashes < 0 {
		errs = append(errs, fmt.Errorf("MaxPasswordHashes %w: must not be negative", ErrConfigInvalid))
	}
	if c.PasswordHashWait < 0 {
		errs = append(errs, fmt.Errorf("PasswordHashWait %w: must not be negative", ErrConfigInvalid))
	}
	return errors.Join(errs...)
}

// Server is the resident key manager.
type Server struct {
	cfg      Config
	log      zerolog.Logger
	keys     atomic.Pointer[keySet]
	hashes   *hashLimiter
	provider fosite.OAuth2Provider
	// csrfSecure marks the login page's cookie Secure: whenever BaseURL is HTTPS.
	csrfSecure bool
}

// New loads the signing keys from the API-manager database, creating the
// first one if there is none, and builds the OAuth2 provider.
func New(ctx context.Context, cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("keymgr config: %w", err)
	}
	keys, err := loadOrCreateKeys(ctx, cfg.APIM)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, hashes: newHashLimiter(cfg.MaxPasswordHashes, cfg.PasswordHashWait)}
	s.csrfSecure = strings.HasPrefix(cfg.BaseURL, "https://")
	s.keys.Store(keys)
	s.provider = newProvider(cfg, s.signingKey, &store{apim: cfg.APIM, shared: cfg.Shared, hashes: s.hashes})
	s.log.Info().Str("kid", keys.active.kid).Str("issuer", cfg.Issuer).Msg("key manager ready")
	return s, nil
}

// providerConfig is fosite's configuration with one change: whether a
// token response carries a refresh token is decided per request (noRefresh
// in the context), not by a granted scope.
type providerConfig struct {
	*fosite.Config
}

type noRefreshKey struct{}

// refreshNeverScope is a scope no one is granted: returned as the required
// refresh-token scope, it keeps fosite from issuing a refresh token.
const refreshNeverScope = "urn:apim:no-refresh-token"

// GetRefreshTokenScopes implements fosite.RefreshTokenScopesProvider: none
// required, unless the request is marked noRefresh.
func (c providerConfig) GetRefreshTokenScopes(ctx context.Context) []string {
	if ctx.Value(noRefreshKey{}) != nil {
		return []string{refreshNeverScope}
	}
	return nil
}

func newProvider(cfg Config, signingKey func(context.Context) (any, error), st *store) fosite.OAuth2Provider {
	fc := &fosite.Config{
		AccessTokenLifespan:   cfg.AccessTokenTTL,
		RefreshTokenLifespan:  cfg.RefreshTokenTTL,
		AuthorizeCodeLifespan: authorizeCodeTTL,
		AccessTokenIssuer:     cfg.Issuer,
		IDTokenIssuer:         cfg.Issuer,
		TokenURL:              cfg.BaseURL + PathToken,
		JWTScopeClaimKey:      fjwt.JWTScopeFieldString,
		// Client secrets are 32 random bytes, so a fast hash is as strong as
		// bcrypt here, and bcrypt would cost ~100 ms on every token call.
		ClientSecretsHasher: sha256Hasher{},
		// Requested scopes are never an error: the token handler grants the
		// ones the user's (or the client owner's) roles allow and drops the
		// rest silently, as WSO2 does.
		ScopeStrategy: func([]string, string) bool { return true },
		// PKCE with S256 on every authorization code, confidential clients
		// included (OAuth 2.1); plain is refused.
		EnforcePKCE:                    true,
		EnforcePKCEForPublicClients:    true,
		EnablePKCEPlainChallengeMethod: false,
		// The token request must repeat the authorize request's redirect_uri.
		SanitationWhiteList: []string{"redirect_uri"},
	}
	conf := providerConfig{fc}
	// JWT access tokens, or opaque ones for the applications that ask
	// (tokenType OAUTH, opaque.go).
	strategy := tokenStrategy{&oauth2.DefaultJWTStrategy{
		Signer: &fjwt.DefaultSigner{GetPrivateKey: signingKey},
		// Refresh tokens and codes are opaque, hashed with SHA-256.
		HMACSHAStrategy: opaqueCore{},
		Config:          conf,
	}}
	provider := fosite.NewOAuth2Provider(st, conf)
	for _, factory := range []compose.Factory{
		compose.OAuth2AuthorizeExplicitFactory,
		compose.OAuth2ClientCredentialsGrantFactory,
		compose.OAuth2ResourceOwnerPasswordCredentialsFactory, //nolint:staticcheck // WSO2's REST flows use the password grant.
		compose.OAuth2RefreshTokenGrantFactory,
		compose.OAuth2PKCEFactory,
	} {
		res := factory(conf, st, strategy)
		if h, ok := res.(fosite.AuthorizeEndpointHandler); ok {
			fc.AuthorizeEndpointHandlers.Append(h)
		}
		if h, ok := res.(fosite.TokenEndpointHandler); ok {
			fc.TokenEndpointHandlers.Append(h)
		}
	}
	fc.TokenEndpointHandlers.Append(newJWTBearerGrant(cfg, conf, st, strategy)) // jwtbearer.go
	return provider
}

// Issuer is the iss of the tokens the server issues.
func (s *Server) Issuer() string { return s.cfg.Issuer }

// Handler serves the registration, token, JWKS and discovery endpoints.
func (s *Server) Handler() http.Handler {
	r := chi.NewRouter()
	r.Post(PathRegister, s.handleRegister)
	r.Post(PathToken, s.handleToken)
	r.Get(PathJWKS, s.handleJWKS)
	r.Get(PathDiscovery, s.handleDiscovery)
	r.Get(PathIssuerDiscovery, s.handleDiscovery)
	r.Post(PathRevoke, s.handleRevoke)
	r.Post(PathIntrospect, s.handleIntrospect)
	r.Get(PathUserinfo, s.handleUserinfo)
	r.Post(PathUserinfo, s.handleUserinfo)
	r.Get(PathAuthorize, s.handleAuthorize)
	r.Post(PathAuthorize, s.handleLogin)
	return r
}

func (s *Server) handleDiscovery(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                        s.cfg.Issuer,
		"token_endpoint":                                s.cfg.BaseURL + PathToken,
		"jwks_uri":                                      s.cfg.BaseURL + PathJWKS,
		"registration_endpoint":                         s.cfg.BaseURL + PathRegister,
		"authorization_endpoint":                        s.cfg.BaseURL + PathAuthorize,
		"revocation_endpoint":                           s.cfg.BaseURL + PathRevoke,
		"introspection_endpoint":                        s.cfg.BaseURL + PathIntrospect,
		"userinfo_endpoint":                             s.cfg.BaseURL + PathUserinfo,
		"grant_types_supported":                         []string{GrantClientCredentials, GrantPassword, GrantRefreshToken, GrantAuthorizationCode, GrantJWTBearer},
		"response_types_supported":                      []string{"code"},
		"code_challenge_methods_supported":              []string{"S256"},
		"scopes_supported":                              []string{DefaultScope},
		"claims_supported":                              []string{"sub", "iss", "aud", "exp", "iat", "nbf", "jti", "client_id", "azp", "scope", "aut", "preferred_username"},
		"token_endpoint_auth_methods_supported":         []string{"client_secret_basic", "client_secret_post"},
		"revocation_endpoint_auth_methods_supported":    []string{"client_secret_basic", "client_secret_post"},
		"introspection_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post"},
		"id_token_signing_alg_values_supported":         []string{"RS256"},
		"subject_types_supported":                       []string{"public"},
	})
}

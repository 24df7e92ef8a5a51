// Package keymgr is the resident key manager: an OAuth 2.0 / OIDC server on
// ory/fosite that registers clients (WSO2 DCR), issues RS256 JWT access tokens
// for the client_credentials and password grants, and verifies them.
package keymgr

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	fjwt "github.com/ory/fosite/token/jwt"
	"github.com/rs/zerolog"
)

// Paths served by Handler, at WSO2 API-M's paths.
const (
	PathRegister  = "/client-registration/v0.17/register"
	PathToken     = "/oauth2/token" //nolint:gosec // G101: a URL path, not a credential
	PathJWKS      = "/oauth2/jwks"
	PathDiscovery = "/.well-known/openid-configuration"
)

// Grant types served at the token endpoint.
const (
	GrantClientCredentials = "client_credentials"
	GrantPassword          = "password"
	GrantRefreshToken      = "refresh_token"
)

// DefaultScope is granted when nothing else is, as WSO2 does.
const DefaultScope = "default"

// DefaultAccessTokenTTL is the access-token lifetime when Config leaves it zero.
const DefaultAccessTokenTTL = time.Hour

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
	// MaxPasswordHashes bounds the password hashes (64 MiB of argon2id each)
	// computed at once by the password grant and DCR; defaults to
	// runtime.NumCPU().
	MaxPasswordHashes int
	// PasswordHashWait is how long a password check waits for a free slot
	// before the request is answered 503; defaults to DefaultPasswordHashWait.
	PasswordHashWait time.Duration
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
	keys     *keySet
	hashes   *hashLimiter
	provider fosite.OAuth2Provider
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
	s := &Server{cfg: cfg, log: cfg.Logger, keys: keys, hashes: newHashLimiter(cfg.MaxPasswordHashes, cfg.PasswordHashWait)}
	s.provider, err = newProvider(cfg, keys, &store{apim: cfg.APIM, shared: cfg.Shared, hashes: s.hashes})
	if err != nil {
		return nil, err
	}
	s.log.Info().Str("kid", keys.active.kid).Str("issuer", cfg.Issuer).Msg("key manager ready")
	return s, nil
}

func newProvider(cfg Config, keys *keySet, st *store) (fosite.OAuth2Provider, error) {
	// Refresh tokens and authorization codes are not served yet, but fosite's
	// JWT strategy delegates them to an HMAC strategy, which needs a secret.
	// A per-process random one is enough while nothing outlives the process.
	global := make([]byte, 32)
	if _, err := rand.Read(global); err != nil {
		return nil, fmt.Errorf("generate hmac secret: %w", err)
	}
	fc := &fosite.Config{
		AccessTokenLifespan: cfg.AccessTokenTTL,
		AccessTokenIssuer:   cfg.Issuer,
		IDTokenIssuer:       cfg.Issuer,
		TokenURL:            cfg.BaseURL + PathToken,
		JWTScopeClaimKey:    fjwt.JWTScopeFieldString,
		GlobalSecret:        global,
		// Client secrets are 32 random bytes, so a fast hash is as strong as
		// bcrypt here, and bcrypt would cost ~100 ms on every token call.
		ClientSecretsHasher: sha256Hasher{},
		// Requested scopes are never an error: the token handler grants the
		// ones the user's (or the client owner's) roles allow and drops the
		// rest silently, as WSO2 does.
		ScopeStrategy: func([]string, string) bool { return true },
		// No refresh tokens are issued until the refresh grant is served.
		RefreshTokenScopes: []string{refreshNeverScope},
	}
	strategy := compose.NewOAuth2JWTStrategy(keys.signingKey, compose.NewOAuth2HMACStrategy(fc), fc)
	return compose.Compose(fc, st, strategy,
		compose.OAuth2ClientCredentialsGrantFactory,
		compose.OAuth2ResourceOwnerPasswordCredentialsFactory, //nolint:staticcheck // WSO2's REST flows use the password grant.
	), nil
}

// refreshNeverScope is a scope no role grants, so fosite issues no refresh token.
const refreshNeverScope = "urn:apim:refresh-not-supported"

// Issuer is the iss of the tokens the server issues.
func (s *Server) Issuer() string { return s.cfg.Issuer }

// Handler serves the registration, token, JWKS and discovery endpoints.
func (s *Server) Handler() http.Handler {
	r := chi.NewRouter()
	r.Post(PathRegister, s.handleRegister)
	r.Post(PathToken, s.handleToken)
	r.Get(PathJWKS, s.handleJWKS)
	r.Get(PathDiscovery, s.handleDiscovery)
	return r
}

func (s *Server) handleDiscovery(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                s.cfg.Issuer,
		"token_endpoint":                        s.cfg.BaseURL + PathToken,
		"jwks_uri":                              s.cfg.BaseURL + PathJWKS,
		"registration_endpoint":                 s.cfg.BaseURL + PathRegister,
		"grant_types_supported":                 []string{GrantClientCredentials, GrantPassword},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"subject_types_supported":               []string{"public"},
	})
}

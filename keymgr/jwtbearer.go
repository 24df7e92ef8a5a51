package keymgr

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/rs/zerolog"
)

// GrantJWTBearer is the JWT bearer grant (RFC 7523 2.1): an application's
// client trades an assertion signed by an enabled external key manager for
// an access token of the assertion's subject.
const GrantJWTBearer = "urn:ietf:params:oauth:grant-type:jwt-bearer" //nolint:gosec // G101: a grant type, not a credential

// Bounds of an assertion.
const (
	// maxAssertionBytes bounds the assertion parameter (a JWT with a few
	// claims is under 2 KiB).
	maxAssertionBytes = 16 << 10
	// maxAssertionLifetime is the longest an assertion may be valid:
	// exp at most this far after iat, and after now.
	maxAssertionLifetime = time.Hour
	// maxAssertionClaimLen bounds sub and jti.
	maxAssertionClaimLen = 255
	// maxAssertionKeyTries bounds the keys tried on an assertion without kid.
	maxAssertionKeyTries = 8
)

// assertionAlgs are the signature algorithms accepted on an assertion, as
// the gateway accepts on external tokens: no "none", no HMAC.
var assertionAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512,
}

// Kinds of bad assertion; each is answered invalid_grant.
var (
	errAssertionMalformed = errors.New("malformed assertion")
	errAssertionIssuer    = errors.New("assertion issuer not accepted")
	errAssertionSignature = errors.New("assertion signature not verified")
	errAssertionClaims    = errors.New("assertion claims not accepted")
	errAssertionReplayed  = errors.New("assertion replayed")
)

// assertionError is a bad assertion: Error is a description safe to show
// the client and to log (it never quotes the assertion), kind its sentinel,
// cause what go-jose or the key fetch said, for the wrap chain only.
type assertionError struct {
	kind  error
	msg   string
	cause error
}

func (e *assertionError) Error() string        { return e.msg }
func (e *assertionError) Is(target error) bool { return target == e.kind }
func (e *assertionError) Unwrap() error        { return e.cause }

func badAssertion(kind error, msg string, cause error) error {
	return &assertionError{kind: kind, msg: msg, cause: cause}
}

// assertion is a parsed, not yet verified, JWT bearer assertion.
type assertion struct {
	tok    *josejwt.JSONWebToken
	kid    string
	alg    jose.SignatureAlgorithm
	claims josejwt.Claims // unverified: only iss may be used before verify
}

// parseAssertion parses a compact JWS with one of assertionAlgs and reads
// its claims without verifying them; the issuer names the keys to verify
// with.
func parseAssertion(raw string) (*assertion, error) {
	if raw == "" || len(raw) > maxAssertionBytes {
		return nil, badAssertion(errAssertionMalformed, "The assertion is empty or too long.", nil)
	}
	tok, err := josejwt.ParseSigned(raw, assertionAlgs)
	if err != nil {
		return nil, badAssertion(errAssertionMalformed, "The assertion is not a signed JWT of an accepted algorithm.", err)
	}
	if len(tok.Headers) != 1 {
		return nil, badAssertion(errAssertionMalformed, "The assertion must have exactly one signature.", nil)
	}
	a := &assertion{tok: tok, kid: tok.Headers[0].KeyID, alg: jose.SignatureAlgorithm(tok.Headers[0].Algorithm)}
	if err := tok.UnsafeClaimsWithoutVerification(&a.claims); err != nil {
		return nil, badAssertion(errAssertionMalformed, "The assertion's claims are not valid JSON claims.", err)
	}
	if a.claims.Issuer == "" {
		return nil, badAssertion(errAssertionMalformed, "The assertion has no iss claim.", nil)
	}
	return a, nil
}

// verify checks the signature with the keys of the assertion's issuer and
// returns the verified claims. With a kid, keys are those of that kid;
// without, each key that suits the algorithm is tried (a few at most).
func (a *assertion) verify(keys []jose.JSONWebKey) (*josejwt.Claims, error) {
	tried := 0
	var last error
	for _, k := range keys {
		if (a.kid != "" && k.KeyID != a.kid) || !keySuits(a.alg, k) {
			continue
		}
		if tried++; tried > maxAssertionKeyTries {
			break
		}
		var c josejwt.Claims
		if err := a.tok.Claims(k.Key, &c); err != nil {
			last = err
			continue
		}
		return &c, nil
	}
	return nil, badAssertion(errAssertionSignature, "The assertion's signature does not verify with the keys of its issuer.", last)
}

// keySuits reports whether a JWKS key may verify alg: a public RSA key of
// at least 2048 bits for RS* and PS*, an ECDSA key for ES* (go-jose checks
// its curve), and the key's own alg, when it names one, equal to alg.
func keySuits(alg jose.SignatureAlgorithm, k jose.JSONWebKey) bool {
	if k.Algorithm != "" && k.Algorithm != string(alg) {
		return false
	}
	switch key := k.Key.(type) {
	case *rsa.PublicKey:
		return (strings.HasPrefix(string(alg), "RS") || strings.HasPrefix(string(alg), "PS")) && key.N.BitLen() >= rsaBits
	case *ecdsa.PublicKey:
		return strings.HasPrefix(string(alg), "ES")
	default:
		return false
	}
}

// checkAssertionClaims checks the verified claims of an assertion
// (RFC 7523 3): a subject, our token endpoint (or issuer) in aud, exp
// present and not past, a lifetime of at most maxAssertionLifetime, iat
// and nbf not in the future, a jti. now is compared with clockLeeway.
func checkAssertionClaims(c *josejwt.Claims, now time.Time, audiences []string) error {
	bad := func(msg string) error { return badAssertion(errAssertionClaims, msg, nil) }
	switch {
	case c.Subject == "":
		return bad("The assertion has no sub claim.")
	case len(c.Subject) > maxAssertionClaimLen || hasControl(c.Subject):
		return bad("The assertion's sub claim is too long or has control characters.")
	case c.ID == "":
		return bad("The assertion has no jti claim.")
	case len(c.ID) > maxAssertionClaimLen:
		return bad("The assertion's jti claim is too long.")
	case c.Expiry == nil:
		return bad("The assertion has no exp claim.")
	}
	found := false
	for _, a := range audiences {
		found = found || c.Audience.Contains(a)
	}
	if !found {
		return bad("The assertion's aud claim does not name this token endpoint.")
	}
	exp := c.Expiry.Time()
	if !now.Before(exp.Add(clockLeeway)) {
		return bad("The assertion has expired.")
	}
	if exp.Sub(now) > maxAssertionLifetime+clockLeeway {
		return bad("The assertion's exp claim is too far in the future (at most one hour).")
	}
	if c.IssuedAt != nil {
		iat := c.IssuedAt.Time()
		if iat.After(now.Add(clockLeeway)) {
			return bad("The assertion's iat claim is in the future.")
		}
		if exp.Sub(iat) > maxAssertionLifetime {
			return bad("The assertion is valid for too long (at most one hour).")
		}
	}
	if c.NotBefore != nil && c.NotBefore.Time().After(now.Add(clockLeeway)) {
		return bad("The assertion is not valid yet (nbf).")
	}
	return nil
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f })
}

// jwtBearerGrant is the token endpoint's JWT bearer grant. fosite
// authenticates the client first (client_secret_basic or _post); the
// handler then checks that the client may use the grant, verifies the
// assertion against the external key manager whose issuer it names, burns
// its jti, and sets the session's subject. handleToken grants the scopes
// and fills the claims as for the other grants. fosite's own
// handler/rfc7523 is not used: its jti check and mark are two steps (two
// concurrent replays both pass, the loser gets a 500), a replay answers
// jti_known rather than invalid_grant, jtis are not per issuer, it puts
// the assertion's aud into the token and allows no clock skew.
type jwtBearerGrant struct {
	*oauth2.HandleHelper
	lifespan  fosite.AccessTokenLifespanProvider
	apim      *pgxpool.Pool
	keys      *assertionKeys
	audiences []string
	log       zerolog.Logger
}

var _ fosite.TokenEndpointHandler = (*jwtBearerGrant)(nil)

// newJWTBearerGrant builds the grant on the server's configuration: the
// audiences it accepts are the token endpoint's URL and the issuer.
func newJWTBearerGrant(cfg Config, conf providerConfig, st *store, strategy oauth2.AccessTokenStrategy) *jwtBearerGrant {
	client := cfg.ExternalJWKSClient
	if client == nil {
		client = &http.Client{}
	}
	audiences := []string{cfg.BaseURL + PathToken}
	if cfg.Issuer != audiences[0] {
		audiences = append(audiences, cfg.Issuer)
	}
	log := cfg.Logger.With().Str("grant_type", GrantJWTBearer).Logger()
	return &jwtBearerGrant{
		HandleHelper: &oauth2.HandleHelper{AccessTokenStrategy: strategy, AccessTokenStorage: st, Config: conf},
		lifespan:     conf,
		apim:         cfg.APIM,
		keys:         newAssertionKeys(client, log),
		audiences:    audiences,
		log:          log,
	}
}

// CanSkipClientAuth implements fosite.TokenEndpointHandler: the client
// always authenticates (the assertion says who the user is, not which
// application asks).
func (g *jwtBearerGrant) CanSkipClientAuth(context.Context, fosite.AccessRequester) bool {
	return false
}

// CanHandleTokenEndpointRequest implements fosite.TokenEndpointHandler.
func (g *jwtBearerGrant) CanHandleTokenEndpointRequest(_ context.Context, r fosite.AccessRequester) bool {
	return r.GetGrantTypes().ExactOne(GrantJWTBearer)
}

// HandleTokenEndpointRequest implements fosite.TokenEndpointHandler.
func (g *jwtBearerGrant) HandleTokenEndpointRequest(ctx context.Context, r fosite.AccessRequester) error {
	if !g.CanHandleTokenEndpointRequest(ctx, r) {
		return fosite.ErrUnknownRequest
	}
	// Before the assertion is looked at: a client without the grant burns
	// no jti.
	if !r.GetClient().GetGrantTypes().Has(GrantJWTBearer) {
		return fosite.ErrUnauthorizedClient.WithHint("The client is not allowed the jwt-bearer grant.")
	}
	raw := r.GetRequestForm().Get("assertion")
	if raw == "" {
		return fosite.ErrInvalidRequest.WithHint("The assertion parameter is required.")
	}
	claims, km, err := g.verify(ctx, raw)
	if err != nil {
		if errors.Is(err, errJWKSUnavailable) {
			return fosite.ErrTemporarilyUnavailable.WithHint("The keys of the assertion's issuer could not be fetched; try again later.").WithWrap(err)
		}
		var bad *assertionError
		if errors.As(err, &bad) {
			return fosite.ErrInvalidGrant.WithHint(bad.msg).WithWrap(err)
		}
		return fosite.ErrServerError.WithWrap(err).WithDebug(err.Error())
	}
	sess, err := sessionOf(r)
	if err != nil {
		return fosite.ErrServerError.WithWrap(err)
	}
	// The subject is a user of the provider, not of ours: qualified by the
	// key manager's name, so a provider's "admin" is never our admin to a
	// backend (backend JWT enduser), a deny policy or a per-user limit.
	sess.Subject = claims.Subject + "@" + km
	lifespan := fosite.GetEffectiveLifespan(r.GetClient(), fosite.GrantTypeJWTBearer, fosite.AccessToken, g.lifespan.GetAccessTokenLifespan(ctx))
	sess.SetExpiresAt(fosite.AccessToken, time.Now().UTC().Add(lifespan))
	// Neither the subject nor the jti: the issuer says which provider spoke.
	g.log.Info().Str("client_id", r.GetClient().GetID()).Str("key_manager", km).Str("issuer", claims.Issuer).
		Msg("jwt bearer assertion accepted")
	return nil
}

// PopulateTokenEndpointResponse implements fosite.TokenEndpointHandler:
// an access token, no refresh token (the client presents a new assertion).
func (g *jwtBearerGrant) PopulateTokenEndpointResponse(ctx context.Context, r fosite.AccessRequester, resp fosite.AccessResponder) error {
	if !g.CanHandleTokenEndpointRequest(ctx, r) {
		return fosite.ErrUnknownRequest
	}
	lifespan := fosite.GetEffectiveLifespan(r.GetClient(), fosite.GrantTypeJWTBearer, fosite.AccessToken, g.lifespan.GetAccessTokenLifespan(ctx))
	_, err := g.IssueAccessToken(ctx, lifespan, r, resp)
	return err
}

// verify runs every check of an assertion and, last, records its jti: it
// returns the verified claims and the key manager's name.
func (g *jwtBearerGrant) verify(ctx context.Context, raw string) (*josejwt.Claims, string, error) {
	a, err := parseAssertion(raw)
	if err != nil {
		return nil, "", err
	}
	km, err := g.keyManager(ctx, a.claims.Issuer)
	if err != nil {
		return nil, "", err
	}
	keys, err := g.keys.keys(ctx, km.jwksURI, a.kid)
	if err != nil {
		return nil, "", err
	}
	claims, err := a.verify(keys)
	if err != nil {
		return nil, "", err
	}
	if err := checkAssertionClaims(claims, time.Now(), g.audiences); err != nil {
		return nil, "", err
	}
	if err := g.markUsed(ctx, claims.Issuer, claims.ID, claims.Expiry.Time()); err != nil {
		return nil, "", err
	}
	return claims, km.name, nil
}

// assertionIssuer is the key manager an assertion names by its iss.
type assertionIssuer struct {
	name    string
	jwksURI string
}

// keyManager finds the enabled external key manager of issuer, read from
// the database on each request, so that disabling one takes effect at once.
func (g *jwtBearerGrant) keyManager(ctx context.Context, issuer string) (*assertionIssuer, error) {
	var km assertionIssuer
	var enabled bool
	err := g.apim.QueryRow(ctx, `SELECT name, jwks_uri, enabled FROM key_managers WHERE issuer = $1`, issuer).
		Scan(&km.name, &km.jwksURI, &enabled)
	// Unknown and disabled are told apart in neither the answer nor the log.
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && !enabled) {
		return nil, badAssertion(errAssertionIssuer, "The assertion's issuer is not an enabled key manager.", nil)
	}
	if err != nil {
		return nil, fmt.Errorf("find the key manager of an assertion: %w", err)
	}
	return &km, nil
}

// markUsed records an assertion's jti until its exp, refusing one already
// recorded (RFC 7523 3, item 7). One statement, so of two concurrent uses
// exactly one wins on every replica. A row left from an assertion that
// expired more than the clock leeway ago is taken over.
func (g *jwtBearerGrant) markUsed(ctx context.Context, issuer, jti string, exp time.Time) error {
	tag, err := g.apim.Exec(ctx, `
		INSERT INTO jwt_assertion_jtis (issuer, jti, expires_at) VALUES ($1, $2, $3)
		ON CONFLICT (issuer, jti) DO UPDATE SET expires_at = EXCLUDED.expires_at, used_at = now()
		WHERE jwt_assertion_jtis.expires_at < now() - make_interval(secs => $4)`,
		issuer, jti, exp, clockLeeway.Seconds())
	if err != nil {
		return fmt.Errorf("record the assertion's jti: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return badAssertion(errAssertionReplayed, "The assertion was already used.", nil)
	}
	return nil
}

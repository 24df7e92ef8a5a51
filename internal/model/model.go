// Package model is the one intermediate model between database rows and Envoy
// protos: APIs, their resources and endpoints, deployments, applications, key
// mappings, subscriptions and throttling policies.
package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
	"unicode"
)

// Sentinel validation errors; Validate joins them with the offending field.
var (
	ErrRequired     = errors.New("is required")
	ErrInvalid      = errors.New("is invalid")
	ErrUnknownValue = errors.New("has an unknown value")
)

// LifecycleStatus is an API's WSO2 lifecycle state.
type LifecycleStatus string

// WSO2's lifecycle states.
const (
	StatusCreated    LifecycleStatus = "CREATED"
	StatusPrototyped LifecycleStatus = "PROTOTYPED"
	StatusPublished  LifecycleStatus = "PUBLISHED"
	StatusBlocked    LifecycleStatus = "BLOCKED"
	StatusDeprecated LifecycleStatus = "DEPRECATED"
	StatusRetired    LifecycleStatus = "RETIRED"
)

// Auth types of an operation, as WSO2 spells them.
const (
	AuthApplicationUser = "Application & Application User"
	AuthApplication     = "Application"
	AuthApplicationUsr  = "Application User"
	AuthNone            = "None"
)

// Key types of an application's keys.
const (
	KeyTypeProduction = "PRODUCTION"
	KeyTypeSandbox    = "SANDBOX"
)

// Subscription states, as WSO2 spells them.
const (
	SubUnblocked       = "UNBLOCKED"
	SubBlocked         = "BLOCKED"
	SubProdOnlyBlocked = "PROD_ONLY_BLOCKED"
	SubOnHold          = "ON_HOLD"
	SubRejected        = "REJECTED"
)

// DefaultEnvironment is the gateway environment that exists from the start.
const DefaultEnvironment = "Default"

// Endpoint is a backend URL.
type Endpoint struct {
	URL string `json:"url"`
}

// Operation is one resource of an API: a verb and a path template.
type Operation struct {
	Target           string   `json:"target"`
	Verb             string   `json:"verb"`
	AuthType         string   `json:"authType"`
	ThrottlingPolicy string   `json:"throttlingPolicy"`
	Scopes           []string `json:"scopes,omitempty"`
	// Extra holds the operation's WSO2 properties apim stores but does not
	// act on (a JSON object by WSO2 property name), returned as stored.
	Extra json.RawMessage `json:"extra,omitempty"`
}

// Key identifies an operation inside its API ("GET /pets/{id}").
func (o Operation) Key() string { return o.Verb + " " + o.Target }

// Secured reports whether a call to the operation needs a credential.
func (o Operation) Secured() bool { return o.AuthType != AuthNone }

// API is an API definition as the publisher edits it, and as a revision
// freezes it.
type API struct {
	ID          string          `json:"id"`
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Context     string          `json:"context"`
	Version     string          `json:"version"`
	Provider    string          `json:"provider"`
	Status      LifecycleStatus `json:"lifeCycleStatus"`
	Production  *Endpoint       `json:"production,omitempty"`
	Sandbox     *Endpoint       `json:"sandbox,omitempty"`
	Operations  []Operation     `json:"operations"`
	Policies    []string        `json:"policies,omitempty"`
	// APIThrottlingPolicy is the API-level (advanced) policy over all
	// callers of the API; empty or Unlimited does not limit.
	APIThrottlingPolicy string `json:"apiThrottlingPolicy,omitempty"`
	// SecurityScheme is WSO2's securityScheme: which credentials the
	// gateway accepts (SchemeOAuth2, SchemeAPIKey). Empty means
	// DefaultSecurityScheme, so revisions frozen before it existed keep
	// accepting only OAuth2 tokens.
	SecurityScheme []string `json:"securityScheme,omitempty"`
	// CORS is WSO2's corsConfiguration, answered by Envoy; nil is disabled.
	CORS *CORS `json:"corsConfiguration,omitempty"`
	// EnableBackendJWT has the gateway send the backend a JWT it signs,
	// describing the caller (WSO2's backend JWT, X-JWT-Assertion).
	EnableBackendJWT bool `json:"enableBackendJWT,omitempty"`
	// Tags are WSO2's tags: returned, and listable (tag: queries).
	Tags []string `json:"tags,omitempty"`
	// Visibility is WSO2's devportal visibility (VisibilityPublic,
	// VisibilityPrivate, VisibilityRestricted; empty is public), with the
	// roles of a restricted API. Stored; the devportal does not filter by
	// it yet.
	Visibility   string   `json:"visibility,omitempty"`
	VisibleRoles []string `json:"visibleRoles,omitempty"`
	// Transport is WSO2's transport (http, https). Stored; every gateway
	// listener serves the API.
	Transport []string `json:"transport,omitempty"`
	// IsDefaultVersion is WSO2's isDefaultVersion. Stored; the gateway does
	// not route the unversioned context to it yet.
	IsDefaultVersion    bool                 `json:"isDefaultVersion,omitempty"`
	BusinessInformation *BusinessInformation `json:"businessInformation,omitempty"`
	// AdditionalProperties are WSO2 4.x's custom properties (its array
	// form; additionalPropertiesMap is derived from them).
	AdditionalProperties []AdditionalProperty `json:"additionalProperties,omitempty"`
	// Scopes are WSO2's API scopes (name, role bindings). Stored; the
	// gateway enforces operations' scope names, not role bindings.
	Scopes []APIScope `json:"scopes,omitempty"`
	// Extra holds the WSO2 properties apim stores but does not act on (a
	// JSON object by WSO2 property name), returned as stored. At most
	// MaxExtraBytes.
	Extra      json.RawMessage `json:"extra,omitempty"`
	CreatedAt  time.Time       `json:"createdAt,omitzero"`
	UpdatedAt  time.Time       `json:"updatedAt,omitzero"`
	Generation int64           `json:"generation"`
}

// Security schemes, as WSO2 spells them. SchemeMandatory is WSO2's marker
// that one of the schemes is required; it is kept but changes nothing here,
// since a secured operation always needs one of them.
const (
	SchemeOAuth2    = "oauth2"
	SchemeAPIKey    = "api_key"
	SchemeMandatory = "oauth_basic_auth_api_key_mandatory"
)

// APIKeyHeader is WSO2's request header for an API key.
const APIKeyHeader = "apikey"

// DefaultSecurityScheme is the security scheme of an API that names none.
var DefaultSecurityScheme = []string{SchemeOAuth2}

// Schemes returns the API's security schemes, DefaultSecurityScheme when
// it names none. The result must not be changed.
func (a *API) Schemes() []string {
	if len(a.SecurityScheme) == 0 {
		return DefaultSecurityScheme
	}
	return a.SecurityScheme
}

// CORS is an API's CORS policy, WSO2's corsConfiguration.
type CORS struct {
	Enabled          bool     `json:"corsConfigurationEnabled"`
	AllowOrigins     []string `json:"accessControlAllowOrigins"`
	AllowCredentials bool     `json:"accessControlAllowCredentials"`
	AllowHeaders     []string `json:"accessControlAllowHeaders"`
	AllowMethods     []string `json:"accessControlAllowMethods"`
}

// validate reports the problems of c, each naming its WSO2 field.
func (c *CORS) validate() []error {
	var errs []error
	field := func(name string, err error) {
		errs = append(errs, fmt.Errorf("corsConfiguration.%s %w", name, err))
	}
	if c.Enabled && len(c.AllowOrigins) == 0 {
		field("accessControlAllowOrigins", ErrRequired)
	}
	for i, o := range c.AllowOrigins {
		if o == "*" {
			if c.AllowCredentials {
				field(fmt.Sprintf("accessControlAllowOrigins[%d]", i), fmt.Errorf(
					"%w: \"*\" cannot be used with accessControlAllowCredentials", ErrInvalid))
			}
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") ||
			u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			field(fmt.Sprintf("accessControlAllowOrigins[%d]", i), fmt.Errorf(
				"%w: want \"*\" or an origin such as https://example.com, got %q", ErrInvalid, o))
		}
	}
	for i, m := range c.AllowMethods {
		if !verbs[m] {
			field(fmt.Sprintf("accessControlAllowMethods[%d]", i), fmt.Errorf("%w: %q", ErrUnknownValue, m))
		}
	}
	for i, h := range c.AllowHeaders {
		if !isToken(h) {
			field(fmt.Sprintf("accessControlAllowHeaders[%d]", i), fmt.Errorf("%w: %q is not a header name", ErrInvalid, h))
		}
	}
	return errs
}

// isToken reports whether s is an HTTP token (RFC 9110 5.6.2), as header
// names are.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r > 0x7e || r <= ' ' || strings.ContainsRune("\"(),/:;<=>?@[\\]{}", r) {
			return false
		}
	}
	return true
}

// BasePath is the gateway path prefix of the API: {context}/{version}.
func (a *API) BasePath() string {
	return strings.TrimSuffix(a.Context, "/") + "/" + a.Version
}

var verbs = map[string]bool{"GET": true, "POST": true, "PUT": true, "DELETE": true, "PATCH": true, "HEAD": true, "OPTIONS": true}

// Validate reports every problem with the API, each naming its field.
func (a *API) Validate() error {
	var errs []error
	field := func(name string, err error) { errs = append(errs, fmt.Errorf("%s %w", name, err)) }
	if strings.TrimSpace(a.Name) == "" {
		field("name", ErrRequired)
	} else if err := CheckName(a.Name, MaxAPINameLength); err != nil {
		field("name", err)
	}
	switch {
	case a.Version == "":
		field("version", ErrRequired)
	case strings.ContainsFunc(a.Version, unicode.IsSpace):
		field("version", fmt.Errorf("%w: spaces are not allowed", ErrInvalid))
	default:
		if err := CheckName(a.Version, MaxVersionLength); err != nil {
			field("version", err)
		}
	}
	switch {
	case a.Context == "":
		field("context", ErrRequired)
	case !strings.HasPrefix(a.Context, "/") || strings.ContainsAny(a.Context, " {}?#") || strings.Contains(a.Context, "//") || a.Context == "/":
		field("context", ErrInvalid)
	default:
		if err := CheckText(a.Context, MaxContextLength); err != nil {
			field("context", err)
		}
	}
	if err := CheckProse(a.Description, MaxDescriptionLength); err != nil {
		field("description", err)
	}
	if a.Production == nil && a.Sandbox == nil {
		field("endpointConfig", ErrRequired)
	}
	for name, ep := range map[string]*Endpoint{"production_endpoints": a.Production, "sandbox_endpoints": a.Sandbox} {
		if ep == nil {
			continue
		}
		if err := ValidateEndpointURL(ep.URL); err != nil {
			field("endpointConfig."+name+".url", err)
		}
	}
	seenScheme := map[string]bool{}
	for i, sc := range a.SecurityScheme {
		switch sc {
		case SchemeOAuth2, SchemeAPIKey, SchemeMandatory:
		default:
			field(fmt.Sprintf("securityScheme[%d]", i), fmt.Errorf("%w: %q; supported are oauth2, api_key", ErrUnknownValue, sc))
		}
		if seenScheme[sc] {
			field(fmt.Sprintf("securityScheme[%d]", i), fmt.Errorf("%w: duplicate %q", ErrInvalid, sc))
		}
		seenScheme[sc] = true
	}
	if len(a.SecurityScheme) > 0 && !seenScheme[SchemeOAuth2] && !seenScheme[SchemeAPIKey] {
		field("securityScheme", fmt.Errorf("%w: must include oauth2 or api_key", ErrInvalid))
	}
	if a.CORS != nil {
		errs = append(errs, a.CORS.validate()...)
	}
	errs = append(errs, a.validateWSO2()...)
	seen := map[string]bool{}
	for i, op := range a.Operations {
		prefix := fmt.Sprintf("operations[%d].", i)
		if !verbs[op.Verb] {
			field(prefix+"verb", ErrUnknownValue)
		}
		if err := ValidatePathTemplate(op.Target); err != nil {
			field(prefix+"target", err)
		}
		switch op.AuthType {
		case AuthApplicationUser, AuthApplication, AuthApplicationUsr, AuthNone:
		default:
			field(prefix+"authType", ErrUnknownValue)
		}
		if seen[op.Key()] {
			field(prefix+"target", fmt.Errorf("%w: duplicate %s", ErrInvalid, op.Key()))
		}
		seen[op.Key()] = true
		if len(op.Extra) > MaxExtraBytes {
			field(prefix+"extra", fmt.Errorf("%w: the stored WSO2 properties take %d bytes, more than %d", ErrInvalid, len(op.Extra), MaxExtraBytes))
		}
	}
	return errors.Join(errs...)
}

// ValidateEndpointURL checks that u is an absolute http(s) URL with a host.
func ValidateEndpointURL(u string) error {
	if u == "" {
		return ErrRequired
	}
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Hostname() == "" || p.RawQuery != "" || p.Fragment != "" {
		return fmt.Errorf("%w: want an absolute http or https URL without query, got %q", ErrInvalid, u)
	}
	return nil
}

// ValidatePathTemplate checks a WSO2/OpenAPI path template: it starts with a
// slash and each {param} is a whole segment named with letters, digits or _.
// A trailing "/*" matches any rest of the path.
func ValidatePathTemplate(t string) error {
	if t == "" {
		return ErrRequired
	}
	if !strings.HasPrefix(t, "/") {
		return fmt.Errorf("%w: %q must start with /", ErrInvalid, t)
	}
	segs := strings.Split(t[1:], "/")
	for i, s := range segs {
		switch {
		case s == "*" && i == len(segs)-1:
		case strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}"):
			name := s[1 : len(s)-1]
			if name == "" || strings.IndexFunc(name, func(r rune) bool {
				return r != '_' && r != '-' && r != '.' && (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9')
			}) >= 0 {
				return fmt.Errorf("%w: bad parameter %q in %q", ErrInvalid, s, t)
			}
		case strings.ContainsAny(s, "{}*?#% \t"):
			return fmt.Errorf("%w: bad segment %q in %q", ErrInvalid, s, t)
		}
	}
	return nil
}

// ValidateVHost checks a deployment's virtual host: a host name without a
// port. Empty means the environment's default.
func ValidateVHost(v string) error {
	if v == "" {
		return nil
	}
	control := func(r rune) bool { return r < ' ' || r == 0x7f }
	if _, _, err := net.SplitHostPort(v); err == nil || strings.ContainsAny(v, "/ *?#@[]") || strings.ContainsFunc(v, control) {
		return fmt.Errorf("%w: %q must be a host name without port", ErrInvalid, v)
	}
	return nil
}

// Deployment is one API revision deployed to one gateway environment.
type Deployment struct {
	APIID       string    `json:"apiId"`
	RevisionID  string    `json:"revisionId"`
	Environment string    `json:"environment"`
	VHost       string    `json:"vhost"`
	DeployedAt  time.Time `json:"deployedAt"`
	API         API       `json:"api"` // the revision's frozen definition
}

// Application is a devportal application.
type Application struct {
	ID               string `json:"id"`
	Name             string `json:"name"`
	Owner            string `json:"owner"`
	ThrottlingPolicy string `json:"throttlingPolicy"`
	TokenType        string `json:"tokenType"`
	Status           string `json:"status"`
	Generation       int64  `json:"generation"`
}

// KeyMapping ties an OAuth client to an application and a key type.
type KeyMapping struct {
	ID            string `json:"id"`
	ApplicationID string `json:"applicationId"`
	KeyType       string `json:"keyType"`
	ConsumerKey   string `json:"consumerKey"`
	KeyManager    string `json:"keyManager"`
	// KeyManagerID is the external key manager's id; empty for the
	// resident key manager's clients.
	KeyManagerID string `json:"keyManagerId,omitempty"`
	Generation   int64  `json:"generation"`
}

// Subscription is an application's subscription to an API at a tier.
type Subscription struct {
	ID               string `json:"id"`
	ApplicationID    string `json:"applicationId"`
	APIID            string `json:"apiId"`
	ThrottlingPolicy string `json:"throttlingPolicy"`
	// RequestedThrottlingPolicy is WSO2's requestedThrottlingPolicy, the
	// tier the subscriber asked for. Stored; without subscription
	// workflows it changes no limit (ThrottlingPolicy does).
	RequestedThrottlingPolicy string `json:"requestedThrottlingPolicy,omitempty"`
	Status                    string `json:"status"`
	Generation                int64  `json:"generation"`
}

// GatewayState is everything a gateway sidecar needs for one environment:
// the full state it loads at start, before applying events.
type GatewayState struct {
	Environment   string         `json:"environment"`
	Deployments   []Deployment   `json:"deployments"`
	Applications  []Application  `json:"applications"`
	KeyMappings   []KeyMapping   `json:"keyMappings"`
	Subscriptions []Subscription `json:"subscriptions"`
	Policies      []Policy       `json:"policies"`
	DenyPolicies  []DenyPolicy   `json:"denyPolicies,omitempty"`
	// Revocations are the access tokens revoked and not yet expired.
	Revocations []Revocation `json:"revocations,omitempty"`
	// KeyManagers are the external key managers, enabled or not.
	KeyManagers []KeyManager `json:"keyManagers,omitempty"`
}

// Revocation is a revoked access token, by its jti, kept until the token
// expires (schema/events.md, revocation). With ClientID set instead, it
// revokes every access token of that OAuth client issued (iat) before
// IssuedBefore, until ExpiresAt, when all of those have expired: a
// regenerated client secret.
type Revocation struct {
	JTI          string    `json:"jti,omitempty"`
	ClientID     string    `json:"clientId,omitempty"`
	IssuedBefore time.Time `json:"issuedBefore,omitzero"`
	ExpiresAt    time.Time `json:"expiresAt"`
}

// Principal is who a verified access token speaks for.
type Principal struct {
	Subject   string    // the user, or the client id for an application token
	ClientID  string    // the OAuth client (consumer key) the token was issued to
	Scopes    []string  // granted scopes
	ExpiresAt time.Time // token expiry
}

// HasScope reports whether the principal was granted scope.
func (p *Principal) HasScope(scope string) bool {
	for _, s := range p.Scopes {
		if s == scope {
			return true
		}
	}
	return false
}

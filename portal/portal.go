// Package portal serves the publisher, devportal and admin REST APIs at
// WSO2 API-M 4.x paths and with its field names, over the store.
package portal

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"

	"github.com/apim-dev/apim/internal/model"
	"github.com/apim-dev/apim/internal/store"
	"github.com/apim-dev/apim/keymgr"
)

// Base paths of the three REST APIs.
const (
	PublisherBase = "/api/am/publisher/v4"
	DevportalBase = "/api/am/devportal/v3"
	AdminBase     = "/api/am/admin/v4"
)

// DefaultMaxBodyBytes is the largest request body accepted by default.
const DefaultMaxBodyBytes = 10 << 20

// TokenVerifier verifies a bearer access token.
type TokenVerifier interface {
	VerifyToken(ctx context.Context, raw string) (*model.Principal, error)
}

// RoleLookup gives a user's roles, which decide the devportal APIs of
// RESTRICTED visibility they see.
type RoleLookup interface {
	UserRoles(ctx context.Context, user string) ([]string, error)
}

// ClientRegistrar creates and deletes applications' OAuth clients inside the
// caller's transaction.
type ClientRegistrar interface {
	RegisterClient(ctx context.Context, tx pgx.Tx, owner, name string, grantTypes []string, callback string) (clientID, secret string, err error)
	DeleteClients(ctx context.Context, tx pgx.Tx, clientIDs []string) error
}

// APIKeyIssuer signs and revokes applications' API keys (keymgr.Server).
type APIKeyIssuer interface {
	SignAPIKey(ctx context.Context, c keymgr.APIKeyClaims) (string, time.Time, error)
	RevokeAPIKey(ctx context.Context, raw, applicationID, keyType string) error
}

var _ APIKeyIssuer = (*keymgr.Server)(nil)

// Config configures a Portal.
type Config struct {
	Store   *store.Store
	Tokens  TokenVerifier
	Clients ClientRegistrar
	// APIKeys issues API keys; when nil, Clients is used if it is an
	// APIKeyIssuer too (the resident key manager is both), and the API-key
	// routes answer 501 otherwise.
	APIKeys APIKeyIssuer
	// Roles gives users' roles; when nil, Tokens is used if it is a
	// RoleLookup too (the resident key manager is), and signed-in users
	// have no roles otherwise.
	Roles        RoleLookup
	Logger       zerolog.Logger
	MaxBodyBytes int64 // default DefaultMaxBodyBytes
	// EndpointDeny are the destinations an API's endpoints may not point at.
	EndpointDeny model.EndpointDeny
}

// Portal is the REST API server of the control plane.
type Portal struct {
	store   *store.Store
	tokens  TokenVerifier
	clients ClientRegistrar
	apiKeys APIKeyIssuer
	roles   RoleLookup
	log     zerolog.Logger
	// endpointDeny refuses endpoints at denied destinations.
	endpointDeny model.EndpointDeny
	maxBody      int64
}

// New checks cfg and returns a Portal.
func New(cfg Config) (*Portal, error) {
	var errs []error
	if cfg.Store == nil {
		errs = append(errs, errors.New("portal: Store is required"))
	}
	if cfg.Tokens == nil {
		errs = append(errs, errors.New("portal: Tokens is required"))
	}
	if cfg.Clients == nil {
		errs = append(errs, errors.New("portal: Clients is required"))
	}
	if cfg.MaxBodyBytes < 0 {
		errs = append(errs, errors.New("portal: MaxBodyBytes must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.APIKeys == nil {
		cfg.APIKeys, _ = cfg.Clients.(APIKeyIssuer)
	}
	if cfg.Roles == nil {
		cfg.Roles, _ = cfg.Tokens.(RoleLookup)
	}
	return &Portal{
		store: cfg.Store, tokens: cfg.Tokens, clients: cfg.Clients, apiKeys: cfg.APIKeys, roles: cfg.Roles, log: cfg.Logger, endpointDeny: cfg.EndpointDeny,
		maxBody: cfg.MaxBodyBytes,
	}, nil
}

// Handler returns the router of all three REST APIs.
func (p *Portal) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(p.recoverer)
	r.Route(PublisherBase, p.publisherRoutes)
	r.Route(DevportalBase, p.devportalRoutes)
	r.Route(AdminBase, p.adminRoutes)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no resource at "+r.URL.Path)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, r.Method+" is not allowed on "+r.URL.Path)
	})
	return r
}

// recoverer turns a panic into a 500 and a log line, never a crash.
func (p *Portal) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				p.log.Error().Str("method", r.Method).Str("path", r.URL.Path).Interface("panic", v).Msg("handler panicked")
				writeError(w, http.StatusInternalServerError, "internal error")
			}
		}()
		next.ServeHTTP(w, r)
	})
}

type principalKey struct{}

func principalFrom(ctx context.Context) *model.Principal {
	pr, _ := ctx.Value(principalKey{}).(*model.Principal)
	return pr
}

// subject is the authenticated user of the request, "" when anonymous.
func subject(r *http.Request) string {
	if pr := principalFrom(r.Context()); pr != nil {
		return pr.Subject
	}
	return ""
}

// authorize requires a valid bearer token granting any of scopes.
func (p *Portal) authorize(scopes ...string) func(http.Handler) http.Handler {
	return p.authn(false, scopes)
}

// authn checks the bearer token; with anonymous, a request without one
// passes as nobody.
func (p *Portal) authn(anonymous bool, scopes []string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := r.Header.Get("Authorization")
			if h == "" && anonymous {
				next.ServeHTTP(w, r)
				return
			}
			raw, ok := strings.CutPrefix(h, "Bearer ")
			if !ok || strings.TrimSpace(raw) == "" {
				w.Header().Set("WWW-Authenticate", `Bearer realm="apim"`)
				writeErrorCode(w, http.StatusUnauthorized, 900902, "Missing Credentials",
					"Make sure your API invocation call has a header: 'Authorization: Bearer ACCESS_TOKEN'")
				return
			}
			pr, err := p.tokens.VerifyToken(r.Context(), strings.TrimSpace(raw))
			if err != nil || pr == nil {
				// The error may quote the token; log only that it failed.
				p.log.Debug().Str("path", r.URL.Path).Msg("access token rejected")
				w.Header().Set("WWW-Authenticate", `Bearer realm="apim", error="invalid_token"`)
				writeErrorCode(w, http.StatusUnauthorized, 900901, "Invalid Credentials",
					"Access token is invalid or expired")
				return
			}
			if !hasAny(pr, scopes) {
				writeErrorCode(w, http.StatusForbidden, 900910, "Forbidden",
					"The access token does not allow this operation; it needs one of the scopes "+strings.Join(scopes, ", "))
				return
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, pr)))
		})
	}
}

func hasAny(pr *model.Principal, scopes []string) bool {
	for _, s := range scopes {
		if pr.HasScope(s) {
			return true
		}
	}
	return len(scopes) == 0
}

// errorDTO is WSO2's error body.
type errorDTO struct {
	Code        int             `json:"code"`
	Message     string          `json:"message"`
	Description string          `json:"description"`
	MoreInfo    string          `json:"moreInfo"`
	Error       []errorListItem `json:"error"`
}

type errorListItem struct {
	Code        string `json:"code"`
	Message     string `json:"message"`
	Description string `json:"description,omitempty"`
}

func writeError(w http.ResponseWriter, status int, description string, items ...errorListItem) {
	writeErrorCode(w, status, status, http.StatusText(status), description, items...)
}

func writeErrorCode(w http.ResponseWriter, status, code int, message, description string, items ...errorListItem) {
	if items == nil {
		items = []errorListItem{}
	}
	writeJSON(w, status, errorDTO{Code: code, Message: message, Description: description, Error: items})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// fail maps a store error to its status and WSO2 error body; anything else
// is a 500 that is logged, not shown.
func (p *Portal) fail(w http.ResponseWriter, r *http.Request, err error) {
	var (
		se    *store.Error
		pgErr *pgconn.PgError
	)
	switch {
	case errors.As(err, &se) && errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, se.Message)
	case errors.As(err, &se) && errors.Is(err, store.ErrConflict):
		writeError(w, http.StatusConflict, se.Message)
	case errors.As(err, &se) && errors.Is(err, store.ErrInvalid):
		writeError(w, http.StatusBadRequest, se.Message, fieldItems(se.Message)...)
	case errors.As(err, &pgErr) && (pgErr.Code == "22021" || pgErr.Code == "22P05"):
		// A value PostgreSQL cannot store as text (a NUL character): the
		// transaction wrote nothing.
		writeError(w, http.StatusBadRequest, "a value contains a character that cannot be stored (NUL)")
	case errors.Is(err, context.Canceled):
		writeError(w, http.StatusServiceUnavailable, "request cancelled")
	default:
		p.log.Error().Err(err).Str("method", r.Method).Str("path", r.URL.Path).Msg("request failed")
		writeError(w, http.StatusInternalServerError, "internal error")
	}
}

// badRequest answers 400 with the problems, one item each.
func badRequest(w http.ResponseWriter, problems []string) {
	writeError(w, http.StatusBadRequest, strings.Join(problems, "; "), fieldItems(strings.Join(problems, "; "))...)
}

func fieldItems(msg string) []errorListItem {
	var items []errorListItem
	for _, part := range strings.Split(msg, "; ") {
		field, rest, _ := strings.Cut(part, " ")
		items = append(items, errorListItem{Code: "400", Message: field, Description: rest})
	}
	return items
}

// decodeJSON reads a JSON body strictly into v: the content type must be
// JSON, the size at most the limit, no unknown field, one value only. On
// failure it writes the error response and returns false.
func (p *Portal) decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if !isMediaType(r, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, p.maxBody))
	if err == nil {
		if key := duplicateKey(body); key != "" {
			writeError(w, http.StatusBadRequest, "duplicate field "+strconv.Quote(key),
				errorListItem{Code: "400", Message: key, Description: "appears twice; send it once"})
			return false
		}
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		err = dec.Decode(v)
		if err == nil && dec.More() {
			err = errors.New("unexpected data after the JSON value")
		}
	}
	if err == nil {
		return true
	}
	var tooBig *http.MaxBytesError
	var syntax *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", tooBig.Limit))
	case errors.Is(err, io.EOF):
		writeError(w, http.StatusBadRequest, "request body is empty; a JSON value is required")
	case errors.As(err, &syntax):
		writeError(w, http.StatusBadRequest, fmt.Sprintf("malformed JSON at byte %d: %v", syntax.Offset, err))
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			field = "body"
		}
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%s must be %s, got %s", field, jsonKind(typeErr.Type), typeErr.Value))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.TrimPrefix(err.Error(), "json: unknown field ")
		writeError(w, http.StatusBadRequest, "unknown field "+field, errorListItem{Code: "400", Message: strings.Trim(field, `"`), Description: "is not a known field"})
	default:
		writeError(w, http.StatusBadRequest, "malformed JSON: "+err.Error())
	}
	return false
}

// jsonKind names the JSON type that decodes into t.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	default:
		return "a number"
	}
}

func isMediaType(r *http.Request, want string) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == want
}

package keymgr

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// maxRegistrationBody bounds a registration request body.
const maxRegistrationBody = 64 << 10

// adminRole may register clients for other owners.
const adminRole = "admin"

// registration is WSO2's DCR request (client-registration v0.17).
type registration struct {
	CallbackURL string `json:"callbackUrl"`
	ClientName  string `json:"clientName"`
	Owner       string `json:"owner"`
	GrantType   string `json:"grantType"` // space-separated
	SaasApp     bool   `json:"saasApp"`
	// TokenScope appears in older WSO2 guides ("Production"); accepted and ignored.
	TokenScope string `json:"tokenScope"`
}

// registrationResponse is WSO2's DCR response.
type registrationResponse struct {
	ClientID          string  `json:"clientId"`
	ClientName        string  `json:"clientName"`
	CallBackURL       *string `json:"callBackURL"`
	ClientSecret      string  `json:"clientSecret"`
	IsSaasApplication bool    `json:"isSaasApplication"`
	AppOwner          string  `json:"appOwner"`
	JSONString        string  `json:"jsonString"`
}

// decodeRegistration strictly decodes and validates a registration body:
// one JSON object, no unknown fields, clientName present, grant types known.
// An empty grantType means client_credentials.
func decodeRegistration(body io.Reader) (registration, []string, error) {
	var reg registration
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&reg); err != nil {
		return registration{}, nil, fmt.Errorf("malformed request body: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return registration{}, nil, errors.New("malformed request body: trailing data after the JSON object")
	}
	if strings.TrimSpace(reg.ClientName) == "" {
		return registration{}, nil, errors.New("clientName is required")
	}
	grants := strings.Fields(reg.GrantType)
	if len(grants) == 0 {
		grants = []string{GrantClientCredentials}
	}
	if err := validateGrantTypes(grants); err != nil {
		return registration{}, nil, fmt.Errorf("grantType: %w", err)
	}
	return reg, grants, nil
}

// handleRegister is WSO2's dynamic client registration. The caller
// authenticates as a user with HTTP basic auth; the client's owner is that
// user, or anyone if the user is an admin.
//
// Registering a clientName the owner already has returns that client, as
// WSO2 does; but since only the secret's hash is stored, its secret is
// rotated and the new one returned (the old one stops working).
func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user, password, ok := r.BasicAuth()
	if !ok {
		writeOAuthError(w, http.StatusUnauthorized, "invalid_client", "HTTP basic authentication of a user is required.")
		return
	}
	roles, err := s.Authenticate(ctx, user, password)
	if errors.Is(err, ErrBusy) {
		s.log.Warn().Msg("registration refused: too many password checks in progress")
		w.Header().Set("Retry-After", retryAfter)
		writeOAuthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "The server is busy; retry later.")
		return
	}
	if errors.Is(err, ErrBadCredentials) {
		s.log.Info().Str("user", user).Msg("registration refused: bad credentials")
		writeOAuthError(w, http.StatusUnauthorized, "invalid_client", "The user's credentials are invalid.")
		return
	}
	if err != nil {
		s.log.Error().Err(err).Msg("registration: authenticate")
		writeOAuthError(w, http.StatusInternalServerError, "server_error", "The user could not be authenticated.")
		return
	}

	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRegistrationBody))
	if err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "The request body is too large or unreadable.")
		return
	}
	reg, grants, err := decodeRegistration(bytes.NewReader(body))
	if err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_client_metadata", err.Error())
		return
	}
	owner := reg.Owner
	if owner == "" {
		owner = user
	}
	if owner != user && !slices.Contains(roles, adminRole) {
		writeOAuthError(w, http.StatusForbidden, "access_denied", "Only an admin may register a client for another owner.")
		return
	}
	redirects, err := redirectURIs(reg.CallbackURL, grants)
	if err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_redirect_uri", err.Error())
		return
	}

	var (
		clientID, secret string
		existing         bool
	)
	err = pgx.BeginFunc(ctx, s.cfg.APIM, func(tx pgx.Tx) error {
		var err error
		clientID, secret, grants, existing, err = registerOrRotate(ctx, tx, owner, reg.ClientName, grants, redirects)
		return err
	})
	if err != nil {
		s.log.Error().Err(err).Str("owner", owner).Str("client_name", reg.ClientName).Msg("registration failed")
		writeOAuthError(w, http.StatusInternalServerError, "server_error", "The client could not be registered.")
		return
	}
	s.log.Info().Str("owner", owner).Str("client_name", reg.ClientName).Str("client_id", clientID).
		Bool("existing", existing).Msg("client registered")

	meta, _ := json.Marshal(map[string]string{
		"client_name":   reg.ClientName,
		"redirect_uris": reg.CallbackURL,
		"grant_types":   strings.Join(grants, " "),
		"username":      owner,
	})
	resp := registrationResponse{
		ClientID:          clientID,
		ClientName:        reg.ClientName,
		ClientSecret:      secret,
		IsSaasApplication: reg.SaasApp,
		AppOwner:          owner,
		JSONString:        string(meta),
	}
	if reg.CallbackURL != "" {
		resp.CallBackURL = &reg.CallbackURL
	}
	// WSO2 answers 200 whether the client is new or existing.
	writeJSON(w, http.StatusOK, resp)
}

// registerOrRotate returns the owner's client of that name with a new
// secret, or creates it. A transaction-scoped advisory lock on (owner, name)
// keeps two concurrent registrations from creating two clients.
func registerOrRotate(ctx context.Context, tx pgx.Tx, owner, name string, grants, redirects []string) (clientID, secret string, grantTypes []string, existing bool, err error) {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))`, owner, name); err != nil {
		return "", "", nil, false, fmt.Errorf("lock client %q: %w", name, err)
	}
	err = tx.QueryRow(ctx, `
		SELECT client_id, grant_types FROM oauth_clients
		WHERE owner = $1 AND name = $2 AND kind = $3 ORDER BY created_at LIMIT 1`, owner, name, clientKindREST).Scan(&clientID, &grantTypes)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		clientID, secret, err = insertClient(ctx, tx, clientKindREST, owner, name, grants, redirects)
		return clientID, secret, grants, false, err
	case err != nil:
		return "", "", nil, false, fmt.Errorf("find client %q: %w", name, err)
	}
	if secret, err = randomToken(secretBytes); err != nil {
		return "", "", nil, false, err
	}
	if _, err := tx.Exec(ctx, `UPDATE oauth_clients SET secret_hash = $2 WHERE client_id = $1`, clientID, hashSecret(secret)); err != nil {
		return "", "", nil, false, fmt.Errorf("rotate secret of %s: %w", clientID, err)
	}
	return clientID, secret, grantTypes, true, nil
}

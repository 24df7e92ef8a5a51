package portal

import (
	"context"
	"errors"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5"

	"github.com/apim-dev/apim/internal/model"
	"github.com/apim-dev/apim/internal/store"
	"github.com/apim-dev/apim/keymgr"
)

// ClientKeys changes applications' OAuth clients after generate-keys: their
// grant types and token lifetimes, and their secret (keymgr.Server). The
// portal uses it when Config.Clients implements it too; otherwise the
// oauth-keys routes answer 501 and generate-keys keeps no lifetimes.
type ClientKeys interface {
	UpdateClient(ctx context.Context, tx pgx.Tx, clientID string, grantTypes []string, callback *string, v *keymgr.TokenValidity) error
	ClientInfo(ctx context.Context, clientID string) (keymgr.ClientInfo, error)
	RegenerateSecret(ctx context.Context, tx pgx.Tx, clientID string) (string, error)
}

var _ ClientKeys = (*keymgr.Server)(nil)

// WSO2's additionalProperties of an application's keys that set token
// lifetimes, in seconds.
const (
	propAppAccessExpiry  = "application_access_token_expiry_time"
	propUserAccessExpiry = "user_access_token_expiry_time"
	propRefreshExpiry    = "refresh_token_expiry_time"
)

// maxValiditySeconds is keymgr.MaxTokenValidity in seconds.
const maxValiditySeconds = int64(keymgr.MaxTokenValidity / time.Second)

// parseLifetime reads a lifetime in seconds from a JSON number or a string
// of digits, as WSO2 clients send both. nil, "" and WSO2's placeholder
// "N/A" mean the default (0). A problem names field.
func parseLifetime(field string, v any) (time.Duration, string) {
	bad := field + " must be a whole number of seconds from 1 to " + strconv.FormatInt(maxValiditySeconds, 10)
	var n int64
	switch x := v.(type) {
	case nil:
		return 0, ""
	case string:
		x = strings.TrimSpace(x)
		if x == "" || strings.EqualFold(x, "N/A") {
			return 0, ""
		}
		var err error
		if n, err = strconv.ParseInt(x, 10, 64); err != nil {
			return 0, bad
		}
	case float64:
		if x != math.Trunc(x) || x < 1 || x > float64(maxValiditySeconds) {
			return 0, bad
		}
		n = int64(x)
	default:
		return 0, bad
	}
	if n < 1 || n > maxValiditySeconds {
		return 0, bad
	}
	return time.Duration(n) * time.Second, ""
}

// keyValidity reads the token lifetimes of a generate-keys or oauth-keys
// request: additionalProperties' application_access_token_expiry_time, else
// validityTime, for the client's own tokens; user_access_token_expiry_time
// and refresh_token_expiry_time. Other additionalProperties (WSO2 sends
// many) are ignored.
func keyValidity(validityTime any, props map[string]any) (keymgr.TokenValidity, []string) {
	var (
		v        keymgr.TokenValidity
		problems []string
		p        string
	)
	if v.ApplicationAccessToken, p = parseLifetime("validityTime", validityTime); p != "" {
		problems = append(problems, p)
	}
	if d, p := parseLifetime("additionalProperties."+propAppAccessExpiry, props[propAppAccessExpiry]); p != "" {
		problems = append(problems, p)
	} else if d != 0 {
		v.ApplicationAccessToken = d
	}
	if v.UserAccessToken, p = parseLifetime("additionalProperties."+propUserAccessExpiry, props[propUserAccessExpiry]); p != "" {
		problems = append(problems, p)
	}
	if v.RefreshToken, p = parseLifetime("additionalProperties."+propRefreshExpiry, props[propRefreshExpiry]); p != "" {
		problems = append(problems, p)
	}
	return v, problems
}

// validityProperties are a client's lifetimes as WSO2's additionalProperties.
func validityProperties(v keymgr.TokenValidity) map[string]any {
	secs := func(d time.Duration) string { return strconv.FormatInt(int64(d/time.Second), 10) }
	return map[string]any{
		propAppAccessExpiry:  secs(v.ApplicationAccessToken),
		propUserAccessExpiry: secs(v.UserAccessToken),
		propRefreshExpiry:    secs(v.RefreshToken),
	}
}

// clientKeys is the ClientKeys of the portal's registrar, if it has one;
// otherwise it answers 501 and returns nil.
func (p *Portal) clientKeys(w http.ResponseWriter) ClientKeys {
	ck, ok := p.clients.(ClientKeys)
	if !ok {
		writeError(w, http.StatusNotImplemented, "OAuth keys cannot be changed on this server")
		return nil
	}
	return ck
}

// keyUpdateRequest is WSO2's ApplicationKeyDTO as PUT .../oauth-keys/{keyMappingId}
// takes it: clients send back the DTO they got, so its read-only fields are
// accepted, and must match when given.
type keyUpdateRequest struct {
	KeyMappingID         string         `json:"keyMappingId"`
	KeyManager           string         `json:"keyManager"`
	ConsumerKey          string         `json:"consumerKey"`
	ConsumerSecret       string         `json:"consumerSecret"`
	SupportedGrantTypes  []string       `json:"supportedGrantTypes"`
	CallbackURL          *string        `json:"callbackUrl"`
	KeyState             string         `json:"keyState"`
	KeyType              string         `json:"keyType"`
	Mode                 string         `json:"mode"`
	GroupID              *string        `json:"groupId"`
	Token                any            `json:"token"`
	AdditionalProperties map[string]any `json:"additionalProperties"`
}

// updateOAuthKeys is PUT /applications/{applicationId}/oauth-keys/{keyMappingId}:
// it replaces the client's grant types (when supportedGrantTypes is sent)
// and token lifetimes (when additionalProperties is sent; an expiry it
// lacks, or "N/A", is the default).
func (p *Portal) updateOAuthKeys(w http.ResponseWriter, r *http.Request) {
	var in keyUpdateRequest
	if !p.decodeJSON(w, r, &in) {
		return
	}
	appID, kmID := chi.URLParam(r, "applicationId"), chi.URLParam(r, "keyMappingId")
	var problems []string
	if in.KeyMappingID != "" && in.KeyMappingID != kmID {
		problems = append(problems, "keyMappingId "+in.KeyMappingID+" is not the one in the path")
	}
	if in.ConsumerSecret != "" {
		problems = append(problems, "consumerSecret cannot be set; use regenerate-secret")
	}
	for _, g := range in.SupportedGrantTypes {
		if !grantTypes[g] {
			problems = append(problems, "supportedGrantTypes "+g+" is not a supported grant type")
		}
	}
	var validity *keymgr.TokenValidity
	if in.AdditionalProperties != nil {
		v, ps := keyValidity(nil, in.AdditionalProperties)
		problems = append(problems, ps...)
		validity = &v
	}
	if len(problems) > 0 {
		badRequest(w, problems)
		return
	}
	ck := p.clientKeys(w)
	if ck == nil {
		return
	}
	km, err := p.store.WithKeyMapping(r.Context(), appID, kmID, subject(r), func(ctx context.Context, tx pgx.Tx, km *model.KeyMapping) error {
		var ps []string
		if in.ConsumerKey != "" && in.ConsumerKey != km.ConsumerKey {
			ps = append(ps, "consumerKey is not the key mapping's; it cannot be changed")
		}
		if in.KeyType != "" && in.KeyType != km.KeyType {
			ps = append(ps, "keyType is "+km.KeyType+"; it cannot be changed")
		}
		if len(ps) > 0 {
			return &store.Error{Kind: store.ErrInvalid, Message: strings.Join(ps, "; ")}
		}
		return errKeymgr(ck.UpdateClient(ctx, tx, km.ConsumerKey, in.SupportedGrantTypes, in.CallbackURL, validity))
	})
	if err != nil {
		p.fail(w, r, err)
		return
	}
	p.writeKeys(w, r, km)
}

// getOAuthKeys is GET /applications/{applicationId}/oauth-keys/{keyMappingId}:
// the key mapping's ApplicationKeyDTO, without secret.
func (p *Portal) getOAuthKeys(w http.ResponseWriter, r *http.Request) {
	kmID := chi.URLParam(r, "keyMappingId")
	kms, err := p.store.ListKeyMappings(r.Context(), chi.URLParam(r, "applicationId"), subject(r))
	if err != nil {
		p.fail(w, r, err)
		return
	}
	i := slices.IndexFunc(kms, func(km model.KeyMapping) bool { return km.ID == kmID })
	if i < 0 {
		p.fail(w, r, &store.Error{Kind: store.ErrNotFound, Message: "key mapping " + kmID + " not found"})
		return
	}
	p.writeKeys(w, r, &kms[i])
}

// listOAuthKeys is GET /applications/{applicationId}/oauth-keys (and
// WSO2's older /keys, which apictl calls): every key mapping of the
// application, without secrets.
func (p *Portal) listOAuthKeys(w http.ResponseWriter, r *http.Request) {
	kms, err := p.store.ListKeyMappings(r.Context(), chi.URLParam(r, "applicationId"), subject(r))
	if err != nil {
		p.fail(w, r, err)
		return
	}
	out := make([]applicationKeyDTO, 0, len(kms))
	for i := range kms {
		d, err := p.keysDTO(r.Context(), &kms[i])
		if err != nil {
			p.fail(w, r, err)
			return
		}
		out = append(out, d)
	}
	writeJSON(w, http.StatusOK, newList(out))
}

// writeKeys answers with a key mapping's ApplicationKeyDTO, without secret.
func (p *Portal) writeKeys(w http.ResponseWriter, r *http.Request, km *model.KeyMapping) {
	d, err := p.keysDTO(r.Context(), km)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// keysDTO is a key mapping's ApplicationKeyDTO, without secret: for keys
// of the resident key manager, with the client's grant types, callback
// and token lifetimes.
func (p *Portal) keysDTO(ctx context.Context, km *model.KeyMapping) (applicationKeyDTO, error) {
	if km.KeyManagerID != "" {
		return mappedKeyDTO(km), nil
	}
	out := mappedKeyDTO(km)
	out.Mode = "CREATED"
	ck, ok := p.clients.(ClientKeys)
	if !ok { // a registrar that cannot say more
		return out, nil
	}
	info, err := ck.ClientInfo(ctx, km.ConsumerKey)
	if err != nil {
		return applicationKeyDTO{}, errKeymgr(err)
	}
	out.SupportedGrantTypes, out.AdditionalProperties = nonNilStrings(info.GrantTypes), validityProperties(info.Validity)
	if info.Callback != "" {
		out.CallbackURL = &info.Callback
	}
	return out, nil
}

// consumerSecretDTO is WSO2's ConsumerSecretDTO.
type consumerSecretDTO struct {
	ConsumerSecret string `json:"consumerSecret"`
}

// regenerateSecret is POST /applications/{applicationId}/oauth-keys/{keyMappingId}/regenerate-secret:
// a new consumer secret, shown this once; the old one stops working, and
// every token the client was issued before is revoked, at the key manager
// and (by an event) at every gateway.
func (p *Portal) regenerateSecret(w http.ResponseWriter, r *http.Request) {
	ck := p.clientKeys(w)
	if ck == nil {
		return
	}
	appID, kmID := chi.URLParam(r, "applicationId"), chi.URLParam(r, "keyMappingId")
	var secret string
	km, err := p.store.WithKeyMapping(r.Context(), appID, kmID, subject(r), func(ctx context.Context, tx pgx.Tx, km *model.KeyMapping) error {
		var err error
		secret, err = ck.RegenerateSecret(ctx, tx, km.ConsumerKey)
		return errKeymgr(err)
	})
	if err != nil {
		p.fail(w, r, err)
		return
	}
	p.log.Info().Str("application_id", appID).Str("key_mapping_id", km.ID).Str("client_id", km.ConsumerKey).
		Msg("consumer secret regenerated; the client's earlier tokens are revoked")
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, consumerSecretDTO{ConsumerSecret: secret})
}

// errKeymgr maps the key manager's client errors to store errors, so that
// fail answers them with the right status.
func errKeymgr(err error) error {
	switch {
	case errors.Is(err, keymgr.ErrClientNotFound):
		return &store.Error{Kind: store.ErrNotFound, Message: "the key mapping's OAuth client does not exist"}
	case errors.Is(err, keymgr.ErrValidity), errors.Is(err, keymgr.ErrGrantTypes), errors.Is(err, keymgr.ErrRedirectURI):
		return &store.Error{Kind: store.ErrInvalid, Message: err.Error()}
	}
	return err
}

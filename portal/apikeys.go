package portal

import (
	"errors"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/apim-dev/apim/internal/model"
	"github.com/apim-dev/apim/keymgr"
)

// apiKeyGenerateRequest is WSO2's APIKeyGenerateRequestDTO.
type apiKeyGenerateRequest struct {
	// ValidityPeriod is in seconds; -1 (WSO2's "never") or absent is the
	// longest validity, keymgr.MaxAPIKeyValidity.
	ValidityPeriod       *int64              `json:"validityPeriod"`
	AdditionalProperties *apiKeyRestrictions `json:"additionalProperties"`
}

type apiKeyRestrictions struct {
	PermittedIP      string `json:"permittedIP"`
	PermittedReferer string `json:"permittedReferer"`
}

// apiKeyDTO is WSO2's APIKeyDTO.
type apiKeyDTO struct {
	APIKey       string `json:"apikey"`
	ValidityTime int64  `json:"validityTime"`
}

type apiKeyRevokeRequest struct {
	APIKey string `json:"apikey"`
}

// apiKeyRequest reads the path's key type and the caller's application;
// another user's application answers 404, as a missing one does.
func (p *Portal) apiKeyRequest(w http.ResponseWriter, r *http.Request) (keyType string, app *model.Application, ok bool) {
	if p.apiKeys == nil {
		writeError(w, http.StatusNotImplemented, "API keys are not available on this server")
		return "", nil, false
	}
	keyType = strings.ToUpper(chi.URLParam(r, "keyType"))
	if keyType != model.KeyTypeProduction && keyType != model.KeyTypeSandbox {
		badRequest(w, []string{"keyType must be PRODUCTION or SANDBOX"})
		return "", nil, false
	}
	a, err := p.store.GetApplication(r.Context(), chi.URLParam(r, "applicationId"), subject(r))
	if err != nil {
		p.fail(w, r, err)
		return "", nil, false
	}
	return keyType, &a.Application, true
}

func (p *Portal) generateAPIKey(w http.ResponseWriter, r *http.Request) {
	var in apiKeyGenerateRequest
	// WSO2 lets the body be empty: every field has a default.
	if r.ContentLength != 0 && !p.decodeJSON(w, r, &in) {
		return
	}
	var problems []string
	validity := keymgr.MaxAPIKeyValidity
	if v := in.ValidityPeriod; v != nil && *v != -1 {
		if *v <= 0 || time.Duration(*v) > keymgr.MaxAPIKeyValidity/time.Second {
			problems = append(problems, "validityPeriod must be -1 or from 1 to "+
				strconv.FormatInt(int64(keymgr.MaxAPIKeyValidity/time.Second), 10)+" seconds")
		} else {
			validity = time.Duration(*v) * time.Second
		}
	}
	var restrict apiKeyRestrictions
	if in.AdditionalProperties != nil {
		restrict = *in.AdditionalProperties
	}
	ips, err := normalizePermittedIPs(restrict.PermittedIP)
	if err != nil {
		problems = append(problems, "additionalProperties.permittedIP "+err.Error())
	}
	referers, err := normalizeList(restrict.PermittedReferer)
	if err != nil {
		problems = append(problems, "additionalProperties.permittedReferer "+err.Error())
	}
	if len(problems) > 0 {
		badRequest(w, problems)
		return
	}
	keyType, app, ok := p.apiKeyRequest(w, r)
	if !ok {
		return
	}
	key, _, err := p.apiKeys.SignAPIKey(r.Context(), keymgr.APIKeyClaims{
		Subject: app.Owner, KeyType: keyType, Validity: validity,
		Application:      keymgr.APIKeyApplication{ID: app.ID, Name: app.Name, Owner: app.Owner, Tier: app.ThrottlingPolicy},
		PermittedIP:      ips,
		PermittedReferer: referers,
	})
	if err != nil {
		p.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	// The validity granted, in seconds, as WSO2 answers; not the time left,
	// which rounds to nothing for a one-second key on a busy machine.
	writeJSON(w, http.StatusOK, apiKeyDTO{APIKey: key, ValidityTime: int64(validity / time.Second)})
}

func (p *Portal) revokeAPIKey(w http.ResponseWriter, r *http.Request) {
	var in apiKeyRevokeRequest
	if !p.decodeJSON(w, r, &in) {
		return
	}
	if strings.TrimSpace(in.APIKey) == "" {
		badRequest(w, []string{"apikey is required"})
		return
	}
	keyType, app, ok := p.apiKeyRequest(w, r)
	if !ok {
		return
	}
	err := p.apiKeys.RevokeAPIKey(r.Context(), strings.TrimSpace(in.APIKey), app.ID, keyType)
	switch {
	case errors.Is(err, keymgr.ErrNotAPIKey):
		badRequest(w, []string{"apikey is not a valid " + keyType + " API key of this application"})
	case err != nil:
		p.fail(w, r, err)
	default:
		w.WriteHeader(http.StatusOK)
	}
}

// normalizePermittedIPs checks a comma-separated list of IP addresses and
// CIDR ranges and returns it without blanks.
func normalizePermittedIPs(list string) (string, error) {
	items, err := normalizeList(list)
	if err != nil || items == "" {
		return items, err
	}
	for _, it := range strings.Split(items, ",") {
		if strings.Contains(it, "/") {
			if _, err := netip.ParsePrefix(it); err != nil {
				return "", errors.New("has an invalid CIDR range " + strconv.Quote(it))
			}
		} else if _, err := netip.ParseAddr(it); err != nil {
			return "", errors.New("has an invalid IP address " + strconv.Quote(it))
		}
	}
	return items, nil
}

// normalizeList trims the items of a comma-separated list and drops empty ones.
func normalizeList(list string) (string, error) {
	var out []string
	for _, it := range strings.Split(list, ",") {
		it = strings.TrimSpace(it)
		if it == "" {
			continue
		}
		if strings.ContainsFunc(it, func(r rune) bool { return r < ' ' || r == 0x7f || r == ' ' }) {
			return "", errors.New("has an invalid item " + strconv.Quote(it))
		}
		out = append(out, it)
	}
	return strings.Join(out, ","), nil
}

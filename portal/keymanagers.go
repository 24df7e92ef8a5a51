package portal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-chi/chi/v5"

	"github.com/apim-dev/apim/internal/model"
	"github.com/apim-dev/apim/internal/store"
)

// scopesKeyManagers guard the admin API's key-manager routes, reads and
// writes alike, as WSO2's admin-api.yaml: apim:admin_operations ("Manage
// API categories and Key Managers related operations"), its 4.2 successor
// apim:keymanagers_manage, and apim:admin.
var scopesKeyManagers = []string{"apim:admin", "apim:admin_operations", "apim:keymanagers_manage"}

// wellKnownSuffix ends every discovery URL this server resolves: go-oidc
// derives the document's URL from the issuer.
const wellKnownSuffix = "/.well-known/openid-configuration"

// Bounds of a discovery fetch.
const (
	discoveryTimeout  = 10 * time.Second
	maxDiscoveryBytes = 1 << 20
)

func (p *Portal) keyManagerRoutes(r chi.Router) {
	km := r.With(p.authorize(scopesKeyManagers...))
	km.Post("/key-managers", p.createKeyManager)
	km.Get("/key-managers", p.listKeyManagers)
	km.Get("/key-managers/{keyManagerId}", p.getKeyManager)
	km.Put("/key-managers/{keyManagerId}", p.updateKeyManager)
	km.Delete("/key-managers/{keyManagerId}", p.deleteKeyManager)
}

// keyManagerDTO is WSO2's KeyManager (admin API v4): the fields this server
// keeps. certificates is a JWKS URL; the endpoints are shown, filled from
// the discovery document when not given.
type keyManagerDTO struct {
	ID                         string            `json:"id,omitempty"`
	Name                       string            `json:"name"`
	DisplayName                string            `json:"displayName,omitempty"`
	Type                       string            `json:"type"`
	Description                string            `json:"description,omitempty"`
	Enabled                    *bool             `json:"enabled,omitempty"`
	Issuer                     string            `json:"issuer,omitempty"`
	WellKnownEndpoint          string            `json:"wellKnownEndpoint,omitempty"`
	Certificates               *certificatesDTO  `json:"certificates,omitempty"`
	ClaimMapping               []claimMappingDTO `json:"claimMapping,omitempty"`
	ConsumerKeyClaim           string            `json:"consumerKeyClaim,omitempty"`
	ScopesClaim                string            `json:"scopesClaim,omitempty"`
	EnableMapOAuthConsumerApps *bool             `json:"enableMapOAuthConsumerApps,omitempty"`
	EnableOAuthAppCreation     *bool             `json:"enableOAuthAppCreation,omitempty"`
	EnableSelfValidationJWT    *bool             `json:"enableSelfValidationJWT,omitempty"`
	TokenType                  string            `json:"tokenType,omitempty"`
	TokenEndpoint              string            `json:"tokenEndpoint,omitempty"`
	RevokeEndpoint             string            `json:"revokeEndpoint,omitempty"`
	IntrospectionEndpoint      string            `json:"introspectionEndpoint,omitempty"`
	UserInfoEndpoint           string            `json:"userInfoEndpoint,omitempty"`
	AuthorizeEndpoint          string            `json:"authorizeEndpoint,omitempty"`
	ClientRegistrationEndpoint string            `json:"clientRegistrationEndpoint,omitempty"`
}

type certificatesDTO struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

type claimMappingDTO struct {
	RemoteClaim string `json:"remoteClaim"`
	LocalClaim  string `json:"localClaim"`
}

// keyManagerInfoDTO is WSO2's KeyManagerInfo, a list entry.
type keyManagerInfoDTO struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Type        string `json:"type"`
	DisplayName string `json:"displayName,omitempty"`
	Description string `json:"description,omitempty"`
	Enabled     bool   `json:"enabled"`
	TokenType   string `json:"tokenType"`
}

// The endpoints of a KeyManager, by the discovery document's names.
var endpointFields = []struct {
	discovery string
	get       func(*keyManagerDTO) *string
}{
	{"token_endpoint", func(d *keyManagerDTO) *string { return &d.TokenEndpoint }},
	{"revocation_endpoint", func(d *keyManagerDTO) *string { return &d.RevokeEndpoint }},
	{"introspection_endpoint", func(d *keyManagerDTO) *string { return &d.IntrospectionEndpoint }},
	{"userinfo_endpoint", func(d *keyManagerDTO) *string { return &d.UserInfoEndpoint }},
	{"authorization_endpoint", func(d *keyManagerDTO) *string { return &d.AuthorizeEndpoint }},
	{"registration_endpoint", func(d *keyManagerDTO) *string { return &d.ClientRegistrationEndpoint }},
}

// tokenTypeDirect is WSO2's tokenType of a key manager whose tokens the
// gateway takes as they are (no token exchange): the only one here.
const tokenTypeDirect = "DIRECT"

func toKeyManagerDTO(km *model.KeyManager) keyManagerDTO {
	on, mapping, no, yes := km.Enabled, km.MapConsumerApps, false, true
	d := keyManagerDTO{
		ID: km.ID, Name: km.Name, DisplayName: km.DisplayName, Type: km.Type, Description: km.Description,
		Enabled: &on, Issuer: km.Issuer, WellKnownEndpoint: km.WellKnownEndpoint,
		Certificates:     &certificatesDTO{Type: model.CertificatesJWKS, Value: km.JWKSURI},
		ConsumerKeyClaim: km.ConsumerKeyClaim, ScopesClaim: km.ScopesClaim,
		EnableMapOAuthConsumerApps: &mapping, EnableOAuthAppCreation: &no, EnableSelfValidationJWT: &yes,
		TokenType: tokenTypeDirect, ClaimMapping: []claimMappingDTO{},
	}
	for _, m := range km.ClaimMapping {
		d.ClaimMapping = append(d.ClaimMapping, claimMappingDTO{RemoteClaim: m.Remote, LocalClaim: m.Local})
	}
	for _, f := range endpointFields {
		*f.get(&d) = km.Endpoints[f.discovery]
	}
	return d
}

// fromKeyManagerDTO checks the DTO's shape, resolves its discovery
// document and builds the key manager; model.KeyManager.Validate then
// checks the values. Every problem names its field.
func (p *Portal) fromKeyManagerDTO(ctx context.Context, in *keyManagerDTO) (model.KeyManager, []string) {
	var problems []string
	km := model.KeyManager{
		Name: in.Name, DisplayName: in.DisplayName, Type: in.Type, Description: in.Description,
		Enabled: in.Enabled == nil || *in.Enabled, Issuer: in.Issuer, WellKnownEndpoint: in.WellKnownEndpoint,
		ConsumerKeyClaim: in.ConsumerKeyClaim, ScopesClaim: in.ScopesClaim,
		// WSO2's default is false; here mapping is the only way to use an
		// external key manager, so it is on unless switched off.
		MapConsumerApps: in.EnableMapOAuthConsumerApps == nil || *in.EnableMapOAuthConsumerApps,
		Endpoints:       map[string]string{},
	}
	if in.ID != "" {
		problems = append(problems, "id is read-only")
	}
	if in.EnableOAuthAppCreation != nil && *in.EnableOAuthAppCreation {
		problems = append(problems, "enableOAuthAppCreation must be false: this server cannot create clients at an external key manager; map them with map-keys")
	}
	if in.EnableSelfValidationJWT != nil && !*in.EnableSelfValidationJWT {
		problems = append(problems, "enableSelfValidationJWT must be true: the gateways verify the key manager's JWTs with its JWKS (introspection is not supported)")
	}
	if in.TokenType != "" && in.TokenType != tokenTypeDirect {
		problems = append(problems, "tokenType must be DIRECT: token exchange is not supported")
	}
	if c := in.Certificates; c != nil {
		switch {
		case c.Type != model.CertificatesJWKS:
			problems = append(problems, "certificates.type must be JWKS")
		case c.Value == "":
			problems = append(problems, "certificates.value is required")
		default:
			km.JWKSURI = c.Value
		}
	}
	for _, m := range in.ClaimMapping {
		km.ClaimMapping = append(km.ClaimMapping, model.ClaimMapping{Remote: m.RemoteClaim, Local: m.LocalClaim})
	}
	for _, f := range endpointFields {
		if v := *f.get(in); v != "" {
			if err := model.ValidateFetchURL(v); err != nil {
				problems = append(problems, jsonName(f.discovery)+" "+err.Error())
			}
			km.Endpoints[f.discovery] = v
		}
	}
	if len(problems) > 0 {
		return km, problems
	}
	if in.WellKnownEndpoint != "" {
		problems = append(problems, p.applyDiscovery(ctx, &km)...)
	} else if km.Issuer == "" || km.JWKSURI == "" {
		problems = append(problems, "wellKnownEndpoint is required unless issuer and certificates are given")
	}
	if len(problems) == 0 {
		if err := km.Validate(); err != nil {
			problems = append(problems, strings.Split(err.Error(), "\n")...)
		}
	}
	return km, problems
}

// jsonName is the KeyManager field of a discovery endpoint name.
func jsonName(discovery string) string {
	switch discovery {
	case "token_endpoint":
		return "tokenEndpoint"
	case "revocation_endpoint":
		return "revokeEndpoint"
	case "introspection_endpoint":
		return "introspectionEndpoint"
	case "userinfo_endpoint":
		return "userInfoEndpoint"
	case "authorization_endpoint":
		return "authorizeEndpoint"
	}
	return "clientRegistrationEndpoint"
}

// discoveryDoc is what this server reads from an OIDC discovery document.
type discoveryDoc struct {
	Issuer  string `json:"issuer"`
	JWKSURI string `json:"jwks_uri"`
}

// applyDiscovery resolves km.WellKnownEndpoint with go-oidc and fills the
// issuer, the JWKS URL and the endpoints not given. The document's issuer
// must be the URL it was fetched under, less the well-known suffix (OIDC
// Discovery 4.3), and equal the issuer given, if any.
func (p *Portal) applyDiscovery(ctx context.Context, km *model.KeyManager) []string {
	const field = "wellKnownEndpoint"
	wk := km.WellKnownEndpoint
	if err := model.ValidateFetchURL(wk); err != nil {
		return []string{field + " " + err.Error()}
	}
	base, ok := strings.CutSuffix(wk, wellKnownSuffix)
	if !ok {
		return []string{field + " must end with " + wellKnownSuffix}
	}
	ctx, cancel := context.WithTimeout(ctx, discoveryTimeout)
	defer cancel()
	client := providerClient()
	// The issuer check is below, tolerant of a trailing slash either side;
	// go-oidc's own is exact.
	prov, err := oidc.NewProvider(oidc.InsecureIssuerURLContext(oidc.ClientContext(ctx, client), base), base)
	if err != nil {
		p.log.Info().Err(err).Str("url", wk).Msg("key manager discovery failed")
		return []string{fmt.Sprintf("%s %s could not be resolved: %s", field, wk, discoveryError(err))}
	}
	var doc discoveryDoc
	if err := prov.Claims(&doc); err != nil {
		return []string{fmt.Sprintf("%s %s is not a discovery document: %v", field, wk, err)}
	}
	var all map[string]any
	_ = prov.Claims(&all) // decoded above already
	endpoints := map[string]string{}
	for k, v := range all {
		if s, ok := v.(string); ok {
			endpoints[k] = s
		}
	}
	var problems []string
	switch {
	case doc.Issuer == "":
		problems = append(problems, fmt.Sprintf("%s %s names no issuer", field, wk))
	case strings.TrimSuffix(doc.Issuer, "/") != strings.TrimSuffix(base, "/"):
		problems = append(problems, fmt.Sprintf("%s %s names issuer %s, which does not match its URL", field, wk, doc.Issuer))
	case km.Issuer != "" && km.Issuer != doc.Issuer:
		problems = append(problems, fmt.Sprintf("issuer %s differs from %s, the issuer of the discovery document", km.Issuer, doc.Issuer))
	}
	if doc.JWKSURI == "" && km.JWKSURI == "" {
		problems = append(problems, fmt.Sprintf("%s %s names no jwks_uri; give certificates", field, wk))
	}
	if len(problems) > 0 {
		return problems
	}
	km.Issuer = doc.Issuer
	if km.JWKSURI == "" {
		km.JWKSURI = doc.JWKSURI
	}
	for _, f := range endpointFields {
		if _, given := km.Endpoints[f.discovery]; !given && model.ValidateFetchURL(endpoints[f.discovery]) == nil {
			km.Endpoints[f.discovery] = endpoints[f.discovery]
		}
	}
	return nil
}

var errRedirect = errors.New("redirects are not followed")

// providerClient calls an external key manager's endpoints: bounded in time
// and size, and without redirects, which would lead the control plane to a
// URL the admin did not give and ValidateFetchURL did not see.
func providerClient() *http.Client {
	return &http.Client{
		Timeout: discoveryTimeout, Transport: limitedTransport{http.DefaultTransport, maxDiscoveryBytes},
		CheckRedirect: func(*http.Request, []*http.Request) error { return errRedirect },
	}
}

// discoveryError says why a discovery failed in a line fit for the
// caller: the network error or the provider's status, never a body (go-oidc
// reports a non-200 answer as "<status>: <body>").
func discoveryError(err error) string {
	msg := err.Error()
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "no answer within " + discoveryTimeout.String()
	case errors.Is(err, errRedirect):
		return "it answered with a redirect, which is not followed"
	}
	if len(msg) > 3 && msg[0] >= '1' && msg[0] <= '5' && msg[1] >= '0' && msg[1] <= '9' && msg[2] >= '0' && msg[2] <= '9' {
		msg, _, _ = strings.Cut(msg, ": ")
		return "it answered " + msg
	}
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	return msg
}

// limitedTransport cuts response bodies at n bytes.
type limitedTransport struct {
	rt http.RoundTripper
	n  int64
}

func (t limitedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.LimitReader(resp.Body, t.n), resp.Body}
	return resp, nil
}

func (p *Portal) createKeyManager(w http.ResponseWriter, r *http.Request) {
	var in keyManagerDTO
	if !p.decodeJSON(w, r, &in) {
		return
	}
	km, problems := p.fromKeyManagerDTO(r.Context(), &in)
	if len(problems) > 0 {
		badRequest(w, problems)
		return
	}
	created, err := p.store.CreateKeyManager(r.Context(), km)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	w.Header().Set("Location", AdminBase+"/key-managers/"+created.ID)
	writeJSON(w, http.StatusCreated, toKeyManagerDTO(created))
}

func (p *Portal) updateKeyManager(w http.ResponseWriter, r *http.Request) {
	var in keyManagerDTO
	if !p.decodeJSON(w, r, &in) {
		return
	}
	id := chi.URLParam(r, "keyManagerId")
	// WSO2 clients send back the body they got, id included.
	if in.ID == id {
		in.ID = ""
	}
	// Look it up first: a missing key manager is a 404 before its
	// discovery document costs a fetch.
	if _, err := p.store.GetKeyManager(r.Context(), id); err != nil {
		p.fail(w, r, err)
		return
	}
	km, problems := p.fromKeyManagerDTO(r.Context(), &in)
	if len(problems) > 0 {
		badRequest(w, problems)
		return
	}
	updated, err := p.store.UpdateKeyManager(r.Context(), id, km)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toKeyManagerDTO(updated))
}

func (p *Portal) getKeyManager(w http.ResponseWriter, r *http.Request) {
	km, err := p.store.GetKeyManager(r.Context(), chi.URLParam(r, "keyManagerId"))
	if err != nil {
		p.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toKeyManagerDTO(km))
}

func (p *Portal) listKeyManagers(w http.ResponseWriter, r *http.Request) {
	kms, err := p.store.ListKeyManagers(r.Context())
	if err != nil {
		p.fail(w, r, err)
		return
	}
	out := make([]keyManagerInfoDTO, 0, len(kms))
	for _, km := range kms {
		out = append(out, keyManagerInfoDTO{
			ID: km.ID, Name: km.Name, Type: km.Type, DisplayName: km.DisplayName, Description: km.Description,
			Enabled: km.Enabled, TokenType: tokenTypeDirect,
		})
	}
	writeJSON(w, http.StatusOK, newList(out))
}

func (p *Portal) deleteKeyManager(w http.ResponseWriter, r *http.Request) {
	if err := p.store.DeleteKeyManager(r.Context(), chi.URLParam(r, "keyManagerId")); err != nil {
		p.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// keyMappingRequest is WSO2's ApplicationKeyMappingRequest (map-keys).
type keyMappingRequest struct {
	ConsumerKey    string `json:"consumerKey"`
	ConsumerSecret string `json:"consumerSecret"`
	KeyType        string `json:"keyType"`
	KeyManager     string `json:"keyManager"`
}

// mapKeys maps a client of an external key manager to the application.
func (p *Portal) mapKeys(w http.ResponseWriter, r *http.Request) {
	var in keyMappingRequest
	if !p.decodeJSON(w, r, &in) {
		return
	}
	var problems []string
	if strings.TrimSpace(in.ConsumerKey) == "" {
		problems = append(problems, "consumerKey is required")
	} else if in.ConsumerKey != strings.TrimSpace(in.ConsumerKey) || len(in.ConsumerKey) > 255 {
		problems = append(problems, "consumerKey must be at most 255 characters without surrounding spaces")
	}
	switch in.KeyType {
	case "":
		problems = append(problems, "keyType is required")
	case model.KeyTypeProduction, model.KeyTypeSandbox:
	default:
		problems = append(problems, "keyType must be PRODUCTION or SANDBOX")
	}
	switch in.KeyManager {
	case "":
		problems = append(problems, "keyManager is required")
	case store.ResidentKeyManager, "Default":
		problems = append(problems, "keyManager "+in.KeyManager+" cannot map clients: use generate-keys")
	}
	if len(problems) > 0 {
		badRequest(w, problems)
		return
	}
	// The caller must hold the client's secret: the first application to
	// map a client id owns it, so anyone else's id must not be claimable.
	// Checked once the application is known to be the caller's, so that
	// nobody else's call reaches the provider.
	if _, err := p.store.GetApplication(r.Context(), chi.URLParam(r, "applicationId"), subject(r)); err != nil {
		p.fail(w, r, err)
		return
	}
	if ext, err := p.store.GetKeyManager(r.Context(), in.KeyManager); err == nil && ext.Enabled && ext.MapConsumerApps {
		if problems := p.proveClient(r.Context(), ext, in.ConsumerKey, in.ConsumerSecret); len(problems) > 0 {
			badRequest(w, problems)
			return
		}
	} // else MapKeys names the problem with the key manager
	km, err := p.store.MapKeys(r.Context(), chi.URLParam(r, "applicationId"), subject(r), in.KeyType, in.KeyManager, in.ConsumerKey, in.ConsumerSecret)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store") // it echoes the secret
	out := mappedKeyDTO(km)
	out.ConsumerSecret = in.ConsumerSecret
	writeJSON(w, http.StatusOK, out)
}

// mappedKeyDTO is the ApplicationKeyDTO of keys mapped from an external key
// manager: what apim knows of them, no grant types.
func mappedKeyDTO(km *model.KeyMapping) applicationKeyDTO {
	return applicationKeyDTO{
		KeyMappingID: km.ID, KeyManager: km.KeyManager, ConsumerKey: km.ConsumerKey,
		SupportedGrantTypes: []string{}, KeyState: "COMPLETED", KeyType: km.KeyType, Mode: "MAPPED",
	}
}

// proveClient checks, as WSO2 does with its key managers, that secret
// authenticates clientID at the external key manager: a client_credentials
// request to its token endpoint. Any answer but invalid_client (the client
// is not allowed that grant or scope, say) means the provider authenticated
// the client. Nothing of the answer is kept or shown.
func (p *Portal) proveClient(ctx context.Context, km *model.KeyManager, clientID, secret string) []string {
	tokenURL := km.Endpoints["token_endpoint"]
	switch {
	case secret == "":
		return []string{"consumerSecret is required: key manager " + km.Name + " checks it"}
	case model.ValidateFetchURL(tokenURL) != nil:
		return []string{"keyManager " + km.Name + " names no token_endpoint to check the client with"}
	}
	ctx, cancel := context.WithTimeout(ctx, discoveryTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, strings.NewReader("grant_type=client_credentials"))
	if err != nil {
		return []string{"keyManager " + km.Name + " names no token_endpoint to check the client with"}
	}
	req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret)) // RFC 6749 2.3.1
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := providerClient().Do(req)
	if err != nil {
		p.log.Info().Err(err).Str("key_manager", km.Name).Msg("map-keys: the token endpoint did not answer")
		return []string{"consumerSecret could not be checked: key manager " + km.Name + "'s token endpoint did not answer"}
	}
	defer resp.Body.Close()
	var answer struct {
		Error string `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&answer) // a 200's body is a token: not kept
	switch {
	case resp.StatusCode == http.StatusOK:
		return nil
	case resp.StatusCode == http.StatusUnauthorized || answer.Error == "invalid_client":
		return []string{"consumerSecret does not authenticate consumerKey at key manager " + km.Name}
	case resp.StatusCode == http.StatusBadRequest && answer.Error != "":
		return nil // authenticated, but not allowed this grant or scope
	}
	return []string{"consumerSecret could not be checked: key manager " + km.Name + "'s token endpoint answered " + resp.Status}
}

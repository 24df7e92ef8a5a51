package portal

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5"

	"github.com/apim-dev/apim/internal/model"
	"github.com/apim-dev/apim/internal/store"
	"github.com/apim-dev/apim/keymgr"
)

// Devportal scopes. Browsing published APIs needs no token, as in WSO2; a
// token, when sent, must be valid and grant apim:subscribe or apim:api_view.
var (
	scopesDevAPIs = []string{"apim:subscribe", "apim:api_view"}
	scopesApps    = []string{"apim:app_manage", "apim:subscribe"}
	scopesSubs    = []string{"apim:sub_manage", "apim:subscribe"}
	// WSO2 guards API keys with apim:api_key; apim:app_manage and
	// apim:subscribe, which already manage the application's keys, do too.
	scopesAPIKeys = []string{"apim:api_key", "apim:app_manage", "apim:subscribe"}
)

// visible are the states the devportal shows.
var visible = []model.LifecycleStatus{model.StatusPublished, model.StatusPrototyped}

func (p *Portal) devportalRoutes(r chi.Router) {
	r.Get("/openapi.yaml", serveDoc(devportalDoc))
	r.With(p.authn(true, scopesDevAPIs)).Get("/apis", p.devListAPIs)
	r.With(p.authn(true, scopesDevAPIs)).Get("/apis/{apiId}", p.devGetAPI)
	r.With(p.authn(true, scopesDevAPIs)).Get("/apis/{apiId}/swagger", p.devGetSwagger) // definitions.go
	r.With(p.authn(true, scopesDevAPIs)).Get("/search", p.search(DevportalBase, true)) // search.go
	p.devPolicyRoutes(r)                                                               // devpolicies.go
	r.With(p.authorize(scopesApps...)).Post("/applications", p.createApplication)
	r.With(p.authorize(scopesApps...)).Get("/applications", p.listApplications)
	r.With(p.authorize(scopesApps...)).Get("/applications/{applicationId}", p.getApplication)
	r.With(p.authorize(scopesApps...)).Put("/applications/{applicationId}", p.updateApplication)
	r.With(p.authorize(scopesApps...)).Delete("/applications/{applicationId}", p.deleteApplication)
	r.With(p.authorize(scopesApps...)).Post("/applications/{applicationId}/generate-keys", p.generateKeys)
	r.With(p.authorize(scopesApps...)).Post("/applications/{applicationId}/map-keys", p.mapKeys) // keymanagers.go
	r.With(p.authorize(scopesApps...)).Get("/applications/{applicationId}/oauth-keys", p.listOAuthKeys)
	r.With(p.authorize(scopesApps...)).Get("/applications/{applicationId}/keys", p.listOAuthKeys)
	r.With(p.authorize(scopesApps...)).Get("/applications/{applicationId}/oauth-keys/{keyMappingId}", p.getOAuthKeys)
	r.With(p.authorize(scopesApps...)).Put("/applications/{applicationId}/oauth-keys/{keyMappingId}", p.updateOAuthKeys)
	r.With(p.authorize(scopesApps...)).Post("/applications/{applicationId}/oauth-keys/{keyMappingId}/regenerate-secret", p.regenerateSecret)
	r.With(p.authorize(scopesAPIKeys...)).Post("/applications/{applicationId}/api-keys/{keyType}/generate", p.generateAPIKey)
	r.With(p.authorize(scopesAPIKeys...)).Post("/applications/{applicationId}/api-keys/{keyType}/revoke", p.revokeAPIKey)
	r.With(p.authorize(scopesSubs...)).Post("/subscriptions", p.createSubscription)
	r.With(p.authorize(scopesSubs...)).Get("/subscriptions", p.listSubscriptions)
	r.With(p.authorize(scopesSubs...)).Get("/subscriptions/{subscriptionId}", p.getSubscription)
	r.With(p.authorize(scopesSubs...)).Put("/subscriptions/{subscriptionId}", p.updateSubscription)
	r.With(p.authorize(scopesSubs...)).Delete("/subscriptions/{subscriptionId}", p.deleteSubscription)
}

// devAPIDTO is the devportal's APIDTO (and APIInfoDTO in lists).
type devAPIDTO struct {
	ID                 string   `json:"id"`
	Name               string   `json:"name"`
	Description        string   `json:"description"`
	Context            string   `json:"context"`
	Version            string   `json:"version"`
	Provider           string   `json:"provider"`
	LifeCycleStatus    string   `json:"lifeCycleStatus"`
	ThrottlingPolicies []string `json:"throttlingPolicies"`
	Tags               []string `json:"tags"`
	Transport          []string `json:"transport"`
	IsDefaultVersion   bool     `json:"isDefaultVersion"`
	// BusinessInformation and the additional properties marked display,
	// as WSO2's devportal shows them.
	BusinessInformation  *businessInfoDTO        `json:"businessInformation,omitempty"`
	AdditionalProperties []additionalPropertyDTO `json:"additionalProperties"`
}

func toDevAPIDTO(a *model.API) devAPIDTO {
	pol := a.Policies
	if pol == nil {
		pol = []string{}
	}
	d := devAPIDTO{
		ID: a.ID, Name: a.Name, Description: a.Description, Context: a.Context, Version: a.Version,
		Provider: a.Provider, LifeCycleStatus: string(a.Status), ThrottlingPolicies: pol,
		Tags: nonNilStrings(a.Tags), Transport: nonNilStrings(a.Transport), IsDefaultVersion: a.IsDefaultVersion,
		AdditionalProperties: []additionalPropertyDTO{},
	}
	d.BusinessInformation = toBusinessInfoDTO(a.BusinessInformation)
	for _, p := range a.AdditionalProperties {
		if p.Display {
			d.AdditionalProperties = append(d.AdditionalProperties, additionalPropertyDTO{Name: p.Name, Value: p.Value, Display: true})
		}
	}
	return d
}

func (p *Portal) devListAPIs(w http.ResponseWriter, r *http.Request) {
	writeAPIPage(p, w, r, DevportalBase+"/apis", true, toDevAPIDTO)
}

func (p *Portal) devGetAPI(w http.ResponseWriter, r *http.Request) {
	if api, ok := p.shownAPI(w, r); ok {
		writeJSON(w, http.StatusOK, toDevAPIDTO(api))
	}
}

// shownAPI is the API of the path's apiId when the devportal shows it to
// the caller; otherwise it writes the error and answers false.
func (p *Portal) shownAPI(w http.ResponseWriter, r *http.Request) (*model.API, bool) {
	api, err := p.store.GetAPI(r.Context(), chi.URLParam(r, "apiId"))
	if err != nil {
		p.fail(w, r, err)
		return nil, false
	}
	return api, p.shows(w, r, api)
}

// shows reports whether the devportal shows the caller api: published or
// prototyped, and visible to them. It answers 404 when not, as for an API
// that does not exist.
func (p *Portal) shows(w http.ResponseWriter, r *http.Request, api *model.API) bool {
	v, err := p.viewer(r)
	if err != nil {
		p.fail(w, r, err)
		return false
	}
	if !slices.Contains(visible, api.Status) || !v.Sees(api) {
		writeError(w, http.StatusNotFound, "api "+api.ID+" does not exist")
		return false
	}
	return true
}

// viewer is the caller as the devportal's visibility rules see them.
func (p *Portal) viewer(r *http.Request) (model.Viewer, error) {
	pr := principalFrom(r.Context())
	if pr == nil {
		return model.Viewer{}, nil
	}
	v := model.Viewer{SignedIn: true}
	if p.roles != nil {
		roles, err := p.roles.UserRoles(r.Context(), pr.Subject)
		if err != nil {
			return v, fmt.Errorf("roles of %s: %w", pr.Subject, err)
		}
		v.Roles = roles
	}
	return v, nil
}

// applicationDTO is WSO2's ApplicationDTO (devportal v3): every property
// of WSO2's definition. applicationId, status, owner, subscriptionCount,
// keys, hashEnabled, createdTime and updatedTime are server-set: accepted
// (a GET body can be sent back) and ignored.
type applicationDTO struct {
	ApplicationID    string            `json:"applicationId,omitempty"`
	Name             string            `json:"name"`
	ThrottlingPolicy string            `json:"throttlingPolicy"`
	Description      string            `json:"description"`
	TokenType        string            `json:"tokenType,omitempty"`
	Status           string            `json:"status,omitempty"`
	Groups           []string          `json:"groups"`
	Attributes       map[string]string `json:"attributes"`
	Owner            string            `json:"owner,omitempty"`
	applicationServerSetDTO
	applicationExtraDTO
}

// applicationServerSetDTO are the server-set ApplicationDTO properties
// besides id, status and owner.
type applicationServerSetDTO struct {
	SubscriptionCount int              `json:"subscriptionCount"`
	Keys              *[]appKeyInfoDTO `json:"keys,omitempty"` // one application's, not in lists
	HashEnabled       bool             `json:"hashEnabled"`
	CreatedTime       string           `json:"createdTime,omitempty"`
	UpdatedTime       string           `json:"updatedTime,omitempty"`
}

// applicationExtraDTO are the ApplicationDTO properties apim stores but
// does not act on.
type applicationExtraDTO struct {
	SubscriptionScopes *[]scopeInfoDTO `json:"subscriptionScopes,omitempty"`
}

// scopeInfoDTO is WSO2's devportal ScopeInfoDTO.
type scopeInfoDTO struct {
	Key         *string   `json:"key,omitempty"`
	Name        *string   `json:"name,omitempty"`
	Roles       *[]string `json:"roles,omitempty"`
	Description *string   `json:"description,omitempty"`
}

// appKeyInfoDTO is WSO2's ApplicationKeyDTO as an application shows its
// keys (never with a secret or token).
type appKeyInfoDTO struct {
	KeyMappingID         string          `json:"keyMappingId,omitempty"`
	KeyManager           string          `json:"keyManager,omitempty"`
	ConsumerKey          string          `json:"consumerKey,omitempty"`
	ConsumerSecret       string          `json:"consumerSecret,omitempty"`
	SupportedGrantTypes  []string        `json:"supportedGrantTypes,omitempty"`
	CallbackURL          string          `json:"callbackUrl,omitempty"`
	KeyState             string          `json:"keyState,omitempty"`
	KeyType              string          `json:"keyType,omitempty"`
	Mode                 string          `json:"mode,omitempty"`
	GroupID              string          `json:"groupId,omitempty"`
	Token                *appTokenDTO    `json:"token,omitempty"`
	AdditionalProperties json.RawMessage `json:"additionalProperties,omitempty"`
}

// appTokenDTO is WSO2's ApplicationTokenDTO.
type appTokenDTO struct {
	AccessToken  string   `json:"accessToken,omitempty"`
	TokenScopes  []string `json:"tokenScopes,omitempty"`
	ValidityTime int64    `json:"validityTime,omitempty"`
}

func toApplicationDTO(a *store.Application) applicationDTO {
	d := applicationDTO{
		ApplicationID: a.ID, Name: a.Name, ThrottlingPolicy: a.ThrottlingPolicy, Description: a.Description,
		TokenType: a.TokenType, Status: a.Status, Owner: a.Owner, Groups: nonNilStrings(a.Groups), Attributes: a.Attributes,
		applicationServerSetDTO: applicationServerSetDTO{
			SubscriptionCount: a.SubscriptionCount, CreatedTime: wso2Millis(a.CreatedAt), UpdatedTime: wso2Millis(a.UpdatedAt),
		},
	}
	if d.Attributes == nil {
		d.Attributes = map[string]string{}
	}
	decodeExtra(a.Extra, &d.applicationExtraDTO)
	return d
}

// toApplication checks an ApplicationDTO a caller sent and turns it into
// what the store writes; the server-set properties are ignored.
func (in *applicationDTO) toApplication(owner string) (store.Application, []string) {
	var problems []string
	if strings.TrimSpace(in.Name) == "" {
		problems = append(problems, "name is required")
	}
	if in.ThrottlingPolicy == "" {
		problems = append(problems, "throttlingPolicy is required")
	}
	// WSO2's tokenType: JWT (the default) or OAUTH, an opaque reference
	// token the gateways introspect.
	switch in.TokenType {
	case "", keymgr.TokenTypeJWT, keymgr.TokenTypeOAuth:
	default:
		problems = append(problems, "tokenType "+in.TokenType+" is not supported; JWT or OAUTH")
	}
	extra, err := encodeExtra(in.applicationExtraDTO)
	if err != nil {
		problems = append(problems, err.Error())
	}
	return store.Application{
		Application: model.Application{
			ID: in.ApplicationID, Name: strings.TrimSpace(in.Name), Owner: owner, ThrottlingPolicy: in.ThrottlingPolicy, TokenType: in.TokenType,
		},
		Description: in.Description, Groups: nilIfEmpty(in.Groups), Attributes: in.Attributes, Extra: extra,
	}, problems
}

func (p *Portal) createApplication(w http.ResponseWriter, r *http.Request) {
	var in applicationDTO
	if !p.decodeJSON(w, r, &in) {
		return
	}
	app, problems := in.toApplication(subject(r))
	if len(problems) > 0 {
		badRequest(w, problems)
		return
	}
	app.ID = "" // server-set
	created, err := p.store.CreateApplication(r.Context(), app)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	w.Header().Set("Location", DevportalBase+"/applications/"+created.ID)
	writeJSON(w, http.StatusCreated, toApplicationDTO(created))
}

// updateApplication is PUT /applications/{applicationId}: WSO2's update
// of an owner's application. Changing tokenType takes effect for tokens
// issued afterwards.
func (p *Portal) updateApplication(w http.ResponseWriter, r *http.Request) {
	var in applicationDTO
	if !p.decodeJSON(w, r, &in) {
		return
	}
	id := chi.URLParam(r, "applicationId")
	app, problems := in.toApplication(subject(r))
	if in.ApplicationID != "" && in.ApplicationID != id {
		problems = append(problems, "applicationId "+in.ApplicationID+" does not match the path's applicationId")
	}
	if len(problems) > 0 {
		badRequest(w, problems)
		return
	}
	app.ID = id
	updated, err := p.store.UpdateApplication(r.Context(), app)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	p.writeApplication(w, r, updated, http.StatusOK)
}

// writeApplication answers with one application, its subscription count
// and keys filled in.
func (p *Portal) writeApplication(w http.ResponseWriter, r *http.Request, app *store.Application, status int) {
	d := toApplicationDTO(app)
	keys, err := p.store.ListKeyMappings(r.Context(), app.ID, app.Owner)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	list := make([]appKeyInfoDTO, 0, len(keys))
	d.Keys = &list
	for _, k := range keys {
		mode := "CREATED"
		if k.KeyManagerID != "" {
			mode = "MAPPED"
		}
		list = append(list, appKeyInfoDTO{
			KeyMappingID: k.ID, KeyManager: k.KeyManager, ConsumerKey: k.ConsumerKey, KeyState: "COMPLETED", KeyType: k.KeyType, Mode: mode,
		})
	}
	writeJSON(w, status, d)
}

func (p *Portal) listApplications(w http.ResponseWriter, r *http.Request) {
	writeApplicationPage(p, w, r, DevportalBase+"/applications", subject(r), toApplicationDTO)
}

func (p *Portal) getApplication(w http.ResponseWriter, r *http.Request) {
	app, err := p.store.GetApplication(r.Context(), chi.URLParam(r, "applicationId"), subject(r))
	if err != nil {
		p.fail(w, r, err)
		return
	}
	p.writeApplication(w, r, app, http.StatusOK)
}

func (p *Portal) deleteApplication(w http.ResponseWriter, r *http.Request) {
	if err := p.store.DeleteApplication(r.Context(), chi.URLParam(r, "applicationId"), subject(r), p.clients.DeleteClients); err != nil {
		p.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// keyGenerateRequest is WSO2's ApplicationKeyGenerateRequestDTO.
type keyGenerateRequest struct {
	KeyType                 string   `json:"keyType"`
	KeyManager              string   `json:"keyManager"`
	GrantTypesToBeSupported []string `json:"grantTypesToBeSupported"`
	CallbackURL             string   `json:"callbackUrl"`
	Scopes                  []string `json:"scopes"`
	// ValidityTime is the client's own access tokens' lifetime in seconds,
	// a string in WSO2's schema; a number is accepted too.
	ValidityTime         any            `json:"validityTime"`
	AdditionalProperties map[string]any `json:"additionalProperties"`
}

// applicationKeyDTO is WSO2's ApplicationKeyDTO.
type applicationKeyDTO struct {
	KeyMappingID        string   `json:"keyMappingId"`
	KeyManager          string   `json:"keyManager"`
	ConsumerKey         string   `json:"consumerKey"`
	ConsumerSecret      string   `json:"consumerSecret,omitempty"`
	SupportedGrantTypes []string `json:"supportedGrantTypes"`
	CallbackURL         *string  `json:"callbackUrl"`
	KeyState            string   `json:"keyState"`
	KeyType             string   `json:"keyType"`
	Mode                string   `json:"mode"`
	Token               *string  `json:"token"`
	// AdditionalProperties carries the token lifetimes, in seconds, as
	// WSO2's application_access_token_expiry_time,
	// user_access_token_expiry_time and refresh_token_expiry_time.
	AdditionalProperties map[string]any `json:"additionalProperties,omitempty"`
}

var grantTypes = map[string]bool{
	"client_credentials": true, "password": true, "refresh_token": true, "authorization_code": true,
	"urn:ietf:params:oauth:grant-type:jwt-bearer": true, "urn:ietf:params:oauth:grant-type:device_code": true,
}

func (p *Portal) generateKeys(w http.ResponseWriter, r *http.Request) {
	var in keyGenerateRequest
	if !p.decodeJSON(w, r, &in) {
		return
	}
	var problems []string
	switch in.KeyType {
	case "":
		problems = append(problems, "keyType is required")
	case model.KeyTypeProduction, model.KeyTypeSandbox:
	default:
		problems = append(problems, "keyType must be PRODUCTION or SANDBOX")
	}
	if in.KeyManager != "" && in.KeyManager != store.ResidentKeyManager && in.KeyManager != "Default" {
		problems = append(problems, "keyManager "+in.KeyManager+" is unknown; only "+store.ResidentKeyManager)
	}
	if len(in.GrantTypesToBeSupported) == 0 {
		problems = append(problems, "grantTypesToBeSupported is required")
	}
	for _, g := range in.GrantTypesToBeSupported {
		if !grantTypes[g] {
			problems = append(problems, "grantTypesToBeSupported "+g+" is not a supported grant type")
		}
	}
	validity, ps := keyValidity(in.ValidityTime, in.AdditionalProperties)
	problems = append(problems, ps...)
	if len(problems) > 0 {
		badRequest(w, problems)
		return
	}
	// A registrar that keeps no token lifetimes (not the key manager)
	// validates them and keeps none.
	ck, _ := p.clients.(ClientKeys)
	appID, owner := chi.URLParam(r, "applicationId"), subject(r)
	app, err := p.store.GetApplication(r.Context(), appID, owner)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	register := func(ctx context.Context, tx pgx.Tx) (string, string, error) {
		id, secret, err := p.clients.RegisterClient(ctx, tx, owner, owner+"_"+app.Name+"_"+in.KeyType, in.GrantTypesToBeSupported, in.CallbackURL)
		if err == nil && ck != nil && validity != (keymgr.TokenValidity{}) {
			err = ck.UpdateClient(ctx, tx, id, nil, nil, &validity)
		}
		return id, secret, errKeymgr(err)
	}
	km, secret, err := p.store.CreateKeyMapping(r.Context(), appID, owner, in.KeyType, register)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	var cb *string
	if in.CallbackURL != "" {
		cb = &in.CallbackURL
	}
	out := applicationKeyDTO{
		KeyMappingID: km.ID, KeyManager: km.KeyManager, ConsumerKey: km.ConsumerKey, ConsumerSecret: secret,
		SupportedGrantTypes: in.GrantTypesToBeSupported, CallbackURL: cb, KeyState: "COMPLETED", KeyType: km.KeyType,
		Mode: "CREATED",
	}
	if ck != nil {
		if info, err := ck.ClientInfo(r.Context(), km.ConsumerKey); err == nil {
			out.AdditionalProperties = validityProperties(info.Validity)
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, out)
}

// subscriptionDTO is WSO2's SubscriptionDTO (devportal v3): every
// property of WSO2's definition. subscriptionId, status, apiInfo,
// applicationInfo and redirectionParams are server-set: accepted (a GET
// body can be sent back) and ignored; a subscriber cannot unblock itself.
type subscriptionDTO struct {
	SubscriptionID            string         `json:"subscriptionId,omitempty"`
	ApplicationID             string         `json:"applicationId"`
	APIID                     string         `json:"apiId"`
	APIInfo                   *subAPIInfoDTO `json:"apiInfo,omitempty"`
	ApplicationInfo           *subAppInfoDTO `json:"applicationInfo,omitempty"`
	ThrottlingPolicy          string         `json:"throttlingPolicy"`
	RequestedThrottlingPolicy string         `json:"requestedThrottlingPolicy,omitempty"`
	Status                    string         `json:"status,omitempty"`
	RedirectionParams         string         `json:"redirectionParams,omitempty"`
}

// subAPIInfoDTO is WSO2's devportal APIInfoDTO as a subscription shows it.
type subAPIInfoDTO struct {
	ID                      string                  `json:"id"`
	Name                    string                  `json:"name"`
	Description             string                  `json:"description"`
	Context                 string                  `json:"context"`
	Version                 string                  `json:"version"`
	Type                    string                  `json:"type"`
	CreatedTime             string                  `json:"createdTime,omitempty"`
	Provider                string                  `json:"provider"`
	LifeCycleStatus         string                  `json:"lifeCycleStatus"`
	ThumbnailURI            string                  `json:"thumbnailUri,omitempty"`
	AvgRating               string                  `json:"avgRating,omitempty"`
	ThrottlingPolicies      []string                `json:"throttlingPolicies"`
	AdvertiseInfo           *advertiseInfoDTO       `json:"advertiseInfo,omitempty"`
	BusinessInformation     *businessInfoDTO        `json:"businessInformation,omitempty"`
	IsSubscriptionAvailable bool                    `json:"isSubscriptionAvailable"`
	MonetizationLabel       string                  `json:"monetizationLabel,omitempty"`
	GatewayVendor           string                  `json:"gatewayVendor,omitempty"`
	AdditionalProperties    []additionalPropertyDTO `json:"additionalProperties,omitempty"`
	MonetizedInfo           bool                    `json:"monetizedInfo"`
}

// subAppInfoDTO is WSO2's ApplicationInfoDTO.
type subAppInfoDTO struct {
	ApplicationID     string            `json:"applicationId"`
	Name              string            `json:"name"`
	ThrottlingPolicy  string            `json:"throttlingPolicy"`
	Description       string            `json:"description"`
	Status            string            `json:"status"`
	Groups            []string          `json:"groups"`
	SubscriptionCount int               `json:"subscriptionCount"`
	Attributes        map[string]string `json:"attributes"`
	Owner             string            `json:"owner"`
	TokenType         string            `json:"tokenType"`
	CreatedTime       string            `json:"createdTime,omitempty"`
	UpdatedTime       string            `json:"updatedTime,omitempty"`
}

func toSubscriptionDTO(s *model.Subscription) subscriptionDTO {
	return subscriptionDTO{
		SubscriptionID: s.ID, ApplicationID: s.ApplicationID, APIID: s.APIID, ThrottlingPolicy: s.ThrottlingPolicy,
		RequestedThrottlingPolicy: s.RequestedThrottlingPolicy, Status: s.Status,
	}
}

// writeSubscription answers with one subscription, its apiInfo and
// applicationInfo filled in, as WSO2 does.
func (p *Portal) writeSubscription(w http.ResponseWriter, r *http.Request, sub *model.Subscription, status int) {
	d := toSubscriptionDTO(sub)
	app, err := p.store.GetApplication(r.Context(), sub.ApplicationID, subject(r))
	if err != nil {
		p.fail(w, r, err)
		return
	}
	api, err := p.store.GetAPI(r.Context(), sub.APIID)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	attrs := app.Attributes
	if attrs == nil {
		attrs = map[string]string{}
	}
	d.ApplicationInfo = &subAppInfoDTO{
		ApplicationID: app.ID, Name: app.Name, ThrottlingPolicy: app.ThrottlingPolicy, Description: app.Description,
		Status: app.Status, Groups: nonNilStrings(app.Groups), SubscriptionCount: app.SubscriptionCount, Attributes: attrs,
		Owner: app.Owner, TokenType: app.TokenType, CreatedTime: wso2Millis(app.CreatedAt), UpdatedTime: wso2Millis(app.UpdatedAt),
	}
	dev := toDevAPIDTO(api)
	d.APIInfo = &subAPIInfoDTO{
		ID: api.ID, Name: api.Name, Description: api.Description, Context: api.Context, Version: api.Version, Type: "HTTP",
		CreatedTime: wso2Millis(api.CreatedAt), Provider: api.Provider, LifeCycleStatus: string(api.Status),
		ThrottlingPolicies: dev.ThrottlingPolicies, BusinessInformation: dev.BusinessInformation,
		IsSubscriptionAvailable: api.Status == model.StatusPublished || api.Status == model.StatusPrototyped,
		AdditionalProperties:    dev.AdditionalProperties,
	}
	writeJSON(w, status, d)
}

func (p *Portal) createSubscription(w http.ResponseWriter, r *http.Request) {
	var in subscriptionDTO
	if !p.decodeJSON(w, r, &in) {
		return
	}
	var problems []string
	if in.ApplicationID == "" {
		problems = append(problems, "applicationId is required")
	}
	if in.APIID == "" {
		problems = append(problems, "apiId is required")
	}
	if in.ThrottlingPolicy == "" {
		problems = append(problems, "throttlingPolicy is required")
	}
	if len(problems) > 0 {
		badRequest(w, problems)
		return
	}
	// An API the caller cannot see cannot be subscribed to either.
	api, err := p.store.GetAPI(r.Context(), in.APIID)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	if !p.shows(w, r, api) {
		return
	}
	sub, err := p.store.CreateSubscription(r.Context(), model.Subscription{
		ApplicationID: in.ApplicationID, APIID: in.APIID, ThrottlingPolicy: in.ThrottlingPolicy,
		RequestedThrottlingPolicy: in.RequestedThrottlingPolicy,
	}, subject(r))
	if err != nil {
		p.fail(w, r, err)
		return
	}
	w.Header().Set("Location", DevportalBase+"/subscriptions/"+sub.ID)
	p.writeSubscription(w, r, sub, http.StatusCreated)
}

func (p *Portal) getSubscription(w http.ResponseWriter, r *http.Request) {
	sub, err := p.store.GetSubscription(r.Context(), chi.URLParam(r, "subscriptionId"), subject(r))
	if err != nil {
		p.fail(w, r, err)
		return
	}
	p.writeSubscription(w, r, sub, http.StatusOK)
}

// updateSubscription is PUT /subscriptions/{subscriptionId}: a tier
// change. applicationId and apiId, when sent, must be the subscription's.
func (p *Portal) updateSubscription(w http.ResponseWriter, r *http.Request) {
	var in subscriptionDTO
	if !p.decodeJSON(w, r, &in) {
		return
	}
	id, owner := chi.URLParam(r, "subscriptionId"), subject(r)
	var problems []string
	if in.SubscriptionID != "" && in.SubscriptionID != id {
		problems = append(problems, "subscriptionId "+in.SubscriptionID+" does not match the path's subscriptionId")
	}
	if in.ThrottlingPolicy == "" {
		problems = append(problems, "throttlingPolicy is required")
	}
	if len(problems) > 0 {
		badRequest(w, problems)
		return
	}
	cur, err := p.store.GetSubscription(r.Context(), id, owner)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	if (in.ApplicationID != "" && in.ApplicationID != cur.ApplicationID) || (in.APIID != "" && in.APIID != cur.APIID) {
		badRequest(w, []string{"applicationId and apiId of a subscription cannot change; subscribe anew"})
		return
	}
	sub, err := p.store.UpdateSubscription(r.Context(), id, owner, in.ThrottlingPolicy, in.RequestedThrottlingPolicy)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	p.writeSubscription(w, r, sub, http.StatusOK)
}

func (p *Portal) listSubscriptions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.SubscriptionFilter{ApplicationID: q.Get("applicationId"), APIID: q.Get("apiId"), Owner: subject(r)}
	if f.ApplicationID == "" && f.APIID == "" {
		badRequest(w, []string{"applicationId or apiId is required"})
		return
	}
	if f.ApplicationID != "" {
		if _, err := p.store.GetApplication(r.Context(), f.ApplicationID, f.Owner); err != nil {
			p.fail(w, r, err)
			return
		}
	}
	subs, err := p.store.ListSubscriptions(r.Context(), f)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	out := make([]subscriptionDTO, 0, len(subs))
	for i := range subs {
		out = append(out, toSubscriptionDTO(&subs[i]))
	}
	writeJSON(w, http.StatusOK, newList(out))
}

func (p *Portal) deleteSubscription(w http.ResponseWriter, r *http.Request) {
	if err := p.store.DeleteSubscription(r.Context(), chi.URLParam(r, "subscriptionId"), subject(r)); err != nil {
		p.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

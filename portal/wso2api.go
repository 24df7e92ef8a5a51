package portal

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/apim-dev/apim/internal/model"
)

// This file holds the properties of WSO2's APIDTO (publisher v4) that apim
// accepts, stores and returns but does not act on yet
// (docs/wso2-compatibility.md). They are typed, so the strict decoder still
// refuses a misspelt nested field; where WSO2's schema is free-form (type
// object without properties) they stay raw JSON. Every field is a pointer
// or raw JSON with omitempty: a property the client did not send is not
// stored and not returned, one it sent (false, 0 and [] included) comes
// back as sent.

// apiExtraDTO is embedded in apiDTO; its fields are promoted to the top
// level of the API object.
type apiExtraDTO struct {
	WSDLInfo                     *wsdlInfoDTO           `json:"wsdlInfo,omitempty"`
	ResponseCachingEnabled       *bool                  `json:"responseCachingEnabled,omitempty"`
	CacheTimeout                 *int64                 `json:"cacheTimeout,omitempty"`
	EnableSchemaValidation       *bool                  `json:"enableSchemaValidation,omitempty"`
	EnableSubscriberVerification *bool                  `json:"enableSubscriberVerification,omitempty"`
	Audience                     *string                `json:"audience,omitempty"`
	Audiences                    *[]string              `json:"audiences,omitempty"`
	AuthorizationHeader          *string                `json:"authorizationHeader,omitempty"`
	APIKeyHeader                 *string                `json:"apiKeyHeader,omitempty"`
	MaxTps                       *maxTpsDTO             `json:"maxTps,omitempty"`
	VisibleTenants               *[]string              `json:"visibleTenants,omitempty"`
	VisibleOrganizations         *[]string              `json:"visibleOrganizations,omitempty"`
	MediationPolicies            *[]mediationPolicyDTO  `json:"mediationPolicies,omitempty"`
	APIPolicies                  *operationPoliciesDTO  `json:"apiPolicies,omitempty"`
	OrganizationPolicies         json.RawMessage        `json:"organizationPolicies,omitempty"`
	SubscriptionAvailability     *string                `json:"subscriptionAvailability,omitempty"`
	SubscriptionAvailableTenants *[]string              `json:"subscriptionAvailableTenants,omitempty"`
	Monetization                 *monetizationDTO       `json:"monetization,omitempty"`
	AccessControl                *string                `json:"accessControl,omitempty"`
	AccessControlRoles           *[]string              `json:"accessControlRoles,omitempty"`
	WebsubSubscription           *websubSubscriptionDTO `json:"websubSubscriptionConfiguration,omitempty"`
	EndpointConfig               json.RawMessage        `json:"endpointConfig,omitempty"`
	EndpointImplementationType   *string                `json:"endpointImplementationType,omitempty"`
	SubtypeConfiguration         *subtypeConfigDTO      `json:"subtypeConfiguration,omitempty"`
	ThreatProtectionPolicies     *threatProtectionDTO   `json:"threatProtectionPolicies,omitempty"`
	Categories                   *[]string              `json:"categories,omitempty"`
	KeyManagers                  json.RawMessage        `json:"keyManagers,omitempty"`
	ServiceInfo                  *serviceInfoDTO        `json:"serviceInfo,omitempty"`
	AdvertiseInfo                *advertiseInfoDTO      `json:"advertiseInfo,omitempty"`
	GatewayVendor                *string                `json:"gatewayVendor,omitempty"`
	GatewayType                  *string                `json:"gatewayType,omitempty"`
	AsyncTransportProtocols      *[]string              `json:"asyncTransportProtocols,omitempty"`
	Egress                       *bool                  `json:"egress,omitempty"`
}

// apiServerSetDTO are the APIDTO properties the server sets. A body may
// carry them (a GET body PUT back); they are ignored there.
type apiServerSetDTO struct {
	CreatedTime          string `json:"createdTime,omitempty"`
	LastUpdatedTime      string `json:"lastUpdatedTime,omitempty"`
	LastUpdatedTimestamp string `json:"lastUpdatedTimestamp,omitempty"`
	WorkflowStatus       string `json:"workflowStatus,omitempty"`
	HasThumbnail         bool   `json:"hasThumbnail"`
	WSDLURL              string `json:"wsdlUrl,omitempty"`
	IsRevision           bool   `json:"isRevision"`
	RevisionedAPIID      string `json:"revisionedApiId,omitempty"`
	RevisionID           int    `json:"revisionId"`
}

type wsdlInfoDTO struct {
	Type *string `json:"type,omitempty"`
}

type maxTpsDTO struct {
	Production         *int64              `json:"production,omitempty"`
	ProductionTimeUnit *string             `json:"productionTimeUnit,omitempty"`
	Sandbox            *int64              `json:"sandbox,omitempty"`
	SandboxTimeUnit    *string             `json:"sandboxTimeUnit,omitempty"`
	TokenBased         *tokenThrottlingDTO `json:"tokenBasedThrottlingConfiguration,omitempty"`
}

type tokenThrottlingDTO struct {
	ProductionMaxPromptTokenCount     *int64 `json:"productionMaxPromptTokenCount,omitempty"`
	ProductionMaxCompletionTokenCount *int64 `json:"productionMaxCompletionTokenCount,omitempty"`
	ProductionMaxTotalTokenCount      *int64 `json:"productionMaxTotalTokenCount,omitempty"`
	SandboxMaxPromptTokenCount        *int64 `json:"sandboxMaxPromptTokenCount,omitempty"`
	SandboxMaxCompletionTokenCount    *int64 `json:"sandboxMaxCompletionTokenCount,omitempty"`
	SandboxMaxTotalTokenCount         *int64 `json:"sandboxMaxTotalTokenCount,omitempty"`
	IsTokenBasedThrottlingEnabled     *bool  `json:"isTokenBasedThrottlingEnabled,omitempty"`
}

type mediationPolicyDTO struct {
	ID     *string `json:"id,omitempty"`
	Name   *string `json:"name,omitempty"`
	Type   *string `json:"type,omitempty"`
	Shared *bool   `json:"shared,omitempty"`
}

// operationPoliciesDTO is WSO2's APIOperationPoliciesDTO.
type operationPoliciesDTO struct {
	Request  *[]operationPolicyDTO `json:"request,omitempty"`
	Response *[]operationPolicyDTO `json:"response,omitempty"`
	Fault    *[]operationPolicyDTO `json:"fault,omitempty"`
}

// operationPolicyDTO is WSO2's OperationPolicyDTO; its parameters are
// free-form. policyType is not in WSO2's 4.4 definition but in what WSO2
// 4.5+ exports.
type operationPolicyDTO struct {
	PolicyName    *string                     `json:"policyName,omitempty"`
	PolicyVersion *string                     `json:"policyVersion,omitempty"`
	PolicyType    *string                     `json:"policyType,omitempty"`
	PolicyID      *string                     `json:"policyId,omitempty"`
	Parameters    *map[string]json.RawMessage `json:"parameters,omitempty"`
}

type monetizationDTO struct {
	Enabled    *bool              `json:"enabled,omitempty"`
	Properties *map[string]string `json:"properties,omitempty"`
}

type websubSubscriptionDTO struct {
	Enable           *bool   `json:"enable,omitempty"`
	Secret           *string `json:"secret,omitempty"`
	SigningAlgorithm *string `json:"signingAlgorithm,omitempty"`
	SignatureHeader  *string `json:"signatureHeader,omitempty"`
}

type subtypeConfigDTO struct {
	Subtype       *string         `json:"subtype,omitempty"`
	Configuration json.RawMessage `json:"configuration,omitempty"`
}

type threatProtectionDTO struct {
	List *[]threatProtectionPolicyDTO `json:"list,omitempty"`
}

type threatProtectionPolicyDTO struct {
	PolicyID *string `json:"policyId,omitempty"`
	Priority *int64  `json:"priority,omitempty"`
}

type serviceInfoDTO struct {
	Key      *string `json:"key,omitempty"`
	Name     *string `json:"name,omitempty"`
	Version  *string `json:"version,omitempty"`
	Outdated *bool   `json:"outdated,omitempty"`
}

// advertiseInfoDTO is WSO2's AdvertiseInfoDTO.
type advertiseInfoDTO struct {
	Advertised                    *bool   `json:"advertised,omitempty"`
	APIExternalProductionEndpoint *string `json:"apiExternalProductionEndpoint,omitempty"`
	APIExternalSandboxEndpoint    *string `json:"apiExternalSandboxEndpoint,omitempty"`
	OriginalDevPortalURL          *string `json:"originalDevPortalUrl,omitempty"`
	APIOwner                      *string `json:"apiOwner,omitempty"`
	Vendor                        *string `json:"vendor,omitempty"`
}

// operationExtraDTO is embedded in operationDTO: the APIOperationsDTO
// properties apim stores but does not act on.
type operationExtraDTO struct {
	ID                        *string               `json:"id,omitempty"`
	UsedProductIDs            *[]string             `json:"usedProductIds,omitempty"`
	AmznResourceName          *string               `json:"amznResourceName,omitempty"`
	AmznResourceTimeout       *int64                `json:"amznResourceTimeout,omitempty"`
	AmznResourceContentEncode *bool                 `json:"amznResourceContentEncode,omitempty"`
	PayloadSchema             *string               `json:"payloadSchema,omitempty"`
	URIMapping                *string               `json:"uriMapping,omitempty"`
	OperationPolicies         *operationPoliciesDTO `json:"operationPolicies,omitempty"`
}

// businessInfoDTO is WSO2's APIBusinessInformationDTO.
type businessInfoDTO struct {
	BusinessOwner       string `json:"businessOwner,omitempty"`
	BusinessOwnerEmail  string `json:"businessOwnerEmail,omitempty"`
	TechnicalOwner      string `json:"technicalOwner,omitempty"`
	TechnicalOwnerEmail string `json:"technicalOwnerEmail,omitempty"`
}

func toBusinessInfoDTO(b *model.BusinessInformation) *businessInfoDTO {
	if b == nil {
		return nil
	}
	return &businessInfoDTO{
		BusinessOwner: b.BusinessOwner, BusinessOwnerEmail: b.BusinessOwnerEmail,
		TechnicalOwner: b.TechnicalOwner, TechnicalOwnerEmail: b.TechnicalOwnerEmail,
	}
}

// additionalPropertyDTO is one of WSO2 4.x's additionalProperties (and a
// value of additionalPropertiesMap).
type additionalPropertyDTO struct {
	Name    string `json:"name"`
	Value   string `json:"value"`
	Display bool   `json:"display"`
}

// apiScopeDTO is WSO2's APIScopeDTO.
type apiScopeDTO struct {
	Scope  scopeDTO `json:"scope"`
	Shared bool     `json:"shared"`
}

// scopeDTO is WSO2's ScopeDTO; usageCount is server-set (ignored, 0).
type scopeDTO struct {
	ID          string   `json:"id,omitempty"`
	Name        string   `json:"name"`
	DisplayName string   `json:"displayName"`
	Description string   `json:"description"`
	Bindings    []string `json:"bindings"`
	UsageCount  int      `json:"usageCount"`
}

// enumChecks are the enumerated WSO2 properties apim stores without acting
// on: a value outside WSO2's enum is refused, as WSO2 refuses it.
func (x *apiExtraDTO) enumProblems() []string {
	var problems []string
	check := func(name string, v *string, allowed ...string) {
		if v != nil && !slices.Contains(allowed, *v) {
			problems = append(problems, fmt.Sprintf("%s has an unknown value %q; one of %v", name, *v, allowed))
		}
	}
	if x.WSDLInfo != nil {
		check("wsdlInfo.type", x.WSDLInfo.Type, "WSDL", "ZIP")
	}
	check("audience", x.Audience, "PUBLIC", "SINGLE")
	if m := x.MaxTps; m != nil {
		check("maxTps.productionTimeUnit", m.ProductionTimeUnit, "SECOND", "MINUTE", "HOUR")
		check("maxTps.sandboxTimeUnit", m.SandboxTimeUnit, "SECOND", "MINUTE", "HOUR")
	}
	check("subscriptionAvailability", x.SubscriptionAvailability, "CURRENT_TENANT", "ALL_TENANTS", "SPECIFIC_TENANTS")
	check("accessControl", x.AccessControl, "NONE", "RESTRICTED")
	check("endpointImplementationType", x.EndpointImplementationType, "INLINE", "ENDPOINT", "MOCKED_OAS")
	if a := x.AdvertiseInfo; a != nil {
		check("advertiseInfo.vendor", a.Vendor, "WSO2", "AWS")
	}
	return problems
}

// encodeExtra is the JSON object stored for the properties of v that were
// sent; nil when none was.
func encodeExtra(v any) (json.RawMessage, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode stored WSO2 properties: %w", err)
	}
	if bytes.Equal(raw, []byte("{}")) {
		return nil, nil
	}
	return raw, nil
}

// decodeExtra fills v from a stored Extra object. Stored objects were
// written by encodeExtra of the same type, so a failure means a stored
// property is no longer in the DTO (a later apim dropped it): what still
// decodes is kept.
func decodeExtra(raw json.RawMessage, v any) {
	if len(raw) == 0 {
		return
	}
	_ = json.Unmarshal(raw, v)
}

// wso2Millis is WSO2's createdTime/lastUpdatedTimestamp: epoch
// milliseconds as a string; empty for the zero time.
func wso2Millis(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.UnixMilli(), 10)
}

// wso2Time is WSO2's lastUpdatedTime ("2025-03-09 12:42:27.82", UTC).
func wso2Time(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05.999")
}

// additionalProperties merges WSO2's two forms of an API's custom
// properties: the array when it has any (the map must then agree with it),
// else the map, ordered by name. A map key must equal its value's name (an
// empty name takes the key).
func additionalProperties(list []additionalPropertyDTO, m map[string]additionalPropertyDTO) ([]model.AdditionalProperty, []string) {
	var problems []string
	for k, v := range m {
		if v.Name != "" && v.Name != k {
			problems = append(problems, fmt.Sprintf("additionalPropertiesMap.%s.name %q must equal its key", k, v.Name))
		}
	}
	var out []model.AdditionalProperty
	if len(list) > 0 {
		for _, p := range list {
			out = append(out, model.AdditionalProperty{Name: p.Name, Value: p.Value, Display: p.Display})
			if v, ok := m[p.Name]; len(m) > 0 && (!ok || v.Value != p.Value || v.Display != p.Display) {
				problems = append(problems, fmt.Sprintf("additionalPropertiesMap.%s does not match additionalProperties; send one form, or both alike", p.Name))
			}
		}
		if len(m) > len(list) {
			problems = append(problems, "additionalPropertiesMap has properties additionalProperties has not; send one form, or both alike")
		}
		return out, problems
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := m[k]
		out = append(out, model.AdditionalProperty{Name: k, Value: v.Value, Display: v.Display})
	}
	return out, problems
}

package portal_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
)

// wso2APIProperties are the properties of WSO2's APIDTO (publisher v4, the
// API schema of WSO2 API-M 4.4's publisher-api.yaml, plus
// visibleOrganizations and organizationPolicies of 4.5+ exports), and
// apim's own enableBackendJWT.
var wso2APIProperties = []string{
	"id", "name", "description", "context", "version", "provider", "lifeCycleStatus", "wsdlInfo", "wsdlUrl",
	"responseCachingEnabled", "cacheTimeout", "hasThumbnail", "isDefaultVersion", "isRevision", "revisionedApiId",
	"revisionId", "enableSchemaValidation", "enableSubscriberVerification", "type", "audience", "audiences",
	"transport", "tags", "policies", "apiThrottlingPolicy", "authorizationHeader", "apiKeyHeader", "securityScheme",
	"maxTps", "visibility", "visibleRoles", "visibleTenants", "visibleOrganizations", "mediationPolicies",
	"apiPolicies", "organizationPolicies", "subscriptionAvailability", "subscriptionAvailableTenants",
	"additionalProperties", "additionalPropertiesMap", "monetization", "accessControl", "accessControlRoles",
	"businessInformation", "corsConfiguration", "websubSubscriptionConfiguration", "workflowStatus", "createdTime",
	"lastUpdatedTimestamp", "lastUpdatedTime", "endpointConfig", "endpointImplementationType",
	"subtypeConfiguration", "scopes", "operations", "threatProtectionPolicies", "categories", "keyManagers",
	"serviceInfo", "advertiseInfo", "gatewayVendor", "gatewayType", "asyncTransportProtocols", "egress",
	"enableBackendJWT",
}

// apiServerSet are the APIDTO properties the server sets: a body may carry
// them, a GET shows the server's values.
var apiServerSet = []string{
	"id", "provider", "lifeCycleStatus", "createdTime", "lastUpdatedTime", "lastUpdatedTimestamp", "workflowStatus",
	"hasThumbnail", "wsdlUrl", "isRevision", "revisionedApiId", "revisionId",
}

// operationPolicies is a full WSO2 APIOperationPoliciesDTO.
func operationPolicies(v int) map[string]any {
	policy := func(flow string) []any {
		return []any{map[string]any{
			"policyName": "addHeader" + flow, "policyVersion": fmt.Sprintf("v%d", v), "policyType": "common",
			"policyId":   fmt.Sprintf("policy-%s-%d", flow, v),
			"parameters": map[string]any{"headerName": "X-" + flow, "headerValue": fmt.Sprint(v), "nested": map[string]any{"n": v}},
		}}
	}
	return map[string]any{"request": policy("in"), "response": policy("out"), "fault": policy("fault")}
}

// fullAPIBody fills every property of WSO2's APIDTO with a value that is
// not the default; v varies the values.
func fullAPIBody(v int) map[string]any {
	s := func(base string) string { return fmt.Sprintf("%s-%d", base, v) }
	return map[string]any{
		"id": "ignored", "name": "Full", "description": s("every property"), "context": "/full", "version": "1.0.0",
		"provider": "someone-else", "lifeCycleStatus": "PUBLISHED",
		"wsdlInfo": map[string]any{"type": []string{"WSDL", "ZIP"}[v%2]},
		"wsdlUrl":  "/ignored.wsdl", "responseCachingEnabled": v%2 == 1, "cacheTimeout": 300 + v, "hasThumbnail": true,
		"isDefaultVersion": v%2 == 1, "isRevision": true, "revisionedApiId": "ignored", "revisionId": 7,
		"enableSchemaValidation": v%2 == 1, "enableSubscriberVerification": v%2 == 0, "type": "HTTP",
		"audience": []string{"PUBLIC", "SINGLE"}[v%2], "audiences": []string{s("aud1"), s("aud2")},
		"transport": [][]string{{"https"}, {"http", "https"}}[v%2], "tags": []string{s("pizza"), "food"},
		"policies": []string{"Gold", "Unlimited"}, "apiThrottlingPolicy": "Unlimited",
		"authorizationHeader": s("X-Auth"), "apiKeyHeader": s("X-Key"), "securityScheme": []string{"oauth2", "api_key"},
		"maxTps": map[string]any{
			"production": 1000 + v, "productionTimeUnit": "MINUTE", "sandbox": 10 + v, "sandboxTimeUnit": "HOUR",
			"tokenBasedThrottlingConfiguration": map[string]any{
				"productionMaxPromptTokenCount": 1 + v, "productionMaxCompletionTokenCount": 2 + v,
				"productionMaxTotalTokenCount": 3 + v, "sandboxMaxPromptTokenCount": 4 + v,
				"sandboxMaxCompletionTokenCount": 5 + v, "sandboxMaxTotalTokenCount": 6 + v,
				"isTokenBasedThrottlingEnabled": true,
			},
		},
		"visibility": "RESTRICTED", "visibleRoles": []string{s("role")}, "visibleTenants": []string{s("tenant")},
		"visibleOrganizations":     []string{s("org")},
		"mediationPolicies":        []any{map[string]any{"id": s("mp"), "name": s("log_in"), "type": "in", "shared": true}},
		"apiPolicies":              operationPolicies(v),
		"organizationPolicies":     []any{map[string]any{"organizationId": s("org"), "policies": []string{"Gold"}}},
		"subscriptionAvailability": "SPECIFIC_TENANTS", "subscriptionAvailableTenants": []string{s("tenant")},
		"additionalProperties": []any{
			map[string]any{"name": "dept", "value": s("sales"), "display": true},
			map[string]any{"name": "cost", "value": s("c1"), "display": false},
		},
		"additionalPropertiesMap": map[string]any{
			"dept": map[string]any{"name": "dept", "value": s("sales"), "display": true},
			"cost": map[string]any{"name": "cost", "value": s("c1"), "display": false},
		},
		"monetization":  map[string]any{"enabled": true, "properties": map[string]any{"fixedPrice": s("10")}},
		"accessControl": "RESTRICTED", "accessControlRoles": []string{s("creator")},
		"businessInformation": map[string]any{
			"businessOwner": s("Jane"), "businessOwnerEmail": s("jane") + "@example.com",
			"technicalOwner": s("John"), "technicalOwnerEmail": s("john") + "@example.com",
		},
		"corsConfiguration": map[string]any{
			"corsConfigurationEnabled": true, "accessControlAllowOrigins": []string{"https://app.example.com"},
			"accessControlAllowCredentials": true, "accessControlAllowHeaders": []string{"authorization", s("X-H")},
			"accessControlAllowMethods": []string{"GET", "POST"},
		},
		"websubSubscriptionConfiguration": map[string]any{
			"enable": true, "secret": s("secret"), "signingAlgorithm": "SHA256", "signatureHeader": s("x-hub"),
		},
		"workflowStatus": "APPROVED", "createdTime": "1", "lastUpdatedTimestamp": "2", "lastUpdatedTime": "3",
		"endpointConfig": map[string]any{
			"endpoint_type":        "http",
			"production_endpoints": map[string]any{"url": fmt.Sprintf("http://backend%d.example:8080/v1", v), "config": nil},
			"sandbox_endpoints":    map[string]any{"url": "http://sandbox.example:8080/v1"},
			"endpoint_security": map[string]any{"production": map[string]any{
				"enabled": true, "type": "BASIC", "username": s("user"), "connectionTimeoutDuration": -1,
			}},
		},
		"endpointImplementationType": "INLINE",
		"subtypeConfiguration":       map[string]any{"subtype": "AIAPI", "configuration": map[string]any{"llmProviderId": s("openai")}},
		"scopes": []any{map[string]any{"shared": true, "scope": map[string]any{
			"id": s("scope-id"), "name": s("pets:read"), "displayName": s("Read pets"), "description": s("reads"),
			"bindings": []string{s("admin"), "Internal/subscriber"}, "usageCount": 3,
		}}},
		"operations": []any{map[string]any{
			"id": s("getpets"), "target": "/pets/{id}", "verb": "GET", "authType": "Application", "throttlingPolicy": "Unlimited",
			"scopes": []string{s("pets:read")}, "usedProductIds": []string{s("product")}, "amznResourceName": s("arn"),
			"amznResourceTimeout": 1000 + v, "amznResourceContentEncode": true, "payloadSchema": s("{}"),
			"uriMapping": s("/map"), "operationPolicies": operationPolicies(v + 1),
		}},
		"threatProtectionPolicies": map[string]any{"list": []any{map[string]any{"policyId": s("tp"), "priority": v}}},
		"categories":               []string{s("finance")},
		"keyManagers":              []string{s("km")},
		"serviceInfo":              map[string]any{"key": s("PetStore-1.0.0"), "name": "PetStore", "version": "1.0.0", "outdated": true},
		"advertiseInfo": map[string]any{
			"advertised": true, "apiExternalProductionEndpoint": s("https://prod.example.com"),
			"apiExternalSandboxEndpoint": s("https://sb.example.com"), "originalDevPortalUrl": s("https://dev.example.com"),
			"apiOwner": s("owner"), "vendor": "AWS",
		},
		"gatewayVendor": s("wso2"), "gatewayType": "wso2/apk", "asyncTransportProtocols": []string{"http", s("mqtt")},
		"egress": true, "enableBackendJWT": true,
	}
}

// normalized round-trips v through JSON, so maps, numbers and slices
// compare alike, and drops the server-set keys (usageCount too).
func normalized(t *testing.T, v any, drop []string) map[string]any {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	for _, k := range drop {
		delete(out, k)
	}
	if scopes, ok := out["scopes"].([]any); ok {
		for _, sc := range scopes {
			if m, ok := sc.(map[string]any)["scope"].(map[string]any); ok {
				delete(m, "usageCount")
			}
		}
	}
	return out
}

// sameJSON reports each top-level property whose value differs.
func sameJSON(t *testing.T, want, got map[string]any) {
	t.Helper()
	keys := map[string]bool{}
	for k := range want {
		keys[k] = true
	}
	for k := range got {
		keys[k] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	for _, k := range sorted {
		if !reflect.DeepEqual(want[k], got[k]) {
			w, _ := json.Marshal(want[k])
			g, _ := json.Marshal(got[k])
			t.Errorf("%s: sent %s, got back %s", k, w, g)
		}
	}
}

// TestAPIDTORoundTrip fills every property of WSO2's APIDTO, POSTs it,
// PUTs other values, and requires GET to return what was sent, except the
// server-set properties (apiServerSet), which show the server's values.
func TestAPIDTORoundTrip(t *testing.T) {
	e := newEnv(t, 0)
	body := fullAPIBody(1)
	var keys []string
	for k := range body {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := slices.Clone(wso2APIProperties)
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Fatalf("the test body does not fill every APIDTO property:\nbody %v\nwant %v", keys, want)
	}

	var created map[string]any
	e.must(e.call("POST", pubBase+"/apis", "admin-token", body), 201, &created)
	id, _ := created["id"].(string)
	sameJSON(t, normalized(t, body, apiServerSet), normalized(t, created, apiServerSet))
	var got map[string]any
	e.must(e.call("GET", pubBase+"/apis/"+id, "admin-token", nil), 200, &got)
	sameJSON(t, normalized(t, body, apiServerSet), normalized(t, got, apiServerSet))
	// Server-set values are the server's.
	if got["id"] != id || got["provider"] != "admin" || got["lifeCycleStatus"] != "CREATED" || got["hasThumbnail"] != false ||
		got["isRevision"] != false || got["createdTime"] == "1" || got["createdTime"] == nil {
		t.Errorf("server-set properties: id %v provider %v lifeCycleStatus %v hasThumbnail %v isRevision %v createdTime %v",
			got["id"], got["provider"], got["lifeCycleStatus"], got["hasThumbnail"], got["isRevision"], got["createdTime"])
	}

	update := fullAPIBody(2)
	update["id"] = id
	e.must(e.call("PUT", pubBase+"/apis/"+id, "admin-token", update), 200, nil)
	e.must(e.call("GET", pubBase+"/apis/"+id, "admin-token", nil), 200, &got)
	sameJSON(t, normalized(t, update, apiServerSet), normalized(t, got, apiServerSet))

	// The GET body PUT back changes nothing.
	e.must(e.call("PUT", pubBase+"/apis/"+id, "admin-token", got), 200, nil)
	var again map[string]any
	e.must(e.call("GET", pubBase+"/apis/"+id, "admin-token", nil), 200, &again)
	sameJSON(t, normalized(t, got, []string{"lastUpdatedTime", "lastUpdatedTimestamp"}),
		normalized(t, again, []string{"lastUpdatedTime", "lastUpdatedTimestamp"}))

	// Tags are listable, in the publisher and (once published) the devportal.
	var list struct {
		Count int
		List  []struct{ ID string }
	}
	e.must(e.call("GET", pubBase+"/apis?query=tag:pizza-2", "admin-token", nil), 200, &list)
	if list.Count != 1 || list.List[0].ID != id {
		t.Errorf("tag:pizza-2 lists %+v, want the API", list)
	}
	e.must(e.call("GET", pubBase+"/apis?query=tag:pizza-1", "admin-token", nil), 200, &list)
	if list.Count != 0 {
		t.Errorf("tag:pizza-1 (replaced by the PUT) lists %+v", list)
	}

	// A revision freezes the stored-only properties with the rest.
	var frozen string
	e.must(e.call("POST", pubBase+"/apis/"+id+"/revisions", "admin-token", `{}`), 201, nil)
	if err := e.pool.QueryRow(e.ctx, `SELECT definition::text FROM api_revisions WHERE api_id = $1`, id).Scan(&frozen); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{`"SPECIFIC_TENANTS"`, `"pizza-2"`, `"getpets-2"`, `"wso2/apk"`} {
		if !strings.Contains(frozen, w) {
			t.Errorf("the revision's definition lacks %s: %s", w, frozen)
		}
	}
}

// TestAPIDTORefusesWhatWSO2Refuses: unknown fields, also nested in objects
// WSO2 defines with fixed properties, and values outside WSO2's enums, are
// a 400 naming the field; free-form objects take anything.
func TestAPIDTORefusesWhatWSO2Refuses(t *testing.T) {
	e := newEnv(t, 0)
	cases := map[string]struct {
		change func(b map[string]any)
		want   []string
	}{
		"unknown top-level field": {func(b map[string]any) { b["colour"] = "blue" }, []string{`unknown field "colour"`}},
		"unknown field in businessInformation": {func(b map[string]any) {
			b["businessInformation"] = map[string]any{"businessOwner": "x", "colour": "blue"}
		}, []string{`unknown field "colour"`}},
		"unknown field in maxTps": {func(b map[string]any) { b["maxTps"] = map[string]any{"colour": 1} }, []string{`unknown field "colour"`}},
		"unknown field in an operation": {func(b map[string]any) {
			b["operations"] = []any{map[string]any{"target": "/x", "verb": "GET", "uritemplate": "/x"}}
		}, []string{`unknown field "uritemplate"`}},
		"unknown field in a scope": {func(b map[string]any) {
			b["scopes"] = []any{map[string]any{"scope": map[string]any{"name": "s", "roles": []string{"r"}}}}
		}, []string{`unknown field "roles"`}},
		"visibility":               {func(b map[string]any) { b["visibility"] = "SECRET" }, []string{"visibility", "SECRET"}},
		"restricted without roles": {func(b map[string]any) { b["visibility"], b["visibleRoles"] = "RESTRICTED", []string{} }, []string{"visibleRoles"}},
		"transport":                {func(b map[string]any) { b["transport"] = []string{"ftp"} }, []string{"transport[0]", "ftp"}},
		"subscriptionAvailability": {func(b map[string]any) { b["subscriptionAvailability"] = "EVERYONE" }, []string{"subscriptionAvailability", "EVERYONE"}},
		"advertiseInfo.vendor":     {func(b map[string]any) { b["advertiseInfo"] = map[string]any{"vendor": "ACME"} }, []string{"advertiseInfo.vendor"}},
		"cacheTimeout type":        {func(b map[string]any) { b["cacheTimeout"] = "soon" }, []string{"cacheTimeout must be a number"}},
		"blank tag":                {func(b map[string]any) { b["tags"] = []string{" "} }, []string{"tags[0]"}},
		"additional property name": {func(b map[string]any) { b["additionalProperties"] = []any{map[string]any{"value": "v"}} }, []string{"additionalProperties[0].name is required"}},
		"map disagrees with array": {func(b map[string]any) {
			b["additionalProperties"] = []any{map[string]any{"name": "a", "value": "1"}}
			b["additionalPropertiesMap"] = map[string]any{"a": map[string]any{"name": "a", "value": "2"}}
		}, []string{"additionalPropertiesMap.a"}},
		"too much stored-only data": {func(b map[string]any) {
			b["categories"] = []string{strings.Repeat("x", 70<<10)}
		}, []string{"more than 65536"}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			e := &env{t: t, ctx: e.ctx, pool: e.pool, srv: e.srv, logs: e.logs}
			b := petstoreBody()
			c.change(b)
			e.rejects(400, func() resp { return e.call("POST", pubBase+"/apis", "admin-token", b) }, c.want...)
		})
	}
	// Free-form objects (endpointConfig, subtypeConfiguration.configuration,
	// policy parameters) take any keys; the map form alone is accepted.
	b := petstoreBody()
	b["endpointConfig"] = map[string]any{
		"endpoint_type": "http", "production_endpoints": map[string]any{"url": "http://b.example", "config": map[string]any{"retry": 3}},
		"algoCombo": "x", "anything": []any{1, "two"},
	}
	b["subtypeConfiguration"] = map[string]any{"subtype": "DEFAULT", "configuration": map[string]any{"free": map[string]any{"form": true}}}
	b["additionalPropertiesMap"] = map[string]any{"b": map[string]any{"value": "2"}, "a": map[string]any{"name": "a", "value": "1", "display": true}}
	var got struct {
		AdditionalProperties []map[string]any `json:"additionalProperties"`
		EndpointConfig       map[string]any   `json:"endpointConfig"`
	}
	e.must(e.call("POST", pubBase+"/apis", "admin-token", b), 201, &got)
	if len(got.AdditionalProperties) != 2 || got.AdditionalProperties[0]["name"] != "a" || got.AdditionalProperties[1]["name"] != "b" ||
		got.EndpointConfig["algoCombo"] != "x" {
		t.Errorf("free-form and map-only body came back as %+v", got)
	}
}

// wso2SampleAPI is the APIDTO of WSO2's PizzaShackAPI sample as WSO2 API-M
// 4.6's documentation of the exported api.yaml shows it (data section),
// in JSON.
const wso2SampleAPI = `{
  "id": "1eac20a4-4240-4fb7-8ced-c257e25e542d", "name": "PizzaShackAPI",
  "description": "This is a simple API for Pizza Shack online pizza delivery store.",
  "context": "/pizzashack", "version": "1.0.0", "provider": "admin", "lifeCycleStatus": "PUBLISHED",
  "responseCachingEnabled": false, "cacheTimeout": 300, "hasThumbnail": false, "isDefaultVersion": false,
  "isRevision": false, "revisionId": 0, "enableSchemaValidation": false, "enableSubscriberVerification": false,
  "type": "HTTP", "audiences": ["all"], "transport": ["https"], "tags": ["pizza"], "policies": ["Bronze"],
  "organizationPolicies": [], "authorizationHeader": "Authorization", "apiKeyHeader": "ApiKey",
  "securityScheme": ["oauth_basic_auth_api_key_mandatory", "oauth2"], "visibility": "PUBLIC",
  "visibleRoles": [], "visibleTenants": [], "visibleOrganizations": ["none"], "mediationPolicies": [],
  "subscriptionAvailability": "CURRENT_TENANT", "subscriptionAvailableTenants": [],
  "additionalProperties": [], "additionalPropertiesMap": {}, "accessControl": "NONE", "accessControlRoles": [],
  "businessInformation": {"businessOwner": "Jane Roe", "businessOwnerEmail": "marketing@pizzashack.com",
    "technicalOwner": "John Doe", "technicalOwnerEmail": "architecture@pizzashack.com"},
  "corsConfiguration": {"corsConfigurationEnabled": false, "accessControlAllowOrigins": ["*"],
    "accessControlAllowCredentials": false,
    "accessControlAllowHeaders": ["authorization", "Access-Control-Allow-Origin", "Content-Type", "SOAPAction", "apikey", "Internal-Key"],
    "accessControlAllowMethods": ["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"]},
  "websubSubscriptionConfiguration": {"enable": false, "secret": "", "signingAlgorithm": "SHA1", "signatureHeader": "x-hub-signature"},
  "createdTime": "1741450820577", "lastUpdatedTimestamp": "1741504347820", "lastUpdatedTime": "2025-03-09 12:42:27.82",
  "endpointConfig": {"endpoint_type": "http",
    "sandbox_endpoints": {"url": "https://localhost:9443/am/sample/pizzashack/v1/api/"},
    "production_endpoints": {"url": "https://localhost:9443/am/sample/pizzashack/v1/api/"},
    "endpoint_security": {
      "sandbox": {"tokenUrl": "https://test.com", "clientId": "1eac20a4-4240-4fb7-8ced-c257e25e542d",
        "connectionTimeoutDuration": "100", "type": "OAUTH", "socketTimeoutDuration": "100", "enabled": true,
        "proxyConfigs": {"proxyEnabled": "", "proxyPort": "", "proxyProtocol": "", "proxyUsername": "", "proxyPassword": "", "proxyHost": ""},
        "clientSecret": "", "customParameters": {}, "grantType": "CLIENT_CREDENTIALS", "connectionRequestTimeoutDuration": "100", "username": ""},
      "production": {"tokenUrl": "", "connectionTimeoutDuration": -1, "type": "BASIC", "socketTimeoutDuration": -1, "enabled": true,
        "proxyConfigs": {"proxyEnabled": "", "proxyPort": "", "proxyProtocol": "", "proxyUsername": "", "proxyPassword": "", "proxyHost": ""},
        "password": "", "customParameters": {}, "grantType": "", "connectionRequestTimeoutDuration": -1, "username": "admin"}}},
  "endpointImplementationType": "ENDPOINT", "subtypeConfiguration": {"subtype": "DEFAULT"}, "scopes": [],
  "operations": [
    {"id": "", "target": "/orders", "verb": "POST", "authType": "Application & Application User", "throttlingPolicy": "Unlimited",
     "scopes": [], "usedProductIds": [], "operationPolicies": {
       "request": [{"policyName": "addHeader", "policyVersion": "v2", "policyType": "common",
         "policyId": "b7adde73-ec49-4f3e-8c4b-dc57922315bb", "parameters": {"headerName": "Test", "headerValue": "1234"}}],
       "response": [{"policyName": "disableChunking", "policyVersion": "v1", "policyType": "common",
         "policyId": "a249d66e-bea6-4cf8-88fa-0e6e66f61582", "parameters": {}}],
       "fault": []}},
    {"id": "", "target": "/menus", "verb": "GET", "authType": "Application & Application User", "throttlingPolicy": "Unlimited",
     "scopes": [], "usedProductIds": [], "operationPolicies": {"request": [], "response": [], "fault": []}},
    {"id": "", "target": "/orders/{orderId}", "verb": "GET", "authType": "Application & Application User", "throttlingPolicy": "Unlimited",
     "scopes": [], "usedProductIds": [], "operationPolicies": {"request": [], "response": [], "fault": []}},
    {"id": "", "target": "/orders/{orderId}", "verb": "PUT", "authType": "Application & Application User", "throttlingPolicy": "Unlimited",
     "scopes": [], "usedProductIds": [], "operationPolicies": {"request": [], "response": [], "fault": []}},
    {"id": "", "target": "/orders/{orderId}", "verb": "DELETE", "authType": "Application & Application User", "throttlingPolicy": "Unlimited",
     "scopes": [], "usedProductIds": [], "operationPolicies": {"request": [], "response": [], "fault": []}}],
  "categories": [], "keyManagers": ["all"],
  "advertiseInfo": {"advertised": false, "apiOwner": "admin", "vendor": "WSO2"},
  "gatewayVendor": "wso2", "gatewayType": "wso2/synapse", "asyncTransportProtocols": [], "egress": false
}`

// TestWSO2SampleAPIAccepted: WSO2's own sample body is accepted as it is,
// and what apim acts on (tags, transport, business information, the
// endpoints) is what the sample says.
func TestWSO2SampleAPIAccepted(t *testing.T) {
	e := newEnv(t, 0)
	var got map[string]any
	e.must(e.call("POST", pubBase+"/apis", "admin-token", wso2SampleAPI), 201, &got)
	var sent map[string]any
	if err := json.Unmarshal([]byte(wso2SampleAPI), &sent); err != nil {
		t.Fatal(err)
	}
	// enableBackendJWT is apim's, not in WSO2's sample: GET shows its default.
	drop := append(slices.Clone(apiServerSet), "enableBackendJWT")
	sameJSON(t, normalized(t, sent, drop), normalized(t, got, drop))
	if got["enableBackendJWT"] != false {
		t.Errorf("enableBackendJWT = %v, want the default false", got["enableBackendJWT"])
	}
}

// TestDevportalTagsAndProperties: the devportal lists published APIs by
// tag and shows their business information and only the additional
// properties marked display, as WSO2's devportal does.
func TestDevportalTagsAndProperties(t *testing.T) {
	e := newEnv(t, 0)
	b := petstoreBody()
	b["tags"] = []string{"pets", "animals"}
	b["businessInformation"] = map[string]any{"businessOwner": "Jane"}
	b["additionalProperties"] = []any{
		map[string]any{"name": "shown", "value": "1", "display": true},
		map[string]any{"name": "hidden", "value": "2", "display": false},
	}
	var api apiOut
	e.must(e.call("POST", pubBase+"/apis", "admin-token", b), 201, &api)
	e.must(e.call("POST", pubBase+"/apis/change-lifecycle?apiId="+api.ID+"&action=Publish", "admin-token", nil), 200, nil)
	var list struct {
		Count int
		List  []struct {
			ID                   string
			Tags                 []string
			BusinessInformation  map[string]string
			AdditionalProperties []map[string]any
		}
	}
	e.must(e.call("GET", devBase+"/apis?query=tag:animals", "", nil), 200, &list)
	if list.Count != 1 || list.List[0].ID != api.ID || !slices.Equal(list.List[0].Tags, []string{"pets", "animals"}) ||
		list.List[0].BusinessInformation["businessOwner"] != "Jane" ||
		len(list.List[0].AdditionalProperties) != 1 || list.List[0].AdditionalProperties[0]["name"] != "shown" {
		t.Errorf("devportal tag:animals = %+v", list)
	}
	e.must(e.call("GET", devBase+"/apis?query=tag:cars", "", nil), 200, &list)
	if list.Count != 0 {
		t.Errorf("devportal tag:cars = %+v, want none", list)
	}
	e.must(e.call("GET", devBase+"/apis?query=status:CREATED", "", nil), 200, &list)
	if list.Count != 0 {
		t.Errorf("devportal status:CREATED = %+v, want none (the devportal shows only published APIs)", list)
	}
	e.rejects(400, func() resp { return e.call("GET", devBase+"/apis?query=colour:blue", "", nil) }, "colour:blue")
}

// wso2ApplicationProperties are the properties of WSO2's ApplicationDTO
// (devportal v3).
var wso2ApplicationProperties = []string{
	"applicationId", "name", "throttlingPolicy", "description", "tokenType", "status", "groups", "subscriptionCount",
	"keys", "attributes", "subscriptionScopes", "owner", "hashEnabled", "createdTime", "updatedTime",
}

// applicationServerSet are the server-set ApplicationDTO properties.
var applicationServerSet = []string{
	"applicationId", "status", "subscriptionCount", "keys", "owner", "hashEnabled", "createdTime", "updatedTime",
}

func fullApplicationBody(v int) map[string]any {
	s := func(base string) string { return fmt.Sprintf("%s-%d", base, v) }
	return map[string]any{
		"applicationId": "ignored", "name": s("FullApp"), "throttlingPolicy": []string{"10PerMin", "20PerMin"}[v%2],
		"description": s("every property"), "tokenType": []string{"JWT", "OAUTH"}[v%2], "status": "REJECTED",
		"groups": []string{s("team"), "org"}, "subscriptionCount": 42,
		"keys": []any{map[string]any{
			"keyMappingId": "x", "keyManager": "Resident Key Manager", "consumerKey": "ck", "consumerSecret": "cs",
			"supportedGrantTypes": []string{"client_credentials"}, "callbackUrl": "https://cb.example", "keyState": "COMPLETED",
			"keyType": "PRODUCTION", "mode": "CREATED", "groupId": "g",
			"token":                map[string]any{"accessToken": "t", "tokenScopes": []string{"default"}, "validityTime": 3600},
			"additionalProperties": map[string]any{"free": "form"},
		}},
		"attributes": map[string]any{"External Reference Id": s("ref"), "Billing Tier": "gold"},
		"subscriptionScopes": []any{map[string]any{
			"key": s("scope"), "name": s("Scope"), "roles": []string{s("role")}, "description": s("d"),
		}},
		"owner": "someone-else", "hashEnabled": true, "createdTime": "1", "updatedTime": "2",
	}
}

// TestApplicationDTORoundTrip fills every property of WSO2's
// ApplicationDTO, POSTs it, PUTs other values, and requires GET to return
// what was sent, except the server-set properties (applicationServerSet).
func TestApplicationDTORoundTrip(t *testing.T) {
	e := newEnv(t, 0)
	body := fullApplicationBody(1)
	var keys []string
	for k := range body {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := slices.Clone(wso2ApplicationProperties)
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Fatalf("the test body does not fill every ApplicationDTO property:\nbody %v\nwant %v", keys, want)
	}
	n := e.outbox()
	var created map[string]any
	e.must(e.call("POST", devBase+"/applications", "bob-token", body), 201, &created)
	id, _ := created["applicationId"].(string)
	sameJSON(t, normalized(t, body, applicationServerSet), normalized(t, created, applicationServerSet))
	if created["owner"] != "bob" || created["status"] != "APPROVED" || id == "ignored" || created["createdTime"] == "1" {
		t.Errorf("server-set properties: %v", created)
	}
	var got map[string]any
	e.must(e.call("GET", devBase+"/applications/"+id, "bob-token", nil), 200, &got)
	sameJSON(t, normalized(t, body, applicationServerSet), normalized(t, got, applicationServerSet))
	if got["subscriptionCount"] != float64(0) || fmt.Sprint(got["keys"]) != "[]" {
		t.Errorf("subscriptionCount %v keys %v, want 0 and none", got["subscriptionCount"], got["keys"])
	}

	update := fullApplicationBody(2)
	update["applicationId"] = id
	e.must(e.call("PUT", devBase+"/applications/"+id, "bob-token", update), 200, nil)
	e.must(e.call("GET", devBase+"/applications/"+id, "bob-token", nil), 200, &got)
	sameJSON(t, normalized(t, update, applicationServerSet), normalized(t, got, applicationServerSet))
	// Each write appended an application event (the gateways see the tier
	// and token type change).
	if after := e.outbox(); after != n+2 {
		t.Errorf("outbox grew by %d, want 2 (create, update)", after-n)
	}
	var list struct {
		List []map[string]any
	}
	e.must(e.call("GET", devBase+"/applications", "bob-token", nil), 200, &list)
	if len(list.List) != 1 || list.List[0]["tokenType"] != "JWT" || list.List[0]["throttlingPolicy"] != "10PerMin" {
		t.Errorf("list after update = %v", list.List)
	}

	// Someone else's application is not found; a mismatched id, an unknown
	// nested field and an unknown policy are refused.
	e.rejects(404, func() resp { return e.call("PUT", devBase+"/applications/"+id, "eve-token", update) })
	mismatched := fullApplicationBody(2)
	mismatched["applicationId"] = "00000000-0000-0000-0000-000000000000"
	e.rejects(400, func() resp { return e.call("PUT", devBase+"/applications/"+id, "bob-token", mismatched) }, "does not match")
	nested := fullApplicationBody(2)
	nested["subscriptionScopes"] = []any{map[string]any{"key": "k", "colour": "blue"}}
	e.rejects(400, func() resp { return e.call("PUT", devBase+"/applications/"+id, "bob-token", nested) }, `unknown field "colour"`)
	gold := fullApplicationBody(2)
	gold["throttlingPolicy"], gold["applicationId"] = "Gold", id
	e.rejects(400, func() resp { return e.call("PUT", devBase+"/applications/"+id, "bob-token", gold) }, "throttlingPolicy")
}

// TestWSO2SampleApplicationAccepted: WSO2's ApplicationDTO example values
// (devportal v3 definition), with groups and attributes, are accepted.
func TestWSO2SampleApplicationAccepted(t *testing.T) {
	e := newEnv(t, 0)
	sample := `{"name":"CalculatorApp","throttlingPolicy":"Unlimited","description":"Sample calculator application",
		"tokenType":"JWT","groups":[],"attributes":{},"subscriptionScopes":[]}`
	var got map[string]any
	e.must(e.call("POST", devBase+"/applications", "bob-token", sample), 201, &got)
	var sent map[string]any
	if err := json.Unmarshal([]byte(sample), &sent); err != nil {
		t.Fatal(err)
	}
	sameJSON(t, normalized(t, sent, applicationServerSet), normalized(t, got, applicationServerSet))
}

// wso2SubscriptionProperties are the properties of WSO2's SubscriptionDTO
// (devportal v3); subscriptionServerSet those the server sets.
var (
	wso2SubscriptionProperties = []string{
		"subscriptionId", "applicationId", "apiId", "apiInfo", "applicationInfo", "throttlingPolicy",
		"requestedThrottlingPolicy", "status", "redirectionParams",
	}
	subscriptionServerSet = []string{"subscriptionId", "apiInfo", "applicationInfo", "status", "redirectionParams"}
)

func fullSubscriptionBody(appID, apiID, tier, requested string) map[string]any {
	return map[string]any{
		"subscriptionId": "ignored", "applicationId": appID, "apiId": apiID,
		"apiInfo": map[string]any{
			"id": apiID, "name": "x", "description": "x", "context": "/x", "version": "1", "type": "HTTP", "createdTime": "1",
			"provider": "x", "lifeCycleStatus": "PUBLISHED", "thumbnailUri": "/t", "avgRating": "4.5",
			"throttlingPolicies": []string{"Gold"}, "advertiseInfo": map[string]any{"advertised": false, "vendor": "WSO2"},
			"businessInformation": map[string]any{"businessOwner": "x"}, "isSubscriptionAvailable": true,
			"monetizationLabel": "Free", "gatewayVendor": "wso2",
			"additionalProperties": []any{map[string]any{"name": "n", "value": "v", "display": true}}, "monetizedInfo": false,
		},
		"applicationInfo": map[string]any{
			"applicationId": appID, "name": "x", "throttlingPolicy": "Unlimited", "description": "x", "status": "APPROVED",
			"groups": []string{}, "subscriptionCount": 9, "attributes": map[string]any{}, "owner": "x", "tokenType": "JWT",
			"createdTime": "1", "updatedTime": "2",
		},
		"throttlingPolicy": tier, "requestedThrottlingPolicy": requested, "status": "UNBLOCKED", "redirectionParams": "x",
	}
}

// TestSubscriptionDTORoundTrip fills every property of WSO2's
// SubscriptionDTO, POSTs it, PUTs a tier change, and requires GET to
// return what was sent, except the server-set properties, which show the
// server's values (apiInfo and applicationInfo describe the real API and
// application; a subscriber cannot set its own status).
func TestSubscriptionDTORoundTrip(t *testing.T) {
	e := newEnv(t, 0)
	api := e.publish()
	var app struct{ ApplicationID string }
	e.must(e.call("POST", devBase+"/applications", "bob-token", `{"name":"subs","throttlingPolicy":"Unlimited","groups":["g"]}`), 201, &app)
	body := fullSubscriptionBody(app.ApplicationID, api.ID, "Gold", "Unlimited")
	var keys []string
	for k := range body {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := slices.Clone(wso2SubscriptionProperties)
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Fatalf("the test body does not fill every SubscriptionDTO property:\nbody %v\nwant %v", keys, want)
	}
	var created map[string]any
	e.must(e.call("POST", devBase+"/subscriptions", "bob-token", body), 201, &created)
	id, _ := created["subscriptionId"].(string)
	sameJSON(t, normalized(t, body, subscriptionServerSet), normalized(t, created, subscriptionServerSet))
	apiInfo, _ := created["apiInfo"].(map[string]any)
	appInfo, _ := created["applicationInfo"].(map[string]any)
	if id == "ignored" || created["status"] != "UNBLOCKED" || apiInfo["name"] != "PetStore" || apiInfo["context"] != "/pets" ||
		appInfo["name"] != "subs" || appInfo["owner"] != "bob" || appInfo["subscriptionCount"] != float64(1) ||
		fmt.Sprint(appInfo["groups"]) != "[g]" {
		t.Errorf("server-set properties: %v", created)
	}
	var got map[string]any
	e.must(e.call("GET", devBase+"/subscriptions/"+id, "bob-token", nil), 200, &got)
	sameJSON(t, normalized(t, created, nil), normalized(t, got, nil))

	// A tier change: the event carries it to the gateways.
	n := e.outbox()
	update := fullSubscriptionBody(app.ApplicationID, api.ID, "Unlimited", "Gold")
	update["subscriptionId"] = id // a GET body sent back: its id is the path's
	update["status"] = "BLOCKED"  // not the subscriber's to set
	e.must(e.call("PUT", devBase+"/subscriptions/"+id, "bob-token", update), 200, nil)
	e.must(e.call("GET", devBase+"/subscriptions/"+id, "bob-token", nil), 200, &got)
	sameJSON(t, normalized(t, update, subscriptionServerSet), normalized(t, got, subscriptionServerSet))
	if got["status"] != "UNBLOCKED" {
		t.Errorf("status = %v after a PUT asking BLOCKED, want UNBLOCKED", got["status"])
	}
	if e.outbox() != n+1 {
		t.Errorf("outbox grew by %d, want 1", e.outbox()-n)
	}
	if op, _, sub := e.lastSubscriptionEvent(); op != "upsert" || sub.ThrottlingPolicy != "Unlimited" || sub.RequestedThrottlingPolicy != "Gold" {
		t.Errorf("last subscription event %s %+v", op, sub)
	}
	// The publisher sees the requested tier too.
	var pub struct {
		List []struct{ ThrottlingPolicy, RequestedThrottlingPolicy string }
	}
	e.must(e.call("GET", pubBase+"/subscriptions?apiId="+api.ID, "admin-token", nil), 200, &pub)
	if len(pub.List) != 1 || pub.List[0].ThrottlingPolicy != "Unlimited" || pub.List[0].RequestedThrottlingPolicy != "Gold" {
		t.Errorf("publisher subscriptions %+v", pub.List)
	}

	// Refused: a tier the API does not offer, a different API, someone
	// else's subscription, a nested unknown field.
	bronze := fullSubscriptionBody(app.ApplicationID, api.ID, "Bronze", "")
	bronze["subscriptionId"] = id
	e.rejects(400, func() resp { return e.call("PUT", devBase+"/subscriptions/"+id, "bob-token", bronze) }, "Bronze")
	other := fullSubscriptionBody(app.ApplicationID, "00000000-0000-0000-0000-000000000000", "Gold", "")
	other["subscriptionId"] = id
	e.rejects(400, func() resp { return e.call("PUT", devBase+"/subscriptions/"+id, "bob-token", other) }, "cannot change")
	e.rejects(404, func() resp { return e.call("PUT", devBase+"/subscriptions/"+id, "eve-token", update) })
	e.rejects(404, func() resp { return e.call("GET", devBase+"/subscriptions/"+id, "eve-token", nil) })
	nested := fullSubscriptionBody(app.ApplicationID, api.ID, "Gold", "")
	nested["subscriptionId"] = id
	nested["applicationInfo"].(map[string]any)["colour"] = "blue"
	e.rejects(400, func() resp { return e.call("PUT", devBase+"/subscriptions/"+id, "bob-token", nested) }, `unknown field "colour"`)
}

package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/apim-dev/apim/internal/samplebackend"
)

// TestBackendJWT: an API that enables the backend JWT gets, on every call
// the gateway allows, an X-JWT-Assertion that the gateway signed, that the
// backend verifies with the JWKS on the gateway's ops listener and that
// describes the caller with WSO2's claims; an API without the flag gets
// none, and a client cannot send the backend one of its own.
func TestBackendJWT(t *testing.T) {
	e := start(t, nil)
	admin := e.userToken("admin", e.adminPass, "apim:api_view apim:api_create apim:api_publish apim:subscribe apim:app_manage apim:sub_manage")
	claimsAPI := e.publishAPIWith(admin, "Claims", "/claims", []string{"Unlimited"}, map[string]any{"enableBackendJWT": true})
	plainAPI := e.publishAPI(admin, "NoClaims", "/noclaims", []string{"Unlimited"})
	app := e.createApp(admin, "ClaimsApp")
	e.subscribe(admin, app, claimsAPI, "Unlimited")
	e.subscribe(admin, app, plainAPI, "Unlimited")
	// Keys for the application's own tokens and for its users'.
	var keys struct{ ConsumerKey, ConsumerSecret string }
	e.must(200, "POST", "/api/am/devportal/v3/applications/"+app+"/generate-keys", admin, map[string]any{
		"keyType": "PRODUCTION", "grantTypesToBeSupported": []string{"client_credentials", "password"},
	}, &keys)
	appTok := e.token(keys.ConsumerKey, keys.ConsumerSecret, "grant_type=client_credentials")
	userTok := e.token(keys.ConsumerKey, keys.ConsumerSecret, "grant_type=password&username=admin&password="+url.QueryEscape(e.adminPass))

	// call returns what the backend received, once the API is live.
	call := func(path, tok string, header map[string]string) samplebackend.Echo {
		t.Helper()
		var echo samplebackend.Echo
		e.eventually(10*time.Second, func() string {
			status, _, body, _ := e.gatewayWith("GET", path, tok, header)
			if status != http.StatusOK {
				return fmt.Sprintf("GET %s = %d %s", path, status, body)
			}
			if err := json.Unmarshal([]byte(body), &echo); err != nil {
				return fmt.Sprintf("GET %s: %v: %s", path, err, body)
			}
			return ""
		})
		return echo
	}
	jwks := e.backendJWKS()
	want := func(over map[string]any) map[string]any {
		c := map[string]any{
			"iss":                                    "wso2.org/products/am",
			"http://wso2.org/claims/subscriber":      "admin",
			"http://wso2.org/claims/applicationid":   app,
			"http://wso2.org/claims/applicationname": "ClaimsApp",
			"http://wso2.org/claims/applicationtier": "Unlimited",
			"http://wso2.org/claims/apicontext":      "/claims/1.0.0",
			"http://wso2.org/claims/version":         "1.0.0",
			"http://wso2.org/claims/tier":            "Unlimited",
			"http://wso2.org/claims/keytype":         "PRODUCTION",
		}
		for k, v := range over {
			c[k] = v
		}
		return c
	}

	t.Run("the application's own token", func(t *testing.T) {
		echo := call("/claims/1.0.0/items/1", appTok, nil)
		got := verifyAssertion(t, jwks, echo)
		checkClaims(t, got, want(map[string]any{
			"http://wso2.org/claims/usertype": "APPLICATION",
			"http://wso2.org/claims/enduser":  "admin", // the application's owner, as WSO2
		}))
		if exp, ok := got["exp"].(float64); !ok || int64(exp) != tokenExpiry(t, appTok) {
			t.Errorf("exp %v, want the access token's %d", got["exp"], tokenExpiry(t, appTok))
		}
		if _, ok := echo.Headers["Authorization"]; ok {
			t.Error("the backend got the caller's access token")
		}
	})

	t.Run("a user's token", func(t *testing.T) {
		got := verifyAssertion(t, jwks, call("/claims/1.0.0/items/1", userTok, nil))
		checkClaims(t, got, want(map[string]any{
			"http://wso2.org/claims/usertype": "APPLICATION_USER",
			"http://wso2.org/claims/enduser":  "admin",
		}))
	})

	t.Run("one JWT per token", func(t *testing.T) {
		first := call("/claims/1.0.0/items/1", userTok, nil).Headers["X-Jwt-Assertion"]
		second := call("/claims/1.0.0/items/2", userTok, nil).Headers["X-Jwt-Assertion"]
		if first == "" || first != second {
			t.Errorf("two calls with one token got different JWTs:\n%s\n%s", first, second)
		}
	})

	t.Run("a client's own X-JWT-Assertion is replaced", func(t *testing.T) {
		forged := unsignedJWT(map[string]any{"iss": "wso2.org/products/am", "http://wso2.org/claims/enduser": "root"})
		echo := call("/claims/1.0.0/items/1", appTok, map[string]string{"X-JWT-Assertion": forged})
		if h := echo.Headers["X-Jwt-Assertion"]; strings.Contains(h, forged) || strings.Contains(h, ",") {
			t.Fatalf("the backend got the client's X-JWT-Assertion: %q", h)
		}
		checkClaims(t, verifyAssertion(t, jwks, echo), map[string]any{"http://wso2.org/claims/enduser": "admin"})
	})

	t.Run("an API without the flag gets none", func(t *testing.T) {
		echo := call("/noclaims/1.0.0/items/1", appTok, nil)
		if h, ok := echo.Headers["X-Jwt-Assertion"]; ok {
			t.Errorf("X-JWT-Assertion sent to the backend of an API without enableBackendJWT: %q", h)
		}
	})

	t.Run("turned off by a new revision", func(t *testing.T) {
		var def map[string]any
		e.must(200, "GET", "/api/am/publisher/v4/apis/"+claimsAPI, admin, nil, &def)
		if def["enableBackendJWT"] != true {
			t.Fatalf("GET the API: enableBackendJWT = %v, want true", def["enableBackendJWT"])
		}
		def["enableBackendJWT"] = false
		e.must(200, "PUT", "/api/am/publisher/v4/apis/"+claimsAPI, admin, def, nil)
		var rev struct{ ID string }
		e.must(201, "POST", "/api/am/publisher/v4/apis/"+claimsAPI+"/revisions", admin, map[string]any{"description": "no jwt"}, &rev)
		e.must(201, "POST", "/api/am/publisher/v4/apis/"+claimsAPI+"/deploy-revision?revisionId="+rev.ID, admin,
			[]map[string]any{{"name": "Default", "vhost": "localhost", "displayOnDevportal": true}}, nil)
		e.eventually(10*time.Second, func() string {
			status, _, body, _ := e.gateway("GET", "/claims/1.0.0/items/1", appTok)
			var echo samplebackend.Echo
			if status != http.StatusOK || json.Unmarshal([]byte(body), &echo) != nil {
				return fmt.Sprintf("got %d %s", status, body)
			}
			if h, ok := echo.Headers["X-Jwt-Assertion"]; ok {
				return "still sent: " + h
			}
			return ""
		})
	})
}

// backendJWKS fetches the gateway's backend JWT keys from its ops listener,
// as a backend would.
func (e *env) backendJWKS() jose.JSONWebKeySet {
	e.t.Helper()
	res, err := http.Get(e.opsURL + "/backend-jwks")
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	var set jose.JSONWebKeySet
	if res.StatusCode != http.StatusOK {
		e.t.Fatalf("GET /backend-jwks = %d", res.StatusCode)
	}
	if err := json.NewDecoder(res.Body).Decode(&set); err != nil {
		e.t.Fatal(err)
	}
	if len(set.Keys) == 0 {
		e.t.Fatal("GET /backend-jwks: no keys")
	}
	return set
}

// verifyAssertion checks the X-JWT-Assertion the backend got against the
// JWKS and returns its claims.
func verifyAssertion(t *testing.T, jwks jose.JSONWebKeySet, echo samplebackend.Echo) map[string]any {
	t.Helper()
	raw, ok := echo.Headers["X-Jwt-Assertion"]
	if !ok {
		t.Fatalf("the backend got no X-JWT-Assertion; headers %v", echo.Headers)
	}
	tok, err := josejwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatalf("X-JWT-Assertion %q: %v", raw, err)
	}
	kid := tok.Headers[0].KeyID
	keys := jwks.Key(kid)
	if len(keys) != 1 {
		t.Fatalf("kid %q is not in the gateway's JWKS", kid)
	}
	claims := map[string]any{}
	if err := tok.Claims(keys[0].Key, &claims); err != nil {
		t.Fatalf("X-JWT-Assertion does not verify with the gateway's JWKS: %v", err)
	}
	return claims
}

func checkClaims(t *testing.T, got, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("claim %s = %v, want %v", k, got[k], v)
		}
	}
}

// tokenExpiry reads the exp of an access token (a JWT) without verifying it.
func tokenExpiry(t *testing.T, tok string) int64 {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("access token is not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct{ Exp int64 }
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatal(err)
	}
	return c.Exp
}

// unsignedJWT is a JWT a client could make: claims, and no valid signature.
func unsignedJWT(claims map[string]any) string {
	payload, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256","typ":"JWT","kid":"forged"}`)) + "." + enc(payload) + "." + enc([]byte("not a signature"))
}

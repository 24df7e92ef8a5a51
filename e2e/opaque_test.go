package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestOpaqueTokensSplit runs the opaque-token flow with the control plane
// and a gateway as two processes: the gateway introspects over HTTPS with
// its gateway token and learns revocations from Kafka.
func TestOpaqueTokensSplit(t *testing.T) { opaqueFlow(t, startSplit(t)) }

// TestOpaqueTokensAllInOne runs it in one process: the sidecar asks the key
// manager in-process.
func TestOpaqueTokensAllInOne(t *testing.T) { opaqueFlow(t, start(t, nil)) }

// regenerateSecret regenerates the consumer secret of an application's
// keys and returns the new one.
func (e *env) regenerateSecret(token, app, keyMapping string) string {
	e.t.Helper()
	var out struct{ ConsumerSecret string }
	e.must(200, "POST", "/api/am/devportal/v3/applications/"+app+"/oauth-keys/"+keyMapping+"/regenerate-secret", token, nil, &out)
	if out.ConsumerSecret == "" {
		e.t.Fatal("regenerate-secret gave no secret")
	}
	return out.ConsumerSecret
}

// tokenAnswer asks the token endpoint for a client_credentials token and
// returns the status and the access token, if any.
func (e *env) tokenAnswer(id, secret string) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest("POST", e.apimURL+"/oauth2/token", strings.NewReader("grant_type=client_credentials"))
	if err != nil {
		e.t.Fatal(err)
	}
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &tok)
	return resp.StatusCode, tok.AccessToken
}

func opaqueFlow(t *testing.T, e *env) {
	admin := e.userToken("admin", e.adminPass, "apim:api_view apim:api_create apim:api_publish apim:subscribe apim:app_manage apim:sub_manage")
	api := e.publishAPI(admin, "Opaque", "/opaque", []string{"Unlimited"})
	const path = "/opaque/1.0.0/items/7"
	var app struct{ ApplicationID, TokenType string }
	e.must(201, "POST", "/api/am/devportal/v3/applications", admin, map[string]any{
		"name": "OpaqueApp", "throttlingPolicy": "Unlimited", "tokenType": "OAUTH",
	}, &app)
	if app.TokenType != "OAUTH" {
		t.Fatalf("application tokenType %q", app.TokenType)
	}
	e.subscribe(admin, app.ApplicationID, api, "Unlimited")
	var keys struct{ KeyMappingID, ConsumerKey, ConsumerSecret string }
	e.must(200, "POST", "/api/am/devportal/v3/applications/"+app.ApplicationID+"/generate-keys", admin, map[string]any{
		"keyType": "PRODUCTION", "grantTypesToBeSupported": []string{"client_credentials"}, "validityTime": "600",
	}, &keys)
	// A JWT application on the same API, for the regeneration of its secret.
	jwtApp := e.createApp(admin, "JWTApp")
	e.subscribe(admin, jwtApp, api, "Unlimited")
	var jwtKeys struct{ KeyMappingID, ConsumerKey, ConsumerSecret string }
	e.must(200, "POST", "/api/am/devportal/v3/applications/"+jwtApp+"/generate-keys", admin, map[string]any{
		"keyType": "PRODUCTION", "grantTypesToBeSupported": []string{"client_credentials"},
	}, &jwtKeys)

	tok := e.clientToken(keys.ConsumerKey, keys.ConsumerSecret)
	if !strings.HasPrefix(tok, "apim_at_") || strings.Contains(tok, ".") {
		t.Fatalf("an OAUTH application got %q, want an opaque token", tok)
	}
	ok := []string{`"path":"/backend/items/7"`}
	e.eventually(10*time.Second, e.answers(path, tok, 200, "", ok...))
	_, _, invalidBody, _ := e.gateway("GET", path, tok+"x")
	if !strings.Contains(invalidBody, `"code":"900901"`) {
		t.Fatalf("tampered opaque token: %s", invalidBody)
	}
	sameAsInvalid := func(tok, why string) func() string {
		return func() string {
			status, _, body, h := e.gateway("GET", path, tok)
			if status != 401 || body != invalidBody || h.Get("WWW-Authenticate") == "" {
				return why + ": " + http.StatusText(status) + " " + body
			}
			return ""
		}
	}
	e.eventually(2*time.Second, sameAsInvalid("apim_at_"+strings.Repeat("A", 43), "unknown opaque token"))

	t.Run("Revoked opaque token is refused", func(t *testing.T) {
		other := e.clientToken(keys.ConsumerKey, keys.ConsumerSecret)
		e.eventually(5*time.Second, e.answers(path, other, 200, "", ok...)) // in the gateway's cache now
		start := time.Now()
		e.revoke(keys.ConsumerKey, keys.ConsumerSecret, tok)
		took := e.eventually(5*time.Second, sameAsInvalid(tok, "revoked opaque token"))
		t.Logf("revoked opaque token refused %s after the revoke call returned, %s after it started", took, time.Since(start))
		e.eventually(5*time.Second, e.answers(path, other, 200, "", ok...))
	})

	var oldSecrets []string
	t.Run("Regenerated secret", func(t *testing.T) {
		earlier := e.clientToken(keys.ConsumerKey, keys.ConsumerSecret)
		jwtEarlier := e.clientToken(jwtKeys.ConsumerKey, jwtKeys.ConsumerSecret)
		e.eventually(5*time.Second, e.answers(path, earlier, 200, "", ok...))
		e.eventually(5*time.Second, e.answers(path, jwtEarlier, 200, "", ok...))
		oldSecrets = append(oldSecrets, keys.ConsumerSecret, jwtKeys.ConsumerSecret)
		start := time.Now()
		keys.ConsumerSecret = e.regenerateSecret(admin, app.ApplicationID, keys.KeyMappingID)
		jwtKeys.ConsumerSecret = e.regenerateSecret(admin, jwtApp, jwtKeys.KeyMappingID)
		// The old secrets get no token, at once.
		for i, ck := range []string{keys.ConsumerKey, jwtKeys.ConsumerKey} {
			if status, tok := e.tokenAnswer(ck, oldSecrets[i]); status != 401 || tok != "" {
				t.Errorf("an old secret: %d %q, want 401 and no token", status, tok)
			}
		}
		// The tokens issued before are refused at the gateway, cached as
		// they are.
		e.eventually(5*time.Second, sameAsInvalid(earlier, "opaque token issued before the regeneration"))
		t.Logf("earlier opaque token refused %s after the regeneration started", time.Since(start))
		e.eventually(5*time.Second, sameAsInvalid(jwtEarlier, "JWT issued before the regeneration"))
		// The new secrets work at once, and their tokens pass.
		fresh := e.clientToken(keys.ConsumerKey, keys.ConsumerSecret)
		if !strings.HasPrefix(fresh, "apim_at_") {
			t.Errorf("the new secret got %q", fresh)
		}
		e.eventually(5*time.Second, e.answers(path, fresh, 200, "", ok...))
		e.eventually(5*time.Second, e.answers(path, e.clientToken(jwtKeys.ConsumerKey, jwtKeys.ConsumerSecret), 200, "", ok...))
	})

	t.Run("No opaque token or secret in any log", func(t *testing.T) {
		final := e.clientToken(keys.ConsumerKey, keys.ConsumerSecret)
		e.eventually(5*time.Second, e.answers(path, final, 200, "", ok...))
		secrets := map[string]string{
			"first opaque token": tok, "last opaque token": final, "consumer secret": keys.ConsumerSecret,
			"JWT app secret": jwtKeys.ConsumerSecret, "opaque token body": final[len("apim_at_"):],
		}
		for i, old := range oldSecrets {
			secrets["old secret "+string(rune('1'+i))] = old
		}
		for _, p := range e.procs {
			logs := p.out.String()
			if logs == "" {
				t.Errorf("%s logged nothing", p.name)
			}
			// A separate gateway asked the control plane over HTTPS.
			if p.name == "control-plane" && !strings.Contains(logs, "token introspected for a gateway") {
				t.Error("the control plane logged no gateway introspection")
			}
			for what, s := range secrets {
				if strings.Contains(logs, s) {
					t.Errorf("the %s log holds the %s", p.name, what)
				}
			}
		}
	})
}

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/apim-dev/apim/internal/hydratest"
)

// TestExternalKeyManagerHydra registers Ory Hydra, a real OIDC provider,
// as an external key manager: an application maps a Hydra client, and the
// tokens Hydra issues to it call an API through Envoy under the usual
// subscription and scope checks; disabled or deleted, Hydra's tokens are
// refused.
func TestExternalKeyManagerHydra(t *testing.T) {
	h := hydratest.Start(t)
	e := start(t, nil)
	admin := e.userToken("admin", e.adminPass, "apim:api_view apim:api_create apim:api_publish apim:subscribe apim:app_manage apim:sub_manage apim:admin_operations")

	kmBody := map[string]any{
		"name": "Hydra", "type": "Hydra", "displayName": "Ory Hydra", "enabled": true,
		"wellKnownEndpoint": h.WellKnown,
		// Hydra puts the scopes in scp, an array.
		"claimMapping":               []map[string]string{{"remoteClaim": "scp", "localClaim": "scope"}},
		"enableMapOAuthConsumerApps": true, "enableOAuthAppCreation": false,
	}
	var km struct{ ID, Issuer string }
	e.must(201, "POST", "/api/am/admin/v4/key-managers", admin, kmBody, &km)
	if km.Issuer != h.Issuer {
		t.Fatalf("registered issuer %q, want %q from the discovery document", km.Issuer, h.Issuer)
	}

	ops := []map[string]any{
		{"target": "/items/{itemId}", "verb": "GET", "scopes": []string{"read"}},
		{"target": "/admin/{itemId}", "verb": "GET", "scopes": []string{"write"}},
	}
	api := e.publishAPIWith(admin, "HydraOrders", "/hydra-orders", []string{"Unlimited"}, map[string]any{"operations": ops})
	unsubscribed := e.publishAPI(admin, "HydraOther", "/hydra-other", []string{"Unlimited"})
	app := e.createApp(admin, "HydraApp")
	client := h.CreateClient(t, "read write")
	var keys struct{ KeyManager, ConsumerKey, Mode string }
	e.must(200, "POST", "/api/am/devportal/v3/applications/"+app+"/map-keys", admin, map[string]any{
		"consumerKey": client.ID, "consumerSecret": client.Secret, "keyType": "PRODUCTION", "keyManager": "Hydra",
	}, &keys)
	if keys.KeyManager != "Hydra" || keys.ConsumerKey != client.ID || keys.Mode != "MAPPED" {
		t.Fatalf("map-keys answered %+v", keys)
	}
	e.subscribe(admin, app, api, "Unlimited")
	tok := h.Token(t, client, "read")

	answers := func(path, token string, wantStatus int, wantCode string) func() string {
		return func() string {
			status, code, body, _ := e.gateway("GET", path, token)
			if status != wantStatus || code != wantCode {
				return fmt.Sprintf("GET %s = %d %s, want %d %s", path, status, body, wantStatus, wantCode)
			}
			return ""
		}
	}
	t.Run("Hydra's token calls through Envoy", func(t *testing.T) {
		took := e.eventually(10*time.Second, func() string {
			status, _, body, _ := e.gateway("GET", "/hydra-orders/1.0.0/items/42", tok)
			if status != 200 || !strings.Contains(body, `"path":"/backend/items/42"`) {
				return fmt.Sprintf("got %d %s", status, body)
			}
			return ""
		})
		t.Logf("first 200 after %s", took)
	})
	t.Run("scope from the mapped scp claim", func(t *testing.T) {
		e.expectDenied("GET", "/hydra-orders/1.0.0/admin/1", tok, 403, "900910")
		wide := h.Token(t, client, "read write")
		e.eventually(5*time.Second, answers("/hydra-orders/1.0.0/admin/1", wide, 200, ""))
	})
	t.Run("API not subscribed", func(t *testing.T) {
		_ = unsubscribed
		e.eventually(10*time.Second, func() string {
			if status, _, _, _ := e.gateway("GET", "/hydra-other/1.0.0/items/1", tok); status == 404 {
				return "HydraOther is not live yet"
			}
			return ""
		})
		e.expectDenied("GET", "/hydra-other/1.0.0/items/1", tok, 403, "900908")
	})
	t.Run("unmapped Hydra client", func(t *testing.T) {
		stranger := h.CreateClient(t, "read")
		e.expectDenied("GET", "/hydra-orders/1.0.0/items/1", h.Token(t, stranger, "read"), 401, "900901")
	})
	t.Run("disabled, then enabled again", func(t *testing.T) {
		off := map[string]any{}
		for k, v := range kmBody {
			off[k] = v
		}
		off["enabled"] = false
		e.must(200, "PUT", "/api/am/admin/v4/key-managers/"+km.ID, admin, off, nil)
		took := e.eventually(10*time.Second, answers("/hydra-orders/1.0.0/items/1", tok, 401, "900901"))
		t.Logf("401 after disabling in %s", took)
		e.must(200, "PUT", "/api/am/admin/v4/key-managers/"+km.ID, admin, kmBody, nil)
		e.eventually(10*time.Second, answers("/hydra-orders/1.0.0/items/1", tok, 200, ""))
	})
	t.Run("deleted", func(t *testing.T) {
		e.must(200, "DELETE", "/api/am/admin/v4/key-managers/"+km.ID, admin, nil, nil)
		took := e.eventually(10*time.Second, answers("/hydra-orders/1.0.0/items/1", tok, 401, "900901"))
		t.Logf("401 after deleting in %s", took)
		// A fresh token of the deleted key manager: an unknown issuer.
		e.expectDenied("GET", "/hydra-orders/1.0.0/items/1", h.Token(t, client, "read"), 401, "900901")
	})
}

// TestExternalKeyManagerSplit: a gateway-profile sidecar learns the key
// manager from the control plane's events, and again from its full load
// after a restart.
func TestExternalKeyManagerSplit(t *testing.T) {
	h := hydratest.Start(t)
	e := startSplit(t)
	admin := e.userToken("admin", e.adminPass, "apim:api_view apim:api_create apim:api_publish apim:subscribe apim:app_manage apim:sub_manage apim:admin_operations")
	e.must(201, "POST", "/api/am/admin/v4/key-managers", admin, map[string]any{
		"name": "Hydra", "type": "Hydra", "wellKnownEndpoint": h.WellKnown, "scopesClaim": "scp",
	}, nil)
	api := e.publishAPI(admin, "HydraSplit", "/hydra-split", []string{"Unlimited"})
	app := e.createApp(admin, "HydraSplitApp")
	client := h.CreateClient(t, "read")
	e.must(200, "POST", "/api/am/devportal/v3/applications/"+app+"/map-keys", admin, map[string]any{
		"consumerKey": client.ID, "consumerSecret": client.Secret, "keyType": "PRODUCTION", "keyManager": "Hydra",
	}, nil)
	e.subscribe(admin, app, api, "Unlimited")
	tok := h.Token(t, client, "read")
	live := func() string {
		if status, _, body, _ := e.gateway("GET", "/hydra-split/1.0.0/items/7", tok); status != 200 || !strings.Contains(body, `"path":"/backend/items/7"`) {
			return fmt.Sprintf("got %d %s", status, body)
		}
		return ""
	}
	e.eventually(15*time.Second, live)
	e.restartGateway()
	e.eventually(15*time.Second, live)
}

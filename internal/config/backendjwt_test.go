package config

import (
	"strings"
	"testing"
)

func TestBackendJWTKeys(t *testing.T) {
	c, err := Load(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Gateway.BackendJWTKey != "" || c.Gateway.BackendJWTIssuer != "wso2.org/products/am" {
		t.Errorf("defaults: key %q issuer %q, want none and WSO2's", c.Gateway.BackendJWTKey, c.Gateway.BackendJWTIssuer)
	}
	c, err = Load(strings.NewReader("gateway:\n  backend_jwt_key: /etc/apim/backend-jwt.pem\n"),
		[]string{"APIM_GATEWAY_BACKEND_JWT_ISSUER=https://gw.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Gateway.BackendJWTKey != "/etc/apim/backend-jwt.pem" || c.Gateway.BackendJWTIssuer != "https://gw.example.com" {
		t.Errorf("key %q issuer %q", c.Gateway.BackendJWTKey, c.Gateway.BackendJWTIssuer)
	}
	if _, err := Load(strings.NewReader("gateway:\n  backend_jwt_issuer: \"\"\n"), nil); err == nil ||
		!strings.Contains(err.Error(), "gateway.backend_jwt_issuer") {
		t.Errorf("empty issuer: err = %v, want it to name gateway.backend_jwt_issuer", err)
	}
}

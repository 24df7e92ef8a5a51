package app

import (
	"context"
	"net/http"

	"github.com/apim-dev/apim/authz"
	"github.com/apim-dev/apim/keymgr"
)

// Opaque access tokens reach ext_authz's introspection two ways. In
// all-in-one the sidecar asks the key manager in the same process. A
// gateway-profile sidecar asks the control plane at
// keymgr.PathGatewayIntrospect (RFC 7662 form, JSON answer) with the shared
// gateway.token as bearer credential: the secret it already holds for the
// full-state endpoint, so no OAuth client has to be provisioned per
// gateway, and the endpoint (unlike /oauth2/introspect) is open to nothing
// else.

// inProcessIntrospector asks km directly.
func inProcessIntrospector(km *keymgr.Server) authz.Introspector {
	return authz.IntrospectorFunc(func(ctx context.Context, token string) (*authz.Introspection, error) {
		in, err := km.IntrospectAccessToken(ctx, token)
		if err != nil {
			return nil, err
		}
		return &authz.Introspection{
			Active: in.Active, TokenType: in.TokenType, ClientID: in.ClientID, Subject: in.Subject,
			Scope: in.Scope, JTI: in.JTI, Issuer: in.Issuer,
			IssuedAt: in.IssuedAt, NotBefore: in.NotBefore, ExpiresAt: in.ExpiresAt,
		}, nil
	})
}

// remoteIntrospector asks the control plane at base over client.
func (s *system) remoteIntrospector(client *http.Client, base string) (authz.Introspector, error) {
	return authz.NewHTTPIntrospector(authz.HTTPIntrospectorConfig{
		URL: base + keymgr.PathGatewayIntrospect, Token: s.cfg.Gateway.Token, Client: client,
	})
}

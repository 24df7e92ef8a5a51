package authz

import (
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-jose/go-jose/v4"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/apim-dev/apim/ratelimit"
)

// serveGRPC starts s and a health server on a loopback port and returns a
// connection to them.
func serveGRPC(t testing.TB, s *Server) *grpc.ClientConn {
	t.Helper()
	return serveAuthz(t, s)
}

// serveAuthz serves a as envoy.service.auth.v3.Authorization, with the
// health service beside it, on loopback, and returns a client connection.
// opts come after the sidecar's own server options.
func serveAuthz(t testing.TB, a authv3.AuthorizationServer, opts ...grpc.ServerOption) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(append([]grpc.ServerOption{grpc.ForceServerCodecV2(ratelimit.Codec{})}, opts...)...) // as the sidecar serves it
	authv3.RegisterAuthorizationServer(g, a)
	healthpb.RegisterHealthServer(g, health.NewServer())
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func TestCheckOverGRPC(t *testing.T) {
	key, _ := keys(t)
	s := newTestServer(t, func() time.Time { return testNow })
	client := authv3.NewAuthorizationClient(serveGRPC(t, s))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	resp, err := client.Check(ctx, request("api-gold", "Bearer "+sign(t, jose.RS256, key, testKid, tokenClaims("ck-sbx", nil)), nil))
	if err != nil {
		t.Fatal(err)
	}
	ok := resp.GetOkResponse()
	if resp.GetStatus().GetCode() != 0 || ok == nil || len(ok.GetHeaders()) != 1 {
		t.Fatalf("response = %v", resp)
	}
	if h := ok.GetHeaders()[0]; h.GetHeader().GetKey() != HeaderKeyType || h.GetHeader().GetValue() != "SANDBOX" {
		t.Errorf("header = %v", h)
	}
	if got := resp.GetDynamicMetadata().GetFields()[MetaSubscriptionTier].GetStringValue(); got != "Gold" {
		t.Errorf("subscription_tier = %q", got)
	}

	resp, err = client.Check(ctx, request("api-gold", "Bearer not.a.token", nil))
	if err != nil {
		t.Fatalf("a bad token gave a gRPC error: %v", err)
	}
	assertDenied(t, resp, denied{401, "900901", "Invalid Credentials", "", true})
}

func TestJWKS(t *testing.T) {
	key, other := keys(t)
	var fetches atomic.Int32
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		body, err := jsonMarshal(set)
		if err != nil {
			t.Error(err)
		}
		// A key type go-jose cannot parse must not spoil the rest.
		body = strings.Replace(body, `"keys":[`, `"keys":[{"kty":"weird","kid":"w"},`, 1)
		fmt.Fprint(w, body)
	}))
	defer srv.Close()

	now := testNow
	j, err := NewJWKS(JWKSConfig{URL: srv.URL, Client: srv.Client(), MinRefresh: 30 * time.Second, Now: func() time.Time { return now }, Logger: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	k, ok := j.Key("k1")
	if !ok || !key.PublicKey.Equal(k) {
		t.Fatalf("Key(k1) = %v, %v", k, ok)
	}
	if _, ok := j.Key("k2"); ok {
		t.Fatal("Key(k2) found")
	}
	if _, ok := j.Key("k3"); ok {
		t.Fatal("Key(k3) found")
	}
	if n := fetches.Load(); n != 1 {
		t.Errorf("fetches = %d, want 1 (unknown kids within MinRefresh do not fetch)", n)
	}
	// The issuer rotates in k2; after MinRefresh an unknown kid fetches.
	set.Keys = append(set.Keys, jose.JSONWebKey{Key: &other.PublicKey, KeyID: "k2", Algorithm: "RS256", Use: "sig"})
	now = now.Add(31 * time.Second)
	if k, ok := j.Key("k2"); !ok || !other.PublicKey.Equal(k) {
		t.Fatalf("Key(k2) after rotation = %v, %v", k, ok)
	}
	if n := fetches.Load(); n != 2 {
		t.Errorf("fetches = %d, want 2", n)
	}

	// Start refreshes at once and stops with its context.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- j.Start(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for fetches.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Start = %v", err)
	}
	if fetches.Load() < 3 {
		t.Error("Start did not fetch")
	}

	// A server that fails keeps the keys already held.
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusBadGateway) })
	if err := j.Refresh(context.Background()); err == nil || !strings.Contains(err.Error(), "502") {
		t.Errorf("Refresh = %v, want status 502", err)
	}
	if _, ok := j.Key("k1"); !ok {
		t.Error("k1 lost after a failed refresh")
	}
}

// The JWKS key source plugs into the server.
func TestCheckWithJWKS(t *testing.T) {
	key, _ := keys(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := jsonMarshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: testKid, Use: "sig"}}})
		fmt.Fprint(w, body)
	}))
	defer srv.Close()
	j, err := NewJWKS(JWKSConfig{URL: srv.URL, Client: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t, func() time.Time { return testNow })
	s.keys = j
	resp, err := s.Check(context.Background(), request("api-unl", "Bearer "+sign(t, jose.RS256, key, testKid, tokenClaims("ck-prod", nil)), nil))
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("Check = %v, %v", resp, err)
	}
	var _ Keys = KeysFunc(func(string) (crypto.PublicKey, bool) { return nil, false })
}

func TestNewJWKSRequiresConfig(t *testing.T) {
	_, err := NewJWKS(JWKSConfig{})
	if err == nil || !strings.Contains(err.Error(), "jwks.url") || !strings.Contains(err.Error(), "jwks.client") {
		t.Errorf("NewJWKS(JWKSConfig{}) = %v", err)
	}
}

func jsonMarshal(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

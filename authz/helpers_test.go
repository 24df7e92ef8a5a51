package authz

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/rs/zerolog"

	"github.com/apim-dev/apim/internal/gwstate"
	"github.com/apim-dev/apim/internal/model"
)

const (
	testIssuer = "https://localhost:9443/oauth2/token"
	testKid    = "k1"
)

var (
	testNow    = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	keyOnce    sync.Once
	testKey    *rsa.PrivateKey
	otherKey   *rsa.PrivateKey
	testKeyErr error
)

func keys(t testing.TB) (*rsa.PrivateKey, *rsa.PrivateKey) {
	t.Helper()
	keyOnce.Do(func() {
		if testKey, testKeyErr = rsa.GenerateKey(rand.Reader, 2048); testKeyErr != nil {
			return
		}
		otherKey, testKeyErr = rsa.GenerateKey(rand.Reader, 2048)
	})
	if testKeyErr != nil {
		t.Fatal(testKeyErr)
	}
	return testKey, otherKey
}

// sign returns a compact JWS of claims signed with key under kid and alg.
func sign(t testing.TB, alg jose.SignatureAlgorithm, key any, kid string, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := josejwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// claims returns valid claims for client, with overrides applied (a nil
// value deletes the claim).
func tokenClaims(client string, over map[string]any) map[string]any {
	c := map[string]any{
		"iss":   testIssuer,
		"sub":   "alice@carbon.super",
		"azp":   client,
		"aud":   client,
		"exp":   testNow.Add(time.Hour).Unix(),
		"iat":   testNow.Add(-time.Minute).Unix(),
		"nbf":   testNow.Add(-time.Minute).Unix(),
		"scope": "default read:pets",
	}
	for k, v := range over {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func testState() *model.GatewayState {
	sub := func(id, api, status, tier string) model.Subscription {
		return model.Subscription{ID: id, ApplicationID: "app-1", APIID: api, ThrottlingPolicy: tier, Status: status, Generation: 1}
	}
	return &model.GatewayState{
		Environment:  model.DefaultEnvironment,
		Applications: []model.Application{{ID: "app-1", Name: "PizzaApp", Owner: "alice", ThrottlingPolicy: "Unlimited", Status: "APPROVED", Generation: 1}},
		KeyMappings: []model.KeyMapping{
			{ID: "km-p", ApplicationID: "app-1", KeyType: model.KeyTypeProduction, ConsumerKey: "ck-prod", Generation: 1},
			{ID: "km-s", ApplicationID: "app-1", KeyType: model.KeyTypeSandbox, ConsumerKey: "ck-sbx", Generation: 1},
			{ID: "km-x", ApplicationID: "app-gone", KeyType: model.KeyTypeProduction, ConsumerKey: "ck-orphan", Generation: 1},
		},
		Subscriptions: []model.Subscription{
			sub("sub-gold", "api-gold", model.SubUnblocked, "Gold"),
			sub("sub-unl", "api-unl", model.SubUnblocked, "Unlimited"),
			sub("sub-blk", "api-blk", model.SubBlocked, "Gold"),
			sub("sub-pob", "api-pob", model.SubProdOnlyBlocked, "Gold"),
			sub("sub-hold", "api-hold", model.SubOnHold, "Gold"),
			sub("sub-rej", "api-rej", model.SubRejected, "Gold"),
		},
		Policies: []model.Policy{
			{Level: model.LevelSubscription, Name: "Gold", RequestCount: 5000, UnitTime: 1, TimeUnit: "min", StopOnQuotaReach: true, Generation: 1},
			{Level: model.LevelSubscription, Name: "Unlimited", RequestCount: 0, UnitTime: 1, TimeUnit: "min", Generation: 1},
			{Level: model.LevelAPI, Name: "10KPerMin", RequestCount: 10000, UnitTime: 1, TimeUnit: "min", StopOnQuotaReach: true, Generation: 1},
		},
	}
}

func newTestServer(t testing.TB, now func() time.Time) *Server {
	t.Helper()
	pub, _ := keys(t)
	st := gwstate.NewStore()
	st.Replace(testState())
	s, err := New(Config{
		Keys: KeysFunc(func(kid string) (crypto.PublicKey, bool) {
			if kid == testKid {
				return &pub.PublicKey, true
			}
			return nil, false
		}),
		Issuers: []string{testIssuer},
		State:   st,
		Logger:  zerolog.New(zerolog.NewTestWriter(t)),
		Now:     now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// request is a CheckRequest for api with the route's context extensions.
func request(api, token string, ext map[string]string) *authv3.CheckRequest {
	e := map[string]string{
		ExtAPIID: api, ExtAPIName: "Pets", ExtAPIVersion: "1.0.0", ExtAPIContext: "/pets",
		ExtEnvironment: model.DefaultEnvironment, ExtResource: "GET /pets/{id}",
		ExtAuthType: model.AuthApplicationUser, ExtScopes: "", ExtTier: "Unlimited",
		ExtHasSandbox: "true", ExtHasProduction: "true",
	}
	for k, v := range ext {
		e[k] = v
	}
	// Packed into one extension, as the xDS translator sets it.
	var fields [][2]string
	for _, k := range slices.Sorted(maps.Keys(e)) {
		fields = append(fields, [2]string{k, e[k]})
	}
	headers := map[string]string{":method": "GET", ":path": "/pets/1.0.0/pets/7", "host": "localhost"}
	if token != "" {
		headers["authorization"] = token
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/pets/1.0.0/pets/7", Headers: headers,
		}},
		ContextExtensions: map[string]string{model.RouteFieldsKey: model.EncodeRouteFields(fields...)},
	}}
}

// rawHeaders moves req's headers into the raw header list Envoy sends with
// encode_raw_headers, as the listener sets it.
func rawHeaders(req *authv3.CheckRequest) *authv3.CheckRequest {
	h := req.GetAttributes().GetRequest().GetHttp()
	h.HeaderMap = &corev3.HeaderMap{}
	for k, v := range h.GetHeaders() {
		h.HeaderMap.Headers = append(h.HeaderMap.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
	}
	h.Headers = nil
	return req
}

package authz

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/apim-dev/apim/internal/model"
)

func TestRouteFields(t *testing.T) {
	key, _ := keys(t)
	s := newTestServer(t, func() time.Time { return testNow })
	token := "Bearer " + sign(t, jose.RS256, key, testKid, tokenClaims("ck-prod", nil))
	noResource := denied{404, "900906", "No matching resource found for given API Request", "No matching resource found in the API for the given request", false}

	// A control plane from before the packing sets each field as its own
	// extension: still served.
	legacy := request("api-gold", token, nil)
	fields, err := model.DecodeRouteFields(legacy.Attributes.ContextExtensions[model.RouteFieldsKey])
	if err != nil {
		t.Fatal(err)
	}
	legacy.Attributes.ContextExtensions = fields
	if resp, _ := s.Check(context.Background(), legacy); resp.GetOkResponse() == nil {
		t.Errorf("unpacked extensions: denied %v", resp)
	}

	// A value that is not a query matches no resource.
	broken := request("api-gold", token, nil)
	broken.Attributes.ContextExtensions[model.RouteFieldsKey] = "api_id=%zz"
	resp, _ := s.Check(context.Background(), broken)
	assertDenied(t, resp, noResource)

	// Fields decoded once per distinct value, and no more than the bound
	// kept: the cache starts over rather than grow.
	for i := range maxRouteFields + 10 {
		s.routes.fields(request(fmt.Sprintf("api-%d", i), "", nil).Attributes)
	}
	if n := len(s.routes.m); n == 0 || n > maxRouteFields {
		t.Errorf("%d route fields kept, want 1..%d", n, maxRouteFields)
	}
	if resp, _ := s.Check(context.Background(), request("api-gold", token, nil)); resp.GetOkResponse() == nil {
		t.Errorf("after the cache started over: denied %v", resp)
	}
}

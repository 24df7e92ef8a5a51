package authz

import (
	"sync"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/apim-dev/apim/internal/model"
)

// maxRouteFields bounds routeFields: far more routes than a gateway
// serves, so it is reached only if values churn, and then starts over.
const maxRouteFields = 1 << 16

// routeFields decodes each route's packed context extension once: Envoy
// sends the same value on every request to a route.
type routeFields struct {
	mu sync.RWMutex
	m  map[string]map[string]string // packed → fields; never modified once stored
}

// fields is the route fields of a Check: the decoded model.RouteFieldsKey,
// or the context extensions themselves when a control plane from before
// the packing set each field as its own extension. An undecodable value
// has no fields, so the request matches no resource.
func (r *routeFields) fields(attrs *authv3.AttributeContext) map[string]string {
	ext := attrs.GetContextExtensions()
	packed, ok := ext[model.RouteFieldsKey]
	if !ok {
		return ext
	}
	r.mu.RLock()
	f, ok := r.m[packed]
	r.mu.RUnlock()
	if ok {
		return f
	}
	f, err := model.DecodeRouteFields(packed)
	if err != nil {
		return nil
	}
	r.mu.Lock()
	if r.m == nil || len(r.m) >= maxRouteFields {
		r.m = make(map[string]map[string]string)
	}
	r.m[packed] = f
	r.mu.Unlock()
	return f
}

package model

import (
	"net/url"
	"strings"
)

// RouteFieldsKey is the one ext_authz context extension of every route:
// the route's fields (API id, resource, auth type, ...) packed by
// EncodeRouteFields. One map entry instead of a dozen is less for Envoy to
// build and for the sidecar to decode on every request; the sidecar
// decodes each distinct value once and keeps the result.
const RouteFieldsKey = "route"

// EncodeRouteFields packs key/value pairs, in the order given, as a URL
// query: any byte in a key or value survives.
func EncodeRouteFields(kvs ...[2]string) string {
	var b strings.Builder
	for i, kv := range kvs {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(kv[0]))
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(kv[1]))
	}
	return b.String()
}

// DecodeRouteFields unpacks what EncodeRouteFields packed. A key given
// twice keeps its first value.
func DecodeRouteFields(s string) (map[string]string, error) {
	q, err := url.ParseQuery(s)
	if err != nil {
		return nil, err
	}
	m := make(map[string]string, len(q))
	for k, v := range q {
		m[k] = v[0]
	}
	return m, nil
}

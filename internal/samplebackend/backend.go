// Package samplebackend is the small backend that `make run` and the
// end-to-end tests put behind the gateway: it answers every request with JSON
// describing what reached it.
package samplebackend

import (
	"encoding/json"
	"net/http"
	"strings"
)

// Echo is what the backend answers.
type Echo struct {
	Service string            `json:"service"`
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Query   string            `json:"query,omitempty"`
	Headers map[string]string `json:"headers"`
}

// Handler answers every request with an Echo naming service.
func Handler(service string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e := Echo{Service: service, Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Headers: map[string]string{}}
		for k, v := range r.Header {
			if strings.HasPrefix(strings.ToLower(k), "x-") || k == "Authorization" {
				e.Headers[k] = strings.Join(v, ",")
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(e) // an Echo always encodes; a failed write means the client went away
	})
}

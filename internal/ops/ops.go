// Package ops serves what operators probe on every profile: /healthz (the
// process is up), /readyz (every part has finished starting) and Prometheus
// /metrics.
package ops

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Readiness collects the checks that must pass before /readyz does.
type Readiness struct {
	mu     sync.Mutex
	checks map[string]func() bool
}

// NewReadiness returns a Readiness with no checks: ready.
func NewReadiness() *Readiness {
	return &Readiness{checks: map[string]func() bool{}}
}

// Add makes /readyz wait until ready reports true.
func (r *Readiness) Add(part string, ready func() bool) {
	r.mu.Lock()
	r.checks[part] = ready
	r.mu.Unlock()
}

// Pending lists the parts not yet ready, sorted.
func (r *Readiness) Pending() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for p, ready := range r.checks {
		if !ready() {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// NewRegistry returns a registry with the Go and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler serves /healthz, /readyz and /metrics.
func Handler(ready *Readiness, reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n")) // a failed write means the client went away
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if p := ready.Pending(); len(p) > 0 {
			http.Error(w, "waiting for: "+strings.Join(p, ", "), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n")) // a failed write means the client went away
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}

// Serve serves h on l until ctx is done, then shuts down gracefully.
func Serve(ctx context.Context, srv *http.Server, l net.Listener, tlsOn bool) error {
	errc := make(chan error, 1)
	go func() {
		var err error
		if tlsOn {
			err = srv.ServeTLS(l, "", "")
		} else {
			err = srv.Serve(l)
		}
		errc <- err
	}()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	}
}

// Package runner starts the long-running parts of a profile together: when
// the context is cancelled they all stop, and when one fails the rest stop.
// A part that panics is not a failure of the whole: the panic is logged with
// its stack, counted, and the part started again.
package runner

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
)

// Runner is a long-running part. Start blocks until ctx is done or the part
// fails; it returns nil after a clean stop.
type Runner interface {
	Start(ctx context.Context) error
}

// Func adapts a function to Runner.
type Func func(ctx context.Context) error

// Start calls f.
func (f Func) Start(ctx context.Context) error { return f(ctx) }

var _ Runner = Func(nil)

// Named gives r a name for the logs and metrics of Group.
func Named(name string, r Runner) Runner { return named{name, r} }

type named struct {
	name string
	Runner
}

func nameOf(r Runner) string {
	if n, ok := r.(named); ok {
		return n.name
	}
	return fmt.Sprintf("%T", r)
}

// Restart bounds: a part that panics more than maxPanics times within
// panicWindow is failing, not unlucky, and stops the group.
const (
	maxPanics   = 5
	panicWindow = time.Minute
)

// Group runs runners under one errgroup.
type Group struct {
	Logger zerolog.Logger
	// Panics counts recovered panics by component; nil counts nothing.
	Panics *prometheus.CounterVec
	// Backoff is the wait before a part that panicked starts again;
	// default one second.
	Backoff time.Duration
}

// NewPanicCounter is the counter of Group.Panics and of the gRPC
// interceptors, apim_panics_total{component}; register it once.
func NewPanicCounter() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "apim", Name: "panics_total",
		Help: "Panics recovered, by component: a runner (started again) or a gRPC service (the call failed with Internal).",
	}, []string{"component"})
}

// Run starts every runner and waits for all of them to stop. The first error
// cancels the others and is returned. A runner that panics is started again
// after the backoff, up to maxPanics times a minute.
func (g Group) Run(ctx context.Context, runners ...Runner) error {
	eg, ctx := errgroup.WithContext(ctx)
	for _, r := range runners {
		eg.Go(func() error { return g.supervise(ctx, r) })
	}
	return eg.Wait()
}

// Run is Group{}.Run: panics logged nowhere, counted nowhere.
func Run(ctx context.Context, runners ...Runner) error {
	return Group{Logger: zerolog.Nop()}.Run(ctx, runners...)
}

func (g Group) supervise(ctx context.Context, r Runner) error {
	name := nameOf(r)
	backoff := g.Backoff
	if backoff <= 0 {
		backoff = time.Second
	}
	var panics []time.Time
	for {
		p, err := startRecovering(ctx, r)
		if p == nil {
			return err
		}
		now := time.Now()
		panics = append(panics, now)
		for len(panics) > 0 && now.Sub(panics[0]) > panicWindow {
			panics = panics[1:]
		}
		g.count(name)
		g.Logger.Error().Str("runner", name).Str("panic", fmt.Sprint(p.value)).Str("stack", string(p.stack)).
			Int("recent_panics", len(panics)).Msg("runner panicked; starting it again")
		if len(panics) > maxPanics {
			return fmt.Errorf("%s panicked %d times within %v, last: %v", name, len(panics), panicWindow, p.value)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
	}
}

type recovered struct {
	value any
	stack []byte
}

func startRecovering(ctx context.Context, r Runner) (p *recovered, err error) {
	defer func() {
		if v := recover(); v != nil {
			p = &recovered{value: v, stack: debug.Stack()}
		}
	}()
	err = r.Start(ctx)
	if pe := (*PanicError)(nil); errors.As(err, &pe) {
		return &recovered{value: pe.Value, stack: pe.Stack}, nil
	}
	return nil, err
}

func (g Group) count(component string) {
	if g.Panics != nil {
		g.Panics.WithLabelValues(component).Inc()
	}
}

// PanicError is a panic recovered in a goroutine of a runner: returned by
// the runner's Start, Group treats it as the runner's own panic.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// Safe wraps a goroutine of a runner: a panic in f cancels ctx, made by
// context.WithCancelCause, with a *PanicError; the runner returns it with
// Cause once ctx is done.
func Safe(cancel context.CancelCauseFunc, f func()) func() {
	return func() {
		defer func() {
			if v := recover(); v != nil {
				cancel(&PanicError{Value: v, Stack: debug.Stack()})
			}
		}()
		f()
	}
}

// Cause is the *PanicError that cancelled ctx, or nil when ctx was
// cancelled (or not) for any other reason: what a runner returns once its
// context is done.
func Cause(ctx context.Context) error {
	var p *PanicError
	if errors.As(context.Cause(ctx), &p) {
		return p
	}
	return nil
}

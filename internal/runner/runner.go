// Package runner starts the long-running parts of a profile together: when
// the context is cancelled they all stop, and when one fails the rest stop.
package runner

import (
	"context"

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

// Run starts every runner and waits for all of them to stop. The first error
// cancels the others and is returned.
func Run(ctx context.Context, runners ...Runner) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, r := range runners {
		g.Go(func() error { return r.Start(ctx) })
	}
	return g.Wait()
}

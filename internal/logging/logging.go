// Package logging builds the one zerolog root logger of the process and the
// adapters that route library logs into it.
package logging

import (
	"fmt"
	"io"
	"time"

	"github.com/rs/zerolog"
)

// New returns the root logger writing JSON lines to w at the given level
// ("debug", "info", "warn", "error").
func New(w io.Writer, level string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return zerolog.Logger{}, fmt.Errorf("log.level: unknown level %q", level)
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

// Component returns the child logger of one component.
func Component(root zerolog.Logger, name string) zerolog.Logger {
	return root.With().Str("component", name).Logger()
}

// XDS adapts a zerolog logger to go-control-plane's log.Logger.
type XDS struct{ L zerolog.Logger }

// Debugf logs at debug level.
func (x XDS) Debugf(format string, args ...any) { x.L.Debug().Msgf(format, args...) }

// Infof logs at info level.
func (x XDS) Infof(format string, args ...any) { x.L.Info().Msgf(format, args...) }

// Warnf logs at warn level.
func (x XDS) Warnf(format string, args ...any) { x.L.Warn().Msgf(format, args...) }

// Errorf logs at error level.
func (x XDS) Errorf(format string, args ...any) { x.L.Error().Msgf(format, args...) }

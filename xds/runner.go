package xds

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"
)

// retryDelay is how long the runner waits before loading again after the
// deployment source failed.
const retryDelay = time.Second

// run builds every environment once, calls ready, then rebuilds on
// notifications: the first one starts a hold-off that each further one
// restarts, and the rebuild happens when the hold-off ends or MaxDelay after
// the first, whichever is sooner. It returns nil when ctx is done, or the
// error of the gRPC server.
func (s *Server) run(ctx context.Context, ready func(), serveErr <-chan error) error {
	s.rebuild(ctx)
	ready()
	var hold, deadline <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-serveErr:
			return fmt.Errorf("xds: serve: %w", err)
		case <-s.dirty:
			if deadline == nil {
				deadline = time.After(s.cfg.MaxDelay)
			}
			hold = time.After(s.cfg.HoldOff)
			continue
		case <-hold:
		case <-deadline:
		}
		hold, deadline = nil, nil
		s.rebuild(ctx)
	}
}

// rebuild translates every environment and sets the snapshots that changed.
// A failed environment keeps its last good snapshot; a failure to load
// schedules another attempt.
func (s *Server) rebuild(ctx context.Context) {
	lctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	envs, err := s.cfg.Source.Environments(lctx)
	cancel()
	if err != nil {
		s.log.Error().Err(err).Msg("xds: load environments; retrying")
		time.AfterFunc(retryDelay, s.Notify)
		return
	}
	for _, env := range envs {
		if ctx.Err() != nil {
			return
		}
		version, err := s.rebuildEnvironment(ctx, env)
		s.mu.Lock()
		e := s.envs[env]
		if e == nil {
			e = &envState{}
			s.envs[env] = e
		}
		e.lastErr = err
		s.mu.Unlock()
		if err != nil {
			s.log.Error().Err(err).Str("environment", env).Str("serving_version", e.version).Msg("xds: environment not updated; keeping the last good snapshot")
			if errors.Is(err, errLoad) {
				time.AfterFunc(retryDelay, s.Notify)
			}
			continue
		}
		if version != "" {
			s.log.Info().Str("environment", env).Str("version", version).Msg("xds: snapshot set")
		}
	}
}

var errLoad = errors.New("load deployments")

// rebuildEnvironment loads, translates and, if the content changed, sets the
// snapshot of one environment. It returns the new version, or "" if nothing
// changed.
func (s *Server) rebuildEnvironment(ctx context.Context, env string) (string, error) {
	lctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	ds, err := s.cfg.Source.Deployments(lctx, env)
	cancel()
	if err != nil {
		return "", fmt.Errorf("%w of environment %s: %w", errLoad, env, err)
	}
	res, err := Translate(Input{
		Environment:       env,
		Deployments:       ds,
		ListenerAddress:   s.cfg.ListenerAddress,
		ListenerPort:      s.cfg.ListenerPort,
		Sidecar:           s.cfg.Sidecar,
		RateLimitFailOpen: s.cfg.RateLimitFailOpen,
		UpstreamCAFile:    s.cfg.UpstreamCAFile,
	})
	if err != nil {
		return "", fmt.Errorf("translate environment %s: %w", env, err)
	}
	hash, err := contentHash(res)
	if err != nil {
		return "", fmt.Errorf("environment %s: %w", env, err)
	}

	s.mu.Lock()
	e := s.envs[env]
	if e != nil && e.version != "" && e.hash == hash {
		s.mu.Unlock()
		return "", nil
	}
	s.version++
	version := strconv.FormatUint(s.version, 10)
	s.mu.Unlock()

	snap, err := res.Snapshot(version)
	if err != nil {
		return "", fmt.Errorf("environment %s: %w", env, err)
	}
	if err := s.cache.SetSnapshot(ctx, env, snap); err != nil {
		return "", fmt.Errorf("set snapshot of environment %s: %w", env, err)
	}
	s.mu.Lock()
	if e = s.envs[env]; e == nil {
		e = &envState{}
		s.envs[env] = e
	}
	e.version, e.hash = version, hash
	s.mu.Unlock()
	return version, nil
}

// contentHash identifies the content of the resources, so that a rebuild
// that changes nothing does not push a new version.
func contentHash(res Resources) ([32]byte, error) {
	h := sha256.New()
	opts := proto.MarshalOptions{Deterministic: true}
	for _, rs := range [][]types.Resource{res.Listeners, res.Routes, res.Clusters} {
		for _, r := range rs {
			b, err := opts.Marshal(r)
			if err != nil {
				return [32]byte{}, fmt.Errorf("hash %s: %w", resourceName(r), err)
			}
			h.Write([]byte(strconv.Itoa(len(b))))
			h.Write(b)
		}
	}
	return [32]byte(h.Sum(nil)), nil
}

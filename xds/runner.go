package xds

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"
)

// retryDelay is how long the runner waits before loading again after the
// deployment source failed.
const retryDelay = time.Second

// run builds every environment once, then rebuilds on notifications: the
// first one starts a hold-off that each further one restarts, and the rebuild
// happens when the hold-off ends or MaxDelay after the first, whichever is
// sooner. After the first rebuild in which every environment has a snapshot
// it marks the server ready and calls ready. It returns nil when ctx is done,
// or the error of the gRPC server.
func (s *Server) run(ctx context.Context, ready func(), serveErr <-chan error) error {
	rebuild := func() {
		if s.rebuild(ctx) && !s.ready.Swap(true) {
			s.log.Info().Msg("xds: every environment has a snapshot; ready")
			ready()
		}
	}
	rebuild()
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
		rebuild()
	}
}

// rebuild translates every environment and sets the snapshots that changed.
// A failed environment keeps its last good snapshot; a failure to load
// schedules another attempt. It reports whether every environment now has a
// snapshot in the cache.
func (s *Server) rebuild(ctx context.Context) bool {
	lctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	envs, err := s.cfg.Source.Environments(lctx)
	cancel()
	if err != nil {
		s.log.Error().Err(err).Msg("xds: load environments; retrying")
		time.AfterFunc(retryDelay, s.Notify)
		return false
	}
	for _, env := range envs {
		if ctx.Err() != nil {
			return false
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
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, env := range envs {
		if e := s.envs[env]; e == nil || e.version == "" {
			return false
		}
	}
	return true
}

var errLoad = errors.New("load deployments")

// rebuildEnvironment loads, translates and, if the content changed, sets the
// snapshot of one environment. It returns the new version, or "" if nothing
// changed.
//
// Whether the content changed is decided in two steps. Translate is pure, so
// an input equal to the one the serving snapshot was built from gives that
// snapshot again: it is neither translated nor hashed. That is the common
// case, since every change rebuilds every environment, and comparing the
// input costs a few percent of translating and hashing it (BenchmarkRebuild).
// An input that differs is translated and its content hashed, because
// different input often gives the same resources (a redeployed revision, an
// edited description, CREATED to PUBLISHED) and a new version would make
// every Envoy of the environment fetch and rebuild all its routes and
// clusters. Generations alone cannot tell: a lifecycle change does not
// change the deployment's generation, yet blocks or retires the API.
func (s *Server) rebuildEnvironment(ctx context.Context, env string) (string, error) {
	lctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	ds, err := s.cfg.Source.Deployments(lctx, env)
	cancel()
	if err != nil {
		return "", fmt.Errorf("%w of environment %s: %w", errLoad, env, err)
	}
	in := Input{
		Environment:       env,
		Deployments:       ds,
		ListenerAddress:   s.cfg.ListenerAddress,
		ListenerPort:      s.cfg.ListenerPort,
		Sidecar:           s.cfg.Sidecar,
		RateLimitFailOpen: s.cfg.RateLimitFailOpen,
		LimitInAuthz:      s.cfg.LimitInAuthz,
		UpstreamCAFile:    s.cfg.UpstreamCAFile,
		Limits:            s.cfg.Limits,
		EndpointDeny:      s.cfg.EndpointDeny,
	}
	var serving envState
	s.mu.Lock()
	if e := s.envs[env]; e != nil {
		serving = *e
	}
	s.mu.Unlock()
	if serving.version != "" && reflect.DeepEqual(in, serving.input) {
		return "", nil
	}

	res, err := Translate(in)
	if err != nil {
		return "", fmt.Errorf("translate environment %s: %w", env, err)
	}
	hash, err := contentHash(res)
	if err != nil {
		return "", fmt.Errorf("environment %s: %w", env, err)
	}
	if serving.version != "" && serving.hash == hash {
		s.mu.Lock()
		s.envs[env].input = in
		s.mu.Unlock()
		return "", nil
	}

	s.mu.Lock()
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
	e := s.envs[env]
	if e == nil {
		e = &envState{}
		s.envs[env] = e
	}
	e.version, e.hash, e.input = version, hash, in
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

package authz

import (
	"context"
	"crypto"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/apim-dev/apim/internal/jwks"
)

// Keys resolves a JWS key id to the public key that verifies it.
type Keys interface {
	Key(kid string) (crypto.PublicKey, bool)
}

// KeysFunc adapts a function to Keys.
type KeysFunc func(kid string) (crypto.PublicKey, bool)

// Key calls f.
func (f KeysFunc) Key(kid string) (crypto.PublicKey, bool) { return f(kid) }

var (
	_ Keys = KeysFunc(nil)
	_ Keys = (*JWKS)(nil)
)

// JWKSConfig configures a JWKS key source.
type JWKSConfig struct {
	URL    string
	Client *http.Client // required; its own Timeout is not relied on
	// Timeout bounds each fetch; default 5s.
	Timeout time.Duration
	// MinRefresh is the least time between fetches caused by an unknown
	// kid; default 30s. It stops a stream of forged kids from turning into
	// a stream of fetches.
	MinRefresh time.Duration
	// Refresh is the period of background fetches in Start; default 15m.
	Refresh time.Duration
	Logger  zerolog.Logger
	Now     func() time.Time
}

// JWKS is a Keys backed by a JSON Web Key Set URL. It caches the set, fetches
// it again when asked for an unknown kid (at most once per MinRefresh) and,
// while Start runs, periodically.
type JWKS struct {
	cfg  JWKSConfig
	keys atomic.Pointer[map[string]crypto.PublicKey]

	mu        sync.Mutex // one fetch at a time
	lastFetch time.Time
}

// NewJWKS returns a JWKS key source; it does not fetch until asked.
func NewJWKS(cfg JWKSConfig) (*JWKS, error) {
	var errs []error
	if cfg.URL == "" {
		errs = append(errs, errors.New("jwks.url is required"))
	}
	if cfg.Client == nil {
		errs = append(errs, errors.New("jwks.client is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.MinRefresh <= 0 {
		cfg.MinRefresh = 30 * time.Second
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = 15 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	j := &JWKS{cfg: cfg}
	j.keys.Store(&map[string]crypto.PublicKey{})
	return j, nil
}

// Key returns the key with id kid. An unknown kid triggers a fetch, unless
// one happened within MinRefresh.
func (j *JWKS) Key(kid string) (crypto.PublicKey, bool) {
	if k, ok := (*j.keys.Load())[kid]; ok {
		return k, true
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if k, ok := (*j.keys.Load())[kid]; ok { // fetched while we waited
		return k, true
	}
	if !j.lastFetch.IsZero() && j.cfg.Now().Sub(j.lastFetch) < j.cfg.MinRefresh {
		return nil, false
	}
	if err := j.fetchLocked(context.Background()); err != nil {
		j.cfg.Logger.Warn().Err(err).Msg("jwks fetch on unknown kid failed")
	}
	k, ok := (*j.keys.Load())[kid]
	return k, ok
}

// Refresh fetches the key set now.
func (j *JWKS) Refresh(ctx context.Context) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.fetchLocked(ctx)
}

// Start fetches the key set, then again every Refresh, until ctx is done.
// A failed fetch is logged and keeps the keys already held.
func (j *JWKS) Start(ctx context.Context) error {
	t := time.NewTicker(j.cfg.Refresh)
	defer t.Stop()
	for {
		if err := j.Refresh(ctx); err != nil && ctx.Err() == nil {
			j.cfg.Logger.Warn().Err(err).Msg("jwks refresh failed")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (j *JWKS) fetchLocked(ctx context.Context) error {
	j.lastFetch = j.cfg.Now()
	ctx, cancel := context.WithTimeout(ctx, j.cfg.Timeout)
	defer cancel()
	set, err := jwks.Fetch(ctx, j.cfg.Client, j.cfg.URL)
	if err != nil {
		return err
	}
	keys := make(map[string]crypto.PublicKey, len(set))
	for _, k := range set {
		if k.KeyID != "" { // tokens name their key
			keys[k.KeyID] = k.Public().Key
		}
	}
	j.keys.Store(&keys)
	return nil
}

package keymgr

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrBadCredentials is returned for an unknown user or a wrong password; the
// two are not told apart.
var ErrBadCredentials = errors.New("bad credentials")

// ErrBusy is returned when as many password hashes as allowed are being
// computed and none finished within the wait. The endpoints answer 503 with
// Retry-After.
var ErrBusy = errors.New("too many password checks in progress")

// passwordParams are the argon2id parameters of new password hashes (the
// RFC 9106 second recommendation, with parallelism fixed so that a hash costs
// the same on every machine). Each hash records its own parameters, so
// changing these does not invalidate existing hashes.
var passwordParams = argon2id.Params{
	Memory:      64 * 1024,
	Iterations:  1,
	Parallelism: 2,
	SaltLength:  16,
	KeyLength:   32,
}

// dummyHash is compared against when the user does not exist, so that an
// unknown user costs about as much as a wrong password.
const dummyHash = "$argon2id$v=19$m=65536,t=1,p=2$4QBdKTnsXDUn7b5qqsLirA$zgZdxVJi4giZiLy5pXzKKIpVUWNKOvKaXzlveP4Dzmw"

// EnsureUser creates the user with an argon2id hash of password if it does
// not exist (an existing user's password is left as it is), and assigns the
// roles, creating any that do not exist. created reports whether the user is new.
func EnsureUser(ctx context.Context, shared *pgxpool.Pool, name, password string, roles []string) (created bool, err error) {
	if name == "" || password == "" {
		return false, errors.New("ensure user: name and password are required")
	}
	var exists bool
	if err := shared.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM users WHERE name = $1)`, name).Scan(&exists); err != nil {
		return false, fmt.Errorf("ensure user %s: %w", name, err)
	}
	var hash string
	if !exists {
		if hash, err = argon2id.CreateHash(password, &passwordParams); err != nil {
			return false, fmt.Errorf("ensure user %s: hash password: %w", name, err)
		}
	}
	err = pgx.BeginFunc(ctx, shared, func(tx pgx.Tx) error {
		if !exists {
			tag, err := tx.Exec(ctx, `INSERT INTO users (name, password_hash) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`, name, hash)
			if err != nil {
				return err
			}
			created = tag.RowsAffected() == 1
		}
		if _, err := tx.Exec(ctx, `INSERT INTO roles (name) SELECT unnest($1::text[]) ON CONFLICT (name) DO NOTHING`, roles); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `
			INSERT INTO user_roles (user_name, role) SELECT $1, unnest($2::text[])
			ON CONFLICT (user_name, role) DO NOTHING`, name, roles)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("ensure user %s: %w", name, err)
	}
	return created, nil
}

// hashLimiter bounds the password hashes computed at once. An argon2id hash
// of ours takes 64 MiB, and a password check runs for every password grant
// and every DCR request, known user or not: without a bound, a burst of
// bogus logins costs gigabytes.
type hashLimiter struct {
	sem  chan struct{}
	wait time.Duration
}

func newHashLimiter(n int, wait time.Duration) *hashLimiter {
	return &hashLimiter{sem: make(chan struct{}, n), wait: wait}
}

// do runs f once a slot is free. It waits at most l.wait, then returns
// ErrBusy; or the context's error, if that ends first.
func (l *hashLimiter) do(ctx context.Context, f func()) error {
	select {
	case l.sem <- struct{}{}:
	default:
		t := time.NewTimer(l.wait)
		defer t.Stop()
		select {
		case l.sem <- struct{}{}:
		case <-ctx.Done():
			return fmt.Errorf("wait for password check: %w", ctx.Err())
		case <-t.C:
			return ErrBusy
		}
	}
	defer func() { <-l.sem }()
	f()
	return nil
}

// Authenticate checks the user's password and returns the user's roles. It
// returns ErrBadCredentials for an unknown user or a wrong password, taking
// about as long for either, and ErrBusy when the server is computing as many
// password hashes as it allows (Config.MaxPasswordHashes) for longer than
// Config.PasswordHashWait.
func (s *Server) Authenticate(ctx context.Context, name, password string) (roles []string, err error) {
	return authenticate(ctx, s.cfg.Shared, s.hashes, name, password)
}

func authenticate(ctx context.Context, shared *pgxpool.Pool, lim *hashLimiter, name, password string) (roles []string, err error) {
	var hash string
	err = shared.QueryRow(ctx, `SELECT password_hash FROM users WHERE name = $1`, name).Scan(&hash)
	known := true
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		hash, known = dummyHash, false
	case err != nil:
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	var (
		ok      bool
		hashErr error
	)
	if err := lim.do(ctx, func() { ok, hashErr = argon2id.ComparePasswordAndHash(password, hash) }); err != nil {
		return nil, err
	}
	if !known { // whatever the comparison found
		return nil, ErrBadCredentials
	}
	if hashErr != nil {
		return nil, fmt.Errorf("authenticate %s: stored hash: %w", name, hashErr)
	}
	if !ok {
		return nil, ErrBadCredentials
	}
	if roles, err = userRoles(ctx, shared, name); err != nil {
		return nil, fmt.Errorf("authenticate %s: %w", name, err)
	}
	return roles, nil
}

// UserRoles returns the roles of a user of this key manager; none for a
// name it does not know (a client id, a user of an external issuer).
func (s *Server) UserRoles(ctx context.Context, name string) ([]string, error) {
	return userRoles(ctx, s.cfg.Shared, name)
}

func userRoles(ctx context.Context, shared *pgxpool.Pool, name string) ([]string, error) {
	rows, err := shared.Query(ctx, `SELECT role FROM user_roles WHERE user_name = $1 ORDER BY role`, name)
	if err != nil {
		return nil, fmt.Errorf("roles of %s: %w", name, err)
	}
	roles, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("roles of %s: %w", name, err)
	}
	return roles, nil
}

// userScopes returns the scopes the user's roles allow.
func userScopes(ctx context.Context, shared *pgxpool.Pool, name string) (map[string]bool, error) {
	rows, err := shared.Query(ctx, `
		SELECT DISTINCT rs.scope FROM user_roles ur JOIN role_scopes rs ON rs.role = ur.role
		WHERE ur.user_name = $1`, name)
	if err != nil {
		return nil, fmt.Errorf("scopes of %s: %w", name, err)
	}
	scopes, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("scopes of %s: %w", name, err)
	}
	allowed := make(map[string]bool, len(scopes))
	for _, sc := range scopes {
		allowed[sc] = true
	}
	return allowed, nil
}

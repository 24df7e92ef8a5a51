// Package store is the PostgreSQL repository of the API-manager database:
// every write is one transaction that also appends its events to the outbox.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/apim-dev/apim/internal/events"
)

// Sentinel errors. Every error the store returns for a caller's mistake
// wraps one of them; *Error carries a message fit to show the caller.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
	ErrInvalid  = errors.New("invalid")
)

// Error is a caller-facing store error: Kind is one of the sentinels and
// Message says what is wrong in words a REST client understands.
type Error struct {
	Kind    error
	Message string
}

func (e *Error) Error() string { return e.Message }

// Unwrap lets errors.Is match the sentinel.
func (e *Error) Unwrap() error { return e.Kind }

func notFound(format string, args ...any) error {
	return &Error{Kind: ErrNotFound, Message: fmt.Sprintf(format, args...)}
}

func conflict(format string, args ...any) error {
	return &Error{Kind: ErrConflict, Message: fmt.Sprintf(format, args...)}
}

func invalid(format string, args ...any) error {
	return &Error{Kind: ErrInvalid, Message: fmt.Sprintf(format, args...)}
}

// Store is the repository. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
}

// New returns a store over pool; the caller owns the pool.
func New(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool}
}

// Open connects to the API-manager database at url.
func Open(ctx context.Context, url string) (*Store, error) {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("open api-manager database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("ping api-manager database: %w", err)
	}
	return &Store{pool: pool}, nil
}

// Pool returns the underlying pool.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// querier is what both the pool and a transaction can do.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// inTx runs fn in one read-committed transaction, committing when it
// returns nil and rolling back otherwise.
func (s *Store) inTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, fn)
}

// emit appends one event to the outbox in tx.
func emit(ctx context.Context, tx pgx.Tx, kind events.Kind, op events.Op, id, env string, gen int64, data any) error {
	raw, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("encode %s %s: %w", kind, id, err)
	}
	return events.Append(ctx, tx, events.Event{
		Kind: kind, Op: op, ID: id, Environment: env, Generation: gen, Data: raw,
	})
}

// nextGeneration takes a fresh generation, for delete events.
func nextGeneration(ctx context.Context, tx pgx.Tx) (int64, error) {
	var g int64
	if err := tx.QueryRow(ctx, `SELECT nextval('generation_seq')`).Scan(&g); err != nil {
		return 0, fmt.Errorf("next generation: %w", err)
	}
	return g, nil
}

// validID reports whether id is a UUID; anything else cannot name a row.
func validID(id string) bool {
	_, err := uuid.Parse(id)
	return err == nil
}

func newID() string { return uuid.NewString() }

// pgCode returns the SQLSTATE and constraint of a PostgreSQL error.
func pgCode(err error) (code, constraint string) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code, pgErr.ConstraintName
	}
	return "", ""
}

const (
	uniqueViolation     = "23505"
	foreignKeyViolation = "23503"
)

// Package migrate applies the schema migrations of the API-manager database
// and the shared database (package schema) with goose.
package migrate

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/apim-dev/apim/schema"
)

// Set names the migrations of one database.
type Set string

// The two databases, as in WSO2 API-M.
const (
	APIM   Set = "apim"
	Shared Set = "shared"
)

// FS returns the migration files of s.
func (s Set) FS() (fs.FS, error) {
	var root fs.FS
	switch s {
	case APIM:
		root = schema.APIM
	case Shared:
		root = schema.Shared
	default:
		return nil, fmt.Errorf("unknown migration set %q", s)
	}
	sub, err := fs.Sub(root, string(s))
	if err != nil {
		return nil, fmt.Errorf("migrations %s: %w", s, err)
	}
	return sub, nil
}

// Migrate brings both databases up to the latest schema. It is safe to run
// from several control-plane replicas at once: each database is migrated under
// a PostgreSQL advisory lock.
func Migrate(ctx context.Context, apimURL, sharedURL string) error {
	if err := Up(ctx, apimURL, APIM); err != nil {
		return err
	}
	return Up(ctx, sharedURL, Shared)
}

// Up applies the pending migrations of set s to the database at dbURL.
func Up(ctx context.Context, dbURL string, s Set) error {
	return withProvider(dbURL, s, func(p *goose.Provider) error {
		if _, err := p.Up(ctx); err != nil {
			return fmt.Errorf("migrate %s database up: %w", s, err)
		}
		return nil
	})
}

// Reset rolls back every migration of set s on the database at dbURL,
// dropping what they created.
func Reset(ctx context.Context, dbURL string, s Set) error {
	return withProvider(dbURL, s, func(p *goose.Provider) error {
		if _, err := p.DownTo(ctx, 0); err != nil {
			return fmt.Errorf("migrate %s database down: %w", s, err)
		}
		return nil
	})
}

// Version returns the latest migration version applied to the database.
func Version(ctx context.Context, dbURL string, s Set) (int64, error) {
	var v int64
	err := withProvider(dbURL, s, func(p *goose.Provider) error {
		var err error
		v, err = p.GetDBVersion(ctx)
		if err != nil {
			return fmt.Errorf("%s database version: %w", s, err)
		}
		return nil
	})
	return v, err
}

func withProvider(dbURL string, s Set, fn func(*goose.Provider) error) (err error) {
	fsys, err := s.FS()
	if err != nil {
		return err
	}
	db, err := open(dbURL)
	if err != nil {
		return fmt.Errorf("migrate %s database: %w", s, err)
	}
	defer func() { err = errors.Join(err, db.Close()) }()
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return fmt.Errorf("migrate %s database: %w", s, err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithSessionLocker(locker), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("migrate %s database: %w", s, err)
	}
	return fn(p)
}

func open(dbURL string) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		return nil, fmt.Errorf("parse database URL: %w", err)
	}
	return stdlib.OpenDB(*cfg), nil
}

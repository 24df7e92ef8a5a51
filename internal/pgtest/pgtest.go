// Package pgtest gives integration tests fresh, migrated PostgreSQL databases
// on a real server: $APIM_TEST_PG_URL if set, else a private cluster started
// once per test binary.
//
// A package that uses it calls Main from its TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apim-dev/apim/internal/localenv"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/apim-dev/apim/internal/migrate"
	"github.com/apim-dev/apim/internal/pgcluster"
)

// EnvURL names the environment variable with the URL of a server where the
// tests may CREATE DATABASE, e.g. postgres://postgres@127.0.0.1:5432/postgres.
const EnvURL = "APIM_TEST_PG_URL"

// server is the one server of this test binary.
type server struct {
	once    sync.Once
	baseURL string // a database on the server to connect to for CREATE DATABASE
	cluster *pgcluster.Cluster
	dir     string
	err     error
}

var (
	srv        server
	mainCalled atomic.Bool
)

// Main runs the tests and then stops the private cluster, if one was started.
// Call it from TestMain.
func Main(m *testing.M) {
	mainCalled.Store(true)
	code := m.Run()
	if err := stop(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// New returns the URLs of two fresh databases with the latest schema: the
// API-manager database and the shared database. They are dropped when the
// test ends.
func New(t testing.TB) (apimURL, sharedURL string) {
	t.Helper()
	apimURL, sharedURL = Empty(t), Empty(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := migrate.Migrate(ctx, apimURL, sharedURL); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return apimURL, sharedURL
}

// Empty returns the URL of a fresh database without any schema, dropped when
// the test ends.
func Empty(t testing.TB) string {
	t.Helper()
	if !mainCalled.Load() {
		t.Fatal("pgtest: call pgtest.Main(m) from TestMain, so that the PostgreSQL cluster is stopped at exit")
	}
	srv.once.Do(srv.start)
	if srv.err != nil {
		t.Fatalf("pgtest: %v", srv.err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "apim_test_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := exec(ctx, srv.baseURL, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := exec(ctx, srv.baseURL, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(srv.baseURL)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

func (s *server) start() {
	if base := os.Getenv(EnvURL); base != "" {
		s.baseURL = base
		return
	}
	dir, err := os.MkdirTemp("", "apim-pgtest-")
	if err != nil {
		s.err = err
		return
	}
	// The postgres user must get through dir to its data directory.
	if err := os.Chmod(dir, 0o711); err != nil { //nolint:gosec // G302: a directory; others may traverse it, not list it
		s.err = err
		return
	}
	s.dir = dir
	ports, err := localenv.FreePorts(1)
	if err != nil {
		s.err = err
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Config{
		Dir:       dir + "/data",
		Port:      ports[0],
		Ephemeral: true,
		Logger:    zerolog.Nop(),
	})
	if err != nil {
		s.err = err
		return
	}
	s.cluster = c
	s.baseURL = c.URL("postgres")
}

func stop() error {
	var err error
	if srv.cluster != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		err = srv.cluster.Stop(ctx)
	}
	if srv.dir != "" {
		err = errors.Join(err, os.RemoveAll(srv.dir))
	}
	return err
}

func exec(ctx context.Context, dbURL, sql string) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

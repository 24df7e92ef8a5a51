package keymgr

// A stop-gap PostgreSQL helper until internal/pgtest replaces it: the server
// at $APIM_TEST_PG_URL if set (it must allow CREATE DATABASE), else a private
// PostgreSQL 15 cluster started once for this test binary.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/apim-dev/apim/schema"
)

const pgBin = "/usr/lib/postgresql/15/bin"

// pgBaseURL is the server tests create their databases on; set by TestMain.
var pgBaseURL string

func TestMain(m *testing.M) {
	code, err := runWithPostgres(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "postgres:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func runWithPostgres(m *testing.M) (int, error) {
	if u := os.Getenv("APIM_TEST_PG_URL"); u != "" {
		pgBaseURL = u
		return m.Run(), nil
	}
	dir, err := os.MkdirTemp("", "keymgr-pg-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	asPG := func(name string, args ...string) *exec.Cmd {
		bin := filepath.Join(pgBin, name)
		if os.Geteuid() == 0 { // PostgreSQL refuses to run as root.
			return exec.Command("runuser", append([]string{"-u", "postgres", "--", bin}, args...)...)
		}
		return exec.Command(bin, args...)
	}
	if os.Geteuid() == 0 {
		pg, err := user.Lookup("postgres")
		if err != nil {
			return 0, err
		}
		uid, _ := strconv.Atoi(pg.Uid)
		gid, _ := strconv.Atoi(pg.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return 0, err
		}
	}
	data := filepath.Join(dir, "data")
	if out, err := asPG("initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync").CombinedOutput(); err != nil {
		return 0, fmt.Errorf("initdb: %w: %s", err, out)
	}
	port, err := freePort()
	if err != nil {
		return 0, err
	}
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off", port, dir)
	if out, err := asPG("pg_ctl", "-D", data, "-o", opts, "-l", filepath.Join(dir, "log"), "-w", "start").CombinedOutput(); err != nil {
		return 0, fmt.Errorf("pg_ctl start: %w: %s", err, out)
	}
	defer func() { _ = asPG("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop").Run() }()
	pgBaseURL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	return m.Run(), nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// newDatabase creates a fresh database migrated with set (schema.APIM or
// schema.Shared, under dir) and returns a pool on it; both go at cleanup.
func newDatabase(t testing.TB, set fs.FS, dir string) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "keymgr_" + dir + "_" + hex.EncodeToString(b)

	admin, err := pgx.Connect(ctx, pgBaseURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	cfg, err := pgxpool.ParseConfig(pgBaseURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Database = name
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pool.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if admin, err := pgx.Connect(ctx, pgBaseURL); err == nil {
			_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			_ = admin.Close(ctx)
		}
	})

	sub, err := fs.Sub(set, dir)
	if err != nil {
		t.Fatal(err)
	}
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, sub)
	if err != nil {
		t.Fatalf("goose: %v", err)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return pool
}

// newDatabases returns the API-manager and shared databases of one test.
func newDatabases(t testing.TB) (apim, shared *pgxpool.Pool) {
	return newDatabase(t, schema.APIM, "apim"), newDatabase(t, schema.Shared, "shared")
}

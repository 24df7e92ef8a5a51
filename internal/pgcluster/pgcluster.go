// Package pgcluster runs a private PostgreSQL 15 cluster in a directory, for
// the all-in-one profile and for tests, using Debian's server binaries.
package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"
)

// BinDir holds Debian's PostgreSQL 15 server binaries.
const BinDir = "/usr/lib/postgresql/15/bin"

// superuser is the cluster's superuser, made by initdb.
const superuser = "postgres"

// Config says where the cluster lives and where it listens.
type Config struct {
	// Dir is the data directory. It is created (mode 0700) and initialised
	// when it holds no cluster. When the process runs as root, Dir is handed
	// to the postgres user, so Dir's parents must let that user through.
	Dir string
	// Port is the TCP port on 127.0.0.1, and the name of the unix socket in Dir.
	Port int
	// Ephemeral skips fsync in initdb and in the server: for throw-away test
	// clusters only, where a power loss may lose the data.
	Ephemeral bool
	Logger    zerolog.Logger
}

// Cluster is a running private PostgreSQL cluster.
type Cluster struct {
	cfg    Config
	runAs  string // "" to run the binaries as this process's user
	reused bool
}

// Start initialises cfg.Dir if it holds no cluster and starts the server,
// waiting until it accepts connections. A server already running on cfg.Dir
// with the same port is reused.
//
// The server listens on no TCP address at all: only on its unix socket, which
// lives in Dir (mode 0700, owned by the server's user). Authentication is
// "trust", which is safe only because nobody but that user (and root) can
// reach the socket; Port names the socket file.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.Dir == "" {
		return nil, errors.New("pgcluster: Dir is empty")
	}
	if cfg.Port <= 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("pgcluster: port %d out of range", cfg.Port)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: data dir %s: %w", cfg.Dir, err)
	}
	cfg.Dir = dir
	c := &Cluster{cfg: cfg}
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root.
		c.runAs = superuser
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pgcluster: create %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil { //nolint:gosec // G302: a directory, owner-only; it needs x to be entered
		return nil, fmt.Errorf("pgcluster: chmod %s: %w", dir, err)
	}
	if c.runAs != "" {
		if err := chownTo(dir, c.runAs); err != nil {
			return nil, err
		}
		if err := exec.CommandContext(ctx, "runuser", "-u", c.runAs, "--", "test", "-w", dir).Run(); err != nil { //nolint:gosec // G204: our own arguments: the postgres user and the data dir
			return nil, fmt.Errorf("pgcluster: user %s cannot write %s; every parent directory must let it through (mode o+x): %w", c.runAs, dir, err)
		}
	}

	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		if err := c.initdb(ctx); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}

	if port, ok := runningPort(dir); ok && c.pgctl(ctx, "status") == nil {
		if port != cfg.Port {
			return nil, fmt.Errorf("pgcluster: a server already runs on %s with port %d, not %d", dir, port, cfg.Port)
		}
		c.reused = true
		cfg.Logger.Info().Str("dir", dir).Int("port", port).Msg("reusing running PostgreSQL cluster")
		return c, nil
	}

	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=''", cfg.Port, dir)
	if cfg.Ephemeral {
		opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
	}
	start := time.Now()
	if err := c.pgctl(ctx, "-w", "-t", "60", "-o", opts, "-l", filepath.Join(dir, "postgres.log"), "start"); err != nil {
		return nil, fmt.Errorf("%w\n%s", err, c.logTail())
	}
	cfg.Logger.Info().Str("dir", dir).Int("port", cfg.Port).Dur("took", time.Since(start)).Msg("started PostgreSQL cluster")
	return c, nil
}

// Reused reports whether Start found the server already running.
func (c *Cluster) Reused() bool { return c.reused }

// Dir is the data directory.
func (c *Cluster) Dir() string { return c.cfg.Dir }

// URL is the connection URL of database db as the superuser.
func (c *Cluster) URL(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(superuser),
		Path:     "/" + db,
		RawQuery: url.Values{"host": {c.cfg.Dir}, "port": {strconv.Itoa(c.cfg.Port)}, "sslmode": {"disable"}}.Encode(),
	}
	return u.String()
}

// EnsureDatabase creates database name unless it exists.
func (c *Cluster) EnsureDatabase(ctx context.Context, name string) error {
	return EnsureDatabase(ctx, c.URL("postgres"), name)
}

// EnsureDatabase creates database name on the server of adminURL unless it
// exists; adminURL's role must be allowed to CREATE DATABASE.
func EnsureDatabase(ctx context.Context, adminURL, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("pgcluster: connect to create database %s: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return fmt.Errorf("pgcluster: look up database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database: created meanwhile
		return nil
	}
	if err != nil {
		return fmt.Errorf("pgcluster: create database %s: %w", name, err)
	}
	return nil
}

// Stop shuts the server down (fast mode: open sessions are disconnected).
func (c *Cluster) Stop(ctx context.Context) error {
	if err := c.pgctl(ctx, "-w", "-t", "60", "-m", "fast", "stop"); err != nil {
		return err
	}
	c.cfg.Logger.Info().Str("dir", c.cfg.Dir).Msg("stopped PostgreSQL cluster")
	return nil
}

func (c *Cluster) initdb(ctx context.Context) error {
	args := []string{"-D", c.cfg.Dir, "-A", "trust", "-U", superuser, "--encoding", "UTF8", "--locale", "C"}
	if c.cfg.Ephemeral {
		args = append(args, "--no-sync")
	}
	start := time.Now()
	if out, err := c.command(ctx, "initdb", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("pgcluster: initdb %s: %w\n%s", c.cfg.Dir, err, out)
	}
	c.cfg.Logger.Info().Str("dir", c.cfg.Dir).Dur("took", time.Since(start)).Msg("initialised PostgreSQL cluster")
	return nil
}

func (c *Cluster) pgctl(ctx context.Context, args ...string) error {
	args = append([]string{"-D", c.cfg.Dir}, args...)
	cmd := c.command(ctx, "pg_ctl", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("pgcluster: pg_ctl %s: %w: %s", args[len(args)-1], err, strings.TrimSpace(out.String()))
	}
	return nil
}

// command runs a server binary as the cluster's user. bin and args are this
// package's own: a binary name under BinDir, the data dir and pg_ctl options.
func (c *Cluster) command(ctx context.Context, bin string, args ...string) *exec.Cmd {
	path := filepath.Join(BinDir, bin)
	if c.runAs == "" {
		return exec.CommandContext(ctx, path, args...) //nolint:gosec // G204: see above
	}
	return exec.CommandContext(ctx, "runuser", append([]string{"-u", c.runAs, "--", path}, args...)...) //nolint:gosec // G204: see above
}

func (c *Cluster) logTail() string {
	b, err := os.ReadFile(filepath.Join(c.cfg.Dir, "postgres.log"))
	if err != nil {
		return ""
	}
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(b)
}

// runningPort reads the port from postmaster.pid, which a running (or
// crashed) server leaves in its data directory.
func runningPort(dir string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "postmaster.pid")) //nolint:gosec // G304: the server's pid file in our data dir
	if err != nil {
		return 0, false
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 4 {
		return 0, false
	}
	port, err := strconv.Atoi(strings.TrimSpace(lines[3]))
	return port, err == nil
}

func chownTo(dir, name string) error {
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("pgcluster: look up user %s: %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return fmt.Errorf("pgcluster: chown %s to %s: %w", dir, name, err)
	}
	return nil
}

package keymgr

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/ory/fosite"
	"github.com/pressly/goose/v3"

	"github.com/apim-dev/apim/internal/migrate"
	"github.com/apim-dev/apim/internal/pgtest"
)

// An application's consumer key cannot drive the REST APIs: whatever it
// asks for and whoever owns it, its tokens carry only "default". A client
// its owner registers through DCR still gets the owner's role scopes.
func TestApplicationClientGetsDefaultScopeOnly(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.user(t, "alice", "alice-password-1", "Internal/subscriber", "Internal/creator")
	appID, appSecret := e.appClient(t, "alice", "alice_PizzaApp_PRODUCTION", GrantClientCredentials, GrantPassword)
	want := []string{"apim:api_view", "apim:subscribe", "default"}

	tok, err := e.ccConfig(appID, appSecret, want...).Token(ctx)
	if err != nil {
		t.Fatalf("client_credentials: %v", err)
	}
	if got := tok.Extra("scope"); got != "default" {
		t.Errorf("application client, client_credentials: scope %q, want default", got)
	}
	p, err := e.s.VerifyToken(ctx, tok.AccessToken)
	if err != nil || len(p.Scopes) != 1 || p.Scopes[0] != DefaultScope {
		t.Errorf("VerifyToken = %+v, %v; want scopes [default]", p, err)
	}
	tok, err = e.pwConfig(appID, appSecret, want...).PasswordCredentialsToken(ctx, "alice", "alice-password-1")
	if err != nil {
		t.Fatalf("password: %v", err)
	}
	if got := tok.Extra("scope"); got != "default" {
		t.Errorf("application client, password: scope %q, want default", got)
	}

	// DCR, with the same name as the application's client: a new REST
	// client, not the application's, and with alice's role scopes.
	reg := e.register(t, "alice", "alice-password-1",
		`{"clientName":"alice_PizzaApp_PRODUCTION","grantType":"client_credentials"}`)
	if reg.status != http.StatusOK {
		t.Fatalf("DCR: %d %v", reg.status, reg.body)
	}
	restID, _ := reg.body["clientId"].(string)
	restSecret, _ := reg.body["clientSecret"].(string)
	if restID == appID {
		t.Fatal("DCR returned the application's client")
	}
	tok, err = e.ccConfig(restID, restSecret, want...).Token(ctx)
	if err != nil {
		t.Fatalf("REST client: %v", err)
	}
	if got := tok.Extra("scope"); got != "apim:api_view apim:subscribe default" {
		t.Errorf("REST client: scope %q, want apim:api_view apim:subscribe default", got)
	}
	// The application's secret was not rotated by the registration.
	if _, err := e.ccConfig(appID, appSecret).Token(ctx); err != nil {
		t.Errorf("application client after DCR of its name: %v", err)
	}
}

// Migration 00003 marks the existing clients named by a key mapping as
// application clients and the others as REST clients; a client inserted
// later without a kind is an application client.
func TestMigrationClientKind(t *testing.T) {
	ctx := context.Background()
	dbURL := pgtest.Empty(t)
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	db := stdlib.OpenDB(*cfg)
	t.Cleanup(func() { _ = db.Close() })
	fsys, err := migrate.APIM.FS()
	if err != nil {
		t.Fatal(err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 2); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO oauth_clients (client_id, secret_hash, name, owner, grant_types) VALUES
			('app-key', 'h', 'alice_PizzaApp_PRODUCTION', 'alice', '{client_credentials}'),
			('rest-client', 'h', 'rest_api_publisher', 'alice', '{password}')`,
		`INSERT INTO applications (id, name, owner, throttling_policy) VALUES ('00000000-0000-0000-0000-000000000001', 'PizzaApp', 'alice', 'Unlimited')`,
		`INSERT INTO key_mappings (id, application_id, key_type, consumer_key) VALUES
			('00000000-0000-0000-0000-000000000002', '00000000-0000-0000-0000-000000000001', 'PRODUCTION', 'app-key')`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.UpTo(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO oauth_clients (client_id, secret_hash, name, owner, grant_types) VALUES ('later', 'h', 'n', 'bob', '{}')`); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]string{"app-key": clientKindApplication, "rest-client": clientKindREST, "later": clientKindApplication} {
		var kind string
		if err := db.QueryRowContext(ctx, `SELECT kind FROM oauth_clients WHERE client_id = $1`, id).Scan(&kind); err != nil {
			t.Fatal(err)
		}
		if kind != want {
			t.Errorf("client %s: kind %q, want %q", id, kind, want)
		}
	}
	if _, err := db.ExecContext(ctx, `UPDATE oauth_clients SET kind = 'admin' WHERE client_id = 'later'`); err == nil {
		t.Error("kind 'admin' accepted")
	}
	if _, err := p.DownTo(ctx, 2); err != nil {
		t.Errorf("down: %v", err)
	}
}

func TestHashLimiter(t *testing.T) {
	t.Run("bounds concurrency", func(t *testing.T) {
		l := newHashLimiter(2, 5*time.Second)
		var running, peak atomic.Int32
		var wg sync.WaitGroup
		errs := make([]error, 8)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = l.do(context.Background(), func() {
					n := running.Add(1)
					for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
					}
					time.Sleep(10 * time.Millisecond)
					running.Add(-1)
				})
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		if p := peak.Load(); p != 2 {
			t.Errorf("%d ran at once, want 2", p)
		}
	})
	t.Run("busy after the wait", func(t *testing.T) {
		l := newHashLimiter(1, 30*time.Millisecond)
		l.sem <- struct{}{}
		start := time.Now()
		ran := false
		if err := l.do(context.Background(), func() { ran = true }); !errors.Is(err, ErrBusy) || ran {
			t.Errorf("do = %v, ran %v; want ErrBusy, not run", err, ran)
		}
		if d := time.Since(start); d < 30*time.Millisecond {
			t.Errorf("gave up after %v, want the 30ms wait", d)
		}
	})
	t.Run("context ends the wait", func(t *testing.T) {
		l := newHashLimiter(1, time.Minute)
		l.sem <- struct{}{}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if err := l.do(ctx, func() {}); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("do = %v, want DeadlineExceeded", err)
		}
	})
	t.Run("a slot freed during the wait", func(t *testing.T) {
		l := newHashLimiter(1, 5*time.Second)
		l.sem <- struct{}{}
		time.AfterFunc(20*time.Millisecond, func() { <-l.sem })
		ran := false
		if err := l.do(context.Background(), func() { ran = true }); err != nil || !ran {
			t.Errorf("do = %v, ran %v", err, ran)
		}
		if len(l.sem) != 0 {
			t.Errorf("%d slots held after do, want 0", len(l.sem))
		}
	})
}

// With every password-hash slot taken, the password grant and DCR answer
// 503 with Retry-After, for known and unknown users alike, and work again
// once a slot is free.
func TestPasswordChecksBusy(t *testing.T) {
	apim, shared := newDatabases(t)
	e := newEnvOn(t, apim, shared, func(c *Config) {
		c.MaxPasswordHashes = 1
		c.PasswordHashWait = 50 * time.Millisecond
	})
	ctx := context.Background()
	e.user(t, "alice", "alice-password-1", "Internal/subscriber")
	id, secret := e.client(t, "alice", "rest_api_store", GrantPassword)

	passwordGrant := func(user, password string) (*http.Response, map[string]any) {
		t.Helper()
		form := url.Values{"grant_type": {GrantPassword}, "username": {user}, "password": {password}}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.ts.URL+PathToken, strings.NewReader(form.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(id, secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		body := map[string]any{}
		if err := json.Unmarshal(raw, &body); err != nil {
			t.Fatalf("%d: not JSON: %s", resp.StatusCode, raw)
		}
		return resp, body
	}
	dcr := func(user, password string) (*http.Response, map[string]any) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.ts.URL+PathRegister, strings.NewReader(`{"clientName":"cli"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.SetBasicAuth(user, password)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body := map[string]any{}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return resp, body
	}

	e.s.hashes.sem <- struct{}{} // every slot taken
	for name, call := range map[string]func(string, string) (*http.Response, map[string]any){"token": passwordGrant, "dcr": dcr} {
		for _, user := range []string{"alice", "nobody"} {
			resp, body := call(user, "alice-password-1")
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" || body["error"] != "temporarily_unavailable" {
				t.Errorf("%s as %s while busy: %d, Retry-After %q, %v; want 503, 1, temporarily_unavailable",
					name, user, resp.StatusCode, resp.Header.Get("Retry-After"), body)
			}
		}
	}
	<-e.s.hashes.sem

	if resp, body := passwordGrant("alice", "alice-password-1"); resp.StatusCode != http.StatusOK || body["access_token"] == nil {
		t.Errorf("token once free: %d %v", resp.StatusCode, body)
	}
	if resp, body := dcr("alice", "alice-password-1"); resp.StatusCode != http.StatusOK {
		t.Errorf("dcr once free: %d %v", resp.StatusCode, body)
	}
	if _, err := e.pwConfig(id, secret).PasswordCredentialsToken(ctx, "alice", "wrong"); err == nil ||
		retrieveError(t, err).ErrorCode != "invalid_grant" {
		t.Errorf("wrong password once free: %v, want invalid_grant", err)
	}
}

// DeleteClients removes an application's clients in the caller's
// transaction, after the application (and so its key mappings) is deleted.
func TestDeleteClients(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.user(t, "alice", "alice-password-1", "Internal/subscriber")
	prodID, prodSecret := e.appClient(t, "alice", "alice_PizzaApp_PRODUCTION", GrantClientCredentials)
	sbxID, _ := e.appClient(t, "alice", "alice_PizzaApp_SANDBOX", GrantClientCredentials)
	otherID, otherSecret := e.appClient(t, "alice", "alice_Other_PRODUCTION", GrantClientCredentials)
	const app = "00000000-0000-0000-0000-000000000001"
	for _, q := range []string{
		`INSERT INTO applications (id, name, owner, throttling_policy) VALUES ('` + app + `', 'PizzaApp', 'alice', 'Unlimited')`,
		`INSERT INTO key_mappings (id, application_id, key_type, consumer_key) VALUES
			('00000000-0000-0000-0000-000000000002', '` + app + `', 'PRODUCTION', '` + prodID + `'),
			('00000000-0000-0000-0000-000000000003', '` + app + `', 'SANDBOX', '` + sbxID + `')`,
	} {
		if _, err := e.apim.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	st := &store{apim: e.apim}
	exists := func(id string) bool {
		t.Helper()
		_, err := st.GetClient(ctx, id)
		if err != nil && !errors.Is(err, fosite.ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}

	// Out of order, the key mappings still name the clients: refused, and
	// nothing is deleted.
	err := pgx.BeginFunc(ctx, e.apim, func(tx pgx.Tx) error {
		return e.s.DeleteClients(ctx, tx, []string{prodID, sbxID})
	})
	if err == nil || !exists(prodID) || !exists(sbxID) {
		t.Fatalf("DeleteClients before the application: %v; want a foreign-key error, clients kept", err)
	}

	err = pgx.BeginFunc(ctx, e.apim, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM applications WHERE id = $1`, app); err != nil {
			return err
		}
		if err := e.s.DeleteClients(ctx, tx, nil); err != nil {
			return err
		}
		return e.s.DeleteClients(ctx, tx, []string{prodID, sbxID, "no-such-client"})
	})
	if err != nil {
		t.Fatalf("delete application and clients: %v", err)
	}
	if exists(prodID) || exists(sbxID) {
		t.Error("a deleted client is still there")
	}
	if !exists(otherID) {
		t.Error("another application's client was deleted")
	}
	_, err = e.ccConfig(prodID, prodSecret).Token(ctx)
	if err == nil || retrieveError(t, err).ErrorCode != "invalid_client" {
		t.Errorf("token for a deleted client: %v, want invalid_client", err)
	}
	if _, err := e.ccConfig(otherID, otherSecret).Token(ctx); err != nil {
		t.Errorf("token for the other client: %v", err)
	}

	// Rolled back with the caller's transaction.
	tx, err := e.apim.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.s.DeleteClients(ctx, tx, []string{otherID}); err != nil {
		t.Fatal(err)
	}
	_ = tx.Rollback(ctx)
	if !exists(otherID) {
		t.Error("a client deleted in a rolled-back transaction is gone")
	}
}

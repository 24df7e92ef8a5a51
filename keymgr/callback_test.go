package keymgr

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"golang.org/x/oauth2"
)

func TestValidateRedirectURI(t *testing.T) {
	for uri, ok := range map[string]bool{
		"https://app.example.com/callback":         true,
		"http://127.0.0.1:8080/cb?x=1":             true,
		"http://localhost/cb":                      true,
		"com.example.app:/oauth2redirect":          true,
		"http://app.example.com/cb":                false, // the code in the clear
		"javascript:alert(1)":                      false,
		"data:text/html,<script>alert(1)</script>": false,
		"/callback":                              false,
		"callback":                               false,
		"https://app.example.com/cb#fragment":    false,
		"https:///no-host":                       false,
		"http://[::1":                            false,
		"https://x/" + strings.Repeat("a", 2100): false,
	} {
		err := ValidateRedirectURI(uri)
		if ok != (err == nil) || err != nil && !errors.Is(err, ErrRedirectURI) {
			t.Errorf("ValidateRedirectURI(%.40q) = %v, want ok %v", uri, err, ok)
		}
	}
}

// An application's client gets its callback URL from generate-keys and
// PUT oauth-keys: the authorize endpoint redirects only there, and a new
// one replaces the old.
func TestApplicationClientCallback(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	first, second := "http://127.0.0.1:9/first", "https://app.example.com/second"
	var id string
	inTx := func(f func(tx pgx.Tx) error) error { return pgx.BeginFunc(ctx, e.apim, f) }
	if err := inTx(func(tx pgx.Tx) error {
		var err error
		id, _, err = e.s.RegisterClient(ctx, tx, "alice", "alice_app_PRODUCTION", []string{GrantAuthorizationCode}, first)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	authorize := func(redirect string) int {
		t.Helper()
		conf := &oauth2.Config{ClientID: id, RedirectURL: redirect, Endpoint: oauth2.Endpoint{AuthURL: e.ts.URL + PathAuthorize}}
		resp, _ := get(t, browser(t), conf.AuthCodeURL("state-cb-1", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
		return resp.StatusCode
	}
	if got := authorize(first); got != http.StatusOK {
		t.Errorf("authorize to the registered callback: %d, want the sign-in page", got)
	}
	if got := authorize(second); got != http.StatusBadRequest {
		t.Errorf("authorize to another callback: %d, want 400", got)
	}
	info, err := e.s.ClientInfo(ctx, id)
	if err != nil || info.Callback != first {
		t.Errorf("ClientInfo = %+v, %v; want callback %s", info, err, first)
	}

	if err := inTx(func(tx pgx.Tx) error { return e.s.UpdateClient(ctx, tx, id, nil, &second, nil) }); err != nil {
		t.Fatal(err)
	}
	if authorize(first) != http.StatusBadRequest || authorize(second) != http.StatusOK {
		t.Errorf("after the update: first %d, second %d; want 400, 200", authorize(first), authorize(second))
	}
	// Refused: nothing changes, in either call.
	bad := "/relative"
	if err := inTx(func(tx pgx.Tx) error { return e.s.UpdateClient(ctx, tx, id, nil, &bad, nil) }); !errors.Is(err, ErrRedirectURI) {
		t.Errorf("UpdateClient(%q) = %v, want ErrRedirectURI", bad, err)
	}
	if err := inTx(func(tx pgx.Tx) error {
		_, _, err := e.s.RegisterClient(ctx, tx, "alice", "alice_app2_PRODUCTION", []string{GrantAuthorizationCode}, "https://x/cb#f")
		return err
	}); !errors.Is(err, ErrRedirectURI) {
		t.Errorf("RegisterClient with a fragment = %v, want ErrRedirectURI", err)
	}
	if err := inTx(func(tx pgx.Tx) error {
		_, _, err := e.s.RegisterClient(ctx, tx, "alice", "alice_app3_PRODUCTION", []string{GrantAuthorizationCode}, "")
		return err
	}); !errors.Is(err, ErrRedirectURI) {
		t.Errorf("RegisterClient of the code grant without a callback = %v, want ErrRedirectURI", err)
	}
	none := ""
	if err := inTx(func(tx pgx.Tx) error { return e.s.UpdateClient(ctx, tx, id, nil, &none, nil) }); !errors.Is(err, ErrRedirectURI) {
		t.Errorf("UpdateClient clearing the callback of a code client = %v, want ErrRedirectURI", err)
	}
	if info, _ := e.s.ClientInfo(ctx, id); info.Callback != second {
		t.Errorf("callback %q after refusals, want %q", info.Callback, second)
	}
	var n int
	if err := e.apim.QueryRow(ctx, `SELECT count(*) FROM oauth_clients WHERE name = 'alice_app2_PRODUCTION'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d refused clients stored (%v)", n, err)
	}
	// Only the code grant redirects: without it no callback is kept, and
	// none is checked (WSO2's DCR example sends "www.google.lk").
	if err := inTx(func(tx pgx.Tx) error {
		return e.s.UpdateClient(ctx, tx, id, []string{GrantClientCredentials}, nil, nil)
	}); err != nil {
		t.Fatal(err)
	}
	if info, _ := e.s.ClientInfo(ctx, id); info.Callback != "" {
		t.Errorf("callback %q kept without the code grant", info.Callback)
	}
	var cc string
	if err := inTx(func(tx pgx.Tx) error {
		var err error
		cc, _, err = e.s.RegisterClient(ctx, tx, "alice", "alice_cc_PRODUCTION", []string{GrantClientCredentials}, "www.google.lk")
		return err
	}); err != nil {
		t.Fatalf("client credentials client with WSO2's sample callback: %v", err)
	}
	if info, _ := e.s.ClientInfo(ctx, cc); info.Callback != "" {
		t.Errorf("callback %q kept for a client credentials client", info.Callback)
	}
}

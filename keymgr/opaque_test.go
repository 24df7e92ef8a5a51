package keymgr

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"golang.org/x/oauth2"
)

// appWith registers an application's client, as generate-keys does, for an
// application of tokenType with a PRODUCTION key mapping. redirect, when
// not empty, is its callback URL.
func (e *testEnv) appWith(t *testing.T, owner, tokenType, redirect string, grants ...string) (id, secret string) {
	t.Helper()
	ctx := context.Background()
	var redirects []string
	if redirect != "" {
		redirects = []string{redirect}
	}
	err := pgx.BeginFunc(ctx, e.apim, func(tx pgx.Tx) error {
		appID := uuid.NewString()
		var err error
		if id, secret, err = insertClient(ctx, tx, clientKindApplication, owner, "app-"+appID, grants, redirects); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO applications (id, name, owner, throttling_policy, token_type)
			VALUES ($1, $2, $3, 'Unlimited', $4)`, appID, "app-"+appID, owner, tokenType); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO key_mappings (id, application_id, key_type, consumer_key)
			VALUES ($1, $2, 'PRODUCTION', $3)`, uuid.NewString(), appID, id)
		return err
	})
	if err != nil {
		t.Fatalf("register an application client: %v", err)
	}
	return id, secret
}

// gatewayIntrospect posts to the gateway introspection handler with the
// gateway token given.
func gatewayIntrospect(t *testing.T, h http.Handler, gatewayToken, token string) (int, map[string]any) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, PathGatewayIntrospect, strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if gatewayToken != "" {
		req.Header.Set("Authorization", "Bearer "+gatewayToken)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	body := map[string]any{}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("gateway introspection: %d, not JSON: %s", rec.Code, rec.Body)
	}
	return rec.Code, body
}

// outboxEvent decodes the one outbox event with key.
func (e *testEnv) outboxEvent(t *testing.T, key string) (kind, op, id string, data map[string]any) {
	t.Helper()
	rows, err := e.apim.Query(context.Background(), `SELECT payload FROM outbox WHERE key = $1`, key)
	if err != nil {
		t.Fatal(err)
	}
	payloads, err := pgx.CollectRows(rows, pgx.RowTo[json.RawMessage])
	if err != nil || len(payloads) != 1 {
		t.Fatalf("%d outbox events with key %s, %v", len(payloads), key, err)
	}
	var ev struct {
		Kind, Op, ID string
		Data         map[string]any
	}
	if err := json.Unmarshal(payloads[0], &ev); err != nil {
		t.Fatal(err)
	}
	return ev.Kind, ev.Op, ev.ID, ev.Data
}

const gatewayToken = "gateway-token-0123456789abcdef0123"

func TestOpaqueAccessTokens(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.user(t, "bob", "bob-password-1", "Internal/subscriber")
	id, secret := e.appWith(t, "bob", TokenTypeOAuth, "", GrantClientCredentials, GrantPassword, GrantRefreshToken)
	jwtID, jwtSecret := e.appWith(t, "bob", TokenTypeJWT, "", GrantClientCredentials)
	rsID, rsSecret := e.client(t, "bob", "resource-server", GrantClientCredentials)
	gw := e.s.GatewayIntrospectionHandler(gatewayToken)

	before := time.Now().Truncate(time.Second)
	cc, err := e.ccConfig(id, secret).Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !IsOpaqueAccessToken(cc.AccessToken) || strings.Count(cc.AccessToken, ".") != 0 || cc.TokenType != "Bearer" {
		t.Fatalf("access token %q of type %q, want an opaque apim_at_ token", cc.AccessToken, cc.TokenType)
	}
	if d := time.Until(cc.Expiry); d < 59*time.Minute || d > time.Hour+time.Second {
		t.Errorf("expires in %v, want the default hour", d)
	}
	// Stored hashed only, with its claims.
	var (
		n              int
		jti, sub, aut  string
		scopes         []string
		issued, expiry time.Time
	)
	if err := e.apim.QueryRow(ctx, `SELECT jti, subject, aut, scopes, issued_at, expires_at FROM oauth_access_tokens WHERE token_hash = $1`,
		hashSecret(cc.AccessToken)).Scan(&jti, &sub, &aut, &scopes, &issued, &expiry); err != nil {
		t.Fatalf("no row with the token's hash: %v", err)
	}
	if jti == "" || sub != id || aut != autApplication || len(scopes) != 1 || scopes[0] != DefaultScope ||
		issued.Before(before) || expiry.Sub(issued) < time.Hour || expiry.Sub(issued) > time.Hour+time.Second {
		t.Errorf("stored claims jti %q sub %q aut %q scopes %v iat %s exp %s", jti, sub, aut, scopes, issued, expiry)
	}
	if err := e.apim.QueryRow(ctx, `SELECT count(*) FROM oauth_access_tokens t WHERE t::text LIKE '%' || $1 || '%'`,
		cc.AccessToken[len(accessTokenPrefix):]).Scan(&n); err != nil || n != 0 {
		t.Fatalf("rows with the clear token: %d, %v", n, err)
	}
	// A JWT application's tokens stay JWTs.
	jwtTok, err := e.ccConfig(jwtID, jwtSecret).Token(ctx)
	if err != nil || strings.Count(jwtTok.AccessToken, ".") != 2 {
		t.Fatalf("JWT application's token %q, %v", jwtTok.AccessToken, err)
	}

	// Verified, introspected (RFC 7662) by a resource server and by the
	// gateway endpoint.
	if p, err := e.s.VerifyToken(ctx, cc.AccessToken); err != nil || p.ClientID != id || p.Subject != id {
		t.Fatalf("VerifyToken = %+v, %v", p, err)
	}
	in := e.introspect(t, rsID, rsSecret, cc.AccessToken)
	if in["active"] != true || in["token_type"] != "Bearer" || in["client_id"] != id || in["sub"] != id ||
		in["jti"] != jti || in["scope"] != DefaultScope || in["exp"] != float64(expiry.Unix()) || in["iat"] != float64(issued.Unix()) ||
		in["iss"] != e.s.Issuer() {
		t.Errorf("introspect = %v", in)
	}
	status, gin := gatewayIntrospect(t, gw, gatewayToken, cc.AccessToken)
	if status != http.StatusOK || gin["active"] != true || gin["jti"] != jti || gin["client_id"] != id || gin["nbf"] != float64(issued.Unix()) {
		t.Errorf("gateway introspection = %d %v", status, gin)
	}
	if status, gin := gatewayIntrospect(t, gw, gatewayToken, jwtTok.AccessToken); status != http.StatusOK || gin["active"] != true || gin["client_id"] != jwtID {
		t.Errorf("gateway introspection of a JWT = %d %v", status, gin)
	}
	// The gateway endpoint wants the gateway token, and a handler without
	// one refuses everyone.
	for name, c := range map[string]struct {
		h   http.Handler
		tok string
	}{
		"no token": {gw, ""}, "wrong token": {gw, gatewayToken + "x"}, "a client secret": {gw, secret},
		"unset gateway token": {e.s.GatewayIntrospectionHandler(""), ""},
	} {
		if status, body := gatewayIntrospect(t, c.h, c.tok, cc.AccessToken); status != http.StatusUnauthorized || body["active"] != nil {
			t.Errorf("%s: %d %v", name, status, body)
		}
	}

	// Unknown, malformed and other kinds of token are inactive.
	pw, err := e.pwConfig(id, secret).PasswordCredentialsToken(ctx, "bob", "bob-password-1")
	if err != nil {
		t.Fatal(err)
	}
	if !IsOpaqueAccessToken(pw.AccessToken) || !strings.HasPrefix(pw.RefreshToken, refreshTokenPrefix) {
		t.Fatalf("password grant: access %q refresh %q", pw.AccessToken, pw.RefreshToken)
	}
	if in := e.introspect(t, rsID, rsSecret, pw.AccessToken); in["active"] != true || in["sub"] != "bob" || in["username"] != "bob" {
		t.Errorf("introspect(user token) = %v", in)
	}
	unknown := accessTokenPrefix + strings.Repeat("A", 43)
	for name, tok := range map[string]string{
		"unknown": unknown, "truncated": cc.AccessToken[:40], "refresh token": pw.RefreshToken, "garbage": "apim_at_!!",
	} {
		if status, gin := gatewayIntrospect(t, gw, gatewayToken, tok); status != http.StatusOK || len(gin) != 1 || gin["active"] != false {
			t.Errorf("gateway introspection of %s = %d %v", name, status, gin)
		}
		if in := e.introspect(t, rsID, rsSecret, tok); name != "refresh token" && in["active"] != false {
			t.Errorf("introspect(%s) = %v", name, in)
		}
	}

	// Refresh: a new opaque token; the old one stays valid until revoked.
	pw2, err := e.refresh(e.pwConfig(id, secret), pw.RefreshToken)
	if err != nil || !IsOpaqueAccessToken(pw2.AccessToken) || pw2.AccessToken == pw.AccessToken {
		t.Fatalf("refresh: %q, %v", pw2.AccessToken, err)
	}

	// Revocation: by its client only, by jti, announced with the event a
	// JWT's revocation has.
	if status, body := e.revoke(t, jwtID, jwtSecret, cc.AccessToken); status != http.StatusBadRequest || body["error"] != "unauthorized_client" {
		t.Errorf("revoke another client's opaque token: %d %v", status, body)
	}
	if status, body := e.revoke(t, id, secret, cc.AccessToken); status != http.StatusOK {
		t.Fatalf("revoke: %d %v", status, body)
	}
	if _, err := e.s.VerifyToken(ctx, cc.AccessToken); !errors.Is(err, ErrTokenRevoked) {
		t.Errorf("VerifyToken(revoked) = %v", err)
	}
	if in := e.introspect(t, rsID, rsSecret, cc.AccessToken); len(in) != 1 || in["active"] != false {
		t.Errorf("introspect(revoked) = %v", in)
	}
	if _, gin := gatewayIntrospect(t, gw, gatewayToken, cc.AccessToken); gin["active"] != false {
		t.Errorf("gateway introspection of a revoked token = %v", gin)
	}
	kind, op, evID, data := e.outboxEvent(t, jti)
	if kind != "revocation" || op != "upsert" || evID != jti || data["jti"] != jti || data["expiresAt"] != expiry.UTC().Format(time.RFC3339) {
		t.Errorf("revocation event %s %s %s %v", kind, op, evID, data)
	}

	// Reusing the first refresh token revokes its family: both opaque
	// access tokens of the family.
	if _, err := e.refresh(e.pwConfig(id, secret), pw.RefreshToken); err == nil {
		t.Fatal("a used refresh token refreshed again")
	}
	for name, tok := range map[string]string{"first": pw.AccessToken, "refreshed": pw2.AccessToken} {
		if _, err := e.s.VerifyToken(ctx, tok); !errors.Is(err, ErrTokenRevoked) {
			t.Errorf("%s access token of a reused family: %v, want revoked", name, err)
		}
	}
	// Another token of the client is untouched.
	if _, err := e.ccConfig(id, secret).Token(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestClientTokenValidity(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.user(t, "bob", "bob-password-1", "Internal/subscriber")
	v := TokenValidity{ApplicationAccessToken: 120 * time.Second, UserAccessToken: 300 * time.Second, RefreshToken: 600 * time.Second}
	for _, tokenType := range []string{TokenTypeJWT, TokenTypeOAuth} {
		t.Run(tokenType, func(t *testing.T) {
			id, secret := e.appWith(t, "bob", tokenType, "", GrantClientCredentials, GrantPassword, GrantRefreshToken)
			if err := pgx.BeginFunc(ctx, e.apim, func(tx pgx.Tx) error {
				return e.s.UpdateClient(ctx, tx, id, nil, nil, &v)
			}); err != nil {
				t.Fatal(err)
			}
			info, err := e.s.ClientInfo(ctx, id)
			if err != nil || info.Validity != v || len(info.GrantTypes) != 3 {
				t.Fatalf("ClientInfo = %+v, %v", info, err)
			}
			expiresIn := func(tok *oauth2.Token) time.Duration {
				t.Helper()
				p, err := e.s.VerifyToken(ctx, tok.AccessToken)
				if err != nil {
					t.Fatal(err)
				}
				if d := time.Until(p.ExpiresAt); d > time.Until(tok.Expiry)+2*time.Second || d < time.Until(tok.Expiry)-2*time.Second {
					t.Errorf("token exp %s, response expiry %s", p.ExpiresAt, tok.Expiry)
				}
				return time.Until(tok.Expiry).Round(10 * time.Second)
			}
			cc, err := e.ccConfig(id, secret).Token(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if d := expiresIn(cc); d != 2*time.Minute {
				t.Errorf("client_credentials token expires in %v, want 2m", d)
			}
			pw, err := e.pwConfig(id, secret).PasswordCredentialsToken(ctx, "bob", "bob-password-1")
			if err != nil {
				t.Fatal(err)
			}
			if d := expiresIn(pw); d != 5*time.Minute {
				t.Errorf("password token expires in %v, want 5m", d)
			}
			var rtExp time.Time
			if err := e.apim.QueryRow(ctx, `SELECT expires_at FROM oauth_refresh_tokens WHERE token_hash = $1`,
				hashSecret(pw.RefreshToken)).Scan(&rtExp); err != nil {
				t.Fatal(err)
			}
			if d := time.Until(rtExp).Round(10 * time.Second); d != 10*time.Minute {
				t.Errorf("refresh token expires in %v, want 10m", d)
			}
			rt, err := e.refresh(e.pwConfig(id, secret), pw.RefreshToken)
			if err != nil {
				t.Fatal(err)
			}
			if d := expiresIn(rt); d != 5*time.Minute {
				t.Errorf("refreshed token expires in %v, want 5m", d)
			}

			// Back to the defaults.
			if err := pgx.BeginFunc(ctx, e.apim, func(tx pgx.Tx) error {
				return e.s.UpdateClient(ctx, tx, id, []string{GrantClientCredentials}, nil, &TokenValidity{})
			}); err != nil {
				t.Fatal(err)
			}
			info, err = e.s.ClientInfo(ctx, id)
			if err != nil || info.Validity != (TokenValidity{time.Hour, time.Hour, 24 * time.Hour}) ||
				len(info.GrantTypes) != 1 {
				t.Fatalf("ClientInfo after reset = %+v, %v", info, err)
			}
			if cc, err = e.ccConfig(id, secret).Token(ctx); err != nil {
				t.Fatal(err)
			}
			if d := expiresIn(cc); d != time.Hour {
				t.Errorf("token after reset expires in %v, want 1h", d)
			}
		})
	}

	t.Run("refusals", func(t *testing.T) {
		id, _ := e.appWith(t, "bob", TokenTypeJWT, "", GrantClientCredentials)
		for name, c := range map[string]struct {
			id     string
			grants []string
			v      TokenValidity
			want   error
		}{
			"zero seconds":   {id, nil, TokenValidity{ApplicationAccessToken: time.Millisecond}, ErrValidity},
			"negative":       {id, nil, TokenValidity{UserAccessToken: -time.Second}, ErrValidity},
			"fractional":     {id, nil, TokenValidity{RefreshToken: 1500 * time.Millisecond}, ErrValidity},
			"too long":       {id, nil, TokenValidity{RefreshToken: MaxTokenValidity + time.Second}, ErrValidity},
			"unknown grant":  {id, []string{"magic"}, TokenValidity{}, ErrGrantTypes},
			"unknown client": {"nobody", nil, TokenValidity{ApplicationAccessToken: time.Minute}, ErrClientNotFound},
		} {
			err := pgx.BeginFunc(ctx, e.apim, func(tx pgx.Tx) error { return e.s.UpdateClient(ctx, tx, c.id, c.grants, nil, &c.v) })
			if !errors.Is(err, c.want) {
				t.Errorf("%s: %v, want %v", name, err, c.want)
			}
		}
		if info, err := e.s.ClientInfo(ctx, id); err != nil || info.Validity.ApplicationAccessToken != time.Hour {
			t.Errorf("a refused update changed the client: %+v, %v", info, err)
		}
		if _, err := e.s.ClientInfo(ctx, "nobody"); !errors.Is(err, ErrClientNotFound) {
			t.Errorf("ClientInfo(unknown) = %v", err)
		}
	})
}

func TestRegenerateSecret(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.user(t, "bob", "bob-password-1", "Internal/subscriber")
	regenerate := func(t *testing.T, id string) string {
		t.Helper()
		var secret string
		if err := pgx.BeginFunc(ctx, e.apim, func(tx pgx.Tx) error {
			var err error
			secret, err = e.s.RegenerateSecret(ctx, tx, id)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return secret
	}
	for _, tokenType := range []string{TokenTypeJWT, TokenTypeOAuth} {
		t.Run(tokenType, func(t *testing.T) {
			id, oldSecret := e.appWith(t, "bob", tokenType, "", GrantClientCredentials, GrantPassword, GrantRefreshToken)
			other, otherSecret := e.appWith(t, "bob", tokenType, "", GrantClientCredentials)
			cc, err := e.ccConfig(id, oldSecret).Token(ctx)
			if err != nil {
				t.Fatal(err)
			}
			pw, err := e.pwConfig(id, oldSecret).PasswordCredentialsToken(ctx, "bob", "bob-password-1")
			if err != nil {
				t.Fatal(err)
			}
			otherTok, err := e.ccConfig(other, otherSecret).Token(ctx)
			if err != nil {
				t.Fatal(err)
			}

			secret := regenerate(t, id)
			if secret == oldSecret || len(secret) != 43 {
				t.Fatalf("new secret of %d characters", len(secret))
			}
			var hash string
			if err := e.apim.QueryRow(ctx, `SELECT secret_hash FROM oauth_clients WHERE client_id = $1`, id).Scan(&hash); err != nil || hash != hashSecret(secret) {
				t.Fatalf("stored %q, %v; want the new secret's hash", hash, err)
			}
			// The old secret is refused at once; the new one works at once,
			// in the same second, and its token is valid.
			if _, err := e.ccConfig(id, oldSecret).Token(ctx); err == nil || retrieveError(t, err).ErrorCode != "invalid_client" {
				t.Errorf("old secret: %v, want invalid_client", err)
			}
			fresh, err := e.ccConfig(id, secret).Token(ctx)
			if err != nil {
				t.Fatalf("new secret: %v", err)
			}
			if _, err := e.s.VerifyToken(ctx, fresh.AccessToken); err != nil {
				t.Errorf("token of the new secret: %v", err)
			}
			// Every earlier token of the client is revoked, the refresh
			// token too; another client's are not.
			for name, tok := range map[string]string{"client_credentials": cc.AccessToken, "password": pw.AccessToken} {
				if _, err := e.s.VerifyToken(ctx, tok); !errors.Is(err, ErrTokenRevoked) {
					t.Errorf("earlier %s token: %v, want revoked", name, err)
				}
				if in, err := e.s.IntrospectAccessToken(ctx, tok); err != nil || in.Active {
					t.Errorf("earlier %s token introspected %+v, %v", name, in, err)
				}
			}
			if _, err := e.refresh(e.pwConfig(id, secret), pw.RefreshToken); err == nil {
				t.Error("an earlier refresh token still refreshes")
			}
			if _, err := e.s.VerifyToken(ctx, otherTok.AccessToken); err != nil {
				t.Errorf("another client's token: %v", err)
			}

			// The revocation, and its event for the gateways.
			var before, until time.Time
			if err := e.apim.QueryRow(ctx, `SELECT issued_before, expires_at FROM revoked_clients WHERE client_id = $1`, id).
				Scan(&before, &until); err != nil {
				t.Fatal(err)
			}
			if d := time.Until(before); d <= 0 || d > revocationMargin+time.Second || until.Sub(before) != time.Hour+clockLeeway { // a token verifies until exp + leeway
				t.Errorf("revoked_clients: before %s, until %s", before, until)
			}
			kind, op, evID, data := e.outboxEvent(t, ClientRevocationID(id))
			if kind != "revocation" || op != "upsert" || evID != "client:"+id || data["clientId"] != id ||
				data["issuedBefore"] != before.UTC().Format(time.RFC3339) || data["expiresAt"] != until.UTC().Format(time.RFC3339) || data["jti"] != nil {
				t.Errorf("event %s %s %s %v", kind, op, evID, data)
			}
		})
	}
	t.Run("unknown client", func(t *testing.T) {
		err := pgx.BeginFunc(ctx, e.apim, func(tx pgx.Tx) error {
			_, err := e.s.RegenerateSecret(ctx, tx, "nobody")
			return err
		})
		if !errors.Is(err, ErrClientNotFound) {
			t.Errorf("RegenerateSecret(unknown) = %v", err)
		}
	})
}

// TestCodeReplayRevokesAccessToken replays an authorization code of a
// client without the refresh_token grant: the access token the first
// exchange gave, JWT or opaque, is revoked, with its event.
func TestCodeReplayRevokesAccessToken(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.user(t, "alice", "alice-password-1", "Internal/subscriber")
	for name, register := range map[string]func(callback string) (string, string){
		"rest client, JWT": func(cb string) (string, string) {
			return e.authCodeClient(t, "alice", cb, GrantAuthorizationCode)
		},
		"application, opaque": func(cb string) (string, string) {
			return e.appWith(t, "alice", TokenTypeOAuth, cb, GrantAuthorizationCode)
		},
	} {
		t.Run(name, func(t *testing.T) {
			callback := "http://127.0.0.1:9/" + uuid.NewString()
			id, secret := register(callback)
			conf := &oauth2.Config{
				ClientID: id, ClientSecret: secret, RedirectURL: callback,
				Endpoint: oauth2.Endpoint{AuthURL: e.ts.URL + PathAuthorize, TokenURL: e.ts.URL + PathToken},
			}
			verifier := oauth2.GenerateVerifier()
			b := browser(t)
			resp, body := get(t, b, conf.AuthCodeURL("state-replay-1", oauth2.S256ChallengeOption(verifier)))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("authorize: %d %s", resp.StatusCode, body)
			}
			f := loginForm(t, body)
			f.Set("username", "alice")
			f.Set("password", "alice-password-1")
			resp, _ = post(t, b, e.ts.URL+PathAuthorize, f)
			loc, err := url.Parse(resp.Header.Get("Location"))
			if err != nil {
				t.Fatal(err)
			}
			code := loc.Query().Get("code")
			tok, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatal(err)
			}
			if tok.RefreshToken != "" {
				t.Fatal("a client without the refresh_token grant got a refresh token")
			}
			in, err := e.s.IntrospectAccessToken(ctx, tok.AccessToken)
			if err != nil || !in.Active || in.Username != "alice" {
				t.Fatalf("before the replay: %+v, %v", in, err)
			}
			if _, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier)); err == nil || retrieveError(t, err).ErrorCode != "invalid_grant" {
				t.Fatalf("code replay: %v, want invalid_grant", err)
			}
			if _, err := e.s.VerifyToken(ctx, tok.AccessToken); !errors.Is(err, ErrTokenRevoked) {
				t.Errorf("access token of a replayed code: %v, want revoked", err)
			}
			if kind, _, _, data := e.outboxEvent(t, in.JTI); kind != "revocation" || data["jti"] != in.JTI {
				t.Errorf("revocation event %s %v", kind, data)
			}
		})
	}
}

// TestNoOpaqueTokensOrSecretsInLogs runs the opaque-token, validity and
// regenerate-secret flows, failures included, and checks that no opaque
// token, refresh token, client secret or token hash reached the log.
func TestNoOpaqueTokensOrSecretsInLogs(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.user(t, "bob", "bob-password-1", "Internal/subscriber")
	id, secret := e.appWith(t, "bob", TokenTypeOAuth, "", GrantClientCredentials, GrantPassword, GrantRefreshToken)
	rsID, rsSecret := e.client(t, "bob", "resource-server", GrantClientCredentials)
	gw := e.s.GatewayIntrospectionHandler(gatewayToken)

	cc, err := e.ccConfig(id, secret).Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pw, err := e.pwConfig(id, secret).PasswordCredentialsToken(ctx, "bob", "bob-password-1")
	if err != nil {
		t.Fatal(err)
	}
	pw2, err := e.refresh(e.pwConfig(id, secret), pw.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	e.introspect(t, rsID, rsSecret, cc.AccessToken)
	gatewayIntrospect(t, gw, gatewayToken, cc.AccessToken)
	gatewayIntrospect(t, gw, "wrong-"+gatewayToken, cc.AccessToken)
	gatewayIntrospect(t, gw, gatewayToken, cc.AccessToken+"x")
	e.revoke(t, id, secret, cc.AccessToken)
	e.revoke(t, rsID, rsSecret, pw.AccessToken) // another client's: refused
	for _, tok := range []string{pw2.AccessToken, cc.AccessToken} {
		req, _ := http.NewRequest(http.MethodGet, e.ts.URL+PathUserinfo, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	var newSecret string
	if err := pgx.BeginFunc(ctx, e.apim, func(tx pgx.Tx) error {
		newSecret, err = e.s.RegenerateSecret(ctx, tx, id)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	_, _ = e.ccConfig(id, secret).Token(ctx) // the old secret: refused
	_, _ = e.refresh(e.pwConfig(id, newSecret), pw2.RefreshToken)
	fresh, err := e.ccConfig(id, newSecret).Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = e.s.VerifyToken(ctx, pw2.AccessToken)

	logs := e.logs.String()
	for _, msg := range []string{
		"token issued", "token revoked", "token introspected", "token request refused",
		"gateway introspection refused", "revocation refused",
	} {
		if !strings.Contains(logs, msg) {
			t.Errorf("the log has no %q", msg)
		}
	}
	if t.Failed() {
		t.Fatalf("the flows were not logged: %s", logs)
	}
	for what, s := range map[string]string{
		"client_credentials opaque token": cc.AccessToken, "password opaque token": pw.AccessToken,
		"refreshed opaque token": pw2.AccessToken, "fresh opaque token": fresh.AccessToken,
		"opaque token's random part": cc.AccessToken[len(accessTokenPrefix):],
		"opaque token hash":          hashSecret(cc.AccessToken),
		"refresh token":              pw.RefreshToken, "second refresh token": pw2.RefreshToken,
		"client secret": secret, "regenerated secret": newSecret, "regenerated secret hash": hashSecret(newSecret),
		"resource server secret": rsSecret, "gateway token": gatewayToken,
	} {
		if strings.Contains(logs, s) {
			t.Errorf("the log contains the %s", what)
		}
	}
}

// BenchmarkGatewayIntrospection measures the control plane's side of a
// gateway's cold opaque token: the gateway introspection endpoint over
// loopback HTTP with a real PostgreSQL lookup.
func BenchmarkGatewayIntrospection(b *testing.B) {
	apim, shared := newDatabases(b)
	e := &testEnv{apim: apim, shared: shared, logs: &lockedBuffer{}}
	var h http.Handler
	e.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	b.Cleanup(e.ts.Close)
	s, err := New(context.Background(), Config{BaseURL: e.ts.URL, APIM: apim, Shared: shared})
	if err != nil {
		b.Fatal(err)
	}
	e.s, h = s, s.Handler()
	mux := http.NewServeMux()
	mux.Handle(PathGatewayIntrospect, s.GatewayIntrospectionHandler(gatewayToken))
	gw := httptest.NewServer(mux)
	b.Cleanup(gw.Close)

	var id, secret string
	ctx := context.Background()
	if err := pgx.BeginFunc(ctx, apim, func(tx pgx.Tx) error {
		appID := uuid.NewString()
		var err error
		if id, secret, err = insertClient(ctx, tx, clientKindApplication, "bob", "bench", []string{GrantClientCredentials}, nil); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO applications (id, name, owner, throttling_policy, token_type) VALUES ($1, 'bench', 'bob', 'Unlimited', 'OAUTH')`, appID); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO key_mappings (id, application_id, key_type, consumer_key) VALUES ($1, $2, 'PRODUCTION', $3)`, uuid.NewString(), appID, id)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	tok, err := e.ccConfig(id, secret).Token(ctx)
	if err != nil {
		b.Fatal(err)
	}
	body := url.Values{"token": {tok.AccessToken}}.Encode()
	client := gw.Client()
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest(http.MethodPost, gw.URL+PathGatewayIntrospect, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "Bearer "+gatewayToken)
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		var in Introspection
		if err := json.NewDecoder(resp.Body).Decode(&in); err != nil || !in.Active {
			b.Fatalf("introspection %+v, %v", in, err)
		}
		resp.Body.Close()
	}
}

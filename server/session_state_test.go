package server_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store/testservers"
)

// sessionEnv is a deployment's client and the secret of its confidential
// client "web".
type sessionEnv struct {
	c      *st.Client
	secret string
}

func (e sessionEnv) loginResp(email, pw string) *st.Response {
	return e.c.PostForm("/oauth2/token", st.PasswordForm(email, pw, ""), st.Basic("web", e.secret))
}

func (e sessionEnv) refresh(rt string) *st.Response {
	return e.c.PostForm("/oauth2/token", st.RefreshForm(rt), st.Basic("web", e.secret))
}

// wantEnded checks that a session is over: its refresh token is refused and
// its access token is refused at /userinfo.
func (e sessionEnv) wantEnded(t *testing.T, what string, tok st.TokenResponse) {
	t.Helper()
	if r := e.refresh(tok.RefreshToken); r.StatusCode != http.StatusBadRequest {
		t.Fatalf("%s: refresh answered %d, want 400 invalid_grant", what, r.StatusCode)
	}
	e.refresh(tok.RefreshToken).ExpectError(http.StatusBadRequest, "invalid_grant")
	if r := e.c.Get("/userinfo", st.Bearer(tok.AccessToken)); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("%s: /userinfo answered %d, want 401", what, r.StatusCode)
	}
}

// wantLive checks that a session works: /userinfo accepts its access token
// and its refresh token rotates; it returns the rotated session.
func (e sessionEnv) wantLive(t *testing.T, what string, tok st.TokenResponse) st.TokenResponse {
	t.Helper()
	if r := e.c.Get("/userinfo", st.Bearer(tok.AccessToken)); r.StatusCode != http.StatusOK {
		t.Fatalf("%s: /userinfo answered %d %s, want 200", what, r.StatusCode, r.Body)
	}
	r := e.refresh(tok.RefreshToken)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("%s: refresh answered %d %s, want 200", what, r.StatusCode, r.Body)
	}
	return r.Token()
}

// TestLoginsDuringPasswordChangeGetNoSession races password grants with
// the old password against the user changing it: every login that
// succeeded with the old password ends with the change — its refresh token
// is refused and its access token is refused at /userinfo — however the
// requests interleave (contract: "Sessions started during a cut-off").
func TestLoginsDuringPasswordChangeGetNoSession(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			env := st.NewEnv(t, b)
			env["PORTCULLIS_RATE_LIMITS"] = "off"
			in := st.Start(t, env)
			fx := st.NewFixtures(t, in.App.Core)
			e := sessionEnv{c: in.Client(t), secret: fx.Client(t, clients.Spec{ID: "web"})}
			// A client without refresh tokens: its logins start no session,
			// and their access tokens must die with the cut-off too.
			plainSecret := fx.Client(t, clients.Spec{ID: "plain", Grants: []string{"password"}})
			const rounds, logins = 4, 16
			succeeded := 0
			for round := 0; round < rounds; round++ {
				email := fmt.Sprintf("race%d@example.com", round)
				oldPw, newPw := "the old passphrase 1", "the new passphrase 2"
				fx.User(t, email, oldPw, "user")
				first := e.loginResp(email, oldPw).Token()

				results := make([]*st.Response, logins)
				var change *st.Response
				start := make(chan struct{})
				var wg sync.WaitGroup
				for i := range results {
					wg.Add(1)
					go func(i int) {
						defer wg.Done()
						<-start
						if i%4 == 3 {
							results[i] = e.c.PostForm("/oauth2/token", st.PasswordForm(email, oldPw, ""), st.Basic("plain", plainSecret))
							return
						}
						results[i] = e.loginResp(email, oldPw)
					}(i)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					change = e.c.PostJSON("/auth/password/change",
						map[string]string{"current_password": oldPw, "new_password": newPw}, st.Bearer(first.AccessToken))
				}()
				close(start)
				wg.Wait()
				if change.StatusCode != http.StatusOK {
					t.Fatalf("password change answered %d %s", change.StatusCode, change.Body)
				}
				e.wantEnded(t, "the session used to change the password", first)
				for i, r := range results {
					switch r.StatusCode {
					case http.StatusOK:
						succeeded++
						tok := r.Token()
						if i%4 == 3 {
							if u := e.c.Get("/userinfo", st.Bearer(tok.AccessToken)); u.StatusCode != http.StatusUnauthorized {
								t.Fatalf("round %d: login %d (no refresh) with the old password: /userinfo answered %d, want 401", round, i, u.StatusCode)
							}
							continue
						}
						e.wantEnded(t, fmt.Sprintf("round %d: login %d with the old password", round, i), tok)
					case http.StatusBadRequest:
						r.ExpectError(http.StatusBadRequest, "invalid_grant")
					default:
						t.Fatalf("login answered %d %s", r.StatusCode, r.Body)
					}
				}
				// The session the change started is live.
				e.wantLive(t, "the session of the password change", change.Token())
			}
			if succeeded == 0 {
				t.Fatal("no login with the old password succeeded in any round: the race proves nothing")
			}
			t.Logf("%d logins with the old password succeeded around the change; every one ended", succeeded)
		})
	}
}

// TestSessionCap: with PORTCULLIS_MAX_SESSIONS_PER_USER=2 a third session
// ends the oldest (refresh token and access token alike), whatever started
// it: a password grant or a password change.
func TestSessionCap(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			env := st.NewEnv(t, b)
			env["PORTCULLIS_RATE_LIMITS"] = "off"
			env["PORTCULLIS_MAX_SESSIONS_PER_USER"] = "2"
			in := st.Start(t, env)
			fx := st.NewFixtures(t, in.App.Core)
			e := sessionEnv{c: in.Client(t), secret: fx.Client(t, clients.Spec{ID: "web"})}
			fx.User(t, "cap@example.com", "cap passphrase one", "user")
			fx.User(t, "other@example.com", "other passphrase one", "user")

			s1 := e.loginResp("cap@example.com", "cap passphrase one").Token()
			s2 := e.loginResp("cap@example.com", "cap passphrase one").Token()
			other := e.loginResp("other@example.com", "other passphrase one").Token()
			s2 = e.wantLive(t, "second session under the cap", s2)
			s3 := e.loginResp("cap@example.com", "cap passphrase one").Token()
			e.wantEnded(t, "oldest session past the cap", s1)
			e.wantLive(t, "second session", s2)
			s3 = e.wantLive(t, "third session", s3)
			e.wantLive(t, "another user's session", other)

			// A password change ends every session and starts one; that
			// one counts like any other.
			changed := e.c.PostJSON("/auth/password/change",
				map[string]string{"current_password": "cap passphrase one", "new_password": "cap passphrase two"},
				st.Bearer(s3.AccessToken)).ExpectStatus(http.StatusOK).Token()
			s4 := e.loginResp("cap@example.com", "cap passphrase two").Token()
			s5 := e.loginResp("cap@example.com", "cap passphrase two").Token()
			e.wantEnded(t, "session of the password change, past the cap", changed)
			e.wantLive(t, "fourth session", s4)
			e.wantLive(t, "fifth session", s5)
		})
	}
}

// TestClientTokenLifetimeCeiling: a client's access_token_ttl may reach
// PORTCULLIS_MAX_CLIENT_TOKEN_TTL and no further (the revocation horizon is
// that long, so no client's token outlives what revocations remember).
func TestClientTokenLifetimeCeiling(t *testing.T) {
	for _, tc := range []struct {
		name    string
		setting string // "" leaves the default (24h)
		ttl     int64
		status  int
	}{
		{"ok/default_ceiling", "", 86400, http.StatusCreated},
		{"fail/over_default_ceiling", "", 86401, http.StatusBadRequest},
		{"ok/raised_ceiling", "36h", 129600, http.StatusCreated},
		{"fail/over_raised_ceiling", "36h", 129601, http.StatusBadRequest},
		{"fail/over_lowered_ceiling", "1h", 3601, http.StatusBadRequest},
		{"fail/negative", "", -1, http.StatusBadRequest},
		{"fail/overflowing", "", 1 << 62, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			settings := map[string]string{}
			if tc.setting != "" {
				settings["PORTCULLIS_MAX_CLIENT_TOKEN_TTL"] = tc.setting
			}
			a := newAcctEnv(t, settings)
			root := a.login(t, rootEmail, rootPass).AccessToken
			r := a.c.PostJSON("/admin/clients", map[string]any{"client_id": "long-lived", "grants": []string{"client_credentials"},
				"scopes": []string{}, "access_token_ttl": tc.ttl}, st.Bearer(root))
			if tc.status != http.StatusCreated {
				r.ExpectError(tc.status, "invalid_request")
				return
			}
			created := r.ExpectStatus(tc.status).Map()
			tok := a.c.PostForm("/oauth2/token", url.Values{"grant_type": {"client_credentials"}},
				st.Basic("long-lived", created["client_secret"].(string))).Token()
			if tok.ExpiresIn != tc.ttl {
				t.Fatalf("expires_in %d, want the client's %d", tok.ExpiresIn, tc.ttl)
			}
		})
	}
}

// TestSessionCapCountsInviteAcceptance: the session an accepted invite
// starts counts against PORTCULLIS_MAX_SESSIONS_PER_USER like a login.
func TestSessionCapCountsInviteAcceptance(t *testing.T) {
	a := newAcctEnv(t, map[string]string{"PORTCULLIS_MAX_SESSIONS_PER_USER": "2"})
	root := a.login(t, rootEmail, rootPass).AccessToken
	accepted := a.accept(t, a.invite(t, root, "invited@example.com", "user"), "invited passphrase 1")
	if accepted.RefreshToken == "" {
		t.Fatalf("invite acceptance started no session: %+v", accepted)
	}
	e := sessionEnv{c: a.c, secret: a.webSecret}
	second := a.login(t, "invited@example.com", "invited passphrase 1")
	third := a.login(t, "invited@example.com", "invited passphrase 1")
	// The accepted invite's session is through the first-party client, so
	// check it there.
	if r := a.c.PostForm("/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {accepted.RefreshToken},
		"client_id": {"portcullis"}}); r.StatusCode != http.StatusBadRequest {
		t.Fatalf("refresh of the invite's session past the cap answered %d, want 400", r.StatusCode)
	}
	if r := a.c.Get("/userinfo", st.Bearer(accepted.AccessToken)); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/userinfo with the invite's access token past the cap answered %d, want 401", r.StatusCode)
	}
	e.wantLive(t, "second session", second)
	e.wantLive(t, "third session", third)
}

// TestPasswordResetWhileRedisRefusesWrites: the reset's durable revocation
// is written, Redis refuses the write. The caller is told the truth (the
// password was changed: 204), and once Redis takes writes again the old
// session is over everywhere.
func TestPasswordResetWhileRedisRefusesWrites(t *testing.T) {
	rd := testservers.NewRedis(t)
	a := newAcctEnv(t, map[string]string{"PORTCULLIS_REDIS_URL": rd.URL(), "PORTCULLIS_RATE_LIMITS": "off"})
	a.fx.User(t, "dora@example.com", "dora's first passphrase", "user")
	old := a.login(t, "dora@example.com", "dora's first passphrase")
	a.c.PostJSON("/auth/password/forgot", map[string]string{"email": "dora@example.com"}).ExpectStatus(http.StatusAccepted)
	tok := a.smtp.WaitFor(t, "dora@example.com", mailWithin).Token(t)

	admin := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	t.Cleanup(func() { _ = admin.Close() })
	ctx := context.Background()
	if err := admin.ConfigSet(ctx, "min-replicas-to-write", "1").Err(); err != nil {
		t.Fatal(err)
	}
	a.c.PostJSON("/auth/password/reset", map[string]string{"token": tok, "new_password": "dora's second passphrase"}).
		ExpectStatus(http.StatusNoContent)
	if err := admin.ConfigSet(ctx, "min-replicas-to-write", "0").Err(); err != nil {
		t.Fatal(err)
	}
	a.c.Get("/userinfo", st.Bearer(old.AccessToken)).ExpectError(http.StatusUnauthorized, "invalid_token")
	a.refresh(t, old.RefreshToken).ExpectError(http.StatusBadRequest, "invalid_grant")
	a.loginFails(t, "dora@example.com", "dora's first passphrase")
	a.login(t, "dora@example.com", "dora's second passphrase")
}

// TestRevocationInstanceStopsBeforeRedisTakesIt: an RFC 7009 revocation
// of a refresh token goes through instance a while Redis refuses writes
// (200: it is recorded durably), and a stops before Redis takes writes
// again: its shutdown's drain fails and says so at Error, and its queue is
// lost. Instance b, sharing the database and Redis, ends the session by
// itself once Redis takes writes (its reconciliation applies the durable
// record), within seconds: the refresh token is refused, and so is the
// session's access token. Before, b rotated the refresh token and honoured
// the access token until an operator rebuilt Redis's revocation set.
func TestRevocationInstanceStopsBeforeRedisTakesIt(t *testing.T) {
	rd := testservers.NewRedis(t)
	e := st.NewEnv(t, st.PostgresRedis)
	e["PORTCULLIS_REDIS_URL"] = rd.URL()
	e["PORTCULLIS_RATE_LIMITS"] = "off"
	e["PORTCULLIS_ISSUER"] = "http://auth.portcullis.test" // one issuer for the deployment
	ina := st.Start(t, e)
	inb := st.Start(t, e.Clone())
	fx := st.NewFixtures(t, ina.App.Core)
	secret := fx.Client(t, clients.Spec{ID: "web", Name: "Web"})
	fx.User(t, "dora@example.com", "dora's first passphrase", "user")
	a, b := sessionEnv{c: ina.Client(t), secret: secret}, sessionEnv{c: inb.Client(t), secret: secret}
	old := a.loginResp("dora@example.com", "dora's first passphrase").Token()
	// A check builds Redis's revocation set (a write) before Redis refuses
	// writes; b honours the token.
	a.c.Get("/userinfo", st.Bearer(old.AccessToken)).ExpectStatus(http.StatusOK)
	b.c.Get("/userinfo", st.Bearer(old.AccessToken)).ExpectStatus(http.StatusOK)

	admin := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	t.Cleanup(func() { _ = admin.Close() })
	ctx := context.Background()
	if err := admin.ConfigSet(ctx, "min-replicas-to-write", "1").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.ConfigSet(context.Background(), "min-replicas-to-write", "0").Err() })
	a.c.PostForm("/oauth2/revoke", url.Values{"token": {old.RefreshToken}}, st.Basic("web", secret)).ExpectStatus(http.StatusOK)
	ina.Stop()
	if !ina.Logs.WaitFor("revocations held in memory not written at shutdown", time.Second) {
		t.Fatalf("a's shutdown did not report the revocation it could not write; logs:\n%s", ina.Logs.String())
	}
	if err := admin.ConfigSet(ctx, "min-replicas-to-write", "0").Err(); err != nil {
		t.Fatal(err)
	}

	deadline := time.Now().Add(20 * time.Second)
	for b.c.Get("/userinfo", st.Bearer(old.AccessToken)).StatusCode != http.StatusUnauthorized {
		if time.Now().After(deadline) {
			t.Fatal("b still honours the access token of the revoked session")
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.refresh(old.RefreshToken).ExpectError(http.StatusBadRequest, "invalid_grant")
}

// TestClientTokenLifetimeClampedAtIssue: a client stored with a longer
// lifetime than PORTCULLIS_MAX_CLIENT_TOKEN_TTL (created under a higher
// ceiling that was later lowered) gets tokens of the ceiling's length, so
// none outlives what revocations remember.
func TestClientTokenLifetimeClampedAtIssue(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			env := st.NewEnv(t, b)
			env["PORTCULLIS_MAX_CLIENT_TOKEN_TTL"] = "2h"
			in := st.Start(t, env)
			fx := st.NewFixtures(t, in.App.Core)
			secret := fx.Client(t, clients.Spec{ID: "was-long", Grants: []string{"client_credentials"}, Scopes: []string{},
				AccessTokenTTL: 48 * time.Hour, MaxAccessTokenTTL: 48 * time.Hour})
			tok := in.Client(t).PostForm("/oauth2/token", url.Values{"grant_type": {"client_credentials"}},
				st.Basic("was-long", secret)).Token()
			if tok.ExpiresIn != 7200 {
				t.Fatalf("expires_in %d, want the ceiling's 7200", tok.ExpiresIn)
			}
			claims := decodeClaims(t, tok.AccessToken)
			if exp, iat := claims["exp"].(float64), claims["iat"].(float64); exp-iat != 7200 {
				t.Fatalf("exp - iat = %v, want 7200", exp-iat)
			}
		})
	}
}

// TestRevocationOutlivesTheServerTokenLifetime (trust boundary "revocation
// horizon", over HTTP): the server's own access tokens live 2 s, a client's
// 30 s. After an admin ends every session of a user, the client's token is
// refused at /userinfo — and still refused once the server's lifetime (the
// old retention of a revocation) has passed, while the token has not
// expired. Time is the behaviour here: the test waits 4 s for real.
func TestRevocationOutlivesTheServerTokenLifetime(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			a := newAcctEnvOn(t, b, map[string]string{"PORTCULLIS_ACCESS_TOKEN_TTL": "2s", "PORTCULLIS_ID_TOKEN_TTL": "2s",
				"PORTCULLIS_MAX_CLIENT_TOKEN_TTL": "1m"})
			root := a.login(t, rootEmail, rootPass).AccessToken
			created := a.c.PostJSON("/admin/clients", map[string]any{"client_id": "long-lived", "access_token_ttl": 30},
				st.Bearer(root)).ExpectStatus(http.StatusCreated).Map()
			user := a.fx.User(t, "long@example.com", "a long enough passphrase", "user")
			tok := a.c.PostForm("/oauth2/token", st.PasswordForm("long@example.com", "a long enough passphrase", ""),
				st.Basic("long-lived", created["client_secret"].(string))).Token()
			if tok.ExpiresIn != 30 {
				t.Fatalf("expires_in %d, want 30", tok.ExpiresIn)
			}
			a.c.Get("/userinfo", st.Bearer(tok.AccessToken)).ExpectStatus(http.StatusOK)
			root = a.login(t, rootEmail, rootPass).AccessToken // the 2 s admin token may have expired
			a.c.PostJSON("/admin/users/"+user.ID+"/sessions/revoke", nil, st.Bearer(root)).ExpectStatus(http.StatusNoContent)
			a.c.Get("/userinfo", st.Bearer(tok.AccessToken)).ExpectError(http.StatusUnauthorized, "invalid_token")
			time.Sleep(4 * time.Second) // past the server's access-token lifetime, well within the client's
			a.c.Get("/userinfo", st.Bearer(tok.AccessToken)).ExpectError(http.StatusUnauthorized, "invalid_token")
		})
	}
}

// TestRevocationOnEveryRouteAcrossInstances: an access token revoked
// through one instance is refused by the other at once on every route that
// takes a bearer token (found as the routes that answer 401 without one):
// each answers 401 invalid_token, where a read of each answered otherwise
// just before. The destructive methods are only tried after the
// revocation, which they must refuse.
func TestRevocationOnEveryRouteAcrossInstances(t *testing.T) {
	env := st.NewEnv(t, st.PostgresRedis)
	env["PORTCULLIS_ISSUER"] = "http://auth.portcullis.test" // one issuer for the deployment
	env["PORTCULLIS_TENANTS"] = "on"
	a, b := st.Start(t, env), st.Start(t, env)
	fx := st.NewFixtures(t, a.App.Core)
	api := fx.User(t, "api@example.com", userPass, "super_admin")
	webSecret := fx.Client(t, clients.Spec{ID: "web", Name: "Web", Audiences: []string{"api", fx.Issuer()}})
	ca, cb := a.Client(t), b.Client(t)
	tok := ca.PostForm("/oauth2/token", st.PasswordForm(api.Email, userPass, ""), st.Basic("web", webSecret)).Token()
	bearer := st.Bearer(tok.AccessToken)
	type route struct{ method, path string }
	var protected []route
	for _, r := range b.App.Server.Echo().Routes() {
		rt := route{r.Method, routeFor(r.Path, api.ID)}
		if cb.Do(rt.method, rt.path, nil, "").StatusCode != http.StatusUnauthorized {
			continue
		}
		protected = append(protected, rt)
		if rt.method == http.MethodGet {
			if resp := cb.Do(rt.method, rt.path, nil, "", bearer); resp.StatusCode == http.StatusUnauthorized {
				t.Fatalf("GET %s refuses the live token: %s", rt.path, resp.Body)
			}
		}
	}
	if len(protected) < 40 {
		t.Fatalf("only %d routes take a bearer token: the sweep lost its routes", len(protected))
	}
	ca.PostForm("/oauth2/revoke", url.Values{"token": {tok.AccessToken}}, st.Basic("web", webSecret)).ExpectStatus(http.StatusOK)
	for _, rt := range protected {
		cb.Do(rt.method, rt.path, []byte("{}"), "application/json", bearer).ExpectError(http.StatusUnauthorized, "invalid_token")
	}
}

package server_test

import (
	"context"
	"net/url"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store/testservers"
)

// TestRefreshRace presents one refresh token 20 times at once, spread over
// two server instances sharing the token state: with no grace exactly one
// succeeds (and the family is then revoked as stolen); with a grace window
// every presentation succeeds with the same successor, so the session survives.
// On SQLite the two instances share one database file, as two processes
// would.
func TestRefreshRace(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.Postgres, st.SQLite} {
		t.Run(b.String()+"/grace 0", func(t *testing.T) {
			a, bb, secret := twoInstances(t, b, "0s")
			tok := a.login(t)
			results := raceRefresh(t, []*st.Client{a.c, bb.c}, secret, tok.RefreshToken, 20)
			ok := 0
			for _, r := range results {
				switch {
				case r.StatusCode == 200:
					ok++
				case r.StatusCode == 400:
					r.ExpectError(400, "invalid_grant")
				default:
					t.Fatalf("unexpected answer %d %s", r.StatusCode, r.Body)
				}
			}
			if ok != 1 {
				t.Fatalf("%d of 20 concurrent refreshes succeeded, want exactly 1", ok)
			}
		})
		t.Run(b.String()+"/grace 10s", func(t *testing.T) {
			a, bb, secret := twoInstances(t, b, "10s")
			tok := a.login(t)
			results := raceRefresh(t, []*st.Client{a.c, bb.c}, secret, tok.RefreshToken, 20)
			successors := map[string]bool{}
			for _, r := range results {
				successors[r.Token().RefreshToken] = true
			}
			if len(successors) != 1 {
				t.Fatalf("%d different successors handed out, want 1 (never two live successors)", len(successors))
			}
			for next := range successors {
				// The session survives: the one successor keeps working.
				bb.c.PostForm("/oauth2/token", st.RefreshForm(next), st.Basic("web", secret)).Token()
			}
		})
	}
}

type raceNode struct {
	c      *st.Client
	secret string
}

func (n raceNode) login(t *testing.T) st.TokenResponse {
	t.Helper()
	return n.c.PostForm("/oauth2/token", st.PasswordForm(userEmail, userPass, ""), st.Basic("web", n.secret)).Token()
}

func twoInstances(t *testing.T, b st.Backend, grace string) (raceNode, raceNode, string) {
	t.Helper()
	env := st.NewEnv(t, b)
	env["PORTCULLIS_REFRESH_REUSE_GRACE"] = grace
	one := st.Start(t, env)
	two := st.Start(t, env)
	fx := st.NewFixtures(t, one.App.Core)
	fx.User(t, userEmail, userPass, "user")
	secret := fx.Client(t, clients.Spec{ID: "web"})
	return raceNode{one.Client(t), secret}, raceNode{two.Client(t), secret}, secret
}

func raceRefresh(t *testing.T, cs []*st.Client, secret, rt string, n int) []*st.Response {
	t.Helper()
	out := make([]*st.Response, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			out[i] = cs[i%len(cs)].PostForm("/oauth2/token", st.RefreshForm(rt), st.Basic("web", secret))
		}(i)
	}
	close(start)
	wg.Wait()
	return out
}

// TestRevocationsSurviveRedisFlush: revoked tokens stay revoked and rotated
// refresh tokens stay dead after Redis loses every key.
func TestRevocationsSurviveRedisFlush(t *testing.T) {
	rd := testservers.NewRedis(t)
	env := st.NewEnv(t, st.PostgresRedis)
	env["PORTCULLIS_REDIS_URL"] = rd.URL()
	d := deploy(t, st.Start(t, env))
	web := st.Basic("web", d.webSecret)
	svc := st.Basic("svc", d.svcSecret)

	revokedAT := d.login(t, "")
	d.c.PostForm("/oauth2/revoke", url.Values{"token": {revokedAT.AccessToken}}, web).ExpectStatus(200)
	loggedOut := d.login(t, "")
	d.c.PostJSON("/auth/logout", nil, st.Bearer(loggedOut.AccessToken)).ExpectStatus(204)
	rotated := d.login(t, "")
	d.c.PostForm("/oauth2/token", st.RefreshForm(rotated.RefreshToken), web).Token()
	live := d.login(t, "")

	if err := flushAll(rd.URL()); err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{"revoked jti": revokedAT.AccessToken, "logged-out session": loggedOut.AccessToken} {
		if m := d.c.PostForm("/oauth2/introspect", url.Values{"token": {tok}}, svc).ExpectStatus(200).Map(); m["active"] != false {
			t.Fatalf("%s became valid after FLUSHALL: %v", name, m)
		}
		d.c.Get("/userinfo", st.Bearer(tok)).ExpectError(401, "invalid_token")
	}
	d.c.PostForm("/oauth2/token", st.RefreshForm(rotated.RefreshToken), web).ExpectError(400, "invalid_grant")
	// Refresh state lost with Redis fails closed; access tokens not revoked stay valid.
	d.c.PostForm("/oauth2/token", st.RefreshForm(live.RefreshToken), web).ExpectError(400, "invalid_grant")
	d.c.Get("/userinfo", st.Bearer(live.AccessToken)).ExpectStatus(200)
}

func flushAll(redisURL string) error {
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		return err
	}
	c := redis.NewClient(opts)
	defer c.Close()
	return c.FlushAll(context.Background()).Err()
}

// TestRefreshRefusedAfterRebuild: a logout made while Redis refuses
// writes is recorded durably and answered as made; the instance that made
// it stops before Redis takes writes again, so Redis never hears of it.
// Once the operator deletes the revocation marker (docs/operations.md),
// another instance refuses the session's refresh token, at the token
// endpoint and at introspection, as well as its access token; the user's
// other session goes on. An RFC 7009 revocation of another session's
// refresh token, made by the same instance while its logout is queued, is
// taken (200) and holds after the rebuild too: the lookup behind it used to
// write the queue first and fail (503), recording nothing.
func TestRefreshRefusedAfterRebuild(t *testing.T) {
	rd := testservers.NewRedis(t)
	env := st.NewEnv(t, st.PostgresRedis)
	env["PORTCULLIS_REDIS_URL"] = rd.URL()
	a := st.Start(t, env)
	d := deploy(t, a)
	web := st.Basic("web", d.webSecret)
	loggedOut, revoked, live := d.login(t, ""), d.login(t, ""), d.login(t, "")
	d.c.Get("/userinfo", st.Bearer(live.AccessToken)).ExpectStatus(200) // the revocation set is built

	opts, err := redis.ParseURL(rd.URL())
	if err != nil {
		t.Fatal(err)
	}
	admin := redis.NewClient(opts)
	defer admin.Close()
	ctx := context.Background()
	if err := admin.ConfigSet(ctx, "min-replicas-to-write", "1").Err(); err != nil {
		t.Fatal(err)
	}
	d.c.PostJSON("/auth/logout", nil, st.Bearer(loggedOut.AccessToken)).ExpectStatus(204)
	d.c.PostForm("/oauth2/revoke", url.Values{"token": {revoked.RefreshToken}, "token_type_hint": {"refresh_token"}}, web).
		ExpectStatus(200)
	a.Stop() // its queued writes to Redis are lost with it
	if err := admin.ConfigSet(ctx, "min-replicas-to-write", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.Del(ctx, env["PORTCULLIS_REDIS_KEY_PREFIX"]+"{rv}:ready").Err(); err != nil {
		t.Fatal(err)
	}

	b := st.Start(t, env)
	c := b.Client(t)
	c.PostForm("/oauth2/token", st.RefreshForm(loggedOut.RefreshToken), web).ExpectError(400, "invalid_grant")
	c.PostForm("/oauth2/token", st.RefreshForm(revoked.RefreshToken), web).ExpectError(400, "invalid_grant")
	if m := c.PostForm("/oauth2/introspect", url.Values{"token": {loggedOut.RefreshToken}}, web).ExpectStatus(200).Map(); m["active"] != false {
		t.Fatalf("refresh token of the logged-out session after the rebuild: %v", m)
	}
	c.Get("/userinfo", st.Bearer(loggedOut.AccessToken)).ExpectError(401, "invalid_token")
	c.PostForm("/oauth2/token", st.RefreshForm(live.RefreshToken), web).Token()
}

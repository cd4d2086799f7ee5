package server_test

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// cluster is three `portcullis serve` processes sharing PostgreSQL and Redis,
// with an in-process instance of the same deployment for fixtures.
type cluster struct {
	env       st.Env
	procs     []*st.Process
	cs        []*st.Client
	fx        *st.Fixtures
	webSecret string
	svcSecret string
}

func newCluster(t *testing.T, n int, extra map[string]string) *cluster {
	t.Helper()
	env := st.NewEnv(t, st.PostgresRedis)
	env["PORTCULLIS_ISSUER"] = "http://auth.portcullis.test"
	for k, v := range extra {
		env[k] = v
	}
	in := st.Start(t, env)
	cl := &cluster{env: env, fx: st.NewFixtures(t, in.App.Core)}
	cl.fx.User(t, userEmail, userPass, "user")
	cl.fx.User(t, "root@example.com", userPass, "super_admin")
	cl.webSecret = cl.fx.Client(t, clients.Spec{ID: "web", Audiences: []string{cl.fx.Issuer()}}) // admin API audience
	cl.svcSecret = cl.fx.Client(t, clients.Spec{ID: "svc", Grants: []string{"client_credentials"}})
	for i := 0; i < n; i++ {
		p := st.StartProcess(t, env)
		cl.procs = append(cl.procs, p)
		cl.cs = append(cl.cs, p.Client(t))
	}
	return cl
}

func (cl *cluster) login(t *testing.T, i int, email string) st.TokenResponse {
	t.Helper()
	return cl.cs[i].PostForm("/oauth2/token", st.PasswordForm(email, userPass, ""), st.Basic("web", cl.webSecret)).Token()
}

// TestClusterAgrees: log in on one instance, refresh on another, revoke on
// the third: every instance agrees at once. The refresh race spread over the
// instances never yields two live successors. A key rotation made through one
// instance is served by all within the key sync interval.
func TestClusterAgrees(t *testing.T) {
	cl := newCluster(t, 3, nil)
	web := st.Basic("web", cl.webSecret)
	svc := st.Basic("svc", cl.svcSecret)
	a, b, c := cl.cs[0], cl.cs[1], cl.cs[2]

	first := cl.login(t, 0, userEmail)
	second := b.PostForm("/oauth2/token", st.RefreshForm(first.RefreshToken), web).Token()
	c.PostForm("/oauth2/revoke", url.Values{"token": {second.RefreshToken}}, web).ExpectStatus(200)
	for i, x := range cl.cs {
		x.PostForm("/oauth2/token", st.RefreshForm(second.RefreshToken), web).ExpectError(400, "invalid_grant")
		if m := x.PostForm("/oauth2/introspect", url.Values{"token": {second.AccessToken}}, svc).Map(); m["active"] != false {
			t.Fatalf("instance %d still accepts an access token of the revoked session: %v", i, m)
		}
		x.Get("/userinfo", st.Bearer(second.AccessToken)).ExpectError(401, "invalid_token")
	}
	// Revoking an access token through one instance is seen by the others at once.
	other := cl.login(t, 2, userEmail)
	a.PostForm("/oauth2/revoke", url.Values{"token": {other.AccessToken}}, web).ExpectStatus(200)
	for _, x := range cl.cs {
		x.Get("/userinfo", st.Bearer(other.AccessToken)).ExpectError(401, "invalid_token")
	}

	t.Run("refresh race over three instances", func(t *testing.T) {
		tok := cl.login(t, 1, userEmail)
		results := raceRefresh(t, cl.cs, cl.webSecret, tok.RefreshToken, 30)
		var winners []string
		for _, r := range results {
			if r.StatusCode == 200 {
				winners = append(winners, r.Token().RefreshToken)
			} else {
				r.ExpectError(400, "invalid_grant")
			}
		}
		if len(winners) != 1 {
			t.Fatalf("%d successors handed out, want exactly 1", len(winners))
		}
		// Reuse was detected, so even the one successor is dead: never two live successors.
		for _, x := range cl.cs {
			x.PostForm("/oauth2/token", st.RefreshForm(winners[0]), web).ExpectError(400, "invalid_grant")
		}
	})

	t.Run("rotation through one instance reaches all", func(t *testing.T) {
		root := cl.login(t, 0, "root@example.com")
		// The next key may sign once published for the sync interval + JWKS max-age.
		var rotated map[string]any
		deadline := time.Now().Add(10 * time.Second)
		for {
			r := a.PostJSON("/admin/keys/rotate", map[string]any{}, st.Bearer(root.AccessToken))
			if r.StatusCode == 200 {
				rotated = r.Map()
				break
			}
			r.ExpectStatus(409)
			if time.Now().After(deadline) {
				t.Fatal("rotation never became safe")
			}
			time.Sleep(200 * time.Millisecond)
		}
		start := time.Now()
		newKID := fmt.Sprint(rotated["activated"].(map[string]any)["kid"])
		for i := range cl.cs {
			for {
				tok := cl.login(t, i, userEmail)
				if decodeHeader(t, tok.AccessToken)["kid"] == newKID {
					break
				}
				if time.Since(start) > 500*time.Millisecond+2*time.Second {
					t.Fatalf("instance %d still signs with the old key %s after rotation", i, time.Since(start))
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	})
}

// TestKillDuringLoad: a server killed with SIGKILL in the middle of a load and
// restarted loses nothing committed, leaves no half-written state, and no
// revoked token becomes valid again.
func TestKillDuringLoad(t *testing.T) {
	cl := newCluster(t, 1, map[string]string{"PORTCULLIS_PUBLIC_REGISTRATION": "true", "PORTCULLIS_RATE_LIMITS": "off"})
	p, c := cl.procs[0], cl.cs[0]
	web := st.Basic("web", cl.webSecret)
	svc := st.Basic("svc", cl.svcSecret)
	revoked := cl.login(t, 0, userEmail)
	c.PostForm("/oauth2/revoke", url.Values{"token": {revoked.AccessToken}}, web).ExpectStatus(200)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var registered sync.Map // emails that got 201
	var lastGood sync.Map   // worker -> last refresh token that came back with 200
	var n atomic.Int64
	const loaded = 40 // requests answered before the kill
	enough := make(chan struct{})
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			hc := st.NewClient(t, p.URL)
			rt := ""
			for i := 0; ctx.Err() == nil; i++ {
				email := fmt.Sprintf("load-%d-%d@example.com", w, i)
				r, err := hc.TryDo("POST", "/auth/register", []byte(`{"email":"`+email+`","password":"a long enough passphrase"}`), "application/json")
				if err == nil && r.StatusCode == 201 {
					registered.Store(email, true)
				}
				if rt == "" {
					r, err = hc.TryDo("POST", "/oauth2/token", []byte(st.PasswordForm(userEmail, userPass, "").Encode()), "application/x-www-form-urlencoded", web)
				} else {
					r, err = hc.TryDo("POST", "/oauth2/token", []byte(st.RefreshForm(rt).Encode()), "application/x-www-form-urlencoded", web)
				}
				if err == nil && r.StatusCode == 200 {
					var tr st.TokenResponse
					r.JSON(&tr)
					rt = tr.RefreshToken
					lastGood.Store(w, rt)
				}
				if n.Add(1) == loaded {
					close(enough)
				}
			}
		}(w)
	}
	select { // kill it under load, however slow the machine
	case <-enough:
	case <-time.After(2 * time.Minute):
		cancel()
		wg.Wait()
		t.Fatalf("only %d requests in two minutes: no load", n.Load())
	}
	p.Kill()
	cancel()
	wg.Wait()
	p.Start()

	// Nothing committed is lost.
	count := 0
	registered.Range(func(k, _ any) bool {
		count++
		if _, err := cl.fx.Core.Store.GetUserByEmail(context.Background(), k.(string)); err != nil {
			t.Errorf("registered user %s lost after the kill: %v", k, err)
		}
		return true
	})
	if count == 0 {
		t.Fatal("no registration completed before the kill")
	}
	// No half-written state: every user has a role; every accepted invite has its user.
	db := cl.fx.Core.Store.DB()
	var orphans int64
	if err := db.Raw(`SELECT count(*) FROM users u WHERE NOT EXISTS (SELECT 1 FROM user_roles r WHERE r.user_id = u.id)`).Scan(&orphans).Error; err != nil {
		t.Fatal(err)
	}
	if orphans != 0 {
		t.Fatalf("%d users without roles after the kill", orphans)
	}
	// Each session's last good refresh token either still works (its rotation
	// never committed) or was rotated by the interrupted request, in which
	// case presenting it is reuse: invalid_grant. Never a 5xx, never two live tokens.
	lastGood.Range(func(_, v any) bool {
		r := c.PostForm("/oauth2/token", st.RefreshForm(v.(string)), web)
		if r.StatusCode != 200 {
			r.ExpectError(400, "invalid_grant")
		}
		return true
	})
	// The revoked token is still revoked.
	if m := c.PostForm("/oauth2/introspect", url.Values{"token": {revoked.AccessToken}}, svc).Map(); m["active"] != false {
		t.Fatalf("a revoked token became valid after the restart: %v", m)
	}
	cl.login(t, 0, userEmail)
}

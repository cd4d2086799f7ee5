package server_test

import (
	"context"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store/testservers"
)

// TestFailsClosedWhileRedisIsDown: with Redis stopped, /readyz answers 503
// within 2 s and every token decision is 503 temporarily_unavailable within
// a few seconds (never a grant it cannot check); when Redis returns (empty)
// the server recovers by itself.
func TestFailsClosedWhileRedisIsDown(t *testing.T) {
	rd := testservers.NewRedis(t)
	env := st.NewEnv(t, st.PostgresRedis)
	env["PORTCULLIS_REDIS_URL"] = rd.URL()
	d := deploy(t, st.Start(t, env))
	d.c.Get("/readyz").ExpectStatus(200)
	tok := d.login(t, "")
	svc := st.Basic("svc", d.svcSecret)
	web := st.Basic("web", d.webSecret)

	if err := rd.Stop(); err != nil {
		t.Fatal(err)
	}
	timed := func(what string, limit time.Duration, f func() *st.Response) *st.Response {
		t.Helper()
		start := time.Now()
		r := f()
		if el := time.Since(start); el > limit {
			t.Fatalf("%s took %s with Redis down, want under %s", what, el, limit)
		}
		return r
	}
	r := timed("readyz", 2*time.Second, func() *st.Response { return d.c.Get("/readyz") })
	r.ExpectError(503, "temporarily_unavailable")
	if !strings.Contains(string(r.Body), "token_state") {
		t.Fatalf("readyz does not say what is down: %s", r.Body)
	}
	timed("password grant", 5*time.Second, func() *st.Response {
		return d.c.PostForm("/oauth2/token", st.PasswordForm(userEmail, userPass, ""), web)
	}).ExpectError(503, "temporarily_unavailable")
	timed("refresh", 5*time.Second, func() *st.Response {
		return d.c.PostForm("/oauth2/token", st.RefreshForm(tok.RefreshToken), web)
	}).ExpectError(503, "temporarily_unavailable")
	timed("introspection", 5*time.Second, func() *st.Response {
		return d.c.PostForm("/oauth2/introspect", url.Values{"token": {tok.AccessToken}}, svc)
	}).ExpectError(503, "temporarily_unavailable")
	timed("userinfo", 5*time.Second, func() *st.Response {
		return d.c.Get("/userinfo", st.Bearer(tok.AccessToken))
	}).ExpectError(503, "temporarily_unavailable")

	if err := rd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for d.c.Get("/readyz").StatusCode != 200 {
		if time.Now().After(deadline) {
			t.Fatal("server did not recover after Redis came back")
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.login(t, "")
	d.c.Get("/userinfo", st.Bearer(tok.AccessToken)).ExpectStatus(200)
}

// TestEveryRouteFailsClosed sweeps every route with Redis, then PostgreSQL,
// stopped, asked with a super_admin's bearer token (issued before), their
// console session and a client's credentials: nothing answers a 5xx other
// than 503. With Redis down, where revocations and sessions live, nothing
// that decides on a token or a session (the admin and account APIs, the
// console, userinfo) answers with success; with PostgreSQL down some can,
// soundly, from memory checked against Redis (the policy's roles, a copy
// of the user whose version Redis still vouches for).
func TestEveryRouteFailsClosed(t *testing.T) {
	for _, down := range []string{"Redis", "PostgreSQL"} {
		t.Run(down, func(t *testing.T) {
			t.Parallel()
			rd, pg := testservers.NewRedis(t), testservers.NewPostgres(t)
			dbURL, err := testservers.CreateDatabase(pg.URL())
			if err != nil {
				t.Fatal(err)
			}
			env := st.NewEnv(t, st.PostgresRedis)
			env["PORTCULLIS_REDIS_URL"], env["PORTCULLIS_DATABASE_URL"], env["PORTCULLIS_TENANTS"] = rd.URL(), dbURL, "on"
			in := st.Start(t, env)
			who := newSweepActors(t, in)
			c, api, bearer, session, web := in.Client(t), who.api, who.bearer, who.session, who.web
			stop := rd.Stop
			if down == "PostgreSQL" {
				stop = pg.Stop
			}
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			for _, r := range in.App.Server.Echo().Routes() {
				path := routeFor(r.Path, api.ID)
				decides := down == "Redis" && (path == "/userinfo" || strings.HasPrefix(path, "/admin/") ||
					strings.HasPrefix(path, "/auth/") || (strings.HasPrefix(path, "/console") && path != "/console/login"))
				for _, auth := range []st.Option{bearer, session, web} {
					resp := c.Do(r.Method, path, []byte("{}"), "application/json", auth)
					switch {
					case resp.StatusCode >= 500 && resp.StatusCode != http.StatusServiceUnavailable:
						t.Errorf("%s %s with %s down: %d %s", r.Method, path, down, resp.StatusCode, resp.Body)
					case resp.StatusCode < 300 && decides:
						t.Errorf("%s %s with %s down: %d, a success it cannot have checked", r.Method, path, down, resp.StatusCode)
					}
				}
			}
		})
	}
}

// TestReadyzFailsWhenPostgresIsDown: the same for the database.
func TestReadyzFailsWhenPostgresIsDown(t *testing.T) {
	pg := testservers.NewPostgres(t)
	dbURL, err := testservers.CreateDatabase(pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	env := st.NewEnv(t, st.PostgresRedis)
	env["PORTCULLIS_DATABASE_URL"] = dbURL
	d := deploy(t, st.Start(t, env))
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r := d.c.Get("/readyz")
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("readyz took %s with PostgreSQL down", el)
	}
	r.ExpectError(503, "temporarily_unavailable")
	d.c.PostForm("/oauth2/token", st.PasswordForm(userEmail, userPass, ""), st.Basic("web", d.webSecret)).
		ExpectError(503, "temporarily_unavailable")
	// Two key sync intervals on, the keys are stale too, and /readyz says so
	// in the documented form (the client checks it against the OpenAPI
	// description).
	stale := time.Now().Add(2*d.in.Config.KeySyncInterval + 5*time.Second)
	for {
		var body struct{ Failed []string }
		d.c.Get("/readyz").ExpectStatus(503).JSON(&body)
		if slices.Contains(body.Failed, "signing_keys") {
			break
		}
		if time.Now().After(stale) {
			t.Fatalf("readyz still reports only %v long after the keys could last be reloaded", body.Failed)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for d.c.Get("/readyz").StatusCode != 200 {
		if time.Now().After(deadline) {
			t.Fatal("server did not recover after PostgreSQL came back")
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.login(t, "")
}

// TestAutomaticRotationAcrossInstances: two `portcullis serve` processes on one
// PostgreSQL rotate automatically exactly once per interval between them, and
// both serve the new key set within the sync interval.
func TestAutomaticRotationAcrossInstances(t *testing.T) {
	env := st.NewEnv(t, st.Postgres)
	env["PORTCULLIS_KEY_ROTATION_INTERVAL"] = "5s" // the minimum: twice (sync 500ms + max-age 2s)
	env["PORTCULLIS_SIGNING_ALG"] = "EdDSA"
	env["PORTCULLIS_ISSUER"] = "http://auth.portcullis.test" // one issuer for the deployment
	a := st.StartProcess(t, env)
	b := st.StartProcess(t, env)
	ca, cb := a.Client(t), b.Client(t)
	time.Sleep(13 * time.Second)

	in := st.Start(t, env) // an in-process view of the same deployment
	list, err := in.App.Keys.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var activations []time.Time
	for _, k := range list {
		if k.ActivatedAt != nil {
			activations = append(activations, *k.ActivatedAt)
		}
	}
	sort.Slice(activations, func(i, j int) bool { return activations[i].Before(activations[j]) })
	// The first key activates at once; then one rotation per 5 s interval: 2 or 3 in 13 s, never one per instance.
	if len(activations) < 3 || len(activations) > 4 {
		t.Fatalf("%d activations in 13 s with a 5 s interval over two instances: %v", len(activations), activations)
	}
	for i := 1; i < len(activations); i++ {
		if gap := activations[i].Sub(activations[i-1]); gap < 4900*time.Millisecond {
			t.Fatalf("two rotations %s apart: rotation was not done once", gap)
		}
	}
	// Both instances converge on the same JWKS within the sync interval.
	deadline := time.Now().Add(in.Config.KeySyncInterval + 2*time.Second)
	for {
		ea := ca.Get("/.well-known/jwks.json").Header.Get("ETag")
		eb := cb.Get("/.well-known/jwks.json").Header.Get("ETag")
		if ea == eb {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("instances serve different key sets: %s vs %s", ea, eb)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A token from one instance is accepted by the other.
	fx := st.NewFixtures(t, in.App.Core)
	fx.User(t, userEmail, userPass, "user")
	secret := fx.Client(t, clients.Spec{ID: "web"})
	tok := ca.PostForm("/oauth2/token", st.PasswordForm(userEmail, userPass, ""), st.Basic("web", secret)).Token()
	cb.Get("/userinfo", st.Bearer(tok.AccessToken)).ExpectStatus(200)
}

// TestGracefulShutdown: on SIGTERM, requests in flight finish with their
// answers before the process exits.
func TestGracefulShutdown(t *testing.T) {
	env := st.NewEnv(t, st.Postgres)
	delete(env, "PORTCULLIS_ARGON2_MEMORY") // real argon2id cost: logins take tens of milliseconds
	delete(env, "PORTCULLIS_ARGON2_TIME")
	env["PORTCULLIS_RATE_LIMITS"] = "off"
	in := st.Start(t, env)
	fx := st.NewFixtures(t, in.App.Core)
	fx.User(t, userEmail, userPass, "user")
	secret := fx.Client(t, clients.Spec{ID: "web"})
	p := st.StartProcess(t, env)
	c := p.Client(t)
	// Each request asks "Expect: 100-continue" and sends its body only once
	// the server answers "100 Continue", which it does when the handler
	// starts reading the body: once every request has had its 100, every one
	// is being handled, and none is still waiting in the listen queue
	// (which a shutdown rightly refuses). No sleep decides when they are in
	// flight.
	c.HTTP.Transport = &http.Transport{DisableKeepAlives: true, ExpectContinueTimeout: 30 * time.Second}
	const n = 12
	results := make(chan int, n)
	var handling sync.WaitGroup
	handling.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			var once sync.Once
			trace := &httptrace.ClientTrace{Got100Continue: func() { once.Do(handling.Done) }}
			inFlight := func(r *http.Request) {
				r.Header.Set("Expect", "100-continue")
				*r = *r.WithContext(httptrace.WithClientTrace(r.Context(), trace))
			}
			r, err := c.TryDo("POST", "/oauth2/token", []byte(st.PasswordForm(userEmail, userPass, "").Encode()),
				"application/x-www-form-urlencoded", st.Basic("web", secret), inFlight)
			once.Do(handling.Done)
			if err != nil {
				t.Logf("in-flight request: %v", err)
				results <- 0
				return
			}
			results <- r.StatusCode
		}()
	}
	handling.Wait() // n logins at the real argon2id cost take far longer than their start on 2 cores
	p.Stop()
	if exited, state := p.Exited(); !exited || (state != nil && !state.Success()) {
		t.Fatalf("server did not exit cleanly on SIGTERM: %v", state)
	}
	for i := 0; i < n; i++ {
		if code := <-results; code != 200 {
			t.Fatalf("an in-flight request got %d during graceful shutdown", code)
		}
	}
}

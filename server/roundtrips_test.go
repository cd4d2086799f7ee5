package server_test

import (
	"bufio"
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// dependencyCalls reads how many calls the instance has made to Redis and
// to the database (portcullis_dependency_duration_seconds_count).
func dependencyCalls(t *testing.T, in *st.Instance) (redis, database int) {
	t.Helper()
	calls := metricCounts(t, in, "portcullis_dependency_duration_seconds_count")
	return calls[`dependency="redis"`], calls[`dependency="database"`]
}

// metricCounts reads the instance's integer series of the metric name, by
// their labels as written between the braces.
func metricCounts(t *testing.T, in *st.Instance, name string) map[string]int {
	t.Helper()
	resp, err := http.Get(in.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]int{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name+"{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		n, err := strconv.Atoi(value)
		if !ok || err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[labels] = n
	}
	return out
}

// TestSSORoundTrips counts the storage round trips of one single sign-on
// round trip on PostgreSQL + Redis (the authorize leg with a live browser
// session, then the code's redemption, then a refresh of its grant), so
// that a change that adds one
// shows up as a number. Background work (key sync, the back-channel
// queue's poll) only ever adds calls, so each count is the smallest of
// several tries.
func TestSSORoundTrips(t *testing.T) {
	t.Parallel()
	d := newSignIn(t, st.PostgresRedis)
	e := &oidccEnv{d: d, mode: "query", hc: siBrowser(t), email: siEmail}
	conf := d.oauth("first", d.firstSecret, oidc.ScopeOpenID)
	e.signIn(t, conf) // the browser session
	const tries = 6
	minOf := func(a, b int) int {
		if b < a {
			return b
		}
		return a
	}
	authRedis, authDB, tokRedis, tokDB := 1<<30, 1<<30, 1<<30, 1<<30
	refRedis, refDB := 1<<30, 1<<30
	api := d.in.Client(t)
	for range tries {
		verifier := oauth2.GenerateVerifier()
		r0, d0 := dependencyCalls(t, d.in)
		res := e.run(t, e.authURL(conf, "rt", oauth2.S256ChallengeOption(verifier)))
		r1, d1 := dependencyCalls(t, d.in)
		if res.sawLogin || res.params.Get("code") == "" {
			t.Fatalf("not a single sign-on: %+v", res)
		}
		tok, err := conf.Exchange(context.Background(), res.params.Get("code"), oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatal(err)
		}
		r2, d2 := dependencyCalls(t, d.in)
		// The grant has no offline_access: its refresh checks (and keeps
		// alive) the browser session it ends with.
		api.PostForm("/oauth2/token", st.RefreshForm(tok.RefreshToken), st.Basic("first", d.firstSecret)).Token()
		r3, d3 := dependencyCalls(t, d.in)
		authRedis, authDB = minOf(authRedis, r1-r0), minOf(authDB, d1-d0)
		tokRedis, tokDB = minOf(tokRedis, r2-r1), minOf(tokDB, d2-d1)
		refRedis, refDB = minOf(refRedis, r3-r2), minOf(refDB, d3-d2)
	}
	t.Logf("authorize: %d Redis, %d SQL; token: %d Redis, %d SQL; refresh: %d Redis, %d SQL",
		authRedis, authDB, tokRedis, tokDB, refRedis, refDB)
	for _, c := range []struct {
		what      string
		got, want int
	}{
		// The session read, the code stored with its grant, and the
		// code counted against the session's budget (ratelimit
		// AllowCode: rate limits are on here, as by default; 2 with
		// PORTCULLIS_RATE_LIMITS=off, as the bench stack runs).
		{"authorize leg, Redis", authRedis, 3},
		{"authorize leg, SQL", authDB, 0}, // the user is a copy (store/usercache)
		{"token leg, Redis", tokRedis, 2},
		{"token leg, SQL", tokDB, 0},
		{"refresh of the grant, Redis", refRedis, 2}, // the rotation; the browser session
		{"refresh of the grant, SQL", refDB, 0},
	} {
		if c.got > c.want {
			t.Errorf("%s: %d round trips, at most %d", c.what, c.got, c.want)
		}
	}
}

// TestGrantRoundTrips counts the storage round trips of each token
// endpoint path on PostgreSQL + Redis, as TestSSORoundTrips does for the
// code flow: a change that adds a Redis command or an SQL statement to a
// grant fails here with the number. Each case prepares what its request
// needs (a fresh refresh token, an access token) outside the count; each
// count is the smallest of several tries, so background work (key sync)
// cannot inflate it. The bounds are the counts measured when the test was
// written (2026-12-05): lower one when a change removes a round trip.
func TestGrantRoundTrips(t *testing.T) {
	t.Parallel()
	in := st.Start(t, st.NewEnv(t, st.PostgresRedis))
	fx := st.NewFixtures(t, in.App.Core)
	api := in.Client(t)
	fx.User(t, "rt@example.com", "a-long-passphrase-rt", "admin")
	web := st.Basic("web", fx.Client(t, clients.Spec{ID: "web", Name: "Web"}))
	svc := st.Basic("svc", fx.Client(t, clients.Spec{ID: "svc", Name: "Svc", Grants: []string{"client_credentials"},
		Scopes: []string{"reports:read"}}))
	login := func() st.TokenResponse {
		return api.PostForm("/oauth2/token", st.PasswordForm("rt@example.com", "a-long-passphrase-rt", ""), web).Token()
	}
	refresh := func(rt string) st.TokenResponse {
		return api.PostForm("/oauth2/token", st.RefreshForm(rt), web).Token()
	}
	var created struct {
		Key string `json:"key"`
	}
	for _, tc := range []struct {
		name string
		// prepare runs outside the count and returns the counted request.
		prepare          func() func()
		maxRedis, maxSQL int
	}{
		// Redis: the login throttle (the address's limit, the account's
		// delay and its failures in one script: store.TokenState.CountSteps,
		// three calls before; after the login, its own attempt taken
		// back in one script, store.TokenState.TakeBack, where both of
		// the account's counters were cleared in one pipeline before)
		// and the session. Recording
		// the login changes no user version (8 round trips when it did,
		// with the two clears apart). SQL: the user with its second
		// factors counted (one statement: sqlstore.Store.GetUserForLogin;
		// four before, the factors read on their own), the login
		// recorded: its time and its audit event in one statement
		// (sqlstore.Store.RecordLogin; two before).
		{"password", func() func() {
			return func() { login() }
		}, 3, 2},
		// A login leaves the instance's copy of the user valid (it
		// changes no user version), so the refresh after it reads no
		// SQL either: the copy is checked against the user's version,
		// which the rotation script reads (1 SQL when a login was a
		// write the copies followed).
		{"refresh_after_a_login", func() func() {
			rt := login().RefreshToken
			return func() { refresh(rt) }
		}, 1, 0},
		{"refresh", func() func() {
			rt := refresh(login().RefreshToken).RefreshToken
			return func() { refresh(rt) }
		}, 1, 0},
		{"client_credentials", func() func() {
			return func() {
				api.PostForm("/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, svc).Token()
			}
		}, 0, 0},
		{"introspection", func() func() {
			at := login().AccessToken
			return func() {
				if api.PostForm("/oauth2/introspect", url.Values{"token": {at}}, web).ExpectStatus(http.StatusOK).Map()["active"] != true {
					t.Fatal("introspection: not active")
				}
			}
		}, 1, 0},
		// Redis: the family and its session's revocation in one script
		// (on Cluster, two calls), then the user's version, to judge the
		// family as a refresh would (token.Service.honours: the account
		// still active, its roles' second factor; SQL only when the
		// instance's copy of the user is stale). 1 before introspection
		// answered as a refresh would.
		{"introspection_of_a_refresh_token", func() func() {
			rt := login().RefreshToken
			return func() {
				if api.PostForm("/oauth2/introspect", url.Values{"token": {rt}}, web).ExpectStatus(http.StatusOK).Map()["active"] != true {
					t.Fatal("introspection of a refresh token: not active")
				}
			}
		}, 2, 0},
		{"userinfo", func() func() {
			at := login().AccessToken
			api.Get("/userinfo", st.Bearer(at)).ExpectStatus(http.StatusOK)
			return func() { api.Get("/userinfo", st.Bearer(at)).ExpectStatus(http.StatusOK) }
		}, 2, 0},
		// One key for every try: its first use records last_used_at (at
		// most once a minute), the later ones only read.
		{"introspection_of_an_api_key", func() func() {
			if created.Key == "" {
				// Made with a token of Portcullis's own audience, as a key must be.
				own := api.PostForm("/oauth2/token", st.PasswordForm("rt@example.com", "a-long-passphrase-rt", ""),
					st.Basic("tools", fx.AdminClient(t, "tools"))).Token()
				api.PostJSON("/auth/api-keys", map[string]any{"name": "rt", "scopes": []string{"users:read"}},
					st.Bearer(own.AccessToken)).ExpectStatus(http.StatusCreated).JSON(&created)
			}
			return func() {
				if api.PostForm("/oauth2/introspect", url.Values{"token": {created.Key}}, web).ExpectStatus(http.StatusOK).Map()["active"] != true {
					t.Fatal("introspection of an API key: not active")
				}
			}
		}, 0, 1},
		// SQL: the durable revocation record (before Redis), its mark
		// once Redis took it (so no instance's reconciliation applies it
		// again: redisstate.State.Reconcile; 2 before the mark came), and
		// the audit event.
		{"revoke_refresh_token", func() func() {
			rt := login().RefreshToken
			return func() {
				api.PostForm("/oauth2/revoke", url.Values{"token": {rt}}, web).ExpectStatus(http.StatusOK)
			}
		}, 3, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			redis, sql := 1<<30, 1<<30
			for range 5 {
				do := tc.prepare()
				r0, d0 := dependencyCalls(t, in)
				do()
				r1, d1 := dependencyCalls(t, in)
				redis, sql = min(redis, r1-r0), min(sql, d1-d0)
			}
			t.Logf("%s: %d Redis, %d SQL", tc.name, redis, sql)
			if redis > tc.maxRedis || sql > tc.maxSQL {
				t.Errorf("%s: %d Redis and %d SQL round trips, at most %d and %d", tc.name, redis, sql, tc.maxRedis, tc.maxSQL)
			}
		})
	}
}

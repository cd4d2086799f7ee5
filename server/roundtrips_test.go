package server_test

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// dependencyCalls reads how many calls the instance has made to Redis and
// to the database (portcullis_dependency_duration_seconds_count).
func dependencyCalls(t *testing.T, in *st.Instance) (redis, database int) {
	t.Helper()
	resp, err := http.Get(in.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "portcullis_dependency_duration_seconds_count{") {
			continue
		}
		n, err := strconv.Atoi(line[strings.LastIndexByte(line, ' ')+1:])
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		switch {
		case strings.Contains(line, `dependency="redis"`):
			redis = n
		case strings.Contains(line, `dependency="database"`):
			database = n
		}
	}
	return redis, database
}

// TestSSORoundTrips counts the storage round trips of one single sign-on
// round trip on PostgreSQL + Redis (the authorize leg with a live browser
// session, then the code's redemption), so that a change that adds one
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
	for range tries {
		verifier := oauth2.GenerateVerifier()
		r0, d0 := dependencyCalls(t, d.in)
		res := e.run(t, e.authURL(conf, "rt", oauth2.S256ChallengeOption(verifier)))
		r1, d1 := dependencyCalls(t, d.in)
		if res.sawLogin || res.params.Get("code") == "" {
			t.Fatalf("not a single sign-on: %+v", res)
		}
		if _, err := conf.Exchange(context.Background(), res.params.Get("code"), oauth2.VerifierOption(verifier)); err != nil {
			t.Fatal(err)
		}
		r2, d2 := dependencyCalls(t, d.in)
		authRedis, authDB = minOf(authRedis, r1-r0), minOf(authDB, d1-d0)
		tokRedis, tokDB = minOf(tokRedis, r2-r1), minOf(tokDB, d2-d1)
	}
	t.Logf("authorize: %d Redis, %d SQL; token: %d Redis, %d SQL", authRedis, authDB, tokRedis, tokDB)
	for _, c := range []struct {
		what      string
		got, want int
	}{
		{"authorize leg, Redis", authRedis, 4},
		{"authorize leg, SQL", authDB, 1},
		{"token leg, Redis", tokRedis, 4},
		{"token leg, SQL", tokDB, 1},
	} {
		if c.got > c.want {
			t.Errorf("%s: %d round trips, at most %d", c.what, c.got, c.want)
		}
	}
}

package server_test

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the test's own connection, to hold a lock

	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// lockAPIKeys takes an exclusive lock on the API keys table in a
// transaction of the test's own, so that every key lookup waits, and
// returns a function that waits until some lookup of the server waits on
// it (waiting(true)) or none does (waiting(false): the server gave up
// its lookup), and one that releases it. Only the server's database is
// looked at: the tests running beside this one share the PostgreSQL
// server, and their queries on their own api_keys tables are no sign.
func lockAPIKeys(t *testing.T, dbURL string) (waiting func(bool), release func()) {
	t.Helper()
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, "LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	waiting = func(want bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
			var n int
			if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity
				WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%api_keys%'
				AND pid <> pg_backend_pid()`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if (n > 0) == want {
				return
			}
			time.Sleep(5 * time.Millisecond) // polling PostgreSQL's view: nothing to wait on instead
		}
		if want {
			t.Fatal("no API key lookup came to wait on the lock")
		}
		t.Fatal("the server's API key lookup still waits on the lock after its client went away")
	}
	released := false
	release = func() {
		if !released {
			released = true
			_ = tx.Rollback()
		}
	}
	t.Cleanup(release)
	return waiting, release
}

// TestClientGoneIsNotAServerFault: on PostgreSQL + Redis, a client that
// goes away while its API-key introspection waits on the database is
// recorded as 499 (the access log at info, the request metric), with no
// error logged; and a lookup that runs out of the request's time answers
// 503 temporarily_unavailable, never 500 (so the two are told apart by
// the request's context: cancelled, or past its deadline). The first fails
// on the code before this change: it was 500 server_error, logged as an
// error (seen at the end of every make bench scenario, when the driver
// hangs up).
func TestClientGoneIsNotAServerFault(t *testing.T) {
	t.Parallel()
	e := newKeyEnv(t, st.PostgresRedis, map[string]string{"PORTCULLIS_REQUEST_TIMEOUT": "2s"})
	key := e.createKey(t, "/auth/api-keys", e.annTok, map[string]any{"name": "gone", "scopes": []string{"projects:read"}}).Key
	introspect := func(ctx context.Context) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.in.URL+"/oauth2/introspect",
			strings.NewReader(url.Values{"token": {key}}.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("api-rs", e.rs)
		return http.DefaultClient.Do(req)
	}

	t.Run("the client hangs up", func(t *testing.T) {
		waiting, release := lockAPIKeys(t, e.env["PORTCULLIS_DATABASE_URL"])
		ctx, cancel := context.WithCancel(context.Background())
		answered := make(chan error, 1)
		go func() {
			resp, err := introspect(ctx)
			if err == nil {
				resp.Body.Close()
			}
			answered <- err
		}()
		waiting(true)
		cancel()
		if err := <-answered; !errors.Is(err, context.Canceled) {
			t.Fatalf("the cancelled request: %v", err)
		}
		// The lock goes only once the server has seen the client go and
		// given up its lookup: released sooner, the lookup could finish
		// first on a loaded machine and the request end as a 200 written
		// to nobody.
		waiting(false)
		release()
		if !e.in.Logs.WaitFor(`"status":499`, 10*time.Second) {
			t.Fatalf("no access log line with status 499:\n%s", e.in.Logs.String())
		}
		logs := e.in.Logs.String()
		for _, l := range strings.Split(logs, "\n") {
			if strings.Contains(l, `"status":499`) && !strings.Contains(l, `"level":"INFO"`) {
				t.Errorf("the 499 logged above info: %s", l)
			}
			if strings.Contains(l, `"level":"ERROR"`) {
				t.Errorf("an error logged for a client that went away: %s", l)
			}
		}
		resp, err := http.Get(e.in.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		metrics, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := `portcullis_http_requests_total{code="499",method="POST",route="/oauth2/introspect"} 1`; !strings.Contains(string(metrics), want) {
			t.Errorf("the request metric lacks %s", want)
		}
	})

	t.Run("the lookup runs out of time", func(t *testing.T) {
		_, release := lockAPIKeys(t, e.env["PORTCULLIS_DATABASE_URL"])
		defer release()
		resp, err := introspect(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), `"temporarily_unavailable"`) {
			t.Fatalf("a lookup past the request's time: %d %s, want 503 temporarily_unavailable", resp.StatusCode, body)
		}
	})
}

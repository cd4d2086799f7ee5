package server_test

import (
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// TestBusyHashingAnswersAlike: while every hashing slot is taken (anyone
// can keep them taken with password guesses), a request whose deadline
// passes while it waits for a slot is answered 503 temporarily_unavailable,
// the same for an existing account and an unknown one, and a registration
// waiting so is a 503 too, never a 500. Found by a review: the existing
// account answered 503, the unknown one 400 invalid_grant (an existence
// oracle), and the registration 500 server_error.
//
// The slots are filled over HTTP by one slow guess per slot (argon2id
// t=40, m=64 MiB: seconds a hash against a 1 s request deadline); the
// probes go out once the instance's own gauge
// (portcullis_password_hashes_running) shows every slot taken, so each
// probe waits for a slot until its deadline.
func TestBusyHashingAnswersAlike(t *testing.T) {
	t.Parallel()
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			env := st.NewEnv(t, b)
			env["PORTCULLIS_REQUEST_TIMEOUT"] = "1s"
			env["PORTCULLIS_ARGON2_MEMORY"] = "65536"
			env["PORTCULLIS_ARGON2_TIME"] = "40"
			env["PORTCULLIS_PUBLIC_REGISTRATION"] = "true"
			in := st.Start(t, env)
			fx := st.NewFixtures(t, in.App.Core)
			fx.User(t, "alice@example.com", "correct horse battery staple", "user")
			secret := fx.Client(t, clients.Spec{ID: "web"})

			type answer struct {
				status int
				body   string
				took   time.Duration
			}
			do := func(req *http.Request) answer {
				start := time.Now()
				resp, err := http.DefaultClient.Do(req)
				if err != nil { // a filler cut off by the server's write timeout: no answer
					return answer{body: err.Error(), took: time.Since(start)}
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return answer{resp.StatusCode, strings.TrimSpace(string(b)), time.Since(start)}
			}
			login := func(name string) answer {
				req, _ := http.NewRequest(http.MethodPost, in.URL+"/oauth2/token",
					strings.NewReader(st.PasswordForm(name, "not the password", "").Encode()))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				req.SetBasicAuth("web", secret)
				return do(req)
			}
			register := func(email string) answer {
				req, _ := http.NewRequest(http.MethodPost, in.URL+"/auth/register",
					strings.NewReader(fmt.Sprintf(`{"email":%q,"password":"a long enough new passphrase"}`, email)))
				req.Header.Set("Content-Type", "application/json")
				return do(req)
			}
			slots := runtime.GOMAXPROCS(0)
			var fillers sync.WaitGroup
			for i := range slots {
				fillers.Add(1)
				go func() { defer fillers.Done(); login(fmt.Sprintf("filler-%d@example.com", i)) }()
			}
			c := st.NewClient(t, in.URL)
			for deadline := time.Now().Add(30 * time.Second); metricValue(scrape(t, c), "portcullis_password_hashes_running", nil) < float64(slots); {
				if time.Now().After(deadline) {
					t.Fatal("the fillers never took every hashing slot")
				}
				time.Sleep(10 * time.Millisecond) // polling the instance's gauge: nothing to wait on instead
			}
			var known, unknown, reg answer
			st.AtOnce(3, func(i int) {
				switch i {
				case 0:
					known = login("alice@example.com")
				case 1:
					unknown = login("nobody@example.com")
				case 2:
					reg = register("newcomer@example.com")
				}
			})
			fillers.Wait()
			t.Logf("existing account %d %s (%v); unknown account %d %s (%v); register %d %s (%v)",
				known.status, known.body, known.took.Round(time.Millisecond), unknown.status, unknown.body,
				unknown.took.Round(time.Millisecond), reg.status, reg.body, reg.took.Round(time.Millisecond))
			if known.status != http.StatusServiceUnavailable || known.status != unknown.status || known.body != unknown.body {
				t.Errorf("an existing account answers %d %s, an unknown one %d %s; want the same 503",
					known.status, known.body, unknown.status, unknown.body)
			}
			if reg.status != http.StatusServiceUnavailable {
				t.Errorf("register while waiting for a hashing slot: %d %s, want 503", reg.status, reg.body)
			}
		})
	}
}

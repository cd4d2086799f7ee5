package server_test

import (
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// throttleBackends are the deployments every throttle boundary is proven on:
// production (PostgreSQL + Redis) and the embedded store.
var throttleBackends = []st.Backend{st.PostgresRedis, st.SQLite}

// proxied starts an instance that believes X-Forwarded-For from loopback, so
// a test can speak for many client addresses.
func proxied(t *testing.T, b st.Backend, extra map[string]string) *st.Instance {
	t.Helper()
	env := st.NewEnv(t, b)
	env["PORTCULLIS_TRUSTED_PROXIES"] = "127.0.0.1/32"
	for k, v := range extra {
		env[k] = v
	}
	return st.Start(t, env)
}

// TestPerAddressLimitKeysIPv6By64: two addresses in one IPv6 /64 share one
// per-address budget (rotating through the /64 does not buy more requests);
// another /64, and an IPv4 client, have their own; an IPv4-mapped address
// counts as its IPv4 address. Fails before this change: each /128 had its
// own budget.
func TestPerAddressLimitKeysIPv6By64(t *testing.T) {
	for _, b := range throttleBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			c := proxied(t, b, nil).Client(t)
			forgot := func(ip string, i int) *st.Response {
				return c.PostJSON("/auth/password/forgot", map[string]string{"email": fmt.Sprintf("someone%d@example.com", i)},
					st.WithHeader("X-Forwarded-For", ip))
			}
			// The forgot-password budget is 10 a minute per address.
			for i := 0; i < 10; i++ {
				forgot(fmt.Sprintf("2001:db8:aa:1::%x", i+1), i).ExpectStatus(202)
			}
			forgot("2001:db8:aa:1:ffff:ffff:ffff:ffff", 10).ExpectError(429, "rate_limited")
			forgot("2001:db8:aa:2::1", 11).ExpectStatus(202) // another /64
			for i := 0; i < 10; i++ {
				forgot("203.0.113.50", 20+i).ExpectStatus(202)
			}
			forgot("::ffff:203.0.113.50", 30).ExpectError(429, "rate_limited") // the same IPv4 client
			forgot("203.0.113.51", 31).ExpectStatus(202)
		})
	}
}

// TestLoginThrottleAdmitsOneGuessAtOnce: one failure short of the limit,
// wrong guesses of one account sent at once from many addresses (through a
// trusted proxy) get exactly one evaluated (400 invalid_grant); every other
// one is 429 rate_limited with Retry-After; and while that delay runs, a
// second wave gets none. Fails before this change: every racer passed the
// throttle's peek before the first failure set the delay.
func TestLoginThrottleAdmitsOneGuessAtOnce(t *testing.T) {
	const racers = 12
	for _, b := range throttleBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			in := proxied(t, b, map[string]string{"PORTCULLIS_LOGIN_FAILURE_LIMIT": "2"})
			fx := st.NewFixtures(t, in.App.Core)
			fx.User(t, userEmail, userPass, "user")
			web := st.Basic("web", fx.Client(t, clients.Spec{ID: "web"}))
			c := in.Client(t)
			guess := func(i int) *st.Response {
				return c.PostForm("/oauth2/token", st.PasswordForm(userEmail, fmt.Sprintf("wrong guess %d", i), ""), web,
					st.WithHeader("X-Forwarded-For", fmt.Sprintf("198.51.100.%d", i+1)))
			}
			guess(200).ExpectError(400, "invalid_grant") // one failure: one free attempt left
			wave := func() (evaluated int) {
				var start, done sync.WaitGroup
				start.Add(1)
				got := make([]*st.Response, racers)
				for i := range racers {
					done.Add(1)
					go func() {
						defer done.Done()
						start.Wait()
						got[i] = guess(i)
					}()
				}
				start.Done()
				done.Wait()
				for _, r := range got {
					switch r.StatusCode {
					case 400:
						r.ExpectError(400, "invalid_grant")
						evaluated++
					case 429:
						r.ExpectError(429, "rate_limited")
						if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 1 {
							t.Fatalf("Retry-After %q", r.Header.Get("Retry-After"))
						}
					default:
						t.Fatalf("status %d: %s", r.StatusCode, r.Body)
					}
				}
				return evaluated
			}
			if n := wave(); n != 1 {
				t.Fatalf("%d of %d simultaneous guesses evaluated, want exactly 1", n, racers)
			}
			if n := wave(); n != 0 {
				t.Fatalf("%d guesses evaluated during the delay, want 0", n)
			}
		})
	}
}

// TestPasswordChangeUnderLoginThrottle: POST /auth/password/change checks
// the current password under the login throttle, shared with the password
// grant: a thief holding a user's access token gets the same delay as a
// guesser at the token endpoint (failures on either side count on both), and
// guesses sent at once get exactly one evaluated. Fails before this change:
// the endpoint answered 400 to every guess, outside the throttle.
func TestPasswordChangeUnderLoginThrottle(t *testing.T) {
	const racers = 8
	for _, b := range throttleBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			in := proxied(t, b, map[string]string{"PORTCULLIS_LOGIN_FAILURE_LIMIT": "3"})
			fx := st.NewFixtures(t, in.App.Core)
			fx.User(t, userEmail, userPass, "user")
			web := st.Basic("web", fx.Client(t, clients.Spec{ID: "web"}))
			c := in.Client(t)
			stolen := c.PostForm("/oauth2/token", st.PasswordForm(userEmail, userPass, ""), web).Token().AccessToken
			change := func(i int) *st.Response {
				return c.PostJSON("/auth/password/change",
					map[string]string{"current_password": fmt.Sprintf("guess %d", i), "new_password": "a thief's new passphrase"},
					st.Bearer(stolen), st.WithHeader("X-Forwarded-For", fmt.Sprintf("203.0.113.%d", i+1)))
			}
			change(100).ExpectError(400, "invalid_grant")
			c.PostForm("/oauth2/token", st.PasswordForm(userEmail, "guess at the token endpoint", ""), web).
				ExpectError(400, "invalid_grant")
			// One attempt is left before the delay: of the guesses sent at
			// once, exactly one is evaluated.
			var start, done sync.WaitGroup
			start.Add(1)
			got := make([]*st.Response, racers)
			for i := range racers {
				done.Add(1)
				go func() {
					defer done.Done()
					start.Wait()
					got[i] = change(i)
				}()
			}
			start.Done()
			done.Wait()
			evaluated := 0
			for _, r := range got {
				if r.StatusCode == 400 {
					r.ExpectError(400, "invalid_grant")
					evaluated++
					continue
				}
				r.ExpectError(429, "rate_limited")
				if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 1 {
					t.Fatalf("Retry-After %q", r.Header.Get("Retry-After"))
				}
			}
			// Exactly one: the free attempts were spent at both doors (were
			// the grant's failure not counted here, two would pass).
			if evaluated != 1 {
				t.Fatalf("%d of %d simultaneous guesses evaluated, want exactly 1", evaluated, racers)
			}
		})
	}
}

// TestLoginThrottleHidesActiveAccounts: the login throttle is keyed by the
// login "so it behaves the same for accounts that do not exist" (docs/
// security.md). An attacker puts two logins, a real account and an address
// with none, at the same failures; only the real account's owner can then
// sign in (with a password, or a password and a second factor), and the
// attacker's next guesses must be answered alike on the two. No wait is
// needed: the guesses come within the first delay. Found by a review;
// failed before the change: a success cleared the account's failures, so
// the real account answered 400 where the other was already 429.
func TestLoginThrottleHidesActiveAccounts(t *testing.T) {
	const limit = 3
	for _, b := range throttleBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newGrantsDeployment(t, b, st.Env{"PORTCULLIS_LOGIN_FAILURE_LIMIT": strconv.Itoa(limit)})
			for i, tc := range []struct {
				name     string
				failures int // the attacker's, on both logins, before the owner signs in
				totp     bool
			}{
				{"password, below the limit", 1, false},
				{"password reaching the limit", limit - 1, false},
				{"password and second factor", 1, true},
			} {
				t.Run(tc.name, func(t *testing.T) {
					owner, nobody := fmt.Sprintf("owner%d@example.com", i), fmt.Sprintf("nobody%d@example.com", i)
					guess := func(login string) *st.Response {
						return d.c.PostForm("/oauth2/token", st.PasswordForm(login, "a wrong guess", ""), st.Basic("app", d.secrets["app"]))
					}
					var secret string
					if tc.totp {
						_, secret, _ = d.totpUser(t, owner)
					} else {
						d.fx.User(t, owner, mfaPass, "editor")
					}
					for range tc.failures {
						guess(owner).ExpectError(400, "invalid_grant")
						guess(nobody).ExpectError(400, "invalid_grant")
					}
					if tc.totp {
						m := d.mfaRequired(t, "app", owner, "")
						d.otp(t, "app", m["mfa_token"].(string), st.NextTOTPCode(t, secret)).ExpectStatus(200)
					} else {
						d.password(t, "app", owner, "").ExpectStatus(200)
					}
					answers := map[string][]int{}
					for range limit {
						for _, login := range []string{owner, nobody} {
							answers[login] = append(answers[login], guess(login).StatusCode)
						}
					}
					t.Logf("after the owner's sign-in: %v for the account, %v for no account", answers[owner], answers[nobody])
					if !slices.Equal(answers[owner], answers[nobody]) {
						t.Errorf("the throttle answers %v for the real account, %v for an address without one", answers[owner], answers[nobody])
					}
				})
			}
		})
	}
}

package server_test

import (
	"net/http"
	"testing"

	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// TestFailedResendKeepsPendingLink: sending a new link (a re-invite, an
// admin's or a self-service reset, a verification email) whose email the
// SMTP server refuses cancels nothing: the link emailed before still works,
// as the answer ("no invite was created", "could not be sent") implies. A
// resend whose email goes out does stop the earlier link. Found by a
// review: before the change the store superseded the pending invite (or the
// earlier reset or verification link) before the email was tried, so a
// failed resend left the person with a dead link and no new one.
func TestFailedResendKeepsPendingLink(t *testing.T) {
	type link struct {
		email string
		// send asks for a link to email and checks the answer, as when the
		// email goes out or (failed) when the SMTP server refuses it.
		send func(t *testing.T, a *acctEnv, failed bool)
		// use redeems a link; usedStatus is its answer when the link works.
		use        func(a *acctEnv, tok string) *st.Response
		usedStatus int
	}
	cases := map[string]link{
		"invite": {
			email: "bo@example.com",
			send: func(t *testing.T, a *acctEnv, failed bool) {
				root := a.login(t, rootEmail, rootPass).AccessToken
				resp := a.c.PostJSON("/admin/invites", map[string]string{"email": "bo@example.com", "role": "user"}, st.Bearer(root))
				if failed {
					resp.ExpectError(http.StatusServiceUnavailable, "temporarily_unavailable")
					return
				}
				resp.ExpectStatus(http.StatusCreated)
			},
			use: func(a *acctEnv, tok string) *st.Response {
				return a.c.PostJSON("/auth/invites/accept", map[string]string{"token": tok, "password": "a long passphrase for bo"})
			},
			usedStatus: http.StatusOK,
		},
		"admin_reset": {
			email: "ray@example.com",
			send: func(t *testing.T, a *acctEnv, failed bool) {
				u, err := a.in.App.Core.Store.GetUserByEmail(t.Context(), "ray@example.com")
				if err != nil {
					t.Fatal(err)
				}
				root := a.login(t, rootEmail, rootPass).AccessToken
				resp := a.c.PostJSON("/admin/users/"+u.ID+"/password-reset", nil, st.Bearer(root))
				if failed {
					resp.ExpectError(http.StatusServiceUnavailable, "temporarily_unavailable")
					return
				}
				resp.ExpectStatus(http.StatusOK)
			},
			use: func(a *acctEnv, tok string) *st.Response {
				return a.c.PostJSON("/auth/password/reset", map[string]string{"token": tok, "new_password": "ray's brand new passphrase"})
			},
			usedStatus: http.StatusNoContent,
		},
		"forgot_password": {
			email: "fay@example.com",
			send: func(t *testing.T, a *acctEnv, _ bool) {
				a.c.PostJSON("/auth/password/forgot", map[string]string{"email": "fay@example.com"}).ExpectStatus(http.StatusAccepted)
				a.in.App.Accounts.Wait() // the email is sent by a background job
			},
			use: func(a *acctEnv, tok string) *st.Response {
				return a.c.PostJSON("/auth/password/reset", map[string]string{"token": tok, "new_password": "fay's brand new passphrase"})
			},
			usedStatus: http.StatusNoContent,
		},
		"verification": {
			email: "vic@example.com",
			send: func(t *testing.T, a *acctEnv, failed bool) {
				at := a.login(t, "vic@example.com", "vic's long passphrase").AccessToken
				resp := a.c.PostJSON("/auth/email/verify/resend", nil, st.Bearer(at))
				if failed {
					resp.ExpectError(http.StatusServiceUnavailable, "temporarily_unavailable")
					return
				}
				resp.ExpectStatus(http.StatusAccepted)
			},
			use: func(a *acctEnv, tok string) *st.Response {
				return a.c.PostJSON("/auth/email/verify", map[string]string{"token": tok})
			},
			usedStatus: http.StatusOK,
		},
	}
	for _, backend := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(backend.String(), func(t *testing.T) {
			t.Parallel()
			a := newAcctEnvOn(t, backend, map[string]string{"PORTCULLIS_RATE_LIMITS": "off"})
			a.fx.User(t, "ray@example.com", "ray's long passphrase")
			a.fx.User(t, "fay@example.com", "fay's long passphrase")
			vic := a.fx.User(t, "vic@example.com", "vic's long passphrase")
			if _, err := a.in.App.Core.Store.UpdateUser(t.Context(), vic.ID, func(u *store.User) error {
				u.EmailVerified = false
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			for name, tc := range cases { // in turn: one SMTP server, one failure injected at a time
				t.Run(name, func(t *testing.T) {
					a := a.with(t)
					tc.send(t, a, false)
					first := a.smtp.WaitFor(t, tc.email, mailWithin).Token(t)
					a.smtp.FailNext(1, 550)
					tc.send(t, a, true)
					if resp := tc.use(a, first); resp.StatusCode != tc.usedStatus {
						t.Fatalf("the link sent before the failed resend: %d %s; want %d", resp.StatusCode, resp.Body, tc.usedStatus)
					}
				})
			}
			// A resend whose email goes out stops the link before it.
			t.Run("sent_resend_supersedes", func(t *testing.T) {
				a := a.with(t)
				root := a.login(t, rootEmail, rootPass).AccessToken
				first := a.invite(t, root, "bo2@example.com", "user")
				second := a.invite(t, root, "bo2@example.com", "user")
				a.c.PostJSON("/auth/invites/accept", map[string]string{"token": first, "password": "a long passphrase for bo"}).
					ExpectError(http.StatusBadRequest, "invalid_token")
				a.accept(t, second, "a long passphrase for bo")
			})
		})
	}
}

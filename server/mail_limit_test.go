package server_test

import (
	"fmt"
	"net/http"
	"slices"
	"testing"

	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// TestMailPerRecipientLimit: an email a request makes the server send (a
// resent verification link, an admin's reset link, an invite) goes to one
// address at most three times an hour, whoever asks and from however many
// client addresses; the fourth is 429 rate_limited and sends nothing.
// Before, whoever registered a stranger's address (registration proves no
// ownership) had it sent a verification link twenty times a minute per
// client address, and an admin (an organisation's too) re-invited or reset
// any address without end. Another address is not held back.
func TestMailPerRecipientLimit(t *testing.T) {
	t.Parallel()
	a := newAcctEnv(t, map[string]string{"PORTCULLIS_PUBLIC_REGISTRATION": "true", "PORTCULLIS_TRUSTED_PROXIES": "127.0.0.1/32"})
	rootTok := a.login(t, rootEmail, rootPass).AccessToken
	from := func(i int) st.Option { return st.WithHeader("X-Forwarded-For", fmt.Sprintf("203.0.113.%d", i)) }
	const pw = "the registrant's own passphrase"
	var resettee string
	cases := []struct {
		name   string
		to     string
		before func(t *testing.T) // makes what the requests need
		send   func(t *testing.T, i int) *st.Response
		ok     int
		extra  int // emails before the requests' (the registration's)
	}{
		{"verification_resend", "victim@example.org", func(t *testing.T) {
			a.c.PostJSON("/auth/register", map[string]string{"email": "victim@example.org", "password": pw}, from(200)).ExpectStatus(http.StatusCreated)
		}, func(t *testing.T, i int) *st.Response {
			tok := a.c.PostForm("/oauth2/token", st.PasswordForm("victim@example.org", pw, ""), st.Basic("web", a.webSecret), from(i)).Token()
			return a.c.PostJSON("/auth/email/verify/resend", nil, st.Bearer(tok.AccessToken), from(i))
		}, http.StatusAccepted, 1},
		{"admin_reset_link", "resettee@example.org", func(t *testing.T) { resettee = a.fx.User(t, "resettee@example.org", pw, "user").ID },
			func(t *testing.T, i int) *st.Response {
				return a.c.PostJSON("/admin/users/"+resettee+"/password-reset", nil, st.Bearer(rootTok), from(i))
			}, http.StatusOK, 0},
		{"invite", "invitee@example.org", nil, func(t *testing.T, i int) *st.Response {
			return a.c.PostJSON("/admin/invites", map[string]string{"email": "invitee@example.org", "role": "user"}, st.Bearer(rootTok), from(i))
		}, http.StatusCreated, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.before != nil {
				tc.before(t)
			}
			sent := func() int {
				n := 0
				for _, m := range a.smtp.Messages() {
					if slices.Contains(m.To, tc.to) {
						n++
					}
				}
				return n
			}
			for i := 1; i <= 3; i++ {
				tc.send(t, i).ExpectStatus(tc.ok)
			}
			for range tc.extra + 3 {
				a.smtp.WaitFor(t, tc.to, mailWithin)
			}
			mailed := sent()
			tc.send(t, 4).ExpectError(http.StatusTooManyRequests, "rate_limited")
			tc.send(t, 5).ExpectError(http.StatusTooManyRequests, "rate_limited")
			if got := sent(); got != mailed {
				t.Fatalf("%d emails to %s after the refusals, %d before", got, tc.to, mailed)
			}
		})
	}
	// Another address is not held back by them.
	a.c.PostJSON("/admin/invites", map[string]string{"email": "someone.else@example.org", "role": "user"}, st.Bearer(rootTok)).
		ExpectStatus(http.StatusCreated)
}

// TestInviteMailLimitPerOrganisation: the invite emails' limit is counted
// per organisation (the platform's apart): three invites of one address
// into acme hold back acme's fourth (429) but not globex's invite of the
// same address, nor the platform's, so no organisation's admin can block
// another's invites or learn from a 429 that someone else invited it.
func TestInviteMailLimitPerOrganisation(t *testing.T) {
	t.Parallel()
	e := newTenantEnv(t, st.SQLite, map[string]string{"PORTCULLIS_RATE_LIMITS": "on"})
	acme, globex := e.createTenant(t, "acme"), e.createTenant(t, "globex")
	const addr = "sought.after@example.org"
	invite := func(tenantID string) *st.Response {
		return e.c.PostJSON("/admin/tenants/"+tenantID+"/members", map[string]string{"email": addr, "role": "user"}, st.Bearer(e.rootTok))
	}
	for range 3 {
		invite(acme).ExpectStatus(http.StatusCreated)
	}
	invite(acme).ExpectError(http.StatusTooManyRequests, "rate_limited")
	invite(globex).ExpectStatus(http.StatusCreated)
	e.c.PostJSON("/admin/invites", map[string]string{"email": addr, "role": "super_admin"}, st.Bearer(e.rootTok)).ExpectStatus(http.StatusCreated)
}

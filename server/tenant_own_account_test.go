package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/portcullis-auth/portcullis/server/mail/mailtest"
	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// inviteMail creates an invite as the holder of bearer and returns its
// email (the link's token is msg.Token).
func (e *tenantEnv) inviteMail(t *testing.T, bearer, email, role string) mailtest.Received {
	t.Helper()
	e.c.PostJSON("/admin/invites", map[string]string{"email": email, "role": role}, st.Bearer(bearer)).ExpectStatus(http.StatusCreated)
	return e.smtp.WaitFor(t, email, mailWithin)
}

// joinedAccountPhrase is what an organisation's invitation says to an
// address that already has an account.
const joinedAccountPhrase = "already has an account"

// TestOrganisationReachesOnlyItsOwnAccounts: an organisation's admin makes
// account-wide changes (a temporary password, deletion, a second-factor
// reset, the sessions, a reset link, deactivation) only to an account the
// organisation created (its invite, a machine user it made) that belongs to
// no other organisation and holds no global role. A person who registered
// publicly (the policy's default role, not a platform role) or whose
// account was made outside any organisation, and who then accepted acme's
// invite with their own password, stays their own: acme's admin is refused
// (403, as for any shared account) and the account is unchanged. So is an
// account of acme's that also joined globex, or was given a global role.
// The invitation names the organisation and, to an address that has an
// account, says that accepting adds that account to it. Found by a review:
// before the change acme's admin set the registrant's temporary password
// (200), signed in with it and held their platform account, and the
// invitation named no organisation.
func TestOrganisationReachesOnlyItsOwnAccounts(t *testing.T) {
	for _, backend := range tenantBackends {
		t.Run(backend.String(), func(t *testing.T) {
			t.Parallel()
			e := newTenantEnv(t, backend, map[string]string{"PORTCULLIS_PUBLIC_REGISTRATION": "true"})
			st0 := e.in.App.Core.Store
			acme, globex := e.createTenant(t, "acme"), e.createTenant(t, "globex")
			e.member(t, acme, "admin-a@example.com", "admin")
			e.member(t, globex, "admin-g@example.com", "admin")
			tokA := e.loginTo(t, "admin-a@example.com", "acme").Token().AccessToken
			tokG := e.loginTo(t, "admin-g@example.com", "globex").Token().AccessToken

			// A public registrant (global role user, the default role).
			const victim, victimPass = "victim@example.org", "the victim's own passphrase"
			var reg struct{ ID string }
			e.c.PostJSON("/auth/register", map[string]string{"email": victim, "password": victimPass}).ExpectStatus(http.StatusCreated).JSON(&reg)
			e.smtp.WaitFor(t, victim, mailWithin) // the verification email
			msg := e.inviteMail(t, tokA, victim, "user")
			for _, body := range []string{msg.Text, msg.HTML} {
				if !strings.Contains(body, "Org acme") || !strings.Contains(body, joinedAccountPhrase) {
					t.Errorf("the invitation to an existing account names no organisation or says nothing of the account:\n%s", body)
				}
			}
			if !strings.Contains(msg.Subject, "Org acme") {
				t.Errorf("the invitation's subject names no organisation: %q", msg.Subject)
			}
			e.c.PostJSON("/auth/invites/accept", map[string]string{"token": msg.Token(t), "password": victimPass}).Token()

			// An account made outside any organisation, holding no global
			// role at all, that accepted acme's invite.
			bare := e.fx.User(t, "bare@example.org", tenantPass)
			e.c.PostJSON("/auth/invites/accept", map[string]string{"token": e.inviteMail(t, tokA, "bare@example.org", "user").Token(t),
				"password": tenantPass}).Token()

			// Accounts acme's invites created.
			ownMsg := e.inviteMail(t, tokA, "own@example.com", "user")
			if !strings.Contains(ownMsg.Text, "Org acme") || strings.Contains(ownMsg.Text, joinedAccountPhrase) {
				t.Errorf("the invitation to a new address:\n%s", ownMsg.Text)
			}
			e.accept(t, ownMsg.Token(t), tenantPass)
			own, err := st0.GetUserByEmail(t.Context(), "own@example.com")
			if err != nil {
				t.Fatal(err)
			}
			e.accept(t, e.inviteMail(t, tokA, "roamer@example.com", "user").Token(t), tenantPass)
			roamer, err := st0.GetUserByEmail(t.Context(), "roamer@example.com")
			if err != nil {
				t.Fatal(err)
			}
			e.c.PostJSON("/auth/invites/accept", map[string]string{"token": e.inviteMail(t, tokG, "roamer@example.com", "user").Token(t),
				"password": tenantPass}).Token()
			e.accept(t, e.inviteMail(t, tokA, "promoted@example.com", "user").Token(t), tenantPass)
			promoted, err := st0.GetUserByEmail(t.Context(), "promoted@example.com")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st0.GrantRole(t.Context(), promoted.ID, "user"); err != nil {
				t.Fatal(err)
			}

			// Every account-wide change, in an order one account can take them all.
			changes := []struct{ name, method, path, body string }{
				{"temp_password", http.MethodPost, "/temp-password", `{"password":"acme admin chose this one"}`},
				{"password_reset", http.MethodPost, "/password-reset", `{}`},
				{"sessions", http.MethodGet, "/sessions", ``},
				{"sessions_revoke", http.MethodPost, "/sessions/revoke", `{}`},
				{"mfa_reset", http.MethodPost, "/mfa/reset", `{}`},
				{"deactivate", http.MethodPatch, "", `{"active":false}`},
				{"delete", http.MethodDelete, "", ``},
			}
			do := func(c *st.Client, bearer, id, method, path, body string) *st.Response {
				ctype := ""
				if body != "" {
					ctype = "application/json"
				}
				return c.Do(method, "/admin/users/"+id+path, []byte(body), ctype, st.Bearer(bearer))
			}
			for _, who := range []struct{ name, id, email, pw string }{
				{"registrant", reg.ID, victim, victimPass},
				{"account_of_no_organisation", bare.ID, "bare@example.org", tenantPass},
				{"acmes_account_in_globex_too", roamer.ID, "roamer@example.com", tenantPass},
				{"acmes_account_with_a_global_role", promoted.ID, "promoted@example.com", tenantPass},
			} {
				for _, ch := range changes {
					t.Run("fail/"+who.name+"/"+ch.name, func(t *testing.T) {
						do(e.in.Client(t), tokA, who.id, ch.method, ch.path, ch.body).ExpectError(http.StatusForbidden, "forbidden")
					})
				}
				// Acme still sees its member; the account is as it was.
				e.c.Get("/admin/users/"+who.id, st.Bearer(tokA)).ExpectStatus(http.StatusOK)
				if u, err := st0.GetUser(t.Context(), who.id); err != nil || !u.Active || u.MustChangePassword {
					t.Fatalf("%s after the refusals: %+v, %v", who.name, u, err)
				}
				e.c.PostForm("/oauth2/token", st.PasswordForm(who.email, who.pw, ""), st.Basic("web", e.webSecret)).Token()
			}
			// The account acme's invite created is acme's own.
			for _, ch := range changes {
				t.Run("ok/acmes_own_account/"+ch.name, func(t *testing.T) {
					resp := do(e.in.Client(t), tokA, own.ID, ch.method, ch.path, ch.body)
					if resp.StatusCode >= 300 {
						t.Fatalf("%d %s", resp.StatusCode, resp.Body)
					}
				})
			}
		})
	}
}

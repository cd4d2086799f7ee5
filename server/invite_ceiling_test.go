package server_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// TestReinviteUnderCeiling: inviting an address that has a pending invite
// replaces (revokes) it, so the actor must be allowed to revoke it. An admin
// who re-invites, at role user, an address a super_admin invited as admin is
// refused with 403 and the admin invite stays valid; a re-invite the actor
// may make supersedes the older invite. On PostgreSQL + Redis and SQLite.
func TestReinviteUnderCeiling(t *testing.T) {
	for _, backend := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(backend.String(), func(t *testing.T) {
			t.Parallel()
			a := newAcctEnvOn(t, backend)
			root := a.login(t, rootEmail, rootPass).AccessToken
			admin := a.accept(t, a.invite(t, root, "ada@example.com", "admin"), "ada's long passphrase").AccessToken

			// super_admin invites x@ as admin; the admin may not replace it.
			xTok := a.invite(t, root, "x@example.com", "admin")
			for _, email := range []string{"x@example.com", "X@Example.COM"} {
				r := a.c.PostJSON("/admin/invites", map[string]string{"email": email, "role": "user"}, st.Bearer(admin)).
					ExpectError(http.StatusForbidden, "forbidden")
				if !strings.Contains(string(r.Body), "pending invite") {
					t.Errorf("the refusal should say why: %s", r.Body)
				}
			}
			if n := mailsTo(a, "x@example.com"); n != 1 {
				t.Fatalf("%d emails to x@, want only the first invite's", n)
			}
			if got := invitesFor(t, a, root, "x@example.com"); len(got) != 1 || got[0]["status"] != "pending" || got[0]["role"] != "admin" {
				t.Fatalf("invites for x@ after the refused re-invite: %v", got)
			}
			refused := auditEvents(t, a, root, "action=invite.created&actor_id="+userID(t, a, admin))
			if len(refused) == 0 || refused[0]["outcome"] != "failure" {
				t.Fatalf("the refused re-invite is not audited as a failure: %v", refused)
			}
			// The original invite still works, with its role.
			x := decodeClaims(t, a.accept(t, xTok, "x's long passphrase").AccessToken)
			if !slices.Equal(claimStrings(t, x, "roles"), []string{"admin"}) {
				t.Fatalf("x@ accepted with roles %v, want admin", x["roles"])
			}

			// A re-invite the actor may make supersedes: the admin's own user invite.
			zOld := a.invite(t, admin, "z@example.com", "user")
			zNew := a.invite(t, admin, "z@example.com", "user")
			a.c.PostJSON("/auth/invites/accept", map[string]string{"token": zOld, "password": "z's long passphrase"}).
				ExpectError(http.StatusBadRequest, "invalid_token")
			a.accept(t, zNew, "z's long passphrase")

			// super_admin may replace its own admin invite with a user invite.
			yOld := a.invite(t, root, "y@example.com", "admin")
			yNew := a.invite(t, root, "y@example.com", "user")
			a.c.PostJSON("/auth/invites/accept", map[string]string{"token": yOld, "password": "y's long passphrase"}).
				ExpectError(http.StatusBadRequest, "invalid_token")
			y := decodeClaims(t, a.accept(t, yNew, "y's long passphrase").AccessToken)
			if !slices.Equal(claimStrings(t, y, "roles"), []string{"user"}) {
				t.Fatalf("y@ accepted with roles %v, want user", y["roles"])
			}
			replaced := auditEvents(t, a, root, "action=invite.revoked")
			if len(replaced) != 2 {
				t.Fatalf("invite.revoked events for the two replaced invites: %v", replaced)
			}
		})
	}
}

// mailsTo counts the messages the SMTP server accepted for to.
func mailsTo(a *acctEnv, to string) int {
	n := 0
	for _, m := range a.smtp.Messages() {
		for _, r := range m.To {
			if strings.EqualFold(r, to) {
				n++
			}
		}
	}
	return n
}

// invitesFor lists the invites for email, newest first.
func invitesFor(t *testing.T, a *acctEnv, bearer, email string) []map[string]any {
	t.Helper()
	var page struct {
		Items []map[string]any `json:"items"`
	}
	a.c.Get("/admin/invites?limit=200", st.Bearer(bearer)).ExpectStatus(http.StatusOK).JSON(&page)
	var out []map[string]any
	for _, inv := range page.Items {
		if strings.EqualFold(inv["email"].(string), email) {
			out = append(out, inv)
		}
	}
	return out
}

// userID is the sub of an access token.
func userID(t *testing.T, _ *acctEnv, token string) string {
	t.Helper()
	return decodeClaims(t, token)["sub"].(string)
}

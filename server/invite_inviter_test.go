package server_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// inviteID is the id part of an emailed invite token (id.secret).
func inviteID(tok string) string {
	id, _, _ := strings.Cut(tok, ".")
	return id
}

// wantInviteRefused checks that accepting tok answers 400 invalid_token
// ("no longer valid"), creates no account for email, and is audited as a
// failed invite.accepted with reason, the invite left pending.
func wantInviteRefused(t *testing.T, a *acctEnv, root, tok, email, reason string) {
	t.Helper()
	r := a.c.PostJSON("/auth/invites/accept", map[string]string{"token": tok, "password": "a long passphrase for x"}).
		ExpectError(http.StatusBadRequest, "invalid_token")
	if !strings.Contains(string(r.Body), "no longer valid") {
		t.Errorf("the refusal should say the invitation is no longer valid: %s", r.Body)
	}
	if _, err := a.in.App.Core.Store.GetUserByEmail(t.Context(), email); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused acceptance created the account of %s: %v", email, err)
	}
	id := inviteID(tok)
	ev := auditEvents(t, a, root, "action=invite.accepted&target_id="+id)
	if len(ev) != 1 || ev[0]["outcome"] != "failure" {
		t.Fatalf("the refused acceptance is not audited once as a failure: %v", ev)
	}
	if d, _ := ev[0]["details"].(map[string]any); d["reason"] != reason || d["invite_id"] != id {
		t.Fatalf("audit details %v, want reason %s", ev[0]["details"], reason)
	}
	if got := invitesFor(t, a, root, email); len(got) != 1 || got[0]["status"] != "pending" {
		t.Fatalf("a refused invite should stay as it was (pending): %v", got)
	}
}

// TestInviteOutlivesInviter: an invite is checked again when it is used,
// under the rule its creation ran: its inviter must still exist, be active
// and be allowed to invite to its role. An admin's invite whose admin was
// deactivated, demoted or deleted is refused (400 invalid_token, nothing
// created, audited with the reason, the invite left pending); one whose
// admin still may, or may again, is accepted with its role; an invite the
// operator made checks no user. The upstream path (PendingInvite,
// AcceptInviteFederated) refuses alike, and a look (no password) answers
// as unusable without recording anything.
func TestInviteOutlivesInviter(t *testing.T) {
	// Rate limits off: the cases accept many invites from one address.
	a := newAcctEnvOn(t, st.SQLite, map[string]string{"PORTCULLIS_RATE_LIMITS": "off"})
	root := a.login(t, rootEmail, rootPass).AccessToken
	deactivate := func(id string, active bool) {
		a.c.PatchJSON("/admin/users/"+id, map[string]any{"active": active}, st.Bearer(root)).ExpectStatus(http.StatusOK)
	}
	cases := []struct {
		name string
		// change is done to the inviter (id) after their invite (tok).
		change func(t *testing.T, id, tok string)
		// reason is the refusal's audit reason; "" means accepted.
		reason string
	}{
		{"ok/inviter_still_able", func(*testing.T, string, string) {}, ""},
		{"ok/inviter_reactivated", func(_ *testing.T, id, _ string) { deactivate(id, false); deactivate(id, true) }, ""},
		{"ok/operator_invite", func(t *testing.T, _, tok string) {
			// An invite the operator made names no user: InvitedBy is the
			// operator's id (no command makes one yet, so the row is changed).
			if err := a.in.App.Core.Store.DB().Exec("UPDATE invites SET invited_by = ? WHERE id = ?",
				accounts.OperatorActorID, inviteID(tok)).Error; err != nil {
				t.Fatal(err)
			}
		}, ""},
		{"fail/inviter_deactivated", func(_ *testing.T, id, _ string) { deactivate(id, false) }, "inviter_inactive"},
		{"fail/inviter_demoted", func(_ *testing.T, id, _ string) {
			a.c.PostJSON("/admin/users/"+id+"/roles", map[string]string{"role": "user"}, st.Bearer(root)).ExpectStatus(http.StatusOK)
			a.c.Delete("/admin/users/"+id+"/roles/admin", st.Bearer(root)).ExpectStatus(http.StatusOK)
		}, "inviter_may_not_invite_role"},
		{"fail/inviter_deleted", func(_ *testing.T, id, _ string) {
			a.c.Delete("/admin/users/"+id, st.Bearer(root)).ExpectStatus(http.StatusNoContent)
		}, "inviter_deleted"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := a.with(t)
			n := string(rune('a' + i))
			admin := a.accept(t, a.invite(t, root, "inviter-"+n+"@example.com", "admin"), "the inviter's long passphrase").AccessToken
			id := userID(t, a, admin)
			email := "x-" + n + "@example.com"
			tok := a.invite(t, admin, email, "user")
			tc.change(t, id, tok)
			if tc.reason != "" {
				wantInviteRefused(t, a, root, tok, email, tc.reason)
				// A look (the invite page's, no password) answers as
				// unusable too, and records nothing more.
				_, err := a.in.App.Accounts.AcceptInvite(t.Context(), accounts.Meta{}, accounts.AcceptInviteRequest{Token: tok})
				if !errors.Is(err, apierr.ErrOneTimeTokenInvalid) {
					t.Fatalf("a look: %v, want invalid_token", err)
				}
				if ev := auditEvents(t, a, root, "action=invite.accepted&target_id="+inviteID(tok)); len(ev) != 1 {
					t.Fatalf("a look was audited: %v", ev)
				}
				return
			}
			x := decodeClaims(t, a.accept(t, tok, "a long passphrase for x").AccessToken)
			if !slices.Equal(claimStrings(t, x, "roles"), []string{"user"}) {
				t.Fatalf("%s accepted with roles %v, want user", email, x["roles"])
			}
		})
	}

	t.Run("fail/inviter_deactivated_upstream", func(t *testing.T) {
		a := a.with(t)
		admin := a.accept(t, a.invite(t, root, "inviter-up@example.com", "admin"), "the inviter's long passphrase").AccessToken
		const email = "x-up@example.com"
		tok := a.invite(t, admin, email, "user")
		deactivate(userID(t, a, admin), false)
		ctx, svc := context.Background(), a.in.App.Accounts
		m := accounts.Meta{IP: "192.0.2.30", ClientID: "portcullis"}
		ref := accounts.InviteRefOf(tok)
		if _, err := svc.PendingInvite(ctx, m, ref); !errors.Is(err, apierr.ErrOneTimeTokenInvalid) {
			t.Fatalf("PendingInvite: %v, want invalid_token", err)
		}
		_, err := svc.AcceptInviteFederated(ctx, m, ref, accounts.FederatedUser{Email: email, EmailVerified: true,
			Provider: "plain", Issuer: "https://plain.example", Subject: "sub-x-up"})
		if !errors.Is(err, apierr.ErrOneTimeTokenInvalid) {
			t.Fatalf("AcceptInviteFederated: %v, want invalid_token", err)
		}
		if _, err := a.in.App.Core.Store.GetUserByEmail(ctx, email); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("a refused upstream acceptance created the account: %v", err)
		}
		ev := auditEvents(t, a, root, "action=invite.accepted&target_id="+inviteID(tok))
		if len(ev) != 2 || ev[0]["outcome"] != "failure" || ev[1]["outcome"] != "failure" {
			t.Fatalf("the two refused upstream attempts are not audited as failures: %v", ev)
		}
	})
}

// TestTenantInviteOutlivesInviter: an invite to an organisation is checked
// again when it is used, with the roles its inviter holds there (or their
// platform roles, which may invite to it as well): once the organisation's
// admin who made it is removed from it, accepting it is refused, for a new
// account and for an existing one joining (joinTenant), and nothing is
// created or granted. A platform admin's invite to the organisation, and
// one of an admin still in it, are accepted.
func TestTenantInviteOutlivesInviter(t *testing.T) {
	e := newTenantEnv(t, st.SQLite)
	acme := e.createTenant(t, "acme")
	adminA := e.member(t, acme, "admin-a@example.com", "admin")
	e.member(t, acme, "admin-b@example.com", "admin")
	tokA := e.loginTo(t, "admin-a@example.com", "acme").Token().AccessToken
	tokB := e.loginTo(t, "admin-b@example.com", "acme").Token().AccessToken
	joiner := e.fx.User(t, "joiner@example.com", tenantPass)

	newTok := e.invite(t, tokA, "new@example.com", "user")
	joinTok := e.invite(t, tokA, "joiner@example.com", "user")
	stillTok := e.invite(t, tokB, "still@example.com", "user")
	e.c.PostJSON("/admin/tenants/"+acme+"/members", map[string]string{"email": "by-root@example.com", "role": "admin"},
		st.Bearer(e.rootTok)).ExpectStatus(http.StatusCreated)
	rootTok := e.smtp.WaitFor(t, "by-root@example.com", mailWithin).Token(t)

	e.c.Delete("/admin/tenants/"+acme+"/members/"+adminA.ID, st.Bearer(e.rootTok)).ExpectStatus(http.StatusNoContent)

	t.Run("fail/new_account_inviter_removed", func(t *testing.T) {
		wantInviteRefused(t, e.with(t), e.rootTok, newTok, "new@example.com", "inviter_may_not_invite_role")
	})
	t.Run("fail/existing_account_inviter_removed", func(t *testing.T) {
		e.with(t).c.PostJSON("/auth/invites/accept", map[string]string{"token": joinTok, "password": tenantPass}).
			ExpectError(http.StatusBadRequest, "invalid_token")
		if roles, _ := e.in.App.Core.Store.TenantRoles(t.Context(), acme, joiner.ID); len(roles) != 0 {
			t.Fatalf("a refused join made the account a member: %v", roles)
		}
	})
	t.Run("ok/inviter_still_member", func(t *testing.T) {
		e.with(t).accept(t, stillTok, "still's long passphrase")
	})
	t.Run("ok/platform_admin_invite", func(t *testing.T) {
		a := e.with(t)
		u := a.accept(t, rootTok, "by-root's long passphrase")
		if roles, _ := e.in.App.Core.Store.TenantRoles(t.Context(), acme, userID(t, a, u.AccessToken)); !slices.Equal(roles, []string{"admin"}) {
			t.Fatalf("the platform admin's invite gave roles %v in acme, want admin", roles)
		}
	})
}

package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/server/mail/mailtest"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// A write of the admin API is made with an access token that the bearer
// check accepted when the request's headers arrived; its body comes after.
// What the write leaves that outlives the token's session (a client and its
// secret, a user, a role, a membership, an invite, a password chosen for
// another account) is undone and never shown when the token's session
// ended before the write (a password reset of the admin, an admin's
// "revoke sessions", a sign-out, the token revoked), though the admin's
// roles stand: the write reads the token's revocation again once done
// (accounts.madeWithLiveToken).

// TestClientRequestHeldPastTheSessionEndMakesNoClient: whoever holds an
// admin's access token sends POST /admin/clients for a confidential
// client_credentials client with admin scopes (with a super_admin's, the
// issuer among its audiences: a credential of the admin API tied to no
// user) and holds its body back past the end of the token's session; when
// the body comes the answer is 401 invalid_token and no such client exists.
// Real concurrency: the body is held on the wire while the session ends.
func TestClientRequestHeldPastTheSessionEndMakesNoClient(t *testing.T) {
	for _, b := range keyBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newAcctEnvOn(t, b, map[string]string{"PORTCULLIS_RATE_LIMITS": "off"})
			rootTok := e.login(t, rootEmail, rootPass).AccessToken
			const pw = "a passphrase for the held client test"
			for i, tc := range []struct {
				name string
				role string
				body map[string]any
				end  func(t *testing.T, u store.User, tok string)
			}{
				{"super_admin/password_reset", "super_admin",
					map[string]any{"scopes": []string{"users:write", "roles:assign", "clients:write"}, "audiences": []string{e.fx.Issuer()}},
					func(t *testing.T, u store.User, _ string) {
						resetByLink(t, e.in, u.ID, "a second passphrase for the held client test")
					}},
				{"admin/admin_revoked_sessions", "admin",
					map[string]any{"scopes": []string{"users:write", "roles:assign"}},
					func(t *testing.T, u store.User, _ string) {
						e.in.Client(t).PostJSON("/admin/users/"+u.ID+"/sessions/revoke", nil, st.Bearer(rootTok)).ExpectStatus(http.StatusNoContent)
					}},
				{"super_admin/token_revoked", "super_admin",
					map[string]any{"scopes": []string{"users:write"}, "audiences": []string{e.fx.Issuer()}},
					func(t *testing.T, _ store.User, tok string) {
						e.in.Client(t).PostForm("/oauth2/revoke", url.Values{"token": {tok}}, st.Basic("web", e.webSecret)).ExpectStatus(http.StatusOK)
					}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					u := e.fx.User(t, fmt.Sprintf("held%d@example.com", i), pw, tc.role)
					tok := e.with(t).login(t, u.Email, pw).AccessToken
					id := fmt.Sprintf("backdoor-%d", i)
					body := map[string]any{"client_id": id, "name": "Backdoor", "grants": []string{"client_credentials"}}
					for k, v := range tc.body {
						body[k] = v
					}
					raw, err := json.Marshal(body)
					if err != nil {
						t.Fatal(err)
					}
					send := heldRequest(t, e.in, "/admin/clients", tok)
					time.Sleep(300 * time.Millisecond) // the headers are in: the bearer check has run

					tc.end(t, u, tok)
					e.in.Client(t).Get("/admin/clients", st.Bearer(tok)).ExpectError(http.StatusUnauthorized, "invalid_token")

					status, answer := send(string(raw))
					if status != http.StatusUnauthorized || !strings.Contains(string(answer), "invalid_token") {
						t.Fatalf("the held client request after its session ended: %d %s, want 401 invalid_token", status, answer)
					}
					if strings.Contains(string(answer), "pcs_") {
						t.Fatalf("the refused client's secret was shown: %s", answer)
					}
					if c, err := e.in.App.Core.Store.GetClient(context.Background(), id); !errors.Is(err, store.ErrNotFound) {
						t.Fatalf("client %+v (%v), made with a token whose session had ended, exists", c, err)
					}
				})
			}
		})
	}
}

// adminWrite is one write of the admin API for TestAdminWriteOfARevokedTokenIsUndone.
type adminWrite struct {
	name string
	// do prepares what the write needs (n makes names unique) and makes it
	// as actor through the accounts service, as the handler does once the
	// body is read; shown is what the answer reveals (a secret, an id).
	do func(t *testing.T, actor accounts.Actor, n string) (shown string, err error)
	// stands reports whether the write is in effect.
	stands func(t *testing.T, n string) bool
	// held: the write finds it done already (a role the user holds), so it
	// stands whatever happens to the request.
	held bool
	// untouched, when set, reports whether a write refused before it was
	// made left all as it was, for the writes whose stands tells only
	// whether an undo happened; nil means !stands (or held).
	untouched func(t *testing.T, n string) bool
}

// adminWrites is every write of the admin API that outlives the session of
// the token making it (the writes accounts.madeWithLiveToken guards), each
// made as a super_admin may, with an organisation "acme" it creates.
func adminWrites(t *testing.T, e *tenantEnv) []adminWrite {
	t.Helper()
	ctx := context.Background()
	acme := e.createTenant(t, "acme")
	db := e.in.App.Core.Store
	svc := e.in.App.Accounts
	const tempPass = "an attacker's temporary passphrase"
	rotSecrets := map[string]string{} // the secret each rotated client had before
	mailedTo := func(addr string) bool {
		return slices.ContainsFunc(e.smtp.Messages(), func(m mailtest.Received) bool { return slices.Contains(m.To, addr) })
	}
	pendingInvite := func(t *testing.T, addr string) bool {
		page, err := db.ListInvites(ctx, "", 200)
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(page.Items, func(inv store.Invite) bool {
			return inv.Email == addr && inv.Status == store.InvitePending
		})
	}
	tenantRole := func(t *testing.T, userID, role string) bool {
		roles, err := db.TenantRoles(ctx, acme, userID)
		if err != nil {
			t.Fatal(err)
		}
		return slices.Contains(roles, role)
	}
	email := func(what, n string) string { return what + n + "@example.com" }
	return []adminWrite{
		{name: "client", do: func(t *testing.T, a accounts.Actor, n string) (string, error) {
			c, err := svc.CreateClient(ctx, a, clients.Spec{ID: "backdoor-" + n, Name: "Backdoor",
				Grants: []string{"client_credentials"}, Scopes: []string{"users:write", "roles:assign"}, Audiences: []string{e.fx.Issuer()}})
			return c.ClientSecret, err
		}, stands: func(t *testing.T, n string) bool {
			_, err := db.GetClient(ctx, "backdoor-"+n)
			return err == nil
		}},
		{name: "machine_user", do: func(t *testing.T, a accounts.Actor, n string) (string, error) {
			u, err := svc.CreateUser(ctx, a, accounts.NewUser{Kind: store.UserMachine, Name: "bot " + n, Roles: []string{"super_admin"}})
			return u.ID, err
		}, stands: func(t *testing.T, n string) bool {
			page, err := db.ListUsers(ctx, store.UserFilter{Query: "bot " + n, Limit: 10})
			if err != nil {
				t.Fatal(err)
			}
			return len(page.Items) > 0
		}},
		{name: "role_grant", do: func(t *testing.T, a accounts.Actor, n string) (string, error) {
			u := e.fx.User(t, email("grantee", n), tenantPass)
			_, err := svc.GrantRole(ctx, a, u.ID, "super_admin")
			return "", err
		}, stands: func(t *testing.T, n string) bool {
			u, err := db.GetUserByEmail(ctx, email("grantee", n))
			if err != nil {
				t.Fatal(err)
			}
			return slices.Contains(u.Roles, "super_admin")
		}},
		{name: "membership", do: func(t *testing.T, a accounts.Actor, n string) (string, error) {
			u := e.fx.User(t, email("joiner", n), tenantPass)
			_, err := svc.AddTenantMember(ctx, a, acme, u.ID, "admin")
			return "", err
		}, stands: func(t *testing.T, n string) bool {
			u, err := db.GetUserByEmail(ctx, email("joiner", n))
			if err != nil {
				t.Fatal(err)
			}
			return tenantRole(t, u.ID, "admin")
		}},
		{name: "membership_held_before", held: true, do: func(t *testing.T, a accounts.Actor, n string) (string, error) {
			u := e.member(t, acme, email("member", n), "admin")
			_, err := svc.AddTenantMember(ctx, a, acme, u.ID, "admin")
			return "", err
		}, stands: func(t *testing.T, n string) bool {
			u, err := db.GetUserByEmail(ctx, email("member", n))
			if err != nil {
				t.Fatal(err)
			}
			return tenantRole(t, u.ID, "admin")
		}},
		{name: "invite", do: func(t *testing.T, a accounts.Actor, n string) (string, error) {
			inv, err := svc.CreateInviteOfKind(ctx, a, "", email("invitee", n), "super_admin")
			return inv.ID, err
		}, stands: func(t *testing.T, n string) bool {
			return pendingInvite(t, email("invitee", n)) || mailedTo(email("invitee", n))
		}},
		{name: "organisation_invite", do: func(t *testing.T, a accounts.Actor, n string) (string, error) {
			inv, err := svc.InviteTenantMember(ctx, a, acme, email("orginvitee", n), "admin")
			return inv.ID, err
		}, stands: func(t *testing.T, n string) bool {
			return pendingInvite(t, email("orginvitee", n)) || mailedTo(email("orginvitee", n))
		}},
		{name: "temporary_password", do: func(t *testing.T, a accounts.Actor, n string) (string, error) {
			u := e.fx.User(t, email("temp", n), tenantPass)
			_, err := svc.SetTemporaryPassword(ctx, a, u.ID, tempPass)
			return "", err
		}, stands: func(t *testing.T, n string) bool {
			u, err := db.GetUserByEmail(ctx, email("temp", n))
			if err != nil {
				t.Fatal(err)
			}
			if !u.MustChangePassword {
				t.Fatal("the account no longer must change its password")
			}
			// The chosen password signs in (to a session that may only change it).
			resp := e.in.Client(t).PostForm("/oauth2/token", st.PasswordForm(u.Email, tempPass, ""), st.Basic("web", e.webSecret))
			return resp.StatusCode == http.StatusOK
		}, untouched: func(t *testing.T, n string) bool {
			u, err := db.GetUserByEmail(ctx, email("temp", n))
			if err != nil {
				t.Fatal(err)
			}
			resp := e.in.Client(t).PostForm("/oauth2/token", st.PasswordForm(u.Email, tenantPass, ""), st.Basic("web", e.webSecret))
			return !u.MustChangePassword && resp.StatusCode == http.StatusOK
		}},
		{name: "reactivation", do: func(t *testing.T, a accounts.Actor, n string) (string, error) {
			u := e.fx.User(t, email("dormant", n), tenantPass)
			if _, err := db.UpdateUser(ctx, u.ID, func(u *store.User) error { u.Active = false; return nil }); err != nil {
				t.Fatal(err)
			}
			on := true
			_, err := svc.UpdateUser(ctx, a, u.ID, accounts.UserPatch{Active: &on})
			return "", err
		}, stands: func(t *testing.T, n string) bool {
			u, err := db.GetUserByEmail(ctx, email("dormant", n))
			if err != nil {
				t.Fatal(err)
			}
			return u.Active
		}},
		{name: "reactivation_held_before", held: true, do: func(t *testing.T, a accounts.Actor, n string) (string, error) {
			u := e.fx.User(t, email("awake", n), tenantPass)
			on := true
			_, err := svc.UpdateUser(ctx, a, u.ID, accounts.UserPatch{Active: &on})
			return "", err
		}, stands: func(t *testing.T, n string) bool {
			u, err := db.GetUserByEmail(ctx, email("awake", n))
			if err != nil {
				t.Fatal(err)
			}
			return u.Active
		}},
		{name: "organisation_reactivation", do: func(t *testing.T, a accounts.Actor, n string) (string, error) {
			id := e.createTenant(t, "dormant-"+n)
			if _, err := db.UpdateTenant(ctx, id, func(t *store.Tenant) error { t.Active = false; return nil }); err != nil {
				t.Fatal(err)
			}
			on := true
			_, err := svc.UpdateTenant(ctx, a, id, accounts.TenantChange{Active: &on})
			return "", err
		}, stands: func(t *testing.T, n string) bool {
			tn, err := db.GetTenantBySlug(ctx, "dormant-"+n)
			if err != nil {
				t.Fatal(err)
			}
			return tn.Active
		}},
		{name: "client_secret_rotation", do: func(t *testing.T, a accounts.Actor, n string) (string, error) {
			rotSecrets[n] = e.fx.Client(t, clients.Spec{ID: "rot-" + n, Name: "Rotated", Grants: []string{"client_credentials"}, Scopes: []string{}})
			return svc.RotateClientSecret(ctx, a, "rot-"+n)
		}, stands: func(t *testing.T, n string) bool {
			// The secret the write set is unseen: it stands unless a
			// second rotation replaced it.
			return !auditedIn(t, e.in, "client.secret_rotated", "rot-"+n, map[string]string{"via": "token_revoked"})
		}, untouched: func(t *testing.T, n string) bool {
			resp := e.in.Client(t).PostForm("/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, st.Basic("rot-"+n, rotSecrets[n]))
			return resp.StatusCode == http.StatusOK
		}},
	}
}

// TestAdminWriteOfARevokedTokenIsUndone: every write of the admin API that
// outlives the session of the token making it, given the claims the bearer
// check accepted before the token's session ended (the admin's roles stay),
// is undone and answers 401 invalid_token, showing nothing: a client (no
// secret, deleted), a machine user (deleted), a role grant and an
// organisation's membership (revoked, but only what the request granted),
// an invite of the platform or of an organisation (revoked, its email
// never sent), a temporary password set on another account (replaced by
// one nobody holds; the account must still change it), a rotated client
// secret (rotated again, unseen), an account or an organisation turned
// back on (off again; a reactivation of one that was on changes nothing
// and stands). With the token live each write stands.
// Deterministic: the session ends between the bearer check and the call.
func TestAdminWriteOfARevokedTokenIsUndone(t *testing.T) {
	for _, b := range tenantBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newTenantEnv(t, b)
			ctx := context.Background()
			email := func(what, n string) string { return what + n + "@example.com" }
			writes := adminWrites(t, e)
			ends := []struct {
				name string
				end  func(t *testing.T, u store.User, tok string)
			}{
				{"live_token", nil},
				{"token_revoked", func(t *testing.T, _ store.User, tok string) {
					e.in.Client(t).PostForm("/oauth2/revoke", url.Values{"token": {tok}}, st.Basic("web", e.webSecret)).ExpectStatus(http.StatusOK)
				}},
				{"password_reset", func(t *testing.T, u store.User, _ string) {
					resetByLink(t, e.in, u.ID, "a second passphrase for the admin write test")
				}},
			}
			i := 0
			for _, w := range writes {
				for _, end := range ends {
					i++
					name := "fail/" + w.name + "/" + end.name
					if end.end == nil {
						name = "ok/" + w.name
					}
					t.Run(name, func(t *testing.T) {
						n := fmt.Sprint(i)
						boss := e.fx.User(t, email("boss", n), tenantPass, "super_admin")
						tok := e.with(t).login(t, boss.Email, tenantPass).AccessToken
						claims, err := e.in.App.Tokens.AuthenticateBearer(ctx, tok) // the bearer check, as the headers arrive
						if err != nil {
							t.Fatal(err)
						}
						if end.end != nil {
							end.end(t, boss, tok)
						}
						actor := accounts.Actor{ID: claims.Subject, Scope: claims.Scopes(), Audience: claims.Audience, Bearer: &claims,
							Meta: accounts.Meta{ClientID: claims.ClientID, Tenant: claims.Tenant}}
						shown, err := w.do(t, actor, n)
						stands := w.stands(t, n)
						if end.end == nil {
							if err != nil || !stands {
								t.Fatalf("with a live token: %v; stands %v", err, stands)
							}
							return
						}
						var ae *apierr.Error
						if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized || ae.Code != "invalid_token" {
							t.Fatalf("a write made with a token whose session ended: %v (shown %q); want 401 invalid_token", err, shown)
						}
						if shown != "" {
							t.Fatalf("the refused write showed %q", shown)
						}
						if stands != w.held {
							t.Fatalf("the refused write stands: %v, want %v", stands, w.held)
						}
					})
				}
			}
		})
	}
}

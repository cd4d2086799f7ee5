package server_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/apikeys"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// An API key is made with an access token that the bearer check accepted
// when the request's headers arrived; its body comes after. A key written
// once the token's session has ended (a password reset, an admin's "revoke
// sessions", a sign-out of that session) is revoked at once and never
// shown: the creation reads the token's revocation again after the write
// (accounts.keptIfTokenLive).

// resetByLink redeems a reset link for the user, as the emailed one is.
func resetByLink(t *testing.T, in *st.Instance, userID, newPassword string) {
	t.Helper()
	ctx := context.Background()
	var raw [32]byte
	_, _ = rand.Read(raw[:])
	secret := base64.RawURLEncoding.EncodeToString(raw[:])
	h := sha256.Sum256([]byte(secret))
	if err := in.App.Core.Store.CreateUserToken(ctx, &store.UserToken{UserID: userID, Purpose: store.PurposePasswordReset,
		TokenHash: h[:], ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := in.App.Accounts.ResetPassword(ctx, accounts.Meta{IP: "192.0.2.7", UserAgent: "test"}, secret, newPassword); err != nil {
		t.Fatal(err)
	}
}

// liveKeys returns the ids of the owner's keys that are not revoked.
func liveKeys(t *testing.T, in *st.Instance, ownerID string) []string {
	t.Helper()
	page, err := in.App.Core.Store.ListAPIKeys(context.Background(), ownerID, "", 200)
	if err != nil {
		t.Fatal(err)
	}
	var live []string
	for _, k := range page.Items {
		if k.RevokedAt == nil {
			live = append(live, k.ID)
		}
	}
	return live
}

// TestKeyRequestHeldPastTheResetMakesNoKey: whoever holds a person's access
// token sends POST /auth/api-keys (or an admin's, POST
// /admin/users/{id}/api-keys) and holds its body back past the end of the
// token's session; when the body comes the answer is 401 invalid_token and
// no key of the owner is live. Real concurrency: the body is held on the
// wire while the session ends.
func TestKeyRequestHeldPastTheResetMakesNoKey(t *testing.T) {
	for _, b := range keyBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newKeyEnv(t, b)
			var bot struct{ ID string }
			e.c.PostJSON("/admin/users", map[string]any{"kind": "machine", "name": "ci bot", "roles": []string{"editor"}},
				st.Bearer(e.rootTok)).ExpectStatus(http.StatusCreated).JSON(&bot)
			for _, tc := range []struct {
				name, path, owner string
				tok               string
				end               func(t *testing.T)
			}{
				{"own_key/password_reset", "/auth/api-keys", e.ann.ID, e.annTok,
					func(t *testing.T) { resetByLink(t, e.in, e.ann.ID, "ann's second passphrase for keys") }},
				{"machine_key/admin_sessions_revoked", "/admin/users/" + bot.ID + "/api-keys", bot.ID, e.admTok,
					func(t *testing.T) {
						e.in.Client(t).PostJSON("/admin/users/"+e.adm.ID+"/sessions/revoke", nil, st.Bearer(e.rootTok)).ExpectStatus(http.StatusNoContent)
					}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					send := heldRequest(t, e.in, tc.path, tc.tok)
					time.Sleep(300 * time.Millisecond) // the headers are in: the bearer check has run

					tc.end(t)
					e.in.Client(t).Get("/auth/sessions", st.Bearer(tc.tok)).ExpectError(http.StatusUnauthorized, "invalid_token")

					if status, body := send(`{"name":"backdoor","scopes":["projects:read"]}`); status != http.StatusUnauthorized {
						t.Fatalf("the held key request after its session ended: %d %s, want 401 invalid_token", status, body)
					}
					if live := liveKeys(t, e.in, tc.owner); len(live) != 0 {
						t.Fatalf("keys %v, made with a token whose session had ended, are live", live)
					}
				})
			}
		})
	}
}

// TestKeyOfARevokedTokenIsNotKept: the creation, given the claims the
// bearer check accepted before the token's session ended, writes the key
// and then refuses it (401 invalid_token, the key revoked, audited
// api_key.revoked via token_revoked); with the session still live the key
// is made and stays live. Deterministic: the session ends between the
// bearer check and the call.
func TestKeyOfARevokedTokenIsNotKept(t *testing.T) {
	for _, b := range keyBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newKeyEnv(t, b)
			ctx := context.Background()
			var bot struct{ ID string }
			e.c.PostJSON("/admin/users", map[string]any{"kind": "machine", "name": "ci bot", "roles": []string{"editor"}},
				st.Bearer(e.rootTok)).ExpectStatus(http.StatusCreated).JSON(&bot)
			const pw = "a passphrase for the session end test"
			for i, tc := range []struct {
				name    string
				machine bool // a machine user's key, made by an admin; else the person's own
				end     func(t *testing.T, u store.User, tok string, c token.AccessClaims)
			}{
				{"ok/own_key_live_token", false, nil},
				{"ok/machine_key_live_token", true, nil},
				{"fail/own_key/password_reset", false, func(t *testing.T, u store.User, _ string, _ token.AccessClaims) {
					resetByLink(t, e.in, u.ID, "a second passphrase for the session end test")
				}},
				{"fail/own_key/admin_revoked_sessions", false, func(t *testing.T, u store.User, _ string, _ token.AccessClaims) {
					e.in.Client(t).PostJSON("/admin/users/"+u.ID+"/sessions/revoke", nil, st.Bearer(e.rootTok)).ExpectStatus(http.StatusNoContent)
				}},
				{"fail/own_key/token_revoked", false, func(t *testing.T, _ store.User, tok string, _ token.AccessClaims) {
					e.in.Client(t).PostForm("/oauth2/revoke", url.Values{"token": {tok}}, st.Basic("web", e.web)).ExpectStatus(http.StatusOK)
				}},
				{"fail/machine_key/admin_revoked_sessions", true, func(t *testing.T, u store.User, _ string, _ token.AccessClaims) {
					e.in.Client(t).PostJSON("/admin/users/"+u.ID+"/sessions/revoke", nil, st.Bearer(e.rootTok)).ExpectStatus(http.StatusNoContent)
				}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					role := "editor"
					if tc.machine {
						role = "admin"
					}
					u := e.fx.User(t, fmt.Sprintf("end%d@example.com", i), pw, role)
					tok := e.in.Client(t).PostForm("/oauth2/token", st.PasswordForm(u.Email, pw, ""), st.Basic("web", e.web)).Token().AccessToken
					claims, err := e.in.App.Tokens.AuthenticateBearer(ctx, tok) // the bearer check, as the headers arrive
					if err != nil {
						t.Fatal(err)
					}
					if tc.end != nil {
						tc.end(t, u, tok, claims)
					}
					actor := accounts.Actor{ID: claims.Subject, Scope: claims.Scopes(), Audience: claims.Audience, Bearer: &claims,
						Meta: accounts.Meta{ClientID: claims.ClientID}}
					owner := u.ID
					var created apikeys.Created
					if tc.machine {
						owner = bot.ID
						created, err = e.in.App.Accounts.CreateMachineAPIKey(ctx, actor, bot.ID, apikeys.CreateRequest{Name: tc.name, Scopes: []string{"projects:write"}})
					} else {
						created, err = e.in.App.Accounts.CreateOwnAPIKey(ctx, actor, apikeys.CreateRequest{Name: tc.name, Scopes: []string{"projects:read"}})
					}
					page, lerr := e.in.App.Core.Store.ListAPIKeys(ctx, owner, "", 200)
					if lerr != nil {
						t.Fatal(lerr)
					}
					var made *store.APIKey
					for i, k := range page.Items {
						if k.Name == tc.name {
							made = &page.Items[i]
						}
					}
					if tc.end == nil {
						if err != nil || made == nil || made.RevokedAt != nil || created.Key == "" {
							t.Fatalf("with a live token: %+v, %v; stored %+v", created, err, made)
						}
						return
					}
					var ae *apierr.Error
					if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized || ae.Code != "invalid_token" {
						t.Fatalf("a key made with a token whose session ended: %+v, %v; want 401 invalid_token", created, err)
					}
					if created.Key != "" {
						t.Fatal("the refused key was shown")
					}
					if made == nil || made.RevokedAt == nil {
						t.Fatalf("the key written before the re-check: %+v, want it revoked", made)
					}
					if !e.audited(t, "api_key.revoked", owner, map[string]string{"key_id": made.ID, "via": "token_revoked"}) {
						t.Fatal("no api_key.revoked via token_revoked")
					}
				})
			}
		})
	}
}

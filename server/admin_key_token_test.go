package server_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"testing"

	"github.com/portcullis-auth/portcullis/keys/verify/apikey"
	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// TestAdminWriteOfAKeyTokenIsRefused: a token exchanged from an API key
// makes none of the admin API's writes that outlive the key (adminWrites:
// a client or its rotated secret, a machine user, a role grant or an
// organisation's membership, an invite, a temporary password, an account
// or organisation turned back on): 403 forbidden, the key refusals' answer,
// and nothing is written, though the key holds every admin permission. A
// leaked key with clients:write made a confidential client_credentials
// client whose secret outlived the key's revocation. The same writes with
// the person's own token stand.
func TestAdminWriteOfAKeyTokenIsRefused(t *testing.T) {
	for _, b := range tenantBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newTenantEnv(t, b)
			ctx := context.Background()
			writes := adminWrites(t, e)
			i := 0
			for _, w := range writes {
				for _, fromKey := range []bool{false, true} {
					i++
					name := "ok/" + w.name
					if fromKey {
						name = "fail/" + w.name + "/key_token"
					}
					t.Run(name, func(t *testing.T) {
						n := fmt.Sprint(i)
						boss := e.fx.User(t, "boss"+n+"@example.com", tenantPass, "super_admin")
						tok := e.with(t).login(t, boss.Email, tenantPass).AccessToken
						if fromKey {
							var k createdKey
							e.in.Client(t).PostJSON("/auth/api-keys", map[string]any{"name": "admin automation", "scopes": policy.AdminPermissions()},
								st.Bearer(tok)).ExpectStatus(http.StatusCreated).JSON(&k)
							form := exchangeKeyForm(k.Key, "")
							form.Set("client_id", "portcullis")
							tok = e.in.Client(t).PostForm("/oauth2/token", form).Token().AccessToken
						}
						claims, err := e.in.App.Tokens.AuthenticateBearer(ctx, tok)
						if err != nil {
							t.Fatal(err)
						}
						keyID, _ := apikey.KeyIDOfSession(claims.SID) // as the handlers' actorOf
						if fromKey != (keyID != "") {
							t.Fatalf("sid %q: from a key %v", claims.SID, keyID != "")
						}
						actor := accounts.Actor{ID: claims.Subject, APIKey: keyID, Scope: claims.Scopes(), Audience: claims.Audience, Bearer: &claims,
							Meta: accounts.Meta{ClientID: claims.ClientID, Tenant: claims.Tenant}}
						shown, err := w.do(t, actor, n)
						if !fromKey {
							if stands := w.stands(t, n); err != nil || !stands {
								t.Fatalf("with the person's token: %v; stands %v", err, stands)
							}
							return
						}
						var ae *apierr.Error
						if !errors.As(err, &ae) || ae.Status != http.StatusForbidden || ae.Code != "forbidden" {
							t.Fatalf("a write made with a key's token: %v (shown %q); want 403 forbidden", err, shown)
						}
						if shown != "" {
							t.Fatalf("the refused write showed %q", shown)
						}
						if w.untouched != nil {
							if !w.untouched(t, n) {
								t.Fatal("the refused write changed something")
							}
						} else if stands := w.stands(t, n); stands != w.held {
							t.Fatalf("the refused write stands: %v, want %v", stands, w.held)
						}
					})
				}
			}

			// Over HTTP: the reviewer's client, refused with a key's token.
			var k createdKey
			e.c.PostJSON("/auth/api-keys", map[string]any{"name": "clients", "scopes": []string{"clients:write", "clients:read"}},
				st.Bearer(e.rootTok)).ExpectStatus(http.StatusCreated).JSON(&k)
			form := exchangeKeyForm(k.Key, "")
			form.Set("client_id", "portcullis")
			keyTok := e.c.PostForm("/oauth2/token", form).Token().AccessToken
			body := map[string]any{"client_id": "from-key", "name": "Backdoor", "grants": []string{"client_credentials"}}
			e.c.PostJSON("/admin/clients", body, st.Bearer(keyTok)).ExpectError(http.StatusForbidden, "forbidden")
			e.c.Get("/admin/clients", st.Bearer(keyTok)).ExpectStatus(http.StatusOK) // reads stay
			body["client_id"] = "from-person"
			e.c.PostJSON("/admin/clients", body, st.Bearer(e.rootTok)).ExpectStatus(http.StatusCreated)
			e.c.PostForm("/oauth2/revoke", url.Values{"token": {k.Key}}).ExpectStatus(http.StatusOK)
		})
	}
}

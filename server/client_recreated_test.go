package server_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// TestRecreatedClientInheritsNoSession: an operator deletes a client to cut
// off its stolen refresh tokens, then creates it again under the same id so
// that the deployed app keeps working (or another admin takes the freed
// id). The deleted client's sessions stay dead: a refresh token issued
// before the deletion is refused through the new client, with a scope or
// without, and introspects inactive, while the new client's own logins
// refresh.
func TestRecreatedClientInheritsNoSession(t *testing.T) {
	for _, b := range keyBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newDeployment(t, b)
			spec := clients.Spec{ID: "app1", Name: "App", Public: true}
			d.fx.Client(t, spec)
			login := func() st.TokenResponse {
				form := st.PasswordForm(userEmail, userPass, "")
				form.Set("client_id", "app1")
				return d.c.PostForm("/oauth2/token", form).Token()
			}
			refresh := func(rt, scope string) *st.Response {
				form := st.RefreshForm(rt)
				form.Set("client_id", "app1")
				if scope != "" {
					form.Set("scope", scope)
				}
				return d.c.PostForm("/oauth2/token", form)
			}
			introspect := func(rt string) bool {
				var out struct {
					Active bool `json:"active"`
				}
				d.c.PostForm("/oauth2/introspect", url.Values{"token": {rt}}, st.Basic("web", d.webSecret)).ExpectStatus(http.StatusOK).JSON(&out)
				return out.Active
			}
			stolen, stolenScoped, kept := login(), login(), login()
			if !introspect(kept.RefreshToken) {
				t.Fatal("a live refresh token introspects inactive")
			}
			admin := d.login(t, "")
			d.c.Delete("/admin/clients/app1", st.Bearer(admin.AccessToken)).ExpectStatus(http.StatusNoContent)
			refresh(stolen.RefreshToken, "").ExpectError(http.StatusUnauthorized, "invalid_client")
			if introspect(kept.RefreshToken) {
				t.Fatal("a deleted client's refresh token introspects active")
			}

			spec.Name = "App, again"
			d.fx.Client(t, spec)
			refresh(stolen.RefreshToken, "").ExpectError(http.StatusBadRequest, "invalid_grant")
			refresh(stolenScoped.RefreshToken, "profile").ExpectError(http.StatusBadRequest, "invalid_grant")
			refresh(stolenScoped.RefreshToken, "").ExpectError(http.StatusBadRequest, "invalid_grant")

			if introspect(kept.RefreshToken) {
				t.Fatal("the deleted client's refresh token introspects active once the id is taken again")
			}
			fresh := login()
			if !introspect(fresh.RefreshToken) {
				t.Fatal("the new client's refresh token introspects inactive")
			}
			refresh(fresh.RefreshToken, "").ExpectStatus(http.StatusOK)
		})
	}
}

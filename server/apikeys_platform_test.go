package server_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// TestKeyActsWithPlatformRolesOnly: with organisations on, an API key's
// effective scope follows its owner's platform roles only. An admin's key
// made before organisations were turned on keeps nothing of the global
// role row turning them on leaves in place: once the admin holds no
// platform role (and no longer belongs to the default organisation), the
// key's token gets no admin permission, reads no user of any organisation
// and makes no client.
func TestKeyActsWithPlatformRolesOnly(t *testing.T) {
	for _, b := range []st.Backend{st.SQLite, st.PostgresRedis} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			env := st.NewEnv(t, b)
			env["PORTCULLIS_ISSUER"] = "https://portcullis.test"
			env["PORTCULLIS_RATE_LIMITS"] = "off"
			off := st.Start(t, env)
			fx := st.NewFixtures(t, off.App.Core)
			fx.User(t, "root@example.com", tenantPass, "super_admin")
			adm := fx.User(t, "adm@example.com", tenantPass, "admin")
			secret := fx.AdminClient(t, "web")
			login := func(c *st.Client, email, tenant string) *st.Response {
				form := st.PasswordForm(email, tenantPass, "")
				if tenant != "" {
					form.Set("tenant", tenant)
				}
				return c.PostForm("/oauth2/token", form, st.Basic("web", secret))
			}
			oc := off.Client(t)
			admTok := login(oc, "adm@example.com", "").Token().AccessToken
			var k struct{ Key string }
			oc.PostJSON("/auth/api-keys", map[string]any{"name": "ci", "scopes": []string{"users:read", "audit:read", "clients:read", "clients:write"}},
				st.Bearer(admTok)).ExpectStatus(http.StatusCreated).JSON(&k)
			off.Stop()

			on := env.Clone()
			on["PORTCULLIS_TENANTS"] = "on"
			in := st.Start(t, on)
			c := in.Client(t)
			root := login(c, "root@example.com", "").Token().AccessToken
			var acme struct{ ID string }
			c.PostJSON("/admin/tenants", map[string]string{"slug": "acme", "name": "Acme"}, st.Bearer(root)).
				ExpectStatus(http.StatusCreated).JSON(&acme)
			bob := st.NewFixtures(t, in.App.Core).User(t, "bob-customer@acme.example", tenantPass)
			c.PostJSON("/admin/tenants/"+acme.ID+"/members", map[string]string{"user_id": bob.ID, "role": "user"}, st.Bearer(root)).
				ExpectStatus(http.StatusCreated)
			def, err := in.App.Core.Store.GetTenantBySlug(t.Context(), store.DefaultTenantSlug)
			if err != nil {
				t.Fatal(err)
			}
			c.Delete("/admin/tenants/"+def.ID+"/members/"+adm.ID, st.Bearer(root)).ExpectStatus(http.StatusNoContent)
			platform := login(c, "adm@example.com", "").Token().AccessToken
			c.Get("/admin/users", st.Bearer(platform)).ExpectStatus(http.StatusForbidden)

			form := exchangeKeyForm(k.Key, "")
			form.Set("client_id", "portcullis")
			r := c.PostForm("/oauth2/token", form)
			if r.StatusCode != http.StatusOK {
				return // the key yields no token at all: nothing to reach /admin with
			}
			kt := r.Token().AccessToken
			scope, _ := decodeClaims(t, kt)["scope"].(string)
			for _, p := range []string{"users:read", "audit:read", "clients:read", "clients:write"} {
				if slices.Contains(strings.Fields(scope), p) {
					t.Errorf("the key's token carries %s from a role its owner holds on no platform: scope %q", p, scope)
				}
			}
			if u := c.Get("/admin/users", st.Bearer(kt)); u.StatusCode == http.StatusOK || strings.Contains(string(u.Body), "bob-customer@acme.example") {
				t.Errorf("GET /admin/users with the key's token: %d %s", u.StatusCode, u.Body)
			}
			if cr := c.PostJSON("/admin/clients", map[string]any{"client_id": "planted", "name": "Planted"}, st.Bearer(kt)); cr.StatusCode == http.StatusCreated {
				t.Errorf("POST /admin/clients with the key's token: %d %s", cr.StatusCode, cr.Body)
			}
		})
	}
}

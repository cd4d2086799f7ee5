package server_test

import (
	"net/http"
	"slices"
	"testing"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// TestClientRegistrationCodeFlow: POST /admin/clients registers browser and
// native clients of the authorization code flow with every field of the
// contract ("Browser sign-in"), GET /admin/clients lists them, and what the
// contract refuses is refused with 400 invalid_request (403 forbidden for a
// first-party client made by an admin without every admin permission), on
// PostgreSQL+Redis and on SQLite. Nothing refused is created. Fails before
// this change: the fields were unknown (400) and the refusals untested.
func TestClientRegistrationCodeFlow(t *testing.T) {
	for _, b := range trustBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			in := st.Start(t, st.NewEnv(t, b))
			c, fx := in.Client(t), st.NewFixtures(t, in.App.Core)
			fx.User(t, rootEmail, rootPass, "super_admin")
			fx.User(t, "adm@example.com", "admin user passphrase", "admin")
			secret := fx.AdminClient(t, "console")
			login := func(email, pw string) string {
				return c.PostForm("/oauth2/token", st.PasswordForm(email, pw, ""), st.Basic("console", secret)).Token().AccessToken
			}
			admin, root := login("adm@example.com", "admin user passphrase"), login(rootEmail, rootPass)
			code := []string{"authorization_code", "refresh_token"}
			cb := []string{"https://app.example.com/callback"}

			// Creation with each field.
			spa := c.PostJSON("/admin/clients", map[string]any{"client_id": "spa", "public": true, "grants": code,
				"redirect_uris":             []string{"https://app.example.com/callback", "http://127.0.0.1/cb"},
				"post_logout_redirect_uris": []string{"https://app.example.com/bye"}, "first_party": true,
				"backchannel_logout_uri": "https://app.example.com/bcl", "logo_uri": "https://cdn.example.com/logo.png",
				"client_uri": "https://app.example.com/"}, st.Bearer(root)).ExpectStatus(http.StatusCreated)
			var created struct {
				clients.ClientView
				ClientSecret string `json:"client_secret"`
			}
			spa.JSON(&created)
			if created.ClientSecret != "" || !created.RequirePKCE || !created.FirstParty || created.ApplicationType != "web" ||
				len(created.RedirectURIs) != 2 || created.LogoURI != "https://cdn.example.com/logo.png" {
				t.Fatalf("spa as created: %+v", created)
			}
			web := c.PostJSON("/admin/clients", map[string]any{"client_id": "web", "grants": code, "redirect_uris": cb,
				"require_pkce": false, "require_pushed_authorization_requests": true}, st.Bearer(admin)).ExpectStatus(http.StatusCreated).Map()
			if web["client_secret"] == "" || web["require_pkce"] != false || web["first_party"] != false ||
				web["require_pushed_authorization_requests"] != true {
				t.Fatalf("confidential web client: %v", web)
			}
			c.PostJSON("/admin/clients", map[string]any{"client_id": "native", "public": true, "grants": code,
				"application_type": "native", "require_pkce": nil,
				"redirect_uris": []string{"com.example.app:/oauth2redirect", "http://[::1]/cb"}}, st.Bearer(admin)).
				ExpectStatus(http.StatusCreated)

			for _, tc := range []struct {
				name   string
				bearer string
				body   map[string]any
				status int
				code   string
			}{
				{"fail/wildcard", root, map[string]any{"grants": code, "redirect_uris": []string{"https://*.example.com/cb"}}, 400, "invalid_request"},
				{"fail/fragment", root, map[string]any{"grants": code, "redirect_uris": []string{"https://app.example.com/cb#x"}}, 400, "invalid_request"},
				{"fail/relative", root, map[string]any{"grants": code, "redirect_uris": []string{"/callback"}}, 400, "invalid_request"},
				{"fail/javascript", root, map[string]any{"grants": code, "redirect_uris": []string{"javascript:alert(1)"}}, 400, "invalid_request"},
				{"fail/http_not_loopback", root, map[string]any{"grants": code, "redirect_uris": []string{"http://app.example.com/cb"}}, 400, "invalid_request"},
				{"fail/native_scheme_without_period", root, map[string]any{"grants": code, "application_type": "native",
					"redirect_uris": []string{"myapp:/cb"}}, 400, "invalid_request"},
				{"fail/custom_scheme_on_web", root, map[string]any{"grants": code, "redirect_uris": []string{"com.example.app:/cb"}}, 400, "invalid_request"},
				{"fail/redirect_uris_without_grant", root, map[string]any{"redirect_uris": cb}, 400, "invalid_request"},
				{"fail/grant_without_redirect_uris", root, map[string]any{"grants": code}, 400, "invalid_request"},
				{"fail/no_pkce_on_public", root, map[string]any{"public": true, "grants": code, "redirect_uris": cb, "require_pkce": false}, 400, "invalid_request"},
				{"fail/application_type", root, map[string]any{"grants": code, "redirect_uris": cb, "application_type": "spa"}, 400, "invalid_request"},
				{"fail/post_logout_http", root, map[string]any{"grants": code, "redirect_uris": cb,
					"post_logout_redirect_uris": []string{"http://app.example.com/bye"}}, 400, "invalid_request"},
				{"fail/backchannel_http", root, map[string]any{"grants": code, "redirect_uris": cb,
					"backchannel_logout_uri": "http://app.example.com/bcl"}, 400, "invalid_request"},
				{"fail/logo_http", root, map[string]any{"grants": code, "redirect_uris": cb, "logo_uri": "http://cdn.example.com/l.png"}, 400, "invalid_request"},
				{"fail/client_uri_javascript", root, map[string]any{"grants": code, "redirect_uris": cb, "client_uri": "javascript:alert(1)"}, 400, "invalid_request"},
				{"fail/require_par_without_code_grant", root, map[string]any{"grants": []string{"client_credentials"},
					"require_pushed_authorization_requests": true}, 400, "invalid_request"},
				{"fail/require_par_not_boolean", root, map[string]any{"grants": code, "redirect_uris": cb,
					"require_pushed_authorization_requests": "yes"}, 400, "invalid_request"},
				{"fail/require_pkce_not_boolean", root, map[string]any{"grants": code, "redirect_uris": cb, "require_pkce": "no"}, 400, "invalid_request"},
				{"fail/first_party_by_admin", admin, map[string]any{"grants": code, "redirect_uris": cb, "first_party": true}, 403, "forbidden"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					tc.body["client_id"] = "refused"
					st.NewClient(t, in.URL).PostJSON("/admin/clients", tc.body, st.Bearer(tc.bearer)).ExpectError(tc.status, tc.code)
				})
			}
			c.Delete("/admin/clients/refused", st.Bearer(root)).ExpectError(http.StatusNotFound, "not_found")

			// The list shows the new fields; the built-in client is first-party.
			var list struct {
				Items []clients.ClientView `json:"items"`
			}
			c.Get("/admin/clients", st.Bearer(root)).ExpectStatus(http.StatusOK).JSON(&list)
			byID := map[string]clients.ClientView{}
			for _, v := range list.Items {
				byID[v.ClientID] = v
			}
			if v := byID["spa"]; !v.FirstParty || !v.RequirePKCE || v.BackchannelLogoutURI != "https://app.example.com/bcl" ||
				v.ClientURI != "https://app.example.com/" || !slices.Equal(v.PostLogoutRedirectURIs, []string{"https://app.example.com/bye"}) {
				t.Fatalf("spa listed as %+v", v)
			}
			if v := byID["web"]; v.RequirePKCE || v.FirstParty || !slices.Equal(v.RedirectURIs, cb) || !v.RequirePushedAuthorizationRequests {
				t.Fatalf("web listed as %+v", v)
			}
			if v := byID["native"]; v.ApplicationType != store.ApplicationNative || !v.RequirePKCE ||
				!slices.Equal(v.RedirectURIs, []string{"com.example.app:/oauth2redirect", "http://[::1]/cb"}) {
				t.Fatalf("native listed as %+v", v)
			}
			if v := byID["portcullis"]; !v.FirstParty || !v.RequirePKCE || v.ApplicationType != store.ApplicationWeb {
				t.Fatalf("the built-in client listed as %+v", v)
			}
			// What phase 2 reads: the stored record.
			stored, err := in.App.Core.Store.GetClient(t.Context(), "native")
			if err != nil || !stored.RequirePKCE || stored.ApplicationType != store.ApplicationNative || stored.FirstParty ||
				stored.RequirePushedAuthorizationRequests {
				t.Fatalf("stored native client %+v, %v", stored, err)
			}
		})
	}
}

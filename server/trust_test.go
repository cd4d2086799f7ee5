package server_test

import (
	"errors"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"testing"

	"github.com/portcullis-auth/portcullis/server"
	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// trustBackends are the stores every trust-boundary test runs on.
var trustBackends = []st.Backend{st.PostgresRedis, st.SQLite}

// rolesOf returns the roles claim of a JWT (nil when absent).
func rolesOf(t *testing.T, jwt string) []string {
	t.Helper()
	raw, ok := decodeClaims(t, jwt)["roles"]
	if !ok || raw == nil {
		return nil
	}
	var out []string
	for _, r := range raw.([]any) {
		out = append(out, r.(string))
	}
	return out
}

// TestAdminNeedsIssuerAudience: /admin accepts only user tokens whose aud
// holds the issuer. A super_admin's token minted for the API (aud "api") is
// refused with 401 invalid_token and the RFC 6750 challenge at every admin
// route, and still works at /userinfo and /auth/logout; the same user's
// token from a client listing the issuer works at /admin. The built-in client
// lists the issuer. Fails before this change: the "api" token was accepted.
func TestAdminNeedsIssuerAudience(t *testing.T) {
	for _, b := range trustBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			in := st.Start(t, st.NewEnv(t, b))
			c, fx := in.Client(t), st.NewFixtures(t, in.App.Core)
			fx.User(t, rootEmail, rootPass, "super_admin")
			apiSecret := fx.Client(t, clients.Spec{ID: "api-web", Name: "API web"})
			consoleSecret := fx.AdminClient(t, "console")
			login := func(id, secret string) st.TokenResponse {
				return c.PostForm("/oauth2/token", st.PasswordForm(rootEmail, rootPass, ""), st.Basic(id, secret)).Token()
			}
			apiTok := login("api-web", apiSecret)
			if aud := decodeClaims(t, apiTok.AccessToken)["aud"]; aud != "api" {
				t.Fatalf("api-web token aud %v", aud)
			}
			adminTok := login("console", consoleSecret)

			for _, r := range server.AdminRoutes() {
				path := adminPath(r.Path, "usr_nobody")
				resp := c.Do(r.Method, path, []byte(`{}`), "application/json", st.Bearer(apiTok.AccessToken))
				resp.ExpectError(http.StatusUnauthorized, "invalid_token")
				if h := resp.Header.Get("WWW-Authenticate"); h != `Bearer error="invalid_token"` {
					t.Fatalf("%s %s: WWW-Authenticate %q", r.Method, path, h)
				}
			}
			var list struct {
				Items []clients.ClientView `json:"items"`
			}
			c.Get("/admin/clients", st.Bearer(adminTok.AccessToken)).ExpectStatus(http.StatusOK).JSON(&list)
			i := slices.IndexFunc(list.Items, func(v clients.ClientView) bool { return v.ClientID == "portcullis" })
			if i < 0 || !slices.Contains(list.Items[i].Audiences, in.Config.Issuer) {
				t.Fatalf("the built-in client does not list the issuer %s: %+v", in.Config.Issuer, list.Items)
			}

			// /userinfo and /auth/* act on the caller's own account: any audience.
			c.Get("/userinfo", st.Bearer(apiTok.AccessToken)).ExpectStatus(http.StatusOK)
			c.PostJSON("/auth/logout", nil, st.Bearer(apiTok.AccessToken)).ExpectStatus(http.StatusNoContent)
			c.Get("/userinfo", st.Bearer(apiTok.AccessToken)).ExpectError(http.StatusUnauthorized, "invalid_token")
			c.Get("/admin/users", st.Bearer(adminTok.AccessToken)).ExpectStatus(http.StatusOK)
		})
	}
}

// TestFirstPartyClientAudienceReconciled: a database whose built-in client
// predates the admin audience (no audiences) gets the issuer added at
// start-up, so tokens of the hosted pages keep working at /admin. Fails
// before this change: the client was left as it was.
func TestFirstPartyClientAudienceReconciled(t *testing.T) {
	for _, b := range trustBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			env := st.NewEnv(t, b)
			env["PORTCULLIS_ISSUER"] = "http://auth.portcullis.test"
			first := st.Start(t, env)
			if err := first.App.Core.Store.SetClientAudiences(t.Context(), "portcullis", nil); err != nil {
				t.Fatal(err)
			}
			first.Stop()
			second := st.Start(t, env)
			c, err := second.App.Core.Store.GetClient(t.Context(), "portcullis")
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(c.Audiences, []string{"http://auth.portcullis.test"}) {
				t.Fatalf("built-in client audiences %v after start-up", c.Audiences)
			}
		})
	}
}

// TestClientsUnderCeiling: the scopes listed on a client must be permissions
// the policy knows (400 first) and the acting user holds (403); the issuer
// audience needs every admin permission (403). The default policy's admin
// lacks keys:rotate. Fails before this change: the admin created both
// clients (and the unknown scope).
func TestClientsUnderCeiling(t *testing.T) {
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
			cc := []string{"client_credentials"}
			for _, tc := range []struct {
				name   string
				bearer string
				body   map[string]any
				status int
				code   string
			}{
				{"fail/admin mints keys:rotate", admin, map[string]any{"client_id": "minted", "grants": cc, "scopes": []string{"keys:rotate"}}, 403, "forbidden"},
				{"fail/admin gives the issuer audience", admin, map[string]any{"client_id": "minted", "audiences": []string{in.Config.Issuer}}, 403, "forbidden"},
				{"fail/unknown scope before the ceiling", admin, map[string]any{"client_id": "minted", "grants": cc, "scopes": []string{"keys:rotate", "projects:delete"}}, 400, "invalid_request"},
				{"fail/unknown scope for super_admin too", root, map[string]any{"client_id": "minted", "grants": cc, "scopes": []string{"reports:read"}}, 400, "invalid_request"},
				{"ok/admin gives what it holds", admin, map[string]any{"client_id": "reader", "grants": cc, "scopes": []string{"users:read", "audit:read"}}, 201, ""},
				{"ok/admin names another audience", admin, map[string]any{"client_id": "billing-app", "audiences": []string{"billing"}}, 201, ""},
				{"ok/super_admin gives keys:rotate", root, map[string]any{"client_id": "rotator", "grants": cc, "scopes": []string{"keys:rotate"}}, 201, ""},
				{"ok/super_admin gives the issuer audience", root, map[string]any{"client_id": "tools", "audiences": []string{in.Config.Issuer, "api"}}, 201, ""},
			} {
				t.Run(tc.name, func(t *testing.T) {
					resp := st.NewClient(t, in.URL).PostJSON("/admin/clients", tc.body, st.Bearer(tc.bearer))
					if tc.code != "" {
						resp.ExpectError(tc.status, tc.code)
					} else {
						resp.ExpectStatus(tc.status)
					}
				})
			}
			// Nothing was created by the refused requests.
			c.Delete("/admin/clients/minted", st.Bearer(root)).ExpectError(http.StatusNotFound, "not_found")
		})
	}
}

// TestExistingClientsUnderCeiling: the ceiling a new client passes binds
// every change to an existing one. Under the default policy an admin
// (clients:write, no keys:rotate) may neither rotate the secret of nor
// delete a super_admin's client whose client_credentials tokens carry
// keys:rotate, nor one listing the issuer among its audiences (403, the
// old secret still working, the client still there); the admin may for a
// client within their permissions, and the super_admin and the operator
// (the CLI) for every one. Rotation is the service's (the console and CLI
// call it; the API has no route for it), deletion the API's. Fails before
// this change: the admin rotated deployer's secret, obtaining
// client_credentials tokens with keys:rotate, and deleted both clients.
func TestExistingClientsUnderCeiling(t *testing.T) {
	for _, b := range trustBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			in := st.Start(t, st.NewEnv(t, b))
			c, fx := in.Client(t), st.NewFixtures(t, in.App.Core)
			root := fx.User(t, rootEmail, rootPass, "super_admin")
			adm := fx.User(t, "adm@example.com", "admin user passphrase", "admin")
			console := fx.AdminClient(t, "console")
			login := func(email, pw string) string {
				return c.PostForm("/oauth2/token", st.PasswordForm(email, pw, ""), st.Basic("console", console)).Token().AccessToken
			}
			admTok, rootTok := login("adm@example.com", "admin user passphrase"), login(rootEmail, rootPass)
			cc := []string{"client_credentials"}
			secrets := map[string]string{}
			for _, spec := range []clients.Spec{
				{ID: "deployer", Grants: cc, Scopes: []string{"keys:rotate"}},
				{ID: "tools", Audiences: []string{in.Config.Issuer}},
				{ID: "reader", Grants: cc, Scopes: []string{"users:read"}},
				{ID: "deployer-2", Grants: cc, Scopes: []string{"keys:rotate"}},
				{ID: "reader-2", Grants: cc, Scopes: []string{"users:read"}},
			} {
				secrets[spec.ID] = fx.Client(t, spec)
			}
			actors := map[string]accounts.Actor{
				"admin":       {ID: adm.ID, Meta: accounts.Meta{ClientID: "console"}},
				"super_admin": {ID: root.ID, Meta: accounts.Meta{ClientID: "console"}},
				"operator":    accounts.Operator(),
			}
			rotate := func(who, id string) int {
				secret, err := in.App.Accounts.RotateClientSecret(t.Context(), actors[who], id)
				if err != nil {
					var ae *apierr.Error
					if !errors.As(err, &ae) {
						t.Fatalf("%s rotates %s: %v", who, id, err)
					}
					return ae.Status
				}
				secrets[id] = secret
				return http.StatusOK
			}
			for _, tc := range []struct {
				name   string
				do     func() int
				status int
			}{
				{"fail/admin_rotates_a_keys_rotate_client", func() int { return rotate("admin", "deployer") }, 403},
				{"fail/admin_rotates_an_issuer_audience_client", func() int { return rotate("admin", "tools") }, 403},
				{"fail/admin_deletes_a_keys_rotate_client", func() int {
					return c.Delete("/admin/clients/deployer", st.Bearer(admTok)).ExpectError(403, "forbidden").StatusCode
				}, 403},
				{"fail/admin_deletes_an_issuer_audience_client", func() int {
					return c.Delete("/admin/clients/tools", st.Bearer(admTok)).ExpectError(403, "forbidden").StatusCode
				}, 403},
				{"ok/admin_rotates_within", func() int { return rotate("admin", "reader") }, 200},
				{"ok/admin_deletes_within", func() int { return c.Delete("/admin/clients/reader-2", st.Bearer(admTok)).StatusCode }, 204},
				{"ok/super_admin_rotates", func() int { return rotate("super_admin", "deployer") }, 200},
				{"ok/operator_rotates", func() int { return rotate("operator", "tools") }, 200},
				{"ok/super_admin_deletes", func() int { return c.Delete("/admin/clients/deployer-2", st.Bearer(rootTok)).StatusCode }, 204},
				{"fail/unknown_is_404_for_the_admin", func() int { return rotate("admin", "nobody") }, 404},
			} {
				if got := tc.do(); got != tc.status {
					t.Errorf("%s: %d, want %d", tc.name, got, tc.status)
				}
			}
			// The refused changes changed nothing; the allowed ones took.
			for _, id := range []string{"deployer", "reader"} {
				c.PostForm("/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, st.Basic(id, secrets[id])).ExpectStatus(http.StatusOK)
			}
			c.PostForm("/oauth2/token", st.PasswordForm(rootEmail, rootPass, ""), st.Basic("tools", secrets["tools"])).ExpectStatus(http.StatusOK)
			var list struct {
				Items []clients.ClientView `json:"items"`
			}
			c.Get("/admin/clients", st.Bearer(rootTok)).ExpectStatus(http.StatusOK).JSON(&list)
			var ids []string
			for _, v := range list.Items {
				ids = append(ids, v.ClientID)
			}
			slices.Sort(ids)
			if want := []string{"console", "deployer", "portcullis", "reader", "tools"}; !slices.Equal(ids, want) {
				t.Fatalf("clients %v, want %v", ids, want)
			}
		})
	}
}

// TestRolesFollowGrant: under the demo policy, a super_admin's token narrowed
// to projects:read (by the scope asked, or by the client's scopes) names no
// super_admin role, in the access token, the id token, introspection,
// /userinfo, after a refresh and on a session started by a password change;
// a full login keeps the role; a viewer's read-only token keeps viewer.
// Fails before this change: every token said super_admin.
func TestRolesFollowGrant(t *testing.T) {
	policyFile, err := filepath.Abs("../docs/examples/demo-policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range trustBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			env := st.NewEnv(t, b)
			env["PORTCULLIS_POLICY_FILE"] = policyFile
			in := st.Start(t, env)
			c, fx := in.Client(t), st.NewFixtures(t, in.App.Core)
			fx.User(t, rootEmail, rootPass, "super_admin")
			fx.User(t, "vera@example.com", "viewer user passphrase", "viewer")
			web := st.Basic("web", fx.Client(t, clients.Spec{ID: "web", Name: "Web"}))
			narrow := st.Basic("narrow", fx.Client(t, clients.Spec{ID: "narrow", Name: "Narrow", Scopes: []string{"projects:read"}}))

			full := c.PostForm("/oauth2/token", st.PasswordForm(rootEmail, rootPass, "openid profile"), web).Token()
			if r := rolesOf(t, full.AccessToken); !slices.Equal(r, []string{"super_admin"}) {
				t.Fatalf("full login roles %v", r)
			}
			if r := rolesOf(t, full.IDToken); !slices.Equal(r, []string{"super_admin"}) {
				t.Fatalf("full login id token roles %v", r)
			}

			ro := c.PostForm("/oauth2/token", st.PasswordForm(rootEmail, rootPass, "openid profile projects:read"), web).Token()
			viaClient := c.PostForm("/oauth2/token", st.PasswordForm(rootEmail, rootPass, ""), narrow).Token()
			for name, tok := range map[string]st.TokenResponse{"scope projects:read": ro, "client --scopes projects:read": viaClient} {
				if cl := decodeClaims(t, tok.AccessToken); cl["scope"] != "projects:read" && cl["scope"] != "projects:read openid profile" {
					t.Fatalf("%s: scope %v", name, cl["scope"])
				}
				if r := rolesOf(t, tok.AccessToken); len(r) != 0 {
					t.Fatalf("%s: access token roles %v", name, r)
				}
				intro := c.PostForm("/oauth2/introspect", url.Values{"token": {tok.AccessToken}}, web).ExpectStatus(200).Map()
				if r, _ := intro["roles"].([]any); intro["active"] != true || len(r) != 0 {
					t.Fatalf("%s: introspection %v", name, intro)
				}
				info := c.Get("/userinfo", st.Bearer(tok.AccessToken)).ExpectStatus(200).Map()
				if r, _ := info["roles"].([]any); len(r) != 0 {
					t.Fatalf("%s: userinfo roles %v", name, info["roles"])
				}
			}
			if r := rolesOf(t, ro.IDToken); len(r) != 0 {
				t.Fatalf("read-only id token roles %v", r)
			}
			refreshed := c.PostForm("/oauth2/token", st.RefreshForm(ro.RefreshToken), web).Token()
			if r := rolesOf(t, refreshed.AccessToken); len(r) != 0 {
				t.Fatalf("refreshed read-only roles %v", r)
			}
			if r := rolesOf(t, refreshed.IDToken); len(r) != 0 {
				t.Fatalf("refreshed id token roles %v", r)
			}

			viewer := c.PostForm("/oauth2/token", st.PasswordForm("vera@example.com", "viewer user passphrase", "projects:read"), web).Token()
			if r := rolesOf(t, viewer.AccessToken); !slices.Equal(r, []string{"viewer"}) {
				t.Fatalf("viewer roles %v", r)
			}

			// A session started by a password change (IssueForUser) follows the same rule.
			changed := c.PostJSON("/auth/password/change", map[string]any{"current_password": rootPass,
				"new_password": "a brand new root passphrase", "scope": "projects:read"}, st.Bearer(full.AccessToken)).Token()
			if r := rolesOf(t, changed.AccessToken); len(r) != 0 {
				t.Fatalf("password change session roles %v", r)
			}
		})
	}
}

// TestOnlyUserAccessTokensAuthenticate: at every route of Portcullis that
// takes a bearer token (the routes that answer 401 without one), the other
// credentials a super_admin's session or a client holds are refused with
// 401: an API key of theirs, their refresh token, their ID token and a
// client_credentials token whose audience names the issuer.
func TestOnlyUserAccessTokensAuthenticate(t *testing.T) {
	env := st.NewEnv(t, st.PostgresRedis)
	env["PORTCULLIS_TENANTS"] = "on"
	in := st.Start(t, env)
	fx := st.NewFixtures(t, in.App.Core)
	root := fx.User(t, rootEmail, rootPass, "super_admin")
	webSecret := fx.Client(t, clients.Spec{ID: "web", Name: "Web", Audiences: []string{"api", fx.Issuer()}})
	svcSecret := fx.Client(t, clients.Spec{ID: "svc", Grants: []string{"client_credentials"}, Audiences: []string{"api", fx.Issuer()}})
	c := in.Client(t)
	tok := c.PostForm("/oauth2/token", st.PasswordForm(rootEmail, rootPass, "openid"), st.Basic("web", webSecret)).Token()
	var key struct {
		Key string `json:"key"`
	}
	c.PostJSON("/auth/api-keys", map[string]any{"name": "k", "scopes": []string{"users:read"}}, st.Bearer(tok.AccessToken)).
		ExpectStatus(http.StatusCreated).JSON(&key)
	cc := c.PostForm("/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, st.Basic("svc", svcSecret)).Token()
	others := map[string]string{"API key": key.Key, "refresh token": tok.RefreshToken, "ID token": tok.IDToken, "client token": cc.AccessToken}
	for name, v := range others {
		if v == "" {
			t.Fatalf("no %s to try", name)
		}
	}
	routes := 0
	for _, r := range in.App.Server.Echo().Routes() {
		path := routeFor(r.Path, root.ID)
		if c.Do(r.Method, path, nil, "").StatusCode != http.StatusUnauthorized {
			continue
		}
		routes++
		for name, v := range others {
			if resp := c.Do(r.Method, path, []byte("{}"), "application/json", st.Bearer(v)); resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s %s with the %s: %d %s", r.Method, path, name, resp.StatusCode, resp.Body)
			}
		}
	}
	if routes < 40 {
		t.Fatalf("only %d routes take a bearer token: the sweep lost its routes", routes)
	}
	c.Get("/userinfo", st.Bearer(tok.AccessToken)).ExpectStatus(http.StatusOK) // the access token itself still works
}

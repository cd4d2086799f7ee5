package server_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server"
	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// tenantBackends are the backends every organisation test runs on.
var tenantBackends = []st.Backend{st.PostgresRedis, st.SQLite}

const tenantPass = "a passphrase for tenant tests"

// tenantEnv is a deployment with organisations on: root (super_admin, a
// platform role), the client "web" (issuer audience, token exchange) and
// helpers to act through the API.
type tenantEnv struct {
	*acctEnv
	rootTok string
}

func newTenantEnv(t *testing.T, backend st.Backend, extra ...map[string]string) *tenantEnv {
	t.Helper()
	// Rate limits off: a refused organisation counts as a failed login in
	// the account's throttle, and these tests refuse many on purpose.
	env := append([]map[string]string{{"PORTCULLIS_TENANTS": "on", "PORTCULLIS_RATE_LIMITS": "off"}}, extra...)
	a := newAcctEnvOn(t, backend, env...)
	// "web" of newAcctEnvOn has no token exchange: a second client for the switch.
	a.fx.Client(t, clients.Spec{ID: "switcher", Name: "Switcher", Public: true,
		Grants: []string{token.GrantPassword, token.GrantRefreshToken, token.GrantTokenExchange}, Audiences: []string{a.fx.Issuer()}})
	return &tenantEnv{acctEnv: a, rootTok: a.login(t, rootEmail, rootPass).AccessToken}
}

// loginTo runs the password grant through "web" naming tenant ("" none).
func (e *tenantEnv) loginTo(t *testing.T, email, tenant string) *st.Response {
	t.Helper()
	form := st.PasswordForm(email, tenantPass, "")
	if tenant != "" {
		form.Set("tenant", tenant)
	}
	return e.c.PostForm("/oauth2/token", form, st.Basic("web", e.webSecret))
}

// createTenant creates an organisation as root and returns its id.
func (e *tenantEnv) createTenant(t *testing.T, slug string) string {
	t.Helper()
	var out struct{ ID, Slug, Name string }
	resp := e.c.PostJSON("/admin/tenants", map[string]string{"slug": slug, "name": "Org " + slug}, st.Bearer(e.rootTok))
	resp.ExpectStatus(http.StatusCreated).JSON(&out)
	if out.ID == "" || out.Slug != slug {
		t.Fatalf("created %+v", out)
	}
	return out.ID
}

// member makes a user a member of the organisation with role: a new
// address gets an account of the organisation's own (as its invite would
// make it), an existing account is added as root.
func (e *tenantEnv) member(t *testing.T, tenantID, email, role string) store.User {
	t.Helper()
	u, err := e.in.App.Core.Store.GetUserByEmail(t.Context(), email)
	if err != nil {
		return e.fx.TenantUser(t, tenantID, email, tenantPass, role)
	}
	e.c.PostJSON("/admin/tenants/"+tenantID+"/members", map[string]string{"user_id": u.ID, "role": role}, st.Bearer(e.rootTok)).
		ExpectStatus(http.StatusCreated)
	return u
}

func claimRoles(t *testing.T, c map[string]any) []string {
	t.Helper()
	out := []string{}
	list, _ := c["roles"].([]any)
	for _, r := range list {
		out = append(out, fmt.Sprint(r))
	}
	slices.Sort(out)
	return out
}

// wantTenantToken checks an access token's tenant claim and roles.
func wantTenantToken(t *testing.T, what, at, tenant string, roles ...string) map[string]any {
	t.Helper()
	c := decodeClaims(t, at)
	got, has := c["tenant"]
	switch {
	case tenant == "" && has:
		t.Fatalf("%s: tenant claim %v, want none", what, got)
	case tenant != "" && got != tenant:
		t.Fatalf("%s: tenant claim %v, want %s", what, got, tenant)
	}
	if roles == nil {
		roles = []string{}
	}
	slices.Sort(roles)
	if r := claimRoles(t, c); !slices.Equal(r, roles) {
		t.Fatalf("%s: roles %v, want %v", what, r, roles)
	}
	return c
}

// TestTenantLogins: a member of A (admin) and B (user) logging into A gets
// only A's roles and permissions; refresh keeps A whatever it asks; a
// switch by token exchange never widens; a login naming no tenant gets the
// platform roles only; an unknown, inactive or foreign tenant is
// invalid_grant; removing the membership makes the next refresh fail.
func TestTenantLogins(t *testing.T) {
	for _, backend := range tenantBackends {
		t.Run(backend.String(), func(t *testing.T) {
			t.Parallel()
			e := newTenantEnv(t, backend)
			a, b := e.createTenant(t, "acme"), e.createTenant(t, "globex")
			e.createTenant(t, "initech")
			both := e.member(t, a, "both@example.com", "admin")
			e.member(t, b, "both@example.com", "user")

			// Logins name their tenant.
			inA := e.loginTo(t, "both@example.com", "acme").Token()
			ca := wantTenantToken(t, "login to acme", inA.AccessToken, "acme", "admin")
			if !strings.Contains(fmt.Sprint(ca["scope"]), "users:read") {
				t.Fatalf("acme token lacks admin permissions: %v", ca["scope"])
			}
			inB := e.loginTo(t, "both@example.com", "globex").Token()
			cb := wantTenantToken(t, "login to globex", inB.AccessToken, "globex", "user")
			if s := fmt.Sprint(cb["scope"]); strings.Contains(s, ":") {
				t.Fatalf("globex token (role user) holds permissions: %q", s)
			}
			wantTenantToken(t, "login naming no tenant", e.loginTo(t, "both@example.com", "").Token().AccessToken, "")
			wantTenantToken(t, "root naming no tenant", e.login(t, rootEmail, rootPass).AccessToken, "", "super_admin")
			for _, tenant := range []string{"initech", "nope", "ACME", "acme ", "../acme", strings.Repeat("a", 200)} {
				e.loginTo(t, "both@example.com", tenant).ExpectError(http.StatusBadRequest, "invalid_grant")
			}
			// A platform role is never a tenant role.
			e.c.PostJSON("/admin/tenants/"+a+"/members", map[string]string{"user_id": both.ID, "role": "super_admin"}, st.Bearer(e.rootTok)).
				ExpectError(http.StatusBadRequest, "invalid_request")

			// API keys act in no organisation: not made with a tenant's token.
			e.c.PostJSON("/auth/api-keys", map[string]any{"name": "k", "scopes": []string{"users:read"}}, st.Bearer(inA.AccessToken)).
				ExpectError(http.StatusForbidden, "forbidden")

			// Refresh is bound to the login's tenant: a tenant parameter is ignored.
			form := st.RefreshForm(inA.RefreshToken)
			form.Set("tenant", "globex")
			refreshed := e.c.PostForm("/oauth2/token", form, st.Basic("web", e.webSecret)).Token()
			wantTenantToken(t, "refresh asking for globex", refreshed.AccessToken, "acme", "admin")

			// Switching by exchange: globex's token (no permission) into acme
			// carries no permission, so not the admin role either.
			sw := e.loginToSwitcher(t, "both@example.com", "globex")
			up := e.exchange(t, sw.AccessToken, "acme").Token()
			cu := wantTenantToken(t, "switch globex to acme", up.AccessToken, "acme")
			if s := fmt.Sprint(cu["scope"]); strings.Contains(s, ":") || up.RefreshToken != "" || up.IDToken != "" {
				t.Fatalf("the switch widened or extended: scope %q, refresh %v", s, up.RefreshToken != "")
			}
			// ...and an acme token into globex gets globex's roles only.
			swA := e.loginToSwitcher(t, "both@example.com", "acme")
			down := e.exchange(t, swA.AccessToken, "globex").Token()
			wantTenantToken(t, "switch acme to globex", down.AccessToken, "globex", "user")
			e.exchange(t, swA.AccessToken, "initech").ExpectError(http.StatusBadRequest, "invalid_grant")

			// Removing the membership: the next refresh in acme fails.
			e.c.Delete("/admin/tenants/"+a+"/members/"+both.ID, st.Bearer(e.rootTok)).ExpectStatus(http.StatusNoContent)
			e.refresh(t, refreshed.RefreshToken).ExpectError(http.StatusBadRequest, "invalid_grant")
			e.loginTo(t, "both@example.com", "acme").ExpectError(http.StatusBadRequest, "invalid_grant")
			wantTenantToken(t, "still in globex", e.loginTo(t, "both@example.com", "globex").Token().AccessToken, "globex", "user")
		})
	}
}

func (e *tenantEnv) loginToSwitcher(t *testing.T, email, tenant string) st.TokenResponse {
	t.Helper()
	form := st.PasswordForm(email, tenantPass, "")
	form.Set("tenant", tenant)
	form.Set("client_id", "switcher")
	return e.c.PostForm("/oauth2/token", form).Token()
}

func (e *tenantEnv) exchange(t *testing.T, subject, tenant string) *st.Response {
	t.Helper()
	return e.c.PostForm("/oauth2/token", url.Values{"grant_type": {token.GrantTokenExchange}, "client_id": {"switcher"},
		"subject_token": {subject}, "subject_token_type": {token.TokenTypeAccessToken}, "tenant": {tenant}})
}

// TestTenantMembersByID: POST /admin/tenants/{id}/members {"user_id","role"}
// with the organisation's own token names only its members (to give one
// another role); any other id (another organisation's user, the platform
// super_admin, an account of no organisation) answers exactly as an
// unknown id does (404, the same body), changes nothing and leaves nothing
// to read or remove, so "add then remove" can no longer end the sessions of
// anyone outside. A platform token still adds any user by id. Before the
// fix acme's admin added all three (201), read them and, by removing root
// again, ended root's sessions.
func TestTenantMembersByID(t *testing.T) {
	policyFile, err := filepath.Abs("../docs/examples/demo-policy.yaml") // admin > editor > viewer in organisations
	if err != nil {
		t.Fatal(err)
	}
	for _, backend := range tenantBackends {
		t.Run(backend.String(), func(t *testing.T) {
			t.Parallel()
			e := newTenantEnv(t, backend, map[string]string{"PORTCULLIS_POLICY_FILE": policyFile})
			a, b := e.createTenant(t, "acme"), e.createTenant(t, "globex")
			e.member(t, a, "admin-a@example.com", "admin")
			memberA := e.member(t, a, "member-a@example.com", "viewer")
			e.member(t, b, "admin-b@example.com", "admin")
			userB := e.member(t, b, "user-b@example.com", "viewer")
			loner := e.fx.User(t, "loner@example.com", tenantPass)
			tokA := e.loginTo(t, "admin-a@example.com", "acme").Token().AccessToken
			tokB := e.loginTo(t, "admin-b@example.com", "globex").Token().AccessToken
			st0 := e.in.App.Core.Store
			add := func(bearer, tenantID, userID, role string) *st.Response {
				return e.c.PostJSON("/admin/tenants/"+tenantID+"/members", map[string]string{"user_id": userID, "role": role}, st.Bearer(bearer))
			}
			unknown := add(tokA, a, "usr_nosuchuser", "viewer").ExpectError(http.StatusNotFound, "not_found")

			for _, tc := range []struct{ name, id string }{
				{"fail/another_organisations_user", userB.ID},
				{"fail/platform_super_admin", e.root.ID},
				{"fail/account_of_no_organisation", loner.ID},
			} {
				t.Run(tc.name, func(t *testing.T) {
					c := e.in.Client(t) // failures belong to this subtest
					before, err := st0.UserTenantIDs(t.Context(), tc.id)
					if err != nil {
						t.Fatal(err)
					}
					for _, role := range []string{"viewer", "admin"} {
						resp := add(tokA, a, tc.id, role)
						if resp.StatusCode != http.StatusNotFound || !bytes.Equal(resp.Body, unknown.Body) {
							t.Fatalf("adding them as %s: %d %s; want 404 %s, as for an unknown id", role, resp.StatusCode, resp.Body, unknown.Body)
						}
					}
					if after, err := st0.UserTenantIDs(t.Context(), tc.id); err != nil || !slices.Equal(after, before) {
						t.Fatalf("organisations after the refusal: %v, %v; want %v", after, err, before)
					}
					c.Get("/admin/users/"+tc.id, st.Bearer(tokA)).ExpectError(http.StatusNotFound, "not_found")
					c.Delete("/admin/tenants/"+a+"/members/"+tc.id, st.Bearer(tokA)).ExpectError(http.StatusNotFound, "not_found")
				})
			}
			// Nobody's sessions ended: root's token works, and globex's admin
			// still manages globex's user (an account of globex alone).
			e.c.Get("/admin/users", st.Bearer(e.rootTok)).ExpectStatus(http.StatusOK)
			e.c.PatchJSON("/admin/users/"+userB.ID, map[string]any{"name": "Still globex's"}, st.Bearer(tokB)).ExpectStatus(http.StatusOK)

			var m accounts.Member
			// A member of acme: another role, by id.
			add(tokA, a, memberA.ID, "editor").ExpectStatus(http.StatusCreated).JSON(&m)
			if m.UserID != memberA.ID || !slices.Equal(m.Roles, []string{"editor", "viewer"}) {
				t.Fatalf("acme's member given editor: %+v", m)
			}
			// Above acme's admin: the ceiling, as before.
			add(tokA, a, memberA.ID, "admin").ExpectError(http.StatusForbidden, "forbidden")
			// A platform token adds any user of the instance by id.
			add(e.rootTok, a, userB.ID, "viewer").ExpectStatus(http.StatusCreated).JSON(&m)
			if m.UserID != userB.ID || !slices.Equal(m.Roles, []string{"viewer"}) {
				t.Fatalf("globex's user added to acme by root: %+v", m)
			}
			if roles, _ := st0.TenantRoles(t.Context(), b, userB.ID); !slices.Equal(roles, []string{"viewer"}) {
				t.Fatalf("adding to acme changed globex: %v", roles)
			}
		})
	}
}

// TestPlatformRoleBelowTenantRole: a policy may put a platform role
// (support, 20) below a tenant role (admin, 50). Every operation on a
// user's whole account compares the actor with every role the user holds,
// in organisations too, as the role grant inside acme already did: support
// is refused (403) each of them on acme's admin, who is left unchanged
// with their session alive, and on the API keys of acme's machine admin.
// Support still acts on acme's plain member, and root (super_admin) on
// acme's admin. Before the fix acme's admin held no role at all on the
// whole instance, so support could set their temporary password (a
// takeover), reset their factors, deactivate or delete them.
func TestPlatformRoleBelowTenantRole(t *testing.T) {
	policyFile, err := filepath.Abs("testdata/platform-support-policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The operations on a whole account, in an order one user can take
	// them all, and their answer when allowed (404 where the ceiling let
	// the request through to a session, consent or identity the user does
	// not have).
	actions := []struct {
		name, method, path, body string
		allowed                  int
	}{
		{"rename", http.MethodPatch, "", `{"name":"Renamed"}`, http.StatusOK},
		{"temp_password", http.MethodPost, "/temp-password", `{"password":"support's chosen passphrase 1"}`, http.StatusOK},
		{"password_reset", http.MethodPost, "/password-reset", `{}`, http.StatusOK},
		{"sessions_revoke", http.MethodPost, "/sessions/revoke", `{}`, http.StatusNoContent},
		{"end_session", http.MethodDelete, "/sessions/nosuchsession", ``, http.StatusNotFound},
		{"withdraw_consent", http.MethodDelete, "/consents/web", ``, http.StatusNotFound},
		{"unlink_identity", http.MethodDelete, "/identities/google", ``, http.StatusNotFound},
		{"mfa_reset", http.MethodPost, "/mfa/reset", `{}`, http.StatusNoContent},
		{"grant_platform_role", http.MethodPost, "/roles", `{"role":"auditor"}`, http.StatusOK},
		{"revoke_platform_role", http.MethodDelete, "/roles/auditor", ``, http.StatusOK},
		{"deactivate", http.MethodPatch, "", `{"active":false}`, http.StatusOK},
		{"delete", http.MethodDelete, "", ``, http.StatusNoContent},
	}
	for _, backend := range tenantBackends {
		t.Run(backend.String(), func(t *testing.T) {
			t.Parallel()
			e := newTenantEnv(t, backend, map[string]string{"PORTCULLIS_POLICY_FILE": policyFile})
			st0 := e.in.App.Core.Store
			acme := e.createTenant(t, "acme")
			e.fx.User(t, "help@example.com", tenantPass, "support")
			help := e.loginTo(t, "help@example.com", "").Token().AccessToken
			boss := e.member(t, acme, "boss@example.com", "admin")
			// A platform role below support, so that support's grant and
			// revocation of it reach the ceiling.
			e.c.PostJSON("/admin/users/"+boss.ID+"/roles", map[string]string{"role": "auditor"}, st.Bearer(e.rootTok)).ExpectStatus(http.StatusOK)
			bossTok := e.loginTo(t, "boss@example.com", "acme").Token().AccessToken
			plain := e.member(t, acme, "plain@example.com", "user")
			boss2 := e.member(t, acme, "boss2@example.com", "admin")
			bot := store.User{Kind: store.UserMachine, Name: "acme-bot", Active: true}
			if err := st0.CreateUser(t.Context(), &bot); err != nil {
				t.Fatal(err)
			}
			if _, err := st0.GrantTenantRole(t.Context(), acme, bot.ID, "admin"); err != nil {
				t.Fatal(err)
			}
			// The ceiling inside acme refused support this already.
			e.c.PostJSON("/admin/tenants/"+acme+"/members", map[string]string{"user_id": plain.ID, "role": "admin"}, st.Bearer(help)).
				ExpectError(http.StatusForbidden, "forbidden")

			do := func(c *st.Client, bearer, userID, method, path, body string) *st.Response {
				ctype := ""
				if body != "" {
					ctype = "application/json"
				}
				return c.Do(method, "/admin/users/"+userID+path, []byte(body), ctype, st.Bearer(bearer))
			}
			for _, a := range actions {
				t.Run("fail/support_on_acme_admin/"+a.name, func(t *testing.T) {
					do(e.in.Client(t), help, boss.ID, a.method, a.path, a.body).ExpectError(http.StatusForbidden, "forbidden")
				})
			}
			for _, path := range []string{"/api-keys", "/api-keys/apk_x"} {
				for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
					if path == "/api-keys" && method == http.MethodDelete || path != "/api-keys" && method != http.MethodDelete {
						continue
					}
					t.Run("fail/support_on_acme_machine_admin/"+method+path, func(t *testing.T) {
						body := ""
						if method == http.MethodPost {
							body = `{"name":"k","scopes":["users:read"]}`
						}
						do(e.in.Client(t), help, bot.ID, method, path, body).ExpectError(http.StatusForbidden, "forbidden")
					})
				}
			}
			// Acme's admin is unchanged, their session alive.
			got, err := st0.GetUser(t.Context(), boss.ID)
			if err != nil || !got.Active || got.Name != "" || got.MustChangePassword || !slices.Equal(got.Roles, []string{"auditor"}) {
				t.Fatalf("acme's admin after support's refused operations: %+v, %v", got, err)
			}
			if roles, _ := st0.TenantRoles(t.Context(), acme, boss.ID); !slices.Equal(roles, []string{"admin"}) {
				t.Fatalf("acme's admin's roles in acme: %v", roles)
			}
			e.c.Get("/admin/users", st.Bearer(bossTok)).ExpectStatus(http.StatusOK)

			// Support still acts on a member below it, root on acme's admins.
			for _, who := range []struct{ name, bearer, id string }{
				{"support_on_plain_member", help, plain.ID},
				{"root_on_acme_admin", e.rootTok, boss2.ID},
			} {
				for _, a := range actions {
					t.Run("ok/"+who.name+"/"+a.name, func(t *testing.T) {
						do(e.in.Client(t), who.bearer, who.id, a.method, a.path, a.body).ExpectStatus(a.allowed)
					})
				}
			}
			do(e.c, e.rootTok, bot.ID, http.MethodGet, "/api-keys", "").ExpectStatus(http.StatusOK)
		})
	}
}

// TestTenantAdminSweep: a tenant admin of A, through every /admin route and
// the audit query, can read or change nothing of tenant B (nor of the whole
// instance): every request naming B's user, invite, client or organisation
// is 403 or 404, every list leaves B out, and B is unchanged afterwards.
// Inside A the same admin works (a control, so the refusals are not just a
// broken token).
func TestTenantAdminSweep(t *testing.T) {
	for _, backend := range tenantBackends {
		t.Run(backend.String(), func(t *testing.T) {
			t.Parallel()
			e := newTenantEnv(t, backend)
			a, b := e.createTenant(t, "acme"), e.createTenant(t, "globex")
			e.member(t, a, "admin-a@example.com", "admin")
			memberA := e.member(t, a, "member-a@example.com", "user")
			e.member(t, b, "admin-b@example.com", "admin")
			userB := e.member(t, b, "user-b@example.com", "user")
			shared := e.member(t, a, "shared@example.com", "user")
			e.member(t, b, "shared@example.com", "user")

			tokB := e.loginTo(t, "admin-b@example.com", "globex").Token().AccessToken
			// B's records, made by B's admin: an invite, a client, audit events.
			var invB struct{ ID string }
			e.c.PostJSON("/admin/invites", map[string]string{"email": "new-b@example.com", "role": "user"}, st.Bearer(tokB)).
				ExpectStatus(http.StatusCreated).JSON(&invB)
			var clientB struct {
				ClientID string `json:"client_id"`
				TenantID string `json:"tenant_id"`
				Secret   string `json:"client_secret"`
			}
			e.c.PostJSON("/admin/clients", map[string]any{"client_id": "globex-app", "name": "Globex app",
				"grants": []string{"client_credentials"}, "scopes": []string{"users:read"}}, st.Bearer(tokB)).
				ExpectStatus(http.StatusCreated).JSON(&clientB)
			if clientB.TenantID != b {
				t.Fatalf("a client made with globex's token belongs to %q, want %s", clientB.TenantID, b)
			}
			// Its client_credentials tokens always carry globex.
			cc := e.c.PostForm("/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, st.Basic(clientB.ClientID, clientB.Secret)).Token()
			wantTenantToken(t, "globex's client_credentials", cc.AccessToken, "globex")
			e.c.PostJSON("/admin/users/"+userB.ID+"/roles", map[string]string{"role": "user"}, st.Bearer(tokB)).ExpectStatus(http.StatusOK)

			tokA := e.loginTo(t, "admin-a@example.com", "acme").Token().AccessToken
			secretsOfB := []string{userB.ID, "user-b@example.com", "admin-b@example.com", invB.ID, "new-b@example.com",
				clientB.ClientID, b, "globex"}

			// Every /admin route, with B's (or the instance's) ids where it names one.
			fill := func(path string) string {
				r := strings.NewReplacer("/users/:id", "/users/"+userB.ID, "/invites/:id", "/invites/"+invB.ID,
					"/clients/:id", "/clients/"+clientB.ClientID, "/tenants/:id", "/tenants/"+b, ":user_id", userB.ID,
					":sid", "nosuchsession", ":client_id", clientB.ClientID, ":provider", "google", ":role", "user", ":key_id", "apk_x")
				return r.Replace(path)
			}
			bodies := map[string]string{
				"POST /admin/users":                            `{"kind":"machine","name":"bot","roles":["user"]}`,
				"PATCH /admin/users/:id":                       `{"active":false}`,
				"POST /admin/users/:id/roles":                  `{"role":"user"}`,
				"POST /admin/users/:id/temp-password":          `{"password":"a temporary passphrase 1"}`,
				"POST /admin/users/:id/api-keys":               `{"name":"k","scopes":["users:read"]}`,
				"POST /admin/invites":                          `{"email":"fresh@example.com","role":"user"}`,
				"POST /admin/clients":                          `{"client_id":"sneaky","name":"x","audiences":["` + e.fx.Issuer() + `"]}`,
				"POST /admin/keys/rotate":                      `{}`,
				"POST /admin/tenants":                          `{"slug":"mine","name":"Mine"}`,
				"PATCH /admin/tenants/:id":                     `{"active":false}`,
				"POST /admin/tenants/:id/members":              `{"user_id":"` + memberA.ID + `","role":"user"}`,
				"POST /admin/users/:id/password-reset":         `{}`,
				"POST /admin/users/:id/sessions/revoke":        `{}`,
				"POST /admin/users/:id/mfa/reset":              `{}`,
				"DELETE /admin/tenants/:id/members/:user_id":   ``,
				"DELETE /admin/users/:id/consents/:client_id":  ``,
				"DELETE /admin/users/:id/identities/:provider": ``,
			}
			// Routes whose answer inside A is a list or view that must leave B out.
			mayAnswer := map[string]bool{
				"GET /admin/users": true, "GET /admin/invites": true, "GET /admin/roles": true, "GET /admin/clients": true,
				"GET /admin/audit": true, "GET /admin/tenants": true,
				// Creations that act inside A, not on B: allowed, checked below.
				"POST /admin/users": true, "POST /admin/clients": true, "POST /admin/invites": true,
			}
			for _, r := range server.AdminRoutes() {
				key := r.Method + " " + r.Path
				t.Run(key, func(t *testing.T) {
					var body []byte
					ctype := ""
					if s, ok := bodies[key]; ok && s != "" {
						body, ctype = []byte(s), "application/json"
					}
					resp := e.c.Do(r.Method, fill(r.Path), body, ctype, st.Bearer(tokA))
					if resp.StatusCode >= 500 {
						t.Fatalf("%d %s", resp.StatusCode, resp.Body)
					}
					for _, secret := range secretsOfB {
						if strings.Contains(string(resp.Body), secret) {
							t.Fatalf("the answer shows tenant B's %q: %s", secret, resp.Body)
						}
					}
					if mayAnswer[key] {
						if resp.StatusCode >= 300 && resp.StatusCode != http.StatusConflict && resp.StatusCode != http.StatusForbidden {
							t.Fatalf("inside acme: %d %s", resp.StatusCode, resp.Body)
						}
						return
					}
					if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusNotFound {
						t.Fatalf("%s as acme's admin on globex: %d %s, want 403 or 404", key, resp.StatusCode, resp.Body)
					}
				})
			}
			// Platform clients are the whole instance's: 403.
			e.c.Delete("/admin/clients/web", st.Bearer(tokA)).ExpectError(http.StatusForbidden, "forbidden")
			// An account shared with B is B's too: acme's admin may see it, not change it.
			e.c.Get("/admin/users/"+shared.ID, st.Bearer(tokA)).ExpectStatus(http.StatusOK)
			e.c.PatchJSON("/admin/users/"+shared.ID, map[string]any{"active": false}, st.Bearer(tokA)).ExpectError(http.StatusForbidden, "forbidden")
			e.c.Get("/admin/users/"+shared.ID+"/sessions", st.Bearer(tokA)).ExpectError(http.StatusForbidden, "forbidden")

			// B is unchanged.
			if tn, err := e.in.App.Core.Store.GetTenant(t.Context(), b); err != nil || !tn.Active {
				t.Fatalf("globex after the sweep: %+v, %v", tn, err)
			}
			got, err := e.in.App.Core.Store.GetUser(t.Context(), userB.ID)
			if err != nil || !got.Active {
				t.Fatalf("globex's user after the sweep: %+v, %v", got, err)
			}
			if roles, _ := e.in.App.Core.Store.TenantRoles(t.Context(), b, userB.ID); !slices.Equal(roles, []string{"user"}) {
				t.Fatalf("globex's user's roles after the sweep: %v", roles)
			}
			if inv, err := e.in.App.Core.Store.GetInvite(t.Context(), invB.ID); err != nil || inv.Status != store.InvitePending {
				t.Fatalf("globex's invite after the sweep: %+v, %v", inv, err)
			}
			if _, err := e.in.App.Core.Store.GetClient(t.Context(), clientB.ClientID); err != nil {
				t.Fatalf("globex's client after the sweep: %v", err)
			}
			if roles, _ := e.in.App.Core.Store.TenantRoles(t.Context(), b, memberA.ID); len(roles) != 0 {
				t.Fatalf("acme's admin made a member of globex: %v", roles)
			}

			// The audit query: B's admin sees B's events, A's admin none of them.
			var evB, evA struct {
				Items []store.AuditEvent `json:"items"`
			}
			e.c.Get("/admin/audit", st.Bearer(tokB)).ExpectStatus(http.StatusOK).JSON(&evB)
			if len(evB.Items) == 0 {
				t.Fatal("globex's admin sees no event of globex")
			}
			for _, ev := range evB.Items {
				if ev.TenantID != b {
					t.Fatalf("globex's audit shows an event of %q: %+v", ev.TenantID, ev)
				}
			}
			e.c.Get("/admin/audit?actor_id="+userB.ID, st.Bearer(tokA)).ExpectStatus(http.StatusOK).JSON(&evA)
			for _, ev := range evA.Items {
				if ev.TenantID != a {
					t.Fatalf("acme's audit shows an event of %q: %+v", ev.TenantID, ev)
				}
			}

			// Control: inside acme, acme's admin works, under the ceiling.
			e.c.PostJSON("/admin/users/"+memberA.ID+"/roles", map[string]string{"role": "admin"}, st.Bearer(tokA)).
				ExpectError(http.StatusForbidden, "forbidden")
			e.c.PostJSON("/admin/users/"+memberA.ID+"/roles", map[string]string{"role": "super_admin"}, st.Bearer(tokA)).
				ExpectError(http.StatusBadRequest, "invalid_request")
			e.c.PatchJSON("/admin/users/"+memberA.ID, map[string]any{"name": "Renamed"}, st.Bearer(tokA)).ExpectStatus(http.StatusOK)
			var members struct {
				Items []struct {
					UserID string   `json:"user_id"`
					Roles  []string `json:"roles"`
				} `json:"items"`
			}
			e.c.Get("/admin/tenants/"+a+"/members", st.Bearer(tokA)).ExpectStatus(http.StatusOK).JSON(&members)
			// admin-a, member-a, shared, and the machine user the sweep made inside acme.
			if len(members.Items) != 4 {
				t.Fatalf("acme's members: %+v", members.Items)
			}

			// Inviting an address that has an account (in globex) answers as for
			// any address (no oracle of accounts elsewhere); joining takes that
			// account's password and gives the role in acme only.
			joinTok := e.invite(t, tokA, "user-b@example.com", "user")
			e.invite(t, tokA, "nobody-yet@example.com", "user")
			e.c.PostJSON("/auth/invites/accept", map[string]string{"token": joinTok, "password": "not the account's password"}).
				ExpectError(http.StatusBadRequest, "invalid_grant")
			e.accept(t, joinTok, tenantPass)
			if roles, _ := e.in.App.Core.Store.TenantRoles(t.Context(), a, userB.ID); !slices.Equal(roles, []string{"user"}) {
				t.Fatalf("after joining acme: %v", roles)
			}
			if roles, _ := e.in.App.Core.Store.TenantRoles(t.Context(), b, userB.ID); !slices.Equal(roles, []string{"user"}) {
				t.Fatalf("joining acme changed globex: %v", roles)
			}
		})
	}
}

// TestTenantsTurnedOnKeepAccess: users and roles made with organisations
// off keep their access once PORTCULLIS_TENANTS=on (their roles move into
// the organisation default; platform roles stay global), and restarting
// moves nothing again.
func TestTenantsTurnedOnKeepAccess(t *testing.T) {
	for _, backend := range tenantBackends {
		t.Run(backend.String(), func(t *testing.T) {
			t.Parallel()
			env := st.NewEnv(t, backend)
			// One issuer for the instances below, which listen on different ports.
			env["PORTCULLIS_ISSUER"] = "https://portcullis.test"
			off := st.Start(t, env)
			fx := st.NewFixtures(t, off.App.Core)
			fx.User(t, "root@example.com", tenantPass, "super_admin")
			adm := fx.User(t, "adm@example.com", tenantPass, "admin")
			usr := fx.User(t, "usr@example.com", tenantPass, "user")
			secret := fx.AdminClient(t, "web")
			login := func(c *st.Client, email, tenant string) *st.Response {
				form := st.PasswordForm(email, tenantPass, "")
				if tenant != "" {
					form.Set("tenant", tenant)
				}
				return c.PostForm("/oauth2/token", form, st.Basic("web", secret))
			}
			before := login(off.Client(t), "adm@example.com", "default").Token() // ignored while off
			wantTenantToken(t, "off: tenant parameter ignored", before.AccessToken, "", "admin")
			off.Stop()

			on := env.Clone()
			on["PORTCULLIS_TENANTS"] = "on"
			in := st.Start(t, on)
			c := in.Client(t)
			// The session from before names no tenant: platform roles only.
			refreshed := c.PostForm("/oauth2/token", st.RefreshForm(before.RefreshToken), st.Basic("web", secret)).Token()
			wantTenantToken(t, "old session", refreshed.AccessToken, "")
			wantTenantToken(t, "admin in default", login(c, "adm@example.com", "default").Token().AccessToken, "default", "admin")
			wantTenantToken(t, "user in default", login(c, "usr@example.com", "default").Token().AccessToken, "default", "user")
			root := login(c, "root@example.com", "").Token().AccessToken
			wantTenantToken(t, "root stays platform", root, "", "super_admin")
			login(c, "root@example.com", "default").ExpectError(http.StatusBadRequest, "invalid_grant")

			// Restarting moves nothing again: a removal stays removed.
			def, err := in.App.Core.Store.GetTenantBySlug(t.Context(), store.DefaultTenantSlug)
			if err != nil {
				t.Fatal(err)
			}
			c.Delete("/admin/tenants/"+def.ID+"/members/"+usr.ID, st.Bearer(root)).ExpectStatus(http.StatusNoContent)
			in.Stop()
			again := st.Start(t, on)
			login(again.Client(t), "usr@example.com", "default").ExpectError(http.StatusBadRequest, "invalid_grant")
			inDefault := login(again.Client(t), "adm@example.com", "default").Token()
			wantTenantToken(t, "admin after restart", inDefault.AccessToken, "default", "admin")
			again.Stop()

			// Turned off again: tokens of an organisation are refused (nothing
			// would confine them), the roles from before are back.
			offAgain := st.Start(t, env)
			oc := offAgain.Client(t)
			oc.Get("/userinfo", st.Bearer(inDefault.AccessToken)).ExpectError(http.StatusUnauthorized, "invalid_token")
			oc.PostForm("/oauth2/token", st.RefreshForm(inDefault.RefreshToken), st.Basic("web", secret)).
				ExpectError(http.StatusBadRequest, "invalid_grant")
			wantTenantToken(t, "off again", login(oc, "adm@example.com", "").Token().AccessToken, "", "admin")
			if adm.ID == "" {
				t.Fatal("no admin")
			}
		})
	}
}

// TestTenantCodeFlow: /authorize takes `tenant` too: the code's tokens
// carry that organisation and its roles; naming one the user is not in
// fails at the token endpoint (invalid_grant), never widening.
func TestTenantCodeFlow(t *testing.T) {
	for _, b := range tenantBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSignIn(t, b, map[string]string{"PORTCULLIS_TENANTS": "on"})
			core := d.in.App.Core
			u, err := core.Store.GetUserByEmail(t.Context(), siEmail)
			if err != nil {
				t.Fatal(err)
			}
			acme := store.Tenant{Slug: "acme", Name: "Acme", Active: true}
			if err := core.Store.CreateTenant(t.Context(), &acme); err != nil {
				t.Fatal(err)
			}
			if _, err := core.Store.GrantTenantRole(t.Context(), acme.ID, u.ID, "admin"); err != nil {
				t.Fatal(err)
			}
			for _, tc := range []struct {
				name, tenant string
				ok           bool
			}{{"ok/member", "acme", true}, {"fail/not a member", "default", false}, {"fail/unknown", "nope", false}} {
				t.Run(tc.name, func(t *testing.T) {
					hc := siBrowser(t)
					conf := d.oauth("first", d.firstSecret, "openid")
					verifier := oauth2.GenerateVerifier()
					login := siGet(t, hc, conf.AuthCodeURL("st", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("tenant", tc.tenant)))
					q := d.callback(t, login.submit(t, hc, url.Values{"username": {siEmail}, "password": {siPassword}}))
					tok, err := conf.Exchange(t.Context(), q.Get("code"), oauth2.VerifierOption(verifier))
					if !tc.ok {
						var re *oauth2.RetrieveError
						if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
							t.Fatalf("exchange naming %q: %v, want invalid_grant", tc.tenant, err)
						}
						return
					}
					if err != nil {
						t.Fatalf("exchange: %v", err)
					}
					wantTenantToken(t, "code flow into acme", tok.AccessToken, "acme", "admin")
					if idt, _ := tok.Extra("id_token").(string); decodeClaims(t, idt)["tenant"] != "acme" {
						t.Fatalf("id token tenant %v", decodeClaims(t, idt)["tenant"])
					}
				})
			}
		})
	}
}

// TestTenantMFALogin: the mfa_token of a password step that named an
// organisation is bound to it. The MFA grant may name it again or leave it
// out (the token is then in that organisation); naming another one, even
// one the person is a member of, is invalid_grant before any attempt is
// counted or code used; a password step that named none cannot be finished
// in an organisation.
func TestTenantMFALogin(t *testing.T) {
	for _, backend := range tenantBackends {
		t.Run(backend.String(), func(t *testing.T) {
			t.Parallel()
			e := newTenantEnv(t, backend)
			a, b := e.createTenant(t, "acme"), e.createTenant(t, "globex")
			const email = "mfa-both@example.com"
			e.member(t, a, email, "admin")
			e.member(t, b, email, "user")

			// Turn on the authenticator app; its confirmation gives the codes.
			_, codes := enrolTOTPWith(t, e.c, st.Bearer(e.loginTo(t, email, "").Token().AccessToken))
			step := func(tenant string) string {
				t.Helper()
				m := e.loginTo(t, email, tenant).ExpectError(http.StatusBadRequest, "mfa_required").Map()
				tok, _ := m["mfa_token"].(string)
				if tok == "" {
					t.Fatalf("no mfa_token: %v", m)
				}
				return tok
			}
			finish := func(tok, code, tenant string) *st.Response {
				t.Helper()
				form := url.Values{"grant_type": {"urn:portcullis:params:oauth:grant-type:mfa-recovery-code"},
					"mfa_token": {tok}, "recovery_code": {code}}
				if tenant != "" {
					form.Set("tenant", tenant)
				}
				return e.c.PostForm("/oauth2/token", form, st.Basic("web", e.webSecret))
			}

			tok := step("acme")
			finish(tok, codes[0], "globex").ExpectError(http.StatusBadRequest, "invalid_grant")
			// Neither the token nor the code was spent by the refusal.
			wantTenantToken(t, "finished naming none", finish(tok, codes[0], "").Token().AccessToken, "acme", "admin")
			wantTenantToken(t, "finished naming acme again", finish(step("acme"), codes[1], "acme").Token().AccessToken, "acme", "admin")
			finish(step(""), codes[2], "acme").ExpectError(http.StatusBadRequest, "invalid_grant")
			wantTenantToken(t, "a login naming none", finish(step(""), codes[2], "").Token().AccessToken, "")
		})
	}
}

// TestTenantDeactivation: a platform admin renames an organisation and
// turns it off and on (PATCH /admin/tenants/{id}). Off, it refuses new
// logins into it, its members' next refresh and its clients'
// client_credentials at once; on again, all work again. Its own admin
// cannot do it (a platform operation); bad requests change nothing.
func TestTenantDeactivation(t *testing.T) {
	for _, backend := range tenantBackends {
		t.Run(backend.String(), func(t *testing.T) {
			t.Parallel()
			e := newTenantEnv(t, backend)
			a, other := e.createTenant(t, "acme"), e.createTenant(t, "globex")
			e.member(t, a, "ann@example.com", "admin")
			e.member(t, other, "ann@example.com", "user")
			login := e.loginTo(t, "ann@example.com", "acme").Token()
			var client struct {
				ClientID string `json:"client_id"`
				Secret   string `json:"client_secret"`
			}
			e.c.PostJSON("/admin/clients", map[string]any{"client_id": "acme-svc", "name": "Acme service",
				"grants": []string{"client_credentials"}, "scopes": []string{"users:read"}}, st.Bearer(login.AccessToken)).
				ExpectStatus(http.StatusCreated).JSON(&client)
			cc := func() *st.Response {
				return e.c.PostForm("/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, st.Basic(client.ClientID, client.Secret))
			}
			cc().Token()
			patch := func(bearer string, body any) *st.Response {
				raw, _ := json.Marshal(body)
				return e.c.Do(http.MethodPatch, "/admin/tenants/"+a, raw, "application/json", st.Bearer(bearer))
			}
			var got accounts.Tenant

			// Refused: the organisation's own admin, nothing to change, bad
			// names, unknown fields and ids.
			patch(login.AccessToken, map[string]any{"active": false}).ExpectError(http.StatusForbidden, "forbidden")
			patch(e.rootTok, map[string]any{}).ExpectError(http.StatusBadRequest, "invalid_request")
			patch(e.rootTok, map[string]any{"name": "  "}).ExpectError(http.StatusBadRequest, "invalid_request")
			patch(e.rootTok, map[string]any{"slug": "other"}).ExpectError(http.StatusBadRequest, "invalid_request")
			e.c.Do(http.MethodPatch, "/admin/tenants/ten_nope", []byte(`{"active":false}`), "application/json", st.Bearer(e.rootTok)).
				ExpectError(http.StatusNotFound, "not_found")
			if tn, err := e.in.App.Core.Store.GetTenant(t.Context(), a); err != nil || !tn.Active || tn.Name != "Org acme" {
				t.Fatalf("refused requests changed the organisation: %+v, %v", tn, err)
			}

			// A rename keeps the slug and the sessions.
			patch(e.rootTok, map[string]any{"name": "Acme Corporation"}).ExpectStatus(http.StatusOK).JSON(&got)
			if got != (accounts.Tenant{ID: a, Slug: "acme", Name: "Acme Corporation", Active: true}) {
				t.Fatalf("renamed %+v", got)
			}
			login = e.c.PostForm("/oauth2/token", st.RefreshForm(login.RefreshToken), st.Basic("web", e.webSecret)).Token()

			// Off: logins, refreshes and the client's grants are refused.
			patch(e.rootTok, map[string]any{"active": false}).ExpectStatus(http.StatusOK).JSON(&got)
			if got.Active || got.Name != "Acme Corporation" {
				t.Fatalf("deactivated %+v", got)
			}
			e.loginTo(t, "ann@example.com", "acme").ExpectError(http.StatusBadRequest, "invalid_grant")
			e.c.PostForm("/oauth2/token", st.RefreshForm(login.RefreshToken), st.Basic("web", e.webSecret)).
				ExpectError(http.StatusBadRequest, "invalid_grant")
			cc().ExpectError(http.StatusBadRequest, "unauthorized_client")
			// Another organisation of the same person is untouched.
			wantTenantToken(t, "a login to globex", e.loginTo(t, "ann@example.com", "globex").Token().AccessToken, "globex", "user")

			// On again: a new login and the client work again.
			patch(e.rootTok, map[string]any{"active": true}).ExpectStatus(http.StatusOK).JSON(&got)
			wantTenantToken(t, "a login after reactivation", e.loginTo(t, "ann@example.com", "acme").Token().AccessToken, "acme", "admin")
			wantTenantToken(t, "client_credentials after reactivation", cc().Token().AccessToken, "acme")

			var changes []string
			for _, ev := range auditEvents(t, e.acctEnv, e.rootTok, "action=tenant.updated") {
				d, _ := ev["details"].(map[string]any)
				changes = append(changes, fmt.Sprint(d["name"], "/", d["active"]))
			}
			slices.Sort(changes)
			if want := []string{"<nil>/false", "<nil>/true", "Acme Corporation/<nil>"}; !slices.Equal(changes, want) {
				t.Fatalf("tenant.updated events %v, want %v", changes, want)
			}
		})
	}
}

// TestTenantInviteJoinAsksForSecondFactor: accepting an organisation's
// invite with the password of an existing account that has a second factor
// (here a super_admin with an authenticator app) grants the membership but
// issues no token: 400 mfa_required with an mfa_token, as the password
// grant answers. Through a client with the password grant the MFA grant
// finishes it with the session the acceptance would have issued (no
// organisation, the platform roles, amr with the factor). An account with
// no factor whose role needs none still gets tokens at once.
func TestTenantInviteJoinAsksForSecondFactor(t *testing.T) {
	for _, backend := range tenantBackends {
		t.Run(backend.String(), func(t *testing.T) {
			t.Parallel()
			e := newTenantEnv(t, backend)
			acme, globex := e.createTenant(t, "acme"), e.createTenant(t, "globex")
			e.member(t, acme, "admin-a@example.com", "admin")
			e.member(t, globex, "admin-g@example.com", "admin")
			tokA := e.loginTo(t, "admin-a@example.com", "acme").Token().AccessToken
			tokG := e.loginTo(t, "admin-g@example.com", "globex").Token().AccessToken

			const boss = "boss@example.com"
			u := e.fx.User(t, boss, tenantPass, "super_admin")
			_, codes := enrolTOTPWith(t, e.c, st.Bearer(e.loginTo(t, boss, "").Token().AccessToken))
			e.loginTo(t, boss, "").ExpectError(http.StatusBadRequest, "mfa_required")

			mfaRequired := func(r *st.Response) string {
				t.Helper()
				var ans struct {
					Token   string   `json:"mfa_token"`
					Enrol   bool     `json:"mfa_enrollment_required"`
					Methods []string `json:"mfa_methods"`
					Access  string   `json:"access_token"`
					Refresh string   `json:"refresh_token"`
				}
				r.ExpectError(http.StatusBadRequest, "mfa_required").JSON(&ans)
				if ans.Token == "" || ans.Enrol || !slices.Contains(ans.Methods, "totp") || ans.Access != "" || ans.Refresh != "" {
					t.Fatalf("answer %s", r.Body)
				}
				return ans.Token
			}
			wantMember := func(tenantID, what string) {
				t.Helper()
				if roles, err := e.in.App.Core.Store.TenantRoles(t.Context(), tenantID, u.ID); err != nil || !slices.Equal(roles, []string{"user"}) {
					t.Fatalf("%s: roles %v, %v", what, roles, err)
				}
			}

			// Through the built-in first-party client: no token, the membership granted.
			joinTok := e.invite(t, tokA, boss, "user")
			mfaRequired(e.c.PostJSON("/auth/invites/accept", map[string]string{"token": joinTok, "password": tenantPass}))
			wantMember(acme, "joined acme")
			e.c.PostJSON("/auth/invites/accept", map[string]string{"token": joinTok, "password": tenantPass}).
				ExpectError(http.StatusBadRequest, "invalid_token")

			// Through "web", whose password grant allows the MFA grants: the
			// mfa_token finishes the login.
			joinTok = e.invite(t, tokG, boss, "user")
			mt := mfaRequired(e.c.PostJSON("/auth/invites/accept",
				map[string]string{"token": joinTok, "password": tenantPass, "client_id": "web"}, st.Basic("web", e.webSecret)))
			wantMember(globex, "joined globex")
			done := e.c.PostForm("/oauth2/token", url.Values{"grant_type": {"urn:portcullis:params:oauth:grant-type:mfa-recovery-code"},
				"mfa_token": {mt}, "recovery_code": {codes[0]}}, st.Basic("web", e.webSecret)).Token()
			c := wantTenantToken(t, "the finished join", done.AccessToken, "", "super_admin")
			if amr := claimStrings(t, c, "amr"); !slices.Contains(amr, "mfa") || !slices.Contains(amr, "pwd") {
				t.Fatalf("amr %v", amr)
			}

			// No factor, a role that needs none: tokens at once, as before.
			const plain = "plain@example.com"
			p := e.fx.User(t, plain, tenantPass)
			tr := e.c.PostJSON("/auth/invites/accept", map[string]string{"token": e.invite(t, tokA, plain, "user"), "password": tenantPass}).Token()
			wantTenantToken(t, "a join with no factor", tr.AccessToken, "")
			if roles, _ := e.in.App.Core.Store.TenantRoles(t.Context(), acme, p.ID); !slices.Equal(roles, []string{"user"}) {
				t.Fatalf("plain joined acme: %v", roles)
			}
		})
	}
}

// TestTenantInviteJoinForAnMFARole: an existing account without a second
// factor whose role requires one (here super_admin under
// mfa.required_for_level 100) joining an organisation by invite gets the
// membership and 400 mfa_required with mfa_enrollment_required, no token;
// the mfa_token enrols a factor, as after the password grant.
func TestTenantInviteJoinForAnMFARole(t *testing.T) {
	for _, backend := range tenantBackends {
		t.Run(backend.String(), func(t *testing.T) {
			t.Parallel()
			a := newAcctEnvOn(t, backend, map[string]string{"PORTCULLIS_TENANTS": "on", "PORTCULLIS_RATE_LIMITS": "off",
				"PORTCULLIS_POLICY_FILE": mfaPolicyFile(t, 100)})
			// The super_admin's token: the policy requires their second
			// factor (no issuance hands out their roles without it).
			rootTok := a.mfaLogin(t, a.root, rootPass)
			e := &tenantEnv{acctEnv: a, rootTok: rootTok.AccessToken}
			acme := e.createTenant(t, "acme")
			e.member(t, acme, "admin-a@example.com", "admin")
			tokA := e.loginTo(t, "admin-a@example.com", "acme").Token().AccessToken

			const ops = "ops@example.com"
			u := e.fx.User(t, ops, tenantPass, "super_admin")
			r := e.c.PostJSON("/auth/invites/accept", map[string]string{"token": e.invite(t, tokA, ops, "user"), "password": tenantPass}).
				ExpectError(http.StatusBadRequest, "mfa_required")
			var ans struct {
				Token  string `json:"mfa_token"`
				Enrol  bool   `json:"mfa_enrollment_required"`
				Access string `json:"access_token"`
			}
			r.JSON(&ans)
			if ans.Token == "" || !ans.Enrol || ans.Access != "" {
				t.Fatalf("answer %s", r.Body)
			}
			if roles, err := e.in.App.Core.Store.TenantRoles(t.Context(), acme, u.ID); err != nil || !slices.Equal(roles, []string{"user"}) {
				t.Fatalf("joined acme: %v, %v", roles, err)
			}
			enrolTOTPWith(t, e.c, st.Bearer(ans.Token))
			e.loginTo(t, ops, "").ExpectError(http.StatusBadRequest, "mfa_required")
		})
	}
}

// TestDiscoveryListsTheTenantClaim: with organisations on, a login's tokens
// (its id token too) carry the tenant claim, so claims_supported lists it
// (OIDC Discovery §3: the claims the provider may supply); with them off
// it is neither issued nor listed. Found by a review.
func TestDiscoveryListsTheTenantClaim(t *testing.T) {
	on := newTenantEnv(t, st.SQLite)
	off := newDeployment(t, st.SQLite)
	for _, tc := range []struct {
		name string
		c    *st.Client
		want bool
	}{{"ok/organisations_on", on.c, true}, {"ok/organisations_off", off.c, false}} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"} {
				m := tc.c.Get(path).ExpectStatus(http.StatusOK).Map()
				claims, _ := m["claims_supported"].([]any)
				if got := slices.Contains(claims, any("tenant")); got != tc.want {
					t.Errorf("%s claims_supported %v lists tenant: %v, want %v", path, claims, got, tc.want)
				}
			}
		})
	}
}

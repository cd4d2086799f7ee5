package main

import (
	"net/url"
	"slices"
	"strings"
	"testing"

	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// TestDemoAPITenants: with organisations on, GET /tenants/{tenant}/projects
// serves a token of that organisation only: another organisation's token,
// or a platform token without a tenant claim, is 403, and the list holds
// only the organisation's projects; GET /projects too lists only the
// projects of the token's organisation (none of another's).
func TestDemoAPITenants(t *testing.T) {
	s := startStack(t, map[string]string{"PORTCULLIS_TENANTS": "on"})
	core := s.in.App.Core
	ids := map[string]string{}
	for _, slug := range []string{"acme", "globex"} {
		tn := store.Tenant{Slug: slug, Name: slug, Active: true}
		if err := core.Store.CreateTenant(t.Context(), &tn); err != nil {
			t.Fatal(err)
		}
		ids[slug] = tn.ID
	}
	for slug, role := range map[string]string{"acme": "editor", "globex": "viewer"} {
		if _, err := core.Store.GrantTenantRole(t.Context(), ids[slug], s.users[role].ID, role); err != nil {
			t.Fatal(err)
		}
	}
	login := func(role, tenant string) string {
		form := st.PasswordForm(role+"@example.com", password, "")
		if tenant != "" {
			form.Set("tenant", tenant)
		}
		return s.pc.PostForm("/oauth2/token", form, st.Basic("web", s.secrets["web"])).Token().AccessToken
	}
	acme, globex, platform := login("editor", "acme"), login("viewer", "globex"), login("super_admin", "")
	if a := s.call(t, "POST", "/projects", acme, map[string]string{"name": "Rocket skates"}); a.status != 201 {
		t.Fatalf("create a project in acme: %d %s", a.status, a.raw)
	}
	for _, tc := range []struct {
		name, path, token string
		status            int
	}{
		{"ok/acme's token on acme", "/tenants/acme/projects", acme, 200},
		{"ok/globex's token on globex", "/tenants/globex/projects", globex, 200},
		{"fail/acme's token on globex", "/tenants/globex/projects", acme, 403},
		{"fail/globex's token on acme", "/tenants/acme/projects", globex, 403},
		{"fail/a platform token names no tenant", "/tenants/acme/projects", platform, 403},
		{"fail/no token", "/tenants/acme/projects", "", 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := s.call(t, "GET", tc.path, tc.token, nil)
			if a.status != tc.status {
				t.Fatalf("status %d, want %d: %s", a.status, tc.status, a.raw)
			}
		})
	}
	items, _ := s.call(t, "GET", "/tenants/globex/projects", globex, nil).body["items"].([]any)
	if len(items) != 0 {
		t.Fatalf("globex sees acme's project: %v", items)
	}
	items, _ = s.call(t, "GET", "/tenants/acme/projects", acme, nil).body["items"].([]any)
	if len(items) != 1 {
		t.Fatalf("acme's projects: %v", items)
	}
	// GET /projects lists the token's organisation's projects only.
	if a := s.call(t, "POST", "/projects", platform, map[string]string{"name": "Platform tools"}); a.status != 201 {
		t.Fatalf("create a platform project: %d %s", a.status, a.raw)
	}
	for _, tc := range []struct {
		name, token, want string
	}{
		{"acme", acme, "Rocket skates"},
		{"globex", globex, ""},
		{"platform", platform, "Platform tools"},
	} {
		items, _ := s.call(t, "GET", "/projects", tc.token, nil).body["items"].([]any)
		var names []string
		for _, it := range items {
			names = append(names, it.(map[string]any)["name"].(string))
		}
		if got := strings.Join(names, ","); got != tc.want {
			t.Errorf("GET /projects with %s's token: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestDemoAPITenantAdminIsNoPlatformAdmin: an organisation's admin (a
// platform viewer made admin of acme), signed in to acme with a second
// factor, holds admin and acr mfa in acme's token, yet GET /admin/metrics,
// a route of the whole instance guarded by Role("admin") and MFA, refuses
// it (403): a tenant token's roles count only where the guard verified its
// organisation. Found by a review; before the fix it answered 200 with the
// instance's figures.
func TestDemoAPITenantAdminIsNoPlatformAdmin(t *testing.T) {
	s := startStack(t, map[string]string{"PORTCULLIS_TENANTS": "on"})
	core := s.in.App.Core
	tn := store.Tenant{Slug: "acme", Name: "Acme", Active: true}
	if err := core.Store.CreateTenant(t.Context(), &tn); err != nil {
		t.Fatal(err)
	}
	if _, err := core.Store.GrantTenantRole(t.Context(), tn.ID, s.users["viewer"].ID, "admin"); err != nil {
		t.Fatal(err)
	}
	f := s.enrolMFA(t, "viewer")
	form := st.PasswordForm("viewer@example.com", password, "")
	form.Set("tenant", "acme")
	r := s.pc.PostForm("/oauth2/token", form, st.Basic("web", s.secrets["web"]))
	mfaTok, _ := r.ExpectError(400, "mfa_required").Map()["mfa_token"].(string)
	step := url.Values{"grant_type": {"urn:portcullis:params:oauth:grant-type:mfa-otp"}, "mfa_token": {mfaTok},
		"otp": {st.NextTOTPCode(t, f.secret)}, "tenant": {"acme"}}
	acmeAdmin := s.pc.PostForm("/oauth2/token", step, st.Basic("web", s.secrets["web"])).Token().AccessToken
	if c := jwtPart(t, acmeAdmin, 1); c["tenant"] != "acme" || c["acr"] != "mfa" || !slices.Contains(anyStrings(c["roles"]), "admin") {
		t.Fatalf("acme's admin token: tenant %v, acr %v, roles %v", c["tenant"], c["acr"], c["roles"])
	}
	platform := s.login(t, "web", "editor", "").AccessToken
	if a := s.call(t, "GET", "/admin/metrics", platform, nil); a.status != 403 {
		t.Fatalf("platform editor on /admin/metrics: %d", a.status)
	}
	if a := s.call(t, "GET", "/admin/metrics", acmeAdmin, nil); a.status != 403 || !strings.Contains(a.challenge, `error="insufficient_scope"`) {
		t.Errorf("an organisation's admin (platform viewer) reads the platform's /admin/metrics: %d %s %s", a.status, a.challenge, a.raw)
	}
	// Within acme its token still works.
	if a := s.call(t, "GET", "/tenants/acme/projects", acmeAdmin, nil); a.status != 200 {
		t.Errorf("acme's admin on /tenants/acme/projects: %d %s", a.status, a.raw)
	}
}

// anyStrings is a JSON array of strings as a slice (nil for anything else).
func anyStrings(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, x := range list {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

package main

import (
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

package policy

import (
	"slices"
	"testing"
)

func TestDemoPolicy(t *testing.T) {
	p, err := Load("../docs/examples/demo-policy.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got := p.RoleNames(); !slices.Equal(got, []string{"super_admin", "admin", "editor", "viewer"}) {
		t.Fatalf("RoleNames = %v", got)
	}
	if r, _ := p.DefaultRole(); r != "viewer" {
		t.Fatalf("DefaultRole = %q", r)
	}
	every := append(AdminPermissions(), "projects:read", "projects:write")
	slices.Sort(every)
	tests := []struct {
		name string
		role string
		want []string
	}{
		{"ok/viewer reads projects", "viewer", []string{"projects:read"}},
		{"ok/editor reads and writes projects", "editor", []string{"projects:read", "projects:write"}},
		{"ok/admin has every permission", "admin", every},
		{"ok/super_admin has every permission", "super_admin", every},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := p.Permissions([]string{tt.role}); !slices.Equal(got, tt.want) {
				t.Fatalf("Permissions(%s) = %v, want %v", tt.role, got, tt.want)
			}
		})
	}
	guards := []struct {
		name string
		role string
		perm string
		want bool
	}{
		{"ok/editor may POST /projects", "editor", "projects:write", true},
		{"ok/viewer may GET /projects", "viewer", "projects:read", true},
		{"ok/admin may rotate keys", "admin", "keys:rotate", true},
		{"fail/viewer may not POST /projects", "viewer", "projects:write", false},
		{"fail/editor may not read users", "editor", "users:read", false},
	}
	for _, g := range guards {
		t.Run(g.name, func(t *testing.T) {
			if got := Matches(p.Permissions([]string{g.role}), g.perm); got != g.want {
				t.Fatalf("%s has %s = %v", g.role, g.perm, got)
			}
		})
	}
	if err := p.CanAssign([]string{"admin"}, "editor"); err != nil {
		t.Fatalf("admin may not grant editor: %v", err)
	}
	if err := p.CanAssign([]string{"admin"}, "admin"); err == nil {
		t.Fatal("admin may grant admin")
	}
	if err := p.CanAssign([]string{"super_admin"}, "super_admin"); err != nil {
		t.Fatalf("super_admin may not grant super_admin: %v", err)
	}
	if err := p.CanAssign([]string{"editor"}, "viewer"); err != nil {
		t.Fatalf("editor is above viewer: %v", err)
	}
}

func TestRecruitingPolicy(t *testing.T) {
	p, err := Load("../docs/examples/recruiting-policy.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got := p.RoleNames(); !slices.Equal(got, []string{"super_admin", "admin", "recruiter", "candidate"}) {
		t.Fatalf("RoleNames = %v", got)
	}
	if r, _ := p.DefaultRole(); r != "candidate" {
		t.Fatalf("DefaultRole = %q", r)
	}
	tests := []struct {
		name string
		role string
		perm string
		want bool
	}{
		{"ok/candidate applies", "candidate", "applications:write", true},
		{"ok/candidate edits own profile", "candidate", "profile:write", true},
		{"ok/recruiter publishes jobs", "recruiter", "jobs:publish", true},
		{"ok/recruiter decides applications", "recruiter", "applications:decide", true},
		{"ok/recruiter inherits the candidate's permissions", "recruiter", "profile:write", true},
		{"ok/recruiter invites", "recruiter", "users:invite", true},
		{"ok/admin changes candidates", "admin", "candidates:write", true},
		{"ok/admin assigns roles", "admin", "roles:assign", true},
		{"ok/super_admin rotates keys", "super_admin", "keys:rotate", true},
		{"fail/candidate reads candidates", "candidate", "candidates:read", false},
		{"fail/candidate publishes jobs", "candidate", "jobs:publish", false},
		{"fail/recruiter assigns roles", "recruiter", "roles:assign", false},
		{"fail/recruiter changes users", "recruiter", "users:write", false},
		{"fail/admin rotates keys", "admin", "keys:rotate", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Matches(p.Permissions([]string{tt.role}), tt.perm); got != tt.want {
				t.Fatalf("%s has %s = %v, want %v", tt.role, tt.perm, got, tt.want)
			}
		})
	}
	if err := p.CanAssign([]string{"recruiter"}, "candidate"); err != nil {
		t.Fatalf("recruiter may not invite candidates: %v", err)
	}
	if err := p.CanAssign([]string{"recruiter"}, "recruiter"); err == nil {
		t.Fatal("recruiter may make recruiters")
	}
	if err := p.CanAssign([]string{"admin"}, "recruiter"); err != nil {
		t.Fatalf("admin may not grant recruiter: %v", err)
	}
}

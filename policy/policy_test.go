package policy

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func mustParse(t *testing.T, src string) *Policy {
	t.Helper()
	p, err := Parse("test.yaml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

func TestDefault(t *testing.T) {
	p := Default()
	if p != Default() {
		t.Fatal("Default should return the shared built-in policy")
	}
	if got := p.Source(); got != DefaultSource {
		t.Fatalf("Source = %q", got)
	}
	if got := p.RoleNames(); !slices.Equal(got, []string{"super_admin", "admin", "user"}) {
		t.Fatalf("RoleNames = %v", got)
	}
	if role, ok := p.DefaultRole(); !ok || role != "user" {
		t.Fatalf("DefaultRole = %q, %v", role, ok)
	}
	if got := p.AllPermissions(); !slices.Equal(got, AdminPermissions()) {
		t.Fatalf("AllPermissions = %v, want the admin permissions %v", got, AdminPermissions())
	}
	adminPerms := []string{"audit:read", "clients:read", "clients:write", "keys:read", "roles:assign", "roles:read", "users:invite", "users:read", "users:write"}
	tests := []struct {
		name  string
		roles []string
		want  []string
	}{
		{"ok/super_admin has every admin permission", []string{"super_admin"}, AdminPermissions()},
		{"ok/admin has the admin permissions but keys:rotate", []string{"admin"}, adminPerms},
		{"ok/user has none", []string{"user"}, []string{}},
		{"ok/no roles give none", nil, []string{}},
		{"ok/unknown roles confer nothing", []string{"root", "owner"}, []string{}},
		{"ok/union is deduplicated", []string{"user", "admin", "admin"}, adminPerms},
		{"ok/union with super_admin", []string{"admin", "super_admin"}, AdminPermissions()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := p.Permissions(tt.roles)
			if got == nil || !slices.Equal(got, tt.want) {
				t.Fatalf("Permissions(%v) = %#v, want %v", tt.roles, got, tt.want)
			}
		})
	}
	if slices.Contains(p.Permissions([]string{"admin"}), PermKeysRotate) {
		t.Fatal("admin must not hold keys:rotate in the default policy")
	}
	for _, r := range p.Roles() {
		if r.Description == "" {
			t.Errorf("role %s has no description", r.Name)
		}
	}
	if _, err := Parse("default.yaml", DefaultYAML()); err != nil {
		t.Fatalf("DefaultYAML does not parse: %v", err)
	}
}

func TestLevels(t *testing.T) {
	p := Default()
	tests := []struct {
		name      string
		roles     []string
		wantLevel int
	}{
		{"ok/super_admin", []string{"super_admin"}, 100},
		{"ok/highest wins", []string{"user", "admin"}, 50},
		{"ok/unknown ignored", []string{"ghost", "user"}, 10},
		{"ok/none", nil, NoLevel},
		{"ok/only unknown", []string{"ghost"}, NoLevel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := p.HighestLevel(tt.roles); got != tt.wantLevel {
				t.Fatalf("HighestLevel(%v) = %d, want %d", tt.roles, got, tt.wantLevel)
			}
		})
	}
	if l, ok := p.Level("admin"); !ok || l != 50 {
		t.Fatalf("Level(admin) = %d, %v", l, ok)
	}
	if l, ok := p.Level("ghost"); ok || l != NoLevel {
		t.Fatalf("Level(ghost) = %d, %v", l, ok)
	}
	if !p.HasRole("user") || p.HasRole("User") || p.HasRole("") {
		t.Fatal("HasRole is wrong")
	}
	if got := p.KnownRoles([]string{"user", "ghost", "super_admin", "user"}); !slices.Equal(got, []string{"super_admin", "user"}) {
		t.Fatalf("KnownRoles = %v", got)
	}
}

func TestRolesAreCopies(t *testing.T) {
	p := Default()
	roles := p.Roles()
	roles[0].Permissions[0] = "*"
	roles[0].AssignableBy[0] = "user"
	if slices.Contains(p.Permissions([]string{"super_admin"}), "*") {
		t.Fatal("Roles leaked internal state")
	}
	if err := p.CanAssign([]string{"admin"}, "super_admin"); err == nil {
		t.Fatal("mutating Roles changed assignable_by")
	}
	all := p.AllPermissions()
	all[0] = "x:y"
	if p.AllPermissions()[0] == "x:y" {
		t.Fatal("AllPermissions leaked internal state")
	}
	perms := p.Permissions([]string{"admin"})
	perms[0] = "*"
	if p.Permissions([]string{"admin"})[0] == "*" {
		t.Fatal("Permissions leaked internal state")
	}
}

const inheritancePolicy = `
permissions: [docs:read, docs:write, docs:delete, billing:read, billing:pay]
roles:
  owner:
    level: 90
    permissions: ["*"]
  manager:
    level: 50
    inherits: [writer, accountant]
    permissions: ["docs:*"]
  accountant:
    level: 30
    permissions: ["billing:*"]
  writer:
    level: 30
    inherits: [reader]
    permissions: [docs:write]
  reader:
    level: 10
    permissions: [docs:read]
  guest:
    level: 0
`

func TestPermissionsExpansion(t *testing.T) {
	p := mustParse(t, inheritancePolicy)
	all := append(AdminPermissions(), "billing:pay", "billing:read", "docs:delete", "docs:read", "docs:write")
	slices.Sort(all)
	tests := []struct {
		name  string
		roles []string
		want  []string
	}{
		{"ok/direct", []string{"reader"}, []string{"docs:read"}},
		{"ok/inherited", []string{"writer"}, []string{"docs:read", "docs:write"}},
		{"ok/resource wildcard", []string{"accountant"}, []string{"billing:pay", "billing:read"}},
		{"ok/transitive and wildcard", []string{"manager"}, []string{"billing:pay", "billing:read", "docs:delete", "docs:read", "docs:write"}},
		{"ok/star expands to every known permission", []string{"owner"}, all},
		{"ok/role without permissions", []string{"guest"}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := p.Permissions(tt.roles)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("Permissions(%v) = %v, want %v", tt.roles, got, tt.want)
			}
			for _, perm := range got {
				if strings.Contains(perm, "*") || !ValidPermission(perm) {
					t.Fatalf("Permissions returned a non-concrete permission %q", perm)
				}
			}
		})
	}
	if got := p.AllPermissions(); !slices.Equal(got, all) {
		t.Fatalf("AllPermissions = %v, want %v", got, all)
	}
	r, ok := p.Role("manager")
	if !ok || r.Level != 50 || !slices.Equal(r.Inherits, []string{"writer", "accountant"}) || len(r.Permissions) != 5 {
		t.Fatalf("Role(manager) = %+v, %v", r, ok)
	}
	if _, ok := p.Role("nobody"); ok {
		t.Fatal("Role(nobody) found")
	}
	if got := p.RoleNames(); !slices.Equal(got, []string{"owner", "manager", "accountant", "writer", "reader", "guest"}) {
		t.Fatalf("RoleNames (level desc, then name) = %v", got)
	}
	if _, ok := p.DefaultRole(); ok {
		t.Fatal("DefaultRole set without default_role")
	}
}

func TestPermissionsWithoutCatalogue(t *testing.T) {
	p := mustParse(t, `
roles:
  a:
    level: 2
    permissions: ["x:*", "users:*"]
  b:
    level: 1
    permissions: [x:one, x:two]
`)
	if got := p.Permissions([]string{"a"}); !slices.Equal(got, []string{"users:invite", "users:read", "users:write", "x:one", "x:two"}) {
		t.Fatalf("Permissions(a) = %v", got)
	}
}

func TestMatches(t *testing.T) {
	tests := []struct {
		name     string
		granted  []string
		required string
		want     bool
	}{
		{"ok/exact", []string{"projects:read"}, "projects:read", true},
		{"ok/resource wildcard", []string{"projects:*"}, "projects:write", true},
		{"ok/star", []string{"*"}, "anything:at-all", true},
		{"ok/one of many", []string{"a:b", "projects:read"}, "projects:read", true},
		{"ok/malformed granted entries are skipped", []string{"", "bad", "projects:read"}, "projects:read", true},
		{"fail/other action", []string{"projects:read"}, "projects:write", false},
		{"fail/other resource wildcard", []string{"project:*"}, "projects:read", false},
		{"fail/prefix resource wildcard", []string{"proj:*"}, "projects:read", false},
		{"fail/resource wildcard without a colon", []string{"projects.*"}, "projects:read", false},
		{"fail/longer resource wildcard", []string{"projectsx:*"}, "projects:read", false},
		{"fail/none granted", nil, "projects:read", false},
		{"fail/empty required", []string{"*"}, "", false},
		{"fail/wildcard required", []string{"*"}, "projects:*", false},
		{"fail/star required", []string{"*"}, "*", false},
		{"fail/malformed required", []string{"*"}, "projects", false},
		{"fail/required with two colons", []string{"*"}, "a:b:c", false},
		{"fail/upper case required", []string{"*"}, "Projects:read", false},
		{"fail/case matters", []string{"Projects:read"}, "projects:read", false},
		{"fail/oidc scope is not a permission", []string{"*"}, "openid", false},
		{"fail/action wildcard is not a resource wildcard", []string{"*:read"}, "projects:read", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Matches(tt.granted, tt.required); got != tt.want {
				t.Fatalf("Matches(%v, %q) = %v, want %v", tt.granted, tt.required, got, tt.want)
			}
		})
	}
}

func TestValidPermission(t *testing.T) {
	tests := []struct {
		name    string
		p       string
		concr   bool
		pattern bool
	}{
		{"ok/simple", "users:read", true, true},
		{"ok/punctuation", "data.sets:bulk-export_v2", true, true},
		{"ok/digits", "v2:1", true, true},
		{"ok/resource wildcard", "users:*", false, true},
		{"ok/star", "*", false, true},
		{"fail/empty", "", false, false},
		{"fail/no colon", "users", false, false},
		{"fail/empty action", "users:", false, false},
		{"fail/empty resource", ":read", false, false},
		{"fail/two colons", "a:b:c", false, false},
		{"fail/upper case", "Users:read", false, false},
		{"fail/space", "users: read", false, false},
		{"fail/leading dot", ".users:read", false, false},
		{"fail/leading dash in action", "users:-read", false, false},
		{"fail/star resource", "*:read", false, false},
		{"fail/partial wildcard", "users:re*", false, false},
		{"fail/too long", "a:" + strings.Repeat("b", MaxPermissionLength), false, false},
		{"fail/non-ascii", "usérs:read", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ValidPermission(tt.p); got != tt.concr {
				t.Errorf("ValidPermission(%q) = %v", tt.p, got)
			}
			if got := ValidPermissionPattern(tt.p); got != tt.pattern {
				t.Errorf("ValidPermissionPattern(%q) = %v", tt.p, got)
			}
		})
	}
	if !IsAdminPermission("keys:rotate") || IsAdminPermission("projects:read") {
		t.Fatal("IsAdminPermission is wrong")
	}
	if len(AdminPermissions()) != 10 {
		t.Fatalf("AdminPermissions = %v, the contract names 10", AdminPermissions())
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte(inheritancePolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Load(good)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if p.Source() != good {
		t.Fatalf("Source = %q", p.Source())
	}

	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("roles:\n  a:\n    level: 1\n    inherits: [b]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad)
	var pe *ParseError
	if !errors.As(err, &pe) || pe.File != bad || pe.Line != 4 {
		t.Fatalf("Load(bad) = %v, want a ParseError at %s:4", err, bad)
	}
	if !strings.HasPrefix(err.Error(), bad+":4:") {
		t.Fatalf("error %q does not start with file:line", err)
	}

	_, err = Load(filepath.Join(dir, "missing.yaml"))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("Load(missing) = %v", err)
	}

	huge := filepath.Join(dir, "huge.yaml")
	if err := os.WriteFile(huge, []byte("# "+strings.Repeat("x", MaxPolicySize)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(huge); !errors.As(err, &pe) || !strings.Contains(pe.Msg, "larger than") {
		t.Fatalf("Load(huge) = %v", err)
	}
}

package policy_test

import (
	"slices"
	"testing"

	"github.com/portcullis-auth/portcullis/policy"
)

const coveredPolicy = `
version: 1
permissions: [projects:read, projects:write, reports:read]
roles:
  super_admin:
    level: 100
    permissions: ["*"]
  admin:
    level: 80
    permissions: ["users:*", "projects:*"]
  editor:
    level: 20
    inherits: [viewer]
    permissions: [projects:write]
  viewer:
    level: 10
    permissions: [projects:read]
  member:
    level: 5
`

// TestCoveredRoles: a token names only the roles whose every expanded
// permission its scope holds (contract, "Roles follow the grant").
func TestCoveredRoles(t *testing.T) {
	p, err := policy.Parse("covered", []byte(coveredPolicy))
	if err != nil {
		t.Fatal(err)
	}
	all := p.AllPermissions()
	for _, tc := range []struct {
		name    string
		roles   []string
		granted []string
		want    []string
	}{
		{"full login keeps every role", []string{"super_admin", "admin", "viewer"}, all, []string{"super_admin", "admin", "viewer"}},
		{"read-only super_admin loses super_admin", []string{"super_admin"}, []string{"projects:read"}, []string{}},
		{"read-only keeps the role it covers", []string{"super_admin", "viewer"}, []string{"projects:read"}, []string{"viewer"}},
		{"inherited permissions count", []string{"editor"}, []string{"projects:write"}, []string{}},
		{"inheritance covered", []string{"editor", "viewer"}, []string{"projects:read", "projects:write"}, []string{"editor", "viewer"}},
		{"wildcards expand: users:* needs every users permission", []string{"admin"},
			[]string{"projects:read", "projects:write", "users:read", "users:write"}, []string{}},
		{"wildcards expand: all of them", []string{"admin"},
			[]string{"projects:read", "projects:write", "users:invite", "users:read", "users:write"}, []string{"admin"}},
		{"super_admin needs every known permission", []string{"super_admin"}, all[1:], []string{}},
		{"a role granting nothing is always covered", []string{"member"}, []string{}, []string{"member"}},
		{"nothing granted: only empty roles", []string{"viewer", "member"}, nil, []string{"member"}},
		{"unknown roles are dropped", []string{"ghost", "member"}, all, []string{"member"}},
		{"duplicates are dropped, order kept", []string{"viewer", "member", "viewer"}, all, []string{"viewer", "member"}},
		{"no roles", nil, all, []string{}},
		{"a wildcard in granted is not a permission", []string{"viewer"}, []string{"*", "projects:*"}, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := p.CoveredRoles(tc.roles, tc.granted)
			if got == nil || !slices.Equal(got, tc.want) {
				t.Fatalf("CoveredRoles(%v, %v) = %#v, want %v", tc.roles, tc.granted, got, tc.want)
			}
		})
	}
}

package policy

import (
	"errors"
	"strings"
	"testing"
)

func TestCanAssignDefault(t *testing.T) {
	p := Default()
	tests := []struct {
		name  string
		actor []string
		role  string
		want  error  // nil, ErrForbidden or ErrUnknownRole
		why   string // substring of the reason
	}{
		{"ok/super_admin grants super_admin by assignable_by", []string{"super_admin"}, "super_admin", nil, ""},
		{"ok/super_admin grants admin", []string{"super_admin"}, "admin", nil, ""},
		{"ok/super_admin grants user", []string{"super_admin"}, "user", nil, ""},
		{"ok/admin grants user", []string{"admin"}, "user", nil, ""},
		{"ok/highest role counts", []string{"user", "admin"}, "user", nil, ""},
		{"fail/admin grants admin", []string{"admin"}, "admin", ErrForbidden, `not below your highest role "admin"`},
		{"fail/admin grants super_admin", []string{"admin"}, "super_admin", ErrForbidden, "only super_admin may assign it"},
		{"fail/user grants user", []string{"user"}, "user", ErrForbidden, `not below your highest role "user"`},
		{"fail/user grants admin", []string{"user"}, "admin", ErrForbidden, "not below"},
		{"fail/no roles", nil, "user", ErrForbidden, "you hold no role"},
		{"fail/only unknown roles", []string{"root"}, "user", ErrForbidden, "you hold no role"},
		{"fail/a stale role name does not count for assignable_by", []string{"ghost"}, "super_admin", ErrForbidden, "you hold no role"},
		{"fail/unknown role", []string{"super_admin"}, "owner", ErrUnknownRole, `unknown role "owner"`},
		{"fail/empty role", []string{"super_admin"}, "", ErrUnknownRole, "unknown role"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := p.CanAssign(tt.actor, tt.role)
			checkRefusal(t, err, tt.want, tt.why)
		})
	}
}

func checkRefusal(t *testing.T, err, want error, why string) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("refused: %v", err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want %v", err, want)
	}
	if !strings.Contains(err.Error(), why) {
		t.Fatalf("reason %q does not contain %q", err, why)
	}
	if errors.Is(want, ErrForbidden) {
		var ce *CeilingError
		if !errors.As(err, &ce) {
			t.Fatalf("err %T is not a *CeilingError", err)
		}
	}
}

// peersPolicy has peers (two roles at one level) and a role delegated to a lower role.
const peersPolicy = `
permissions: [tickets:read, invoices:read]
roles:
  owner:
    level: 100
    permissions: ["*"]
  support:
    level: 50
    permissions: [tickets:read]
  billing:
    level: 50
    permissions: [invoices:read]
  auditor:
    level: 70
    permissions: [audit:read]
    assignable_by: [billing]
  member:
    level: 10
`

func TestCanAssignPeersAndDelegation(t *testing.T) {
	p := mustParse(t, peersPolicy)
	tests := []struct {
		name  string
		actor []string
		role  string
		want  error
	}{
		{"ok/above", []string{"owner"}, "support", nil},
		{"ok/delegated role above the actor", []string{"billing"}, "auditor", nil},
		{"ok/below", []string{"support"}, "member", nil},
		{"fail/peer role", []string{"support"}, "billing", ErrForbidden},
		{"fail/own role", []string{"billing"}, "billing", ErrForbidden},
		{"fail/not delegated", []string{"support"}, "auditor", ErrForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkRefusal(t, p.CanAssign(tt.actor, tt.role), tt.want, "")
		})
	}
}

func TestCanManage(t *testing.T) {
	p := Default()
	sa := func(id string) Subject { return Subject{ID: id, Roles: []string{"super_admin"}} }
	ad := func(id string) Subject { return Subject{ID: id, Roles: []string{"admin"}} }
	us := func(id string) Subject { return Subject{ID: id, Roles: []string{"user"}} }
	tests := []struct {
		name          string
		actor, target Subject
		want          error
		why           string
	}{
		{"ok/super_admin manages admin", sa("a"), ad("b"), nil, ""},
		{"ok/admin manages user", ad("a"), us("b"), nil, ""},
		{"ok/admin manages a user without roles", ad("a"), Subject{ID: "b"}, nil, ""},
		{"ok/admin manages a user holding only stale roles", ad("a"), Subject{ID: "b", Roles: []string{"ghost"}}, nil, ""},
		{"fail/self", sa("a"), sa("a"), ErrForbidden, "your own account"},
		{"fail/self even when below", Subject{ID: "a", Roles: []string{"admin"}}, Subject{ID: "a", Roles: []string{"user"}}, ErrForbidden, "your own account"},
		{"fail/empty ids count as the same person", Subject{Roles: []string{"super_admin"}}, Subject{Roles: []string{"user"}}, ErrForbidden, "your own account"},
		{"fail/peer", ad("a"), ad("b"), ErrForbidden, `their highest role "admin" is not below your highest role "admin"`},
		{"fail/peer super_admin", sa("a"), sa("b"), ErrForbidden, "not below"},
		{"fail/above", ad("a"), sa("b"), ErrForbidden, "not below"},
		{"fail/target's highest role counts", ad("a"), Subject{ID: "b", Roles: []string{"user", "admin"}}, ErrForbidden, "not below"},
		{"fail/user manages user", us("a"), us("b"), ErrForbidden, "not below"},
		{"fail/actor without roles", Subject{ID: "a"}, Subject{ID: "b"}, ErrForbidden, "you hold no role"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := p.CanManage(tt.actor, tt.target)
			checkRefusal(t, err, tt.want, tt.why)
			var ce *CeilingError
			if tt.why == "your own account" && (!errors.As(err, &ce) || !ce.Self) {
				t.Fatal("self refusal not marked Self")
			}
		})
	}
}

func TestCanChangeRole(t *testing.T) {
	p := Default()
	sub := func(id string, roles ...string) Subject { return Subject{ID: id, Roles: roles} }
	tests := []struct {
		name          string
		actor, target Subject
		role          string
		want          error
		why           string
	}{
		{"ok/super_admin makes a user admin", sub("a", "super_admin"), sub("b", "user"), "admin", nil, ""},
		{"ok/super_admin makes an admin super_admin", sub("a", "super_admin"), sub("b", "admin"), "super_admin", nil, ""},
		{"ok/super_admin removes super_admin from a peer (delegated)", sub("a", "super_admin"), sub("b", "super_admin"), "super_admin", nil, ""},
		{"ok/admin gives user to a user", sub("a", "admin"), sub("b", "user"), "user", nil, ""},
		{"ok/admin gives user to someone without roles", sub("a", "admin"), sub("b"), "user", nil, ""},
		{"fail/own roles", sub("a", "super_admin"), sub("a", "super_admin"), "admin", ErrForbidden, "your own roles"},
		{"fail/admin makes someone admin", sub("a", "admin"), sub("b", "user"), "admin", ErrForbidden, `may not assign the role "admin"`},
		{"fail/admin touches a peer's roles", sub("a", "admin"), sub("b", "admin"), "user", ErrForbidden, "may not change the roles of this user"},
		{"fail/admin touches a super_admin's roles", sub("a", "admin"), sub("b", "super_admin"), "user", ErrForbidden, "not below"},
		{"fail/super_admin demotes a peer's admin (not delegated)", sub("a", "super_admin"), sub("b", "super_admin", "admin"), "admin", ErrForbidden, "not below"},
		{"fail/unknown role", sub("a", "super_admin"), sub("b", "user"), "root", ErrUnknownRole, "unknown role"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkRefusal(t, p.CanChangeRole(tt.actor, tt.target, tt.role), tt.want, tt.why)
		})
	}

	// A role delegated by assignable_by may be changed on anyone, even above the actor.
	q := mustParse(t, peersPolicy)
	if err := q.CanChangeRole(sub("a", "billing"), sub("b", "owner"), "auditor"); err != nil {
		t.Fatalf("delegated role refused: %v", err)
	}
	if err := q.CanChangeRole(sub("a", "billing"), sub("b", "support"), "member"); err == nil {
		t.Fatal("billing changed the roles of its peer support")
	}
}

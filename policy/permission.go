package policy

import (
	"fmt"
	"slices"
	"strings"
)

// The admin permissions checked by Portcullis's own /admin endpoints (see the contract). They are
// always known to every policy, so "*" and "users:*" expand to them.
const (
	PermUsersRead    = "users:read"
	PermUsersWrite   = "users:write"
	PermUsersInvite  = "users:invite"
	PermRolesRead    = "roles:read"
	PermRolesAssign  = "roles:assign"
	PermClientsRead  = "clients:read"
	PermClientsWrite = "clients:write"
	PermKeysRead     = "keys:read"
	PermKeysRotate   = "keys:rotate"
	PermAuditRead    = "audit:read"
)

// Wildcard is the permission pattern that names every known permission.
const Wildcard = "*"

// MaxPermissionLength bounds the length of one permission string.
const MaxPermissionLength = 128

var adminPermissions = []string{
	PermAuditRead,
	PermClientsRead,
	PermClientsWrite,
	PermKeysRead,
	PermKeysRotate,
	PermRolesAssign,
	PermRolesRead,
	PermUsersInvite,
	PermUsersRead,
	PermUsersWrite,
}

// adminResources are the resources of the admin permissions; a default_role may not receive any
// permission of these.
var adminResources = []string{"audit", "clients", "keys", "roles", "users"}

// AdminPermissions returns the permissions Portcullis's admin endpoints check, sorted.
func AdminPermissions() []string { return slices.Clone(adminPermissions) }

// IsAdminPermission reports whether perm is one of AdminPermissions.
func IsAdminPermission(perm string) bool {
	_, found := slices.BinarySearch(adminPermissions, perm)
	return found
}

// ValidPermission reports whether p is a concrete permission: resource:action without wildcards.
func ValidPermission(p string) bool {
	return checkPermission(p, false) == nil
}

// ValidPermissionPattern reports whether p is a concrete permission, "resource:*" or "*".
func ValidPermissionPattern(p string) bool {
	return checkPermission(p, true) == nil
}

// checkPermission explains why p is not a permission (or, with wildcards, a pattern).
func checkPermission(p string, wildcards bool) error {
	if p == "" {
		return fmt.Errorf("empty permission")
	}
	if len(p) > MaxPermissionLength {
		return fmt.Errorf("permission longer than %d bytes", MaxPermissionLength)
	}
	if p == Wildcard {
		if wildcards {
			return nil
		}
		return fmt.Errorf("%q is a wildcard, not a permission", p)
	}
	resource, action, ok := strings.Cut(p, ":")
	if !ok {
		return fmt.Errorf("permission %q is not of the form resource:action", p)
	}
	if !validPart(resource) {
		return fmt.Errorf("permission %q: resource %q must be lower-case letters, digits, '_', '-' or '.', starting with a letter or digit", p, resource)
	}
	if action == Wildcard {
		if wildcards {
			return nil
		}
		return fmt.Errorf("%q is a wildcard, not a permission", p)
	}
	if !validPart(action) {
		return fmt.Errorf("permission %q: action %q must be lower-case letters, digits, '_', '-' or '.', starting with a letter or digit (or be *)", p, action)
	}
	return nil
}

// validPart reports whether s is a resource or action name.
func validPart(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '_' || c == '-' || c == '.') && i > 0:
		default:
			return false
		}
	}
	return true
}

// Matches reports whether the granted permissions (which may hold "resource:*" and "*" patterns)
// cover the required concrete permission. A malformed required permission matches nothing, and
// malformed granted entries are ignored: a guard fails closed.
func Matches(granted []string, required string) bool {
	if !ValidPermission(required) {
		return false
	}
	resource, _, _ := strings.Cut(required, ":")
	for _, g := range granted {
		if patternMatches(g, required, resource) {
			return true
		}
	}
	return false
}

// patternMatches reports whether pattern g covers the valid concrete permission p of resource.
func patternMatches(g, p, resource string) bool {
	switch {
	case g == p:
		return true
	case g == Wildcard:
		return true
	case len(g) == len(resource)+2 && strings.HasPrefix(g, resource) && g[len(resource)] == ':' && g[len(resource)+1] == '*':
		return true
	}
	return false
}

// expand returns the known permissions that pattern names: itself when concrete, the resource's
// permissions for "resource:*", and all of them for "*". known is sorted.
func expand(pattern string, known []string) []string {
	if pattern == Wildcard {
		return known
	}
	if resource, ok := strings.CutSuffix(pattern, ":*"); ok {
		var out []string
		for _, k := range known {
			if r, _, _ := strings.Cut(k, ":"); r == resource {
				out = append(out, k)
			}
		}
		return out
	}
	return []string{pattern}
}

// sortedSet returns the sorted, deduplicated union of the given lists, never nil.
func sortedSet(lists ...[]string) []string {
	out := []string{}
	for _, l := range lists {
		out = append(out, l...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

package policy

// CoveredRoles returns the roles of userRoles that a token holding the concrete permissions granted
// may name: those the policy defines whose every permission (inheritance and wildcards expanded) is
// in granted. A role that grants no permission is always covered; a role the policy does not define
// is dropped (it is stale and vouches for nothing). The order of userRoles is kept, duplicates are
// dropped, and the result is never nil.
//
// It is the one rule for the roles claim of every token (contract, "Roles follow the grant"): a
// token narrowed to projects:read of a super_admin does not say super_admin, so a role-guarded
// route downstream does not take a read-only token for a full one.
func (p *Policy) CoveredRoles(userRoles, granted []string) []string {
	held := make(map[string]struct{}, len(granted))
	for _, g := range granted {
		held[g] = struct{}{}
	}
	out := []string{}
	seen := make(map[string]struct{}, len(userRoles))
	for _, name := range userRoles {
		r, ok := p.roles[name]
		if !ok {
			continue
		}
		if _, dup := seen[name]; dup {
			continue
		}
		seen[name] = struct{}{}
		if coversAll(held, r.perms) {
			out = append(out, name)
		}
	}
	return out
}

// coversAll reports whether every permission of perms is in held.
func coversAll(held map[string]struct{}, perms []string) bool {
	for _, p := range perms {
		if _, ok := held[p]; !ok {
			return false
		}
	}
	return true
}

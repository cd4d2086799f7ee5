package policy

import (
	"slices"
)

// NoLevel is the level of a set of roles that holds no role known to the policy. It is below every
// real level (levels are >= 0).
const NoLevel = -1

// Policy is a validated, immutable set of roles and permissions. Build one with Load, Parse or
// Default; it is safe for concurrent use.
type Policy struct {
	source      string
	defaultRole string
	roles       map[string]*roleDef
	ordered     []*roleDef // level descending, then name ascending
	known       []string   // sorted concrete permissions
	mfaLevel    int        // mfa.required_for_level, when mfaSet
	mfaSet      bool
}

// roleDef is one role as the policy defines it.
type roleDef struct {
	name         string
	level        int
	description  string
	patterns     []string // permissions as written, may hold wildcards
	inherits     []string
	assignableBy []string
	platform     bool     // held globally, never inside a tenant (organisations)
	perms        []string // expanded (inheritance and wildcards), sorted, concrete
}

// Role describes a role for syncing into the roles table and for GET /admin/roles.
type Role struct {
	Name         string   `json:"name"`
	Level        int      `json:"level"`
	Description  string   `json:"description,omitempty"`
	Permissions  []string `json:"permissions"`             // expanded: inheritance and wildcards resolved, sorted
	Inherits     []string `json:"inherits,omitempty"`      // as written in the policy
	AssignableBy []string `json:"assignable_by,omitempty"` // as written in the policy
	// Platform: with organisations on, the role is held globally (an
	// operator of the whole instance) and never inside a tenant or in a
	// tenant's token. Not part of the JSON view, which stays as it was.
	Platform bool `json:"-"`
}

// Source names where the policy came from: a file path, the name given to Parse, or "built-in".
func (p *Policy) Source() string { return p.source }

// DefaultRole returns the role self-registered users get, and false when the policy names none.
func (p *Policy) DefaultRole() (string, bool) { return p.defaultRole, p.defaultRole != "" }

// MFARequiredLevel returns mfa.required_for_level, and false when the policy
// requires a second factor of nobody.
func (p *Policy) MFARequiredLevel() (int, bool) {
	if !p.mfaSet {
		return NoLevel, false
	}
	return p.mfaLevel, true
}

// MFARequired reports whether a user holding roles must use a second
// factor: the policy sets mfa.required_for_level and the highest level among
// roles (ignoring roles the policy does not define) is at or above it.
func (p *Policy) MFARequired(roles []string) bool {
	level, ok := p.MFARequiredLevel()
	return ok && p.HighestLevel(roles) >= level
}

// HasRole reports whether the policy defines the role.
func (p *Policy) HasRole(name string) bool {
	_, ok := p.roles[name]
	return ok
}

// Level returns the level of the role, and false when the policy does not define it.
func (p *Policy) Level(role string) (int, bool) {
	r, ok := p.roles[role]
	if !ok {
		return NoLevel, false
	}
	return r.level, true
}

// HighestLevel returns the highest level among roles, ignoring roles the policy does not define,
// or NoLevel when none is defined.
func (p *Policy) HighestLevel(roles []string) int {
	level := NoLevel
	for _, name := range roles {
		if r, ok := p.roles[name]; ok && r.level > level {
			level = r.level
		}
	}
	return level
}

// highestRole returns the defined role of the highest level among roles (ties: the first name in
// alphabetical order), or nil.
func (p *Policy) highestRole(roles []string) *roleDef {
	var best *roleDef
	for _, name := range roles {
		r, ok := p.roles[name]
		if !ok {
			continue
		}
		if best == nil || r.level > best.level || (r.level == best.level && r.name < best.name) {
			best = r
		}
	}
	return best
}

// Role returns one role by name, and false when the policy does not define it.
func (p *Policy) Role(name string) (Role, bool) {
	r, ok := p.roles[name]
	if !ok {
		return Role{}, false
	}
	return r.public(), true
}

// Roles returns every role, highest level first (ties by name), with expanded permissions.
func (p *Policy) Roles() []Role {
	out := make([]Role, 0, len(p.ordered))
	for _, r := range p.ordered {
		out = append(out, r.public())
	}
	return out
}

// RoleNames returns the names of every role, highest level first (ties by name).
func (p *Policy) RoleNames() []string {
	out := make([]string, 0, len(p.ordered))
	for _, r := range p.ordered {
		out = append(out, r.name)
	}
	return out
}

// KnownRoles returns the roles of the list that the policy defines, in the order of Roles, without
// duplicates; use it to drop stale role names before putting roles in a token.
func (p *Policy) KnownRoles(roles []string) []string {
	out := []string{}
	for _, r := range p.ordered {
		if slices.Contains(roles, r.name) {
			out = append(out, r.name)
		}
	}
	return out
}

func (r *roleDef) public() Role {
	return Role{
		Name:         r.name,
		Level:        r.level,
		Description:  r.description,
		Permissions:  nonNil(slices.Clone(r.perms)),
		Inherits:     nonNil(slices.Clone(r.inherits)),
		AssignableBy: nonNil(slices.Clone(r.assignableBy)),
		Platform:     r.platform,
	}
}

// PlatformRoles returns the roles marked `platform: true`, highest level
// first: with organisations on they are held globally, never inside a
// tenant, and never appear in a tenant's tokens.
func (p *Policy) PlatformRoles() []string {
	out := []string{}
	for _, r := range p.ordered {
		if r.platform {
			out = append(out, r.name)
		}
	}
	return out
}

// IsPlatformRole reports whether the policy marks role `platform: true`.
func (p *Policy) IsPlatformRole(role string) bool {
	r, ok := p.roles[role]
	return ok && r.platform
}

// SplitPlatform splits roles into the policy's platform roles and the
// others, keeping their order.
func (p *Policy) SplitPlatform(roles []string) (platform, other []string) {
	platform, other = []string{}, []string{}
	for _, r := range roles {
		if p.IsPlatformRole(r) {
			platform = append(platform, r)
		} else {
			other = append(other, r)
		}
	}
	return platform, other
}

// AllPermissions returns every concrete permission the policy knows (every permission it mentions
// plus AdminPermissions), sorted.
func (p *Policy) AllPermissions() []string { return slices.Clone(p.known) }

// Permissions returns the concrete permissions that the roles confer, inheritance and wildcards
// expanded, sorted and deduplicated; never nil and never holding a wildcard. Roles the policy does
// not define confer nothing.
func (p *Policy) Permissions(roles []string) []string {
	lists := make([][]string, 0, len(roles))
	for _, name := range roles {
		if r, ok := p.roles[name]; ok {
			lists = append(lists, r.perms)
		}
	}
	return sortedSet(lists...)
}

// nonNil turns a nil list into an empty one, so JSON shows [] rather than null.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

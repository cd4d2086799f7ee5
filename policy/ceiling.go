package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrForbidden is matched (errors.Is) by every refusal of the privilege ceiling; the server answers
// it with 403.
var ErrForbidden = errors.New("forbidden by the privilege ceiling")

// ErrUnknownRole is matched (errors.Is) when a role the policy does not define is named; the server
// answers it with 400.
var ErrUnknownRole = errors.New("unknown role")

// UnknownRoleError names a role the policy does not define.
type UnknownRoleError struct {
	Role string
}

// Error says which role is unknown.
func (e *UnknownRoleError) Error() string { return fmt.Sprintf("unknown role %q", e.Role) }

// Is makes errors.Is(err, ErrUnknownRole) true.
func (e *UnknownRoleError) Is(target error) bool { return target == ErrUnknownRole }

// CeilingError is a refusal by the privilege ceiling. Reason is a sentence for a person (shown as
// error_description); Self is true when the refusal is because actor and target are the same user.
type CeilingError struct {
	Reason string
	Self   bool
}

// Error returns the reason.
func (e *CeilingError) Error() string { return e.Reason }

// Is makes errors.Is(err, ErrForbidden) true.
func (e *CeilingError) Is(target error) bool { return target == ErrForbidden }

// Subject is a user as the ceiling sees them: their id (the token's sub) and their role names.
type Subject struct {
	ID    string
	Roles []string
}

// CanAssign reports whether an actor holding actorRoles may grant, revoke or invite with role: it
// may iff the role is strictly below the actor's highest role, or the role's assignable_by names one
// of the actor's roles. It returns nil, an *UnknownRoleError, or a *CeilingError explaining why not.
// Roles of actorRoles that the policy does not define count for nothing.
func (p *Policy) CanAssign(actorRoles []string, role string) error {
	target, ok := p.roles[role]
	if !ok {
		return &UnknownRoleError{Role: role}
	}
	actor := p.highestRole(actorRoles)
	if actor == nil {
		return &CeilingError{Reason: fmt.Sprintf("you hold no role, so you may not assign the role %q", role)}
	}
	if target.level < actor.level || p.delegated(actorRoles, target) {
		return nil
	}
	reason := fmt.Sprintf("you may not assign the role %q: it is not below your highest role %q", role, actor.name)
	if len(target.assignableBy) > 0 {
		reason += fmt.Sprintf(", and only %s may assign it", strings.Join(target.assignableBy, ", "))
	}
	return &CeilingError{Reason: reason}
}

// delegated reports whether the role's assignable_by names one of the actor's roles.
func (p *Policy) delegated(actorRoles []string, role *roleDef) bool {
	for _, r := range role.assignableBy {
		if slices.Contains(actorRoles, r) {
			return true
		}
	}
	return false
}

// CanManage reports whether actor may act on target's account (deactivate, reactivate, reset the
// password, set a temporary password, revoke sessions, delete): only when the target's highest role
// is strictly below the actor's highest role, and never on themself (same ID; two empty IDs count
// as the same person). A target with no role the policy defines is below any actor holding a role.
func (p *Policy) CanManage(actor, target Subject) error {
	if actor.ID == target.ID {
		return &CeilingError{Self: true, Reason: "you may not do this to your own account"}
	}
	return p.below(actor, target, "manage this user")
}

// CanChangeRole reports whether actor may grant or revoke role on target's account. Nobody changes
// their own roles. Otherwise CanAssign must allow the role, and the target must be strictly below
// the actor — unless the role's assignable_by names one of the actor's roles, in which case the
// policy has delegated that role to the actor whatever the target's level (so that, in the default
// policy, a super_admin can remove super_admin from another super_admin).
func (p *Policy) CanChangeRole(actor, target Subject, role string) error {
	if actor.ID == target.ID {
		return &CeilingError{Self: true, Reason: "you may not change your own roles"}
	}
	if err := p.CanAssign(actor.Roles, role); err != nil {
		return err
	}
	if p.delegated(actor.Roles, p.roles[role]) {
		return nil
	}
	return p.below(actor, target, "change the roles of this user")
}

// below refuses unless target's highest level is strictly below actor's.
func (p *Policy) below(actor, target Subject, what string) error {
	a := p.highestRole(actor.Roles)
	if a == nil {
		return &CeilingError{Reason: fmt.Sprintf("you hold no role, so you may not %s", what)}
	}
	t := p.highestRole(target.Roles)
	if t == nil || t.level < a.level {
		return nil
	}
	return &CeilingError{Reason: fmt.Sprintf("you may not %s: their highest role %q is not below your highest role %q", what, t.name, a.name)}
}

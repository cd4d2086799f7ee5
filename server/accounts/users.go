package accounts

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/store"
)

// UserQuery selects users for ListUsers.
type UserQuery struct {
	Email  string // exact, compared by store.EmailKey (ASCII case ignored)
	Query  string // substring of email or name, case-insensitive
	Cursor string
	Limit  int
}

// maxQueryLen bounds a search string.
const maxQueryLen = 254

// ListUsers returns one page of users of the whole instance, oldest
// first. The admin API lists with ListUsersAs, confined to the actor's
// organisation.
func (s *Service) ListUsers(ctx context.Context, q UserQuery) (Page[User], error) {
	return s.listUsers(ctx, "", q)
}

// ListUsersAs is ListUsers for actor: inside an organisation only its
// members, with the roles they hold there.
func (s *Service) ListUsersAs(ctx context.Context, actor Actor, q UserQuery) (Page[User], error) {
	sc, err := s.scopeOf(ctx, actor)
	if err != nil {
		return Page[User]{}, err
	}
	return s.listUsers(ctx, sc.tenant.ID, q)
}

func (s *Service) listUsers(ctx context.Context, tenantID string, q UserQuery) (Page[User], error) {
	if len(q.Email) > maxQueryLen || len(q.Query) > maxQueryLen {
		return Page[User]{}, apierr.ErrInvalidRequest.WithDescription("The search is longer than %d characters.", maxQueryLen)
	}
	page, err := s.store.ListUsers(ctx, store.UserFilter{Email: q.Email, Query: q.Query, TenantID: tenantID, Cursor: q.Cursor, Limit: q.Limit})
	if err != nil {
		return Page[User]{}, listErr("list users", err)
	}
	out := Page[User]{Items: make([]User, 0, len(page.Items)), NextCursor: page.NextCursor}
	for _, u := range page.Items {
		out.Items = append(out.Items, ViewUser(u))
	}
	return out, nil
}

// GetUser returns one user of the whole instance; unknown is 404. The
// admin API reads with GetUserAs.
func (s *Service) GetUser(ctx context.Context, id string) (User, error) {
	return s.viewIn(ctx, actorScope{}, id)
}

// GetUserAs is GetUser for actor: inside an organisation only a member
// (else 404), with the roles they hold there.
func (s *Service) GetUserAs(ctx context.Context, actor Actor, id string) (User, error) {
	sc, err := s.scopeOf(ctx, actor)
	if err != nil {
		return User{}, err
	}
	return s.viewIn(ctx, sc, id)
}

// viewIn is the user as scope sc sees them.
func (s *Service) viewIn(ctx context.Context, sc actorScope, id string) (User, error) {
	u, err := s.target(ctx, sc, id, reachMember)
	if err != nil {
		return User{}, err
	}
	return ViewUser(u.User), nil
}

// UserPatch changes a user; nil fields are left alone.
type UserPatch struct {
	Active *bool
	Name   *string
}

// UpdateUser changes a user the actor may manage (strictly below them, never
// themself). Deactivation ends every session of the user at once. A
// reactivation made with a token revoked meanwhile is undone
// (deactivateAgain) and answers 401.
func (s *Service) UpdateUser(ctx context.Context, actor Actor, id string, p UserPatch) (User, error) {
	if p.Active == nil && p.Name == nil {
		return User{}, apierr.ErrInvalidRequest.WithDescription("Nothing to change: give active or name.")
	}
	if p.Active != nil && *p.Active {
		if err := outlivesNoKey(actor); err != nil {
			return User{}, err
		}
	}
	var name string
	if p.Name != nil {
		var err error
		if name, err = normaliseName(*p.Name); err != nil {
			return User{}, err
		}
	}
	a, t, err := s.actorAndTarget(ctx, actor, id)
	if err != nil {
		return User{}, err
	}
	if t.IsMachine() && p.Name != nil && name == "" {
		return User{}, apierr.ErrInvalidRequest.WithDescription("A machine user needs a name: it is how people tell machine users apart.")
	}
	var wasActive bool
	var oldName string
	var u store.User
	write := func() error {
		u, err = s.store.UpdateUser(ctx, t.ID, func(u *store.User) error {
			wasActive, oldName = u.Active, u.Name
			if p.Active != nil {
				u.Active = *p.Active
			}
			if p.Name != nil {
				u.Name = name
			}
			return nil
		})
		if err != nil {
			return storeErr("update user", err, errUserNotFound)
		}
		return nil
	}
	deactivating := p.Active != nil && !*p.Active && t.Active
	if deactivating {
		err = s.endingSessions(ctx, t.ID, "deactivation", write)
	} else {
		err = write()
	}
	if err != nil {
		return User{}, err
	}
	switch {
	case wasActive && !u.Active && deactivating:
		s.record(ctx, "user.deactivated", store.OutcomeSuccess, a.ID, u.ID, actor.Meta, nil)
	case wasActive && !u.Active: // reactivated meanwhile by another request
		if err := s.sessions.EndUserSessions(ctx, u.ID); err != nil {
			s.log.Error("deactivation: the user is deactivated but the sessions could not be ended", "user_id", u.ID, "err", err)
			return User{}, err
		}
		s.record(ctx, "user.deactivated", store.OutcomeSuccess, a.ID, u.ID, actor.Meta, nil)
	case !wasActive && u.Active:
		s.record(ctx, "user.reactivated", store.OutcomeSuccess, a.ID, u.ID, actor.Meta, nil)
	}
	if oldName != u.Name {
		s.record(ctx, "user.updated", store.OutcomeSuccess, a.ID, u.ID, actor.Meta, map[string]string{"fields": "name"})
	}
	if p.Active != nil && *p.Active {
		if err := s.madeWithLiveToken(ctx, actor, "a reactivation", func(ctx context.Context) error {
			if wasActive {
				return nil // on before: this request turned nothing on
			}
			return s.deactivateAgain(ctx, a.ID, u.ID, actor.Meta)
		}); err != nil {
			return User{}, err
		}
	}
	return ViewUser(u), nil
}

// deactivateAgain is the undo of a reactivation made with a token revoked
// meanwhile (madeWithLiveToken): the account is turned off again, through
// endingSessions as any deactivation, so that a session started while it
// was on ends too (user.deactivated via token_revoked).
func (s *Service) deactivateAgain(ctx context.Context, actorID, userID string, m Meta) error {
	if err := s.endingSessions(ctx, userID, "deactivation", func() error {
		_, err := s.store.UpdateUser(ctx, userID, func(u *store.User) error {
			u.Active = false
			return nil
		})
		return err
	}); err != nil {
		return fmt.Errorf("deactivate %s again: %w", userID, err)
	}
	s.record(ctx, "user.deactivated", store.OutcomeSuccess, actorID, userID, m, map[string]string{"via": viaTokenRevoked})
	return nil
}

// DeleteUser removes a user the actor may manage and their personal data for
// good, after ending every session of theirs; audit events keep only their
// id.
func (s *Service) DeleteUser(ctx context.Context, actor Actor, id string) error {
	a, t, err := s.actorAndTarget(ctx, actor, id)
	if err != nil {
		return err
	}
	if err := s.endingSessions(ctx, t.ID, "deletion", func() error {
		if err := s.store.DeleteUser(ctx, t.ID); err != nil {
			return storeErr("delete user", err, errUserNotFound)
		}
		return nil
	}); err != nil {
		return err
	}
	s.record(ctx, "user.deleted", store.OutcomeSuccess, a.ID, t.ID, actor.Meta, nil)
	return nil
}

// GrantRole gives a user a role under the ceiling (policy.CanChangeRole;
// nobody changes their own roles). Granting a role the user holds is an
// idempotent success. The grant shows in the user's next refresh. Inside
// an organisation the role is held there (the user must be a member; a
// platform role is 400); with organisations on, on the whole instance only
// a platform role may be granted (the others are held in organisations).
func (s *Service) GrantRole(ctx context.Context, actor Actor, id, role string) (User, error) {
	sc, err := s.scopeOf(ctx, actor)
	if err != nil {
		return User{}, err
	}
	return s.grantIn(ctx, sc, actor, id, role, reachMember)
}

// grantIn is GrantRole in scope sc on the user target finds as r allows
// (reachMember: a member of sc's organisation; reachJoin when adding one).
// A token revoked before the role was written keeps no grant
// (madeWithLiveToken): the role is revoked again, only if this request
// granted it (a role held before stays), and the user's sessions end, as
// any removal of a role ends them: one that picked the role up in between
// loses it (role.revoked via token_revoked).
func (s *Service) grantIn(ctx context.Context, sc actorScope, actor Actor, id, role string, r reach) (User, error) {
	if err := outlivesNoKey(actor); err != nil {
		return User{}, err
	}
	if role == "" {
		return User{}, apierr.ErrInvalidRequest.WithDescription("A role is required.")
	}
	if err := s.roleFits(sc, role); err != nil {
		return User{}, err
	}
	t, err := s.target(ctx, sc, id, r)
	if err != nil {
		return User{}, err
	}
	if err := s.policy.CanChangeRole(subject(sc.actor), t.ceiling, role); err != nil {
		return User{}, ceilingErr(err)
	}
	if err := s.roleWithinToken(actor, sc.actor.Roles, role); err != nil {
		return User{}, err
	}
	var changed bool
	if sc.inTenant() {
		changed, err = s.store.GrantTenantRole(ctx, sc.tenant.ID, t.ID, role)
	} else {
		changed, err = s.store.GrantRole(ctx, t.ID, role)
	}
	if err != nil {
		return User{}, storeErr("grant role", err, errUserNotFound)
	}
	if changed {
		s.recordIn(ctx, sc, "role.granted", store.OutcomeSuccess, t.ID, actor.Meta, map[string]string{"role": role})
	}
	if err := s.madeWithLiveToken(ctx, actor, "a role", func(ctx context.Context) error {
		if !changed {
			return nil // held before: this request granted nothing
		}
		var err error
		if sc.inTenant() {
			_, err = s.store.RevokeTenantRole(ctx, sc.tenant.ID, t.ID, role)
		} else {
			_, err = s.store.RevokeRole(ctx, t.ID, role)
		}
		if err != nil {
			return fmt.Errorf("revoke role %s of %s: %w", role, t.ID, err)
		}
		s.recordIn(ctx, sc, "role.revoked", store.OutcomeSuccess, t.ID, actor.Meta, map[string]string{"role": role, "via": viaTokenRevoked})
		if err := s.sessions.EndUserSessions(ctx, t.ID); err != nil {
			return fmt.Errorf("end the sessions of %s: %w", t.ID, err)
		}
		return nil
	}); err != nil {
		return User{}, err
	}
	return s.viewIn(ctx, sc, t.ID)
}

// roleFits refuses a role that cannot be held where sc acts: a platform
// role inside an organisation, or (organisations on) any other role on the
// whole instance.
func (s *Service) roleFits(sc actorScope, role string) error {
	if s.tenancy == nil || !s.policy.HasRole(role) {
		return nil
	}
	platform := s.policy.IsPlatformRole(role)
	switch {
	case sc.inTenant() && platform:
		return errPlatformRoleInTenant
	case !sc.inTenant() && !platform:
		return errTenantRoleGlobally
	}
	return nil
}

// RevokeRole takes a role from a user under the ceiling; revoking a role the
// user lacks is an idempotent success. A removal ends every session of the
// user. A role the policy no longer defines may be removed by anyone who may
// manage the user. Inside an organisation it is the role held there.
func (s *Service) RevokeRole(ctx context.Context, actor Actor, id, role string) (User, error) {
	if role == "" {
		return User{}, apierr.ErrInvalidRequest.WithDescription("A role is required.")
	}
	sc, err := s.scopeOf(ctx, actor)
	if err != nil {
		return User{}, err
	}
	t, err := s.target(ctx, sc, id, reachMember)
	if err != nil {
		return User{}, err
	}
	if s.policy.HasRole(role) {
		err = s.policy.CanChangeRole(subject(sc.actor), t.ceiling, role)
	} else {
		err = s.policy.CanManage(subject(sc.actor), t.ceiling)
	}
	if err != nil {
		return User{}, ceilingErr(err)
	}
	var changed bool
	remove := func() error {
		if sc.inTenant() {
			changed, err = s.store.RevokeTenantRole(ctx, sc.tenant.ID, t.ID, role)
		} else {
			changed, err = s.store.RevokeRole(ctx, t.ID, role)
		}
		if err != nil {
			return storeErr("revoke role", err, errUserNotFound)
		}
		return nil
	}
	held := slices.Contains(t.Roles, role)
	if held {
		err = s.endingSessions(ctx, t.ID, "role removal", remove)
	} else {
		err = remove()
	}
	if err != nil {
		return User{}, err
	}
	if changed && !held { // granted meanwhile by another request, and removed here
		if err := s.sessions.EndUserSessions(ctx, t.ID); err != nil {
			s.log.Error("role removal: the role is removed but the sessions could not be ended", "user_id", t.ID, "err", err)
			return User{}, err
		}
	}
	if changed {
		s.recordIn(ctx, sc, "role.revoked", store.OutcomeSuccess, t.ID, actor.Meta, map[string]string{"role": role})
	}
	u, err := s.viewIn(ctx, sc, t.ID)
	if errors.Is(err, errUserNotFound) && sc.inTenant() {
		// The last role there is gone: no longer a member.
		t.Roles = []string{}
		return ViewUser(t.User), nil
	}
	return u, err
}

// RevokeSessions ends every session of a user the actor may manage and
// revokes every access token issued to them so far.
func (s *Service) RevokeSessions(ctx context.Context, actor Actor, id string) error {
	a, t, err := s.actorAndTarget(ctx, actor, id)
	if err != nil {
		return err
	}
	if err := s.sessions.EndUserSessions(ctx, t.ID); err != nil {
		return err
	}
	s.record(ctx, "session.ended", store.OutcomeSuccess, a.ID, t.ID, actor.Meta, map[string]string{"reason": "admin"})
	return nil
}

// endingSessions makes change, a change to an account that ends every
// session of it (a new password or second factors, a deactivation, a
// removed role, the account's deletion), with the sessions ended on both
// sides of it. Before: a change is never made while the sessions cannot be
// ended, so a store that fails leaves the old sessions dead or the account
// as it was (503, and the retry does it all: a reset link stays usable, a
// deactivation or role removal answered 503 is not "already done" with the
// sessions still alive), never a change beside sessions that nothing will
// end. After: a session started in between, with the old password or the
// old roles, or by a login that read the account before the change, ends
// too. The change is made once the first end has succeeded; a failure of
// the second is logged, not answered: every session from before the
// change has already ended, and only one started in the milliseconds
// between the first end and the write (by someone who still had the old
// password, say) can then survive.
func (s *Service) endingSessions(ctx context.Context, userID, what string, change func() error) error {
	if err := s.sessions.EndUserSessions(ctx, userID); err != nil {
		s.log.Error(what+": the sessions could not be ended, so nothing changed", "user_id", userID, "err", err)
		return err
	}
	if err := change(); err != nil {
		return err
	}
	if err := s.sessions.EndUserSessions(ctx, userID); err != nil {
		s.log.Error(what+": changed, but sessions started during the change may be left", "user_id", userID, "err", err)
	}
	return nil
}

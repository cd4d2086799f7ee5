package accounts

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/portcullis-auth/portcullis/keys"
	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/store"
)

// RequirePermission is the one check of an admin operation's permission,
// used by the /admin API (on the token's scope) and by the console (on the
// signed-in person's current permissions): nil when held covers perm, else
// 403 insufficient_scope naming it (RFC 6750 §3.1). Permissions are
// checked, never role names.
func RequirePermission(held []string, perm string) error {
	if policy.Matches(held, perm) {
		return nil
	}
	return apierr.ErrInsufficientScope.WithRequiredScope(perm).WithDescription("This needs the permission %s.", perm)
}

// passablePermissions is the one rule for what a write made by actor may
// give away: the scopes of a machine user's API key
// (CreateMachineAPIKey), the roles:assign that giving a new machine user
// roles needs (CreateUser), and a client's scopes, issuer audience and
// first-party status (withinClientCeiling, through loadClientActor). It
// is the concrete permissions of roles (the actor's current roles where
// they act, as scopeOf read them) and, for an actor acting with an access
// token, only those of them the token was granted too (its scope). So a
// session narrowed to named permissions (by the scope it asked for, or by
// its client's scopes: a provisioning script's token) never hands out
// more through what it creates than it holds itself, as a person's own
// key never holds more than the token making it (CreateOwnAPIKey). The
// route's permission (RequirePermission on the token's scope) says only
// that the token may make the write; without this, a token limited to
// users:write made a machine super_admin and gave it a key with
// keys:rotate. An actor without a token (the console's browser session)
// holds its current permissions; the operator is bound by none of it.
func (s *Service) passablePermissions(actor Actor, roles []string) []string {
	perms := s.policy.Permissions(roles)
	if !actor.withToken() {
		return perms
	}
	return slices.DeleteFunc(perms, func(p string) bool { return !policy.Matches(actor.Scope, p) })
}

// roleWithinToken is passablePermissions' rule for a role given away with
// an access token (a role grant or a new member's, an invite, a new
// machine user's roles): every permission of role that the actor's roles
// hold must be in the token's scope, else 403 insufficient_scope naming
// the first one missing. A super_admin's token narrowed to users:invite
// (an onboarding script's) would otherwise invite any address as
// super_admin, and one narrowed to roles:assign make anyone an admin.
// Permissions of role that the actor does not hold at all are the rank
// rule's (CanAssign, CanChangeRole), as before; without a token (the
// console) nothing more is asked.
func (s *Service) roleWithinToken(actor Actor, actorRoles []string, role string) error {
	if !actor.withToken() {
		return nil
	}
	held := s.policy.Permissions(actorRoles)
	passable := s.passablePermissions(actor, actorRoles)
	for _, p := range s.policy.Permissions([]string{role}) {
		if _, ok := slices.BinarySearch(held, p); !ok {
			continue
		}
		if err := RequirePermission(passable, p); err != nil {
			return err
		}
	}
	return nil
}

// ActorPermissions returns the concrete permissions of the actor's current
// roles, re-read from the store (a deleted actor is 401, a deactivated one
// 403): what a session that named no permission holds after a refresh.
func (s *Service) ActorPermissions(ctx context.Context, actor Actor) ([]string, error) {
	a, err := s.loadActor(ctx, actor)
	if err != nil {
		return nil, err
	}
	return s.policy.Permissions(a.Roles), nil
}

// KeyRevoker revokes a signing key (*keys.Manager implements it).
type KeyRevoker interface {
	Revoke(ctx context.Context, kid string) (keys.Revocation, error)
}

// RevokeKey revokes a compromised signing key (the console's emergency
// revoke, and the CLI's keys revoke as the operator): it leaves the JWKS
// and every token it signed is refused; revoking the active key promotes
// the next one at once. An unknown kid is 404; an organisation's token
// 403. Audit key.revoked, with the state the key was in and whether it was
// revoked already (a repeated revocation changes nothing), also when this
// instance could not reload the keys after it (keysChanged).
func (s *Service) RevokeKey(ctx context.Context, actor Actor, kid string) (keys.Revocation, error) {
	a, err := s.loadKeysActor(ctx, actor)
	if err != nil {
		return keys.Revocation{}, err
	}
	if s.revoker == nil {
		return keys.Revocation{}, apierr.ErrTemporarilyUnavailable.WithDescription("Revoking keys is not available here.")
	}
	rev, err := s.revoker.Revoke(ctx, kid)
	if err != nil && !errors.Is(err, keys.ErrReloadAfterCommit) {
		if errors.Is(err, keys.ErrKeyNotFound) || errors.Is(err, store.ErrNotFound) {
			return keys.Revocation{}, apierr.ErrNotFound.WithDescription("No signing key has this kid.").WithCause(err)
		}
		return keys.Revocation{}, storeErr("revoke signing key", err, nil)
	}
	return rev, s.keysChanged(ctx, a, actor, "key.revoked", rev.Revoked.KID,
		map[string]string{"via": a.via, "previous_state": string(rev.PreviousState),
			"already_revoked": fmt.Sprint(rev.AlreadyRevoked)},
		"The key was revoked", err)
}

// LoginThrottle forgets an account's failed logins (*ratelimit.Limiter).
type LoginThrottle interface {
	ClearLogin(ctx context.Context, login string) error
}

// ClearLoginThrottle forgets the failed logins of a user, so that a person
// locked out by the login throttle may try again at once (the "unban" of
// other servers). The actor must be allowed to manage the user (the
// privilege ceiling); without a throttle (rate limits off) there is
// nothing to clear. Audit login.throttle_cleared.
func (s *Service) ClearLoginThrottle(ctx context.Context, actor Actor, userID string) error {
	a, t, err := s.actorAndTarget(ctx, actor, userID)
	if err != nil {
		return err
	}
	if s.throttle != nil && t.Email != "" {
		if err := s.throttle.ClearLogin(ctx, t.Email); err != nil {
			return storeErr("clear the login throttle", err, nil)
		}
	}
	s.record(ctx, "login.throttle_cleared", store.OutcomeSuccess, a.ID, t.ID, actor.Meta, map[string]string{"via": "admin"})
	return nil
}

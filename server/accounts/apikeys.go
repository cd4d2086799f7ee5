package accounts

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/apikeys"
	"github.com/portcullis-auth/portcullis/store"
)

// Refusals of the machine-user and API key operations.
var (
	errAPIKeysUnavailable  = apierr.ErrTemporarilyUnavailable.WithDescription("API keys are not available on this server.")
	errKeyTokenManagesKeys = apierr.ErrForbidden.WithDescription(
		"A token obtained from an API key cannot create, list or revoke API keys: sign in as a person.")
	errNotMachine = apierr.ErrInvalidRequest.WithDescription(
		"Only machine users' API keys are managed here; people manage their own at /auth/api-keys.")
	errKeyTokenOutlivesKey = apierr.ErrForbidden.WithDescription(
		"A token obtained from an API key cannot make what would outlive the key (a client or its secret, a user, an invite, a temporary password, a role or membership, an account or organisation turned back on): sign in as a person.")
	errOwnMachineKeys    = apierr.ErrForbidden.WithDescription("You may not manage your own API keys through /admin.")
	errMachineNoPassword = apierr.ErrInvalidRequest.WithDescription(
		"A machine user has no password and no email: it signs in only with API keys.")
	errHumansAreInvited = apierr.ErrInvalidRequest.WithDescription(
		`Only machine users are created here ({"kind":"machine","name":…}); invite people with POST /admin/invites.`)
	errMachinesAreNotInvited = apierr.ErrInvalidRequest.WithDescription(
		"Machine users are not invited: create one with POST /admin/users {\"kind\":\"machine\",\"name\":…}.")
)

// NewUser is a user created by an admin: only machine users are (people are
// invited).
type NewUser struct {
	Kind  string
	Name  string
	Roles []string
}

// CreateUser creates a machine user: a name, no email and no password; it
// holds roles and uses only the API keys admins give it. Any other kind is
// 400 (people are invited). Giving it roles is a role grant and follows
// the rule of GrantRole (POST /admin/users/{id}/roles): the actor must
// hold roles:assign among what they may pass on (passablePermissions: in
// the token's scope for a token, else 403 insufficient_scope naming it,
// as the route answers), and be allowed to grant each role (the privilege
// ceiling's rank: CanAssign, which is CanChangeRole on a user holding
// nothing). The user and its roles are written in one transaction (inside
// an organisation: CreateUserInTenant), so a failure leaves no user.
// Audit user.created, then role.granted for each role given, as GrantRole
// records it. A token revoked before the user was written
// keeps none (madeWithLiveToken): the user is deleted (user.deleted via
// token_revoked).
func (s *Service) CreateUser(ctx context.Context, actor Actor, nu NewUser) (User, error) {
	if err := outlivesNoKey(actor); err != nil {
		return User{}, err
	}
	if nu.Kind != store.UserMachine {
		return User{}, errHumansAreInvited
	}
	name, err := normaliseName(nu.Name)
	if err != nil {
		return User{}, err
	}
	if name == "" {
		return User{}, apierr.ErrInvalidRequest.WithDescription("A name is required: it is how people tell machine users apart.")
	}
	sc, err := s.scopeOf(ctx, actor)
	if err != nil {
		return User{}, err
	}
	if sc.inTenant() && len(nu.Roles) == 0 {
		return User{}, apierr.ErrInvalidRequest.WithDescription("A machine user of an organisation needs a role there.")
	}
	if len(nu.Roles) > 0 {
		// Without this, a token limited to users:write gave a new machine
		// user roles, then the machine a key, that the token never held.
		if err := RequirePermission(s.passablePermissions(actor, sc.actor.Roles), policy.PermRolesAssign); err != nil {
			return User{}, err
		}
	}
	for _, role := range nu.Roles {
		if role == "" {
			return User{}, apierr.ErrInvalidRequest.WithDescription("A role name is empty.")
		}
		if err := s.roleFits(sc, role); err != nil {
			return User{}, err
		}
		if err := s.policy.CanAssign(sc.actor.Roles, role); err != nil {
			return User{}, ceilingErr(err)
		}
		if err := s.roleWithinToken(actor, sc.actor.Roles, role); err != nil {
			return User{}, err
		}
	}
	u := store.User{Kind: store.UserMachine, Name: name, Active: true, Roles: nu.Roles}
	if sc.inTenant() {
		// Its roles are held inside the organisation, written with the
		// user: a machine user of no organisation would be one its admin
		// can neither see nor delete.
		u.Roles = nil
		if err := s.store.CreateUserInTenant(ctx, &u, sc.tenant.ID, nu.Roles); err != nil {
			return User{}, storeErr("create the organisation's machine user", err, nil)
		}
		u.Roles = nu.Roles
	} else if err := s.store.CreateUser(ctx, &u); err != nil {
		return User{}, storeErr("create machine user", err, nil)
	}
	s.recordIn(ctx, sc, "user.created", store.OutcomeSuccess, u.ID, actor.Meta,
		map[string]string{"kind": store.UserMachine, "roles": strings.Join(u.Roles, " ")})
	for i, role := range u.Roles {
		if !slices.Contains(u.Roles[:i], role) {
			s.recordIn(ctx, sc, "role.granted", store.OutcomeSuccess, u.ID, actor.Meta, map[string]string{"role": role})
		}
	}
	if err := s.madeWithLiveToken(ctx, actor, "a user", func(ctx context.Context) error {
		if err := s.store.DeleteUser(ctx, u.ID); err != nil {
			return fmt.Errorf("delete user %s: %w", u.ID, err)
		}
		s.recordIn(ctx, sc, "user.deleted", store.OutcomeSuccess, u.ID, actor.Meta, map[string]string{"via": viaTokenRevoked})
		return nil
	}); err != nil {
		return User{}, err
	}
	return ViewUser(u), nil
}

// machineKeyOwner loads the actor and the machine user whose API keys they
// manage through /admin: refused for a token exchanged from an API key
// (403), a person (400: people manage their own keys), oneself (403), and
// unless the actor may grant every role the machine holds (the privilege
// ceiling's CanAssign, the rule of invites and role grants, over the roles
// of targetUser.ceiling; roles the policy no longer defines count for
// nothing).
func (s *Service) machineKeyOwner(ctx context.Context, actor Actor, userID string) (store.User, store.User, error) {
	if s.apiKeys == nil {
		return store.User{}, store.User{}, errAPIKeysUnavailable
	}
	if actor.APIKey != "" {
		return store.User{}, store.User{}, errKeyTokenManagesKeys
	}
	sc, err := s.scopeOf(ctx, actor)
	if err != nil {
		return store.User{}, store.User{}, err
	}
	a := sc.actor
	m, err := s.target(ctx, sc, userID, reachAccount)
	if err != nil {
		return store.User{}, store.User{}, err
	}
	if !m.IsMachine() {
		return store.User{}, store.User{}, errNotMachine
	}
	if a.ID == m.ID {
		return store.User{}, store.User{}, errOwnMachineKeys
	}
	for _, role := range m.ceiling.Roles {
		if !s.policy.HasRole(role) {
			continue
		}
		if err := s.policy.CanAssign(a.Roles, role); err != nil {
			return store.User{}, store.User{}, ceilingErr(fmt.Errorf("manage the API keys of a machine user holding %q: %w", role, err))
		}
	}
	return a, m.User, nil
}

// revokedOwnKeys completes the revocation of the user's keys a password
// reset revoked in its transaction (RedeemPasswordReset): revokedKeys,
// audited api_key.revoked by the user with details.via password_reset. A
// reset is the proof of who holds the mailbox, and a key made before it
// may be another's (an address registered by someone else, a password
// that leaked), as the sessions ended beside it may be.
func (s *Service) revokedOwnKeys(ctx context.Context, userID string, keys []store.APIKey, m Meta) {
	s.revokedKeys(ctx, "password reset", userID, keys,
		apikeys.Meta{ActorID: userID, IP: m.IP, UserAgent: m.UserAgent, ClientID: m.ClientID, Via: viaPasswordReset})
}

// revokedKeys completes the revocation of the user's keys that a change
// of their password (what) revoked in its own transaction (a reset's
// RedeemPasswordReset, a temporary password's UpdateUserRevokingKeys):
// each is audited api_key.revoked with km, and the tokens exchanged from
// them are revoked on every instance (apikeys.Service.Revoked). The
// transaction runs after the cut-off is written (endingSessions): a key
// being made meanwhile is then either revoked by it or refused by its
// creation's own re-check (keptIfTokenLive). The change is made by then,
// so this runs even when the request's context has ended, and a failure
// is logged, not answered: the keys are revoked, and the tokens exchanged
// from them carry the user's sub, which the change's cut-off revokes.
func (s *Service) revokedKeys(ctx context.Context, what, userID string, keys []store.APIKey, km apikeys.Meta) {
	if s.apiKeys == nil || len(keys) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), followUpTimeout)
	defer cancel()
	if err := s.apiKeys.Revoked(ctx, keys, km); err != nil {
		s.log.Error(what+": the API keys are revoked, but the tokens exchanged from them could not all be", "user_id", userID, "err", err)
	}
}

// followUpTimeout bounds what a committed change still does once its
// request may have gone (revokedKeys).
const followUpTimeout = 10 * time.Second

// keyMeta is the audit metadata of a key operation by actor.
func keyMeta(actor Actor, via string) apikeys.Meta {
	return apikeys.Meta{ActorID: actor.ID, IP: actor.IP, UserAgent: actor.UserAgent, ClientID: actor.ClientID, Via: via}
}

// CreateMachineAPIKey creates an API key for a machine user under the
// privilege ceiling (machineKeyOwner); the key is in the answer, once. Its
// scopes must be among the machine's permissions and among those the
// actor may pass on (passablePermissions: with a token, in its scope),
// else 400 invalid_scope, the own key's answer: a token narrowed to
// users:write makes no key with keys:rotate for a machine super_admin.
func (s *Service) CreateMachineAPIKey(ctx context.Context, actor Actor, userID string, req apikeys.CreateRequest) (apikeys.Created, error) {
	if err := s.keysActInNoTenant(actor); err != nil {
		return apikeys.Created{}, err
	}
	a, m, err := s.machineKeyOwner(ctx, actor, userID)
	if err != nil {
		return apikeys.Created{}, err
	}
	maker := apikeys.Token{Scope: s.passablePermissions(actor, a.Roles), ForPortcullis: s.forPortcullis(actor)}
	// A key acts in no organisation: its scopes are drawn from the machine
	// user's platform roles, as its use is (apikeys).
	created, err := s.apiKeys.Create(ctx, s.platform(m), maker, req, keyMeta(actor, "admin"))
	return s.keptIfTokenLive(ctx, actor, m.ID, created, err)
}

// keptIfTokenLive is the last step of every key's creation (own and
// machine): the key, just written, is kept and shown only if the access
// token that made it is still not revoked (madeWithLiveToken); else it is
// revoked (api_key.revoked via token_revoked), never shown, and the answer
// is the bearer check's own. A key this fails to revoke was never shown,
// so nobody holds it (it is logged).
func (s *Service) keptIfTokenLive(ctx context.Context, actor Actor, ownerID string, created apikeys.Created, err error) (apikeys.Created, error) {
	if err != nil {
		return created, err
	}
	if err := s.madeWithLiveToken(ctx, actor, "an API key", func(ctx context.Context) error {
		if err := s.apiKeys.Revoke(ctx, ownerID, created.ID, keyMeta(actor, viaTokenRevoked)); err != nil {
			return fmt.Errorf("revoke key %s of %s: %w", created.ID, ownerID, err)
		}
		return nil
	}); err != nil {
		return apikeys.Created{}, err
	}
	return created, nil
}

// viaTokenRevoked is the details.via (or reason) of the audit events of an
// undo by madeWithLiveToken: the token making the write was revoked before
// it was written.
const viaTokenRevoked = "token_revoked"

// outlivesNoKey is the first step of every write madeWithLiveToken guards
// (the admin API's writes that leave a credential or a privilege behind):
// a token exchanged from an API key makes none of them (403, before
// anything is written). What such a write leaves outlives the key: a
// client and its secret, a machine user, an invite, a temporary password,
// a role or membership, an account or organisation back on, none of which
// the key's revocation ends, so a leaked key would mint itself a
// successor. madeWithLiveToken refuses the same way after the write (and
// undoes it), should a write ever skip this step.
func outlivesNoKey(actor Actor) error {
	if actor.APIKey != "" {
		return errKeyTokenOutlivesKey
	}
	return nil
}

// madeWithLiveToken is the last step of every write a request makes with
// its access token that outlives the token's session: an API key
// (keptIfTokenLive), a second factor or recovery codes (keptFactor), and
// the admin API's writes that leave a credential or a privilege behind: a
// client (CreateClient), a client's secret (RotateClientSecret), a machine
// user (CreateUser), a role or an organisation's membership (grantIn), an
// invite (createInvite, before its email is sent), another account's
// temporary password (SetTemporaryPassword), an account or an
// organisation turned back on (UpdateUser, UpdateTenant). Once
// the write is done it reads the token's revocation again; while the token
// stands it returns nil and the write is kept. Else it undoes the write
// (undo, run even when the request is gone: its context cancelled) and
// returns the bearer check's own answer (401 invalid_token, or 503 when
// the revocation cannot be read: fail closed), and the caller shows
// nothing of what was written. The bearer check ran when the request's
// headers arrived and the body was read after it, so a request whose body
// is held back reaches the write after its session was ended (a password
// reset, "revoke sessions", an MFA reset, a deactivation), which without
// this made, with a dead token, a key or a factor that outlived the end
// of the session.
//
// Why no interleaving leaves the write live with a revoked token, for the
// ends of sessions that also remove what was written (a password reset
// revokes the keys in its redemption's transaction, RedeemPasswordReset,
// and a temporary password in its own, UpdateUserRevokingKeys; an MFA
// reset removes the factors and codes, ResetMFA): the end writes
// the user's cut-off (endingSessions) and only then revokes the keys or
// deletes the factors; the write is made
// and only then this reads the token's revocation. Each store is
// linearizable (one PostgreSQL or SQLite, one Redis or SQL token state),
// so if the end's removal missed the write, the removal began before the
// write was committed, hence the cut-off was written before the write
// was, and this read, which starts after the commit, sees the cut-off.
// Either the end removes it or this undoes it. For the ends that remove
// nothing (revoke sessions, a deactivation, a password reset for
// factors, any end for the admin API's writes), this read is what places
// the write before them: one whose token was revoked before it was written
// is undone, one written before the revocation was made before the end of
// the session, as any other. The admin's record is read after the body
// (loadActor), which refuses a demotion, a deactivation or a deletion;
// this refuses an end of the sessions that leaves the admin's roles. An
// undo that fails is logged: a key, a secret or a link it leaves was never
// shown; a role, a membership or a chosen password it leaves is named
// there for an admin to take back.
//
// An mfa_token's actor (MFATokenActor: the TOTP enrolment of a login that
// must enrol) has no access token but a login, its password step, which
// the user's cut-off ends as it ends a token (token.RecheckLogin): the
// mfa_token is not voided by a reset, so without this it enrolled, for its
// whole lifetime, a factor chosen by whoever had typed the old password.
// An actor with neither (the console's browser session, the operator) has
// nothing to re-read: the console reads its form before it finds the
// session, so no body can be held back past its check.
func (s *Service) madeWithLiveToken(ctx context.Context, actor Actor, what string, undo func(context.Context) error) error {
	refused := outlivesNoKey(actor)
	switch {
	case refused != nil:
	case actor.Bearer != nil:
		refused = s.sessions.RecheckBearer(ctx, *actor.Bearer)
	case actor.mfaEnrolment:
		refused = s.sessions.RecheckLogin(ctx, actor.ID, actor.loginAt)
	}
	if refused == nil {
		return nil
	}
	if err := undo(context.WithoutCancel(ctx)); err != nil {
		s.log.Error(what+" made with a token revoked meanwhile was not shown but could not be undone",
			"user_id", actor.ID, "err", err)
	}
	return refused
}

// ListMachineAPIKeys lists a machine user's API keys (never the keys) under
// the privilege ceiling (machineKeyOwner).
func (s *Service) ListMachineAPIKeys(ctx context.Context, actor Actor, userID, cursor string, limit int) (apikeys.Page, error) {
	_, m, err := s.machineKeyOwner(ctx, actor, userID)
	if err != nil {
		return apikeys.Page{}, err
	}
	return s.apiKeys.List(ctx, m.ID, cursor, limit)
}

// RevokeMachineAPIKey revokes a machine user's API key under the privilege
// ceiling (machineKeyOwner).
func (s *Service) RevokeMachineAPIKey(ctx context.Context, actor Actor, userID, keyID string) error {
	_, m, err := s.machineKeyOwner(ctx, actor, userID)
	if err != nil {
		return err
	}
	return s.apiKeys.Revoke(ctx, m.ID, keyID, keyMeta(actor, "admin"))
}

// keysActInNoTenant refuses (403) to create an API key with an
// organisation's token: a key acts in no organisation (its scope is bound
// by its owner's platform roles while organisations are on), so a key made
// with a tenant's permissions would claim what it can never use.
func (s *Service) keysActInNoTenant(actor Actor) error {
	if s.tenancy != nil && actor.Tenant != "" {
		return apierr.ErrForbidden.WithDescription("API keys act in no organisation: create them with a token that names none.")
	}
	return nil
}

// forPortcullis reports whether the actor acts for Portcullis's own
// audience, from which alone a key gets a permission of the admin API
// (apikeys.Token): a token whose aud holds the issuer, or no token at all
// (the console, Portcullis's own page).
func (s *Service) forPortcullis(actor Actor) bool {
	if !actor.withToken() {
		return true
	}
	return s.cfg.Issuer != "" && actor.Audience.Contains(s.cfg.Issuer)
}

// keySelf loads the person managing their own API keys: not with a token
// exchanged from an API key (403), nor a third-party application's token
// (loadSelf).
func (s *Service) keySelf(ctx context.Context, actor Actor) (store.User, error) {
	if s.apiKeys == nil {
		return store.User{}, errAPIKeysUnavailable
	}
	if actor.APIKey != "" {
		return store.User{}, errKeyTokenManagesKeys
	}
	return s.loadSelf(ctx, actor)
}

// CreateOwnAPIKey creates an API key for the actor themself, whose scopes
// must be among their current permissions and among the scope their token
// was granted (actor.Scope; apikeys.Service.Create), and hold no
// permission of the admin API unless the token's audience is Portcullis's
// own (the issuer), else 400 invalid_scope; the key is in the answer, once. A user who must change
// their password first gets 403 password_change_required. A token revoked
// before the key was written makes none (keptIfTokenLive).
func (s *Service) CreateOwnAPIKey(ctx context.Context, actor Actor, req apikeys.CreateRequest) (apikeys.Created, error) {
	u, err := s.keySelf(ctx, actor)
	if err != nil {
		return apikeys.Created{}, err
	}
	if u.MustChangePassword {
		return apikeys.Created{}, apierr.ErrPasswordChangeRequired.WithDescription("Change your password before creating API keys.")
	}
	if err := s.keysActInNoTenant(actor); err != nil {
		return apikeys.Created{}, err
	}
	tok := apikeys.Token{Scope: actor.Scope, ForPortcullis: s.forPortcullis(actor)}
	created, err := s.apiKeys.Create(ctx, u, tok, req, keyMeta(actor, "self"))
	return s.keptIfTokenLive(ctx, actor, u.ID, created, err)
}

// ListOwnAPIKeys lists the actor's own API keys (never the keys).
func (s *Service) ListOwnAPIKeys(ctx context.Context, actor Actor, cursor string, limit int) (apikeys.Page, error) {
	u, err := s.keySelf(ctx, actor)
	if err != nil {
		return apikeys.Page{}, err
	}
	return s.apiKeys.List(ctx, u.ID, cursor, limit)
}

// RevokeOwnAPIKey revokes one of the actor's own API keys.
func (s *Service) RevokeOwnAPIKey(ctx context.Context, actor Actor, keyID string) error {
	u, err := s.keySelf(ctx, actor)
	if err != nil {
		return err
	}
	return s.apiKeys.Revoke(ctx, u.ID, keyID, keyMeta(actor, "self"))
}

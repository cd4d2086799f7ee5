package accounts

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/tenancy"
	"github.com/portcullis-auth/portcullis/store"
)

// Answers of the organisation rules.
var (
	errNotInTenant = apierr.ErrForbidden.WithDescription(
		"Your account no longer holds a role in this token's organisation.")
	errTenantsOff = apierr.ErrForbidden.WithDescription(
		"This token belongs to an organisation, and organisations are off.")
	errPlatformOnly = apierr.ErrForbidden.WithDescription(
		"This is an operation of the whole instance; an organisation's token cannot do it.")
	errOutsideTenant = apierr.ErrForbidden.WithDescription(
		"This belongs to another organisation or to the whole instance.")
	errSharedAccount = apierr.ErrForbidden.WithDescription(
		"This account was not created by this organisation, also belongs to another one, or holds a role of the whole instance, so only a platform admin can change it.")
	errPlatformRoleInTenant = apierr.ErrInvalidRequest.WithDescription(
		"A platform role is held across the whole instance, never inside an organisation.")
	errTenantRoleGlobally = apierr.ErrInvalidRequest.WithDescription(
		"With organisations on, this role is held inside an organisation: grant it with POST /admin/tenants/{id}/members.")
	errTenantNotFound = apierr.ErrNotFound.WithDescription("No organisation has this id.")
)

// actorScope is where an admin operation acts: the whole instance (zero
// tenant) or one organisation. actor holds the roles the acting user has
// there (with organisations on: the tenant's roles, or the platform roles
// of a token naming no tenant).
type actorScope struct {
	actor  store.User
	tenant store.Tenant
	// byPlatform: a platform actor (a token naming no organisation) acts
	// on tenant through /admin/tenants/{id}/… (inTenantOf), not a token
	// of the organisation itself.
	byPlatform bool
}

// inTenant reports whether the scope is one organisation.
func (sc actorScope) inTenant() bool { return sc.tenant.ID != "" }

// scopeOf is the one rule of organisations for /admin: every admin
// operation learns from it who acts and where, and is confined to that.
// With organisations off, the actor acts on the whole instance with their
// stored roles, and a token naming a tenant acts nowhere (403). With them
// on, a token naming no tenant acts on the whole instance with the actor's
// platform roles only; a token naming a tenant acts inside it with the
// roles held there, and holding none any more is 403 at once (not at the
// token's expiry).
func (s *Service) scopeOf(ctx context.Context, actor Actor) (actorScope, error) {
	u, err := s.loadActorRecord(ctx, actor)
	if err != nil {
		return actorScope{}, err
	}
	if s.tenancy == nil {
		if actor.Tenant != "" {
			return actorScope{}, errTenantsOff
		}
		return actorScope{actor: u}, nil
	}
	u, t, err := s.tenancy.ForLogin(ctx, u, actor.Tenant)
	switch {
	case errors.Is(err, tenancy.ErrRefused):
		return actorScope{}, errNotInTenant
	case err != nil:
		return actorScope{}, storeErr("load the actor's organisation", err, nil)
	}
	return actorScope{actor: u, tenant: t}, nil
}

// platformOnly refuses (403) an operation of the whole instance (signing
// keys, creating organisations) to a scope inside an organisation.
func (sc actorScope) platformOnly() error {
	if sc.inTenant() {
		return errPlatformOnly
	}
	return nil
}

// reach is what an operation does to the user it names, which decides
// whom target lets it name.
type reach int

const (
	// reachMember reads the user or changes their roles where the scope
	// acts: inside an organisation, only a member.
	reachMember reach = iota
	// reachAccount changes or reveals the account itself (its password,
	// sessions, factors, keys, consents, identities, active state,
	// existence): inside an organisation, only the organisation's own
	// account (ownAccount; else 403).
	reachAccount
	// reachJoin gives the user a role in the organisation whether or not
	// they are a member (AddTenantMember by id). A platform actor acting
	// on the organisation may name any user of the instance. The
	// organisation's own token names only its members (to give one
	// another role): anyone else answers as an unknown id does, so the
	// answer tells nothing of accounts outside, and an outsider joins only
	// through an emailed invite, which takes their password.
	reachJoin
)

// targetUser is the user an admin operation acts on, as target loads them.
type targetUser struct {
	// User is the account; its Roles are those held where the operation
	// acts: what views show, and what their API keys' scopes follow.
	store.User
	// ceiling is the user as the privilege ceiling sees them, the one
	// thing every check on a target compares. Inside an organisation: the
	// roles held there. On the whole instance with organisations on:
	// every role held anywhere, globally and in every organisation, so an
	// operation on the whole account (its password, sessions, factors,
	// active state, existence, keys, platform roles) is refused unless the
	// actor stands above the highest of them; the actor there holds only
	// platform roles, and a policy may put a platform role below a tenant
	// role.
	ceiling policy.Subject
}

// target loads the user an operation in scope sc acts on, as r allows
// (see reach); unknown is 404. In an organisation, a user the scope may
// not name is 404 as well (nothing tells the tenant admin the account
// exists), and their Roles are the ones they hold there (none for a user
// a platform actor is adding).
func (s *Service) target(ctx context.Context, sc actorScope, id string, r reach) (targetUser, error) {
	if id == "" || len(id) > maxIDLen {
		return targetUser{}, errUserNotFound
	}
	u, err := s.store.GetUser(ctx, id)
	if err != nil {
		return targetUser{}, storeErr("load user", err, errUserNotFound)
	}
	u.PasswordHash = ""
	if !sc.inTenant() {
		return s.wholeAccount(ctx, u)
	}
	global := u.Roles
	if u.Roles, err = s.store.TenantRoles(ctx, sc.tenant.ID, u.ID); err != nil {
		return targetUser{}, storeErr("load the user's roles in the organisation", err, nil)
	}
	t := targetUser{User: u, ceiling: subject(u)}
	switch {
	case len(u.Roles) == 0 && r == reachJoin && sc.byPlatform:
		return t, nil
	case len(u.Roles) == 0:
		return targetUser{}, errUserNotFound
	case r != reachAccount:
		return t, nil
	}
	if err := s.ownAccount(ctx, sc.tenant.ID, u.ID, global); err != nil {
		return targetUser{}, err
	}
	return t, nil
}

// ownAccount is the one rule of which accounts an organisation may change
// as a whole (target's reachAccount inside it): only its own, an account
// it created (an invite of it that made the account, or a machine user it
// made: store.Tenants.UserHomeTenant, a mark written with the account and
// never moved) that belongs to no other organisation and holds no global
// role of any kind (global: the user's stored roles). Anyone else is 403
// errSharedAccount: a person who registered, was invited by the platform
// or by another organisation, or made their account otherwise, and then
// joined with their own password, keeps their account, which is the same
// account (the same sub) at every relying party; so does one of the
// organisation's accounts once it also joined another, or was given a
// role of the whole instance. A tenant's admin still reads such a member,
// changes their roles there and removes them (reachMember).
func (s *Service) ownAccount(ctx context.Context, tenantID, userID string, global []string) error {
	if len(global) > 0 {
		return errSharedAccount
	}
	home, err := s.store.UserHomeTenant(ctx, userID)
	if err != nil {
		return storeErr("load the user's organisation", err, errUserNotFound)
	}
	if home != tenantID {
		return errSharedAccount
	}
	ids, err := s.store.UserTenantIDs(ctx, userID)
	if err != nil {
		return storeErr("load the user's organisations", err, nil)
	}
	if !slices.Equal(ids, []string{tenantID}) {
		return errSharedAccount
	}
	return nil
}

// wholeAccount is target's user on the whole instance: their global roles,
// and for the ceiling, with organisations on, every role they hold in an
// organisation too (with them off those roles grant nothing).
func (s *Service) wholeAccount(ctx context.Context, u store.User) (targetUser, error) {
	t := targetUser{User: u, ceiling: subject(u)}
	if s.tenancy == nil {
		return t, nil
	}
	inTenants, err := s.store.UserTenantRoles(ctx, u.ID)
	if err != nil {
		return targetUser{}, storeErr("load the user's roles in organisations", err, nil)
	}
	roles := slices.Concat(u.Roles, inTenants)
	slices.Sort(roles)
	t.ceiling.Roles = slices.Compact(roles)
	return t, nil
}

// accountAs loads, for a read by actor that reveals the account itself
// (sessions, consents, identities), the user in the actor's scope (target
// with reachAccount).
func (s *Service) accountAs(ctx context.Context, actor Actor, id string) (store.User, error) {
	sc, err := s.scopeOf(ctx, actor)
	if err != nil {
		return store.User{}, err
	}
	t, err := s.target(ctx, sc, id, reachAccount)
	return t.User, err
}

// tenantFor returns the organisation an operation in scope sc names by id
// (the /admin/tenants/{id}/… routes): inside an organisation only its own
// (another is 403); on the whole instance any existing one (unknown 404).
func (s *Service) tenantFor(ctx context.Context, sc actorScope, id string) (store.Tenant, error) {
	if sc.inTenant() {
		if id != sc.tenant.ID {
			return store.Tenant{}, errOutsideTenant
		}
		return sc.tenant, nil
	}
	if id == "" || len(id) > maxIDLen {
		return store.Tenant{}, errTenantNotFound
	}
	t, err := s.store.GetTenant(ctx, id)
	if err != nil {
		return store.Tenant{}, storeErr("load organisation", err, errTenantNotFound)
	}
	return t, nil
}

// inTenantOf scopes sc to organisation t (tenantFor's answer) for an
// operation on it; a scope of the whole instance becomes a platform
// actor's on t (byPlatform), and the ceiling there compares their
// platform roles with the roles held in t.
func (sc actorScope) inTenantOf(t store.Tenant) actorScope {
	if !sc.inTenant() {
		sc.byPlatform = true
	}
	sc.tenant = t
	return sc
}

// ownsRecord refuses (403 for a record of the whole instance, 404 for
// another organisation's) a record (client, invite) whose tenant is
// recordTenant to a scope inside an organisation; the whole instance owns
// every record.
func (sc actorScope) ownsRecord(recordTenant string, notFound error) error {
	switch {
	case !sc.inTenant() || recordTenant == sc.tenant.ID:
		return nil
	case recordTenant == "":
		return errOutsideTenant
	}
	return notFound
}

// Tenant is an organisation as the API shows it.
type Tenant struct {
	ID     string `json:"id"`
	Slug   string `json:"slug"`
	Name   string `json:"name"`
	Active bool   `json:"active"`
}

func viewTenant(t store.Tenant) Tenant {
	return Tenant{ID: t.ID, Slug: t.Slug, Name: t.Name, Active: t.Active}
}

// Member is a member of an organisation as the API shows it.
type Member struct {
	UserID string   `json:"user_id"`
	Email  string   `json:"email"`
	Roles  []string `json:"roles"`
}

// errTenantsDisabled answers the organisation routes while they are off.
var errTenantsDisabled = apierr.ErrNotFound.WithDescription("Organisations are off (PORTCULLIS_TENANTS).")

// tenantScope is scopeOf for the organisation operations, which exist only
// while organisations are on (else 404).
func (s *Service) tenantScope(ctx context.Context, actor Actor) (actorScope, error) {
	if s.tenancy == nil {
		return actorScope{}, errTenantsDisabled
	}
	return s.scopeOf(ctx, actor)
}

// CreateTenant creates an active organisation: an operation of the whole
// instance (403 to an organisation's token). The slug is its tokens'
// `tenant` claim: 1 to 63 of a-z 0-9 and '-' (400 otherwise); a taken slug
// is 409. Audit tenant.created.
func (s *Service) CreateTenant(ctx context.Context, actor Actor, slug, name string) (Tenant, error) {
	sc, err := s.tenantScope(ctx, actor)
	if err != nil {
		return Tenant{}, err
	}
	if err := sc.platformOnly(); err != nil {
		return Tenant{}, err
	}
	if !tenancy.ValidSlug(slug) {
		return Tenant{}, apierr.ErrInvalidRequest.WithDescription(
			"The slug must be 1 to %d lower-case letters, digits and hyphens, starting and ending with a letter or digit.", tenancy.MaxSlugLen)
	}
	if name, err = normaliseName(name); err != nil {
		return Tenant{}, err
	}
	if name == "" {
		return Tenant{}, apierr.ErrInvalidRequest.WithDescription("A name is required.")
	}
	t := store.Tenant{Slug: slug, Name: name, Active: true}
	if err := s.store.CreateTenant(ctx, &t); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			return Tenant{}, apierr.ErrConflict.WithDescription("An organisation with this slug already exists.")
		}
		return Tenant{}, storeErr("create organisation", err, nil)
	}
	s.recordIn(ctx, sc.inTenantOf(t), "tenant.created", store.OutcomeSuccess, t.ID, actor.Meta, map[string]string{"slug": t.Slug})
	return viewTenant(t), nil
}

// ListTenants returns one page of organisations, oldest first: all of
// them on the whole instance, only its own to an organisation's token.
func (s *Service) ListTenants(ctx context.Context, actor Actor, cursor string, limit int) (Page[Tenant], error) {
	sc, err := s.tenantScope(ctx, actor)
	if err != nil {
		return Page[Tenant]{}, err
	}
	if sc.inTenant() {
		return Page[Tenant]{Items: []Tenant{viewTenant(sc.tenant)}}, nil
	}
	page, err := s.store.ListTenants(ctx, cursor, limit)
	if err != nil {
		return Page[Tenant]{}, listErr("list organisations", err)
	}
	out := Page[Tenant]{Items: make([]Tenant, 0, len(page.Items)), NextCursor: page.NextCursor}
	for _, t := range page.Items {
		out.Items = append(out.Items, viewTenant(t))
	}
	return out, nil
}

// TenantMembers returns one page of an organisation's members with their
// roles there (tenantFor: only one's own organisation inside one).
func (s *Service) TenantMembers(ctx context.Context, actor Actor, tenantID, cursor string, limit int) (Page[Member], error) {
	sc, err := s.tenantScope(ctx, actor)
	if err != nil {
		return Page[Member]{}, err
	}
	t, err := s.tenantFor(ctx, sc, tenantID)
	if err != nil {
		return Page[Member]{}, err
	}
	page, err := s.store.ListTenantMembers(ctx, t.ID, cursor, limit)
	if err != nil {
		return Page[Member]{}, listErr("list members", err)
	}
	out := Page[Member]{Items: make([]Member, 0, len(page.Items)), NextCursor: page.NextCursor}
	for _, m := range page.Items {
		out.Items = append(out.Items, Member{UserID: m.UserID, Email: m.Email, Roles: m.Roles})
	}
	return out, nil
}

// AddTenantMember gives an existing user, by id, a role in the
// organisation, under the privilege ceiling there (as GrantRole); the
// answer is the member. A platform actor may name any user of the
// instance; the organisation's own token only its members (reachJoin:
// anyone else is 404, as an unknown id; outsiders are invited with
// InviteTenantMember). A platform role is 400. A token revoked before the
// role was written adds no member (grantIn takes back what it granted).
func (s *Service) AddTenantMember(ctx context.Context, actor Actor, tenantID, userID, role string) (Member, error) {
	sc, err := s.tenantScope(ctx, actor)
	if err != nil {
		return Member{}, err
	}
	t, err := s.tenantFor(ctx, sc, tenantID)
	if err != nil {
		return Member{}, err
	}
	u, err := s.grantIn(ctx, sc.inTenantOf(t), actor, userID, role, reachJoin)
	if err != nil {
		return Member{}, err
	}
	return Member{UserID: u.ID, Email: u.Email, Roles: u.Roles}, nil
}

// InviteTenantMember invites an email address to the organisation with a
// role (CreateInvite's rules, the role held there once accepted).
func (s *Service) InviteTenantMember(ctx context.Context, actor Actor, tenantID, email, role string) (Invite, error) {
	sc, err := s.tenantScope(ctx, actor)
	if err != nil {
		return Invite{}, err
	}
	t, err := s.tenantFor(ctx, sc, tenantID)
	if err != nil {
		return Invite{}, err
	}
	return s.createInvite(ctx, sc.inTenantOf(t), actor, store.UserHuman, email, role)
}

// RemoveTenantMember takes every role in the organisation from a member
// the actor may manage there (the privilege ceiling; never oneself) and
// ends every session of the user, as a role removal does: their next
// refresh in the organisation fails. The token state ends all of a user's
// sessions, not one organisation's, so this signs the person out of their
// other organisations too; only a member (someone who joined) can be
// named. Not a member is 404. Audit tenant.member_removed.
func (s *Service) RemoveTenantMember(ctx context.Context, actor Actor, tenantID, userID string) error {
	sc, err := s.tenantScope(ctx, actor)
	if err != nil {
		return err
	}
	t, err := s.tenantFor(ctx, sc, tenantID)
	if err != nil {
		return err
	}
	sc = sc.inTenantOf(t)
	m, err := s.target(ctx, sc, userID, reachMember)
	if err != nil {
		return err
	}
	if err := s.policy.CanManage(subject(sc.actor), m.ceiling); err != nil {
		return ceilingErr(err)
	}
	var removed bool
	if err := s.endingSessions(ctx, m.ID, "member removal", func() error {
		if removed, err = s.store.RemoveTenantMember(ctx, t.ID, m.ID); err != nil {
			return storeErr("remove member", err, errUserNotFound)
		}
		return nil
	}); err != nil {
		return err
	}
	if !removed {
		return nil
	}
	s.recordIn(ctx, sc, "tenant.member_removed", store.OutcomeSuccess, m.ID, actor.Meta,
		map[string]string{"roles": strings.Join(m.Roles, " ")})
	return nil
}

// TenantChange is what UpdateTenant changes: a nil field stays.
type TenantChange struct {
	Name   *string `json:"name"`
	Active *bool   `json:"active"`
}

// UpdateTenant renames an organisation or turns it off and on: an operation
// of the whole instance (403 to an organisation's token; an unknown id is
// 404). Its slug, the `tenant` claim of its tokens, never changes. An
// inactive organisation refuses new logins into it, its members' next
// refresh and its clients' client_credentials grants at once, on every
// instance (they read the organisation from the database); access tokens
// already issued stay valid until they expire. Audit tenant.updated with
// what changed.
func (s *Service) UpdateTenant(ctx context.Context, actor Actor, id string, ch TenantChange) (Tenant, error) {
	sc, err := s.tenantScope(ctx, actor)
	if err != nil {
		return Tenant{}, err
	}
	if err := sc.platformOnly(); err != nil {
		return Tenant{}, err
	}
	if ch.Name == nil && ch.Active == nil {
		return Tenant{}, apierr.ErrInvalidRequest.WithDescription("Nothing to change: send name, active or both.")
	}
	if ch.Active != nil && *ch.Active {
		if err := outlivesNoKey(actor); err != nil {
			return Tenant{}, err
		}
	}
	t, err := s.tenantFor(ctx, sc, id)
	if err != nil {
		return Tenant{}, err
	}
	details := map[string]string{"slug": t.Slug}
	var name string
	if ch.Name != nil {
		if name, err = normaliseName(*ch.Name); err != nil {
			return Tenant{}, err
		}
		if name == "" {
			return Tenant{}, apierr.ErrInvalidRequest.WithDescription("A name is required.")
		}
		details["name"] = name
	}
	if ch.Active != nil {
		details["active"] = strconv.FormatBool(*ch.Active)
	}
	// Only the fields sent change, on the row as the store locked it: a
	// rename racing a deactivation never writes the old flag back.
	var wasActive bool
	t, err = s.store.UpdateTenant(ctx, t.ID, func(cur *store.Tenant) error {
		wasActive = cur.Active
		if ch.Name != nil {
			cur.Name = name
		}
		if ch.Active != nil {
			cur.Active = *ch.Active
		}
		return nil
	})
	if err != nil {
		return Tenant{}, storeErr("update organisation", err, errTenantNotFound)
	}
	s.recordIn(ctx, sc.inTenantOf(t), "tenant.updated", store.OutcomeSuccess, t.ID, actor.Meta, details)
	if ch.Active != nil && *ch.Active {
		// Turning an organisation back on gives its members and clients
		// their access there again: a token revoked meanwhile keeps none
		// of it (madeWithLiveToken), and the organisation is off again.
		if err := s.madeWithLiveToken(ctx, actor, "an organisation's reactivation", func(ctx context.Context) error {
			if wasActive {
				return nil // on before: this request turned nothing on
			}
			off, err := s.store.UpdateTenant(ctx, t.ID, func(cur *store.Tenant) error {
				cur.Active = false
				return nil
			})
			if err != nil {
				return fmt.Errorf("deactivate organisation %s again: %w", t.ID, err)
			}
			s.recordIn(ctx, sc.inTenantOf(off), "tenant.updated", store.OutcomeSuccess, off.ID, actor.Meta,
				map[string]string{"slug": off.Slug, "active": "false", "via": viaTokenRevoked})
			return nil
		}); err != nil {
			return Tenant{}, err
		}
	}
	return viewTenant(t), nil
}

// EnsureDefaultTenant runs the one-time move of today's role assignments
// into the organisation `default` when organisations are on (idempotent;
// the platform roles stay global). It reports whether this call moved them.
func (s *Service) EnsureDefaultTenant(ctx context.Context) (bool, error) {
	if s.tenancy == nil {
		return false, nil
	}
	moved, err := s.store.EnsureDefaultTenant(ctx, "Default", s.policy.PlatformRoles())
	if err != nil {
		return false, fmt.Errorf("move role assignments into the default organisation: %w", err)
	}
	if moved {
		s.record(ctx, "tenant.created", store.OutcomeSuccess, OperatorActorID, store.DefaultTenantSlug, Meta{},
			map[string]string{"slug": store.DefaultTenantSlug, "reason": "organisations turned on: existing role assignments moved in"})
	}
	return moved, nil
}

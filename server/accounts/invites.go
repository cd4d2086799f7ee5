package accounts

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/mfa"
	"github.com/portcullis-auth/portcullis/server/passcheck"
	"github.com/portcullis-auth/portcullis/server/ratelimit"
	"github.com/portcullis-auth/portcullis/server/tenancy"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// CreateInvite invites email to join with role: the role must be under the
// actor's privilege ceiling (their current roles), and no account may exist
// for the address. The invite link {PUBLIC_URL}/invite?token=… is emailed;
// a newer invite for the same address supersedes older ones, which cancels
// them: the actor must be allowed to revoke each (mayRevokeInvite), else
// 403 and nothing changes (the pending invite stays valid). They are
// cancelled only once the new email went out: when it cannot be sent the
// new invite is revoked at once, the pending ones stay valid, and the
// answer is 503, so an invite nobody received never stays pending nor
// kills the one that was received. A token revoked before the invite was
// written sends none (createInvite).
func (s *Service) CreateInvite(ctx context.Context, actor Actor, email, role string) (Invite, error) {
	return s.CreateInviteOfKind(ctx, actor, store.UserHuman, email, role)
}

// CreateInviteOfKind is CreateInvite for POST /admin/invites, whose body may
// name the kind of account: only people are invited (a machine user is
// created with CreateUser), so any kind but human ("" too) is 400.
// Inside an organisation the invite is to it: the role is held there once
// accepted.
func (s *Service) CreateInviteOfKind(ctx context.Context, actor Actor, kind, email, role string) (Invite, error) {
	sc, err := s.scopeOf(ctx, actor)
	if err != nil {
		return Invite{}, err
	}
	return s.createInvite(ctx, sc, actor, kind, email, role)
}

// createInvite is CreateInviteOfKind in scope sc. The invite is written,
// then the token re-read (madeWithLiveToken), and only then is the email
// sent: the link is a grant of the role to whoever holds it, so a token
// revoked before the invite was written must not get it out. The invite is
// then revoked before anyone could have received its link, the answer is
// 401, and invite.created is recorded as failed (reason token_revoked);
// the pending invites it was to replace stay valid.
//
// The pending invites it replaces (those the actor was allowed to cancel
// when it was written) are superseded once its email went out. Should that
// fail, the answer is 503 saying so: the new invite was sent and works,
// and the earlier ones still work until revoked or expired (an invite
// again supersedes them all).
func (s *Service) createInvite(ctx context.Context, sc actorScope, actor Actor, kind, email, role string) (Invite, error) {
	if err := outlivesNoKey(actor); err != nil {
		return Invite{}, err
	}
	m := actor.Meta
	if kind != "" && kind != store.UserHuman {
		return Invite{}, errMachinesAreNotInvited
	}
	email, err := normaliseEmail(email)
	if err != nil {
		return Invite{}, err
	}
	if role == "" {
		return Invite{}, apierr.ErrInvalidRequest.WithDescription("A role is required.")
	}
	if err := s.roleFits(sc, role); err != nil {
		return Invite{}, err
	}
	a := sc.actor
	if err := s.mayInvite(a.Roles, role); err != nil {
		return Invite{}, err
	}
	if err := s.roleWithinToken(actor, a.Roles, role); err != nil {
		return Invite{}, err
	}
	// Inside an organisation an address with an account is invited too
	// (accepting proves the account's password): a 409 there would tell
	// one organisation's admin who has an account elsewhere. Only the
	// email, to that address, says so (accepting adds the account).
	existing, err := s.hasAccount(ctx, email)
	if err != nil {
		return Invite{}, err
	}
	if existing && !sc.inTenant() {
		return Invite{}, errAccountExists
	}
	// Each invite replaces the pending one and sends a fresh email: an
	// admin (an organisation's too) could otherwise flood any inbox.
	// Counted per organisation (the platform's apart): one organisation's
	// invites never hold back another's, nor tell its admins that someone
	// else invited the address.
	if err := s.limitMail(ctx, limitInviteMail, sc.tenant.ID+" "+email); err != nil {
		return Invite{}, err
	}
	secret, err := newSecret()
	if err != nil {
		return Invite{}, internal("invite token", err)
	}
	inv := store.Invite{Email: email, Role: role, TokenHash: hashSecret(secret), InvitedBy: a.ID,
		ExpiresAt: s.now().Add(s.cfg.InviteTTL), TenantID: sc.tenant.ID}
	// Checked inside the store's transaction, on the pending invites the
	// new one is to supersede once sent (supersedeReplaced), so a pending
	// invite created meanwhile is either checked or left alone.
	var replaced []store.Invite
	err = s.store.CreateInvite(ctx, &inv, func(pending []store.Invite) error {
		replaced = pending
		for _, p := range pending {
			if err := s.mayReplaceInvite(a, p); err != nil {
				return err
			}
		}
		return nil
	})
	var refusal *apierr.Error
	if errors.As(err, &refusal) {
		s.recordIn(ctx, sc, "invite.created", store.OutcomeFailure, "", m,
			map[string]string{"role": role, "reason": "pending_invite_not_revocable"})
		return Invite{}, refusal
	}
	if err != nil {
		return Invite{}, storeErr("create invite", err, nil)
	}
	if err := s.madeWithLiveToken(ctx, actor, "an invite", func(ctx context.Context) error {
		if err := s.store.RevokeInvite(ctx, inv.ID); err != nil {
			return fmt.Errorf("revoke invite %s: %w", inv.ID, err)
		}
		return nil
	}); err != nil {
		s.recordIn(ctx, sc, "invite.created", store.OutcomeFailure, inv.ID, m,
			map[string]string{"role": role, "reason": viaTokenRevoked})
		return Invite{}, err
	}
	if err := s.sendInvite(ctx, sc.tenant, existing, email, inviteToken(inv.ID, secret), role); err != nil {
		s.log.Error("invite email not sent; revoking the invite", "invite_id", inv.ID, "err", err)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), mailTimeout)
		defer cancel()
		if rerr := s.store.RevokeInvite(rctx, inv.ID); rerr != nil {
			s.log.Error("revoke unsent invite", "invite_id", inv.ID, "err", rerr)
		}
		s.recordIn(ctx, sc, "invite.created", store.OutcomeFailure, inv.ID, m,
			map[string]string{"role": role, "reason": "email_not_sent"})
		return Invite{}, apierr.ErrTemporarilyUnavailable.WithDescription(
			"The invitation email could not be sent, so no invite was created. Try again later.").WithCause(err)
	}
	s.recordIn(ctx, sc, "invite.created", store.OutcomeSuccess, inv.ID, m, map[string]string{"role": role})
	if err := s.supersedeReplaced(ctx, sc, m, inv, replaced); err != nil {
		return Invite{}, err
	}
	return viewInvite(inv, s.now()), nil
}

// supersedeReplaced cancels, once inv's email went out, the pending
// invites createInvite showed mayReplaceInvite for inv (SupersedeInvites:
// one accepted or revoked meanwhile is left as it is), and records each as
// revoked (reason replaced). When the store fails the answer is 503 saying
// what happened: inv was sent and works, the earlier invites too.
func (s *Service) supersedeReplaced(ctx context.Context, sc actorScope, m Meta, inv store.Invite, replaced []store.Invite) error {
	if len(replaced) == 0 {
		return nil
	}
	ids := make([]string, 0, len(replaced))
	for _, p := range replaced {
		ids = append(ids, p.ID)
	}
	superseded, err := s.store.SupersedeInvites(ctx, inv, ids)
	if err != nil {
		s.log.Error("invite sent, but the pending invites it replaces were not cancelled", "invite_id", inv.ID, "err", err)
		return apierr.ErrTemporarilyUnavailable.WithDescription(
			"The invitation was sent, but the earlier pending invitation for this address could not be cancelled, so it still works: " +
				"revoke it, or invite again later.").WithCause(err)
	}
	for _, p := range superseded {
		s.recordIn(ctx, sc, "invite.revoked", store.OutcomeSuccess, p.ID, m,
			map[string]string{"role": p.Role, "reason": "replaced", "replaced_by": inv.ID})
	}
	return nil
}

// hasAccount reports whether an account has the address email.
func (s *Service) hasAccount(ctx context.Context, email string) (bool, error) {
	_, err := s.store.GetUserByEmail(ctx, email)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	}
	return false, storeErr("look up email", err, nil)
}

// ListInvites returns one page of the invites of the whole instance,
// newest first. The admin API lists with ListInvitesAs.
func (s *Service) ListInvites(ctx context.Context, cursor string, limit int) (Page[Invite], error) {
	return s.invitePage(s.store.ListInvites(ctx, cursor, limit))
}

// ListInvitesAs is ListInvites for actor: inside an organisation only its
// invites.
func (s *Service) ListInvitesAs(ctx context.Context, actor Actor, cursor string, limit int) (Page[Invite], error) {
	sc, err := s.scopeOf(ctx, actor)
	if err != nil {
		return Page[Invite]{}, err
	}
	if !sc.inTenant() {
		return s.ListInvites(ctx, cursor, limit)
	}
	return s.invitePage(s.store.ListTenantInvites(ctx, sc.tenant.ID, cursor, limit))
}

func (s *Service) invitePage(page store.Page[store.Invite], err error) (Page[Invite], error) {
	if err != nil {
		return Page[Invite]{}, listErr("list invites", err)
	}
	now := s.now()
	out := Page[Invite]{Items: make([]Invite, 0, len(page.Items)), NextCursor: page.NextCursor}
	for _, inv := range page.Items {
		out.Items = append(out.Items, viewInvite(inv, now))
	}
	return out, nil
}

// RevokeInvite revokes a pending invite whose role is under the actor's
// ceiling. Revoking a revoked invite again is not an error; an accepted or
// superseded invite is 409.
func (s *Service) RevokeInvite(ctx context.Context, actor Actor, id string) (Invite, error) {
	sc, err := s.scopeOf(ctx, actor)
	if err != nil {
		return Invite{}, err
	}
	a := sc.actor
	inv, err := s.getInvite(ctx, id)
	if err != nil {
		return Invite{}, err
	}
	if err := sc.ownsRecord(inv.TenantID, errInviteNotFound); err != nil {
		return Invite{}, err
	}
	if err := s.mayRevokeInvite(a, inv); err != nil {
		return Invite{}, err
	}
	if err := s.store.RevokeInvite(ctx, id); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return Invite{}, apierr.ErrConflict.WithDescription("The invite was already accepted or replaced by a newer one.")
		}
		return Invite{}, storeErr("revoke invite", err, errInviteNotFound)
	}
	if inv.Status == store.InvitePending {
		s.record(ctx, "invite.revoked", store.OutcomeSuccess, a.ID, inv.ID, actor.Meta, map[string]string{"role": inv.Role})
	}
	inv, err = s.getInvite(ctx, id)
	if err != nil {
		return Invite{}, err
	}
	return viewInvite(inv, s.now()), nil
}

// mayInvite is the one rule of who may invite to a role, checked when the
// invite is made and again whenever it is used (inviterStands), and for
// cancelling one (mayRevokeInvite): the role must be under the privilege
// ceiling of roles (the actor's where they act), as if granting it. A
// refusal is 403, a role the policy lacks 400.
func (s *Service) mayInvite(roles []string, role string) error {
	if err := s.policy.CanAssign(roles, role); err != nil {
		return ceilingErr(err)
	}
	return nil
}

// mayRevokeInvite is the one rule for cancelling an invite, by revoking it
// or by replacing it with a newer one: its role must be under the actor's
// privilege ceiling, as if the actor were inviting to it (mayInvite).
func (s *Service) mayRevokeInvite(actor store.User, inv store.Invite) error {
	return s.mayInvite(actor.Roles, inv.Role)
}

// mayReplaceInvite applies mayRevokeInvite to a pending invite that a new
// invite for the same address would supersede. An expired one cancels
// nothing and may always be replaced.
func (s *Service) mayReplaceInvite(actor store.User, pending store.Invite) error {
	if !s.now().Before(pending.ExpiresAt) {
		return nil
	}
	err := s.mayRevokeInvite(actor, pending)
	if errors.Is(err, apierr.ErrForbidden) {
		return apierr.ErrForbidden.WithDescription(
			"This address has a pending invite for the role %q, which you may not revoke; a new invite would replace it, so none was created.",
			pending.Role).WithCause(err)
	}
	return err
}

func (s *Service) getInvite(ctx context.Context, id string) (store.Invite, error) {
	if len(id) > inviteIDLen {
		return store.Invite{}, errInviteNotFound
	}
	inv, err := s.store.GetInvite(ctx, id)
	if err != nil {
		return store.Invite{}, storeErr("load invite", err, errInviteNotFound)
	}
	return inv, nil
}

// AcceptInviteRequest is an invite acceptance.
type AcceptInviteRequest struct {
	Token    string
	Password string
	Name     string
	// Client issues the tokens; an empty ID (and no Basic credentials) means
	// the built-in first-party client.
	Client token.ClientCredentials
	// Scope is the requested scope, as at the token endpoint (nil: every
	// permission the user and client may have).
	Scope []string
}

// AcceptInvite redeems an invite: it creates the user with the invite's
// email (verified) and role and the chosen password, all at once, and starts
// a session for them. A used, expired, revoked or unknown invite is 400
// invalid_token saying which, and so is one whose inviter may no longer
// make it (inviterStands: deleted, deactivated, or no longer allowed the
// role), which creates nothing; a password the rules refuse is 400
// weak_password and leaves the invite usable. When the policy requires a
// second factor of the invite's role (mfa.required_for_level), the account
// is created but no token issued: the answer is 400 mfa_required with
// mfa_enrollment_required and the mfa_token that enrols the factor (at POST
// /auth/mfa/totp), after which the person signs in with the password grant.
// An invite to an organisation for an address that already has an account
// is accepted with that account's password instead (joinTenant), and its
// session asks for the account's second factor like any login.
//
// Without a password it only looks at the invite: an unusable one is 400
// invalid_token as above, a usable one 400 invalid_request (password
// required), before any password rule or password check runs, so looking
// (a link scanner; the invite page looks with LookAtInvite, which says
// more) never counts as a failed login of the account the invite names,
// nor changes anything.
func (s *Service) AcceptInvite(ctx context.Context, m Meta, req AcceptInviteRequest) (token.Response, error) {
	if err := s.limit(ctx, LimitAcceptInvite, m, ""); err != nil {
		return token.Response{}, err
	}
	// Only an attempt to accept (with a password) is audited when the
	// inviter no longer stands behind the invite; a look records nothing.
	var attempt *Meta
	if req.Password != "" {
		attempt = &m
	}
	ref := InviteRefOf(req.Token)
	inv, err := s.usableInvite(ctx, ref, attempt)
	if err != nil {
		return token.Response{}, err
	}
	if req.Password == "" {
		// A look at the invite (the invite page before its form): it is
		// usable; no password rule or password check runs.
		return token.Response{}, errInvitePasswordRequired
	}
	if inv.TenantID != "" {
		if existing, err := s.store.GetUserByEmail(ctx, inv.Email); err == nil {
			return s.joinTenant(ctx, m, req, inv, ref, existing)
		} else if !errors.Is(err, store.ErrNotFound) {
			return token.Response{}, storeErr("look up email", err, nil)
		}
	}
	name, err := normaliseName(req.Name)
	if err != nil {
		return token.Response{}, err
	}
	if err := s.rules.Check(req.Password, inv.Email); err != nil {
		return token.Response{}, weakPassword(err)
	}
	// Authenticate the client before redeeming, so a bad client never burns
	// the invite.
	client, err := s.resolveClient(ctx, req.Client)
	if err != nil {
		return token.Response{}, err
	}
	if err := s.sessions.ClientIssuesIn(ctx, client, inv.TenantID); err != nil {
		return token.Response{}, err
	}
	if err := checkScope(req.Scope, s.policy.Permissions([]string{inv.Role}), client); err != nil {
		return token.Response{}, err
	}
	hash, err := s.hashPassword(ctx, req.Password)
	if err != nil {
		return token.Response{}, err
	}
	u := store.User{Name: name, PasswordHash: hash, Active: true}
	accepted, err := s.store.AcceptInvite(ctx, ref.secretHash, s.now(), &u)
	if err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			return token.Response{}, errAccountExists.WithDescription("An account with this email address already exists; sign in instead.")
		}
		return token.Response{}, oneTimeTokenErr(inviteKind, err)
	}
	m.ClientID = client.ID
	s.record(ctx, "invite.accepted", store.OutcomeSuccess, u.ID, u.ID, m,
		map[string]string{"invite_id": accepted.ID, "role": accepted.Role})
	su, err := s.sessions.SessionUser(ctx, client, u, "")
	if err != nil {
		return token.Response{}, err
	}
	if err := s.loginSecondFactor(ctx, client, su, nil, ratelimit.Counted{}, "", req.Scope, "Your account is ready."); err != nil {
		return token.Response{}, err
	}
	resp, err := s.sessions.IssueForUser(ctx, client, u, "", req.Scope)
	if err != nil {
		return token.Response{}, err
	}
	return resp, nil
}

const inviteKind = "invitation"

// InviteLook is what the invite page shows of a usable invite before it
// is accepted (LookAtInvite).
type InviteLook struct {
	// Organisation is the name of the organisation the invite is to (""
	// for an invite of the whole instance).
	Organisation string
	// ExistingAccount: the invite is to an organisation and its address
	// already has an account, which accepting (with that account's
	// password: joinTenant) adds to the organisation.
	ExistingAccount bool
}

// LookAtInvite is the look at an invite that AcceptInvite without a
// password makes, for the invite page's form: the same limit (not counted
// again after AcceptInvite in a request of CountOnce) and the same check
// (usableInvite: an unusable invite is 400 invalid_token saying why), no
// password check, and nothing changed or recorded. It answers
// the organisation the invite is to and whether its address already has
// an account, which accepting adds to it: only the holder of the link
// (the mailbox the invitation went to) learns it.
func (s *Service) LookAtInvite(ctx context.Context, m Meta, tok string) (InviteLook, error) {
	if err := s.limit(ctx, LimitAcceptInvite, m, ""); err != nil {
		return InviteLook{}, err
	}
	inv, err := s.usableInvite(ctx, InviteRefOf(tok), nil)
	if err != nil || inv.TenantID == "" {
		return InviteLook{}, err
	}
	t, err := s.store.GetTenant(ctx, inv.TenantID)
	if err != nil {
		return InviteLook{}, storeErr("load the invite's organisation", err, nil)
	}
	existing, err := s.hasAccount(ctx, inv.Email)
	if err != nil {
		return InviteLook{}, err
	}
	return InviteLook{Organisation: t.Name, ExistingAccount: existing}, nil
}

// joinTenant accepts an invite to an organisation for an address that
// already has an account: the request's password must be that account's
// (the one password check, with its throttle; else 400 invalid_grant and
// the invite stays usable). The account then gets the invite's role in
// the organisation: the invite is a capability sent to the mailbox and the
// password proves the account holder, so the membership is granted once
// the password is right, whatever follows.
//
// The session that follows is a login like any other: when the account
// owes a second factor (it has one, or its role requires one: the rule of
// mfa.Service.Begin, as at the password grant), no token is issued; the
// answer is 400 mfa_required with the mfa_token, bound to the client and
// scope asked for, which the person finishes with an MFA grant (any client
// with the password grant; the built-in first-party client has none, so
// through it the person simply signs in) to get the session the acceptance
// would have issued (no organisation named), or with which they enrol the
// factor their role requires. Otherwise the answer is that session at once.
func (s *Service) joinTenant(ctx context.Context, m Meta, req AcceptInviteRequest, inv store.Invite, ref InviteRef, u store.User) (token.Response, error) {
	client, err := s.resolveClient(ctx, req.Client)
	if err != nil {
		return token.Response{}, err
	}
	if err := s.sessions.ClientIssuesIn(ctx, client, inv.TenantID); err != nil {
		return token.Response{}, err
	}
	// The throttle's failures are cleared only once no second factor
	// follows, as at the password grant: its failures count there too.
	res, err := s.checker.Check(ctx, passcheck.Attempt{Login: inv.Email, Password: req.Password, IP: m.IP, UserAgent: m.UserAgent,
		ClientID: client.ID, FailureAction: "invite.accept_failed", Via: "invite", DeferSuccess: true})
	if errors.Is(err, passcheck.ErrBadCredentials) || err == nil && res.User.ID != u.ID {
		return token.Response{}, apierr.ErrInvalidGrant.WithDescription(
			"This address already has an account: accept with that account's password.")
	}
	if err != nil {
		return token.Response{}, err
	}
	accepted, err := s.store.AcceptTenantInvite(ctx, ref.secretHash, s.now(), u.ID)
	if err != nil {
		return token.Response{}, oneTimeTokenErr(inviteKind, err)
	}
	m.ClientID = client.ID
	s.audit.Record(ctx, store.AuditEvent{Action: "invite.accepted", Outcome: store.OutcomeSuccess, ActorID: u.ID, TargetID: u.ID,
		ClientID: m.ClientID, IP: m.IP, UserAgent: m.UserAgent, TenantID: accepted.TenantID,
		Details: map[string]string{"invite_id": accepted.ID, "role": accepted.Role, "existing_account": "true"}})
	// The session names no organisation, as the password grant's login
	// naming none: the platform view of the account through a platform
	// client, the organisation's (just joined) through its client.
	user, err := s.sessions.SessionUser(ctx, client, res.User, "")
	if err != nil {
		return token.Response{}, err
	}
	if err := s.loginSecondFactor(ctx, client, user, (*mfa.Summary)(res.Factors), res.Counted(), "", req.Scope,
		"You have joined the organisation."); err != nil {
		return token.Response{}, err
	}
	s.checker.Succeeded(ctx, res)
	return s.sessions.IssueForUser(ctx, client, res.User, "", req.Scope)
}

// usableInvite returns the pending, unexpired invite ref names (the
// InviteRefOf an emailed token, or one kept by a server-side record),
// provided its inviter still stands behind it (inviterStands); else 400
// invalid_token saying why not (the zero InviteRef, of a token of another
// shape, is not found). Every use of an invite starts here: a look at it,
// an acceptance with a password (a new account, or an existing one joining
// an organisation: joinTenant) and one through an upstream provider
// (PendingInvite, AcceptInviteFederated, which take the InviteRef the
// sign-in's record kept); each redeems the invite by ref's hash. The
// state is checked again, atomically, by the store when the invite is
// accepted; this gives a clear answer before any work.
//
// attempt is the metadata of a request that tries to accept the invite, nil
// for a look (which records nothing): an invite refused because of its
// inviter is then audited as a failed invite.accepted with the reason. The
// invite itself is left as it is (pending until it expires or is revoked):
// refusing it changes nothing, so a look or a stranger holding the link
// cannot spend it, and it stands again if its inviter may make it again.
func (s *Service) usableInvite(ctx context.Context, ref InviteRef, attempt *Meta) (store.Invite, error) {
	if ref.id == "" {
		return store.Invite{}, oneTimeTokenErr(inviteKind, store.ErrNotFound)
	}
	inv, err := s.store.GetInvite(ctx, ref.id)
	if err != nil {
		return store.Invite{}, oneTimeTokenErr(inviteKind, err)
	}
	if !ref.matches(inv.TokenHash) {
		return store.Invite{}, oneTimeTokenErr(inviteKind, store.ErrNotFound)
	}
	switch {
	case inv.Status == store.InviteAccepted || inv.Status == store.InviteSuperseded:
		return store.Invite{}, oneTimeTokenErr(inviteKind, store.ErrTokenUsed)
	case inv.Status == store.InviteRevoked:
		return store.Invite{}, oneTimeTokenErr(inviteKind, store.ErrTokenRevoked)
	case !s.now().Before(inv.ExpiresAt):
		return store.Invite{}, oneTimeTokenErr(inviteKind, store.ErrTokenExpired)
	}
	reason, err := s.inviterStands(ctx, inv)
	if err != nil {
		return store.Invite{}, err
	}
	if reason != "" {
		if attempt != nil {
			s.audit.Record(ctx, store.AuditEvent{Action: "invite.accepted", Outcome: store.OutcomeFailure, TargetID: inv.ID,
				ClientID: attempt.ClientID, IP: attempt.IP, UserAgent: attempt.UserAgent, TenantID: inv.TenantID,
				Details: map[string]string{"invite_id": inv.ID, "role": inv.Role, "invited_by": inv.InvitedBy, "reason": reason}})
		}
		return store.Invite{}, errInviteNoLongerValid
	}
	return inv, nil
}

// Reasons an invite's inviter no longer stands behind it (inviterStands),
// the reason of the audit event of a refused acceptance.
const (
	inviterDeleted  = "inviter_deleted"
	inviterInactive = "inviter_inactive"
	inviterCeiling  = "inviter_may_not_invite_role"
)

// inviterStands is the rule an invite is checked by again whenever it is
// used (usableInvite): an invite is a grant of its role that its inviter
// made in advance, so it stands only while the inviter could still make
// it. The inviter must still exist and be active, and the role must be
// under their privilege ceiling now (mayInvite, the rule the creation ran)
// with the roles they hold where they could invite to it: their platform
// roles (with organisations off, their stored roles) and, for an invite to
// an organisation, the roles they hold in it while it is active (the
// invite does not record which of the two its creation used; either may
// make it). The policy in force decides, so a role it no longer lets them
// assign, or no longer defines, refuses the invite too. It returns "" when
// the invite stands, else the reason (one of the inviter… constants); err
// only when the store fails.
//
// An invite made by the operator (InvitedBy OperatorActorID) stands: the
// operator is no user and no privilege ceiling binds it; its authority is
// holding the server's settings, which nothing recorded here takes away.
// (No command makes one yet; whoever wants such an invite gone revokes it.)
//
// The check runs before the store redeems the invite, outside its
// transaction: an inviter deactivated in that instant is not seen, as an
// invite made an instant before a deactivation is not.
func (s *Service) inviterStands(ctx context.Context, inv store.Invite) (string, error) {
	if inv.InvitedBy == OperatorActorID {
		return "", nil
	}
	u, err := s.store.GetUser(ctx, inv.InvitedBy)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return inviterDeleted, nil
	case err != nil:
		return "", storeErr("load the invite's inviter", err, nil)
	case !u.Active:
		return inviterInactive, nil
	}
	if s.mayInvite(s.platform(u).Roles, inv.Role) == nil {
		return "", nil
	}
	if inv.TenantID == "" || s.tenancy == nil {
		return inviterCeiling, nil
	}
	in, _, err := s.tenancy.ForSession(ctx, u, inv.TenantID)
	switch {
	case errors.Is(err, tenancy.ErrRefused):
		return inviterCeiling, nil
	case err != nil:
		return "", storeErr("load the inviter's roles in the organisation", err, nil)
	case s.mayInvite(in.Roles, inv.Role) != nil:
		return inviterCeiling, nil
	}
	return "", nil
}

// PendingInvite returns the usable invite ref names (the invite context of
// a sign-in through an upstream provider, an attempt to accept it made
// with m; ref is what the sign-in's record kept of the invite link), or
// 400 invalid_token saying why not (usableInvite).
func (s *Service) PendingInvite(ctx context.Context, m Meta, ref InviteRef) (store.Invite, error) {
	return s.usableInvite(ctx, ref, &m)
}

// AcceptInviteFederated accepts an invite by a sign-in at an upstream
// provider whose verified email is the invite's (contract: "An invite can
// be accepted by signing in with a provider whose verified email equals the
// invite's"): ref names the invite (the InviteRef the sign-in's record
// kept of the invite link, never the token). It creates the user with the
// invite's email (verified) and role, without a password, linked to
// (f.Provider, f.Issuer, f.Subject), in one transaction. An address that
// is not verified or not the invite's is 403 forbidden; an unusable invite
// 400 invalid_token; an email with an account or an upstream account
// linked already 409. Audit invite.accepted and identity.linked. The
// caller starts the session.
func (s *Service) AcceptInviteFederated(ctx context.Context, m Meta, ref InviteRef, f FederatedUser) (store.User, error) {
	if err := s.limit(ctx, LimitAcceptInvite, m, ""); err != nil {
		return store.User{}, err
	}
	inv, err := s.usableInvite(ctx, ref, &m)
	if err != nil {
		return store.User{}, err
	}
	if !f.EmailVerified || !store.SameEmail(f.Email, inv.Email) {
		return store.User{}, apierr.ErrForbidden.WithDescription("The invite is for another email address.")
	}
	name, err := normaliseName(f.Name)
	if err != nil {
		name = ""
	}
	u := store.User{Name: name, Active: true}
	fi := store.FederatedIdentity{Provider: f.Provider, Issuer: f.Issuer, Subject: f.Subject, Email: f.Email}
	accepted, err := s.store.AcceptInviteWithIdentity(ctx, ref.secretHash, s.now(), &u, &fi)
	if err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			return store.User{}, apierr.ErrConflict.WithDescription("An account with this email address or upstream identity already exists.").WithCause(err)
		}
		return store.User{}, oneTimeTokenErr(inviteKind, err)
	}
	s.record(ctx, "invite.accepted", store.OutcomeSuccess, u.ID, u.ID, m,
		map[string]string{"invite_id": accepted.ID, "role": accepted.Role, "provider": f.Provider})
	s.record(ctx, "identity.linked", store.OutcomeSuccess, u.ID, u.ID, m,
		map[string]string{"provider": f.Provider, "issuer": f.Issuer, "subject": f.Subject, "via": "invite"})
	return u, nil
}

// loginSecondFactor is the password step of a login started by an
// invite's acceptance (a new account, or an existing one joining an
// organisation) or by a password change whose session the account's roles
// need a second factor for: nil when no second factor is due, else the
// mfa_required answer with the mfa_token. mfa.Service.Begin decides, as at the password
// grant: the one rule of who owes a second factor. factors are the
// account's second factors as the password check read them (nil: read
// them); counted is the check's throttle attempt, whose key the second
// step counts under (zero: the account's email, nothing to take back); u holds the roles of the session that
// follows (SessionUser) and tenant is the organisation it names ("":
// none), which the mfa_token binds; done, a sentence, says what the
// acceptance (or the change) did.
func (s *Service) loginSecondFactor(ctx context.Context, client store.Client, u store.User, factors *mfa.Summary, counted ratelimit.Counted, tenant string,
	scope []string, done string) error {
	if s.mfa == nil {
		return nil
	}
	ch, err := s.mfa.Begin(ctx, u, factors, counted, client.ID, strings.Join(scope, " "), tenant, s.now(), []string{mfa.AMRPassword})
	if err != nil {
		return mfaErr("begin the second factor", err)
	}
	if ch == nil {
		return nil
	}
	desc := done + " Your role requires a second factor: set one up with the mfa_token (POST /auth/mfa/totp), then sign in."
	if !ch.EnrollmentRequired {
		desc = done + " Finish signing in with your second factor: send the mfa_token with a code to the token endpoint, or sign in again."
	}
	return apierr.ErrMFARequired.WithDescription("%s", desc).WithMFA(apierr.MFAChallenge{
		Token: ch.Token, EnrollmentRequired: ch.EnrollmentRequired, Methods: ch.Methods})
}

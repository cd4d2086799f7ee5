package upstream

import (
	"context"
	"errors"
	"fmt"

	"github.com/portcullis-auth/portcullis/store"
)

// Outcome is what the linking core decided for a verified upstream identity.
type Outcome string

// Outcomes of Decide.
const (
	// OutcomeLogin: (provider, issuer, sub) is linked to Decision.User,
	// who may sign in.
	OutcomeLogin Outcome = "login"
	// OutcomeConfirm: the upstream account is unknown and its verified
	// email is Decision.User's; they are linked only after the person proves
	// the local account (LinkConfirmed).
	OutcomeConfirm Outcome = "confirm"
	// OutcomeAutoLink: as OutcomeConfirm, but every condition of
	// verified_email_auto holds (and the account holds no identity of a
	// provider that does not vouch for its email): link and sign in
	// without asking.
	OutcomeAutoLink Outcome = "auto_link"
	// OutcomeCreate: no local account has the email and the provider's
	// just-in-time creation is on: create one holding Decision.Role, its
	// email verified only when the provider vouches for it
	// (Provider.VouchesForEmail).
	OutcomeCreate Outcome = "create"
	// OutcomeAcceptInvite: no local account has the email and the pending
	// invite in the input is for that verified email: create the invited
	// account, linked.
	OutcomeAcceptInvite Outcome = "accept_invite"
)

// Decision is the linking core's answer.
type Decision struct {
	Outcome  Outcome
	Provider *Provider
	Claims   Claims
	// User is the local account (login, confirm, auto_link).
	User store.User
	// Role is the role of a created account (create, accept_invite).
	Role string
	// Invite is the invite being accepted (accept_invite).
	Invite *store.Invite
}

// Reasons a sign-in through a provider is refused (the audit event's
// details.reason).
const (
	ReasonUnknownProvider      = "unknown_provider"
	ReasonInvalidToken         = "invalid_token"
	ReasonEmailUnverified      = "email_unverified"
	ReasonDomainNotAllowed     = "domain_not_allowed"
	ReasonLocalEmailUnverified = "local_email_unverified"
	ReasonDeactivated          = "deactivated"
	ReasonNoAccount            = "jit_disabled"
	ReasonAlreadyLinked        = "already_linked"
	ReasonInviteMismatch       = "invite_email_mismatch"
	ReasonNeedsConfirmation    = "confirmation_required"
	ReasonInvalidState         = "invalid_state"
	ReasonBrowserMismatch      = "browser_mismatch" // the answer opened in another browser than the one that began the sign-in
	ReasonReplayedCallback     = "replayed_callback"
	ReasonReplayedToken        = "replayed_token"
	ReasonUpstreamError        = "upstream_error"
	ReasonUnavailable          = "provider_unavailable"
	ReasonSecondFactor         = "mfa_required"
	ReasonStaleLogin           = "login_not_fresh"
)

// Refusal is a sign-in the core refuses. Reason is one of the Reason
// constants; UserID names the local account concerned when there is one
// (for the audit event's target_id, never shown).
type Refusal struct {
	Reason   string
	Provider string
	UserID   string
	// Unmatched says that the refusal named no configured provider at the
	// browser path's callback (/login/{provider}/callback with an unknown
	// id): no state, id token or account is looked at, anyone can cause it
	// as often as they like, and it is none of the refusals CONTRACT.md
	// says are each audited (a refused id token, state, replayed callback,
	// JIT-off or deactivated case), so RecordRefusal records it only within
	// the client address's budget. Every other refusal is recorded.
	Unmatched bool
	cause     error
}

// Error says why in words for a person (no account is named).
func (r *Refusal) Error() string { return r.Description() }

// Unwrap returns the cause (a token verification error, say).
func (r *Refusal) Unwrap() error { return r.cause }

// Description is the reason as a sentence for the person signing in.
func (r *Refusal) Description() string {
	switch r.Reason {
	case ReasonUnknownProvider:
		return "No identity provider issued this token here."
	case ReasonInvalidToken:
		return "The identity provider's token is invalid or expired."
	case ReasonEmailUnverified:
		return "The identity provider did not confirm that this email address is verified."
	case ReasonDomainNotAllowed:
		return "Accounts of this email domain may not sign in with this identity provider."
	case ReasonLocalEmailUnverified:
		return "An account with this email address exists, but its address is not verified: it cannot be linked. If this is your address, reset the password of the account (the link is sent to the address), then sign in here again."
	case ReasonDeactivated:
		return "The account is deactivated."
	case ReasonNoAccount:
		return "No account is linked to this identity, and new accounts are not created through this identity provider."
	case ReasonAlreadyLinked:
		return "The account is already linked to another identity at this provider."
	case ReasonInviteMismatch:
		return "The invite is for another email address."
	case ReasonNeedsConfirmation:
		return "An account with this email address exists: sign in to it with its password once to link this identity. If this is your address and you have no password for it, reset the password first."
	case ReasonInvalidState:
		return "The sign-in request is unknown or expired. Start again."
	case ReasonBrowserMismatch:
		return "This sign-in was started in another browser, and cannot be finished in this one. Start again."
	case ReasonReplayedCallback:
		return "This sign-in response was used already. Start again."
	case ReasonReplayedToken:
		return "This id token was exchanged already. Get a new one from the identity provider."
	case ReasonUpstreamError:
		return "The identity provider did not sign you in."
	case ReasonUnavailable:
		return "The identity provider could not be reached. Try again shortly."
	case ReasonStaleLogin:
		return "The identity provider did not confirm a sign-in as recent as needed (one the application asked for, or one within a year). Sign in there again, then start again."
	case ReasonSecondFactor:
		return "The account needs its second factor, which cannot be given here: sign in through the login page."
	}
	return "The sign-in was refused."
}

// refuseUnmatched is refuse for the callback of an unknown provider
// (Refusal.Unmatched).
func refuseUnmatched(reason string, p *Provider, cause error) *Refusal {
	r := refuse(reason, p, "", cause)
	r.Unmatched = true
	return r
}

func refuse(reason string, p *Provider, userID string, cause error) *Refusal {
	r := &Refusal{Reason: reason, UserID: userID, cause: cause}
	if p != nil {
		r.Provider = p.ID
	}
	return r
}

// Directory is what the core reads to decide (*sqlstore.Store implements it).
type Directory interface {
	GetFederatedIdentity(ctx context.Context, provider, issuer, subject string) (store.FederatedIdentity, error)
	ListFederatedIdentities(ctx context.Context, userID string) ([]store.FederatedIdentity, error)
	GetUser(ctx context.Context, id string) (store.User, error)
	GetUserByEmail(ctx context.Context, email string) (store.User, error)
}

// Input is what the core decides on: a provider and claims from a token of
// that provider that was verified, and optionally a pending invite the
// person is accepting by signing in upstream.
type Input struct {
	Provider *Provider
	Claims   Claims
	Invite   *store.Invite
}

// Decide is the one linking core. The user is found by (provider, issuer,
// sub), never by email: a returning user whose upstream email changed still
// signs in as themself, and an upstream account whose email was changed to
// a local user's is never taken for that user. The issuer is the
// provider's configured one, which verified the token: only iss and sub
// together name an account (OIDC Core 5.7), so a link made while the
// provider id named another issuer (moved, or deleted and reused) is not
// this account, whose sub is then unknown here. An unknown sub is decided
// by its verified email only: a local account with that email is linked
// after confirmation (or automatically under every condition of
// verified_email_auto, and only when the account holds no identity of a
// provider that does not vouch for its address and its password was not
// chosen where the mailbox was unproven), never when the local
// address is unverified; without such an account, an invite for the email
// or just-in-time creation. ps are the configured providers, which judge
// the identities the account already holds (unvouched). A refusal is a
// *Refusal; any other error is a store failure.
func Decide(ctx context.Context, dir Directory, ps *Providers, in Input) (Decision, error) {
	p, c := in.Provider, in.Claims
	if p == nil {
		return Decision{}, refuse(ReasonUnknownProvider, nil, "", nil)
	}
	d := Decision{Provider: p, Claims: c}
	if len(p.AllowedDomains) > 0 {
		switch {
		case c.Email == "" || !c.EmailVerified:
			return d, refuse(ReasonEmailUnverified, p, "", nil)
		case !p.DomainAllowed(c.Email):
			return d, refuse(ReasonDomainNotAllowed, p, "", nil)
		}
	}
	fi, err := dir.GetFederatedIdentity(ctx, p.ID, p.Issuer, c.Subject)
	switch {
	case err == nil:
		u, err := dir.GetUser(ctx, fi.UserID)
		if err != nil {
			return d, fmt.Errorf("load the linked user: %w", err)
		}
		if !u.Active {
			return d, refuse(ReasonDeactivated, p, u.ID, nil)
		}
		d.Outcome, d.User = OutcomeLogin, u
		return d, nil
	case !errors.Is(err, store.ErrNotFound):
		return d, fmt.Errorf("look up the identity: %w", err)
	}
	if c.Email == "" || !c.EmailVerified {
		return d, refuse(ReasonEmailUnverified, p, "", nil)
	}
	u, err := dir.GetUserByEmail(ctx, c.Email)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return decideNew(d, in)
	case err != nil:
		return d, fmt.Errorf("look up the email: %w", err)
	}
	switch {
	case !u.Active:
		return d, refuse(ReasonDeactivated, p, u.ID, nil)
	case !u.EmailVerified:
		return d, refuse(ReasonLocalEmailUnverified, p, u.ID, nil)
	}
	links, err := dir.ListFederatedIdentities(ctx, u.ID)
	if err != nil {
		return d, fmt.Errorf("list the user's identities: %w", err)
	}
	for _, l := range links {
		if l.Provider == p.ID { // under any issuer: one identity per provider id
			return d, refuse(ReasonAlreadyLinked, p, u.ID, nil)
		}
	}
	d.User = u
	if p.Link == LinkVerifiedEmailAuto && p.VouchesForEmail(c) && !unvouched(ps, u, links) {
		d.Outcome = OutcomeAutoLink
	} else {
		d.Outcome = OutcomeConfirm
	}
	return d, nil
}

// unvouched reports whether someone other than the owner of u's address
// may hold the account, so that linking the domain's provider
// automatically could hand the owner's sign-ins to an account another
// still signs in to. It is so when the current password was chosen where
// the mailbox was not proven (u.PasswordUnproven: public registration; a
// verification link redeemed since proves only that the owner read it,
// not that they chose the password), or when any of links is of a provider
// that does not vouch for the account's address (Providers.VouchesFor):
// one that provider's just-in-time creation made the account for, and that
// stays linked when the owner later verifies the address by the link mailed
// to it. The owner proves the account on the confirm page instead, or
// recovers it with a password reset, which proves the password and drops
// such identities (accounts.Service.ResetPassword).
func unvouched(ps *Providers, u store.User, links []store.FederatedIdentity) bool {
	if u.PasswordUnproven {
		return true
	}
	for _, l := range links {
		if !ps.VouchesFor(l.Provider, u.Email) {
			return true
		}
	}
	return false
}

// decideNew decides for a verified email no local account has.
func decideNew(d Decision, in Input) (Decision, error) {
	if in.Invite != nil {
		if !store.SameEmail(in.Invite.Email, in.Claims.Email) {
			return d, refuse(ReasonInviteMismatch, in.Provider, "", nil)
		}
		d.Outcome, d.Role, d.Invite = OutcomeAcceptInvite, in.Invite.Role, in.Invite
		return d, nil
	}
	if !in.Provider.JIT.Enabled {
		return d, refuse(ReasonNoAccount, in.Provider, "", nil)
	}
	d.Outcome, d.Role = OutcomeCreate, in.Provider.JIT.DefaultRole
	return d, nil
}

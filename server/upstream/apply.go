package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/mfa"
	"github.com/portcullis-auth/portcullis/store"
)

// Store is what the Service reads and writes (*sqlstore.Store implements it).
type Store interface {
	Directory
	LinkFederatedIdentity(ctx context.Context, fi *store.FederatedIdentity) error
}

// Accounts creates users just in time and accepts invites by upstream
// sign-in (*accounts.Service implements it).
type Accounts interface {
	CreateFederatedUser(ctx context.Context, m accounts.Meta, f accounts.FederatedUser) (store.User, error)
	PendingInvite(ctx context.Context, m accounts.Meta, ref accounts.InviteRef) (store.Invite, error)
	AcceptInviteFederated(ctx context.Context, m accounts.Meta, ref accounts.InviteRef, f accounts.FederatedUser) (store.User, error)
}

// Auditor records security-relevant events.
type Auditor interface {
	Record(ctx context.Context, e store.AuditEvent)
}

// SecondFactors tells whether a user must give a second factor
// (*mfa.Service implements it).
type SecondFactors interface {
	Summary(ctx context.Context, userID string) (mfa.Summary, error)
	Required(roles []string) bool
}

// Meta is who is signing in, for the audit events.
type Meta struct {
	IP        string
	UserAgent string
	ClientID  string
}

// RefusalBudget bounds the refusals that matched no kept sign-in recorded
// for one client address (*ratelimit.Limiter implements it).
type RefusalBudget interface {
	// AllowRefusalAudit counts one such refusal of a client at ip and
	// tells whether it may be recorded.
	AllowRefusalAudit(ctx context.Context, ip string) bool
}

// accounts is m as the accounts service takes it.
func (m Meta) accounts() accounts.Meta {
	return accounts.Meta{IP: m.IP, UserAgent: m.UserAgent, ClientID: m.ClientID}
}

// Deps are the Service's collaborators. Once (the single-use records of the
// browser path) and Logger may be nil; without Once the browser path
// answers 503.
type Deps struct {
	Providers *Providers
	Verifier  *Verifier
	Store     Store
	Accounts  Accounts
	Audit     Auditor
	Once      store.SingleUse
	// MFA tells whether a user owes a second factor; nil: nobody does.
	MFA SecondFactors
	// Budget bounds the unmatched refusals recorded per client address
	// (RecordRefusal); nil records every one (rate limits off).
	Budget RefusalBudget
	Logger *slog.Logger
	Now    func() time.Time
}

// Service is sign-in through upstream providers: verification, the linking
// core and the operations that apply its decisions, for both entry paths
// (the browser and token exchange).
type Service struct {
	d Deps
}

// New checks d and returns a Service.
func New(d Deps) (*Service, error) {
	if d.Providers == nil || d.Verifier == nil || d.Store == nil || d.Accounts == nil || d.Audit == nil {
		return nil, errors.New("upstream: Providers, Verifier, Store, Accounts and Audit are required")
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	return &Service{d: d}, nil
}

// Providers returns the configured providers.
func (s *Service) Providers() *Providers { return s.d.Providers }

// Decide runs the linking core (Decide) over the Service's store.
func (s *Service) Decide(ctx context.Context, in Input) (Decision, error) {
	d, err := Decide(ctx, s.d.Store, s.d.Providers, in)
	if err != nil {
		var r *Refusal
		if errors.As(err, &r) {
			return d, err
		}
		return d, apierr.ErrTemporarilyUnavailable.WithCause(err)
	}
	return d, nil
}

// ErrNeedsConfirmation is Apply's answer to OutcomeConfirm: the person
// must prove the local account first (then LinkConfirmed).
var ErrNeedsConfirmation = errors.New("upstream: the local account must be confirmed before linking")

// Apply carries out a decision and returns the user who signs in:
// OutcomeLogin as is; OutcomeAutoLink links first (audit identity.linked,
// via auto); OutcomeCreate creates the user just in time through the
// accounts service (user.jit_created, identity.linked), its email verified
// only when the provider vouches for it (Provider.VouchesForEmail).
// OutcomeConfirm is ErrNeedsConfirmation; OutcomeAcceptInvite is not
// applied here (the invite acceptance owns it) and is an error. A link lost
// to a concurrent one is a *Refusal (already_linked).
func (s *Service) Apply(ctx context.Context, d Decision, m Meta) (store.User, error) {
	switch d.Outcome {
	case OutcomeLogin:
		return d.User, nil
	case OutcomeAutoLink:
		if err := s.link(ctx, d, m, "auto"); err != nil {
			return store.User{}, err
		}
		return d.User, nil
	case OutcomeCreate:
		// The email is verified here only on the word of a provider
		// authoritative for its domain: any provider's word would let one
		// that is not create the account that the owner's provider later
		// links to automatically (verified_email_auto).
		u, err := s.d.Accounts.CreateFederatedUser(ctx, m.accounts(), accounts.FederatedUser{Email: d.Claims.Email,
			Name: d.Claims.Name, EmailVerified: d.Provider.VouchesForEmail(d.Claims), Role: d.Role, Provider: d.Provider.ID, Issuer: d.Provider.Issuer, Subject: d.Claims.Subject})
		if err != nil {
			if errors.Is(err, apierr.ErrConflict) {
				return store.User{}, refuse(ReasonAlreadyLinked, d.Provider, "", err)
			}
			return store.User{}, err
		}
		return u, nil
	case OutcomeConfirm:
		return store.User{}, ErrNeedsConfirmation
	}
	return store.User{}, fmt.Errorf("upstream: outcome %q is not applied here", d.Outcome)
}

// SignIn decides on in and applies the decision: the user who signs in.
// OutcomeConfirm returns the decision with ErrNeedsConfirmation (show the
// confirm page for d.User; then LinkConfirmed); OutcomeAcceptInvite returns
// it with ErrInviteAcceptance (the invite acceptance owns it). When a
// concurrent sign-in of the same upstream account linked or created it
// first (the store lets exactly one win), it decides once more: the account
// now exists, so this one signs in to it like a returning user. Refusals
// are *Refusal, audited here (login.failed, details.method upstream).
func (s *Service) SignIn(ctx context.Context, in Input, m Meta) (store.User, Decision, error) {
	u, d, err := s.signIn(ctx, in, m)
	return u, d, s.recordUnlessPending(ctx, m, in.Provider, err)
}

// recordUnlessPending audits a failed sign-in; a decision waiting for the
// person (confirmation, invite acceptance) is not a failure.
func (s *Service) recordUnlessPending(ctx context.Context, m Meta, p *Provider, err error) error {
	if err == nil || errors.Is(err, ErrNeedsConfirmation) || errors.Is(err, ErrInviteAcceptance) {
		return err
	}
	pid := ""
	if p != nil {
		pid = p.ID
	}
	return s.RecordRefusal(ctx, m, pid, err)
}

func (s *Service) signIn(ctx context.Context, in Input, m Meta) (store.User, Decision, error) {
	for attempt := 0; ; attempt++ {
		d, err := s.Decide(ctx, in)
		if err == nil {
			switch d.Outcome {
			case OutcomeConfirm:
				return store.User{}, d, ErrNeedsConfirmation
			case OutcomeAcceptInvite:
				return store.User{}, d, ErrInviteAcceptance
			}
			var u store.User
			u, err = s.Apply(ctx, d, m)
			if err == nil {
				return u, d, nil
			}
		}
		var r *Refusal
		if attempt == 0 && errors.As(err, &r) && r.Reason == ReasonAlreadyLinked {
			// Another sign-in of this upstream account may have just linked
			// it (seen half-way by Decide, or lost to it in Apply).
			continue
		}
		return store.User{}, d, err
	}
}

// AcceptInvite is a sign-in at an upstream provider by a person who came
// from an invite link (invite, the accounts.InviteRef of the emailed token
// that the sign-in's record kept: the token itself is never stored): the
// core decides with the invite as context, and when no account has the
// verified email and it is the invite's, the invited account is created
// (the invite's role, no password) and linked in one step
// (accounts.AcceptInviteFederated).
// A person who already has an account signs in as SignIn would (the invite
// stays pending). An unusable invite is the accounts service's 400
// invalid_token; refusals are *Refusal, audited here.
func (s *Service) AcceptInvite(ctx context.Context, v Verified, invite accounts.InviteRef, m Meta) (store.User, Decision, error) {
	inv, err := s.d.Accounts.PendingInvite(ctx, m.accounts(), invite)
	if err != nil {
		return store.User{}, Decision{}, err
	}
	in := Input{Provider: v.Provider, Claims: v.Claims, Invite: &inv}
	u, d, err := s.signIn(ctx, in, m)
	if !errors.Is(err, ErrInviteAcceptance) {
		return u, d, s.recordUnlessPending(ctx, m, v.Provider, err)
	}
	u, err = s.d.Accounts.AcceptInviteFederated(ctx, m.accounts(), invite, accounts.FederatedUser{Email: d.Claims.Email,
		Name: d.Claims.Name, EmailVerified: d.Claims.EmailVerified, Role: d.Role, Provider: d.Provider.ID, Issuer: d.Provider.Issuer,
		Subject: d.Claims.Subject})
	return u, d, err
}

// NeedsSecondFactor reports whether a sign-in of u with amr still owes
// Portcullis's own second factor: the user has one enrolled, or the policy
// requires one for their roles, and amr has no "mfa" (the provider's MFA
// counts only with trust_mfa, see AMR). The browser path then runs the
// login page's second step; token exchange, which has no page, refuses.
func (s *Service) NeedsSecondFactor(ctx context.Context, u store.User, amr []string) (bool, error) {
	if s.d.MFA == nil || slices.Contains(amr, mfa.AMRMFA) {
		return false, nil
	}
	if s.d.MFA.Required(u.Roles) {
		return true, nil
	}
	st, err := s.d.MFA.Summary(ctx, u.ID)
	if err != nil {
		return false, apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("read the second factors: %w", err))
	}
	return st.Enrolled(), nil
}

// ErrInviteAcceptance is SignIn's answer to OutcomeAcceptInvite.
var ErrInviteAcceptance = errors.New("upstream: the sign-in accepts an invite")

// LinkConfirmed links the upstream identity of c at p to userID after the
// person proved that local account (its password, and its second factor
// when enrolled — the caller's check, through passcheck and mfa). It
// decides again first, so a link is made only when the core still says
// OutcomeConfirm for that very user (the account was not deactivated,
// linked or changed meanwhile). Audit identity.linked, via confirm; a
// refusal is audited (login.failed, details.method upstream).
func (s *Service) LinkConfirmed(ctx context.Context, p *Provider, c Claims, userID string, m Meta) (store.User, error) {
	u, err := s.linkConfirmed(ctx, p, c, userID, m)
	return u, s.recordUnlessPending(ctx, m, p, err)
}

func (s *Service) linkConfirmed(ctx context.Context, p *Provider, c Claims, userID string, m Meta) (store.User, error) {
	d, err := s.Decide(ctx, Input{Provider: p, Claims: c})
	if err != nil {
		return store.User{}, err
	}
	if (d.Outcome != OutcomeConfirm && d.Outcome != OutcomeAutoLink) || d.User.ID != userID {
		return store.User{}, refuse(ReasonNeedsConfirmation, p, userID, nil)
	}
	if err := s.link(ctx, d, m, "confirm"); err != nil {
		return store.User{}, err
	}
	return d.User, nil
}

// link stores the identity of d for d.User and records identity.linked.
func (s *Service) link(ctx context.Context, d Decision, m Meta, via string) error {
	fi := store.FederatedIdentity{Provider: d.Provider.ID, Issuer: d.Provider.Issuer, Subject: d.Claims.Subject, UserID: d.User.ID,
		Email: d.Claims.Email}
	if err := s.d.Store.LinkFederatedIdentity(ctx, &fi); err != nil {
		switch {
		case errors.Is(err, store.ErrAlreadyExists):
			return refuse(ReasonAlreadyLinked, d.Provider, d.User.ID, err)
		case errors.Is(err, store.ErrNotFound):
			return refuse(ReasonNoAccount, d.Provider, d.User.ID, err)
		}
		return apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("link identity: %w", err))
	}
	s.d.Audit.Record(ctx, store.AuditEvent{Action: "identity.linked", Outcome: store.OutcomeSuccess, ActorID: d.User.ID,
		TargetID: d.User.ID, ClientID: m.ClientID, IP: m.IP, UserAgent: m.UserAgent,
		Details: map[string]string{"provider": fi.Provider, "issuer": fi.Issuer, "subject": fi.Subject, "via": via}})
	return nil
}

// RecordRefusal writes the login.failed event of a refused upstream
// sign-in (details.method upstream, the provider and the reason) and
// returns err. Errors that are not refusals are recorded with reason
// provider_unavailable or the error's kind. details.provider is the id of
// a configured provider, else "unknown": an id as a caller sent it is
// never kept or logged. Whether the event is written is mayRecord's rule.
// The one place these events are written, for both entry paths.
func (s *Service) RecordRefusal(ctx context.Context, m Meta, providerID string, err error) error {
	details := map[string]string{"method": "upstream"}
	target := ""
	var r *Refusal
	switch {
	case errors.As(err, &r):
		details["reason"] = r.Reason
		target = r.UserID
		if r.Provider != "" {
			providerID = r.Provider
		}
	case errors.Is(err, ErrUnavailable):
		details["reason"] = ReasonUnavailable
	default:
		details["reason"] = "error"
	}
	details["provider"] = UnknownProvider
	if _, ok := s.d.Providers.Get(providerID); ok {
		details["provider"] = providerID
	}
	if !s.mayRecord(ctx, m, r) {
		return err
	}
	s.d.Audit.Record(ctx, store.AuditEvent{Action: "login.failed", Outcome: store.OutcomeFailure, TargetID: target,
		ClientID: m.ClientID, IP: m.IP, UserAgent: m.UserAgent, Details: details})
	return err
}

// UnknownProvider is details.provider of a refusal whose provider id names
// no configured provider.
const UnknownProvider = "unknown"

// mayRecord tells whether the event of refusal r (nil: an error that is
// not a refusal) is written: always, but for the callback of an unknown
// provider (Refusal.Unmatched), which anyone can cause without
// credentials and which spends the client address's budget (Deps.Budget),
// dropped beyond it. CONTRACT.md has login.failed written for every
// refused id token, state, replayed callback, JIT-off or deactivated
// case, so those are never dropped; their details are bounded
// (details.provider a configured id or "unknown"; store.CleanDetails).
func (s *Service) mayRecord(ctx context.Context, m Meta, r *Refusal) bool {
	if r != nil && r.Unmatched {
		return s.d.Budget == nil || s.d.Budget.AllowRefusalAudit(ctx, m.IP)
	}
	return true
}

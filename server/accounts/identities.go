package accounts

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/store"
)

// Identity is a user's link to an upstream identity provider, as the admin
// API shows it.
type Identity struct {
	Provider string `json:"provider"`
	// Issuer is the provider's issuer when the link was made; empty for a
	// link made before issuers were kept whose issuer is not known (its
	// provider was not configured at the first start after the upgrade):
	// such a link signs nobody in.
	Issuer   string    `json:"issuer"`
	Subject  string    `json:"subject"`
	Email    string    `json:"email"`
	LinkedAt time.Time `json:"linked_at"`
}

// IdentityList is the answer of GET /admin/users/{id}/identities.
type IdentityList struct {
	Items []Identity `json:"items"`
}

var errIdentityNotFound = apierr.ErrNotFound.WithDescription("The user has no identity at this provider.")

// UserIdentities lists a user's upstream identities (404 for an unknown
// user); reading needs only the route's permission, like GetUser.
func (s *Service) UserIdentities(ctx context.Context, userID string) (IdentityList, error) {
	t, err := s.loadTarget(ctx, userID)
	if err != nil {
		return IdentityList{}, err
	}
	return s.identities(ctx, t)
}

// UserIdentitiesAs is UserIdentities for actor, confined as UserSessionsAs.
func (s *Service) UserIdentitiesAs(ctx context.Context, actor Actor, userID string) (IdentityList, error) {
	t, err := s.accountAs(ctx, actor, userID)
	if err != nil {
		return IdentityList{}, err
	}
	return s.identities(ctx, t)
}

func (s *Service) identities(ctx context.Context, t store.User) (IdentityList, error) {
	list, err := s.store.ListFederatedIdentities(ctx, t.ID)
	if err != nil {
		return IdentityList{}, storeErr("list identities", err, nil)
	}
	out := IdentityList{Items: make([]Identity, 0, len(list))}
	for _, fi := range list {
		iss := fi.Issuer
		if iss == store.IssuerUnknown {
			iss = ""
		}
		out.Items = append(out.Items, Identity{Provider: fi.Provider, Issuer: iss, Subject: fi.Subject, Email: fi.Email, LinkedAt: fi.LinkedAt})
	}
	return out, nil
}

// UnlinkIdentity removes a user's identity at provider, for an actor who
// may manage the user (the privilege ceiling: strictly above them, never
// themself); audit identity.unlinked. The person can no longer sign in
// through that upstream account (signing in with it again is an unknown sub,
// decided afresh); their sessions are left as they are. Unknown user or no
// identity at provider is 404.
func (s *Service) UnlinkIdentity(ctx context.Context, actor Actor, userID, provider string) error {
	a, t, err := s.actorAndTarget(ctx, actor, userID)
	if err != nil {
		return err
	}
	if provider == "" || len(provider) > maxIDLen {
		return errIdentityNotFound
	}
	fi, err := s.store.DeleteFederatedIdentity(ctx, t.ID, provider)
	if err != nil {
		return storeErr("unlink identity", err, errIdentityNotFound)
	}
	s.record(ctx, "identity.unlinked", store.OutcomeSuccess, a.ID, t.ID, actor.Meta,
		map[string]string{"provider": fi.Provider, "issuer": fi.Issuer, "subject": fi.Subject, "via": viaAdmin})
	return nil
}

// vouches says whether the identity provider vouches for a local
// account's email (Authorities; none without Authorities): a password
// reset (ResetPassword) unlinks every identity of a provider that does
// not. A reset proves the mailbox, not who linked those identities before:
// one may be a squatter's, made when a provider that is not authoritative
// for the domain created the account just in time for an address it did
// not own, and it would go on signing in to the account the owner
// recovered. The identities of a provider authoritative for the domain
// stay (the domain owner's word); the legitimate holder of a dropped
// identity links it again on the confirm page with the new password.
// Each is audited identity.unlinked with details.via password_reset.
func (s *Service) vouches(provider, email string) bool {
	return s.vouch != nil && s.vouch.VouchesFor(provider, email)
}

// FederatedUser is a user to create just in time for an upstream identity.
type FederatedUser struct {
	Email string
	Name  string
	// EmailVerified is, for CreateFederatedUser, the created account's
	// email_verified: the upstream service sets it only when the provider
	// is authoritative for the email's domain (upstream.Provider.
	// VouchesForEmail). For AcceptInviteFederated it is the provider's
	// email_verified, required there; the invite's own link verifies that
	// account's email.
	EmailVerified bool
	// Role is the provider's jit.default_role.
	Role     string
	Provider string
	// Issuer is the provider's configured issuer, which verified the
	// sign-in: the link is to (Provider, Issuer, Subject).
	Issuer  string
	Subject string
}

// CreateFederatedUser creates, just in time, an active user without a
// password holding f.Role and linked to (f.Provider, f.Issuer, f.Subject), in one
// transaction: the provider file's validation already checked the role
// against the top role's privilege ceiling, and it is checked again here
// against the policy in force. Audit user.jit_created (the user as target)
// and identity.linked. A taken email or an upstream account linked
// meanwhile is 409 conflict; nothing is created then.
func (s *Service) CreateFederatedUser(ctx context.Context, m Meta, f FederatedUser) (store.User, error) {
	email, err := normaliseEmail(f.Email)
	if err != nil {
		return store.User{}, err
	}
	name := strings.TrimSpace(f.Name)
	if n, err := normaliseName(name); err == nil {
		name = n
	} else {
		name = "" // an upstream name we cannot keep is dropped, not fatal
	}
	if names := s.policy.RoleNames(); len(names) == 0 || s.policy.CanAssign(names[:1], f.Role) != nil {
		return store.User{}, apierr.ErrForbidden.WithDescription("The provider's default role %q may not be granted.", f.Role)
	}
	u := store.User{Email: email, Name: name, Active: true, EmailVerified: f.EmailVerified, Roles: []string{f.Role}}
	fi := store.FederatedIdentity{Provider: f.Provider, Issuer: f.Issuer, Subject: f.Subject, Email: f.Email}
	if err := s.store.CreateUserWithIdentity(ctx, &u, &fi); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			return store.User{}, apierr.ErrConflict.WithDescription("An account with this email address or upstream identity already exists.").WithCause(err)
		}
		return store.User{}, storeErr("create user with identity", err, nil)
	}
	details := map[string]string{"provider": f.Provider, "subject": f.Subject, "roles": f.Role}
	s.record(ctx, "user.jit_created", store.OutcomeSuccess, u.ID, u.ID, m, details)
	s.record(ctx, "identity.linked", store.OutcomeSuccess, u.ID, u.ID, m,
		map[string]string{"provider": f.Provider, "issuer": f.Issuer, "subject": f.Subject, "via": "jit"})
	return u, nil
}

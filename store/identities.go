package store

import (
	"context"
	"time"
)

// OnceUpstreamLogin is the single-use record of a sign-in started at an
// upstream identity provider (state, nonce and PKCE verifier), taken once by
// its callback.
const OnceUpstreamLogin = "upstream"

// OnceUpstreamIDToken is the record of an upstream id token spent by a token
// exchange (the value is the provider's id), kept until the token expires so
// that it signs in once.
const OnceUpstreamIDToken = "upstream-idt"

// FederatedIdentity links an account at an upstream OpenID provider, named
// by the provider's id, the issuer the link was made under and the
// account's `sub` there, to a local user. Only iss and sub together name an
// account (OIDC Core 5.7): a user is found by (Provider, Issuer, Subject),
// never by email, and a link made under another issuer (the provider id
// pointed elsewhere, or deleted and given to another provider) is nobody's
// at the provider now. A user has at most one identity per provider id.
type FederatedIdentity struct {
	Provider string
	// Issuer is the provider's issuer when the link was made: a configured
	// issuer, IssuerUnresolved or IssuerUnknown (links made before issuers
	// were kept, which match no sign-in).
	Issuer  string
	Subject string
	UserID  string
	// Email is the upstream email address when the link was made (for
	// people reading the admin view; never used to find anyone).
	Email    string
	LinkedAt time.Time
}

// The issuers of links made before issuers were kept (migration 19). Neither
// is ever a configured issuer (an absolute URL), so neither matches a
// sign-in.
const (
	// IssuerUnresolved: the link awaits the issuer of its provider in the
	// providers file of the first start after the upgrade
	// (sqlstore.Store.ResolveIdentityIssuers).
	IssuerUnresolved = ""
	// IssuerUnknown: its provider was not configured at that start, so the
	// issuer it was made under is not known; it signs nobody in until an
	// administrator removes it (the person then links afresh).
	IssuerUnknown = "urn:portcullis:issuer-unknown"
)

// FederatedIdentities stores the links between upstream accounts and local
// users. Identities are removed with their user.
type FederatedIdentities interface {
	// GetFederatedIdentity returns the identity (provider, issuer,
	// subject), or ErrNotFound; always ErrNotFound for IssuerUnresolved
	// and IssuerUnknown.
	GetFederatedIdentity(ctx context.Context, provider, issuer, subject string) (FederatedIdentity, error)
	// LinkFederatedIdentity stores fi, which needs its provider, issuer
	// (neither IssuerUnresolved nor IssuerUnknown), subject and user
	// (LinkedAt is set by the store and written back). ErrAlreadyExists
	// when (provider, issuer, subject) is linked to anyone or the user
	// already has an identity at that provider id, under any issuer (of
	// concurrent links of one upstream account exactly one succeeds);
	// ErrNotFound when the user does not exist.
	LinkFederatedIdentity(ctx context.Context, fi *FederatedIdentity) error
	// CreateUserWithIdentity creates u (as CreateUser does) and links fi to
	// it in one transaction (fi.UserID and fi.LinkedAt are filled): nothing
	// is created when either fails. ErrAlreadyExists when the email is taken
	// or (provider, issuer, subject) is linked already.
	CreateUserWithIdentity(ctx context.Context, u *User, fi *FederatedIdentity) error
	// AcceptInviteWithIdentity accepts the pending invite whose token hashes
	// to tokenHash as AcceptInvite does (the user gets the invite's email,
	// verified, and role) and links fi to the created user, in one
	// transaction; ErrAlreadyExists when the email has an account or
	// (provider, issuer, subject) is linked already, the invite's one-time-token
	// errors otherwise.
	AcceptInviteWithIdentity(ctx context.Context, tokenHash []byte, now time.Time, u *User, fi *FederatedIdentity) (Invite, error)
	// ListFederatedIdentities returns the user's identities, by provider.
	ListFederatedIdentities(ctx context.Context, userID string) ([]FederatedIdentity, error)
	// DeleteFederatedIdentity removes the user's identity at provider and
	// returns it; ErrNotFound when there is none.
	DeleteFederatedIdentity(ctx context.Context, userID, provider string) (FederatedIdentity, error)
}

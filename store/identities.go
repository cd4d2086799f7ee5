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
// by the provider's id and the account's stable `sub` there, to a local
// user. A user is found by (Provider, Subject), never by email; a user has at
// most one identity per provider.
type FederatedIdentity struct {
	Provider string
	Subject  string
	UserID   string
	// Email is the upstream email address when the link was made (for
	// people reading the admin view; never used to find anyone).
	Email    string
	LinkedAt time.Time
}

// FederatedIdentities stores the links between upstream accounts and local
// users. Identities are removed with their user.
type FederatedIdentities interface {
	// GetFederatedIdentity returns the identity (provider, subject), or
	// ErrNotFound.
	GetFederatedIdentity(ctx context.Context, provider, subject string) (FederatedIdentity, error)
	// LinkFederatedIdentity stores fi (LinkedAt is set by the store and
	// written back). ErrAlreadyExists when (provider, subject) is linked to
	// anyone or the user already has an identity at that provider (of
	// concurrent links of one upstream account exactly one succeeds);
	// ErrNotFound when the user does not exist.
	LinkFederatedIdentity(ctx context.Context, fi *FederatedIdentity) error
	// CreateUserWithIdentity creates u (as CreateUser does) and links fi to
	// it in one transaction (fi.UserID and fi.LinkedAt are filled): nothing
	// is created when either fails. ErrAlreadyExists when the email is taken
	// or (provider, subject) is linked already.
	CreateUserWithIdentity(ctx context.Context, u *User, fi *FederatedIdentity) error
	// AcceptInviteWithIdentity accepts the pending invite whose token hashes
	// to tokenHash as AcceptInvite does (the user gets the invite's email,
	// verified, and role) and links fi to the created user, in one
	// transaction; ErrAlreadyExists when the email has an account or
	// (provider, subject) is linked already, the invite's one-time-token
	// errors otherwise.
	AcceptInviteWithIdentity(ctx context.Context, tokenHash []byte, now time.Time, u *User, fi *FederatedIdentity) (Invite, error)
	// ListFederatedIdentities returns the user's identities, by provider.
	ListFederatedIdentities(ctx context.Context, userID string) ([]FederatedIdentity, error)
	// DeleteFederatedIdentity removes the user's identity at provider and
	// returns it; ErrNotFound when there is none.
	DeleteFederatedIdentity(ctx context.Context, userID, provider string) (FederatedIdentity, error)
}

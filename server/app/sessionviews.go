package app

import (
	"context"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/signout"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// accountsEnder is signout.Ender as the accounts service calls it (the one
// routine every way of ending a browser session goes through): package
// signout imports accounts, so accounts cannot name signout.Reason.
type accountsEnder struct{ e *signout.Ender }

// EndBrowserSession implements accounts.SessionEnder.
func (a accountsEnder) EndBrowserSession(ctx context.Context, bs store.BrowserSession, byAdmin bool, actorID string, m accounts.Meta) error {
	why := signout.WhySelfService
	if byAdmin {
		why = signout.WhyAdmin
	}
	return a.e.End(ctx, bs, signout.Reason{Why: why, ActorID: actorID, Meta: m})
}

// accountSessions is the token service as the accounts service uses it,
// except that "end every session of a user" goes through the Ender
// (signout.Ender.EndUser), so that every path that ends them all (password
// change, reset or temporary password, deactivation, deletion, role or
// membership removal, MFA reset, admin revoke) queues the back-channel
// logout of the user's browser sessions before writing the cut-off.
type accountSessions struct {
	*token.Service
	ender *signout.Ender
}

// EndUserSessions implements accounts.Sessions.
func (s accountSessions) EndUserSessions(ctx context.Context, userID string) error {
	return s.ender.EndUser(ctx, userID)
}

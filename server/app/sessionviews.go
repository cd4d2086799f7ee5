package app

import (
	"context"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/signout"
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

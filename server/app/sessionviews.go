package app

import (
	"context"
	"fmt"
	"time"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/signout"
	"github.com/portcullis-auth/portcullis/store"
)

// browserEnder ends one browser session: signout.Ender's method, the one
// routine every way of ending a session goes through.
type browserEnder interface {
	End(ctx context.Context, bs store.BrowserSession, r signout.Reason) error
}

// accountsEnder is a browserEnder as the accounts service calls it: package
// signout imports accounts, so accounts cannot name signout.Reason.
type accountsEnder struct{ e browserEnder }

// EndBrowserSession implements accounts.SessionEnder.
func (a accountsEnder) EndBrowserSession(ctx context.Context, bs store.BrowserSession, why, actorID string, m accounts.Meta) error {
	return a.e.End(ctx, bs, signout.Reason{Why: why, ActorID: actorID, Meta: m})
}

// interimEnder stands in for signout.Ender until it lands: it ends the
// record and records session.ended, without revoking the session's grants
// or queueing back-channel logout.
type interimEnder struct {
	st    store.BrowserSessions
	audit *Auditor
}

// End implements browserEnder.
func (e interimEnder) End(ctx context.Context, bs store.BrowserSession, r signout.Reason) error {
	if err := e.st.EndBrowserSession(ctx, bs.ID, time.Now()); err != nil {
		return fmt.Errorf("end browser session: %w", err)
	}
	actor := r.ActorID
	if actor == "" {
		actor = bs.UserID
	}
	e.audit.Record(ctx, store.AuditEvent{Action: "session.ended", Outcome: store.OutcomeSuccess, ActorID: actor,
		TargetID: bs.UserID, ClientID: r.ClientID, IP: r.IP, UserAgent: r.UserAgent,
		Details: map[string]string{"sid": bs.ID, "reason": r.Why, "kind": "browser"}})
	return nil
}

package signout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// Sessions ends browser session records (store.BrowserSessions): atomically
// with the recording of grants, so the grants it returns are all there were.
type Sessions interface {
	BrowserSessionGrants(ctx context.Context, userID, id string) ([]store.SessionGrant, error)
	EndBrowserSessionGrants(ctx context.Context, id string, now time.Time) ([]store.SessionGrant, error)
}

// Grants ends the refresh families and access tokens of grants
// (*token.Service.EndGrants: the one reading of a revocation's outcome).
type Grants interface {
	EndGrants(ctx context.Context, sids []string) error
}

// Clients reads a client's back-channel logout URI (store.Clients).
type Clients interface {
	GetClient(ctx context.Context, id string) (store.Client, error)
}

// Backchannel queues logout tokens for delivery (*backchannel.Notifier): a
// durable queue, so that a restart loses none.
type Backchannel interface {
	Enqueue(ctx context.Context, ds []store.BackchannelLogout) error
}

// Auditor records security-relevant events (*app.Auditor).
type Auditor interface {
	Record(ctx context.Context, e store.AuditEvent)
}

// Ender ends browser sessions. It is the one routine every path that ends a
// browser session calls: RP-initiated logout, the session views
// (self-service and admin) and a login as someone else in the same browser.
type Ender struct {
	Sessions    Sessions
	Grants      Grants
	Clients     Clients
	Backchannel Backchannel // nil: no back-channel logout is sent
	Audit       Auditor
	Now         func() time.Time
}

// End ends bs: the refresh families of its grants that lack offline_access
// (their access tokens follow, on every instance), back-channel logout
// tokens queued for each grant of a client with a backchannel_logout_uri
// (offline grants included: the application's own login session ends with
// the browser session), then the session record (the cookie signs in no
// more), and session.ended is recorded. Each step is idempotent and a
// failure before the record is ended leaves the session for the person to
// try again. The record's end returns the grants it held, atomically with
// their recording, so a grant made meanwhile in another tab is ended too.
func (e *Ender) End(ctx context.Context, bs store.BrowserSession, r Reason) error {
	now := e.now()
	grants, err := e.Sessions.BrowserSessionGrants(ctx, bs.UserID, bs.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		grants = nil // ended meanwhile: its end below returns nothing either
	case err != nil:
		return fmt.Errorf("signout: read the session's grants: %w", err)
	}
	if err := e.endGrants(ctx, bs, grants, now); err != nil {
		return err
	}
	final, err := e.Sessions.EndBrowserSessionGrants(ctx, bs.ID, now)
	if err != nil {
		return fmt.Errorf("signout: end the browser session: %w", err)
	}
	seen := make(map[string]bool, len(grants))
	for _, g := range grants {
		seen[g.SID] = true
	}
	var late []store.SessionGrant
	for _, g := range final {
		if !seen[g.SID] {
			late = append(late, g)
		}
	}
	actor := r.ActorID
	if actor == "" {
		actor = bs.UserID
	}
	e.Audit.Record(ctx, store.AuditEvent{Action: "session.ended", Outcome: store.OutcomeSuccess, ActorID: actor,
		TargetID: bs.UserID, ClientID: r.ClientID, IP: r.IP, UserAgent: r.UserAgent,
		Details: map[string]string{"sid": bs.ID, "reason": r.Why, "kind": "browser"}})
	// Grants recorded after bs was read: the session is over, so a failure
	// here cannot be retried through it; it is reported (503) and the
	// revocations already written stand.
	if err := e.endGrants(ctx, bs, late, now); err != nil {
		return fmt.Errorf("signout: grants recorded while the session ended: %w", err)
	}
	return nil
}

// endGrants ends grants of bs: the families of those without
// offline_access, then back-channel logout queued for all of them.
func (e *Ender) endGrants(ctx context.Context, bs store.BrowserSession, grants []store.SessionGrant, now time.Time) error {
	var sids []string
	for _, g := range grants {
		if !g.Offline {
			sids = append(sids, g.SID)
		}
	}
	if len(sids) > 0 {
		if err := e.Grants.EndGrants(ctx, sids); err != nil {
			return fmt.Errorf("signout: end the session's grants: %w", err)
		}
	}
	if err := e.queueBackchannel(ctx, bs.UserID, grants, now); err != nil {
		return fmt.Errorf("signout: %w", err)
	}
	return nil
}

// queueBackchannel queues one logout token per grant whose client has a
// back-channel logout URI. A client that cannot be read fails the whole
// queueing (nothing half-queued: the queue takes all or none).
func (e *Ender) queueBackchannel(ctx context.Context, userID string, grants []store.SessionGrant, now time.Time) error {
	if e.Backchannel == nil || len(grants) == 0 {
		return nil
	}
	uris := map[string]string{}
	var ds []store.BackchannelLogout
	seen := map[string]bool{}
	for _, g := range grants {
		if seen[g.SID] {
			continue
		}
		seen[g.SID] = true
		uri, known := uris[g.ClientID]
		if !known {
			c, err := e.Clients.GetClient(ctx, g.ClientID)
			switch {
			case errors.Is(err, store.ErrNotFound):
				// Deleted since: there is no one to tell.
			case err != nil:
				return fmt.Errorf("read client %s for back-channel logout: %w", g.ClientID, err)
			default:
				uri = c.BackchannelLogoutURI
			}
			uris[g.ClientID] = uri
		}
		if uri == "" {
			continue
		}
		ds = append(ds, store.BackchannelLogout{ClientID: g.ClientID, URI: uri, Subject: userID, SID: g.SID,
			NextAttemptAt: now, CreatedAt: now})
	}
	if len(ds) == 0 {
		return nil
	}
	if err := e.Backchannel.Enqueue(ctx, ds); err != nil {
		return fmt.Errorf("queue back-channel logout: %w", err)
	}
	return nil
}

// CarryGrants is what a new session of the same person takes over at a
// re-login (prompt=login, max_age) from the one it replaces: the grants the
// old session held when it ended (so that ending the new session still ends
// them) and its clients, with those of grants recorded meanwhile. A login
// as someone else carries nothing: the old session is ended with End.
func CarryGrants(clientIDs []string, held []store.SessionGrant) ([]string, []store.SessionGrant) {
	ids := slices.Clone(clientIDs)
	for _, g := range held {
		if !slices.Contains(ids, g.ClientID) {
			ids = append(ids, g.ClientID)
		}
	}
	return ids, slices.Clone(held)
}

func (e *Ender) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

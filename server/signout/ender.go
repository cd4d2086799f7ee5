package signout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/portcullis-auth/portcullis/server/backchannel"
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

// UserSessions lists a user's live browser sessions with their grants
// (store.BrowserSessions), for EndUser.
type UserSessions interface {
	ListBrowserSessions(ctx context.Context, userID string, now time.Time) ([]store.BrowserSession, error)
}

// Cutoff ends every session of a user at once (*token.Service's
// EndUserSessions: the user's cut-off, which ends their browser sessions,
// refresh families and access tokens on every instance).
type Cutoff interface {
	EndUserSessions(ctx context.Context, userID string) error
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
// (self-service and admin) and a login as someone else in the same browser
// (End), and every "end every session of a user" (EndUser); and it ends the
// grants a live session drops to stay within store.MaxSessionGrants, and
// those of the sessions a sign-in ends past the cap on sessions per user
// (EndDropped).
type Ender struct {
	Sessions    Sessions
	Grants      Grants
	Clients     Clients
	Backchannel Backchannel // nil: no back-channel logout is sent
	Audit       Auditor
	Now         func() time.Time

	// Users and Cutoff are what EndUser needs (End needs neither).
	Users  UserSessions
	Cutoff Cutoff
	// Log receives what EndUser could not queue (nil: discarded).
	Log *slog.Logger
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
	if err := e.endGrants(ctx, bs.UserID, grants, now); err != nil {
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
	if err := e.endGrants(ctx, bs.UserID, late, now); err != nil {
		return fmt.Errorf("signout: grants recorded while the session ended: %w", err)
	}
	return nil
}

// EndUser ends every session of a user ("end every session": password
// change, reset or temporary password, deactivation, deletion, role or
// membership removal, MFA reset, admin revoke) and sends the back-channel
// logout that ending their browser sessions one by one would send.
//
// In order: the user's live browser sessions are read; a logout token is
// queued, durably, for each of their grants whose client has a
// backchannel_logout_uri (offline grants included, with the grant's sid, as
// End queues them); then the cut-off is written (Cutoff), which ends those
// sessions and everything else of the user's. Queueing first means that
// once the sessions are ended their notifications are already stored: a
// crash after the cut-off loses none. A crash or a failed cut-off after the
// queueing leaves the sessions alive and the relying parties told to end
// theirs, which errs on the side of signing out; the caller answers an error
// and its retry queues again (receivers treat a repeated logout as one).
//
// The cut-off is the security boundary and the notification is best effort:
// when the sessions cannot be read or the queueing fails, the cut-off is
// written all the same, the failure is audited (logout.backchannel_failed,
// details.error "not queued") and logged, and EndUser answers as the
// cut-off does. Only sessions live when they are read are notified: one
// already ended (by logout or an earlier cut-off) is not told again. A
// browser session or grant recorded in the moment between the reading and
// the cut-off is ended by the cut-off without a notification; closing that
// window needs the store to return what the cut-off ended.
//
// Refresh families not made in a browser session (the password grant, a
// password change's fresh session) are ended by the cut-off without a
// logout token: back-channel logout reports the end of an OP (browser)
// session, as everywhere else in Portcullis (token revocation and
// /auth/logout send none either).
func (e *Ender) EndUser(ctx context.Context, userID string) error {
	if e.Cutoff == nil || e.Users == nil {
		return errors.New("signout: EndUser needs Users and Cutoff")
	}
	now := e.now()
	var qerr error
	sessions, err := e.Users.ListBrowserSessions(ctx, userID, now)
	if err != nil {
		qerr = fmt.Errorf("read the user's browser sessions: %w", err)
	} else {
		var grants []store.SessionGrant
		for _, bs := range sessions {
			grants = append(grants, bs.Grants...)
		}
		qerr = e.queueBackchannel(ctx, userID, grants, now)
	}
	if err := e.Cutoff.EndUserSessions(ctx, userID); err != nil {
		return fmt.Errorf("signout: end every session of the user: %w", err)
	}
	if qerr != nil {
		e.notQueued(ctx, userID, "every session of the user ended, but no back-channel logout was queued", qerr)
	}
	return nil
}

// EndDropped ends the grants a live browser session of userID dropped when
// it reached store.MaxSessionGrants (what AddBrowserSessionGrant and
// AddBrowserSessionGrantWithCode return), and those of the sessions of
// userID a new one ended past the cap on sessions per user (what
// CreateBrowserSession returns), as End ends a session's grants:
// the refresh families of those without offline_access (their access tokens
// follow) and a back-channel logout token for each grant of a client with a
// backchannel_logout_uri, offline grants included. The session no longer
// names a dropped grant, so its end could not tell the grant's relying
// party; the grant's sid is told now instead, which keeps "ending a browser
// session notifies every relying party of its grants" true. Both steps are
// attempted whatever the other's outcome (the drop cannot be retried: a
// later grant drops the next one); the error joins their failures.
func (e *Ender) EndDropped(ctx context.Context, userID string, dropped []store.SessionGrant) error {
	if len(dropped) == 0 {
		return nil
	}
	now := e.now()
	var errs []error
	if err := e.endFamilies(ctx, dropped); err != nil {
		errs = append(errs, err)
	}
	if err := e.queueBackchannel(ctx, userID, dropped, now); err != nil {
		e.notQueued(ctx, userID, "grants dropped from a browser session, but no back-channel logout was queued", err)
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("signout: end the grants dropped from a browser session: %w", err)
	}
	return nil
}

// endGrants ends grants of a browser session of userID: the families of
// those without offline_access, then back-channel logout queued for all of
// them.
func (e *Ender) endGrants(ctx context.Context, userID string, grants []store.SessionGrant, now time.Time) error {
	if err := e.endFamilies(ctx, grants); err != nil {
		return fmt.Errorf("signout: %w", err)
	}
	if err := e.queueBackchannel(ctx, userID, grants, now); err != nil {
		return fmt.Errorf("signout: %w", err)
	}
	return nil
}

// endFamilies ends the refresh families (and their access tokens) of the
// grants without offline_access.
func (e *Ender) endFamilies(ctx context.Context, grants []store.SessionGrant) error {
	var sids []string
	for _, g := range grants {
		if !g.Offline {
			sids = append(sids, g.SID)
		}
	}
	if len(sids) > 0 {
		if err := e.Grants.EndGrants(ctx, sids); err != nil {
			return fmt.Errorf("end the session's grants: %w", err)
		}
	}
	return nil
}

// notQueued logs and audits (logout.backchannel_failed, details.error "not
// queued") back-channel logout of userID that could not be queued and will
// not be retried.
func (e *Ender) notQueued(ctx context.Context, userID, msg string, err error) {
	e.log().Error(msg, "user_id", userID, "err", err)
	e.Audit.Record(ctx, store.AuditEvent{Action: backchannel.AuditAction, Outcome: store.OutcomeFailure,
		TargetID: userID, Details: map[string]string{"error": "not queued", "will_retry": "false"}})
}

// queueBackchannel queues one logout token per grant whose client has a
// back-channel logout URI. A client that cannot be read fails the whole
// queueing (nothing half-queued: the queue takes all or none).
func (e *Ender) queueBackchannel(ctx context.Context, userID string, grants []store.SessionGrant, now time.Time) error {
	if e.Backchannel == nil || len(grants) == 0 {
		return nil
	}
	// to is where a client's deliveries go: its URI ("" for none) and its
	// organisation (whose deliveries reach only public addresses).
	type to struct{ uri, tenantID string }
	tos := map[string]to{}
	var ds []store.BackchannelLogout
	seen := map[string]bool{}
	for _, g := range grants {
		if seen[g.SID] {
			continue
		}
		seen[g.SID] = true
		dest, known := tos[g.ClientID]
		if !known {
			c, err := e.Clients.GetClient(ctx, g.ClientID)
			switch {
			case errors.Is(err, store.ErrNotFound):
				// Deleted since: there is no one to tell.
			case err != nil:
				return fmt.Errorf("read client %s for back-channel logout: %w", g.ClientID, err)
			default:
				dest = to{uri: c.BackchannelLogoutURI, tenantID: c.TenantID}
			}
			tos[g.ClientID] = dest
		}
		if dest.uri == "" {
			continue
		}
		ds = append(ds, store.BackchannelLogout{ClientID: g.ClientID, URI: dest.uri, Subject: userID, SID: g.SID,
			TenantID: dest.tenantID, NextAttemptAt: now, CreatedAt: now})
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

func (e *Ender) log() *slog.Logger {
	if e.Log != nil {
		return e.Log
	}
	return slog.New(slog.DiscardHandler)
}

func (e *Ender) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

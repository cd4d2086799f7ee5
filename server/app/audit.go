package app

import (
	"context"
	"log/slog"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// AuditStore appends audit events, a login's with its user's last-login
// time (*sqlstore.Store).
type AuditStore interface {
	AppendAudit(ctx context.Context, e *store.AuditEvent) error
	RecordLogin(ctx context.Context, e *store.AuditEvent) error
}

// Auditor records each audit event in the database and as one structured
// log line. Recording never fails the request: a failed write is logged.
type Auditor struct {
	store AuditStore
	log   *slog.Logger
}

// NewAuditor returns an Auditor.
func NewAuditor(st AuditStore, log *slog.Logger) *Auditor { return &Auditor{store: st, log: log} }

// Record stores and logs e. Details must never hold secrets.
func (a *Auditor) Record(ctx context.Context, e store.AuditEvent) {
	a.write(ctx, &e, a.store.AppendAudit)
}

// RecordLogin records a successful login, e its login.succeeded event
// with Time the login's time and TargetID the user: the user's last-login
// time and the event in one write (sqlstore.Store.RecordLogin), then the
// event's log line, as Record.
func (a *Auditor) RecordLogin(ctx context.Context, e store.AuditEvent) {
	a.write(ctx, &e, a.store.RecordLogin)
}

// write stores e with put (AppendAudit, RecordLogin) and logs it: the
// one place an event is written and logged, each detail cut to
// store.MaxAuditDetail bytes of clean text. A failed write is logged, not
// returned (RecordLogin's ErrNotFound, a user deleted meanwhile, has stored
// the event).
func (a *Auditor) write(ctx context.Context, e *store.AuditEvent, put func(context.Context, *store.AuditEvent) error) {
	// Details may quote a request: the stored and the logged event keep
	// each as store.CleanDetails makes it.
	e.Details = store.CleanDetails(e.Details)
	// The write must not be lost because the client went away.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := put(wctx, e); err != nil {
		a.log.Error("audit write failed", "action", e.Action, "err", err)
	}
	attrs := []any{"audit_id", e.ID, "action", e.Action, "outcome", string(e.Outcome), "actor_id", e.ActorID,
		"target_id", e.TargetID, "client_id", e.ClientID, "ip", e.IP, "user_agent", e.UserAgent}
	if len(e.Details) > 0 {
		attrs = append(attrs, "details", e.Details)
	}
	a.log.Info("audit", attrs...)
}

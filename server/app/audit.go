package app

import (
	"context"
	"log/slog"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// AuditStore appends audit events.
type AuditStore interface {
	AppendAudit(ctx context.Context, e *store.AuditEvent) error
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
	// The write must not be lost because the client went away.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := a.store.AppendAudit(wctx, &e); err != nil {
		a.log.Error("audit event not stored", "action", e.Action, "err", err)
	}
	attrs := []any{"audit_id", e.ID, "action", e.Action, "outcome", string(e.Outcome), "actor_id", e.ActorID,
		"target_id", e.TargetID, "client_id", e.ClientID, "ip", e.IP, "user_agent", e.UserAgent}
	if len(e.Details) > 0 {
		attrs = append(attrs, "details", e.Details)
	}
	a.log.Info("audit", attrs...)
}

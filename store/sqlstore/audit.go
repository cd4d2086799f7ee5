package sqlstore

import (
	"context"
	"encoding/json"
	"fmt"

	"gorm.io/gorm"

	"github.com/portcullis-auth/portcullis/store"
)

// AppendAudit stores an audit event, filling ID and, when zero, Time.
func (s *Store) AppendAudit(ctx context.Context, e *store.AuditEvent) error {
	row, details, err := s.auditRowOf(e)
	if err != nil {
		return fmt.Errorf("append audit: %w", err)
	}
	if err := s.db.WithContext(ctx).Create(&row).Error; err != nil {
		return mapErr("append audit", err)
	}
	e.ID, e.Time, e.Details = row.ID, row.OccurredAt, details
	return nil
}

// auditRowOf is the row of a new audit event e (a new ID; Time, when zero,
// now) and the details it stores. Its IP address and User-Agent are kept
// as store.CleanRequestMeta makes them, as the server reads them, and its
// details as store.CleanDetails makes them: text PostgreSQL refuses
// (invalid UTF-8, NUL) must never cost the event, and no detail is kept
// beyond store.MaxAuditDetail bytes.
func (s *Store) auditRowOf(e *store.AuditEvent) (auditRow, map[string]string, error) {
	if e == nil || e.Action == "" {
		return auditRow{}, nil, fmt.Errorf("action is required")
	}
	details := store.CleanDetails(e.Details)
	if details == nil {
		details = map[string]string{}
	}
	b, err := json.Marshal(details)
	if err != nil {
		return auditRow{}, nil, fmt.Errorf("encode details: %w", err)
	}
	t := dbTime(e.Time)
	if t.IsZero() {
		t = s.clock()
	}
	ip, ua := store.CleanRequestMeta(e.IP, e.UserAgent)
	return auditRow{
		ID:         newID(AuditIDPrefix),
		OccurredAt: t,
		Action:     e.Action,
		Outcome:    string(e.Outcome),
		ActorID:    e.ActorID,
		TargetID:   e.TargetID,
		ClientID:   e.ClientID,
		IP:         ip,
		UserAgent:  ua,
		Details:    string(b),
		TenantID:   e.TenantID,
	}, details, nil
}

// ListAudit returns one page of audit events, newest first, filtered by
// action, actor and target (exact) and by time (Since inclusive, Until
// exclusive). Limit defaults to 50 and is capped at 200.
func (s *Store) ListAudit(ctx context.Context, f store.AuditFilter) (store.Page[store.AuditEvent], error) {
	var page store.Page[store.AuditEvent]
	cur, hasCur, err := decodeCursor(f.Cursor)
	if err != nil {
		return page, fmt.Errorf("list audit: %w", err)
	}
	limit := pageLimit(f.Limit)
	q := s.db.WithContext(ctx).Model(&auditRow{})
	if f.Action != "" {
		q = q.Where("action = ?", f.Action)
	}
	if f.ActorID != "" {
		q = q.Where("actor_id = ?", f.ActorID)
	}
	if f.TargetID != "" {
		q = q.Where("target_id = ?", f.TargetID)
	}
	if f.TenantID != "" {
		q = q.Where("tenant_id = ?", f.TenantID)
	}
	if !f.Since.IsZero() {
		q = q.Where("occurred_at >= ?", dbTime(f.Since))
	}
	if !f.Until.IsZero() {
		q = q.Where("occurred_at < ?", dbTime(f.Until))
	}
	if hasCur {
		q = q.Where("(occurred_at < ? OR (occurred_at = ? AND id < ?))", cur.T, cur.T, cur.I)
	}
	var rows []auditRow
	if err := q.Order("occurred_at DESC, id DESC").Limit(limit + 1).Find(&rows).Error; err != nil {
		return page, mapErr("list audit", err)
	}
	if len(rows) > limit {
		rows = rows[:limit]
		last := rows[len(rows)-1]
		page.NextCursor = EncodeCursor(last.OccurredAt, last.ID)
	}
	page.Items = make([]store.AuditEvent, 0, len(rows))
	for _, r := range rows {
		e, err := r.toEvent()
		if err != nil {
			return page, fmt.Errorf("list audit: %w", err)
		}
		page.Items = append(page.Items, e)
	}
	return page, nil
}

// ScrubAuditPII removes a user's personal data from the audit trail, keeping
// the events and their ids: events the user performed (or that name the user
// as target with no other actor) lose their IP, user agent and details;
// events another actor performed on the user lose their details. DeleteUser
// calls it in its own transaction.
func (s *Store) ScrubAuditPII(ctx context.Context, userID string) error {
	if err := s.tx(ctx, func(tx *gorm.DB) error { return scrubAuditTx(tx, userID) }); err != nil {
		return mapErr("scrub audit", err)
	}
	return nil
}

func scrubAuditTx(tx *gorm.DB, userID string) error {
	if userID == "" {
		return nil
	}
	err := tx.Model(&auditRow{}).
		Where("actor_id = ? OR (target_id = ? AND actor_id = '')", userID, userID).
		Updates(map[string]any{"ip": "", "user_agent": "", "details": "{}"}).Error
	if err != nil {
		return mapErr("scrub audit events by the user", err)
	}
	err = tx.Model(&auditRow{}).Where("target_id = ?", userID).Update("details", "{}").Error
	if err != nil {
		return mapErr("scrub audit events about the user", err)
	}
	return nil
}

package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"gorm.io/gorm"

	"github.com/portcullis-auth/portcullis/store"
)

var _ store.BackchannelQueue = (*Store)(nil)

// maxBackchannelError bounds the LastError kept per delivery (bytes).
const maxBackchannelError = 500

type backchannelRow struct {
	ID            string    `gorm:"column:id;primaryKey"`
	ClientID      string    `gorm:"column:client_id"`
	URI           string    `gorm:"column:uri"`
	Subject       string    `gorm:"column:subject"`
	SID           string    `gorm:"column:sid"`
	TenantID      string    `gorm:"column:tenant_id"`
	Attempts      int       `gorm:"column:attempts"`
	NextAttemptAt time.Time `gorm:"column:next_attempt_at"`
	CreatedAt     time.Time `gorm:"column:created_at;autoCreateTime:false"`
	LastError     string    `gorm:"column:last_error"`
}

func (backchannelRow) TableName() string { return "backchannel_logouts" }

func (r backchannelRow) toDelivery() store.BackchannelLogout {
	return store.BackchannelLogout{ID: r.ID, ClientID: r.ClientID, URI: r.URI, Subject: r.Subject, SID: r.SID, TenantID: r.TenantID,
		Attempts: r.Attempts, NextAttemptAt: readTime(r.NextAttemptAt), CreatedAt: readTime(r.CreatedAt), LastError: r.LastError}
}

// shortError returns e cut to maxBackchannelError bytes on a rune boundary.
func shortError(e string) string {
	if len(e) <= maxBackchannelError {
		return e
	}
	e = e[:maxBackchannelError]
	for len(e) > 0 && !utf8.ValidString(e) {
		e = e[:len(e)-1]
	}
	return e
}

// EnqueueBackchannelLogouts implements store.BackchannelQueue in one
// transaction. Each delivery needs its ID, ClientID, URI, Subject and SID;
// a zero CreatedAt is the store's clock and a zero NextAttemptAt is
// CreatedAt (due at once); times are kept at microsecond precision. An ID
// already queued is store.ErrAlreadyExists, and nothing is stored.
func (s *Store) EnqueueBackchannelLogouts(ctx context.Context, ds []store.BackchannelLogout) error {
	if len(ds) == 0 {
		return nil
	}
	rows := make([]backchannelRow, len(ds))
	for i, d := range ds {
		if d.ID == "" || d.ClientID == "" || d.URI == "" || d.Subject == "" || d.SID == "" || d.Attempts < 0 {
			return errors.New("enqueue back-channel logouts: id, client, uri, subject and sid are required")
		}
		created := dbTime(d.CreatedAt)
		if created.IsZero() {
			created = s.clock()
		}
		next := dbTime(d.NextAttemptAt)
		if next.IsZero() {
			next = created
		}
		rows[i] = backchannelRow{ID: d.ID, ClientID: d.ClientID, URI: d.URI, Subject: d.Subject, SID: d.SID, TenantID: d.TenantID,
			Attempts: d.Attempts, NextAttemptAt: next, CreatedAt: created, LastError: shortError(d.LastError)}
	}
	err := s.tx(ctx, func(tx *gorm.DB) error { return tx.CreateInBatches(rows, 100).Error })
	return mapErr("enqueue back-channel logouts", err)
}

// ClaimBackchannelLogouts implements store.BackchannelQueue. Each due row
// is ranked as store.BackchannelClaim says (ROW_NUMBER over the client's
// due rows plus what the caller has in flight of that client), and the
// lowest ranks are claimed. On PostgreSQL one UPDATE claims the chosen rows
// that its sub-select locks FOR UPDATE SKIP LOCKED (a window function cannot
// share a query level with FOR UPDATE, hence the id IN): a concurrent
// claimer skips them, and a row claimed and committed meanwhile is
// re-checked against next_attempt_at and left out. On SQLite the select and
// the update run in one transaction, which holds the write lock. Either way
// no due delivery is handed to two callers within its lease. The
// deliveries come back in the claim's order (store.BackchannelClaim.Pick),
// with NextAttemptAt = Now+Lease.
func (s *Store) ClaimBackchannelLogouts(ctx context.Context, c store.BackchannelClaim) ([]store.BackchannelLogout, error) {
	if c.Limit <= 0 {
		return nil, nil
	}
	if c.Lease <= 0 {
		return nil, errors.New("claim back-channel logouts: the lease must be positive")
	}
	now := dbTime(c.Now)
	until := dbTime(now.Add(c.Lease))
	// ranked selects the ids of the due rows to claim; its arguments follow
	// it in args.
	inFlight, args := "0", []any{}
	if ids := slices.Sorted(maps.Keys(c.InFlight)); len(ids) > 0 {
		var b strings.Builder
		b.WriteString("CASE client_id")
		for _, id := range ids {
			if n := c.InFlight[id]; n > 0 {
				b.WriteString(" WHEN ? THEN " + strconv.Itoa(n))
				args = append(args, id)
			}
		}
		b.WriteString(" ELSE 0 END")
		if len(args) > 0 {
			inFlight = b.String()
		}
	}
	perClient := ""
	if c.PerClient > 0 {
		perClient = "WHERE r.fair_rank <= " + strconv.Itoa(c.PerClient)
	}
	ranked := `SELECT r.id FROM (SELECT id, next_attempt_at,
			ROW_NUMBER() OVER (PARTITION BY client_id ORDER BY next_attempt_at, id) + ` + inFlight + ` AS fair_rank
			FROM backchannel_logouts WHERE next_attempt_at <= ?) r
		` + perClient + ` ORDER BY r.fair_rank, r.next_attempt_at, r.id LIMIT ?`
	args = append(args, now, c.Limit)
	// claimed is a claimed row with when it was due (what the order is by).
	type claimed struct {
		Row backchannelRow `gorm:"embedded"`
		Due time.Time      `gorm:"column:due"`
	}
	var got []claimed
	var err error
	if s.dialect == DialectPostgres {
		err = s.db.WithContext(ctx).Raw(`UPDATE backchannel_logouts b SET next_attempt_at = ?
			FROM (SELECT id, next_attempt_at AS due FROM backchannel_logouts
				WHERE id IN (`+ranked+`) AND next_attempt_at <= ? FOR UPDATE SKIP LOCKED) d
			WHERE b.id = d.id
			RETURNING b.id, b.client_id, b.uri, b.subject, b.sid, b.tenant_id, b.attempts, b.next_attempt_at, b.created_at,
				b.last_error, d.due`, append(append([]any{until}, args...), now)...).Scan(&got).Error
	} else {
		err = s.tx(ctx, func(tx *gorm.DB) error {
			got = nil
			var rows []backchannelRow
			if err := tx.Where("id IN ("+ranked+")", args...).Find(&rows).Error; err != nil {
				return err
			}
			if len(rows) == 0 {
				return nil
			}
			ids := make([]string, len(rows))
			for i, r := range rows {
				ids[i] = r.ID
				cl := claimed{Row: r, Due: r.NextAttemptAt}
				cl.Row.NextAttemptAt = until
				got = append(got, cl)
			}
			return tx.Model(&backchannelRow{}).Where("id IN ?", ids).Update("next_attempt_at", until).Error
		})
	}
	if err != nil {
		return nil, mapErr("claim back-channel logouts", err)
	}
	// Order them as the claim ranked them: Pick over the claimed rows, at
	// their due time, keeps them all and gives the same ranks.
	due := make([]store.BackchannelLogout, len(got))
	for i, r := range got {
		due[i] = r.Row.toDelivery()
		due[i].NextAttemptAt = readTime(r.Due)
	}
	c.Limit = len(due)
	out := c.Pick(due)
	for i := range out {
		out[i].NextAttemptAt = readTime(until)
	}
	return out, nil
}

// CompleteBackchannelLogout implements store.BackchannelQueue.
func (s *Store) CompleteBackchannelLogout(ctx context.Context, id string) error {
	err := s.db.WithContext(ctx).Where("id = ?", id).Delete(&backchannelRow{}).Error
	return mapErr("complete back-channel logout", err)
}

// RetryBackchannelLogout implements store.BackchannelQueue in one UPDATE;
// lastErr is kept to its first 500 bytes.
func (s *Store) RetryBackchannelLogout(ctx context.Context, id string, next time.Time, lastErr string) error {
	res := s.db.WithContext(ctx).Exec(`UPDATE backchannel_logouts SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?
		WHERE id = ?`, dbTime(next), shortError(lastErr), id)
	if res.Error != nil {
		return mapErr("retry back-channel logout", res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("retry back-channel logout: %w", store.ErrNotFound)
	}
	return nil
}

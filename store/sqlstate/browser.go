package sqlstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
)

var (
	_ store.SingleUse       = (*State)(nil)
	_ store.BrowserSessions = (*State)(nil)
)

type onceRow struct {
	Kind      string     `gorm:"column:kind;primaryKey"`
	KeyHash   []byte     `gorm:"column:key_hash;primaryKey"`
	Value     []byte     `gorm:"column:value"`
	ExpiresAt time.Time  `gorm:"column:expires_at"`
	TakenAt   *time.Time `gorm:"column:taken_at"`
}

func (onceRow) TableName() string { return "once_records" }

// PutOnce implements store.SingleUse. A value that expires at or before
// the state's clock is refused.
func (s *State) PutOnce(ctx context.Context, kind string, keyHash, value []byte, expiresAt time.Time) error {
	if kind == "" || len(keyHash) == 0 {
		return errors.New("sql token state: put once: kind and key hash are required")
	}
	if !expiresAt.After(s.now()) {
		return errors.New("sql token state: put once: already expired")
	}
	if value == nil {
		value = []byte{}
	}
	row := onceRow{Kind: kind, KeyHash: keyHash, Value: value, ExpiresAt: ms(expiresAt)}
	if err := s.db.WithContext(ctx).Create(&row).Error; err != nil {
		if sqlstore.IsUniqueViolation(err) {
			return fmt.Errorf("sql token state: put once: %w", store.ErrAlreadyExists)
		}
		return dbErr("put once", err)
	}
	return nil
}

// TakeOnce implements store.SingleUse with one conditional UPDATE … WHERE
// taken_at IS NULL: of concurrent takes, on any number of processes, the
// database lets exactly one change the row. The taken row's expires_at
// moves to its tombstone's end, store.TakenKeptFor(kind) after now, when
// that is later; Purge deletes it after.
func (s *State) TakeOnce(ctx context.Context, kind string, keyHash []byte, now time.Time) ([]byte, error) {
	if len(keyHash) == 0 {
		return nil, fmt.Errorf("sql token state: take once: %w", store.ErrNotFound)
	}
	now = ms(now)
	keep := now.Add(store.TakenKeptFor(kind))
	var won []struct {
		Value []byte `gorm:"column:value"`
	}
	err := s.db.WithContext(ctx).Raw(`UPDATE once_records
		SET taken_at = ?, expires_at = CASE WHEN expires_at < ? THEN ? ELSE expires_at END
		WHERE kind = ? AND key_hash = ? AND taken_at IS NULL AND expires_at > ?
		RETURNING value`, now, keep, keep, kind, keyHash, now).Scan(&won).Error
	if err != nil {
		return nil, dbErr("take once", err)
	}
	if len(won) == 1 {
		return won[0].Value, nil
	}
	v, err := s.PeekOnce(ctx, kind, keyHash, now)
	if err == nil {
		// Not taken, yet the update changed nothing: it expired meanwhile.
		return nil, fmt.Errorf("sql token state: take once: %w", store.ErrNotFound)
	}
	return v, err
}

// PeekOnce implements store.SingleUse.
func (s *State) PeekOnce(ctx context.Context, kind string, keyHash []byte, now time.Time) ([]byte, error) {
	var row onceRow
	err := s.db.WithContext(ctx).Where("kind = ? AND key_hash = ?", kind, keyHash).Take(&row).Error
	switch {
	case errors.Is(err, gorm.ErrRecordNotFound):
		return nil, fmt.Errorf("sql token state: peek once: %w", store.ErrNotFound)
	case err != nil:
		return nil, dbErr("peek once", err)
	case !ms(now).Before(ms(row.ExpiresAt)):
		return nil, fmt.Errorf("sql token state: peek once: %w", store.ErrNotFound)
	case row.TakenAt != nil:
		return row.Value, fmt.Errorf("sql token state: once: %w", store.ErrTokenUsed)
	}
	return row.Value, nil
}

type browserSessionRow struct {
	ID             string     `gorm:"column:id;primaryKey"`
	Lineage        string     `gorm:"column:lineage"` // "" in a row older than migration 15 (read as ID)
	CookieHash     []byte     `gorm:"column:cookie_hash"`
	UserID         string     `gorm:"column:user_id"`
	AuthTime       time.Time  `gorm:"column:auth_time"`
	AMR            string     `gorm:"column:amr"`
	Remember       bool       `gorm:"column:remember"`
	CreatedAt      time.Time  `gorm:"column:created_at;autoCreateTime:false"`
	LastUsedAt     time.Time  `gorm:"column:last_used_at"`
	IdleTTLMS      int64      `gorm:"column:idle_ttl_ms"`
	IdleExpiresAt  time.Time  `gorm:"column:idle_expires_at"`
	AbsoluteExpiry time.Time  `gorm:"column:absolute_expiry"`
	IP             string     `gorm:"column:ip"`
	UserAgent      string     `gorm:"column:user_agent"`
	ClientIDs      string     `gorm:"column:client_ids"`
	Grants         string     `gorm:"column:grants"`
	EndedAt        *time.Time `gorm:"column:ended_at"`
}

func (browserSessionRow) TableName() string { return "browser_sessions" }

func encodeStrings(l []string) string {
	if l == nil {
		l = []string{}
	}
	b, _ := json.Marshal(l) // cannot fail for []string
	return string(b)
}

func decodeStrings(s string) ([]string, error) {
	var out []string
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		return nil, fmt.Errorf("corrupt browser session: %w", err)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// grantJSON is a store.SessionGrant as browser_sessions.grants keeps it.
type grantJSON struct {
	SID       string `json:"sid"`
	ClientID  string `json:"client_id"`
	Offline   bool   `json:"offline,omitempty"`
	GrantedAt int64  `json:"granted_at"` // Unix ms
}

func encodeGrants(gs []store.SessionGrant) (string, error) {
	out := make([]grantJSON, len(gs))
	for i, g := range gs {
		if g.SID == "" || g.ClientID == "" {
			return "", errors.New("invalid grant: sid and client id are required")
		}
		out[i] = grantJSON{SID: g.SID, ClientID: g.ClientID, Offline: g.Offline, GrantedAt: g.GrantedAt.UnixMilli()}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return "", fmt.Errorf("encode grants: %w", err)
	}
	return string(b), nil
}

func decodeGrants(s string) ([]store.SessionGrant, error) {
	if s == "" { // not read (FindBrowserSession omits the column)
		return nil, nil
	}
	var in []grantJSON
	if err := json.Unmarshal([]byte(s), &in); err != nil {
		return nil, fmt.Errorf("corrupt browser session grants: %w", err)
	}
	if len(in) == 0 {
		return nil, nil
	}
	out := make([]store.SessionGrant, len(in))
	for i, g := range in {
		out[i] = store.SessionGrant{SID: g.SID, ClientID: g.ClientID, Offline: g.Offline, GrantedAt: time.UnixMilli(g.GrantedAt).UTC()}
	}
	return out, nil
}

func (r browserSessionRow) toSession() (store.BrowserSession, error) {
	amr, err := decodeStrings(r.AMR)
	if err != nil {
		return store.BrowserSession{}, err
	}
	clients, err := decodeStrings(r.ClientIDs)
	if err != nil {
		return store.BrowserSession{}, err
	}
	grants, err := decodeGrants(r.Grants)
	if err != nil {
		return store.BrowserSession{}, err
	}
	lineage := r.Lineage
	if lineage == "" {
		lineage = r.ID
	}
	return store.BrowserSession{
		ID: r.ID, Lineage: lineage, UserID: r.UserID, AuthTime: ms(r.AuthTime), AMR: amr, Remember: r.Remember,
		CreatedAt: ms(r.CreatedAt), LastUsedAt: ms(r.LastUsedAt), IdleTTL: time.Duration(r.IdleTTLMS) * time.Millisecond,
		AbsoluteExpiry: ms(r.AbsoluteExpiry), IP: r.IP, UserAgent: r.UserAgent, ClientIDs: clients, Grants: grants,
	}, nil
}

// liveSession is the condition of a session that may be found at now: not
// ended, not idle or past its absolute expiry, and authenticated after the
// user's cut-off (the durable record of RevokeUserSessions).
const liveSession = `ended_at IS NULL AND absolute_expiry > ? AND idle_expires_at > ?
	AND NOT EXISTS (SELECT 1 FROM token_revocations r
		WHERE r.kind = 'user' AND r.value = browser_sessions.user_id AND r.at >= browser_sessions.auth_time)`

// CreateBrowserSession implements store.BrowserSessions. A session whose
// AuthTime is at or before its user's cut-off is refused with
// store.ErrSessionsEnded, under the same per-user lock as CreateFamily and
// RevokeUserSessions; a taken id or cookie hash is store.ErrAlreadyExists.
// In the same transaction, under that lock, the user's oldest live
// sessions past the cap are ended (endOverCap).
func (s *State) CreateBrowserSession(ctx context.Context, bs store.BrowserSession, cookieHash []byte) ([]store.EndedBrowserSession, error) {
	if bs.ID == "" || bs.UserID == "" || len(cookieHash) == 0 || bs.AbsoluteExpiry.IsZero() {
		return nil, errors.New("sql token state: create browser session: id, user, cookie hash and absolute expiry are required")
	}
	created := bs.CreatedAt
	if created.IsZero() {
		created = s.now()
	}
	created = ms(created)
	last := ms(bs.LastUsedAt)
	if bs.LastUsedAt.IsZero() {
		last = created
	}
	auth := ms(bs.AuthTime)
	if bs.AuthTime.IsZero() {
		auth = created
	}
	grants, err := encodeGrants(bs.Grants)
	if err != nil {
		return nil, fmt.Errorf("sql token state: create browser session: %w", err)
	}
	lineage := bs.Lineage
	if lineage == "" {
		lineage = bs.ID
	}
	// Text PostgreSQL refuses (invalid UTF-8, NUL) must never cost a sign-in.
	ip, ua := store.CleanRequestMeta(bs.IP, bs.UserAgent)
	row := browserSessionRow{
		ID: bs.ID, Lineage: lineage, CookieHash: cookieHash, UserID: bs.UserID, AuthTime: auth, AMR: encodeStrings(bs.AMR),
		Remember: bs.Remember, CreatedAt: created, LastUsedAt: last, IdleTTLMS: bs.IdleTTL.Milliseconds(),
		IdleExpiresAt: idleExpiry(last, bs.IdleTTL, ms(bs.AbsoluteExpiry)), AbsoluteExpiry: ms(bs.AbsoluteExpiry),
		IP: ip, UserAgent: ua, ClientIDs: encodeStrings(bs.ClientIDs), Grants: grants,
	}
	var ended []store.EndedBrowserSession
	err = s.createForUser(ctx, "create browser session", bs.UserID, auth, func(tx *gorm.DB) error {
		var err error
		ended, err = s.endOverCap(tx, bs.UserID, last)
		return err
	}, &row)
	if err != nil {
		return nil, err
	}
	return ended, nil
}

// endedSessionRow is what endOverCap reads of a session it ends.
type endedSessionRow struct {
	ID        string    `gorm:"column:id"`
	CreatedAt time.Time `gorm:"column:created_at"`
	Grants    string    `gorm:"column:grants"`
}

// endOverCap ends the user's oldest live browser sessions (by creation,
// then id) so that one more fits under the cap, and returns them, oldest
// first, with the grants each held; nothing without a cap. It runs in the
// creation's transaction under the user's lock (createForUser), so
// concurrent creations count each other; one UPDATE … RETURNING ends them
// and reads their grants, and AddBrowserSessionGrant locks the same rows,
// so no grant falls between.
func (s *State) endOverCap(tx *gorm.DB, userID string, now time.Time) ([]store.EndedBrowserSession, error) {
	if s.maxSes <= 0 {
		return nil, nil
	}
	var rows []endedSessionRow
	err := tx.Raw(`UPDATE browser_sessions SET ended_at = ?
		WHERE user_id = ? AND `+liveSession+`
		AND id NOT IN (SELECT id FROM browser_sessions WHERE user_id = ? AND `+liveSession+`
			ORDER BY created_at DESC, id DESC LIMIT ?)
		RETURNING id, created_at, grants`,
		now, userID, now, now, userID, now, now, s.maxSes-1).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("end the oldest browser sessions over the cap: %w", err)
	}
	slices.SortFunc(rows, func(a, b endedSessionRow) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	ended := make([]store.EndedBrowserSession, 0, len(rows))
	for _, r := range rows {
		gs, err := decodeGrants(r.Grants)
		if err != nil {
			return nil, fmt.Errorf("end the oldest browser sessions over the cap: %w", err)
		}
		ended = append(ended, store.EndedBrowserSession{ID: r.ID, Grants: gs})
	}
	return ended, nil
}

// FindBrowserSession implements store.BrowserSessions: one query finds the
// live session, one conditional update moves LastUsedAt (never back) and the
// idle expiry forward.
func (s *State) FindBrowserSession(ctx context.Context, cookieHash []byte, now time.Time) (store.BrowserSession, error) {
	if len(cookieHash) == 0 {
		return store.BrowserSession{}, fmt.Errorf("sql token state: find browser session: %w", store.ErrNotFound)
	}
	now = ms(now)
	db := s.db.WithContext(ctx)
	var row browserSessionRow
	err := db.Omit("grants").Where("cookie_hash = ? AND "+liveSession, cookieHash, now, now).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return store.BrowserSession{}, fmt.Errorf("sql token state: find browser session: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.BrowserSession{}, dbErr("find browser session", err)
	}
	if now.After(ms(row.LastUsedAt)) {
		idle := idleExpiry(now, time.Duration(row.IdleTTLMS)*time.Millisecond, ms(row.AbsoluteExpiry))
		res := db.Exec(`UPDATE browser_sessions SET last_used_at = ?, idle_expires_at = ?
			WHERE id = ? AND ended_at IS NULL AND last_used_at < ?`, now, idle, row.ID, now)
		if res.Error != nil {
			return store.BrowserSession{}, dbErr("touch browser session", res.Error)
		}
		row.LastUsedAt = now
	}
	bs, err := row.toSession()
	if err != nil {
		return store.BrowserSession{}, fmt.Errorf("sql token state: find browser session: %w", err)
	}
	return bs, nil
}

// KeepBrowserSession implements store.BrowserSessions: one query finds the
// live session continuing lineage (the newest, should a re-login race
// leave two), and, when store.TouchDue, one conditional update moves its
// last use (never back) and its idle expiry forward (never beyond its
// absolute expiry).
func (s *State) KeepBrowserSession(ctx context.Context, userID, lineage string, now time.Time) error {
	now = ms(now)
	row, err := s.lineageSession(ctx, "keep browser session", userID, lineage, now)
	if err != nil {
		return err
	}
	db := s.db.WithContext(ctx)
	idle := time.Duration(row.IdleTTLMS) * time.Millisecond
	if !store.TouchDue(ms(row.LastUsedAt), idle, now) {
		return nil
	}
	err = db.Exec(`UPDATE browser_sessions SET last_used_at = ?, idle_expires_at = ?
		WHERE id = ? AND ended_at IS NULL AND last_used_at < ?`,
		now, idleExpiry(now, idle, ms(row.AbsoluteExpiry)), row.ID, now).Error
	if err != nil {
		return dbErr("touch browser session", err)
	}
	return nil
}

// BrowserSessionLive implements store.BrowserSessions: KeepBrowserSession's
// query, without its update.
func (s *State) BrowserSessionLive(ctx context.Context, userID, lineage string, now time.Time) error {
	_, err := s.lineageSession(ctx, "check browser session", userID, lineage, ms(now))
	return err
}

// lineageSession is the live session of userID continuing lineage at now
// (the newest, should a re-login race leave two), with the columns
// KeepBrowserSession needs; ErrNotFound when there is none.
func (s *State) lineageSession(ctx context.Context, op, userID, lineage string, now time.Time) (browserSessionRow, error) {
	notFound := fmt.Errorf("sql token state: %s: %w", op, store.ErrNotFound)
	if userID == "" || lineage == "" {
		return browserSessionRow{}, notFound
	}
	var rows []browserSessionRow
	err := s.db.WithContext(ctx).Select("id", "last_used_at", "idle_ttl_ms", "absolute_expiry").
		Where("user_id = ? AND lineage = ? AND "+liveSession, userID, lineage, now, now).
		Order("created_at DESC").Limit(1).Find(&rows).Error
	if err != nil {
		return browserSessionRow{}, dbErr(op, err)
	}
	if len(rows) == 0 {
		return browserSessionRow{}, notFound
	}
	return rows[0], nil
}

// AddBrowserSessionGrantWithCode implements store.BrowserSessions: the
// code first, then the grant (a database round trip costs what it costs
// either way).
func (s *State) AddBrowserSessionGrantWithCode(ctx context.Context, userID, id string, g store.SessionGrant, code store.OnceRecord) ([]store.SessionGrant, error) {
	if err := s.PutOnce(ctx, code.Kind, code.KeyHash, code.Value, code.ExpiresAt); err != nil {
		return nil, err
	}
	return s.AddBrowserSessionGrant(ctx, userID, id, g)
}

// AddBrowserSessionGrant implements store.BrowserSessions in one
// transaction that locks the session's row (SELECT … FOR UPDATE on
// PostgreSQL; on SQLite every transaction holds the write lock), so that
// concurrent additions all land and none lands in a session ended (by
// EndBrowserSessionGrants or RevokeUserSessions, which update the same row)
// before it: store.ErrNotFound.
func (s *State) AddBrowserSessionGrant(ctx context.Context, userID, id string, g store.SessionGrant) ([]store.SessionGrant, error) {
	if g.SID == "" || g.ClientID == "" {
		return nil, errors.New("sql token state: add browser session grant: sid and client id are required")
	}
	var dropped []store.SessionGrant
	err := sqlstore.RunInTx(ctx, s.db, func(tx *gorm.DB) error {
		dropped = nil
		var row browserSessionRow
		err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Where("id = ? AND user_id = ? AND ended_at IS NULL", id, userID).Take(&row).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		ids, err := decodeStrings(row.ClientIDs)
		if err != nil {
			return err
		}
		if !slices.Contains(ids, g.ClientID) {
			ids = append(ids, g.ClientID)
		}
		grants, err := decodeGrants(row.Grants)
		if err != nil {
			return err
		}
		grants = append(grants, store.SessionGrant{SID: g.SID, ClientID: g.ClientID, Offline: g.Offline, GrantedAt: ms(g.GrantedAt)})
		if over := len(grants) - store.MaxSessionGrants; over > 0 {
			dropped, grants = slices.Clone(grants[:over]), grants[over:]
		}
		enc, err := encodeGrants(grants)
		if err != nil {
			return err
		}
		return tx.Exec("UPDATE browser_sessions SET client_ids = ?, grants = ? WHERE id = ?", encodeStrings(ids), enc, id).Error
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("sql token state: add browser session grant: %w", store.ErrNotFound)
	}
	if err != nil {
		return nil, dbErr("add browser session grant", err)
	}
	return dropped, nil
}

// BrowserSessionGrants implements store.BrowserSessions.
func (s *State) BrowserSessionGrants(ctx context.Context, userID, id string) ([]store.SessionGrant, error) {
	now := ms(s.now())
	var rows []struct {
		Grants string `gorm:"column:grants"`
	}
	err := s.db.WithContext(ctx).Model(&browserSessionRow{}).Select("grants").
		Where("id = ? AND user_id = ? AND "+liveSession, id, userID, now, now).Find(&rows).Error
	if err != nil {
		return nil, dbErr("browser session grants", err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("sql token state: browser session grants: %w", store.ErrNotFound)
	}
	gs, err := decodeGrants(rows[0].Grants)
	if err != nil {
		return nil, fmt.Errorf("sql token state: browser session grants: %w", err)
	}
	return gs, nil
}

// EndBrowserSessionGrants implements store.BrowserSessions: one UPDATE …
// RETURNING (PostgreSQL, SQLite ≥ 3.35) ends the session and reads its
// grants; AddBrowserSessionGrant locks the same row, so none falls between.
func (s *State) EndBrowserSessionGrants(ctx context.Context, id string, now time.Time) ([]store.SessionGrant, error) {
	var rows []struct {
		Grants string `gorm:"column:grants"`
	}
	err := s.db.WithContext(ctx).Raw("UPDATE browser_sessions SET ended_at = ? WHERE id = ? AND ended_at IS NULL RETURNING grants",
		ms(now), id).Scan(&rows).Error
	if err != nil {
		return nil, dbErr("end browser session", err)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	gs, err := decodeGrants(rows[0].Grants)
	if err != nil {
		return nil, fmt.Errorf("sql token state: end browser session: %w", err)
	}
	return gs, nil
}

// ListBrowserSessions implements store.BrowserSessions: newest first (by
// CreatedAt, then id).
func (s *State) ListBrowserSessions(ctx context.Context, userID string, now time.Time) ([]store.BrowserSession, error) {
	now = ms(now)
	var rows []browserSessionRow
	err := s.db.WithContext(ctx).Where("user_id = ? AND "+liveSession, userID, now, now).
		Order("created_at DESC").Order("id DESC").Find(&rows).Error
	if err != nil {
		return nil, dbErr("list browser sessions", err)
	}
	out := make([]store.BrowserSession, 0, len(rows))
	for _, r := range rows {
		bs, err := r.toSession()
		if err != nil {
			return nil, fmt.Errorf("sql token state: list browser sessions: %w", err)
		}
		out = append(out, bs)
	}
	return out, nil
}

// endUserBrowserSessions ends the user's browser sessions authenticated at
// or before cutoff (inside RevokeUserSessions's transaction).
func endUserBrowserSessions(tx *gorm.DB, userID string, cutoff, now time.Time) error {
	err := tx.Exec("UPDATE browser_sessions SET ended_at = ? WHERE user_id = ? AND ended_at IS NULL AND auth_time <= ?",
		now, userID, cutoff).Error
	if err != nil {
		return fmt.Errorf("end browser sessions: %w", err)
	}
	return nil
}

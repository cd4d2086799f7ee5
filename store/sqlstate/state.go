package sqlstate

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
)

// DefaultMaxAccessTokenTTL is the default bound on any access token's
// lifetime: session and user revocations are kept this long.
const DefaultMaxAccessTokenTTL = 24 * time.Hour

// rotateAttempts bounds how often RotateRefresh re-reads a family after
// losing a compare-and-swap inside one transaction.
const rotateAttempts = 3

// State is the SQL token state and revocation log. It is safe for concurrent
// use and for any number of processes sharing the database.
type State struct {
	db     *gorm.DB
	maxAT  time.Duration
	maxSes int
	now    func() time.Time

	purgeBatch int // rows per step of Purge; 0: defaultPurgeBatch (tests set fewer)
	// maxRotations is the most used hashes a family keeps:
	// store.MaxFamilyRotations, fewer in tests.
	maxRotations int
}

var (
	_ store.TokenState    = (*State)(nil)
	_ store.RevocationLog = (*State)(nil)
)

// Option configures New.
type Option func(*State)

// WithMaxAccessTokenTTL sets the bound on any access token's lifetime
// (default 24h): a session or user revocation is kept this long after it is
// made, when no access token it affects can still be valid. It must be at
// least the longest access-token lifetime of any client.
func WithMaxAccessTokenTTL(d time.Duration) Option {
	return func(s *State) {
		if d > 0 {
			s.maxAT = d
		}
	}
}

// WithMaxSessionsPerUser caps a user's live refresh families and, apart,
// their live browser sessions (0, the default: no cap): creating one more
// ends the oldest (CreateFamily, CreateBrowserSession).
func WithMaxSessionsPerUser(n int) Option {
	return func(s *State) { s.maxSes = max(n, 0) }
}

// WithClock sets the clock for the times the interface does not pass in
// (when a jti was revoked, a family's creation when unset). Default time.Now.
func WithClock(now func() time.Time) Option {
	return func(s *State) {
		if now != nil {
			s.now = now
		}
	}
}

// New returns the token state on db, the handle of a migrated sqlstore.Store
// (sqlstore.Store.DB()).
func New(db *gorm.DB, opts ...Option) *State {
	s := &State{db: db, maxAT: DefaultMaxAccessTokenTTL, now: time.Now, maxRotations: store.MaxFamilyRotations}
	for _, o := range opts {
		o(s)
	}
	return s
}

// ms normalises a time to what the state keeps: UTC, millisecond precision.
func ms(t time.Time) time.Time {
	return time.UnixMilli(t.UnixMilli()).UTC()
}

// dbErr wraps a database error with context, marking unreachable databases
// with store.ErrUnavailable.
func dbErr(what string, err error) error {
	return fmt.Errorf("sql token state: %s: %w", what, sqlstore.WrapUnavailable(err))
}

type familyRow struct {
	ID              string     `gorm:"column:id;primaryKey"`
	UserID          string     `gorm:"column:user_id"`
	ClientID        string     `gorm:"column:client_id"`
	Scope           string     `gorm:"column:scope"`
	RequestedScope  string     `gorm:"column:requested_scope"`
	CreatedAt       time.Time  `gorm:"column:created_at;autoCreateTime:false"`
	AuthTime        *time.Time `gorm:"column:auth_time"`
	GrantedAt       *time.Time `gorm:"column:granted_at"` // NULL: created_at (and families older than migration 18)
	AMR             *string    `gorm:"column:amr"`        // JSON array; NULL for none (and families older than migration 10)
	TenantID        string     `gorm:"column:tenant_id"`
	BrowserSession  string     `gorm:"column:browser_session_id"` // "" for none (and families older than migration 15)
	AbsoluteExpiry  time.Time  `gorm:"column:absolute_expiry"`
	IdleTTLMS       int64      `gorm:"column:idle_ttl_ms"`
	IdleExpiresAt   time.Time  `gorm:"column:idle_expires_at"`
	CurrentHash     []byte     `gorm:"column:current_hash"`
	PrevHash        []byte     `gorm:"column:prev_hash"`
	RotatedAt       *time.Time `gorm:"column:rotated_at"`
	SuccessorSealed []byte     `gorm:"column:successor_sealed"`
	GraceUntil      *time.Time `gorm:"column:grace_until"`
	RevokedAt       *time.Time `gorm:"column:revoked_at"`
	// Rotations is how many hashes the family has rotated away (its rows
	// of refresh_used_tokens; migration 24 counted them for older
	// families): atRotationLimit compares it with the bound.
	Rotations int64 `gorm:"column:rotations"`
}

func (familyRow) TableName() string { return "refresh_families" }

func (r familyRow) toFamily() (store.RefreshFamily, error) {
	f := store.RefreshFamily{
		ID:             r.ID,
		UserID:         r.UserID,
		ClientID:       r.ClientID,
		Scope:          r.Scope,
		RequestedScope: r.RequestedScope,
		CreatedAt:      ms(r.CreatedAt),
		AuthTime:       ms(r.CreatedAt),
		AbsoluteExpiry: ms(r.AbsoluteExpiry),
		IdleTTL:        time.Duration(r.IdleTTLMS) * time.Millisecond,
		TenantID:       r.TenantID,
		// BrowserSessionID: the lineage the family ends with.
		BrowserSessionID: r.BrowserSession,
	}
	if r.AuthTime != nil {
		f.AuthTime = ms(*r.AuthTime)
	}
	if r.GrantedAt != nil {
		f.GrantedAt = ms(*r.GrantedAt)
	}
	if r.AMR != nil {
		if err := json.Unmarshal([]byte(*r.AMR), &f.AMR); err != nil {
			return store.RefreshFamily{}, fmt.Errorf("corrupt refresh family amr: %w", err)
		}
	}
	return f, nil
}

// familyAMR is how refresh_families.amr keeps a family's AMR: NULL for none.
func familyAMR(amr []string) *string {
	if len(amr) == 0 {
		return nil
	}
	v := encodeStrings(amr)
	return &v
}

type usedTokenRow struct {
	FamilyID  string    `gorm:"column:family_id;primaryKey"`
	TokenHash []byte    `gorm:"column:token_hash;primaryKey"`
	UsedAt    time.Time `gorm:"column:used_at"`
}

func (usedTokenRow) TableName() string { return "refresh_used_tokens" }

type revocationRow struct {
	Kind           string     `gorm:"column:kind;primaryKey"`
	Value          string     `gorm:"column:value;primaryKey"`
	At             time.Time  `gorm:"column:at"`
	ExpiresAt      time.Time  `gorm:"column:expires_at"`
	UnappliedSince *time.Time `gorm:"column:unapplied_since"` // NULL once applied to the token state (RevocationLog)
}

func (revocationRow) TableName() string { return "token_revocations" }

// idleExpiry is when a token issued at t expires unused.
func idleExpiry(t time.Time, idleTTL time.Duration, absolute time.Time) time.Time {
	if idleTTL <= 0 {
		return absolute
	}
	return ms(t.Add(idleTTL))
}

// CreateFamily implements store.TokenState. A family id in use is
// store.ErrAlreadyExists; one refused by the user's cut-off, or by the
// user's cut-off at its client (checkClientCutoff), is
// store.ErrSessionsEnded.
func (s *State) CreateFamily(ctx context.Context, fam store.RefreshFamily, firstHash []byte) error {
	if fam.ID == "" || len(firstHash) == 0 || fam.AbsoluteExpiry.IsZero() {
		return errors.New("sql token state: create family: id, first hash and absolute expiry are required")
	}
	created := fam.CreatedAt
	if created.IsZero() {
		created = s.now()
	}
	created = ms(created)
	authTime := created
	if !fam.AuthTime.IsZero() {
		authTime = ms(fam.AuthTime)
	}
	granted := created
	if !fam.GrantedAt.IsZero() {
		granted = ms(fam.GrantedAt)
	}
	row := familyRow{
		ID:             fam.ID,
		UserID:         fam.UserID,
		ClientID:       fam.ClientID,
		Scope:          fam.Scope,
		RequestedScope: fam.RequestedScope,
		CreatedAt:      created,
		AuthTime:       &authTime,
		GrantedAt:      &granted,
		AMR:            familyAMR(fam.AMR),
		TenantID:       fam.TenantID,
		BrowserSession: fam.BrowserSessionID,
		AbsoluteExpiry: ms(fam.AbsoluteExpiry),
		IdleTTLMS:      fam.IdleTTL.Milliseconds(),
		IdleExpiresAt:  idleExpiry(created, fam.IdleTTL, ms(fam.AbsoluteExpiry)),
		CurrentHash:    firstHash,
	}
	before := func(tx *gorm.DB) error {
		if err := lockSession(tx, fam.ID); err != nil {
			return err
		}
		if fam.UserID == "" {
			return nil
		}
		if err := checkClientCutoff(tx, fam.UserID, fam.ClientID, granted); err != nil {
			return err
		}
		return s.makeRoom(tx, fam.UserID, created)
	}
	return s.createForUser(ctx, "create family", fam.UserID, authTime, before, &row)
}

// createForUser inserts row (a refresh family, a browser session) for
// userID in one transaction under the user's lock: refused with
// store.ErrSessionsEnded when authTime is at or before the user's cut-off,
// atomically with RevokeUserSessions; then before (when set) runs, then the
// insert. An empty userID skips the lock and the cut-off. A taken id is
// store.ErrAlreadyExists.
func (s *State) createForUser(ctx context.Context, what, userID string, authTime time.Time, before func(tx *gorm.DB) error, row any) error {
	err := sqlstore.RunInTx(ctx, s.db, func(tx *gorm.DB) error {
		if userID != "" {
			if err := s.lockUser(tx, userID); err != nil {
				return err
			}
			if err := checkCutoff(tx, userID, authTime); err != nil {
				return err
			}
		}
		if before != nil {
			if err := before(tx); err != nil {
				return err
			}
		}
		return tx.Create(row).Error
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrSessionsEnded):
		return fmt.Errorf("sql token state: %s: %w", what, err)
	case sqlstore.IsUniqueViolation(err):
		return fmt.Errorf("sql token state: %s: %w", what, store.ErrAlreadyExists)
	default:
		return dbErr(what, err)
	}
}

// lockUser serialises the transactions that create a user's families with
// those that end them (on SQLite every transaction already holds the write
// lock).
func (s *State) lockUser(tx *gorm.DB, userID string) error {
	if tx.Dialector.Name() != "postgres" {
		return nil
	}
	if err := tx.Exec("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", "portcullis-user-sessions:"+userID).Error; err != nil {
		return fmt.Errorf("lock user sessions: %w", err)
	}
	return nil
}

// lockSession serialises creating a family with revoking its session by
// id (RevokeFamily), on PostgreSQL (on SQLite every transaction already
// holds the write lock).
// A session may be revoked before its family exists (a replayed code
// racing the first redemption): without the lock, the revocation's update
// could miss the family while its record, not yet committed, is missed by
// the check CreateFamilyAndCheck makes after the creation, leaving the
// family live. With it, one commits before the other starts.
func lockSession(tx *gorm.DB, sid string) error {
	if tx.Dialector.Name() != "postgres" {
		return nil
	}
	if err := tx.Exec("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", "portcullis-session:"+sid).Error; err != nil {
		return fmt.Errorf("lock session: %w", err)
	}
	return nil
}

// checkCutoff refuses a family whose login began at or before the user's
// cut-off.
func checkCutoff(tx *gorm.DB, userID string, authTime time.Time) error {
	var n int64
	err := tx.Model(&revocationRow{}).Where("kind = ? AND value = ? AND at >= ?", string(store.RevokedUser), userID, authTime).
		Count(&n).Error
	if err != nil {
		return fmt.Errorf("read cut-off: %w", err)
	}
	if n > 0 {
		return store.ErrSessionsEnded
	}
	return nil
}

// checkClientCutoff refuses a family of the user at the client granted at
// or before the user's cut-off there (RevokeClientGrants; granted is the
// family's ClientGrantedAt); the caller holds the user's lock.
func checkClientCutoff(tx *gorm.DB, userID, clientID string, granted time.Time) error {
	if clientID == "" {
		return nil
	}
	var n int64
	err := tx.Model(&revocationRow{}).Where("kind = ? AND value = ? AND at >= ?", string(store.RevokedClient),
		store.ClientRevocationValue(userID, clientID), granted).Count(&n).Error
	if err != nil {
		return fmt.Errorf("read the client's cut-off: %w", err)
	}
	if n > 0 {
		return store.ErrSessionsEnded
	}
	return nil
}

// makeRoom ends the user's oldest live families so that one more fits
// under the cap.
func (s *State) makeRoom(tx *gorm.DB, userID string, now time.Time) error {
	if s.maxSes <= 0 {
		return nil
	}
	var ids []string
	err := tx.Model(&familyRow{}).
		Where("user_id = ? AND revoked_at IS NULL AND absolute_expiry > ? AND idle_expires_at > ?", userID, now, now).
		Order("created_at").Order("id").Pluck("id", &ids).Error
	if err != nil {
		return fmt.Errorf("list live sessions: %w", err)
	}
	for i := 0; i < len(ids)-s.maxSes+1; i++ {
		if err := s.revokeFamilyTx(tx, ids[i], now); err != nil {
			return err
		}
	}
	return nil
}

func hashEqual(a, b []byte) bool {
	return len(a) > 0 && len(a) == len(b) && subtle.ConstantTimeCompare(a, b) == 1
}

// tokenMatch is which of a family's tokens a presented hash is, as
// rotation honours it (familyRow.match).
type tokenMatch int

const (
	// matchNone: not a token rotation honours: an older one (reuse, when
	// it is among the family's used tokens), or not one of the family's.
	matchNone tokenMatch = iota
	// matchCurrent: the current token, which rotates.
	matchCurrent
	// matchGrace: the token the current one replaced, rotated less than
	// grace ago by a rotation that kept its successor: a grace replay.
	matchGrace
)

// match is the one judgement of which token hash is at now, given the
// rotation's grace: RotateRefresh and FindRefresh both ask it, so that a
// token rotation honours is one revocation and introspection find.
func (f familyRow) match(hash []byte, now time.Time, grace time.Duration) tokenMatch {
	switch {
	case hashEqual(hash, f.CurrentHash):
		return matchCurrent
	case grace > 0 && f.RotatedAt != nil && f.SuccessorSealed != nil && hashEqual(hash, f.PrevHash) &&
		now.Sub(ms(*f.RotatedAt)) < grace:
		return matchGrace
	default:
		return matchNone
	}
}

// used reports whether hash is one of the family's already rotated
// tokens: the one the current token replaced (known without a look-up) or
// an older one, among the used tokens. Presented where match answers
// matchNone it is reuse: RotateRefresh and FindRefresh both ask it.
func (f familyRow) used(tx *gorm.DB, hash []byte) (bool, error) {
	if hashEqual(hash, f.PrevHash) {
		return true, nil
	}
	var n int64
	err := tx.Model(&usedTokenRow{}).Where("family_id = ? AND token_hash = ?", f.ID, hash).Count(&n).Error
	if err != nil {
		return false, fmt.Errorf("look up used token: %w", err)
	}
	return n > 0, nil
}

// live reports whether the family is neither marked revoked nor expired
// (at or past its absolute or idle expiry) at now. Its session's
// revocation is loadFamily's to read.
func (f familyRow) live(now time.Time) bool {
	return f.RevokedAt == nil && now.Before(f.AbsoluteExpiry) && now.Before(f.IdleExpiresAt)
}

// familyWithSession is a family row and whether its session is revoked
// (loadFamily).
type familyWithSession struct {
	Family         familyRow `gorm:"embedded"`
	SessionRevoked bool      `gorm:"column:session_revoked"`
}

// loadFamily reads the family and, in the same statement, whether its
// session is revoked or its user's cut-off is at or after its auth time
// (as IsAccessTokenRevoked would answer for a token of the session issued
// at its auth time). The revocations end the family in the same
// transaction, but a session may be revoked before its family exists (a
// replayed authorization code racing the first redemption): such a family
// is dead all the same. found is false when there is no such family.
func loadFamily(tx *gorm.DB, id string) (f familyRow, sessionRevoked, found bool, err error) {
	var rows []familyWithSession
	err = tx.Raw(`SELECT f.*, EXISTS (SELECT 1 FROM token_revocations r
			WHERE (r.kind = ? AND r.value = f.id)
			OR (f.user_id <> '' AND r.kind = ? AND r.value = f.user_id AND r.at >= COALESCE(f.auth_time, f.created_at))
		) AS session_revoked
		FROM refresh_families f WHERE f.id = ?`, string(store.RevokedSession), string(store.RevokedUser), id).Scan(&rows).Error
	if err != nil {
		return familyRow{}, false, false, fmt.Errorf("load family: %w", err)
	}
	if len(rows) == 0 {
		return familyRow{}, false, false, nil
	}
	return rows[0].Family, rows[0].SessionRevoked, true, nil
}

// RotateRefresh implements store.TokenState. The presented token is checked
// against the family's current, previous and earlier (used) hashes; a
// rotation is a compare-and-swap on current_hash, so of any number of
// concurrent presentations of one token across processes exactly one
// rotates it. A family that is revoked or expired (Now at or past its
// absolute expiry, or at or past its idle expiry) answers RotateInvalid for
// every token; so does one whose session is revoked, or whose user's
// cut-off is at or after its auth time, and it is then marked revoked. A
// family of another client than req.ClientID (when set) answers
// RotateInvalid too, and is left as it was.
// The current token of a family that keeps store.MaxFamilyRotations used
// hashes does not rotate: the family is ended, in the same transaction, as
// reuse ends it (RotateLimitReached).
func (s *State) RotateRefresh(ctx context.Context, req store.RotateRequest) (store.RotateResult, error) {
	if req.FamilyID == "" || len(req.PresentedHash) == 0 {
		return store.RotateResult{Outcome: store.RotateInvalid}, nil
	}
	if len(req.NextHash) == 0 {
		return store.RotateResult{}, errors.New("sql token state: rotate: next hash is required")
	}
	now := ms(req.Now)
	var result store.RotateResult
	err := sqlstore.RunInTx(ctx, s.db, func(tx *gorm.DB) error {
		for attempt := 0; attempt < rotateAttempts; attempt++ {
			result = store.RotateResult{Outcome: store.RotateInvalid}
			f, sessionRevoked, found, err := loadFamily(tx, req.FamilyID)
			if err != nil || !found {
				return err
			}
			if !f.live(now) || (req.ClientID != "" && f.ClientID != req.ClientID) {
				return nil
			}
			if sessionRevoked {
				// Not marked, yet its session is revoked: end it now.
				return s.revokeFamilyTx(tx, f.ID, now)
			}
			fam, err := f.toFamily()
			if err != nil {
				return err
			}
			switch f.match(req.PresentedHash, now, req.Grace) {
			case matchCurrent:
				rotate, outcome := s.casRotate, store.RotateOK
				if s.atRotationLimit(f) {
					rotate, outcome = s.casEndAtLimit, store.RotateLimitReached
				}
				won, err := rotate(tx, f, req, now)
				if err != nil {
					return err
				}
				if !won {
					continue // another rotation (or end) committed first: look again
				}
				result = store.RotateResult{Outcome: outcome, Family: fam}
				return nil
			case matchGrace:
				result = store.RotateResult{Outcome: store.RotateGraceReplay, Family: fam, SuccessorSealed: f.SuccessorSealed}
				return nil
			case matchNone:
				used, err := f.used(tx, req.PresentedHash)
				if err != nil {
					return err
				}
				if !used {
					return nil // not a token of this family: change nothing
				}
			}
			// A token of this family that was already rotated, outside grace.
			if err := s.revokeFamilyTx(tx, f.ID, now); err != nil {
				return err
			}
			result = store.RotateResult{Outcome: store.RotateReuseDetected, Family: fam}
			return nil
		}
		return errors.New("rotation kept losing to concurrent rotations")
	})
	if err != nil {
		return store.RotateResult{}, dbErr("rotate refresh token", err)
	}
	return result, nil
}

// casRotate replaces the current hash if it is still the presented one and
// records the presented hash as used, counting it in the family's
// rotations. won is false when another rotation got
// there first.
func (s *State) casRotate(tx *gorm.DB, f familyRow, req store.RotateRequest, now time.Time) (won bool, err error) {
	var sealed []byte
	var graceUntil *time.Time
	if req.Grace > 0 {
		sealed = req.NextSealed
		g := ms(now.Add(req.Grace))
		graceUntil = &g
	}
	res := tx.Exec(`UPDATE refresh_families
		SET current_hash = ?, prev_hash = ?, rotated_at = ?, successor_sealed = ?, grace_until = ?, idle_expires_at = ?,
			rotations = rotations + 1
		WHERE id = ? AND current_hash = ? AND revoked_at IS NULL`,
		req.NextHash, req.PresentedHash, now, sealed, graceUntil,
		idleExpiry(now, time.Duration(f.IdleTTLMS)*time.Millisecond, f.AbsoluteExpiry),
		f.ID, req.PresentedHash)
	if res.Error != nil {
		return false, fmt.Errorf("rotate family: %w", res.Error)
	}
	if res.RowsAffected == 0 {
		return false, nil
	}
	err = tx.Exec(`INSERT INTO refresh_used_tokens (family_id, token_hash, used_at) VALUES (?, ?, ?)
		ON CONFLICT (family_id, token_hash) DO NOTHING`, f.ID, req.PresentedHash, now).Error
	if err != nil {
		return false, fmt.Errorf("record used token: %w", err)
	}
	return true, nil
}

// atRotationLimit reports whether the family already keeps the most used
// hashes it may (store.MaxFamilyRotations): rotating its current token
// would keep one more, so the rotation ends it instead (casEndAtLimit).
// It reads the family's count of rotations (refresh_families.rotations,
// which casRotate moves with each used hash it records), not its rows of
// refresh_used_tokens: a count of those costs a rotation time in
// proportion to the family's rotations (1.3 ms at 10,000 on SQLite,
// against 0.05 ms for none).
func (s *State) atRotationLimit(f familyRow) bool {
	return f.Rotations >= int64(s.maxRotations)
}

// casEndAtLimit ends the family at its rotation limit, as reuse ends it
// (revokeFamilyTx), if the presented hash is still its current one and it
// is not revoked: won is false when another rotation or end got there
// first, so that of racing presentations exactly one ends it.
func (s *State) casEndAtLimit(tx *gorm.DB, f familyRow, req store.RotateRequest, now time.Time) (won bool, err error) {
	res := tx.Exec(`UPDATE refresh_families SET revoked_at = ?, successor_sealed = NULL
		WHERE id = ? AND current_hash = ? AND revoked_at IS NULL`, now, f.ID, req.PresentedHash)
	if res.Error != nil {
		return false, fmt.Errorf("end family at its rotation limit: %w", res.Error)
	}
	if res.RowsAffected == 0 {
		return false, nil
	}
	return true, s.revokeSessionTx(tx, f.ID, now)
}

// revokeFamilyTx marks the family revoked, forgets its grace successor and
// revokes the session's access tokens.
func (s *State) revokeFamilyTx(tx *gorm.DB, familyID string, now time.Time) error {
	err := tx.Exec(`UPDATE refresh_families SET revoked_at = ?, successor_sealed = NULL
		WHERE id = ? AND revoked_at IS NULL`, now, familyID).Error
	if err != nil {
		return fmt.Errorf("revoke family: %w", err)
	}
	return s.revokeSessionTx(tx, familyID, now)
}

// revokeSessionTx revokes the access tokens of the session familyID for
// the longest access-token lifetime.
func (s *State) revokeSessionTx(tx *gorm.DB, familyID string, now time.Time) error {
	return upsertRevocation(tx, store.Revocation{
		Kind: store.RevokedSession, Value: familyID, At: now, ExpiresAt: now.Add(s.maxAT),
	}, nil)
}

// upsertRevocation records a revocation; for a record already there it keeps
// the later At (a user cut-off never moves back) and the later ExpiresAt.
// With unappliedSince (RecordRevocations: the Redis token state applies it
// next) the record is unapplied from then on, or since earlier when it
// already was; without (the SQL token state's own records, which are the
// state) its mark is left as it was.
func upsertRevocation(tx *gorm.DB, r store.Revocation, unappliedSince *time.Time) error {
	err := tx.Exec(`INSERT INTO token_revocations (kind, value, at, expires_at, unapplied_since) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (kind, value) DO UPDATE SET
			at = CASE WHEN excluded.at > token_revocations.at THEN excluded.at ELSE token_revocations.at END,
			expires_at = CASE WHEN excluded.expires_at > token_revocations.expires_at
				THEN excluded.expires_at ELSE token_revocations.expires_at END,
			unapplied_since = COALESCE(token_revocations.unapplied_since, excluded.unapplied_since)`,
		string(r.Kind), r.Value, ms(r.At), ms(r.ExpiresAt), unappliedSince).Error
	if err != nil {
		return fmt.Errorf("record %s revocation: %w", r.Kind, err)
	}
	return nil
}

// RevokeFamily implements store.TokenState. The session's access tokens are
// revoked for MaxAccessTokenTTL even when the family is unknown.
func (s *State) RevokeFamily(ctx context.Context, familyID string, now time.Time) error {
	if familyID == "" {
		return nil
	}
	now = ms(now)
	err := sqlstore.RunInTx(ctx, s.db, func(tx *gorm.DB) error {
		// The family may not exist yet (see lockSession). The other
		// revocations end families they have just listed, which exist.
		if err := lockSession(tx, familyID); err != nil {
			return err
		}
		return s.revokeFamilyTx(tx, familyID, now)
	})
	if err != nil {
		return dbErr("revoke family", err)
	}
	return nil
}

// RevokeClientGrants implements store.TokenState in one transaction under
// the user's lock (as CreateFamily takes it): the user's live families at
// the client granted at or before cutoff (granted_at, or created_at for a
// family older than migration 18) are revoked, each with its sid
// (as RevokeFamily), and the cut-off is recorded (RevokedClient), kept
// until cutoff + MaxAccessTokenTTL; a later one replaces an earlier one.
func (s *State) RevokeClientGrants(ctx context.Context, userID, clientID string, cutoff time.Time) error {
	if userID == "" || clientID == "" || strings.Contains(clientID, " ") {
		return errors.New("sql token state: revoke client grants: empty user id, or empty or invalid client id")
	}
	cutoff = ms(cutoff)
	err := sqlstore.RunInTx(ctx, s.db, func(tx *gorm.DB) error {
		if err := s.lockUser(tx, userID); err != nil {
			return err
		}
		var ids []string
		if err := tx.Raw(`SELECT id FROM refresh_families WHERE user_id = ? AND client_id = ? AND revoked_at IS NULL
			AND COALESCE(granted_at, created_at) <= ? ORDER BY id`, userID, clientID, cutoff).Scan(&ids).Error; err != nil {
			return fmt.Errorf("list the user's families at the client: %w", err)
		}
		for _, id := range ids {
			if err := s.revokeFamilyTx(tx, id, cutoff); err != nil {
				return err
			}
		}
		return upsertRevocation(tx, store.Revocation{Kind: store.RevokedClient, Value: store.ClientRevocationValue(userID, clientID),
			At: cutoff, ExpiresAt: cutoff.Add(s.maxAT)}, nil)
	})
	if err != nil {
		return dbErr("revoke client grants", err)
	}
	return nil
}

// RevokeUserSessions implements store.TokenState: every family of the user
// that exists now is revoked (with its sid), every browser session of the
// user authenticated at or before cutoff ends, and the user's access tokens
// issued at or before cutoff (millisecond precision) are revoked until
// cutoff + MaxAccessTokenTTL. A later cut-off replaces an earlier one; an
// earlier one never moves it back.
func (s *State) RevokeUserSessions(ctx context.Context, userID string, cutoff time.Time) error {
	if userID == "" {
		return errors.New("sql token state: revoke user sessions: empty user id")
	}
	cutoff = ms(cutoff)
	now := ms(s.now())
	err := sqlstore.RunInTx(ctx, s.db, func(tx *gorm.DB) error {
		if err := s.lockUser(tx, userID); err != nil {
			return err
		}
		var ids []string
		if err := tx.Model(&familyRow{}).Where("user_id = ? AND revoked_at IS NULL", userID).
			Order("id").Pluck("id", &ids).Error; err != nil {
			return fmt.Errorf("list sessions: %w", err)
		}
		at := cutoff
		if now.After(at) {
			at = now
		}
		for _, id := range ids {
			if err := s.revokeFamilyTx(tx, id, at); err != nil {
				return err
			}
		}
		if err := endUserBrowserSessions(tx, userID, cutoff, at); err != nil {
			return err
		}
		return upsertRevocation(tx, store.Revocation{
			Kind: store.RevokedUser, Value: userID, At: cutoff, ExpiresAt: cutoff.Add(store.UserCutoffLifetime(s.maxAT)),
		}, nil)
	})
	if err != nil {
		return dbErr("revoke user sessions", err)
	}
	return nil
}

// RevokeAccessToken implements store.TokenState.
func (s *State) RevokeAccessToken(ctx context.Context, jti string, expiresAt time.Time) error {
	if jti == "" {
		return errors.New("sql token state: revoke access token: empty jti")
	}
	r := store.Revocation{Kind: store.RevokedJTI, Value: jti, At: s.now(), ExpiresAt: expiresAt}
	if err := upsertRevocation(s.db.WithContext(ctx), r, nil); err != nil {
		return dbErr("revoke access token", err)
	}
	return nil
}

// CreateFamilyAndCheck implements store.TokenState: CreateFamily then
// IsAccessTokenRevoked in order.
func (s *State) CreateFamilyAndCheck(ctx context.Context, fam store.RefreshFamily, firstHash []byte, check store.AccessTokenRef) (bool, error) {
	return store.CreateFamilyThenCheck(ctx, s, fam, firstHash, check)
}

// IsAccessTokenRevoked implements store.TokenState with one query: the
// token's jti, its session, a user cut-off at or after its IssuedAt, or a
// cut-off of the user at its client at or after its ClientGrantedAt
// (millisecond precision) revokes it.
func (s *State) IsAccessTokenRevoked(ctx context.Context, ref store.AccessTokenRef) (bool, error) {
	var conds []string
	var args []any
	if ref.JTI != "" {
		conds = append(conds, "(kind = ? AND value = ?)")
		args = append(args, string(store.RevokedJTI), ref.JTI)
	}
	if ref.SID != "" {
		conds = append(conds, "(kind = ? AND value = ?)")
		args = append(args, string(store.RevokedSession), ref.SID)
	}
	if ref.UserID != "" {
		conds = append(conds, "(kind = ? AND value = ? AND at >= ?)")
		args = append(args, string(store.RevokedUser), ref.UserID, ms(ref.IssuedAt))
		if ref.ClientID != "" {
			conds = append(conds, "(kind = ? AND value = ? AND at >= ?)")
			args = append(args, string(store.RevokedClient), store.ClientRevocationValue(ref.UserID, ref.ClientID), ms(ref.ClientGrantedAt()))
		}
	}
	if len(conds) == 0 {
		return false, nil
	}
	var n int64
	err := s.db.WithContext(ctx).Raw("SELECT count(*) FROM token_revocations WHERE "+strings.Join(conds, " OR "), args...).
		Scan(&n).Error
	if err != nil {
		return false, dbErr("check access token revocation", err)
	}
	return n > 0, nil
}

// Hit implements store.TokenState with one atomic upsert: a window starts at
// the first hit after the previous window ended and lasts window.
func (s *State) Hit(ctx context.Context, key string, window time.Duration, now time.Time) (int64, time.Duration, error) {
	if key == "" || window <= 0 {
		return 0, 0, errors.New("sql token state: hit: key and a positive window are required")
	}
	nowMS := now.UnixMilli()
	winMS := window.Milliseconds()
	if winMS <= 0 {
		winMS = 1
	}
	var out struct {
		Hits        int64 `gorm:"column:hits"`
		ExpiresAtMS int64 `gorm:"column:expires_at_ms"`
	}
	err := s.db.WithContext(ctx).Raw(`INSERT INTO rate_counters (counter_key, hits, window_start_ms, expires_at_ms)
		VALUES (?, 1, ?, ?)
		ON CONFLICT (counter_key) DO UPDATE SET
			hits = CASE WHEN rate_counters.expires_at_ms <= excluded.window_start_ms
				THEN 1 ELSE rate_counters.hits + 1 END,
			window_start_ms = CASE WHEN rate_counters.expires_at_ms <= excluded.window_start_ms
				THEN excluded.window_start_ms ELSE rate_counters.window_start_ms END,
			expires_at_ms = CASE WHEN rate_counters.expires_at_ms <= excluded.window_start_ms
				THEN excluded.expires_at_ms ELSE rate_counters.expires_at_ms END
		RETURNING hits, expires_at_ms`, key, nowMS, nowMS+winMS).Scan(&out).Error
	if err != nil {
		return 0, 0, dbErr("count hit", err)
	}
	return out.Hits, time.Duration(out.ExpiresAtMS-nowMS) * time.Millisecond, nil
}

// CountSteps implements store.TokenState: one statement per step.
func (s *State) CountSteps(ctx context.Context, now time.Time, steps ...store.CounterStep) ([]store.CounterCount, error) {
	if err := store.CheckCounterSteps(steps); err != nil {
		return nil, fmt.Errorf("sql token state: %w", err)
	}
	return store.CountEach(steps, func(st store.CounterStep) (c store.CounterCount, err error) {
		if st.Window > 0 {
			c.Count, c.ResetIn, err = s.Hit(ctx, st.Key, st.Window, now)
		} else {
			c.Count, c.ResetIn, err = s.Peek(ctx, st.Key, now)
		}
		return c, err
	})
}

// TakeBack implements store.TokenState with one conditional update: the
// row is changed only while its live window is the one given.
func (s *State) TakeBack(ctx context.Context, key string, n int64, windowEnd, now time.Time) (int64, bool, error) {
	if n < 0 {
		return 0, false, errors.New("sql token state: take back: a negative count")
	}
	var left []int64
	err := s.db.WithContext(ctx).Raw(`UPDATE rate_counters SET hits = CASE WHEN hits > ? THEN hits - ? ELSE 0 END
		WHERE counter_key = ? AND expires_at_ms > ? AND expires_at_ms = ? RETURNING hits`,
		n, n, key, now.UnixMilli(), windowEnd.UnixMilli()).Scan(&left).Error
	if err != nil {
		return 0, false, dbErr("take back counted events", err)
	}
	if len(left) == 0 {
		return 0, false, nil
	}
	return left[0], true, nil
}

// ResetCounters implements store.TokenState: one statement per key, in
// order. One statement for all of them would not keep the order: it
// deletes only the rows its snapshot holds, so a later key's row written
// while it runs would outlive the earlier keys' deletion.
func (s *State) ResetCounters(ctx context.Context, keys ...string) error {
	for _, k := range keys {
		if err := s.db.WithContext(ctx).Exec("DELETE FROM rate_counters WHERE counter_key = ?", k).Error; err != nil {
			return dbErr("reset counters", err)
		}
	}
	return nil
}

// Ping implements store.TokenState.
func (s *State) Ping(ctx context.Context) error {
	sqlDB, err := s.db.DB()
	if err != nil {
		return fmt.Errorf("sql token state: ping: %w", err)
	}
	if err := sqlDB.PingContext(ctx); err != nil {
		return fmt.Errorf("sql token state: ping: %w: %w", store.ErrUnavailable, err)
	}
	return nil
}

// RecordRevocations implements store.RevocationLog in one transaction.
// Recording a revocation again keeps the later At and ExpiresAt. Every
// record is unapplied from now (the state's clock) until
// MarkRevocationsApplied.
func (s *State) RecordRevocations(ctx context.Context, revs []store.Revocation) error {
	if len(revs) == 0 {
		return nil
	}
	recorded := ms(s.now())
	err := sqlstore.RunInTx(ctx, s.db, func(tx *gorm.DB) error {
		for _, r := range revs {
			if err := upsertRevocation(tx, r, &recorded); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return dbErr("record revocations", err)
	}
	return nil
}

// ActiveRevocations implements store.RevocationLog: every revocation still
// kept at now (revocationKept).
func (s *State) ActiveRevocations(ctx context.Context, now time.Time) ([]store.Revocation, error) {
	var rows []revocationRow
	if err := s.db.WithContext(ctx).Where(revocationKept, keptAfter(now)).Order("kind, value").Find(&rows).Error; err != nil {
		return nil, dbErr("list active revocations", err)
	}
	out := make([]store.Revocation, len(rows))
	for i, r := range rows {
		out[i] = store.Revocation{Kind: store.RevocationKind(r.Kind), Value: r.Value, At: ms(r.At), ExpiresAt: ms(r.ExpiresAt)}
	}
	return out, nil
}

// UnappliedRevocations implements store.RevocationLog: through the partial
// index of the unapplied rows, oldest first.
func (s *State) UnappliedRevocations(ctx context.Context, now, recordedBefore time.Time, limit int) ([]store.Revocation, error) {
	if limit <= 0 {
		return nil, nil
	}
	var rows []revocationRow
	err := s.db.WithContext(ctx).Where("unapplied_since IS NOT NULL AND unapplied_since <= ? AND "+revocationKept, ms(recordedBefore), keptAfter(now)).
		Order("unapplied_since, kind, value").Limit(limit).Find(&rows).Error
	if err != nil {
		return nil, dbErr("list unapplied revocations", err)
	}
	out := make([]store.Revocation, len(rows))
	for i, r := range rows {
		out[i] = store.Revocation{Kind: store.RevocationKind(r.Kind), Value: r.Value, At: ms(r.At), ExpiresAt: ms(r.ExpiresAt)}
	}
	return out, nil
}

// MarkRevocationsApplied implements store.RevocationLog in one statement
// per record (in one transaction for several): a record is marked only while its At and ExpiresAt are no
// later than those applied, so one a later revocation moved stays
// unapplied.
func (s *State) MarkRevocationsApplied(ctx context.Context, revs []store.Revocation) error {
	mark := func(tx *gorm.DB) error {
		for _, r := range revs {
			if err := tx.Exec(`UPDATE token_revocations SET unapplied_since = NULL
				WHERE kind = ? AND value = ? AND at <= ? AND expires_at <= ? AND unapplied_since IS NOT NULL`,
				string(r.Kind), r.Value, ms(r.At), ms(r.ExpiresAt)).Error; err != nil {
				return fmt.Errorf("mark %s revocation applied: %w", r.Kind, err)
			}
		}
		return nil
	}
	var err error
	switch len(revs) {
	case 0:
		return nil
	case 1: // one statement: the revocation path's own mark
		err = mark(s.db.WithContext(ctx))
	default:
		err = sqlstore.RunInTx(ctx, s.db, mark)
	}
	if err != nil {
		return dbErr("mark revocations applied", err)
	}
	return nil
}

// revocationKept is the condition of a token_revocations row still kept
// (its argument: keptAfter(now)): store.RevocationKeptUntil(expires_at)
// is after now. The log lists only these; the purge deletes the others
// (revocationGone, its complement, written so the expiry index serves).
const (
	revocationKept = "expires_at > ?"
	revocationGone = "expires_at <= ?"
)

// keptAfter is revocationKept's argument at now.
func keptAfter(now time.Time) time.Time { return ms(store.RevocationExpiryKeptAfter(now)) }

// PurgeResult counts what Purge deleted or cleared.
type PurgeResult struct {
	Revocations int64 // revocation records past store.RevocationKeptUntil their expiry
	Counters    int64 // ended counter windows
	Families    int64 // expired or revoked refresh families (with their used hashes)
	Successors  int64 // grace-window successors past their window, cleared
	Once        int64 // expired single-use records (codes, pending requests) and ended tombstones of taken codes
	Browser     int64 // ended or expired browser sessions
}

// defaultPurgeBatch is how many rows one step of Purge deletes or clears
// (sqlstore.DefaultPurgeBatch, which says why).
const defaultPurgeBatch = sqlstore.DefaultPurgeBatch

// familyDead is the condition of a refresh family Purge deletes (its two
// arguments: now, now).
const familyDead = "revoked_at IS NOT NULL OR absolute_expiry <= ? OR idle_expires_at <= ?"

// Purge deletes what can no longer matter at now: revocations past
// store.RevocationKeptUntil their expiry (an instance whose clock is
// behind this one's may still accept their tokens until then), ended
// counter windows, expired single-use records, ended or expired browser
// sessions, refresh families that are revoked or expired (their
// tokens answer RotateInvalid either way; their sessions' access tokens stay
// revoked by the sid records), and clears sealed successors whose grace
// window has passed. Run it periodically; it is safe on many instances.
//
// It works in steps of a few hundred rows, each its own short transaction
// (a family goes with its used hashes in one), and rests between steps as
// long as the last one took: on SQLite, where one connection at a time
// writes, other writers and the readers queued behind them wait for a step,
// never for the whole backlog. On an error (or ctx's end) it returns what
// it had done until then with the error; what it left, the next run does.
func (s *State) Purge(ctx context.Context, now time.Time) (PurgeResult, error) {
	now = ms(now)
	var pr PurgeResult
	steps := []struct {
		what string
		n    *int64
		run  func() (int64, error)
	}{
		{"purge revocations", &pr.Revocations, func() (int64, error) {
			return s.purgeWhere(ctx, "token_revocations", revocationGone, keptAfter(now))
		}},
		{"purge counters", &pr.Counters, func() (int64, error) {
			return s.purgeWhere(ctx, "rate_counters", "expires_at_ms <= ?", now.UnixMilli())
		}},
		{"purge families", &pr.Families, func() (int64, error) {
			return s.purgeByID(ctx, "refresh_families", familyDead, []any{now, now}, func(tx *gorm.DB, ids []string) (int64, error) {
				// The used hashes go with their family, in its transaction.
				if err := tx.Exec("DELETE FROM refresh_used_tokens WHERE family_id IN (SELECT id FROM refresh_families WHERE id IN ? AND ("+familyDead+"))",
					ids, now, now).Error; err != nil {
					return 0, fmt.Errorf("used tokens: %w", err)
				}
				res := tx.Exec("DELETE FROM refresh_families WHERE id IN ? AND ("+familyDead+")", ids, now, now)
				return res.RowsAffected, res.Error
			})
		}},
		{"clear grace successors", &pr.Successors, func() (int64, error) {
			const passed = "successor_sealed IS NOT NULL AND (grace_until IS NULL OR grace_until <= ?)"
			return s.purgeByID(ctx, "refresh_families", passed, []any{now}, func(tx *gorm.DB, ids []string) (int64, error) {
				res := tx.Exec("UPDATE refresh_families SET successor_sealed = NULL WHERE id IN ? AND "+passed, ids, now)
				return res.RowsAffected, res.Error
			})
		}},
		{"purge single-use records", &pr.Once, func() (int64, error) {
			return s.purgeWhere(ctx, "once_records", "expires_at <= ?", now)
		}},
		{"purge browser sessions", &pr.Browser, func() (int64, error) {
			const ended = "ended_at IS NOT NULL OR absolute_expiry <= ? OR idle_expires_at <= ?"
			return s.purgeByID(ctx, "browser_sessions", ended, []any{now, now}, func(tx *gorm.DB, ids []string) (int64, error) {
				res := tx.Exec("DELETE FROM browser_sessions WHERE id IN ? AND ("+ended+")", ids, now, now)
				return res.RowsAffected, res.Error
			})
		}},
	}
	for _, st := range steps {
		n, err := st.run()
		*st.n = n
		if err != nil {
			return pr, dbErr(st.what, err)
		}
	}
	return pr, nil
}

// batch is how many rows one step of Purge touches.
func (s *State) batch() int {
	if s.purgeBatch > 0 {
		return s.purgeBatch
	}
	return defaultPurgeBatch
}

// purgeWhere deletes table's rows that match cond, a condition an index
// answers (an expiry before a bound), a batch at a time, each batch one
// statement that finds its rows by their physical address: rowid on
// SQLite, ctid on PostgreSQL (a TID scan; a row changed since the batch
// found it is checked against cond again).
func (s *State) purgeWhere(ctx context.Context, table, cond string, arg any) (int64, error) {
	find := "rowid IN (SELECT rowid FROM %[1]s WHERE %[2]s LIMIT %[3]d)"
	if s.db.Dialector.Name() == "postgres" {
		find = "ctid = ANY(ARRAY(SELECT ctid FROM %[1]s WHERE %[2]s LIMIT %[3]d))"
	}
	q := fmt.Sprintf("DELETE FROM %[1]s WHERE "+find+" AND %[2]s", table, cond, s.batch())
	return sqlstore.InBatches(ctx, func() (int64, bool, error) {
		var n int64
		err := sqlstore.RunInTx(ctx, s.db, func(tx *gorm.DB) error {
			res := tx.Exec(q, arg, arg)
			n = res.RowsAffected
			return res.Error
		})
		return n, n == int64(s.batch()), err
	})
}

// purgeByID is sqlstore.PurgeByID on the state's database, a batch at a
// time: for a condition no index answers. step must check cond again (a
// row may have changed since it was read) and reports how many rows it
// changed.
func (s *State) purgeByID(ctx context.Context, table, cond string, args []any, step func(tx *gorm.DB, ids []string) (int64, error)) (int64, error) {
	return sqlstore.PurgeByID(ctx, s.db, s.batch(), table, cond, args, step)
}

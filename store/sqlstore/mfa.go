package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/portcullis-auth/portcullis/store"
)

// Row models of the second factors (migration 9).

type mfaTOTPRow struct {
	UserID           string     `gorm:"column:user_id;primaryKey"`
	SecretSealed     []byte     `gorm:"column:secret_sealed"`
	ConfirmedAt      *time.Time `gorm:"column:confirmed_at"`
	PendingSealed    []byte     `gorm:"column:pending_sealed"`
	PendingCreatedAt *time.Time `gorm:"column:pending_created_at"`
	LastStep         int64      `gorm:"column:last_step"`
	CreatedAt        time.Time  `gorm:"column:created_at;autoCreateTime:false"`
	UpdatedAt        time.Time  `gorm:"column:updated_at;autoUpdateTime:false"`
}

func (mfaTOTPRow) TableName() string { return "mfa_totp" }

type mfaRecoveryCodeRow struct {
	UserID    string     `gorm:"column:user_id;primaryKey"`
	CodeHash  []byte     `gorm:"column:code_hash;primaryKey"`
	CreatedAt time.Time  `gorm:"column:created_at;autoCreateTime:false"`
	UsedAt    *time.Time `gorm:"column:used_at"`
}

func (mfaRecoveryCodeRow) TableName() string { return "mfa_recovery_codes" }

type webAuthnCredentialRow struct {
	ID         string     `gorm:"column:id;primaryKey"`
	UserID     string     `gorm:"column:user_id"`
	Name       string     `gorm:"column:name"`
	Credential []byte     `gorm:"column:credential"`
	SignCount  int64      `gorm:"column:sign_count"`
	CreatedAt  time.Time  `gorm:"column:created_at;autoCreateTime:false"`
	LastUsedAt *time.Time `gorm:"column:last_used_at"`
}

func (webAuthnCredentialRow) TableName() string { return "webauthn_credentials" }

func (r webAuthnCredentialRow) toCredential() store.WebAuthnCredential {
	return store.WebAuthnCredential{ID: r.ID, UserID: r.UserID, Name: r.Name, Credential: r.Credential,
		SignCount: uint32(r.SignCount), CreatedAt: readTime(r.CreatedAt), LastUsedAt: readTimePtr(r.LastUsedAt)}
}

var _ store.MFAFactors = (*Store)(nil)

// GetTOTP returns the user's TOTP record, or store.ErrNotFound.
func (s *Store) GetTOTP(ctx context.Context, userID string) (store.TOTPFactor, error) {
	var r mfaTOTPRow
	if err := s.db.WithContext(ctx).Where("user_id = ?", userID).Take(&r).Error; err != nil {
		return store.TOTPFactor{}, mapErr("get totp", err)
	}
	return store.TOTPFactor{UserID: r.UserID, SecretSealed: r.SecretSealed, ConfirmedAt: readTimePtr(r.ConfirmedAt),
		PendingSealed: r.PendingSealed, PendingCreatedAt: readTimePtr(r.PendingCreatedAt), LastStep: r.LastStep,
		CreatedAt: readTime(r.CreatedAt), UpdatedAt: readTime(r.UpdatedAt)}, nil
}

// PutPendingTOTP records an enrolment for the user in one statement (an
// upsert), replacing any earlier pending one and leaving a confirmed secret
// and LastStep as they are. An unknown user is store.ErrNotFound.
func (s *Store) PutPendingTOTP(ctx context.Context, userID string, sealed []byte, now time.Time) error {
	if len(sealed) == 0 {
		return errors.New("put pending totp: the sealed secret is required")
	}
	now = dbTime(now)
	row := mfaTOTPRow{UserID: userID, PendingSealed: sealed, PendingCreatedAt: &now, CreatedAt: now, UpdatedAt: now}
	err := s.db.WithContext(ctx).Clauses(clause.OnConflict{
		Columns:   []clause.Column{{Name: "user_id"}},
		DoUpdates: clause.AssignmentColumns([]string{"pending_sealed", "pending_created_at", "updated_at"}),
	}).Create(&row).Error
	if IsForeignKeyViolation(err) {
		return fmt.Errorf("put pending totp: user %q: %w", userID, store.ErrNotFound)
	}
	return mapErr("put pending totp", err)
}

// totpMiss tells apart why a compare-and-set on mfa_totp changed no row:
// store.ErrNotFound when there is no row or the column want is NULL,
// store.ErrConflict otherwise.
func totpMiss(db *gorm.DB, what, userID, column string) error {
	var n int64
	if err := db.Model(&mfaTOTPRow{}).Where("user_id = ? AND "+column+" IS NOT NULL", userID).Count(&n).Error; err != nil {
		return mapErr(what, err)
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return fmt.Errorf("%s: %w", what, store.ErrConflict)
}

// ConfirmTOTP makes the pending secret the confirmed one, raises LastStep to
// step and replaces the recovery codes, in one transaction whose first
// statement is the compare-and-set on the pending secret and LastStep (so
// of concurrent confirmations, or a confirmation and a login on the same
// step, at most one succeeds).
func (s *Store) ConfirmTOTP(ctx context.Context, userID string, pendingSealed []byte, step int64, codeHashes [][]byte, now time.Time) error {
	if len(pendingSealed) == 0 {
		return errors.New("confirm totp: the pending sealed secret is required")
	}
	now = dbTime(now)
	err := s.tx(ctx, func(tx *gorm.DB) error {
		res := tx.Model(&mfaTOTPRow{}).
			Where("user_id = ? AND pending_sealed = ? AND last_step < ?", userID, pendingSealed, step).
			Updates(map[string]any{
				"secret_sealed":      gorm.Expr("pending_sealed"),
				"confirmed_at":       now,
				"pending_sealed":     nil,
				"pending_created_at": nil,
				"last_step":          step,
				"updated_at":         now,
			})
		if res.Error != nil {
			return mapErr("confirm totp", res.Error)
		}
		if res.RowsAffected == 0 {
			return totpMiss(tx, "confirm totp", userID, "pending_sealed")
		}
		return replaceRecoveryCodesTx(tx, userID, codeHashes, now)
	})
	if err != nil {
		return mapErr("confirm totp", err)
	}
	return nil
}

// UseTOTPStep raises LastStep to step with one compare-and-set statement
// (UPDATE … WHERE last_step < step): of concurrent uses of one step, on any
// number of instances, exactly one changes the row.
func (s *Store) UseTOTPStep(ctx context.Context, userID string, step int64, now time.Time) error {
	db := s.db.WithContext(ctx)
	res := db.Model(&mfaTOTPRow{}).
		Where("user_id = ? AND secret_sealed IS NOT NULL AND last_step < ?", userID, step).
		Updates(map[string]any{"last_step": step, "updated_at": dbTime(now)})
	if res.Error != nil {
		return mapErr("use totp step", res.Error)
	}
	if res.RowsAffected == 0 {
		return totpMiss(db, "use totp step", userID, "secret_sealed")
	}
	return nil
}

// DeleteTOTP removes the user's TOTP factor, confirmed and pending, and
// with it the recovery codes when no other factor is left, in one
// transaction (removeFactor).
func (s *Store) DeleteTOTP(ctx context.Context, userID string) error {
	return s.removeFactor(ctx, "delete totp", userID, func(tx *gorm.DB) *gorm.DB {
		return tx.Where("user_id = ?", userID).Delete(&mfaTOTPRow{})
	})
}

// removeFactor is the one removal of a second factor: in one transaction
// that holds the user's row (FOR UPDATE; SQLite has one writer) it runs
// del, which deletes the factor (no row deleted is store.ErrNotFound), counts
// the factors left as MFASummary does, and deletes the recovery codes when
// none is (they stand in for a lost factor and must not outlive the last
// one). Holding the user, of two last factors removed at once the later
// removal sees the earlier one's, so the codes go whatever the order; and
// a failure anywhere leaves the factor and the codes as they were.
func (s *Store) removeFactor(ctx context.Context, what, userID string, del func(tx *gorm.DB) *gorm.DB) error {
	err := s.tx(ctx, func(tx *gorm.DB) error {
		if _, err := lockUser(tx, userID); err != nil {
			return mapErr("lock user", err)
		}
		res := del(tx)
		if res.Error != nil {
			return mapErr("delete the factor", res.Error)
		}
		if res.RowsAffected == 0 {
			return store.ErrNotFound
		}
		var totp, webauthn, recovery int64
		if _, err := scanOne(tx.Raw(`SELECT `+factorCounts("?"), userID, userID, userID), &totp, &webauthn, &recovery); err != nil {
			return mapErr("count the factors left", err)
		}
		if factorSummary(totp, webauthn, recovery).Enrolled() || recovery == 0 {
			return nil
		}
		if err := tx.Where("user_id = ?", userID).Delete(&mfaRecoveryCodeRow{}).Error; err != nil {
			return mapErr("delete the recovery codes", err)
		}
		return nil
	})
	if err != nil {
		return mapErr(what, err)
	}
	return nil
}

var _ store.TOTPSeals = (*Store)(nil)

// totpSealedOutside is the condition, and its arguments, that a row's
// confirmed or pending sealed secret begins with none of prefixes.
func totpSealedOutside(prefixes [][]byte) (string, []any, error) {
	if len(prefixes) == 0 {
		return "(secret_sealed IS NOT NULL OR pending_sealed IS NOT NULL)", nil, nil
	}
	n := len(prefixes[0])
	args := make([]any, 0, 2*len(prefixes))
	for _, p := range prefixes {
		if len(p) == 0 || len(p) != n {
			return "", nil, errors.New("sealed prefixes must be non-empty and of one length")
		}
		args = append(args, p)
	}
	// substr counts bytes of a bytea (PostgreSQL) and of a blob (SQLite).
	// The comparisons are spelt out rather than NOT IN (?, …): GORM
	// expands a []byte right after a parenthesis into its bytes.
	outside := func(column string) string {
		cmp := make([]string, len(prefixes))
		for i := range prefixes {
			cmp[i] = fmt.Sprintf("substr(%s, 1, %d) <> ?", column, n)
		}
		return column + " IS NOT NULL AND " + strings.Join(cmp, " AND ")
	}
	cond := "((" + outside("secret_sealed") + ") OR (" + outside("pending_sealed") + "))"
	return cond, append(args, args...), nil
}

// ListTOTPSealedOutside returns a page, by user id, of the TOTP records
// holding a sealed secret that begins with none of prefixes.
func (s *Store) ListTOTPSealedOutside(ctx context.Context, prefixes [][]byte, afterUserID string, limit int) ([]store.TOTPFactor, error) {
	cond, args, err := totpSealedOutside(prefixes)
	if err != nil {
		return nil, fmt.Errorf("list sealed totp secrets: %w", err)
	}
	if limit <= 0 {
		return nil, errors.New("list sealed totp secrets: the limit must be positive")
	}
	var rows []mfaTOTPRow
	err = s.db.WithContext(ctx).Where("user_id > ?", afterUserID).Where(cond, args...).
		Order("user_id").Limit(limit).Find(&rows).Error
	if err != nil {
		return nil, mapErr("list sealed totp secrets", err)
	}
	out := make([]store.TOTPFactor, len(rows))
	for i, r := range rows {
		out[i] = store.TOTPFactor{UserID: r.UserID, SecretSealed: r.SecretSealed, ConfirmedAt: readTimePtr(r.ConfirmedAt),
			PendingSealed: r.PendingSealed, PendingCreatedAt: readTimePtr(r.PendingCreatedAt), LastStep: r.LastStep,
			CreatedAt: readTime(r.CreatedAt), UpdatedAt: readTime(r.UpdatedAt)}
	}
	return out, nil
}

// CountTOTPSealedOutside counts, in one statement, the users holding a
// sealed TOTP secret that begins with none of prefixes.
func (s *Store) CountTOTPSealedOutside(ctx context.Context, prefixes [][]byte) (int, error) {
	cond, args, err := totpSealedOutside(prefixes)
	if err != nil {
		return 0, fmt.Errorf("count sealed totp secrets: %w", err)
	}
	var n int64
	if err := s.db.WithContext(ctx).Model(&mfaTOTPRow{}).Where(cond, args...).Count(&n).Error; err != nil {
		return 0, mapErr("count sealed totp secrets", err)
	}
	return int(n), nil
}

// ResealTOTP replaces one sealed secret with one compare-and-swap statement
// on its bytes (UPDATE … WHERE column = old), so an enrolment, a
// confirmation or a removal made meanwhile, on any instance, is never
// overwritten. updated_at stays: the factor is the same.
func (s *Store) ResealTOTP(ctx context.Context, userID string, pending bool, old, sealed []byte) (bool, error) {
	if len(old) == 0 || len(sealed) == 0 {
		return false, errors.New("reseal totp: the old and new sealed secrets are required")
	}
	column := "secret_sealed"
	if pending {
		column = "pending_sealed"
	}
	res := s.db.WithContext(ctx).Model(&mfaTOTPRow{}).Where("user_id = ? AND "+column+" = ?", userID, old).
		Update(column, sealed)
	if res.Error != nil {
		return false, mapErr("reseal totp", res.Error)
	}
	return res.RowsAffected == 1, nil
}

// ReplaceRecoveryCodes replaces all the user's recovery codes in one
// transaction. An unknown user is store.ErrNotFound.
func (s *Store) ReplaceRecoveryCodes(ctx context.Context, userID string, codeHashes [][]byte, now time.Time) error {
	err := s.tx(ctx, func(tx *gorm.DB) error {
		return replaceRecoveryCodesTx(tx, userID, codeHashes, dbTime(now))
	})
	if err != nil {
		return mapErr("replace recovery codes", err)
	}
	return nil
}

// AddFirstRecoveryCodes stores codeHashes as the user's recovery codes
// when the user has no unused one, in one transaction that holds the user's
// row (FOR UPDATE; SQLite has one writer), so that of concurrent calls
// exactly one finds none and stores its codes.
func (s *Store) AddFirstRecoveryCodes(ctx context.Context, userID string, codeHashes [][]byte, now time.Time) (bool, error) {
	if len(codeHashes) == 0 {
		return false, errors.New("add first recovery codes: no codes")
	}
	var added bool
	err := s.tx(ctx, func(tx *gorm.DB) error {
		added = false // a retried transaction starts again
		if _, err := lockUser(tx, userID); err != nil {
			return mapErr("lock user", err)
		}
		var left int64
		if err := tx.Model(&mfaRecoveryCodeRow{}).Where("user_id = ? AND used_at IS NULL", userID).Count(&left).Error; err != nil {
			return mapErr("count recovery codes", err)
		}
		if left > 0 {
			return nil
		}
		added = true
		return replaceRecoveryCodesTx(tx, userID, codeHashes, dbTime(now))
	})
	if err != nil {
		return false, mapErr("add first recovery codes", err)
	}
	return added, nil
}

func replaceRecoveryCodesTx(tx *gorm.DB, userID string, codeHashes [][]byte, now time.Time) error {
	if err := tx.Where("user_id = ?", userID).Delete(&mfaRecoveryCodeRow{}).Error; err != nil {
		return mapErr("delete recovery codes", err)
	}
	if len(codeHashes) == 0 {
		return nil
	}
	rows := make([]mfaRecoveryCodeRow, len(codeHashes))
	for i, h := range codeHashes {
		rows[i] = mfaRecoveryCodeRow{UserID: userID, CodeHash: h, CreatedAt: now}
	}
	if err := tx.Create(&rows).Error; err != nil {
		if IsForeignKeyViolation(err) {
			return fmt.Errorf("insert recovery codes: user %q: %w", userID, store.ErrNotFound)
		}
		return mapErr("insert recovery codes", err)
	}
	return nil
}

// UseRecoveryCode marks the unused code with codeHash used with one
// compare-and-set statement (… WHERE used_at IS NULL) and counts the unused
// codes left, in one transaction.
func (s *Store) UseRecoveryCode(ctx context.Context, userID string, codeHash []byte, now time.Time) (int, error) {
	var left int64
	err := s.tx(ctx, func(tx *gorm.DB) error {
		res := tx.Model(&mfaRecoveryCodeRow{}).
			Where("user_id = ? AND code_hash = ? AND used_at IS NULL", userID, codeHash).
			Update("used_at", dbTime(now))
		if res.Error != nil {
			return mapErr("use recovery code", res.Error)
		}
		if res.RowsAffected == 0 {
			return fmt.Errorf("use recovery code: %w", store.ErrNotFound)
		}
		return tx.Model(&mfaRecoveryCodeRow{}).Where("user_id = ? AND used_at IS NULL", userID).Count(&left).Error
	})
	if err != nil {
		return 0, mapErr("use recovery code", err)
	}
	return int(left), nil
}

// RecoveryCodesLeft counts the user's unused recovery codes.
func (s *Store) RecoveryCodesLeft(ctx context.Context, userID string) (int, error) {
	var n int64
	err := s.db.WithContext(ctx).Model(&mfaRecoveryCodeRow{}).Where("user_id = ? AND used_at IS NULL", userID).Count(&n).Error
	if err != nil {
		return 0, mapErr("count recovery codes", err)
	}
	return int(n), nil
}

// MFASummary counts the user's factors in one statement: three scalar
// subqueries, so that the counts are of one snapshot.
func (s *Store) MFASummary(ctx context.Context, userID string) (store.MFASummary, error) {
	var totp, webauthn, recovery int64
	_, err := scanOne(s.db.WithContext(ctx).Raw(`SELECT `+factorCounts("?"), userID, userID, userID), &totp, &webauthn, &recovery)
	if err != nil {
		return store.MFASummary{}, mapErr("summarise second factors", err)
	}
	return factorSummary(totp, webauthn, recovery), nil
}

// factorCounts is the select list that counts the second factors of the
// user whose id is the expression id (a placeholder, or a column of the
// outer query): confirmed TOTP secrets, WebAuthn credentials, unused
// recovery codes. MFASummary and GetUserForLogin both read it, so they
// count alike.
func factorCounts(id string) string {
	return `(SELECT count(*) FROM mfa_totp WHERE mfa_totp.user_id = ` + id + ` AND secret_sealed IS NOT NULL),
		(SELECT count(*) FROM webauthn_credentials WHERE webauthn_credentials.user_id = ` + id + `),
		(SELECT count(*) FROM mfa_recovery_codes WHERE mfa_recovery_codes.user_id = ` + id + ` AND used_at IS NULL)`
}

// factorSummary is the summary of factorCounts' three counts.
func factorSummary(totp, webauthn, recovery int64) store.MFASummary {
	return store.MFASummary{TOTP: totp > 0, WebAuthnCredentials: int(webauthn), RecoveryCodesLeft: int(recovery)}
}

// AddWebAuthnCredential stores a new credential; a registered id is
// store.ErrAlreadyExists, an unknown user store.ErrNotFound.
func (s *Store) AddWebAuthnCredential(ctx context.Context, c store.WebAuthnCredential) error {
	if c.ID == "" || c.UserID == "" || len(c.Credential) == 0 {
		return errors.New("add webauthn credential: id, user and credential are required")
	}
	row := webAuthnCredentialRow{ID: c.ID, UserID: c.UserID, Name: c.Name, Credential: c.Credential,
		SignCount: int64(c.SignCount), CreatedAt: dbTime(c.CreatedAt), LastUsedAt: dbTimePtr(c.LastUsedAt)}
	if row.CreatedAt.IsZero() {
		row.CreatedAt = s.clock()
	}
	err := s.db.WithContext(ctx).Create(&row).Error
	if IsForeignKeyViolation(err) {
		return fmt.Errorf("add webauthn credential: user %q: %w", c.UserID, store.ErrNotFound)
	}
	return mapErr("add webauthn credential", err)
}

// ListWebAuthnCredentials returns the user's credentials, oldest first.
func (s *Store) ListWebAuthnCredentials(ctx context.Context, userID string) ([]store.WebAuthnCredential, error) {
	var rows []webAuthnCredentialRow
	if err := s.db.WithContext(ctx).Where("user_id = ?", userID).Order("created_at, id").Find(&rows).Error; err != nil {
		return nil, mapErr("list webauthn credentials", err)
	}
	out := make([]store.WebAuthnCredential, len(rows))
	for i, r := range rows {
		out[i] = r.toCredential()
	}
	return out, nil
}

// UseWebAuthnCredential records an assertion with one compare-and-set
// statement on the stored sign count.
func (s *Store) UseWebAuthnCredential(ctx context.Context, userID, id string, oldCount, signCount uint32, credential []byte, now time.Time) error {
	db := s.db.WithContext(ctx)
	now = dbTime(now)
	res := db.Model(&webAuthnCredentialRow{}).
		Where("user_id = ? AND id = ? AND sign_count = ?", userID, id, int64(oldCount)).
		Updates(map[string]any{"credential": credential, "sign_count": int64(signCount), "last_used_at": now})
	if res.Error != nil {
		return mapErr("use webauthn credential", res.Error)
	}
	if res.RowsAffected == 1 {
		return nil
	}
	var n int64
	if err := db.Model(&webAuthnCredentialRow{}).Where("user_id = ? AND id = ?", userID, id).Count(&n).Error; err != nil {
		return mapErr("use webauthn credential", err)
	}
	if n == 0 {
		return fmt.Errorf("use webauthn credential: %w", store.ErrNotFound)
	}
	return fmt.Errorf("use webauthn credential: sign count changed: %w", store.ErrConflict)
}

// DeleteWebAuthnCredential removes one credential of the user, and with it
// the recovery codes when no other factor is left, in one transaction
// (removeFactor).
func (s *Store) DeleteWebAuthnCredential(ctx context.Context, userID, id string) error {
	return s.removeFactor(ctx, "delete webauthn credential", userID, func(tx *gorm.DB) *gorm.DB {
		return tx.Where("user_id = ? AND id = ?", userID, id).Delete(&webAuthnCredentialRow{})
	})
}

// DeleteAllFactors removes every factor and recovery code of the user in
// one transaction.
func (s *Store) DeleteAllFactors(ctx context.Context, userID string) error {
	if err := s.tx(ctx, func(tx *gorm.DB) error { return deleteAllFactorsTx(tx, userID) }); err != nil {
		return mapErr("delete all factors", err)
	}
	return nil
}

func deleteAllFactorsTx(tx *gorm.DB, userID string) error {
	for _, m := range []any{&mfaTOTPRow{}, &mfaRecoveryCodeRow{}, &webAuthnCredentialRow{}} {
		if err := tx.Where("user_id = ?", userID).Delete(m).Error; err != nil {
			return mapErr(fmt.Sprintf("delete %T", m), err)
		}
	}
	return nil
}

package sqlstore

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/portcullis-auth/portcullis/store"
)

// CreateUserToken stores a one-time token for a user and, in the same
// transaction, marks the user's older unused tokens of the same purpose used,
// so only the newest link works, also when links are created concurrently
// (the user's row is locked first). It fills ID and CreatedAt (UsedAt is
// cleared); ExpiresAt must be set. An unknown user is store.ErrNotFound.
func (s *Store) CreateUserToken(ctx context.Context, t *store.UserToken) error {
	if t == nil || t.UserID == "" || t.Purpose == "" || len(t.TokenHash) == 0 || t.ExpiresAt.IsZero() {
		return fmt.Errorf("create user token: %w: user, purpose, token hash and expiry are required", ErrInvalidToken)
	}
	now := s.clock()
	row := userTokenRow{
		ID:        newID(UserTokenIDPrefix),
		UserID:    t.UserID,
		Purpose:   string(t.Purpose),
		TokenHash: t.TokenHash,
		ExpiresAt: dbTime(t.ExpiresAt),
		CreatedAt: now,
	}
	err := s.tx(ctx, func(tx *gorm.DB) error {
		// The user's row is locked first, so concurrent creations for one
		// user run one after another and each supersedes the ones before
		// it; without the lock two could each find nothing to supersede
		// and both stay live.
		if _, err := lockUser(tx, row.UserID); err != nil {
			return mapErr(fmt.Sprintf("user %q", row.UserID), err)
		}
		err := tx.Model(&userTokenRow{}).
			Where("user_id = ? AND purpose = ? AND used_at IS NULL", row.UserID, row.Purpose).
			Update("used_at", now).Error
		if err != nil {
			return mapErr("supersede older tokens", err)
		}
		if err := tx.Create(&row).Error; err != nil {
			if IsForeignKeyViolation(err) {
				return fmt.Errorf("user %q: %w", row.UserID, store.ErrNotFound)
			}
			return mapErr("insert user token", err)
		}
		return nil
	})
	if err != nil {
		return mapErr("create user token", err)
	}
	*t = store.UserToken{
		ID:        row.ID,
		UserID:    row.UserID,
		Purpose:   t.Purpose,
		TokenHash: row.TokenHash,
		ExpiresAt: row.ExpiresAt,
		CreatedAt: row.CreatedAt,
	}
	return nil
}

// ConsumeUserToken redeems a one-time token exactly once, in one transaction:
// it finds the token of that purpose hashing to tokenHash (store.ErrNotFound;
// store.ErrTokenUsed when used, superseded or voided; store.ErrTokenExpired
// at or past ExpiresAt), marks it used, loads its user, runs apply on the
// user and saves the user (every field but ID, CreatedAt and Roles;
// UpdatedAt is set). A password-reset token of a deactivated user is
// store.ErrTokenRevoked and changes nothing: a link sent while the account
// was off (an admin's) never sets its password (links sent before it was
// turned off were voided then, see saveUserTx). An error from apply rolls
// everything back, leaving the token usable, and is returned as is. apply
// may run more than once if the transaction is retried. The returned user
// carries no password hash.
func (s *Store) ConsumeUserToken(ctx context.Context, purpose store.UserTokenPurpose, tokenHash []byte,
	now time.Time, apply func(u *store.User) error) (store.User, error) {
	if len(tokenHash) == 0 {
		return store.User{}, fmt.Errorf("consume user token: %w", store.ErrNotFound)
	}
	var out store.User
	var applyErr error
	err := s.userTx(ctx, func(tx *gorm.DB, changing func(string)) error {
		applyErr = nil
		var found userTokenRow
		if err := tx.Where("purpose = ? AND token_hash = ?", string(purpose), tokenHash).Take(&found).Error; err != nil {
			return mapErr("find token", err)
		}
		// The user's row is locked before the token's, the order every
		// write of a user takes (UpdateUser locks the user, then voids its
		// reset links): the opposite order deadlocked with a concurrent
		// password change until PostgreSQL broke it.
		changing(found.UserID)
		row, err := lockUser(tx, found.UserID)
		if err != nil {
			return mapErr("load user", err)
		}
		var tok userTokenRow
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Where("id = ?", found.ID).Take(&tok).Error; err != nil {
			return mapErr("find token", err)
		}
		if tok.UsedAt != nil {
			return store.ErrTokenUsed
		}
		if !now.Before(tok.ExpiresAt) {
			return store.ErrTokenExpired
		}
		res := tx.Model(&userTokenRow{}).Where("id = ? AND used_at IS NULL", tok.ID).Update("used_at", dbTime(now))
		if res.Error != nil {
			return mapErr("mark token used", res.Error)
		}
		if res.RowsAffected == 0 {
			return store.ErrTokenUsed
		}
		if purpose == store.PurposePasswordReset && !row.Active {
			return fmt.Errorf("%w: the account is deactivated", store.ErrTokenRevoked)
		}
		roles, err := rolesOf(tx, row.ID)
		if err != nil {
			return err
		}
		u := row.toUser(roles[row.ID])
		if apply != nil {
			if err := apply(&u); err != nil {
				applyErr = err
				return err
			}
		}
		u.ID, u.CreatedAt, u.Roles = row.ID, readTime(row.CreatedAt), row.toUser(roles[row.ID]).Roles
		u.UpdatedAt = s.clock()
		if err := saveUserTx(tx, row, &u); err != nil {
			return err
		}
		u.LastLoginAt = dbTimePtr(u.LastLoginAt)
		out = u
		return nil
	})
	if applyErr != nil {
		return store.User{}, applyErr
	}
	if err != nil {
		return store.User{}, mapErr("consume user token", err)
	}
	out.PasswordHash = ""
	return out, nil
}

// voidResetLinks marks the user's unused password-reset tokens used at now,
// inside the caller's transaction: a link sent before the password changed
// (or before the account was deactivated) must not set a password over the
// one chosen since, ending the sessions started with it. Redeeming one then
// answers store.ErrTokenUsed, as a used or superseded link does.
func voidResetLinks(tx *gorm.DB, userID string, now time.Time) error {
	err := tx.Model(&userTokenRow{}).
		Where("user_id = ? AND purpose = ? AND used_at IS NULL", userID, string(store.PurposePasswordReset)).
		Update("used_at", now).Error
	if err != nil {
		return mapErr("void reset links", err)
	}
	return nil
}

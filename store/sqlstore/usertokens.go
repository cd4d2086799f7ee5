package sqlstore

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/portcullis-auth/portcullis/store"
)

// CreateUserToken stores a one-time token for a user. It supersedes
// nothing: the user's older unused tokens of the same purpose keep working
// until SupersedeUserTokens is called, once the new link's email went out,
// so a new link whose email cannot be sent cancels none. It fills ID and
// CreatedAt (UsedAt is cleared); ExpiresAt must be set. An unknown user is
// store.ErrNotFound.
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
		// The user's row is locked first, so the token is ordered with the
		// writes of the user that void their links (saveUserTx).
		if _, err := lockUser(tx, row.UserID); err != nil {
			return mapErr(fmt.Sprintf("user %q", row.UserID), err)
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

// SupersedeUserTokens marks used every other unused token of newer's user
// and purpose, provided newer itself is still unused, so that only the
// newest link works: called once newer's email went out. Of links sent at
// once, exactly one stays live: the first to supersede the others (the
// user's row is locked, and a link superseded meanwhile supersedes
// nothing). No clock decides, so a write retried late changes nothing of
// it. An unknown newer is store.ErrNotFound.
func (s *Store) SupersedeUserTokens(ctx context.Context, newer store.UserToken) error {
	err := s.tx(ctx, func(tx *gorm.DB) error {
		if _, err := lockUser(tx, newer.UserID); err != nil {
			return mapErr(fmt.Sprintf("user %q", newer.UserID), err)
		}
		var row userTokenRow
		if err := tx.Where("id = ? AND user_id = ?", newer.ID, newer.UserID).Take(&row).Error; err != nil {
			return mapErr("load the newer token", err)
		}
		if row.UsedAt != nil {
			return nil
		}
		return mapErr("supersede older tokens", tx.Model(&userTokenRow{}).
			Where("user_id = ? AND purpose = ? AND used_at IS NULL AND id <> ?", row.UserID, row.Purpose, row.ID).
			Update("used_at", s.clock()).Error)
	})
	if err != nil {
		return mapErr("supersede user tokens", err)
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
	return s.consumeUserToken(ctx, purpose, tokenHash, now, apply, nil)
}

// RedeemPasswordReset is ConsumeUserToken for a password-reset link that
// also, in the same transaction, unlinks every upstream identity of the
// user whose provider vouches does not vouch for the user's email (as
// apply left it; vouches nil vouches for none) and revokes every API key
// of the user live at now (not revoked, not expired; revoked_by the user):
// a reset either does all of it or nothing, leaving the link usable. It
// returns what it did; the returned user carries no password hash.
// vouches may run more than once if the transaction is retried.
func (s *Store) RedeemPasswordReset(ctx context.Context, tokenHash []byte, now time.Time,
	apply func(u *store.User) error, vouches func(provider, email string) bool) (store.PasswordReset, error) {
	var out store.PasswordReset
	u, err := s.consumeUserToken(ctx, store.PurposePasswordReset, tokenHash, now, apply, func(tx *gorm.DB, u store.User) error {
		var err error
		if out.Unlinked, err = unlinkUnvouchedTx(tx, u, vouches); err != nil {
			return err
		}
		out.RevokedKeys, err = revokeLiveAPIKeysTx(tx, u.ID, u.ID, now)
		return err
	})
	if err != nil {
		return store.PasswordReset{}, err
	}
	out.User = u
	return out, nil
}

// unlinkUnvouchedTx deletes, inside the caller's transaction, every
// identity of u whose provider vouches does not vouch for u's email, and
// returns them, by provider.
func unlinkUnvouchedTx(tx *gorm.DB, u store.User, vouches func(provider, email string) bool) ([]store.FederatedIdentity, error) {
	var rows []identityRow
	if err := tx.Where("user_id = ?", u.ID).Order("provider").Find(&rows).Error; err != nil {
		return nil, mapErr("list federated identities", err)
	}
	var out []store.FederatedIdentity
	for _, r := range rows {
		if vouches != nil && vouches(r.Provider, u.Email) {
			continue
		}
		res := tx.Where("provider = ? AND subject = ? AND user_id = ?", r.Provider, r.Subject, u.ID).Delete(&identityRow{})
		if res.Error != nil {
			return nil, mapErr("delete federated identity", res.Error)
		}
		if res.RowsAffected == 1 {
			out = append(out, r.identity())
		}
	}
	return out, nil
}

// revokeLiveAPIKeysTx revokes, inside the caller's transaction, every key
// of ownerID live at at (not revoked, not expired), by by, each with the
// conditional UPDATE of RevokeAPIKey, and returns the keys it revoked, by
// id.
func revokeLiveAPIKeysTx(tx *gorm.DB, ownerID, by string, at time.Time) ([]store.APIKey, error) {
	at = dbTime(at)
	var rows []apiKeyRow
	err := tx.Where("owner_user_id = ? AND revoked_at IS NULL AND expires_at > ?", ownerID, at).Order("id").Find(&rows).Error
	if err != nil {
		return nil, mapErr("list live API keys", err)
	}
	var out []store.APIKey
	for _, r := range rows {
		res := tx.Model(&apiKeyRow{}).Where("id = ? AND revoked_at IS NULL", r.ID).
			Updates(map[string]any{"revoked_at": at, "revoked_by": by, "live_hash": nil})
		if res.Error != nil {
			return nil, mapErr("revoke API key", res.Error)
		}
		if res.RowsAffected != 1 {
			continue
		}
		r.RevokedAt, r.RevokedBy = &at, by
		k, err := r.apiKey()
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}

// consumeUserToken is ConsumeUserToken, running then (when set) in its
// transaction once the user is saved: an error of then rolls everything
// back and is returned wrapped like a store error.
func (s *Store) consumeUserToken(ctx context.Context, purpose store.UserTokenPurpose, tokenHash []byte,
	now time.Time, apply func(u *store.User) error, then func(tx *gorm.DB, u store.User) error) (store.User, error) {
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
		if then != nil {
			if err := then(tx, u); err != nil {
				return err
			}
		}
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

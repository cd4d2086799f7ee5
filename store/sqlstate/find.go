package sqlstate

import (
	"context"
	"errors"
	"time"

	"gorm.io/gorm"

	"github.com/portcullis-auth/portcullis/store"
)

// FindRefresh returns the family whose current refresh token hashes to hash,
// or store.ErrNotFound when it is not current or the family is revoked or
// expired at now. It changes nothing.
func (s *State) FindRefresh(ctx context.Context, familyID string, hash []byte, now time.Time) (store.RefreshFamily, error) {
	if familyID == "" || len(hash) == 0 {
		return store.RefreshFamily{}, store.ErrNotFound
	}
	var f familyRow
	if err := s.db.WithContext(ctx).Where("id = ?", familyID).Take(&f).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return store.RefreshFamily{}, store.ErrNotFound
		}
		return store.RefreshFamily{}, dbErr("find refresh token", err)
	}
	now = ms(now)
	if f.RevokedAt != nil || !now.Before(f.AbsoluteExpiry) || !now.Before(f.IdleExpiresAt) || !hashEqual(hash, f.CurrentHash) {
		return store.RefreshFamily{}, store.ErrNotFound
	}
	return f.toFamily(), nil
}

package sqlstate

import (
	"context"
	"fmt"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// FindRefresh returns the family of the refresh token that hashes to hash
// when RotateRefresh with grace would honour it at now (familyRow.match:
// the current token, or a grace replay), the family with
// store.ErrRefreshReused when rotation would call the token reuse
// (familyRow.used), or store.ErrNotFound when it is no token of the family
// or the family is revoked or expired at now (revoked: marked, or its
// session revoked, as in RotateRefresh). It changes nothing.
func (s *State) FindRefresh(ctx context.Context, familyID string, hash []byte, now time.Time, grace time.Duration) (store.RefreshFamily, error) {
	if familyID == "" || len(hash) == 0 {
		return store.RefreshFamily{}, store.ErrNotFound
	}
	db := s.db.WithContext(ctx)
	f, sessionRevoked, found, err := loadFamily(db, familyID)
	if err != nil {
		return store.RefreshFamily{}, dbErr("find refresh token", err)
	}
	if !found {
		return store.RefreshFamily{}, store.ErrNotFound
	}
	now = ms(now)
	if !f.live(now) || sessionRevoked {
		return store.RefreshFamily{}, store.ErrNotFound
	}
	var outcome error
	if f.match(hash, now, grace) == matchNone {
		used, err := f.used(db, hash)
		if err != nil {
			return store.RefreshFamily{}, dbErr("find refresh token", err)
		}
		if !used {
			return store.RefreshFamily{}, store.ErrNotFound
		}
		outcome = store.ErrRefreshReused
	}
	fam, err := f.toFamily()
	if err != nil {
		return store.RefreshFamily{}, fmt.Errorf("sql token state: find refresh token: %w", err)
	}
	if fam.IdleTTL > 0 {
		fam.IdleExpiry = ms(f.IdleExpiresAt)
	}
	return fam, outcome
}

// Peek reports the count of key's current window and the time until it
// resets, without counting anything (0, 0 when there is no live window).
func (s *State) Peek(ctx context.Context, key string, now time.Time) (int64, time.Duration, error) {
	var out struct {
		Hits        int64 `gorm:"column:hits"`
		ExpiresAtMS int64 `gorm:"column:expires_at_ms"`
	}
	res := s.db.WithContext(ctx).Raw(`SELECT hits, expires_at_ms FROM rate_counters WHERE counter_key = ?`, key).Scan(&out)
	if res.Error != nil {
		return 0, 0, dbErr("peek counter", res.Error)
	}
	nowMS := now.UnixMilli()
	if res.RowsAffected == 0 || nowMS >= out.ExpiresAtMS {
		return 0, 0, nil
	}
	return out.Hits, time.Duration(out.ExpiresAtMS-nowMS) * time.Millisecond, nil
}

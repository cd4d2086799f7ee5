package redisstate

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// FindRefresh returns the family whose current refresh token hashes to hash,
// or store.ErrNotFound when it is not current or the family is revoked or
// expired at now. It changes nothing.
func (s *State) FindRefresh(ctx context.Context, familyID string, hash []byte, now time.Time) (store.RefreshFamily, error) {
	if !validFamilyID(familyID) || len(hash) == 0 {
		return store.RefreshFamily{}, store.ErrNotFound
	}
	vals, err := s.c.HMGet(ctx, s.famKey(familyID), "cur", "rv", "ax", "it", "ix", "u", "c", "s", "rs", "ca", "at", "amr", "tn").Result()
	if err != nil {
		return store.RefreshFamily{}, unavailable("find refresh token", err)
	}
	if vals[10] == nil { // a family written before auth times were kept
		vals[10] = vals[9]
	}
	if vals[11] == nil { // a family written before amr was kept
		vals[11] = ""
	}
	if vals[12] == nil { // a family written before the tenant was kept
		vals[12] = ""
	}
	str := make([]string, len(vals))
	for i, v := range vals {
		sv, ok := v.(string)
		if !ok {
			return store.RefreshFamily{}, store.ErrNotFound
		}
		str[i] = sv
	}
	nums := make([]int64, 0, 5)
	for _, sv := range []string{str[2], str[3], str[4], str[9], str[10]} {
		n, err := strconv.ParseInt(sv, 10, 64)
		if err != nil {
			return store.RefreshFamily{}, fmt.Errorf("find refresh token: corrupt family: %w", err)
		}
		nums = append(nums, n)
	}
	ax, it, ix, ca, at := nums[0], nums[1], nums[2], nums[3], nums[4]
	nowMS := now.UnixMilli()
	if str[1] == "1" || str[0] != string(hash) || nowMS >= ax || (it > 0 && nowMS >= ix) {
		return store.RefreshFamily{}, store.ErrNotFound
	}
	amr, err := decodeAMR(str[11])
	if err != nil {
		return store.RefreshFamily{}, fmt.Errorf("find refresh token: %w", err)
	}
	return store.RefreshFamily{
		ID: familyID, UserID: str[5], ClientID: str[6], Scope: str[7], RequestedScope: str[8],
		CreatedAt: time.UnixMilli(ca).UTC(), AuthTime: time.UnixMilli(at).UTC(), AbsoluteExpiry: time.UnixMilli(ax).UTC(), IdleTTL: time.Duration(it) * time.Millisecond,
		AMR: amr, TenantID: str[12],
	}, nil
}

package redisstate

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// familyFields are what FindRefresh's scripts (findFamilyLua) return of a
// family, in order: which token the presented hash is, then the family's
// fields.
var familyFields = []string{"match", "rv", "ax", "it", "ix", "u", "c", "s", "rs", "ca", "at", "amr", "tn", "bs", "ga"}

// presentedLua's answers FindRefresh tells apart: a hash that is no token
// of the family, and one rotation calls reuse (1 is the current token, 2
// a grace replay).
const (
	presentedNone   = 0
	presentedReused = 3
)

// FindRefresh returns the family of the refresh token that hashes to hash
// when RotateRefresh with grace would honour it at now (presentedLua, the
// rotation's own rule: the current token, or a grace replay), the family
// with store.ErrRefreshReused when rotation would call the token reuse
// (presentedLua's 3), or store.ErrNotFound when it is no token of the
// family or the family is revoked or expired at now. It changes nothing.
//
// A family whose session is revoked, or whose user's cut-off is at or
// after its auth time, counts as revoked even when its own mark is
// missing, as in RotateRefresh. Without Cluster one script reads the
// family and checks its session; on Cluster (the revocation set is in
// another slot) a live family's session is checked after the read.
func (s *State) FindRefresh(ctx context.Context, familyID string, hash []byte, now time.Time, grace time.Duration) (store.RefreshFamily, error) {
	if !validFamilyID(familyID) || len(hash) == 0 {
		return store.RefreshFamily{}, store.ErrNotFound
	}
	// Revocations this instance has queued count even while Redis refuses
	// them: when they cannot be written now, the lookup (a read, which
	// Redis still answers) goes on and a family they end is not found. So
	// RFC 7009 revocation of a refresh token keeps working, durably first,
	// while Redis refuses writes.
	flushErr := s.flushPending(ctx)
	vals, revoked, err := s.readFamily(ctx, familyID, []any{hash, now.UnixMilli(), grace.Milliseconds()})
	if err != nil {
		return store.RefreshFamily{}, err
	}
	fam, outcome := liveFamily(familyID, vals, now)
	if outcome != nil && !errors.Is(outcome, store.ErrRefreshReused) {
		return store.RefreshFamily{}, outcome
	}
	if flushErr != nil && s.pendingEnds(fam) {
		return store.RefreshFamily{}, store.ErrNotFound
	}
	if s.cluster {
		revoked, err = s.inRevocationSet(ctx, store.AccessTokenRef{SID: familyID, UserID: fam.UserID, IssuedAt: fam.AuthTime})
		if err != nil {
			return store.RefreshFamily{}, fmt.Errorf("find refresh token: check the session: %w", err)
		}
	}
	if revoked {
		return store.RefreshFamily{}, store.ErrNotFound
	}
	return fam, outcome
}

// readFamily reads the family's familyFields, find being findFamilyLua's
// arguments (presented hash, now and grace), and, without Cluster, whether
// its session is revoked (rebuilding the revocation set first when Redis
// has lost it); on Cluster revoked is false and the caller checks.
func (s *State) readFamily(ctx context.Context, familyID string, find []any) (vals []interface{}, revoked bool, err error) {
	keys := []string{s.famKey(familyID), s.usedKey(familyID)}
	if s.cluster {
		raw, err := findFamilyOnClusterScript.Run(ctx, s.c, keys, find...).Slice()
		if err != nil {
			return nil, false, unavailable("find refresh token", err)
		}
		return padFields(raw), false, nil
	}
	args := append(find[:len(find):len(find)], s.sessionCheckArgs(familyID)...)
	for attempt := 0; attempt < 3; attempt++ {
		raw, err := findFamilyScript.Run(ctx, s.c, keys, args...).Slice()
		if err != nil {
			return nil, false, unavailable("find refresh token", err)
		}
		if len(raw) < len(familyFields) {
			// Redis ends a script's array reply at its first nil: the
			// family does not exist.
			return padFields(raw), false, nil
		}
		vals = raw[:len(familyFields)]
		if len(raw) == len(familyFields) {
			return vals, false, nil
		}
		switch check, _ := raw[len(familyFields)].(int64); check {
		case 0:
			return vals, false, nil
		case 1:
			return vals, true, nil
		}
		if err := s.rebuild(ctx); err != nil {
			return nil, false, err
		}
	}
	return nil, false, unavailable("find refresh token", errors.New("revocation set lost again during rebuild"))
}

// padFields is a script's reply of familyFields with the values Redis
// left off after the first nil (a missing family) set to nil.
func padFields(raw []interface{}) []interface{} {
	vals := make([]interface{}, len(familyFields))
	copy(vals, raw)
	return vals
}

// liveFamily reads FindRefresh's fields of a family: the family; the
// family with store.ErrRefreshReused when the presented hash is one
// rotation calls reuse; or store.ErrNotFound when it is missing, revoked
// or expired at now, or the presented hash is no token of the family.
func liveFamily(familyID string, vals []interface{}, now time.Time) (store.RefreshFamily, error) {
	m, _ := vals[0].(int64)
	if m == presentedNone { // or nil: no family
		return store.RefreshFamily{}, store.ErrNotFound
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
	if vals[13] == nil { // a family written before the browser session was kept
		vals[13] = ""
	}
	if vals[14] == nil { // a family written before grant times were kept
		vals[14] = vals[9]
	}
	str := make([]string, len(vals)) // str[0], the match, stays ""
	for i, v := range vals[1:] {
		sv, ok := v.(string)
		if !ok {
			return store.RefreshFamily{}, store.ErrNotFound
		}
		str[i+1] = sv
	}
	nums := make([]int64, 0, 6)
	for _, sv := range []string{str[2], str[3], str[4], str[9], str[10], str[14]} {
		n, err := strconv.ParseInt(sv, 10, 64)
		if err != nil {
			return store.RefreshFamily{}, fmt.Errorf("find refresh token: corrupt family: %w", err)
		}
		nums = append(nums, n)
	}
	ax, it, ix, ca, at, ga := nums[0], nums[1], nums[2], nums[3], nums[4], nums[5]
	nowMS := now.UnixMilli()
	if str[1] == "1" || nowMS >= ax || (it > 0 && nowMS >= ix) {
		return store.RefreshFamily{}, store.ErrNotFound
	}
	amr, err := decodeAMR(str[11])
	if err != nil {
		return store.RefreshFamily{}, fmt.Errorf("find refresh token: %w", err)
	}
	fam := store.RefreshFamily{
		ID: familyID, UserID: str[5], ClientID: str[6], Scope: str[7], RequestedScope: str[8],
		CreatedAt: time.UnixMilli(ca).UTC(), AuthTime: time.UnixMilli(at).UTC(), AbsoluteExpiry: time.UnixMilli(ax).UTC(), IdleTTL: time.Duration(it) * time.Millisecond,
		AMR: amr, TenantID: str[12], BrowserSessionID: str[13], GrantedAt: time.UnixMilli(ga).UTC(),
	}
	if it > 0 {
		fam.IdleExpiry = time.UnixMilli(ix).UTC()
	}
	if m == presentedReused {
		return fam, store.ErrRefreshReused
	}
	return fam, nil
}

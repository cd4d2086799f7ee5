package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/portcullis-auth/portcullis/keys/verify/apikey"
	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
)

// RunAPIKeyTests runs the conformance suite of store.APIKeys. open must
// return a store on a fresh, empty (unmigrated) database for every call.
//
// Besides the documented behaviour it pins: times come back in UTC at
// microsecond precision; a revoked key is found by its hash but is not
// live; of concurrent revocations of one key exactly one
// reports the change; a key's last use only moves forward; keys go with
// their owner; an owner holds at most store.MaxLiveAPIKeys live keys, also
// under concurrent creations.
func RunAPIKeyTests(t *testing.T, open func(t *testing.T) *sqlstore.Store) {
	t.Helper()
	tests := []seededCase{
		{"ok/create_get", testAPIKeyCreateGet},
		{"fail/create", testAPIKeyCreateFail},
		{"ok/list_pages_newest_first", testAPIKeyList},
		{"fail/list_bad_cursor", testAPIKeyListBadCursor},
		{"ok/revoke", testAPIKeyRevoke},
		{"fail/revoke_other_owner_or_unknown", testAPIKeyRevokeFail},
		{"ok/touch_only_forward", testAPIKeyTouch},
		{"ok/deleted_with_the_owner", testAPIKeyDeletedWithOwner},
		{"fail/create_past_the_live_cap", testAPIKeyLiveCap},
		{"race/create_never_passes_the_live_cap", testAPIKeyLiveCapRace},
		{"race/revoke_changes_once", testAPIKeyRevokeRace},
		{"ok/claim_expiring_once", testAPIKeyClaimExpiring},
		{"race/claim_expiring_each_key_once", testAPIKeyClaimExpiringRace},
		{"fail/claim_cut_short_claims_nothing", testAPIKeyClaimCutShort},
	}
	runSeeded(t, open, tests)
}

// newAPIKey is a key of owner with a random hash, expiring in a day.
func newAPIKey(owner, name string, scopes ...string) *store.APIKey {
	_, hash := secret()
	if scopes == nil {
		scopes = []string{}
	}
	return &store.APIKey{OwnerID: owner, Name: name, Hint: "pcak_abc...wxyz", Hash: hash, Scopes: scopes,
		ExpiresAt: time.Now().Add(24 * time.Hour), CreatedBy: owner}
}

func mustAPIKey(t *testing.T, s *sqlstore.Store, k *store.APIKey) store.APIKey {
	t.Helper()
	if err := s.CreateAPIKey(rctx(t), k); err != nil {
		t.Fatalf("CreateAPIKey(%s): %v", k.Name, err)
	}
	return *k
}

func sameAPIKey(t *testing.T, what string, got, want store.APIKey) {
	t.Helper()
	eqPtr := func(a, b *time.Time) bool {
		if a == nil || b == nil {
			return a == nil && b == nil
		}
		return a.Equal(*b)
	}
	if got.ID != want.ID || got.OwnerID != want.OwnerID || got.Name != want.Name || got.Hint != want.Hint ||
		!bytes.Equal(got.Hash, want.Hash) || !slices.Equal(got.Scopes, want.Scopes) || !got.ExpiresAt.Equal(want.ExpiresAt) ||
		!got.CreatedAt.Equal(want.CreatedAt) || got.CreatedBy != want.CreatedBy || !eqPtr(got.LastUsedAt, want.LastUsedAt) ||
		!eqPtr(got.RevokedAt, want.RevokedAt) || got.RevokedBy != want.RevokedBy {
		t.Fatalf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

func testAPIKeyCreateGet(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	ann := mustCreateUser(t, s, newUser("ann@example.com", "user"))
	admin := mustCreateUser(t, s, newUser("root@example.com", "super_admin"))
	k := newAPIKey(ann.ID, "deploy", "projects:read", "projects:write")
	k.CreatedBy = admin.ID
	k.ExpiresAt = time.Now().Add(90 * 24 * time.Hour)
	created := mustAPIKey(t, s, k)
	if len(created.ID) < 8 || created.ID[:4] != sqlstore.APIKeyIDPrefix || created.Revoked() || created.LastUsedAt != nil {
		t.Fatalf("created %+v", created)
	}
	// The id has the shape the access tokens exchanged from the key are
	// known by (their sid, apikey.SessionID): a sid of any other shape is
	// a login's.
	if id, ok := apikey.KeyIDOfSession(apikey.SessionID(created.ID)); !ok || id != created.ID {
		t.Fatalf("the key's sid %q is not a key session (%q, %v)", apikey.SessionID(created.ID), id, ok)
	}
	wantUTC(t, "CreatedAt", created.CreatedAt)
	wantUTC(t, "ExpiresAt", created.ExpiresAt)
	got, err := s.GetAPIKeyByHash(c, created.Hash)
	if err != nil {
		t.Fatalf("GetAPIKeyByHash: %v", err)
	}
	sameAPIKey(t, "GetAPIKeyByHash", got, created)
	wantUTC(t, "read CreatedAt", got.CreatedAt)
	live, owner, err := s.FindLiveAPIKey(c, created.Hash)
	if err != nil {
		t.Fatalf("FindLiveAPIKey: %v", err)
	}
	sameAPIKey(t, "FindLiveAPIKey", live, created)
	// The owner comes with the key, roles sorted, without a password hash.
	if _, err := s.GrantRole(c, ann.ID, "admin"); err != nil {
		t.Fatal(err)
	}
	if _, owner, err = s.FindLiveAPIKey(c, created.Hash); err != nil || owner.ID != ann.ID || owner.Email != ann.Email ||
		!owner.Active || owner.PasswordHash != "" || strings.Join(owner.Roles, ",") != "admin,user" {
		t.Fatalf("FindLiveAPIKey's owner = %+v, %v", owner, err)
	}
	// No scopes is an empty list, never nil.
	empty := mustAPIKey(t, s, &store.APIKey{OwnerID: ann.ID, Name: "none", Hint: "h", Hash: []byte("other hash"),
		ExpiresAt: time.Now().Add(time.Hour), CreatedBy: ann.ID})
	if got, err := s.GetAPIKeyByHash(c, empty.Hash); err != nil || got.Scopes == nil || len(got.Scopes) != 0 {
		t.Fatalf("a key without scopes reads back %+v, %v", got.Scopes, err)
	}
	for _, h := range [][]byte{nil, {}, []byte("unknown"), created.Hash[:31]} {
		if _, err := s.GetAPIKeyByHash(c, h); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetAPIKeyByHash(%x) = %v, want ErrNotFound", h, err)
		}
		if _, _, err := s.FindLiveAPIKey(c, h); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("FindLiveAPIKey(%x) = %v, want ErrNotFound", h, err)
		}
	}
}

func testAPIKeyCreateFail(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	ann := mustCreateUser(t, s, newUser("ann@example.com", "user"))
	first := mustAPIKey(t, s, newAPIKey(ann.ID, "first"))
	dup := newAPIKey(ann.ID, "dup")
	dup.Hash = first.Hash
	wantErr(t, "the same hash again", s.CreateAPIKey(c, dup), store.ErrAlreadyExists)
	wantErr(t, "an unknown owner", s.CreateAPIKey(c, newAPIKey("usr_nobody", "ghost")), store.ErrNotFound)
	for name, k := range map[string]*store.APIKey{
		"nil":        nil,
		"no_owner":   {Name: "x", Hint: "h", Hash: []byte("h1"), ExpiresAt: time.Now()},
		"no_name":    {OwnerID: ann.ID, Hint: "h", Hash: []byte("h2"), ExpiresAt: time.Now()},
		"no_hash":    {OwnerID: ann.ID, Name: "x", Hint: "h", ExpiresAt: time.Now()},
		"no_hint":    {OwnerID: ann.ID, Name: "x", Hash: []byte("h3"), ExpiresAt: time.Now()},
		"no_expiry":  {OwnerID: ann.ID, Name: "x", Hint: "h", Hash: []byte("h4")},
		"nul_name":   {OwnerID: ann.ID, Name: "x\x00y", Hint: "h", Hash: []byte("h5"), ExpiresAt: time.Now()},
		"bad_scopes": {OwnerID: ann.ID, Name: "x", Hint: "h", Hash: []byte("h6"), ExpiresAt: time.Now(), Scopes: []string{"\xff"}},
	} {
		wantErr(t, "invalid key "+name, s.CreateAPIKey(c, k), sqlstore.ErrInvalidAPIKey)
	}
	page, err := s.ListAPIKeys(c, ann.ID, "", 0)
	if err != nil || len(page.Items) != 1 {
		t.Fatalf("refused keys were stored: %d keys, %v", len(page.Items), err)
	}
}

func testAPIKeyList(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	ann := mustCreateUser(t, s, newUser("ann@example.com", "user"))
	bob := mustCreateUser(t, s, newUser("bob@example.com", "user"))
	var want []string
	for i := 0; i < 5; i++ {
		want = append(want, mustAPIKey(t, s, newAPIKey(ann.ID, fmt.Sprintf("k%d", i))).ID)
	}
	mustAPIKey(t, s, newAPIKey(bob.ID, "bob's"))
	if _, _, err := s.RevokeAPIKey(c, ann.ID, want[1], ann.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	var got []string
	cursor, pages := "", 0
	for {
		page, err := s.ListAPIKeys(c, ann.ID, cursor, 2)
		if err != nil {
			t.Fatalf("ListAPIKeys: %v", err)
		}
		pages++
		for _, k := range page.Items {
			if k.OwnerID != ann.ID {
				t.Fatalf("another owner's key listed: %+v", k)
			}
			got = append(got, k.ID)
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	// Newest first; a revoked key is still listed.
	sortedNewestFirst := slices.Clone(want)
	slices.Reverse(sortedNewestFirst)
	if pages != 3 || !slices.Equal(got, sortedNewestFirst) {
		t.Fatalf("listed %v in %d pages, want %v in 3", got, pages, sortedNewestFirst)
	}
	if page, err := s.ListAPIKeys(c, "usr_nobody", "", 0); err != nil || len(page.Items) != 0 || page.Items == nil {
		t.Fatalf("ListAPIKeys(unknown owner) = %+v, %v; want an empty list", page, err)
	}
}

func testAPIKeyListBadCursor(t *testing.T, s *sqlstore.Store) {
	for _, cur := range []string{"!!", "e30", "bm90IGpzb24"} {
		if _, err := s.ListAPIKeys(rctx(t), "usr_x", cur, 0); !errors.Is(err, sqlstore.ErrInvalidCursor) {
			t.Fatalf("ListAPIKeys(cursor %q) = %v, want ErrInvalidCursor", cur, err)
		}
	}
}

func testAPIKeyRevoke(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	ann := mustCreateUser(t, s, newUser("ann@example.com", "user"))
	admin := mustCreateUser(t, s, newUser("root@example.com", "super_admin"))
	k := mustAPIKey(t, s, newAPIKey(ann.ID, "k"))
	at := time.Now().Add(-time.Minute)
	got, changed, err := s.RevokeAPIKey(c, ann.ID, k.ID, admin.ID, at)
	if err != nil || !changed || !got.Revoked() || got.RevokedBy != admin.ID || !got.RevokedAt.Equal(at.UTC().Truncate(time.Microsecond)) {
		t.Fatalf("RevokeAPIKey = %+v, %v, %v", got, changed, err)
	}
	wantUTC(t, "RevokedAt", *got.RevokedAt)
	again, changed, err := s.RevokeAPIKey(c, ann.ID, k.ID, ann.ID, time.Now())
	if err != nil || changed || !again.RevokedAt.Equal(*got.RevokedAt) || again.RevokedBy != admin.ID {
		t.Fatalf("a second revocation = %+v, %v, %v; want the first one kept", again, changed, err)
	}
	byHash, err := s.GetAPIKeyByHash(c, k.Hash)
	if err != nil || !byHash.Revoked() {
		t.Fatalf("GetAPIKeyByHash after revoking = %+v, %v", byHash, err)
	}
	// A revoked key is no longer live: the lookup of a use misses it as it
	// misses an unknown key.
	if _, _, err := s.FindLiveAPIKey(c, k.Hash); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("FindLiveAPIKey after revoking = %v, want ErrNotFound", err)
	}
	other := mustAPIKey(t, s, newAPIKey(ann.ID, "other"))
	if _, _, err := s.FindLiveAPIKey(c, other.Hash); err != nil {
		t.Fatalf("another key is no longer live: %v", err)
	}
	// A revocation by value names nobody.
	v := mustAPIKey(t, s, newAPIKey(ann.ID, "by value"))
	if got, changed, err := s.RevokeAPIKey(c, ann.ID, v.ID, "", time.Now()); err != nil || !changed || got.RevokedBy != "" {
		t.Fatalf("RevokeAPIKey by value = %+v, %v, %v", got, changed, err)
	}
}

func testAPIKeyRevokeFail(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	ann := mustCreateUser(t, s, newUser("ann@example.com", "user"))
	bob := mustCreateUser(t, s, newUser("bob@example.com", "user"))
	k := mustAPIKey(t, s, newAPIKey(ann.ID, "k"))
	for _, tc := range []struct{ owner, id string }{
		{bob.ID, k.ID},
		{ann.ID, "apk_unknown"},
		{ann.ID, ""},
		{ann.ID, "apk_\x00"},
	} {
		if _, _, err := s.RevokeAPIKey(c, tc.owner, tc.id, bob.ID, time.Now()); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("RevokeAPIKey(%q, %q) = %v, want ErrNotFound", tc.owner, tc.id, err)
		}
	}
	if got, err := s.GetAPIKeyByHash(c, k.Hash); err != nil || got.Revoked() {
		t.Fatalf("another owner revoked the key: %+v, %v", got, err)
	}
}

func testAPIKeyTouch(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	ann := mustCreateUser(t, s, newUser("ann@example.com", "user"))
	k := mustAPIKey(t, s, newAPIKey(ann.ID, "k"))
	t1 := time.Now().Add(time.Minute).UTC().Truncate(time.Microsecond)
	if err := s.TouchAPIKey(c, k.ID, t1); err != nil {
		t.Fatalf("TouchAPIKey: %v", err)
	}
	if err := s.TouchAPIKey(c, k.ID, t1.Add(-30*time.Second)); err != nil {
		t.Fatalf("TouchAPIKey(earlier): %v", err)
	}
	got, err := s.GetAPIKeyByHash(c, k.Hash)
	if err != nil || got.LastUsedAt == nil || !got.LastUsedAt.Equal(t1) {
		t.Fatalf("LastUsedAt = %v, %v; want %v (an earlier use never moves it back)", got.LastUsedAt, err, t1)
	}
	wantUTC(t, "LastUsedAt", *got.LastUsedAt)
	t2 := t1.Add(time.Minute)
	if err := s.TouchAPIKey(c, k.ID, t2); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetAPIKeyByHash(c, k.Hash); !got.LastUsedAt.Equal(t2) {
		t.Fatalf("LastUsedAt = %v, want %v", got.LastUsedAt, t2)
	}
	if err := s.TouchAPIKey(c, "apk_unknown", time.Now()); err != nil {
		t.Fatalf("TouchAPIKey(unknown) = %v, want nil", err)
	}
}

func testAPIKeyDeletedWithOwner(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	bot := mustCreateUser(t, s, &store.User{Kind: store.UserMachine, Name: "bot", Active: true, Roles: []string{"user"}})
	ann := mustCreateUser(t, s, newUser("ann@example.com", "user"))
	k := mustAPIKey(t, s, newAPIKey(bot.ID, "bot key"))
	kept := mustAPIKey(t, s, newAPIKey(ann.ID, "ann's key"))
	if err := s.DeleteUser(c, bot.ID); err != nil {
		t.Fatalf("DeleteUser: %v", err)
	}
	if _, err := s.GetAPIKeyByHash(c, k.Hash); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the key outlived its owner: %v", err)
	}
	if _, err := s.GetAPIKeyByHash(c, kept.Hash); err != nil {
		t.Fatalf("another owner's key went too: %v", err)
	}
}

func testAPIKeyRevokeRace(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	ann := mustCreateUser(t, s, newUser("ann@example.com", "user"))
	k := mustAPIKey(t, s, newAPIKey(ann.ID, "k"))
	errNotChanged := errors.New("not changed")
	errs := race(relRacers, func(i int) error {
		got, changed, err := s.RevokeAPIKey(c, ann.ID, k.ID, fmt.Sprintf("usr_racer%d", i), time.Now())
		switch {
		case err != nil:
			return err
		case !got.Revoked():
			return errors.New("the key is not revoked")
		case !changed:
			return errNotChanged
		}
		return nil
	})
	w := oneWinner(t, "revoke one key", errs, errNotChanged)
	if got, err := s.GetAPIKeyByHash(c, k.Hash); err != nil || got.RevokedBy != fmt.Sprintf("usr_racer%d", w) {
		t.Fatalf("the key records %+v, %v; want the winner's revocation", got, err)
	}
}

func testAPIKeyClaimExpiring(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	now := time.Now().Truncate(time.Millisecond)
	week := now.Add(7 * 24 * time.Hour)
	ann := mustCreateUser(t, s, newUser("ann@example.com", "user"))
	bot := mustCreateUser(t, s, &store.User{Kind: store.UserMachine, Name: "bot", Active: true, Roles: []string{"user"}})
	expiring := func(owner store.User, name string, in time.Duration) store.APIKey {
		k := newAPIKey(owner.ID, name)
		k.ExpiresAt, k.CreatedBy = now.Add(in), ann.ID
		return mustAPIKey(t, s, k)
	}
	botKey := expiring(bot, "bot key", 2*24*time.Hour)
	soon := expiring(ann, "soon", 3*24*time.Hour)
	expiring(ann, "later", 30*24*time.Hour)
	expiring(ann, "expired", -time.Hour)
	revoked := expiring(ann, "revoked", 24*time.Hour)
	if _, _, err := s.RevokeAPIKey(c, ann.ID, revoked.ID, ann.ID, now); err != nil {
		t.Fatal(err)
	}
	got, err := s.ClaimExpiringAPIKeys(c, now, week, 10)
	if err != nil {
		t.Fatalf("ClaimExpiringAPIKeys: %v", err)
	}
	if len(got) != 2 || got[0].Key.ID != botKey.ID || got[1].Key.ID != soon.ID {
		t.Fatalf("claimed %+v; want the bot's key, then soon (by expiry)", got)
	}
	// A machine owner has no email: its key's creator is told.
	if got[0].Notify != "ann@example.com" || got[0].ToOwner || got[0].OwnerName != "bot" ||
		got[1].Notify != "ann@example.com" || !got[1].ToOwner || got[1].Key.Name != "soon" {
		t.Fatalf("claimed %+v", got)
	}
	if again, err := s.ClaimExpiringAPIKeys(c, now, week, 10); err != nil || len(again) != 0 {
		t.Fatalf("a second claim = %+v, %v; want none", again, err)
	}
	// A released claim (the notice could not be sent) is claimed again.
	if err := s.ReleaseExpiringAPIKey(c, soon.ID); err != nil {
		t.Fatal(err)
	}
	if again, err := s.ClaimExpiringAPIKeys(c, now, week, 10); err != nil || len(again) != 1 || again[0].Key.ID != soon.ID {
		t.Fatalf("the claim after a release = %+v, %v; want soon", again, err)
	}
	// The limit caps a claim; the rest come with the next one.
	for i := range 3 {
		expiring(ann, fmt.Sprintf("batch %d", i), time.Duration(4+i)*24*time.Hour)
	}
	if first, err := s.ClaimExpiringAPIKeys(c, now, week, 2); err != nil || len(first) != 2 {
		t.Fatalf("claim of 2 = %d, %v", len(first), err)
	}
	if rest, err := s.ClaimExpiringAPIKeys(c, now, week, 2); err != nil || len(rest) != 1 || rest[0].Key.Name != "batch 2" {
		t.Fatalf("the rest = %+v, %v", rest, err)
	}
}

func testAPIKeyClaimExpiringRace(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	now := time.Now()
	ann := mustCreateUser(t, s, newUser("ann@example.com", "user"))
	const keys = 5
	for i := range keys {
		k := newAPIKey(ann.ID, fmt.Sprintf("k%d", i))
		k.ExpiresAt = now.Add(time.Duration(i+1) * time.Hour)
		mustAPIKey(t, s, k)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	errs := race(relRacers, func(int) error {
		got, err := s.ClaimExpiringAPIKeys(c, now, now.Add(7*24*time.Hour), keys)
		mu.Lock()
		defer mu.Unlock()
		for _, e := range got {
			seen[e.Key.ID]++
		}
		return err
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("racer %d: %v", i, err)
		}
	}
	if len(seen) != keys {
		t.Fatalf("%d of %d keys claimed", len(seen), keys)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("key %s claimed %d times", id, n)
		}
	}
}

// testAPIKeyClaimCutShort: a claim whose context ends once its first key
// is marked (an instance shutting down) fails and leaves every key
// unclaimed, so the next claim, on a fresh context, announces them. A
// claim left behind would never be released: the owner would never hear
// of the key's expiry.
func testAPIKeyClaimCutShort(t *testing.T, s *sqlstore.Store) {
	now := time.Now()
	ann := mustCreateUser(t, s, newUser("ann@example.com", "user"))
	var ids []string
	for i := range 2 {
		k := newAPIKey(ann.ID, fmt.Sprintf("k%d", i))
		k.ExpiresAt = now.Add(time.Duration(i+1) * time.Hour)
		ids = append(ids, mustAPIKey(t, s, k).ID)
	}
	ctx, cancel := context.WithCancel(rctx(t))
	defer cancel()
	var armed atomic.Bool
	armed.Store(true)
	err := s.DB().Callback().Raw().After("gorm:raw").Register("test:cut_short", func(tx *gorm.DB) {
		q := tx.Statement.SQL.String() // a claim marks a key; a release sets NULL
		if strings.Contains(q, "SET expiry_notified_at =") && !strings.Contains(q, "= NULL") && armed.CompareAndSwap(true, false) {
			cancel()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.ClaimExpiringAPIKeys(ctx, now, now.Add(7*24*time.Hour), 10); err == nil {
		t.Fatalf("the claim cut short = %+v, nil; want its context's error", got)
	}
	if armed.Load() {
		t.Fatal("no key was marked claimed")
	}
	got, err := s.ClaimExpiringAPIKeys(rctx(t), now, now.Add(7*24*time.Hour), 10)
	if err != nil {
		t.Fatalf("the next claim: %v", err)
	}
	var claimed []string
	for _, e := range got {
		claimed = append(claimed, e.Key.ID)
	}
	if !slices.Equal(claimed, ids) {
		t.Fatalf("the next claim got %v; want %v (nothing kept from the claim cut short)", claimed, ids)
	}
}

// fillLiveKeys gives owner n live keys.
func fillLiveKeys(t *testing.T, s *sqlstore.Store, owner string, n int) []store.APIKey {
	t.Helper()
	out := make([]store.APIKey, 0, n)
	for i := range n {
		out = append(out, mustAPIKey(t, s, newAPIKey(owner, fmt.Sprintf("k%d", i))))
	}
	return out
}

func testAPIKeyLiveCap(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	ann := mustCreateUser(t, s, newUser("ann@example.com", "user"))
	bob := mustCreateUser(t, s, newUser("bob@example.com", "user"))
	keys := fillLiveKeys(t, s, ann.ID, store.MaxLiveAPIKeys)
	wantErr(t, "a key past the cap", s.CreateAPIKey(c, newAPIKey(ann.ID, "one more")), store.ErrTooManyAPIKeys)
	// Another owner is not held back.
	mustAPIKey(t, s, newAPIKey(bob.ID, "bob's"))
	// A revoked key and an expired one no longer count.
	if _, _, err := s.RevokeAPIKey(c, ann.ID, keys[0].ID, ann.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	mustAPIKey(t, s, newAPIKey(ann.ID, "after a revocation"))
	wantErr(t, "full again", s.CreateAPIKey(c, newAPIKey(ann.ID, "one more")), store.ErrTooManyAPIKeys)
	if err := s.DB().Exec("UPDATE api_keys SET expires_at = ? WHERE id = ?", time.Now().Add(-time.Minute).UTC(), keys[1].ID).Error; err != nil {
		t.Fatal(err)
	}
	mustAPIKey(t, s, newAPIKey(ann.ID, "after an expiry"))
	wantErr(t, "full once more", s.CreateAPIKey(c, newAPIKey(ann.ID, "one more")), store.ErrTooManyAPIKeys)
}

func testAPIKeyLiveCapRace(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	ann := mustCreateUser(t, s, newUser("ann@example.com", "user"))
	const room = 3
	fillLiveKeys(t, s, ann.ID, store.MaxLiveAPIKeys-room)
	errs := race(relRacers, func(i int) error {
		return s.CreateAPIKey(c, newAPIKey(ann.ID, fmt.Sprintf("racer%d", i)))
	})
	made := 0
	for _, err := range errs {
		switch {
		case err == nil:
			made++
		case !errors.Is(err, store.ErrTooManyAPIKeys):
			t.Fatalf("a racing creation failed otherwise: %v", err)
		}
	}
	if made != room {
		t.Fatalf("%d of %d racing creations were stored, want %d", made, relRacers, room)
	}
	var live int64
	if err := s.DB().Raw("SELECT COUNT(*) FROM api_keys WHERE owner_user_id = ? AND revoked_at IS NULL", ann.ID).Scan(&live).Error; err != nil {
		t.Fatal(err)
	}
	if live != store.MaxLiveAPIKeys {
		t.Fatalf("the owner holds %d live keys, want %d", live, store.MaxLiveAPIKeys)
	}
}

package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
)

// resetFixture is a user with a reset link, an identity at a vouching
// provider ("home") and one at another ("other"), a live key, an expired
// key and a revoked one.
type resetFixture struct {
	user                   store.User
	link                   []byte
	live, expired, revoked store.APIKey
}

func newResetFixture(t *testing.T, s *sqlstore.Store, email string, now time.Time) resetFixture {
	t.Helper()
	syncDefaultRoles(t, s)
	c := rctx(t)
	f := resetFixture{user: mustCreateUser(t, s, newUser(email, "user"))}
	f.link = mustUserToken(t, s, f.user.ID, store.PurposePasswordReset, now.Add(time.Hour))
	for _, p := range []string{"home", "other"} {
		fi := store.FederatedIdentity{Provider: p, Issuer: "https://" + p + ".example", Subject: p + "-" + email, UserID: f.user.ID, Email: email}
		if err := s.LinkFederatedIdentity(c, &fi); err != nil {
			t.Fatal(err)
		}
	}
	f.live = mustAPIKey(t, s, newAPIKey(f.user.ID, "live"))
	k := newAPIKey(f.user.ID, "expired")
	k.ExpiresAt = now.Add(-time.Minute)
	f.expired = mustAPIKey(t, s, k)
	f.revoked = mustAPIKey(t, s, newAPIKey(f.user.ID, "revoked"))
	if _, _, err := s.RevokeAPIKey(c, f.user.ID, f.revoked.ID, "someone", now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	return f
}

// homeVouches vouches for every address through the provider "home" only.
func homeVouches(provider, _ string) bool { return provider == "home" }

func setHash(u *store.User) error { u.PasswordHash = "$reset"; return nil }

// testRedeemPasswordReset: the redemption sets the password, unlinks the
// identities the filter does not vouch for, revokes the live keys (not
// the expired or revoked ones, which are left as they were) and says so.
func testRedeemPasswordReset(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	now := time.Now().UTC()
	f := newResetFixture(t, s, "rita@example.com", now)
	got, err := s.RedeemPasswordReset(c, f.link, now, setHash, homeVouches)
	if err != nil {
		t.Fatalf("RedeemPasswordReset: %v", err)
	}
	if got.User.ID != f.user.ID || got.User.PasswordHash != "" {
		t.Fatalf("redeemed user %+v", got.User)
	}
	if len(got.Unlinked) != 1 || got.Unlinked[0].Provider != "other" || got.Unlinked[0].Subject != "other-rita@example.com" {
		t.Fatalf("unlinked %+v; want the identity at other", got.Unlinked)
	}
	if len(got.RevokedKeys) != 1 || got.RevokedKeys[0].ID != f.live.ID || !got.RevokedKeys[0].Revoked() ||
		got.RevokedKeys[0].RevokedBy != f.user.ID {
		t.Fatalf("revoked %+v; want the live key, by its owner", got.RevokedKeys)
	}
	if u, _ := s.GetUser(c, f.user.ID); u.PasswordHash != "$reset" {
		t.Fatalf("hash %q after the reset", u.PasswordHash)
	}
	ids, err := s.ListFederatedIdentities(c, f.user.ID)
	if err != nil || len(ids) != 1 || ids[0].Provider != "home" {
		t.Fatalf("identities after the reset: %+v, %v; want home's", ids, err)
	}
	if _, _, err := s.FindLiveAPIKey(c, f.live.Hash); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the live key after the reset: %v, want not live", err)
	}
	if k, err := s.GetAPIKeyByHash(c, f.expired.Hash); err != nil || k.Revoked() {
		t.Fatalf("the expired key after the reset: %+v, %v; want left as it was", k, err)
	}
	if k, err := s.GetAPIKeyByHash(c, f.revoked.Hash); err != nil || k.RevokedBy != "someone" {
		t.Fatalf("the revoked key after the reset: %+v, %v; want its first revocation", k, err)
	}
	_, err = s.RedeemPasswordReset(c, f.link, now, setHash, homeVouches)
	wantErr(t, "redeem twice", err, store.ErrTokenUsed)
	// No filter vouches for nobody.
	g := newResetFixture(t, s, "gus@example.com", now)
	got, err = s.RedeemPasswordReset(c, g.link, now, setHash, nil)
	if err != nil || len(got.Unlinked) != 2 {
		t.Fatalf("without a filter: %+v, %v; want both identities unlinked", got.Unlinked, err)
	}
}

// testRedeemPasswordResetFail: a redemption that fails (apply refuses,
// or the context ends once the password is written) changes nothing: the
// password, the identities and the keys stay, and the link redeems later.
func testRedeemPasswordResetFail(t *testing.T, s *sqlstore.Store) {
	now := time.Now().UTC()
	ctx, cancel := context.WithCancel(rctx(t))
	defer cancel()
	var armed atomic.Bool
	err := s.DB().Callback().Update().After("gorm:update").Register("test:cut_short", func(tx *gorm.DB) {
		if tx.Statement.Table == "users" && armed.CompareAndSwap(true, false) {
			cancel()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	refused := errors.New("refused")
	for _, tc := range []struct {
		name  string
		apply func(u *store.User) error
		cut   bool
	}{
		{"apply_refuses", func(*store.User) error { return refused }, false},
		{"context_ends_once_the_password_is_written", setHash, true},
	} {
		c := rctx(t)
		if tc.cut {
			armed.Store(true)
			c = ctx
		}
		f := newResetFixture(t, s, tc.name+"@example.com", now)
		if _, err := s.RedeemPasswordReset(c, f.link, now, tc.apply, homeVouches); err == nil {
			t.Fatalf("%s: the redemption succeeded", tc.name)
		}
		if tc.cut && armed.Load() {
			t.Fatalf("%s: the password was never written", tc.name)
		}
		fresh := rctx(t)
		if u, _ := s.GetUser(fresh, f.user.ID); u.PasswordHash != f.user.PasswordHash {
			t.Fatalf("%s: the password changed", tc.name)
		}
		ids, err := s.ListFederatedIdentities(fresh, f.user.ID)
		if err != nil || len(ids) != 2 {
			t.Fatalf("%s: identities %+v, %v; want both", tc.name, ids, err)
		}
		if _, _, err := s.FindLiveAPIKey(fresh, f.live.Hash); err != nil {
			t.Fatalf("%s: the live key: %v", tc.name, err)
		}
		got, err := s.RedeemPasswordReset(fresh, f.link, now, setHash, homeVouches)
		if err != nil || len(got.Unlinked) != 1 || !slices.ContainsFunc(got.RevokedKeys, func(k store.APIKey) bool { return k.ID == f.live.ID }) {
			t.Fatalf("%s: the link afterwards: %+v, %v; want it redeemed in full", tc.name, got, err)
		}
	}
}

// testUpdateUserRevokingKeys: the update writes the user as fn left it,
// revokes the live keys by the given actor (not the expired or revoked
// ones, which are left as they were) and says so; a user with no live key
// is updated and revokes none.
func testUpdateUserRevokingKeys(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	now := time.Now().UTC()
	f := newResetFixture(t, s, "tess@example.com", now)
	u, revoked, err := s.UpdateUserRevokingKeys(c, f.user.ID, func(u *store.User) error {
		u.PasswordHash, u.MustChangePassword = "$temporary", true
		return nil
	}, "admin-1", now)
	if err != nil {
		t.Fatalf("UpdateUserRevokingKeys: %v", err)
	}
	if u.ID != f.user.ID || u.PasswordHash != "" || !u.MustChangePassword {
		t.Fatalf("updated user %+v", u)
	}
	if len(revoked) != 1 || revoked[0].ID != f.live.ID || !revoked[0].Revoked() || revoked[0].RevokedBy != "admin-1" {
		t.Fatalf("revoked %+v; want the live key, by admin-1", revoked)
	}
	if got, _ := s.GetUser(c, f.user.ID); got.PasswordHash != "$temporary" {
		t.Fatalf("hash %q after the update", got.PasswordHash)
	}
	if _, _, err := s.FindLiveAPIKey(c, f.live.Hash); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the live key after the update: %v, want not live", err)
	}
	if k, err := s.GetAPIKeyByHash(c, f.expired.Hash); err != nil || k.Revoked() {
		t.Fatalf("the expired key after the update: %+v, %v; want left as it was", k, err)
	}
	if k, err := s.GetAPIKeyByHash(c, f.revoked.Hash); err != nil || k.RevokedBy != "someone" {
		t.Fatalf("the revoked key after the update: %+v, %v; want its first revocation", k, err)
	}
	_, revoked, err = s.UpdateUserRevokingKeys(c, f.user.ID, func(u *store.User) error { u.PasswordHash = "$again"; return nil }, "admin-1", now)
	if err != nil || len(revoked) != 0 {
		t.Fatalf("again: revoked %+v, %v; want none", revoked, err)
	}
	_, _, err = s.UpdateUserRevokingKeys(c, "usr_missing", func(*store.User) error { return nil }, "admin-1", now)
	wantErr(t, "an unknown user", err, store.ErrNotFound)
}

// testUpdateUserRevokingKeysFail: an update that fails (fn refuses, the
// database refuses the key's revocation, or the context ends once the
// password is written) changes nothing: the password and the keys stay,
// and the update made later does it all.
func testUpdateUserRevokingKeysFail(t *testing.T, s *sqlstore.Store) {
	now := time.Now().UTC()
	ctx, cancel := context.WithCancel(rctx(t))
	defer cancel()
	var cut, refuse atomic.Bool
	injected := fmt.Errorf("injected: %w", store.ErrUnavailable)
	err := s.DB().Callback().Update().After("gorm:update").Register("test:cut_short", func(tx *gorm.DB) {
		if tx.Statement.Table == "users" && cut.CompareAndSwap(true, false) {
			cancel()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.DB().Callback().Update().Before("gorm:update").Register("test:refuse_key", func(tx *gorm.DB) {
		if tx.Statement.Table == "api_keys" && refuse.CompareAndSwap(true, false) {
			_ = tx.AddError(injected)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	refused := errors.New("refused")
	setTemporary := func(u *store.User) error { u.PasswordHash, u.MustChangePassword = "$temporary", true; return nil }
	for _, tc := range []struct {
		name  string
		fn    func(u *store.User) error
		armed *atomic.Bool
		want  error
	}{
		{"fn_refuses", func(*store.User) error { return refused }, nil, refused},
		{"key_revocation_refused", setTemporary, &refuse, store.ErrUnavailable},
		{"context_ends_once_the_password_is_written", setTemporary, &cut, nil},
	} {
		f := newResetFixture(t, s, tc.name+"@example.com", now)
		c := rctx(t)
		if tc.armed != nil {
			tc.armed.Store(true)
		}
		if tc.armed == &cut {
			c = ctx
		}
		_, _, err := s.UpdateUserRevokingKeys(c, f.user.ID, tc.fn, "admin-1", now)
		switch {
		case err == nil:
			t.Fatalf("%s: the update succeeded", tc.name)
		case tc.want != nil && !errors.Is(err, tc.want):
			t.Fatalf("%s: %v, want %v", tc.name, err, tc.want)
		case tc.armed != nil && tc.armed.Load():
			t.Fatalf("%s: the failure was never injected", tc.name)
		}
		fresh := rctx(t)
		if u, _ := s.GetUser(fresh, f.user.ID); u.PasswordHash != f.user.PasswordHash || u.MustChangePassword {
			t.Fatalf("%s: the password changed", tc.name)
		}
		if _, _, err := s.FindLiveAPIKey(fresh, f.live.Hash); err != nil {
			t.Fatalf("%s: the live key: %v", tc.name, err)
		}
		_, revoked, err := s.UpdateUserRevokingKeys(fresh, f.user.ID, setTemporary, "admin-1", now)
		if err != nil || len(revoked) != 1 || revoked[0].ID != f.live.ID {
			t.Fatalf("%s: the update afterwards: %+v, %v; want the live key revoked", tc.name, revoked, err)
		}
	}
}

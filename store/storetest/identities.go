package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
)

// RunFederatedIdentityTests runs the conformance suite of
// store.FederatedIdentities. open must return a store on a fresh, empty
// (unmigrated) database for every call.
//
// Besides the documented behaviour it pins: of concurrent links of one
// upstream account (to one user or to many), and of concurrent
// just-in-time creations for it, exactly one wins and the losers leave
// nothing behind; identities go with their user.
func RunFederatedIdentityTests(t *testing.T, open func(t *testing.T) *sqlstore.Store) {
	t.Helper()
	tests := []seededCase{
		{"ok/link_get_list_delete", testIdentityRoundTrip},
		{"fail/link_conflicts", testIdentityConflicts},
		{"ok/create_user_with_identity", testIdentityCreateUser},
		{"fail/create_user_with_identity_is_atomic", testIdentityCreateUserAtomic},
		{"ok/deleted_with_the_user", testIdentityDeletedWithUser},
		{"ok/accept_invite_with_identity", testIdentityAcceptInvite},
		{"race/double_link_one_wins", testIdentityLinkRace},
		{"race/double_jit_one_wins", testIdentityCreateRace},
	}
	runSeeded(t, open, tests)
}

func testIdentityRoundTrip(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	u := mustCreateUser(t, s, newUser("ann@example.com", "user"))
	fi := &store.FederatedIdentity{Provider: "google", Subject: "1234", UserID: u.ID, Email: "ann@gmail.com"}
	if err := s.LinkFederatedIdentity(c, fi); err != nil {
		t.Fatalf("LinkFederatedIdentity: %v", err)
	}
	if fi.LinkedAt.IsZero() || fi.LinkedAt.Location().String() != "UTC" {
		t.Fatalf("LinkedAt = %v, want a UTC time", fi.LinkedAt)
	}
	got, err := s.GetFederatedIdentity(c, "google", "1234")
	if err != nil {
		t.Fatalf("GetFederatedIdentity: %v", err)
	}
	if got != *fi {
		t.Fatalf("GetFederatedIdentity = %+v, want %+v", got, *fi)
	}
	for _, k := range [][2]string{{"google", "12345"}, {"gitlab", "1234"}, {"Google", "1234"}} {
		if _, err := s.GetFederatedIdentity(c, k[0], k[1]); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetFederatedIdentity(%v) = %v, want ErrNotFound", k, err)
		}
	}
	second := &store.FederatedIdentity{Provider: "entra", Subject: "oid-1", UserID: u.ID, Email: "ann@corp.example"}
	if err := s.LinkFederatedIdentity(c, second); err != nil {
		t.Fatalf("LinkFederatedIdentity(entra): %v", err)
	}
	list, err := s.ListFederatedIdentities(c, u.ID)
	if err != nil || len(list) != 2 || list[0].Provider != "entra" || list[1].Provider != "google" {
		t.Fatalf("ListFederatedIdentities = %+v, %v; want entra then google", list, err)
	}
	if list, err := s.ListFederatedIdentities(c, "usr_nobody"); err != nil || len(list) != 0 {
		t.Fatalf("ListFederatedIdentities(unknown) = %+v, %v; want empty", list, err)
	}
	gone, err := s.DeleteFederatedIdentity(c, u.ID, "google")
	if err != nil || gone.Subject != "1234" {
		t.Fatalf("DeleteFederatedIdentity = %+v, %v", gone, err)
	}
	if _, err := s.DeleteFederatedIdentity(c, u.ID, "google"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second DeleteFederatedIdentity = %v, want ErrNotFound", err)
	}
	if _, err := s.GetFederatedIdentity(c, "google", "1234"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetFederatedIdentity after delete = %v", err)
	}
	// Unlinked, the upstream account may be linked again (to anyone).
	if err := s.LinkFederatedIdentity(c, &store.FederatedIdentity{Provider: "google", Subject: "1234", UserID: u.ID}); err != nil {
		t.Fatalf("relink: %v", err)
	}
}

func testIdentityConflicts(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	ann := mustCreateUser(t, s, newUser("ann@example.com", "user"))
	bob := mustCreateUser(t, s, newUser("bob@example.com", "user"))
	if err := s.LinkFederatedIdentity(c, &store.FederatedIdentity{Provider: "google", Subject: "1", UserID: ann.ID}); err != nil {
		t.Fatalf("link: %v", err)
	}
	for _, tc := range []struct {
		name string
		fi   store.FederatedIdentity
		want error
	}{
		{"same_subject_other_user", store.FederatedIdentity{Provider: "google", Subject: "1", UserID: bob.ID}, store.ErrAlreadyExists},
		{"same_subject_same_user", store.FederatedIdentity{Provider: "google", Subject: "1", UserID: ann.ID}, store.ErrAlreadyExists},
		{"second_identity_at_provider", store.FederatedIdentity{Provider: "google", Subject: "2", UserID: ann.ID}, store.ErrAlreadyExists},
		{"unknown_user", store.FederatedIdentity{Provider: "google", Subject: "3", UserID: "usr_nobody"}, store.ErrNotFound},
	} {
		fi := tc.fi
		if err := s.LinkFederatedIdentity(c, &fi); !errors.Is(err, tc.want) {
			t.Fatalf("%s: LinkFederatedIdentity = %v, want %v", tc.name, err, tc.want)
		}
	}
	for _, fi := range []*store.FederatedIdentity{nil, {Subject: "x", UserID: ann.ID}, {Provider: "p", UserID: ann.ID}, {Provider: "p", Subject: "x"}} {
		if err := s.LinkFederatedIdentity(c, fi); err == nil {
			t.Fatalf("LinkFederatedIdentity(%+v) succeeded", fi)
		}
	}
	got, err := s.GetFederatedIdentity(c, "google", "1")
	if err != nil || got.UserID != ann.ID {
		t.Fatalf("the first link changed: %+v, %v", got, err)
	}
}

func testIdentityCreateUser(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	u := &store.User{Email: "new@example.com", Name: "New", Active: true, EmailVerified: true, Roles: []string{"user"}}
	fi := &store.FederatedIdentity{Provider: "google", Subject: "77", Email: "new@example.com"}
	if err := s.CreateUserWithIdentity(c, u, fi); err != nil {
		t.Fatalf("CreateUserWithIdentity: %v", err)
	}
	if u.ID == "" || fi.UserID != u.ID || fi.LinkedAt.IsZero() {
		t.Fatalf("ids not filled: user %q identity %+v", u.ID, fi)
	}
	got, err := s.GetUser(c, u.ID)
	if err != nil || got.PasswordHash != "" || !got.EmailVerified || len(got.Roles) != 1 || got.Roles[0] != "user" {
		t.Fatalf("GetUser = %+v, %v", got, err)
	}
	link, err := s.GetFederatedIdentity(c, "google", "77")
	if err != nil || link.UserID != u.ID {
		t.Fatalf("GetFederatedIdentity = %+v, %v", link, err)
	}
}

func testIdentityCreateUserAtomic(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	ann := mustCreateUser(t, s, newUser("ann@example.com", "user"))
	if err := s.LinkFederatedIdentity(c, &store.FederatedIdentity{Provider: "google", Subject: "1", UserID: ann.ID}); err != nil {
		t.Fatalf("link: %v", err)
	}
	// The upstream account is linked already: no user is left behind.
	u := &store.User{Email: "new@example.com", Active: true, Roles: []string{"user"}}
	if err := s.CreateUserWithIdentity(c, u, &store.FederatedIdentity{Provider: "google", Subject: "1"}); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("CreateUserWithIdentity(linked subject) = %v, want ErrAlreadyExists", err)
	}
	if _, err := s.GetUserByEmail(c, "new@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a user was left behind: %v", err)
	}
	// The email is taken: no identity is left behind.
	u = &store.User{Email: "ANN@example.com", Active: true}
	if err := s.CreateUserWithIdentity(c, u, &store.FederatedIdentity{Provider: "google", Subject: "2"}); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("CreateUserWithIdentity(taken email) = %v, want ErrAlreadyExists", err)
	}
	if _, err := s.GetFederatedIdentity(c, "google", "2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("an identity was left behind: %v", err)
	}
	// An unknown role creates nothing.
	u = &store.User{Email: "role@example.com", Active: true, Roles: []string{"no_such_role"}}
	if err := s.CreateUserWithIdentity(c, u, &store.FederatedIdentity{Provider: "google", Subject: "3"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("CreateUserWithIdentity(unknown role) = %v, want ErrNotFound", err)
	}
	if _, err := s.GetFederatedIdentity(c, "google", "3"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("an identity was left behind: %v", err)
	}
}

func testIdentityDeletedWithUser(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	u := mustCreateUser(t, s, newUser("ann@example.com", "user"))
	if err := s.LinkFederatedIdentity(c, &store.FederatedIdentity{Provider: "google", Subject: "1", UserID: u.ID, Email: "ann@gmail.com"}); err != nil {
		t.Fatalf("link: %v", err)
	}
	if err := s.DeleteUser(c, u.ID); err != nil {
		t.Fatalf("DeleteUser: %v", err)
	}
	if _, err := s.GetFederatedIdentity(c, "google", "1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("identity outlived its user: %v", err)
	}
	var n int64
	if err := s.DB().Table("federated_identities").Count(&n).Error; err != nil || n != 0 {
		t.Fatalf("federated_identities rows = %d, %v; want 0", n, err)
	}
}

func testIdentityLinkRace(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	users := make([]store.User, relRacers)
	for i := range users {
		users[i] = mustCreateUser(t, s, newUser(fmt.Sprintf("u%d@example.com", i), "user"))
	}
	errs := race(relRacers, func(i int) error {
		return s.LinkFederatedIdentity(c, &store.FederatedIdentity{Provider: "google", Subject: "same", UserID: users[i%2].ID})
	})
	w := oneWinner(t, "link (provider, subject)", errs, store.ErrAlreadyExists)
	got, err := s.GetFederatedIdentity(c, "google", "same")
	if err != nil || got.UserID != users[w%2].ID {
		t.Fatalf("GetFederatedIdentity = %+v, %v; want the winner's user", got, err)
	}
	// One user, many upstream accounts of one provider at once: one wins.
	errs = race(relRacers, func(i int) error {
		return s.LinkFederatedIdentity(c, &store.FederatedIdentity{Provider: "gitlab", Subject: fmt.Sprint(i), UserID: users[0].ID})
	})
	oneWinner(t, "link (user, provider)", errs, store.ErrAlreadyExists)
}

func testIdentityCreateRace(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	errs := race(relRacers, func(i int) error {
		u := &store.User{Email: fmt.Sprintf("jit%d@example.com", i), Active: true, Roles: []string{"user"}}
		return s.CreateUserWithIdentity(c, u, &store.FederatedIdentity{Provider: "google", Subject: "same"})
	})
	w := oneWinner(t, "just-in-time creation", errs, store.ErrAlreadyExists)
	page, err := s.ListUsers(c, store.UserFilter{Limit: 100})
	if err != nil || len(page.Items) != 1 || page.Items[0].Email != fmt.Sprintf("jit%d@example.com", w) {
		t.Fatalf("users after the race = %+v, %v; want only the winner", page.Items, err)
	}
}

func testIdentityAcceptInvite(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	admin := mustCreateUser(t, s, newUser("root@example.com", "super_admin"))
	taken := mustCreateUser(t, s, newUser("taken@example.com", "user"))
	if err := s.LinkFederatedIdentity(c, &store.FederatedIdentity{Provider: "google", Subject: "linked", UserID: taken.ID}); err != nil {
		t.Fatal(err)
	}
	inv := &store.Invite{Email: "Inv@Example.com", Role: "admin", InvitedBy: admin.ID, ExpiresAt: time.Now().Add(time.Hour)}
	_, hash := secret()
	inv.TokenHash = hash
	if err := s.CreateInvite(c, inv, nil); err != nil {
		t.Fatalf("CreateInvite: %v", err)
	}
	// An upstream account linked already: nothing happens, the invite stays pending.
	u := &store.User{Active: true}
	if _, err := s.AcceptInviteWithIdentity(c, hash, time.Now(), u, &store.FederatedIdentity{Provider: "google", Subject: "linked"}); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("AcceptInviteWithIdentity(linked subject) = %v, want ErrAlreadyExists", err)
	}
	if got, err := s.GetInvite(c, inv.ID); err != nil || got.Status != store.InvitePending {
		t.Fatalf("invite after a failed acceptance: %+v, %v", got, err)
	}
	if _, err := s.GetUserByEmail(c, "inv@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a user was left behind: %v", err)
	}
	fi := &store.FederatedIdentity{Provider: "google", Subject: "new", Email: "inv@example.com"}
	accepted, err := s.AcceptInviteWithIdentity(c, hash, time.Now(), u, fi)
	if err != nil || accepted.Status != store.InviteAccepted || accepted.UserID != u.ID {
		t.Fatalf("AcceptInviteWithIdentity = %+v, %v", accepted, err)
	}
	if u.Email != "Inv@Example.com" || !u.EmailVerified || len(u.Roles) != 1 || u.Roles[0] != "admin" || fi.UserID != u.ID || fi.LinkedAt.IsZero() {
		t.Fatalf("user %+v identity %+v", u, fi)
	}
	if got, err := s.GetFederatedIdentity(c, "google", "new"); err != nil || got.UserID != u.ID {
		t.Fatalf("GetFederatedIdentity = %+v, %v", got, err)
	}
	if _, err := s.AcceptInviteWithIdentity(c, hash, time.Now(), &store.User{Active: true}, &store.FederatedIdentity{Provider: "google", Subject: "again"}); !errors.Is(err, store.ErrTokenUsed) {
		t.Fatalf("second acceptance = %v, want ErrTokenUsed", err)
	}
}

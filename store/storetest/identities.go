package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
)

// Issuers of the suite's providers.
const (
	issGoogle = "https://accounts.google.com"
	issEntra  = "https://login.microsoftonline.com/tenant/v2.0"
	issGitLab = "https://gitlab.com"
)

// RunFederatedIdentityTests runs the conformance suite of
// store.FederatedIdentities. open must return a store on a fresh, empty
// (unmigrated) database for every call.
//
// Besides the documented behaviour it pins: of concurrent links of one
// upstream account (to one user or to many), and of concurrent
// just-in-time creations for it, exactly one wins and the losers leave
// nothing behind; identities go with their user. An upstream account is
// (provider, issuer, subject): the same provider id and sub under another
// issuer is another account, which the store never takes for the first.
func RunFederatedIdentityTests(t *testing.T, open func(t *testing.T) *sqlstore.Store) {
	t.Helper()
	tests := []seededCase{
		{"ok/link_get_list_delete", testIdentityRoundTrip},
		{"fail/link_conflicts", testIdentityConflicts},
		{"ok/create_user_with_identity", testIdentityCreateUser},
		{"fail/create_user_with_identity_is_atomic", testIdentityCreateUserAtomic},
		{"ok/deleted_with_the_user", testIdentityDeletedWithUser},
		{"ok/accept_invite_with_identity", testIdentityAcceptInvite},
		{"ok/same_subject_other_issuer_is_another_account", testIdentityOtherIssuer},
		{"ok/resolve_issuers_of_old_links", testIdentityResolveIssuers},
		{"race/double_link_one_wins", testIdentityLinkRace},
		{"race/double_jit_one_wins", testIdentityCreateRace},
	}
	runSeeded(t, open, tests)
}

func testIdentityRoundTrip(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	u := mustCreateUser(t, s, newUser("ann@example.com", "user"))
	fi := &store.FederatedIdentity{Provider: "google", Issuer: issGoogle, Subject: "1234", UserID: u.ID, Email: "ann@gmail.com"}
	if err := s.LinkFederatedIdentity(c, fi); err != nil {
		t.Fatalf("LinkFederatedIdentity: %v", err)
	}
	if fi.LinkedAt.IsZero() || fi.LinkedAt.Location().String() != "UTC" {
		t.Fatalf("LinkedAt = %v, want a UTC time", fi.LinkedAt)
	}
	got, err := s.GetFederatedIdentity(c, "google", issGoogle, "1234")
	if err != nil {
		t.Fatalf("GetFederatedIdentity: %v", err)
	}
	if got != *fi {
		t.Fatalf("GetFederatedIdentity = %+v, want %+v", got, *fi)
	}
	for _, k := range [][3]string{{"google", issGoogle, "12345"}, {"gitlab", issGoogle, "1234"}, {"Google", issGoogle, "1234"},
		{"google", issGitLab, "1234"}, {"google", issGoogle + "/", "1234"}, {"google", store.IssuerUnresolved, "1234"},
		{"google", store.IssuerUnknown, "1234"}} {
		if _, err := s.GetFederatedIdentity(c, k[0], k[1], k[2]); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetFederatedIdentity(%v) = %v, want ErrNotFound", k, err)
		}
	}
	second := &store.FederatedIdentity{Provider: "entra", Issuer: issEntra, Subject: "oid-1", UserID: u.ID, Email: "ann@corp.example"}
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
	if _, err := s.GetFederatedIdentity(c, "google", issGoogle, "1234"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetFederatedIdentity after delete = %v", err)
	}
	// Unlinked, the upstream account may be linked again (to anyone).
	if err := s.LinkFederatedIdentity(c, &store.FederatedIdentity{Provider: "google", Issuer: issGoogle, Subject: "1234", UserID: u.ID}); err != nil {
		t.Fatalf("relink: %v", err)
	}
}

func testIdentityConflicts(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	ann := mustCreateUser(t, s, newUser("ann@example.com", "user"))
	bob := mustCreateUser(t, s, newUser("bob@example.com", "user"))
	if err := s.LinkFederatedIdentity(c, &store.FederatedIdentity{Provider: "google", Issuer: issGoogle, Subject: "1", UserID: ann.ID}); err != nil {
		t.Fatalf("link: %v", err)
	}
	for _, tc := range []struct {
		name string
		fi   store.FederatedIdentity
		want error
	}{
		{"same_subject_other_user", store.FederatedIdentity{Provider: "google", Issuer: issGoogle, Subject: "1", UserID: bob.ID}, store.ErrAlreadyExists},
		{"same_subject_same_user", store.FederatedIdentity{Provider: "google", Issuer: issGoogle, Subject: "1", UserID: ann.ID}, store.ErrAlreadyExists},
		{"second_identity_at_provider", store.FederatedIdentity{Provider: "google", Issuer: issGoogle, Subject: "2", UserID: ann.ID}, store.ErrAlreadyExists},
		{"unknown_user", store.FederatedIdentity{Provider: "google", Issuer: issGoogle, Subject: "3", UserID: "usr_nobody"}, store.ErrNotFound},
	} {
		fi := tc.fi
		if err := s.LinkFederatedIdentity(c, &fi); !errors.Is(err, tc.want) {
			t.Fatalf("%s: LinkFederatedIdentity = %v, want %v", tc.name, err, tc.want)
		}
	}
	for _, fi := range []*store.FederatedIdentity{nil, {Issuer: issGoogle, Subject: "x", UserID: ann.ID},
		{Provider: "p", Issuer: issGoogle, UserID: ann.ID}, {Provider: "p", Issuer: issGoogle, Subject: "x"},
		{Provider: "p", Subject: "x", UserID: ann.ID}, {Provider: "p", Issuer: store.IssuerUnknown, Subject: "x", UserID: ann.ID}} {
		if err := s.LinkFederatedIdentity(c, fi); err == nil {
			t.Fatalf("LinkFederatedIdentity(%+v) succeeded", fi)
		}
	}
	got, err := s.GetFederatedIdentity(c, "google", issGoogle, "1")
	if err != nil || got.UserID != ann.ID {
		t.Fatalf("the first link changed: %+v, %v", got, err)
	}
}

func testIdentityCreateUser(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	u := &store.User{Email: "new@example.com", Name: "New", Active: true, EmailVerified: true, Roles: []string{"user"}}
	fi := &store.FederatedIdentity{Provider: "google", Issuer: issGoogle, Subject: "77", Email: "new@example.com"}
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
	link, err := s.GetFederatedIdentity(c, "google", issGoogle, "77")
	if err != nil || link.UserID != u.ID {
		t.Fatalf("GetFederatedIdentity = %+v, %v", link, err)
	}
}

func testIdentityCreateUserAtomic(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	ann := mustCreateUser(t, s, newUser("ann@example.com", "user"))
	if err := s.LinkFederatedIdentity(c, &store.FederatedIdentity{Provider: "google", Issuer: issGoogle, Subject: "1", UserID: ann.ID}); err != nil {
		t.Fatalf("link: %v", err)
	}
	// The upstream account is linked already: no user is left behind.
	u := &store.User{Email: "new@example.com", Active: true, Roles: []string{"user"}}
	if err := s.CreateUserWithIdentity(c, u, &store.FederatedIdentity{Provider: "google", Issuer: issGoogle, Subject: "1"}); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("CreateUserWithIdentity(linked subject) = %v, want ErrAlreadyExists", err)
	}
	if _, err := s.GetUserByEmail(c, "new@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a user was left behind: %v", err)
	}
	// The email is taken: no identity is left behind.
	u = &store.User{Email: "ANN@example.com", Active: true}
	if err := s.CreateUserWithIdentity(c, u, &store.FederatedIdentity{Provider: "google", Issuer: issGoogle, Subject: "2"}); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("CreateUserWithIdentity(taken email) = %v, want ErrAlreadyExists", err)
	}
	if _, err := s.GetFederatedIdentity(c, "google", issGoogle, "2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("an identity was left behind: %v", err)
	}
	// An unknown role creates nothing.
	u = &store.User{Email: "role@example.com", Active: true, Roles: []string{"no_such_role"}}
	if err := s.CreateUserWithIdentity(c, u, &store.FederatedIdentity{Provider: "google", Issuer: issGoogle, Subject: "3"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("CreateUserWithIdentity(unknown role) = %v, want ErrNotFound", err)
	}
	if _, err := s.GetFederatedIdentity(c, "google", issGoogle, "3"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("an identity was left behind: %v", err)
	}
}

func testIdentityDeletedWithUser(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	u := mustCreateUser(t, s, newUser("ann@example.com", "user"))
	if err := s.LinkFederatedIdentity(c, &store.FederatedIdentity{Provider: "google", Issuer: issGoogle, Subject: "1", UserID: u.ID, Email: "ann@gmail.com"}); err != nil {
		t.Fatalf("link: %v", err)
	}
	if err := s.DeleteUser(c, u.ID); err != nil {
		t.Fatalf("DeleteUser: %v", err)
	}
	if _, err := s.GetFederatedIdentity(c, "google", issGoogle, "1"); !errors.Is(err, store.ErrNotFound) {
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
		return s.LinkFederatedIdentity(c, &store.FederatedIdentity{Provider: "google", Issuer: issGoogle, Subject: "same", UserID: users[i%2].ID})
	})
	w := oneWinner(t, "link (provider, subject)", errs, store.ErrAlreadyExists)
	got, err := s.GetFederatedIdentity(c, "google", issGoogle, "same")
	if err != nil || got.UserID != users[w%2].ID {
		t.Fatalf("GetFederatedIdentity = %+v, %v; want the winner's user", got, err)
	}
	// One user, many upstream accounts of one provider at once: one wins.
	errs = race(relRacers, func(i int) error {
		return s.LinkFederatedIdentity(c, &store.FederatedIdentity{Provider: "gitlab", Issuer: issGitLab, Subject: fmt.Sprint(i), UserID: users[0].ID})
	})
	oneWinner(t, "link (user, provider)", errs, store.ErrAlreadyExists)
}

func testIdentityCreateRace(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	errs := race(relRacers, func(i int) error {
		u := &store.User{Email: fmt.Sprintf("jit%d@example.com", i), Active: true, Roles: []string{"user"}}
		return s.CreateUserWithIdentity(c, u, &store.FederatedIdentity{Provider: "google", Issuer: issGoogle, Subject: "same"})
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
	if err := s.LinkFederatedIdentity(c, &store.FederatedIdentity{Provider: "google", Issuer: issGoogle, Subject: "linked", UserID: taken.ID}); err != nil {
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
	if _, err := s.AcceptInviteWithIdentity(c, hash, time.Now(), u, &store.FederatedIdentity{Provider: "google", Issuer: issGoogle, Subject: "linked"}); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("AcceptInviteWithIdentity(linked subject) = %v, want ErrAlreadyExists", err)
	}
	if got, err := s.GetInvite(c, inv.ID); err != nil || got.Status != store.InvitePending {
		t.Fatalf("invite after a failed acceptance: %+v, %v", got, err)
	}
	if _, err := s.GetUserByEmail(c, "inv@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a user was left behind: %v", err)
	}
	fi := &store.FederatedIdentity{Provider: "google", Issuer: issGoogle, Subject: "new", Email: "inv@example.com"}
	accepted, err := s.AcceptInviteWithIdentity(c, hash, time.Now(), u, fi)
	if err != nil || accepted.Status != store.InviteAccepted || accepted.UserID != u.ID {
		t.Fatalf("AcceptInviteWithIdentity = %+v, %v", accepted, err)
	}
	if u.Email != "Inv@Example.com" || !u.EmailVerified || len(u.Roles) != 1 || u.Roles[0] != "admin" || fi.UserID != u.ID || fi.LinkedAt.IsZero() {
		t.Fatalf("user %+v identity %+v", u, fi)
	}
	if got, err := s.GetFederatedIdentity(c, "google", issGoogle, "new"); err != nil || got.UserID != u.ID {
		t.Fatalf("GetFederatedIdentity = %+v, %v", got, err)
	}
	if _, err := s.AcceptInviteWithIdentity(c, hash, time.Now(), &store.User{Active: true}, &store.FederatedIdentity{Provider: "google", Issuer: issGoogle, Subject: "again"}); !errors.Is(err, store.ErrTokenUsed) {
		t.Fatalf("second acceptance = %v, want ErrTokenUsed", err)
	}
}

// testIdentityOtherIssuer: the provider id pointed at another issuer (or
// deleted and given to another provider) makes sub "42" another account:
// not found as the first, linkable to someone else (and created just in
// time), but not to a user who already holds an identity at that provider
// id under the old issuer (one per provider id).
func testIdentityOtherIssuer(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	const corp = "https://gitlab.corp.example"
	alice := mustCreateUser(t, s, newUser("alice@example.com", "user"))
	if err := s.LinkFederatedIdentity(c, &store.FederatedIdentity{Provider: "gitlab", Issuer: corp, Subject: "42", UserID: alice.ID}); err != nil {
		t.Fatalf("link: %v", err)
	}
	if got, err := s.GetFederatedIdentity(c, "gitlab", issGitLab, "42"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetFederatedIdentity(another issuer) = %+v, %v; want ErrNotFound", got, err)
	}
	if err := s.LinkFederatedIdentity(c, &store.FederatedIdentity{Provider: "gitlab", Issuer: issGitLab, Subject: "7", UserID: alice.ID}); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("a second identity at the provider id under another issuer = %v, want ErrAlreadyExists", err)
	}
	mallory := &store.User{Email: "mallory@example.com", Active: true, Roles: []string{"user"}}
	fi := &store.FederatedIdentity{Provider: "gitlab", Issuer: issGitLab, Subject: "42", Email: "mallory@example.com"}
	if err := s.CreateUserWithIdentity(c, mallory, fi); err != nil {
		t.Fatalf("CreateUserWithIdentity(sub 42 of another issuer): %v", err)
	}
	for iss, want := range map[string]string{corp: alice.ID, issGitLab: mallory.ID} {
		got, err := s.GetFederatedIdentity(c, "gitlab", iss, "42")
		if err != nil || got.UserID != want || got.Issuer != iss {
			t.Fatalf("GetFederatedIdentity(%s) = %+v, %v; want %s's", iss, got, err, want)
		}
	}
	list, err := s.ListFederatedIdentities(c, alice.ID)
	if err != nil || len(list) != 1 || list[0].Issuer != corp {
		t.Fatalf("ListFederatedIdentities = %+v, %v; want the link under %s", list, err, corp)
	}
}

// testIdentityResolveIssuers: links written before issuers were kept
// (an empty issuer) match no sign-in; the start step gives those of configured
// providers the configured issuer and marks the rest unknown for good, so
// that a provider id configured later (another issuer, maybe) inherits
// none of them; a second run changes nothing.
func testIdentityResolveIssuers(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	users := map[string]store.User{}
	for _, p := range []string{"google", "gitlab", "gone"} {
		users[p] = mustCreateUser(t, s, newUser(p+"@example.com", "user"))
		oldLink(t, s, p, "s-"+p, users[p].ID)
	}
	if _, err := s.GetFederatedIdentity(c, "google", store.IssuerUnresolved, "s-google"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("an unresolved link was found: %v", err)
	}
	if _, err := s.GetFederatedIdentity(c, "google", issGoogle, "s-google"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("an unresolved link matched a configured issuer: %v", err)
	}
	configured := map[string]string{"google": issGoogle, "gitlab": issGitLab, "unused": issEntra}
	got, err := s.ResolveIdentityIssuers(c, configured)
	if err != nil || got != (sqlstore.IssuerResolution{Resolved: 2, Unknown: 1}) {
		t.Fatalf("ResolveIdentityIssuers = %+v, %v; want 2 resolved, 1 unknown", got, err)
	}
	for p, iss := range map[string]string{"google": issGoogle, "gitlab": issGitLab} {
		if fi, err := s.GetFederatedIdentity(c, p, iss, "s-"+p); err != nil || fi.UserID != users[p].ID {
			t.Fatalf("GetFederatedIdentity(%s) after resolving = %+v, %v", p, fi, err)
		}
	}
	// "gone" is configured now (another provider took the id): its old
	// link stays unknown.
	configured["gone"] = issEntra
	if got, err := s.ResolveIdentityIssuers(c, configured); err != nil || got != (sqlstore.IssuerResolution{}) {
		t.Fatalf("second ResolveIdentityIssuers = %+v, %v; want nothing done", got, err)
	}
	if fi, err := s.GetFederatedIdentity(c, "gone", issEntra, "s-gone"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a reused provider id inherited an old link: %+v, %v", fi, err)
	}
	list, err := s.ListFederatedIdentities(c, users["gone"].ID)
	if err != nil || len(list) != 1 || list[0].Issuer != store.IssuerUnknown {
		t.Fatalf("ListFederatedIdentities(gone) = %+v, %v; want the link, issuer unknown", list, err)
	}
	// The unknown link still holds the provider id for its user until an
	// administrator removes it; then the person may link afresh.
	fi := &store.FederatedIdentity{Provider: "gone", Issuer: issEntra, Subject: "s-gone", UserID: users["gone"].ID}
	if err := s.LinkFederatedIdentity(c, fi); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("link beside an unknown one = %v, want ErrAlreadyExists", err)
	}
	if _, err := s.DeleteFederatedIdentity(c, users["gone"].ID, "gone"); err != nil {
		t.Fatalf("DeleteFederatedIdentity(unknown link): %v", err)
	}
	if err := s.LinkFederatedIdentity(c, fi); err != nil {
		t.Fatalf("link after removing the unknown one: %v", err)
	}
}

// oldLink writes a link as binaries before migration 19 did: no issuer
// (the column's default).
func oldLink(t *testing.T, s *sqlstore.Store, provider, subject, userID string) {
	t.Helper()
	err := s.DB().WithContext(context.Background()).Exec(`INSERT INTO federated_identities (provider, subject, user_id, email, linked_at)
		VALUES (?, ?, ?, ?, ?)`, provider, subject, userID, "", time.Now().UTC()).Error
	if err != nil {
		t.Fatalf("write a link without issuer: %v", err)
	}
}

package storetest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
)

// RunRelationalTests runs the conformance suite of the relational store.
// open must return a store on a fresh, empty (unmigrated) database for every
// call; each subtest calls it once and migrates it.
//
// Besides the behaviour documented on the sqlstore methods, the suite pins:
//   - timestamps come back in UTC, at microsecond precision, equal to what
//     the writing call returned;
//   - every user read carries sorted roles, and only GetUser* a password hash;
//   - of concurrent invite acceptances, token consumptions, first-key
//     creations and key rotations from one state, exactly one wins;
//   - of concurrent creations of one user's tokens of one purpose, exactly
//     one is left unused (each supersedes those before it);
//   - of concurrent back-channel logout claims, each due delivery goes to
//     exactly one caller;
//   - a write that changes a user's password hash or deactivates them voids
//     their unused reset links, and no reset link works for an inactive user;
//   - machine users have no email, so any number of them live beside the
//     unique addresses of people, and no lookup by email finds one.
func RunRelationalTests(t *testing.T, open func(t *testing.T) *sqlstore.Store) {
	t.Helper()
	tests := []struct {
		name string
		run  func(t *testing.T, s *sqlstore.Store)
	}{
		{"ok/ping_and_dialect", testRelPing},
		{"ok/users_create_and_get", testUserCreateGet},
		{"fail/users_duplicate_email_or_username", testUserDuplicates},
		{"ok/users_email_key_folds_only_ascii", testUserEmailKey},
		{"fail/users_unknown_role_creates_nothing", testUserUnknownRole},
		{"fail/users_invalid", testUserInvalid},
		{"fail/users_missing", testUserMissing},
		{"ok/users_machine_kind", testMachineUsers},
		{"fail/users_machine_invalid", testMachineUsersInvalid},
		{"ok/users_list_pages", testUserListPages},
		{"ok/users_list_filters", testUserListFilters},
		{"ok/users_list_limits", testUserListLimits},
		{"fail/users_list_bad_cursor", testUserListBadCursor},
		{"ok/users_update", testUserUpdate},
		{"ok/users_password_hash_foreign", testUserPasswordHashForeign},
		{"fail/users_update", testUserUpdateFail},
		{"ok/users_grant_revoke_count_roles", testUserRoles},
		{"ok/users_record_login", testUserRecordLogin},
		{"ok/users_delete_removes_personal_data", testUserDelete},
		{"ok/roles_sync_and_list", testRolesSync},
		{"fail/roles_sync_invalid", testRolesSyncInvalid},
		{"ok/clients_roundtrip", testClients},
		{"fail/clients", testClientsFail},
		{"ok/signing_keys_lifecycle", testKeysLifecycle},
		{"fail/signing_keys_conflicts_roll_back", testKeysConflicts},
		{"ok/invites_create_supersede_list", testInvites},
		{"ok/invites_email_key_folds_only_ascii", testInviteEmailKey},
		{"fail/invites_replace_refused_writes_nothing", testInviteReplaceRefused},
		{"ok/invites_superseded_once_sent", testInviteSupersedeOnceSent},
		{"ok/invites_accept", testInviteAccept},
		{"fail/invites_accept", testInviteAcceptFail},
		{"ok/invites_revoke", testInviteRevoke},
		{"ok/user_tokens_consume", testUserTokenConsume},
		{"fail/user_tokens", testUserTokenFail},
		{"ok/user_tokens_superseded_once_sent", testUserTokenSupersedeOnceSent},
		{"fail/user_tokens_reset_voided_by_password_or_deactivation", testResetLinkVoided},
		{"ok/password_reset_redeems_unlinks_revokes", testRedeemPasswordReset},
		{"fail/password_reset_all_or_nothing", testRedeemPasswordResetFail},
		{"ok/users_update_revoking_keys", testUpdateUserRevokingKeys},
		{"fail/users_update_revoking_keys_all_or_nothing", testUpdateUserRevokingKeysFail},
		{"ok/audit_append_list_filter_page", testAudit},
		{"ok/audit_scrub_pii", testAuditScrub},
		{"ok/audit_request_text_always_stored", testAuditRequestText},
		{"ok/audit_details_capped", testAuditDetailsCapped},
		{"ok/consents_put_get_replace_list", testConsents},
		{"fail/consents", testConsentsFail},
		{"ok/consents_end_with_user_or_client", testConsentsCascade},
		{"ok/backchannel_claim_oldest_due_then_complete", testBCLClaimComplete},
		{"ok/backchannel_claim_fair_across_clients", testBCLClaimFair},
		{"ok/backchannel_lease", testBCLLease},
		{"ok/backchannel_retry", testBCLRetry},
		{"fail/backchannel_enqueue_all_or_none", testBCLEnqueueAllOrNone},
		{"race/users_update_serialises", testRaceUserUpdate},
		{"race/invites_accept_once", testRaceInviteAccept},
		{"race/invites_replace_never_supersedes_unchecked", testRaceInviteReplace},
		{"race/user_tokens_consume_once", testRaceUserToken},
		{"race/user_tokens_sent_leave_one_live", testRaceUserTokensSent},
		{"race/signing_keys_first_key_one_winner", testRaceFirstKey},
		{"race/signing_keys_rotation_one_winner", testRaceRotation},
		{"race/backchannel_claim_once", testBCLClaimRace},
	}
	t.Run("ok/migrate_then_nothing_pending", func(t *testing.T) { testMigrate(t, open(t)) })
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			if _, err := s.Migrate(rctx(t)); err != nil {
				t.Fatalf("Migrate: %v", err)
			}
			tc.run(t, s)
		})
	}
}

// ---- helpers ----

// seededCase is one case of a suite run by runSeeded.
type seededCase struct {
	name string
	run  func(t *testing.T, s *sqlstore.Store)
}

// runSeeded runs each case in parallel on its own store from open,
// migrated and holding the default policy's roles.
func runSeeded(t *testing.T, open func(t *testing.T) *sqlstore.Store, cases []seededCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			if _, err := s.Migrate(rctx(t)); err != nil {
				t.Fatalf("Migrate: %v", err)
			}
			syncDefaultRoles(t, s)
			tc.run(t, s)
		})
	}
}

func rctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func rid(prefix string) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return prefix + hex.EncodeToString(b)
}

// secret returns a random one-time token and its SHA-256.
func secret() (string, []byte) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	tok := hex.EncodeToString(b)
	h := sha256.Sum256([]byte(tok))
	return tok, h[:]
}

var defaultRoles = []store.Role{
	{Name: "super_admin", Level: 100, Description: "everything"},
	{Name: "admin", Level: 50, Description: "administration"},
	{Name: "user", Level: 10, Description: "a user"},
}

func syncDefaultRoles(t *testing.T, s *sqlstore.Store) {
	t.Helper()
	if err := s.SyncRoles(rctx(t), defaultRoles); err != nil {
		t.Fatalf("SyncRoles: %v", err)
	}
}

func newUser(email string, roles ...string) *store.User {
	return &store.User{
		Email:        email,
		Name:         "Name of " + email,
		PasswordHash: "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
		Active:       true,
		Roles:        roles,
	}
}

// userByLogin is GetUserForLogin without the factors' counts: the user a
// login names.
func userByLogin(c context.Context, s *sqlstore.Store, login string) (store.User, error) {
	u, _, err := s.GetUserForLogin(c, login)
	return u, err
}

func mustCreateUser(t *testing.T, s *sqlstore.Store, u *store.User) store.User {
	t.Helper()
	if err := s.CreateUser(rctx(t), u); err != nil {
		t.Fatalf("CreateUser(%s): %v", u.Email, err)
	}
	return *u
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: error %v, want %v", what, err, want)
	}
}

func wantUTC(t *testing.T, what string, ts time.Time) {
	t.Helper()
	if ts.IsZero() || ts.Location() != time.UTC {
		t.Fatalf("%s: time %v is zero or not UTC", what, ts)
	}
	if ts.Nanosecond()%1000 != 0 {
		t.Fatalf("%s: time %v finer than microseconds", what, ts)
	}
}

// sameUser compares two users field by field (times with Equal).
func sameUser(t *testing.T, what string, got, want store.User) {
	t.Helper()
	eqPtr := func(a, b *time.Time) bool {
		if a == nil || b == nil {
			return a == nil && b == nil
		}
		return a.Equal(*b)
	}
	kind := func(u store.User) string {
		if u.Kind == "" {
			return store.UserHuman
		}
		return u.Kind
	}
	if got.ID != want.ID || kind(got) != kind(want) || got.Email != want.Email || got.Username != want.Username || got.Name != want.Name ||
		got.PasswordHash != want.PasswordHash || got.Active != want.Active || got.EmailVerified != want.EmailVerified ||
		got.MustChangePassword != want.MustChangePassword || got.PasswordUnproven != want.PasswordUnproven ||
		got.PasswordHashForeign != want.PasswordHashForeign || !reflect.DeepEqual(got.Roles, want.Roles) ||
		!got.CreatedAt.Equal(want.CreatedAt) || !got.UpdatedAt.Equal(want.UpdatedAt) || !eqPtr(got.LastLoginAt, want.LastLoginAt) {
		t.Fatalf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

// testUserPasswordHashForeign: CreateUser writes the mark of a hash
// Portcullis may not have made as given; a write that keeps the hash keeps
// it, and every write that changes the hash (UpdateUser, a password reset)
// clears it, since the store is given only hashes Portcullis made.
// AnyForeignPasswordHash says whether any user is still marked.
func testUserPasswordHashForeign(t *testing.T, s *sqlstore.Store) {
	syncDefaultRoles(t, s)
	c := rctx(t)
	anyMarked := func(want bool) {
		t.Helper()
		if got, err := s.AnyForeignPasswordHash(c); err != nil || got != want {
			t.Fatalf("AnyForeignPasswordHash = %v, %v; want %v", got, err, want)
		}
	}
	anyMarked(false)
	foreignOf := func(id string) bool {
		t.Helper()
		u, err := s.GetUser(c, id)
		if err != nil {
			t.Fatalf("GetUser: %v", err)
		}
		return u.PasswordHashForeign
	}
	own := mustCreateUser(t, s, newUser("own@example.com", "user"))
	if foreignOf(own.ID) {
		t.Fatalf("a user created without the mark reads marked")
	}
	anyMarked(false)
	imp := newUser("imported@example.com", "user")
	imp.PasswordHashForeign = true
	imported := mustCreateUser(t, s, imp)
	if !foreignOf(imported.ID) {
		t.Fatalf("a user created with the mark reads unmarked")
	}
	anyMarked(true)
	if _, err := s.UpdateUser(c, imported.ID, func(u *store.User) error { u.Name = "Renamed"; return nil }); err != nil {
		t.Fatal(err)
	}
	if !foreignOf(imported.ID) {
		t.Fatalf("a write that kept the hash cleared the mark")
	}
	if _, err := s.UpdateUser(c, imported.ID, func(u *store.User) error {
		u.PasswordHash = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$bmV3"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if foreignOf(imported.ID) {
		t.Fatalf("a write of a new hash kept the mark")
	}
	anyMarked(false)
	// A reset link's redemption writes the hash through the same routine.
	again := newUser("reset@example.com", "user")
	again.PasswordHashForeign = true
	reset := mustCreateUser(t, s, again)
	link := mustUserToken(t, s, reset.ID, store.PurposePasswordReset, time.Now().Add(time.Hour))
	if _, err := s.RedeemPasswordReset(c, link, time.Now(), setHash, homeVouches); err != nil {
		t.Fatalf("RedeemPasswordReset: %v", err)
	}
	if foreignOf(reset.ID) {
		t.Fatalf("a password reset kept the mark")
	}
	anyMarked(false)
}

func withoutHash(u store.User) store.User {
	u.PasswordHash = ""
	return u
}

// ---- migrations ----

func testMigrate(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	all := sqlstore.Migrations()
	if len(all) == 0 {
		t.Fatalf("no migrations")
	}
	st, err := s.MigrationStatus(c)
	if err != nil {
		t.Fatalf("MigrationStatus on a fresh database: %v", err)
	}
	if len(st) != len(all) {
		t.Fatalf("MigrationStatus lists %d migrations, want %d", len(st), len(all))
	}
	for _, m := range st {
		if m.AppliedAt != nil {
			t.Fatalf("migration %d applied on a fresh database", m.Version)
		}
	}
	applied, err := s.Migrate(c)
	if err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	var want []int
	for _, m := range all {
		want = append(want, m.Version)
	}
	if !reflect.DeepEqual(applied, want) {
		t.Fatalf("Migrate applied %v, want %v", applied, want)
	}
	again, err := s.Migrate(c)
	if err != nil || len(again) != 0 {
		t.Fatalf("second Migrate: applied %v, err %v; want nothing", again, err)
	}
	st, err = s.MigrationStatus(c)
	if err != nil {
		t.Fatalf("MigrationStatus: %v", err)
	}
	for i, m := range st {
		if m.AppliedAt == nil || m.Version != all[i].Version || m.Name != all[i].Name {
			t.Fatalf("status %d: %+v, want %d %s applied", i, m, all[i].Version, all[i].Name)
		}
		wantUTC(t, "applied_at", *m.AppliedAt)
	}
}

func testRelPing(t *testing.T, s *sqlstore.Store) {
	if err := s.Ping(rctx(t)); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if d := s.Dialect(); d != sqlstore.DialectPostgres && d != sqlstore.DialectSQLite {
		t.Fatalf("Dialect() = %q", d)
	}
	if s.DB() == nil {
		t.Fatalf("DB() is nil")
	}
}

// ---- users ----

func testUserCreateGet(t *testing.T, s *sqlstore.Store) {
	syncDefaultRoles(t, s)
	c := rctx(t)
	before := time.Now().Add(-time.Second)
	u := newUser("Alice.Smith@Example.COM", "user", "admin", "user")
	u.Username = "alice"
	u.MustChangePassword = true
	u.PasswordUnproven = true
	created := mustCreateUser(t, s, u)
	if !strings.HasPrefix(created.ID, sqlstore.UserIDPrefix) || len(created.ID) != len(sqlstore.UserIDPrefix)+26 {
		t.Fatalf("user id %q: want %s + 26 characters", created.ID, sqlstore.UserIDPrefix)
	}
	if !reflect.DeepEqual(created.Roles, []string{"admin", "user"}) {
		t.Fatalf("created roles %v, want sorted and unique [admin user]", created.Roles)
	}
	wantUTC(t, "created_at", created.CreatedAt)
	if created.CreatedAt.Before(before) || !created.UpdatedAt.Equal(created.CreatedAt) {
		t.Fatalf("created %v updated %v", created.CreatedAt, created.UpdatedAt)
	}
	for _, tc := range []struct {
		name string
		get  func() (store.User, error)
	}{
		{"ok/by_id", func() (store.User, error) { return s.GetUser(c, created.ID) }},
		{"ok/by_email_other_case", func() (store.User, error) { return s.GetUserByEmail(c, "alice.smith@example.com") }},
		{"ok/by_login_email", func() (store.User, error) { return userByLogin(c, s, "ALICE.SMITH@example.com") }},
		{"ok/by_login_username", func() (store.User, error) { return userByLogin(c, s, "alice") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.get()
			if err != nil {
				t.Fatalf("get: %v", err)
			}
			sameUser(t, tc.name, got, created)
		})
	}
	// Two users without a username coexist; ids differ.
	a := mustCreateUser(t, s, newUser("a@example.com"))
	b := mustCreateUser(t, s, newUser("b@example.com"))
	if a.ID == b.ID {
		t.Fatalf("two users share id %s", a.ID)
	}
	got, err := s.GetUser(c, a.ID)
	if err != nil {
		t.Fatalf("GetUser: %v", err)
	}
	if got.Roles == nil || len(got.Roles) != 0 || got.Username != "" {
		t.Fatalf("user without roles or username: %+v", got)
	}
}

func testUserDuplicates(t *testing.T, s *sqlstore.Store) {
	syncDefaultRoles(t, s)
	u := newUser("bob@example.com", "user")
	u.Username = "bob"
	mustCreateUser(t, s, u)
	for _, tc := range []struct {
		name string
		u    *store.User
	}{
		{"fail/same_email", newUser("bob@example.com")},
		{"fail/email_other_case", newUser("BOB@Example.com")},
		{"fail/same_username", func() *store.User { v := newUser("other@example.com"); v.Username = "bob"; return v }()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, "CreateUser", s.CreateUser(rctx(t), tc.u), store.ErrAlreadyExists)
			if tc.u.ID != "" {
				t.Fatalf("failed CreateUser filled id %q", tc.u.ID)
			}
		})
	}
	n, err := s.CountUsersWithRole(rctx(t), "user")
	if err != nil || n != 1 {
		t.Fatalf("CountUsersWithRole(user) = %d, %v; want 1", n, err)
	}
}

// testUserEmailKey: an address is one account whatever the case of its
// ASCII letters, and any other character is compared as it is (found by a
// review: strings.ToLower made "b\u0130ll@example.com", another mailbox, the
// account of bill@example.com). Each address is found by every lookup by
// email, and only its own account.
func testUserEmailKey(t *testing.T, s *sqlstore.Store) {
	syncDefaultRoles(t, s)
	c := rctx(t)
	ids := map[string]string{}
	for _, email := range []string{"bill@example.com", "b\u0130ll@example.com", "kate@example.com", "\u212Aate@example.com", "\u00C9lise@example.com"} {
		ids[email] = mustCreateUser(t, s, newUser(email, "user")).ID
	}
	for _, tc := range []struct{ login, owner string }{
		{"bill@example.com", "bill@example.com"},
		{"BILL@EXAMPLE.COM", "bill@example.com"},
		{"b\u0130ll@example.com", "b\u0130ll@example.com"},
		{"B\u0130LL@Example.Com", "b\u0130ll@example.com"},
		{"Kate@example.com", "kate@example.com"},
		{"\u212Aate@example.com", "\u212Aate@example.com"},
		{"\u00C9lise@EXAMPLE.com", "\u00C9lise@example.com"},
		{"\u00E9lise@example.com", ""},
		{"bi\u0307ll@example.com", ""},
	} {
		t.Run(tc.login, func(t *testing.T) {
			want := ids[tc.owner]
			got, err := s.GetUserByEmail(c, tc.login)
			if want == "" {
				wantErr(t, "GetUserByEmail", err, store.ErrNotFound)
			} else if err != nil || got.ID != want {
				t.Errorf("GetUserByEmail(%q) = %s, %v; want %s (%q)", tc.login, got.ID, err, want, tc.owner)
			}
			got, err = userByLogin(c, s, tc.login)
			if want == "" {
				wantErr(t, "GetUserForLogin", err, store.ErrNotFound)
			} else if err != nil || got.ID != want {
				t.Errorf("GetUserForLogin(%q) = %s, %v; want %s (%q)", tc.login, got.ID, err, want, tc.owner)
			}
			page, err := s.ListUsers(c, store.UserFilter{Email: tc.login})
			var listed []string
			for _, u := range page.Items {
				listed = append(listed, u.ID)
			}
			if wantList := []string{want}; err != nil || (want == "" && len(listed) != 0) || (want != "" && !reflect.DeepEqual(listed, wantList)) {
				t.Errorf("ListUsers(email %q) = %v, %v; want [%s]", tc.login, listed, err, want)
			}
		})
	}
	wantErr(t, "CreateUser(BILL@example.com)", s.CreateUser(c, newUser("BILL@example.com")), store.ErrAlreadyExists)
	wantErr(t, "CreateUser(B\u0130LL@example.com)", s.CreateUser(c, newUser("B\u0130LL@example.com")), store.ErrAlreadyExists)
}

func testUserUnknownRole(t *testing.T, s *sqlstore.Store) {
	syncDefaultRoles(t, s)
	u := newUser("carol@example.com", "user", "no_such_role")
	wantErr(t, "CreateUser with unknown role", s.CreateUser(rctx(t), u), store.ErrNotFound)
	_, err := s.GetUserByEmail(rctx(t), "carol@example.com")
	wantErr(t, "user after failed create", err, store.ErrNotFound)
	n, err := s.CountUsersWithRole(rctx(t), "user")
	if err != nil || n != 0 {
		t.Fatalf("CountUsersWithRole(user) = %d, %v; want 0 (all or nothing)", n, err)
	}
}

func testUserInvalid(t *testing.T, s *sqlstore.Store) {
	for _, tc := range []struct {
		name string
		u    *store.User
	}{
		{"fail/nil", nil},
		{"fail/no_email", &store.User{Name: "x"}},
		{"fail/username_with_at", &store.User{Email: "d@example.com", Username: "e@example.com"}},
		{"fail/name_not_utf8", &store.User{Email: "f@example.com", Name: "F \xff"}},
		{"fail/name_with_nul", &store.User{Email: "g@example.com", Name: "G\x00"}},
		{"fail/email_not_utf8", &store.User{Email: "h\xff@example.com"}},
		{"fail/machine_name_not_utf8", &store.User{Kind: store.UserMachine, Name: "bot \xff"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, "CreateUser", s.CreateUser(rctx(t), tc.u), sqlstore.ErrInvalidUser)
		})
	}
}

func testUserMissing(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	mustCreateUser(t, s, newUser("present@example.com"))
	for _, tc := range []struct {
		name string
		get  func() (store.User, error)
	}{
		{"fail/by_id", func() (store.User, error) { return s.GetUser(c, "usr_aaaaaaaaaaaaaaaaaaaaaaaaaa") }},
		{"fail/by_email", func() (store.User, error) { return s.GetUserByEmail(c, "absent@example.com") }},
		{"fail/by_login_email", func() (store.User, error) { return userByLogin(c, s, "absent@example.com") }},
		{"fail/by_login_username", func() (store.User, error) { return userByLogin(c, s, "absent") }},
		{"fail/by_login_empty", func() (store.User, error) { return userByLogin(c, s, "") }},
		{"fail/by_login_name_is_not_username", func() (store.User, error) { return userByLogin(c, s, "present") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.get()
			wantErr(t, "get", err, store.ErrNotFound)
		})
	}
}

func listAllUsers(t *testing.T, s *sqlstore.Store, f store.UserFilter) ([]store.User, int) {
	t.Helper()
	var all []store.User
	pages := 0
	for {
		p, err := s.ListUsers(rctx(t), f)
		if err != nil {
			t.Fatalf("ListUsers(%+v): %v", f, err)
		}
		pages++
		all = append(all, p.Items...)
		if p.NextCursor == "" {
			return all, pages
		}
		if pages > 1000 {
			t.Fatalf("ListUsers never ends")
		}
		f.Cursor = p.NextCursor
	}
}

func testUserListPages(t *testing.T, s *sqlstore.Store) {
	syncDefaultRoles(t, s)
	var want []string
	for i := 0; i < 7; i++ {
		u := mustCreateUser(t, s, newUser(fmt.Sprintf("user%d@example.com", i), "user"))
		want = append(want, u.ID)
	}
	got, pages := listAllUsers(t, s, store.UserFilter{Limit: 3})
	if pages != 3 {
		t.Fatalf("7 users at 3 per page took %d pages, want 3", pages)
	}
	var ids []string
	for i, u := range got {
		ids = append(ids, u.ID)
		if u.PasswordHash != "" {
			t.Fatalf("ListUsers returned a password hash")
		}
		if !reflect.DeepEqual(u.Roles, []string{"user"}) {
			t.Fatalf("listed user roles %v", u.Roles)
		}
		if i > 0 && (u.CreatedAt.Before(got[i-1].CreatedAt) ||
			(u.CreatedAt.Equal(got[i-1].CreatedAt) && u.ID < got[i-1].ID)) {
			t.Fatalf("users not ordered by (created_at, id) at %d", i)
		}
	}
	sort.Strings(ids)
	sort.Strings(want)
	if !reflect.DeepEqual(ids, want) {
		t.Fatalf("pages listed %v, want each of %v once", ids, want)
	}
	// A page ending exactly at the last user has no next cursor after it.
	p, err := s.ListUsers(rctx(t), store.UserFilter{Limit: 7})
	if err != nil || len(p.Items) != 7 || p.NextCursor != "" {
		t.Fatalf("ListUsers limit 7: %d items, cursor %q, err %v", len(p.Items), p.NextCursor, err)
	}
}

func testUserListFilters(t *testing.T, s *sqlstore.Store) {
	mk := func(email, name string) store.User {
		u := newUser(email)
		u.Name = name
		return mustCreateUser(t, s, u)
	}
	ann := mk("Ann@Example.com", "Ann Lee")
	ben := mk("ben@example.org", "Benjamin ANNERS")
	pct := mk("pct@example.net", "100% Sure_Thing")
	mk("zed@example.net", "Zed")
	for _, tc := range []struct {
		name string
		f    store.UserFilter
		want []string
	}{
		{"ok/email_exact_any_case", store.UserFilter{Email: "ANN@example.COM"}, []string{ann.ID}},
		{"ok/email_is_not_substring", store.UserFilter{Email: "ann"}, nil},
		{"ok/query_in_name_any_case", store.UserFilter{Query: "ANN"}, []string{ann.ID, ben.ID}},
		{"ok/query_in_email", store.UserFilter{Query: "example.org"}, []string{ben.ID}},
		{"ok/query_percent_is_literal", store.UserFilter{Query: "0%"}, []string{pct.ID}},
		{"ok/query_underscore_is_literal", store.UserFilter{Query: "e_t"}, []string{pct.ID}},
		{"ok/query_no_match", store.UserFilter{Query: "nobody"}, nil},
		{"ok/email_with_nul_finds_nothing", store.UserFilter{Email: "ann\x00@example.com"}, nil},
		{"ok/query_not_utf8_finds_nothing", store.UserFilter{Query: "Ann\xff"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _ := listAllUsers(t, s, tc.f)
			var ids []string
			for _, u := range got {
				ids = append(ids, u.ID)
			}
			sort.Strings(ids)
			want := append([]string(nil), tc.want...)
			sort.Strings(want)
			if !reflect.DeepEqual(ids, want) {
				t.Fatalf("ListUsers(%+v) = %v, want %v", tc.f, ids, want)
			}
		})
	}
}

func testUserListLimits(t *testing.T, s *sqlstore.Store) {
	for i := 0; i < sqlstore.MaxPageLimit+1; i++ {
		mustCreateUser(t, s, newUser(fmt.Sprintf("bulk%03d@example.com", i)))
	}
	for _, tc := range []struct {
		name  string
		limit int
		want  int
	}{
		{"ok/zero_means_default", 0, sqlstore.DefaultPageLimit},
		{"ok/negative_means_default", -5, sqlstore.DefaultPageLimit},
		{"ok/capped", 10 * sqlstore.MaxPageLimit, sqlstore.MaxPageLimit},
		{"ok/exact", 7, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := s.ListUsers(rctx(t), store.UserFilter{Limit: tc.limit})
			if err != nil {
				t.Fatalf("ListUsers: %v", err)
			}
			if len(p.Items) != tc.want || p.NextCursor == "" {
				t.Fatalf("limit %d: %d items (cursor %q), want %d and a next cursor", tc.limit, len(p.Items), p.NextCursor, tc.want)
			}
		})
	}
}

func testUserListBadCursor(t *testing.T, s *sqlstore.Store) {
	nul := base64.RawURLEncoding.EncodeToString([]byte(`{"t":"2026-01-01T00:00:00Z","i":"\u0000"}`)) // PostgreSQL refuses NUL in text
	for _, cur := range []string{"not base64!", "e30", "eyJ0IjoiMjAyNCJ9", nul} {
		_, err := s.ListUsers(rctx(t), store.UserFilter{Cursor: cur})
		wantErr(t, "ListUsers bad cursor "+cur, err, sqlstore.ErrInvalidCursor)
	}
}

func testUserUpdate(t *testing.T, s *sqlstore.Store) {
	syncDefaultRoles(t, s)
	c := rctx(t)
	orig := mustCreateUser(t, s, newUser("dave@example.com", "user"))
	login := time.Date(2030, 1, 2, 3, 4, 5, 678912345, time.FixedZone("X", 3600))
	got, err := s.UpdateUser(c, orig.ID, func(u *store.User) error {
		if u.PasswordHash != orig.PasswordHash {
			return fmt.Errorf("fn sees hash %q, want the stored one", u.PasswordHash)
		}
		sameUser(t, "user given to fn", *u, orig)
		u.Email = "David@Example.com"
		u.Name = "David"
		u.Username = "dave"
		u.PasswordHash = "$new$hash"
		u.Active = false
		u.EmailVerified = true
		u.MustChangePassword = true
		u.PasswordUnproven = true
		u.LastLoginAt = &login
		u.ID = "usr_hijack"                 // ignored
		u.Roles = []string{"super_admin"}   // ignored
		u.CreatedAt = time.Unix(0, 0).UTC() // ignored
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateUser: %v", err)
	}
	if got.PasswordHash != "" {
		t.Fatalf("UpdateUser returned the password hash")
	}
	if got.ID != orig.ID || !reflect.DeepEqual(got.Roles, []string{"user"}) || !got.CreatedAt.Equal(orig.CreatedAt) {
		t.Fatalf("UpdateUser changed id, roles or creation: %+v", got)
	}
	if got.UpdatedAt.Before(orig.UpdatedAt) {
		t.Fatalf("UpdatedAt went back: %v < %v", got.UpdatedAt, orig.UpdatedAt)
	}
	wantUTC(t, "last_login_at", *got.LastLoginAt)
	if !got.LastLoginAt.Equal(login.Truncate(time.Microsecond)) {
		t.Fatalf("LastLoginAt %v, want %v", got.LastLoginAt, login)
	}
	stored, err := userByLogin(c, s, "DAVID@example.com")
	if err != nil {
		t.Fatalf("GetUserForLogin new email: %v", err)
	}
	if stored.PasswordHash != "$new$hash" || !stored.PasswordUnproven {
		t.Fatalf("stored hash %q, password_unproven %v", stored.PasswordHash, stored.PasswordUnproven)
	}
	sameUser(t, "stored after update", withoutHash(stored), got)
	if _, err := s.GetUserByEmail(c, "dave@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("old email still finds the user: %v", err)
	}
	if byName, err := userByLogin(c, s, "dave"); err != nil || byName.ID != orig.ID {
		t.Fatalf("GetUserForLogin(new username) = %v, %v", byName.ID, err)
	}
	// Clearing the username frees it.
	if _, err := s.UpdateUser(c, orig.ID, func(u *store.User) error { u.Username = ""; return nil }); err != nil {
		t.Fatalf("clear username: %v", err)
	}
	if _, err := userByLogin(c, s, "dave"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("cleared username still logs in: %v", err)
	}
}

func testUserUpdateFail(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	a := mustCreateUser(t, s, newUser("erin@example.com"))
	b := newUser("frank@example.com")
	b.Username = "frank"
	mustCreateUser(t, s, b)
	boom := errors.New("rule says no")
	for _, tc := range []struct {
		name string
		id   string
		fn   func(u *store.User) error
		want error
	}{
		{"fail/fn_error_returned_as_is", a.ID, func(u *store.User) error { u.Name = "changed"; return boom }, boom},
		{"fail/email_taken", a.ID, func(u *store.User) error { u.Email = "FRANK@example.com"; return nil }, store.ErrAlreadyExists},
		{"fail/username_taken", a.ID, func(u *store.User) error { u.Username = "frank"; return nil }, store.ErrAlreadyExists},
		{"fail/username_with_at", a.ID, func(u *store.User) error { u.Username = "x@y"; return nil }, sqlstore.ErrInvalidUser},
		{"fail/unknown_user", "usr_missing", func(u *store.User) error { return nil }, store.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.UpdateUser(c, tc.id, tc.fn)
			wantErr(t, "UpdateUser", err, tc.want)
		})
	}
	got, err := s.GetUser(c, a.ID)
	if err != nil {
		t.Fatalf("GetUser: %v", err)
	}
	sameUser(t, "user after failed updates", got, a)
}

func testUserRoles(t *testing.T, s *sqlstore.Store) {
	syncDefaultRoles(t, s)
	c := rctx(t)
	u := mustCreateUser(t, s, newUser("gina@example.com", "user"))
	other := mustCreateUser(t, s, newUser("hank@example.com", "user"))
	steps := []struct {
		name        string
		op          func() (bool, error)
		wantChanged bool
		wantErr     error
	}{
		{"ok/grant_new", func() (bool, error) { return s.GrantRole(c, u.ID, "admin") }, true, nil},
		{"ok/grant_held_is_idempotent", func() (bool, error) { return s.GrantRole(c, u.ID, "admin") }, false, nil},
		{"ok/grant_second", func() (bool, error) { return s.GrantRole(c, u.ID, "super_admin") }, true, nil},
		{"ok/revoke_held", func() (bool, error) { return s.RevokeRole(c, u.ID, "user") }, true, nil},
		{"ok/revoke_not_held_is_idempotent", func() (bool, error) { return s.RevokeRole(c, u.ID, "user") }, false, nil},
		{"ok/revoke_unknown_role_is_not_held", func() (bool, error) { return s.RevokeRole(c, u.ID, "ghost") }, false, nil},
		{"fail/grant_unknown_role", func() (bool, error) { return s.GrantRole(c, u.ID, "ghost") }, false, store.ErrNotFound},
		{"fail/grant_unknown_user", func() (bool, error) { return s.GrantRole(c, "usr_missing", "user") }, false, store.ErrNotFound},
		{"fail/revoke_unknown_user", func() (bool, error) { return s.RevokeRole(c, "usr_missing", "user") }, false, store.ErrNotFound},
	}
	for _, st := range steps {
		changed, err := st.op()
		if st.wantErr != nil {
			wantErr(t, st.name, err, st.wantErr)
			continue
		}
		if err != nil || changed != st.wantChanged {
			t.Fatalf("%s: changed %v, err %v; want %v", st.name, changed, err, st.wantChanged)
		}
	}
	got, err := s.GetUser(c, u.ID)
	if err != nil {
		t.Fatalf("GetUser: %v", err)
	}
	if !reflect.DeepEqual(got.Roles, []string{"admin", "super_admin"}) {
		t.Fatalf("roles %v, want [admin super_admin]", got.Roles)
	}
	if got.UpdatedAt.Before(u.UpdatedAt) {
		t.Fatalf("role change did not keep UpdatedAt moving forward")
	}
	for role, want := range map[string]int64{"user": 1, "admin": 1, "super_admin": 1, "ghost": 0} {
		n, err := s.CountUsersWithRole(c, role)
		if err != nil || n != want {
			t.Fatalf("CountUsersWithRole(%s) = %d, %v; want %d", role, n, err, want)
		}
	}
	if _, err := s.GrantRole(c, other.ID, "admin"); err != nil {
		t.Fatalf("GrantRole: %v", err)
	}
	if n, _ := s.CountUsersWithRole(c, "admin"); n != 2 {
		t.Fatalf("CountUsersWithRole(admin) = %d, want 2", n)
	}
}

// testUserRecordLogin: recording a login sets the user's last-login time
// (UpdatedAt untouched) and stores its audit event, both at the login's
// time; for a user that no longer exists the event is still stored and the
// answer is ErrNotFound; an event without an action writes nothing.
func testUserRecordLogin(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	u := mustCreateUser(t, s, newUser("ivy@example.com"))
	at := time.Date(2031, 5, 6, 7, 8, 9, 123456789, time.FixedZone("Y", -7200))
	login := func(userID string, at time.Time) *store.AuditEvent {
		return &store.AuditEvent{Action: "login.succeeded", Outcome: store.OutcomeSuccess, ActorID: userID, TargetID: userID,
			ClientID: "web", IP: "192.0.2.9", UserAgent: "ivy-browser", Time: at, Details: map[string]string{"sid": "s-" + userID}}
	}
	if err := s.RecordLogin(c, &store.AuditEvent{TargetID: u.ID, Time: at}); err == nil {
		t.Fatal("RecordLogin without an action: no error")
	}
	if got, err := s.GetUser(c, u.ID); err != nil || got.LastLoginAt != nil {
		t.Fatalf("a refused RecordLogin wrote the last login: %v, %v", got.LastLoginAt, err)
	}
	e := login(u.ID, at)
	if err := s.RecordLogin(c, e); err != nil {
		t.Fatalf("RecordLogin: %v", err)
	}
	got, err := s.GetUser(c, u.ID)
	if err != nil {
		t.Fatalf("GetUser: %v", err)
	}
	if got.LastLoginAt == nil || !got.LastLoginAt.Equal(at.Truncate(time.Microsecond)) {
		t.Fatalf("LastLoginAt %v, want %v", got.LastLoginAt, at)
	}
	wantUTC(t, "last_login_at", *got.LastLoginAt)
	if !got.UpdatedAt.Equal(u.UpdatedAt) {
		t.Fatalf("RecordLogin changed UpdatedAt")
	}
	wantEvent := func(target string, want *store.AuditEvent) {
		t.Helper()
		page, err := s.ListAudit(c, store.AuditFilter{TargetID: target})
		if err != nil {
			t.Fatalf("ListAudit: %v", err)
		}
		if len(page.Items) != 1 {
			t.Fatalf("%d events of %s, want the login's", len(page.Items), target)
		}
		ev := page.Items[0]
		if ev.ID == "" || ev.ID != want.ID || ev.Action != "login.succeeded" || ev.ActorID != target || ev.ClientID != "web" ||
			ev.IP != "192.0.2.9" || ev.UserAgent != "ivy-browser" || ev.Details["sid"] != "s-"+target ||
			!ev.Time.Equal(at.Truncate(time.Microsecond)) {
			t.Fatalf("the login's event %+v, want %+v at %v", ev, want, at)
		}
	}
	wantEvent(u.ID, e)
	missing := login("usr_missing", at)
	wantErr(t, "RecordLogin unknown user", s.RecordLogin(c, missing), store.ErrNotFound)
	wantEvent("usr_missing", missing)
}

func testUserDelete(t *testing.T, s *sqlstore.Store) {
	syncDefaultRoles(t, s)
	c := rctx(t)
	admin := mustCreateUser(t, s, newUser("root@example.com", "super_admin"))
	inv := &store.Invite{Email: "Jill@Example.com", Role: "user", InvitedBy: admin.ID, ExpiresAt: time.Now().Add(time.Hour)}
	_, hash := secret()
	inv.TokenHash = hash
	if err := s.CreateInvite(c, inv, nil); err != nil {
		t.Fatalf("CreateInvite: %v", err)
	}
	u := &store.User{PasswordHash: "$h"}
	if _, err := s.AcceptInvite(c, hash, time.Now(), u); err != nil {
		t.Fatalf("AcceptInvite: %v", err)
	}
	_, resetHash := secret()
	if err := s.CreateUserToken(c, &store.UserToken{UserID: u.ID, Purpose: store.PurposePasswordReset, TokenHash: resetHash, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatalf("CreateUserToken: %v", err)
	}
	events := []*store.AuditEvent{
		{Action: "login.succeeded", Outcome: store.OutcomeSuccess, ActorID: u.ID, TargetID: u.ID, IP: "192.0.2.7", UserAgent: "jill-browser", Details: map[string]string{"email": "jill@example.com"}},
		{Action: "role.granted", Outcome: store.OutcomeSuccess, ActorID: admin.ID, TargetID: u.ID, IP: "198.51.100.1", UserAgent: "admin-cli", Details: map[string]string{"email": "jill@example.com", "role": "admin"}},
		{Action: "login.succeeded", Outcome: store.OutcomeSuccess, ActorID: admin.ID, TargetID: admin.ID, IP: "198.51.100.1", UserAgent: "admin-cli", Details: map[string]string{"note": "kept"}},
	}
	for _, e := range events {
		if err := s.AppendAudit(c, e); err != nil {
			t.Fatalf("AppendAudit: %v", err)
		}
	}
	if err := s.DeleteUser(c, u.ID); err != nil {
		t.Fatalf("DeleteUser: %v", err)
	}
	if _, err := s.GetUser(c, u.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetUser after delete: %v", err)
	}
	if _, err := s.GetUserByEmail(c, "jill@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetUserByEmail after delete: %v", err)
	}
	if n, _ := s.CountUsersWithRole(c, "user"); n != 0 {
		t.Fatalf("deleted user still holds a role")
	}
	if _, err := s.GetInvite(c, inv.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the invite naming the user's email survived: %v", err)
	}
	_, err := s.ConsumeUserToken(c, store.PurposePasswordReset, resetHash, time.Now(), nil)
	wantErr(t, "reset token after delete", err, store.ErrNotFound)
	page, err := s.ListAudit(c, store.AuditFilter{})
	if err != nil {
		t.Fatalf("ListAudit: %v", err)
	}
	if len(page.Items) != 3 {
		t.Fatalf("audit events %d, want the 3 kept", len(page.Items))
	}
	for _, e := range page.Items {
		switch e.ID {
		case events[0].ID:
			if e.IP != "" || e.UserAgent != "" || len(e.Details) != 0 || e.ActorID != u.ID {
				t.Fatalf("event by the user keeps personal data: %+v", e)
			}
		case events[1].ID:
			if len(e.Details) != 0 || e.TargetID != u.ID || e.IP != "198.51.100.1" {
				t.Fatalf("event about the user: %+v", e)
			}
		case events[2].ID:
			if e.Details["note"] != "kept" || e.IP != "198.51.100.1" {
				t.Fatalf("unrelated event changed: %+v", e)
			}
		}
	}
	wantErr(t, "DeleteUser again", s.DeleteUser(c, u.ID), store.ErrNotFound)
	if _, err := s.GetUser(c, admin.ID); err != nil {
		t.Fatalf("other user gone: %v", err)
	}
}

// ---- roles ----

func testRolesSync(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	syncDefaultRoles(t, s)
	roles, err := s.ListRoles(c)
	if err != nil || !reflect.DeepEqual(roles, defaultRoles) {
		t.Fatalf("ListRoles = %+v, %v; want %+v (highest first)", roles, err, defaultRoles)
	}
	// Syncing again is idempotent.
	syncDefaultRoles(t, s)
	u := mustCreateUser(t, s, newUser("kim@example.com", "admin"))
	next := []store.Role{
		{Name: "super_admin", Level: 100, Description: "all of it"},
		{Name: "editor", Level: 20, Description: "edits"},
		{Name: "viewer", Level: 20, Description: "views"},
	}
	if err := s.SyncRoles(c, next); err != nil {
		t.Fatalf("SyncRoles: %v", err)
	}
	roles, err = s.ListRoles(c)
	if err != nil {
		t.Fatalf("ListRoles: %v", err)
	}
	want := []store.Role{
		next[0],
		{Name: "admin", Level: 50, Description: "administration"}, // kept: a user holds it
		next[1], next[2],
	}
	if !reflect.DeepEqual(roles, want) {
		t.Fatalf("after sync: %+v\nwant %+v", roles, want)
	}
	if _, err := s.RevokeRole(c, u.ID, "admin"); err != nil {
		t.Fatalf("RevokeRole: %v", err)
	}
	if err := s.SyncRoles(c, next); err != nil {
		t.Fatalf("SyncRoles: %v", err)
	}
	if roles, _ = s.ListRoles(c); !reflect.DeepEqual(roles, next) {
		t.Fatalf("after the last holder left: %+v, want %+v", roles, next)
	}
	if err := s.SyncRoles(c, nil); err != nil {
		t.Fatalf("SyncRoles(nil): %v", err)
	}
	if roles, _ = s.ListRoles(c); len(roles) != 0 {
		t.Fatalf("SyncRoles(nil) kept unheld roles %+v", roles)
	}
}

func testRolesSyncInvalid(t *testing.T, s *sqlstore.Store) {
	syncDefaultRoles(t, s)
	for _, tc := range []struct {
		name  string
		roles []store.Role
	}{
		{"fail/empty_name", []store.Role{{Name: "", Level: 1}}},
		{"fail/duplicate", []store.Role{{Name: "a", Level: 1}, {Name: "a", Level: 2}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, "SyncRoles", s.SyncRoles(rctx(t), tc.roles), sqlstore.ErrInvalidRole)
			roles, err := s.ListRoles(rctx(t))
			if err != nil || !reflect.DeepEqual(roles, defaultRoles) {
				t.Fatalf("roles changed by a refused sync: %+v, %v", roles, err)
			}
		})
	}
}

// ---- clients ----

func sameClient(t *testing.T, what string, got, want store.Client) {
	t.Helper()
	g, w := got, want
	g.CreatedAt, g.UpdatedAt, w.CreatedAt, w.UpdatedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if !reflect.DeepEqual(g, w) || !got.CreatedAt.Equal(want.CreatedAt) || !got.UpdatedAt.Equal(want.UpdatedAt) {
		t.Fatalf("%s:\n got %#v\nwant %#v", what, got, want)
	}
}

func testClients(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	_, hash := secret()
	clients := []*store.Client{
		{ID: "backend.svc", Name: "Backend", SecretHash: hash, Grants: []string{"client_credentials"},
			Scopes: []string{"projects:read"}, Audiences: []string{"api", "billing"}, AccessTokenTTL: 5 * time.Minute},
		{ID: "all-perms", Name: "All", SecretHash: hash, Grants: []string{"password", "refresh_token"},
			Scopes: nil, RefreshIdleTTL: 2 * time.Hour, RefreshMaxAge: 48 * time.Hour},
		{ID: "no_perms", Name: "None", Public: true, Grants: []string{"password"}, Scopes: []string{}, Audiences: []string{}},
		// Every field of the authorization code flow (contract, "Browser sign-in").
		{ID: "spa.web", Name: "SPA", Public: true, Grants: []string{"authorization_code", "refresh_token"},
			RedirectURIs:           []string{"https://app.example.com/callback", "http://127.0.0.1/cb?x=1,2"},
			PostLogoutRedirectURIs: []string{"https://app.example.com/bye"}, FirstParty: true,
			ApplicationType: store.ApplicationWeb, RequirePKCE: true,
			BackchannelLogoutURI: "https://app.example.com/bcl", LogoURI: "https://app.example.com/logo.png",
			ClientURI: "https://app.example.com/", RequirePushedAuthorizationRequests: true},
		{ID: "spa.cookie", Name: "SPA", Public: true, Grants: []string{"password", "refresh_token"},
			ApplicationType: store.ApplicationWeb, RequirePKCE: true, RefreshTokenDelivery: store.RefreshDeliveryCookie,
			AllowedOrigins: []string{"https://app.example.com", "http://localhost:5173"}},
		{ID: "native.app", Name: "Native", SecretHash: hash, Grants: []string{"authorization_code"},
			RedirectURIs: []string{"com.example.app:/cb"}, PostLogoutRedirectURIs: []string{},
			ApplicationType: store.ApplicationNative, RequirePKCE: false},
	}
	for _, cl := range clients {
		want := *cl
		if err := s.CreateClient(c, cl, nil); err != nil {
			t.Fatalf("CreateClient(%s): %v", cl.ID, err)
		}
		wantUTC(t, "client created_at", cl.CreatedAt)
		want.CreatedAt, want.UpdatedAt = cl.CreatedAt, cl.UpdatedAt
		sameClient(t, "CreateClient result", *cl, want)
		got, err := s.GetClient(c, cl.ID)
		if err != nil {
			t.Fatalf("GetClient(%s): %v", cl.ID, err)
		}
		sameClient(t, "GetClient "+cl.ID, got, want)
	}
	if got, _ := s.GetClient(c, "all-perms"); got.Scopes != nil {
		t.Fatalf("nil Scopes came back as %#v", got.Scopes)
	}
	if got, _ := s.GetClient(c, "no_perms"); got.Scopes == nil || len(got.Scopes) != 0 {
		t.Fatalf("empty Scopes came back as %#v", got.Scopes)
	}
	if got, _ := s.GetClient(c, "all-perms"); got.RedirectURIs != nil || got.PostLogoutRedirectURIs != nil {
		t.Fatalf("nil URI lists came back as %#v, %#v", got.RedirectURIs, got.PostLogoutRedirectURIs)
	}
	if got, _ := s.GetClient(c, "native.app"); got.PostLogoutRedirectURIs == nil || got.RequirePKCE || got.FirstParty ||
		got.RequirePushedAuthorizationRequests {
		t.Fatalf("native client came back as %#v", got)
	}
	if err := s.SetClientFirstParty(c, "native.app", true); err != nil {
		t.Fatalf("SetClientFirstParty: %v", err)
	}
	if got, _ := s.GetClient(c, "native.app"); !got.FirstParty || got.UpdatedAt.Before(got.CreatedAt) {
		t.Fatalf("first-party flag not set: %#v", got)
	}
	if err := s.SetClientFirstParty(c, "native.app", false); err != nil {
		t.Fatalf("SetClientFirstParty(false): %v", err)
	}
	if got, _ := s.GetClient(c, "native.app"); got.FirstParty {
		t.Fatalf("first-party flag not cleared: %#v", got)
	}
	list, err := s.ListClients(c)
	if err != nil || len(list) != 6 {
		t.Fatalf("ListClients: %d, %v", len(list), err)
	}
	for _, cl := range list {
		if cl.ID == "spa.cookie" && (!cl.RefreshByCookie() || len(cl.AllowedOrigins) != 2) {
			t.Fatalf("ListClients lost the cookie delivery: %#v", cl)
		}
	}
	for i, cl := range list {
		if cl.SecretHash != nil {
			t.Fatalf("ListClients returned a secret hash for %s", cl.ID)
		}
		if i > 0 && list[i-1].ID > cl.ID {
			t.Fatalf("ListClients not ordered by id")
		}
	}
	_, newHash := secret()
	if err := s.SetClientSecretHash(c, "backend.svc", newHash); err != nil {
		t.Fatalf("SetClientSecretHash: %v", err)
	}
	if got, _ := s.GetClient(c, "backend.svc"); string(got.SecretHash) != string(newHash) || got.UpdatedAt.Before(got.CreatedAt) {
		t.Fatalf("secret hash not replaced")
	}
	if err := s.DeleteClient(c, "all-perms"); err != nil {
		t.Fatalf("DeleteClient: %v", err)
	}
	_, err = s.GetClient(c, "all-perms")
	wantErr(t, "GetClient after delete", err, store.ErrNotFound)
}

func testClientsFail(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	if err := s.CreateClient(c, &store.Client{ID: "dup", Name: "first"}, nil); err != nil {
		t.Fatalf("CreateClient: %v", err)
	}
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"fail/duplicate_id", s.CreateClient(c, &store.Client{ID: "dup", Name: "second"}, nil), store.ErrAlreadyExists},
		{"fail/no_id", s.CreateClient(c, &store.Client{Name: "anon"}, nil), sqlstore.ErrInvalidClient},
		{"fail/get_missing", func() error { _, err := s.GetClient(c, "missing"); return err }(), store.ErrNotFound},
		{"fail/delete_missing", s.DeleteClient(c, "missing"), store.ErrNotFound},
		{"fail/secret_missing", s.SetClientSecretHash(c, "missing", []byte("x")), store.ErrNotFound},
		{"fail/first_party_missing", s.SetClientFirstParty(c, "missing", true), store.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) { wantErr(t, tc.name, tc.err, tc.want) })
	}
	if got, _ := s.GetClient(c, "dup"); got.Name != "first" {
		t.Fatalf("duplicate create overwrote the client: %+v", got)
	}
	// check sees every stored client's id and audiences; its error is
	// returned as it is and nothing is stored.
	if err := s.CreateClient(c, &store.Client{ID: "lister", Name: "lister", Audiences: []string{"res"}}, nil); err != nil {
		t.Fatalf("CreateClient: %v", err)
	}
	refused := errors.New("refused by check")
	var seen []store.Client
	err := s.CreateClient(c, &store.Client{ID: "res", Name: "res"}, func(existing []store.Client, _ []store.RetiredClientName) error {
		seen = existing
		return refused
	})
	if !errors.Is(err, refused) {
		t.Fatalf("CreateClient with a refusing check: %v, want the check's error", err)
	}
	if _, err := s.GetClient(c, "res"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a client refused by check is stored: %v", err)
	}
	i := slices.IndexFunc(seen, func(e store.Client) bool { return e.ID == "lister" })
	if i < 0 || !slices.Equal(seen[i].Audiences, []string{"res"}) || !slices.ContainsFunc(seen, func(e store.Client) bool { return e.ID == "dup" }) {
		t.Fatalf("check saw %+v, want every stored client with its audiences", seen)
	}
	if err := s.CreateClient(c, &store.Client{ID: "res2", Name: "res2"}, func([]store.Client, []store.RetiredClientName) error { return nil }); err != nil {
		t.Fatalf("CreateClient with a passing check: %v", err)
	}
}

// ---- signing keys ----

func newKey(state store.KeyState, created time.Time) store.SigningKey {
	return store.SigningKey{
		KID:              rid("kid-"),
		Alg:              "ES256",
		State:            state,
		PublicJWK:        []byte(`{"kty":"EC","crv":"P-256","x":"x","y":"y"}`),
		PrivateEncrypted: []byte("sealed-private-key"),
		CreatedAt:        created,
		Version:          99, // ignored by create
	}
}

func keysByKID(t *testing.T, s *sqlstore.Store) map[string]store.SigningKey {
	t.Helper()
	keys, err := s.ListSigningKeys(rctx(t))
	if err != nil {
		t.Fatalf("ListSigningKeys: %v", err)
	}
	out := map[string]store.SigningKey{}
	for _, k := range keys {
		out[k.KID] = k
	}
	return out
}

func testKeysLifecycle(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	base := time.Now().UTC().Truncate(time.Second)
	active := newKey(store.KeyActive, base)
	activated := base
	active.ActivatedAt = &activated
	next := newKey(store.KeyNext, base.Add(time.Minute))
	for _, k := range []store.SigningKey{active, next} {
		if err := s.CreateSigningKey(c, k); err != nil {
			t.Fatalf("CreateSigningKey(%s): %v", k.State, err)
		}
	}
	keys, err := s.ListSigningKeys(c)
	if err != nil || len(keys) != 2 || keys[0].KID != active.KID || keys[1].KID != next.KID {
		t.Fatalf("ListSigningKeys oldest first: %+v, %v", keys, err)
	}
	for _, k := range keys {
		if k.Version != 1 {
			t.Fatalf("new key version %d, want 1", k.Version)
		}
		wantUTC(t, "key created_at", k.CreatedAt)
	}
	got := keys[0]
	if got.Alg != active.Alg || string(got.PublicJWK) != string(active.PublicJWK) ||
		string(got.PrivateEncrypted) != string(active.PrivateEncrypted) || !got.CreatedAt.Equal(base) ||
		got.ActivatedAt == nil || !got.ActivatedAt.Equal(activated) || got.RetiredAt != nil {
		t.Fatalf("stored key %+v differs from %+v", got, active)
	}

	// Rotate: retire active, promote next, create a new next.
	now := base.Add(time.Hour)
	until := now.Add(24 * time.Hour)
	retired := keys[0]
	retired.State, retired.RetiredAt, retired.PublishedUntil = store.KeyRetired, &now, &until
	promoted := keys[1]
	promoted.State, promoted.ActivatedAt = store.KeyActive, &now
	newNext := newKey(store.KeyNext, now)
	if err := s.ApplySigningKeyChanges(c, []store.SigningKey{retired, promoted}, []store.SigningKey{newNext}); err != nil {
		t.Fatalf("rotation: %v", err)
	}
	after := keysByKID(t, s)
	if k := after[active.KID]; k.State != store.KeyRetired || k.Version != 2 || k.PublishedUntil == nil ||
		!k.PublishedUntil.Equal(until) || !k.CreatedAt.Equal(base) {
		t.Fatalf("retired key %+v", k)
	}
	if k := after[next.KID]; k.State != store.KeyActive || k.Version != 2 || !k.ActivatedAt.Equal(now) {
		t.Fatalf("promoted key %+v", k)
	}
	if k := after[newNext.KID]; k.State != store.KeyNext || k.Version != 1 {
		t.Fatalf("new next key %+v", k)
	}
	// Revoke the retired key (version 2 now).
	rev := after[active.KID]
	rev.State, rev.RevokedAt = store.KeyRevoked, &now
	if err := s.ApplySigningKeyChanges(c, []store.SigningKey{rev}, nil); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if k := keysByKID(t, s)[active.KID]; k.State != store.KeyRevoked || k.Version != 3 || k.RevokedAt == nil {
		t.Fatalf("revoked key %+v", k)
	}
}

func testKeysConflicts(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	base := time.Now().UTC().Truncate(time.Second)
	active := newKey(store.KeyActive, base)
	next := newKey(store.KeyNext, base)
	for _, k := range []store.SigningKey{active, next} {
		if err := s.CreateSigningKey(c, k); err != nil {
			t.Fatalf("CreateSigningKey: %v", err)
		}
	}
	snapshot := keysByKID(t, s)
	cur := snapshot[active.KID]
	stale := cur
	stale.Version = 7
	retire := cur
	retire.State = store.KeyRetired
	dupKID := newKey(store.KeyRetired, base)
	dupKID.KID = next.KID
	for _, tc := range []struct {
		name             string
		updates, creates []store.SigningKey
		want             error
	}{
		{"fail/second_active", nil, []store.SigningKey{newKey(store.KeyActive, base)}, store.ErrConflict},
		{"fail/second_next", nil, []store.SigningKey{newKey(store.KeyNext, base)}, store.ErrConflict},
		{"fail/duplicate_kid", nil, []store.SigningKey{dupKID}, store.ErrConflict},
		{"fail/stale_version", []store.SigningKey{stale}, nil, store.ErrConflict},
		{"fail/unknown_kid", []store.SigningKey{func() store.SigningKey { k := cur; k.KID = "nope"; return k }()}, nil, store.ErrConflict},
		{"fail/good_update_then_stale", []store.SigningKey{retire, stale}, nil, store.ErrConflict},
		{"fail/good_update_then_bad_create", []store.SigningKey{retire}, []store.SigningKey{newKey(store.KeyNext, base)}, store.ErrConflict},
		{"fail/invalid_state", nil, []store.SigningKey{newKey("bogus", base)}, sqlstore.ErrInvalidKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, "ApplySigningKeyChanges", s.ApplySigningKeyChanges(rctx(t), tc.updates, tc.creates), tc.want)
			if got := keysByKID(t, s); !reflect.DeepEqual(got, snapshot) {
				t.Fatalf("a refused change was partly applied:\n got %+v\nwant %+v", got, snapshot)
			}
		})
	}
	// The same update applied twice: the second finds the version moved on.
	if err := s.ApplySigningKeyChanges(c, []store.SigningKey{retire}, nil); err != nil {
		t.Fatalf("retire: %v", err)
	}
	wantErr(t, "same update again", s.ApplySigningKeyChanges(c, []store.SigningKey{retire}, nil), store.ErrConflict)
	// With no active key left, a new one may be created.
	if err := s.CreateSigningKey(c, newKey(store.KeyActive, base)); err != nil {
		t.Fatalf("CreateSigningKey after retiring the active key: %v", err)
	}
}

// ---- invites ----

// mustInvite creates an invite as the service does once its email went
// out: CreateInvite, then SupersedeInvites of the pending invites it
// replaces.
func mustInvite(t *testing.T, s *sqlstore.Store, email, role string, expires time.Time) (*store.Invite, []byte) {
	t.Helper()
	_, hash := secret()
	inv := &store.Invite{Email: email, Role: role, TokenHash: hash, InvitedBy: "usr_inviter", ExpiresAt: expires}
	var replaced []string
	if err := s.CreateInvite(rctx(t), inv, func(pending []store.Invite) error { replaced = inviteIDs(pending); return nil }); err != nil {
		t.Fatalf("CreateInvite(%s): %v", email, err)
	}
	if _, err := s.SupersedeInvites(rctx(t), *inv, replaced); err != nil {
		t.Fatalf("SupersedeInvites(%s): %v", email, err)
	}
	return inv, hash
}

func inviteIDs(invites []store.Invite) []string {
	ids := make([]string, 0, len(invites))
	for _, inv := range invites {
		ids = append(ids, inv.ID)
	}
	return ids
}

// testInviteSupersedeOnceSent: CreateInvite cancels nothing (the invite
// pending before it stays usable, as when the new invite's email cannot be
// sent); SupersedeInvites then cancels exactly the pending invites named,
// for the same address and tenant: never the newer invite itself, one
// created after it (not named), one for another address or tenant, nor
// one accepted or revoked meanwhile.
// testInviteEmailKey: an invite supersedes the pending invites of its own
// address only, compared as accounts are (ASCII letters folded, nothing
// else), and accepting one creates the user of its own address.
func testInviteEmailKey(t *testing.T, s *sqlstore.Store) {
	syncDefaultRoles(t, s)
	c := rctx(t)
	exp := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Millisecond)
	owner, _ := mustInvite(t, s, "bill@example.com", "user", exp)
	other, otherHash := mustInvite(t, s, "b\u0130ll@example.com", "user", exp)
	for _, inv := range []*store.Invite{owner, other} {
		if got, err := s.GetInvite(c, inv.ID); err != nil || got.Status != store.InvitePending {
			t.Fatalf("invite for %q: %+v, %v; want pending (an invite for another address must not supersede it)", inv.Email, got, err)
		}
	}
	u := &store.User{Name: "Other", PasswordHash: "$other", Active: true}
	if _, err := s.AcceptInvite(c, otherHash, time.Now().UTC(), u); err != nil {
		t.Fatalf("AcceptInvite(%q): %v", other.Email, err)
	}
	if got, err := s.GetInvite(c, owner.ID); err != nil || got.Status != store.InvitePending {
		t.Fatalf("bill@example.com's invite after %q accepted theirs: %+v, %v; want pending", other.Email, got, err)
	}
	if _, err := s.GetUserByEmail(c, "bill@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetUserByEmail(bill@example.com) after %q accepted: %v; want not found", other.Email, err)
	}
	again, _ := mustInvite(t, s, "BILL@Example.com", "admin", exp)
	if got, _ := s.GetInvite(c, owner.ID); got.Status != store.InviteSuperseded {
		t.Fatalf("bill@example.com's invite after one for BILL@Example.com (%s): %+v; want superseded", again.ID, got)
	}
}

func testInviteSupersedeOnceSent(t *testing.T, s *sqlstore.Store) {
	syncDefaultRoles(t, s)
	c := rctx(t)
	exp := time.Now().Add(time.Hour)
	create := func(email, role string, mayReplace func([]store.Invite) error) (*store.Invite, []byte) {
		t.Helper()
		_, hash := secret()
		inv := &store.Invite{Email: email, Role: role, TokenHash: hash, InvitedBy: "usr_inviter", ExpiresAt: exp}
		if err := s.CreateInvite(c, inv, mayReplace); err != nil {
			t.Fatalf("CreateInvite(%s): %v", email, err)
		}
		return inv, hash
	}
	accepted, acceptedHash := create("ida@example.com", "user", nil)
	if _, err := s.AcceptInvite(c, acceptedHash, time.Now(), &store.User{PasswordHash: "$p"}); err != nil {
		t.Fatal(err)
	}
	revoked, _ := create("ida@example.com", "admin", nil)
	if err := s.RevokeInvite(c, revoked.ID); err != nil {
		t.Fatal(err)
	}
	other, _ := create("someone@example.com", "user", nil)
	first, _ := create("ida@example.com", "user", nil)
	var shown []store.Invite
	newer, _ := create("IDA@example.com", "user", func(p []store.Invite) error { shown = p; return nil })
	if len(shown) != 1 || shown[0].ID != first.ID {
		t.Fatalf("mayReplace saw %+v, want the pending invite only", shown)
	}
	for _, id := range []string{first.ID, newer.ID} {
		if got, _ := s.GetInvite(c, id); got.Status != store.InvitePending {
			t.Fatalf("CreateInvite changed invite %s: %s", id, got.Status)
		}
	}
	later, _ := create("ida@example.com", "user", nil)
	got, err := s.SupersedeInvites(c, *newer, []string{first.ID, newer.ID, other.ID, revoked.ID, accepted.ID, "inv_missing"})
	if err != nil || len(got) != 1 || got[0].ID != first.ID || got[0].Status != store.InviteSuperseded {
		t.Fatalf("SupersedeInvites = %+v, %v; want the first invite only", got, err)
	}
	for id, want := range map[string]store.InviteStatus{first.ID: store.InviteSuperseded, newer.ID: store.InvitePending,
		later.ID: store.InvitePending, other.ID: store.InvitePending, revoked.ID: store.InviteRevoked, accepted.ID: store.InviteAccepted} {
		if got, _ := s.GetInvite(c, id); got.Status != want {
			t.Fatalf("invite %s is %s after SupersedeInvites, want %s", id, got.Status, want)
		}
	}
	if got, err := s.SupersedeInvites(c, *newer, []string{first.ID}); err != nil || len(got) != 0 {
		t.Fatalf("SupersedeInvites again = %+v, %v; want nothing", got, err)
	}
	_, err = s.SupersedeInvites(c, store.Invite{ID: "inv_missing"}, []string{later.ID})
	wantErr(t, "SupersedeInvites of an unknown invite", err, store.ErrNotFound)
}

func testInvites(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	exp := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Millisecond)
	first, firstHash := mustInvite(t, s, "Lou@Example.com", "user", exp)
	if !strings.HasPrefix(first.ID, sqlstore.InviteIDPrefix) || first.Status != store.InvitePending ||
		string(first.TokenHash) != string(firstHash) || !first.ExpiresAt.Equal(exp) || first.UserID != "" {
		t.Fatalf("created invite %+v", first)
	}
	wantUTC(t, "invite created_at", first.CreatedAt)
	other, _ := mustInvite(t, s, "max@example.com", "admin", exp)
	second, _ := mustInvite(t, s, "lou@example.COM", "admin", exp)
	got, err := s.GetInvite(c, first.ID)
	if err != nil || got.Status != store.InviteSuperseded {
		t.Fatalf("older invite for the same email: %+v, %v; want superseded", got, err)
	}
	if got, _ := s.GetInvite(c, other.ID); got.Status != store.InvitePending {
		t.Fatalf("invite for another email changed: %+v", got)
	}
	got, err = s.GetInvite(c, second.ID)
	if err != nil || !reflect.DeepEqual(got, *second) {
		t.Fatalf("GetInvite = %+v, %v; want %+v", got, err, *second)
	}
	_, err = s.GetInvite(c, "inv_missing")
	wantErr(t, "GetInvite missing", err, store.ErrNotFound)

	for i := 0; i < 4; i++ {
		mustInvite(t, s, fmt.Sprintf("n%d@example.com", i), "user", exp)
	}
	var all []store.Invite
	cursor := ""
	for pages := 0; ; pages++ {
		p, err := s.ListInvites(c, cursor, 3)
		if err != nil {
			t.Fatalf("ListInvites: %v", err)
		}
		all = append(all, p.Items...)
		if p.NextCursor == "" {
			break
		}
		if pages > 10 {
			t.Fatalf("ListInvites never ends")
		}
		cursor = p.NextCursor
	}
	if len(all) != 7 {
		t.Fatalf("listed %d invites, want 7", len(all))
	}
	seen := map[string]bool{}
	for i, inv := range all {
		if seen[inv.ID] {
			t.Fatalf("invite %s listed twice", inv.ID)
		}
		seen[inv.ID] = true
		if i > 0 && (inv.CreatedAt.After(all[i-1].CreatedAt) ||
			(inv.CreatedAt.Equal(all[i-1].CreatedAt) && inv.ID > all[i-1].ID)) {
			t.Fatalf("invites not newest first at %d", i)
		}
	}
	_, err = s.ListInvites(c, "garbage!", 3)
	wantErr(t, "ListInvites bad cursor", err, sqlstore.ErrInvalidCursor)
	for _, bad := range []*store.Invite{
		{Email: "", Role: "user", TokenHash: []byte("h"), ExpiresAt: exp},
		{Email: "x@example.com", Role: "user", ExpiresAt: exp},
		{Email: "x@example.com", Role: "user", TokenHash: []byte("h")},
	} {
		wantErr(t, "CreateInvite incomplete", s.CreateInvite(c, bad, nil), sqlstore.ErrInvalidToken)
	}
}

func testInviteAccept(t *testing.T, s *sqlstore.Store) {
	syncDefaultRoles(t, s)
	c := rctx(t)
	now := time.Now().UTC()
	inv, hash := mustInvite(t, s, "Nia@Example.com", "admin", now.Add(time.Hour))
	u := &store.User{Name: "Nia", PasswordHash: "$nia", Active: true, Email: "ignored@example.com", Roles: []string{"super_admin"}}
	accepted, err := s.AcceptInvite(c, hash, now, u)
	if err != nil {
		t.Fatalf("AcceptInvite: %v", err)
	}
	if accepted.Status != store.InviteAccepted || accepted.UserID != u.ID || accepted.AcceptedAt == nil ||
		!accepted.AcceptedAt.Equal(now.Truncate(time.Microsecond)) || accepted.ID != inv.ID {
		t.Fatalf("accepted invite %+v", accepted)
	}
	if !strings.HasPrefix(u.ID, sqlstore.UserIDPrefix) || u.Email != "Nia@Example.com" || !u.EmailVerified ||
		!reflect.DeepEqual(u.Roles, []string{"admin"}) {
		t.Fatalf("user filled by AcceptInvite: %+v", u)
	}
	got, err := s.GetUserByEmail(c, "nia@example.com")
	if err != nil {
		t.Fatalf("GetUserByEmail: %v", err)
	}
	sameUser(t, "user created by invite", got, *u)
	stored, _ := s.GetInvite(c, inv.ID)
	if !reflect.DeepEqual(stored, accepted) {
		t.Fatalf("stored invite %+v, returned %+v", stored, accepted)
	}
	_, err = s.AcceptInvite(c, hash, now, &store.User{PasswordHash: "$again"})
	wantErr(t, "accept twice", err, store.ErrTokenUsed)
}

func testInviteAcceptFail(t *testing.T, s *sqlstore.Store) {
	syncDefaultRoles(t, s)
	c := rctx(t)
	now := time.Now().UTC()
	mustCreateUser(t, s, newUser("taken@example.com"))
	revoked, revokedHash := mustInvite(t, s, "rev@example.com", "user", now.Add(time.Hour))
	if err := s.RevokeInvite(c, revoked.ID); err != nil {
		t.Fatalf("RevokeInvite: %v", err)
	}
	_, supersededHash := mustInvite(t, s, "sup@example.com", "user", now.Add(time.Hour))
	mustInvite(t, s, "SUP@example.com", "user", now.Add(time.Hour))
	expired, expiredHash := mustInvite(t, s, "exp@example.com", "user", now)
	taken, takenHash := mustInvite(t, s, "TAKEN@example.com", "user", now.Add(time.Hour))
	ghost, ghostHash := mustInvite(t, s, "ghost@example.com", "ghost_role", now.Add(time.Hour))
	_, unknownHash := secret()
	for _, tc := range []struct {
		name string
		hash []byte
		want error
	}{
		{"fail/unknown_token", unknownHash, store.ErrNotFound},
		{"fail/empty_token", nil, store.ErrNotFound},
		{"fail/revoked", revokedHash, store.ErrTokenRevoked},
		{"fail/superseded", supersededHash, store.ErrTokenUsed},
		{"fail/expired_at_expiry", expiredHash, store.ErrTokenExpired},
		{"fail/email_has_account", takenHash, store.ErrAlreadyExists},
		{"fail/role_gone", ghostHash, store.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := &store.User{PasswordHash: "$p"}
			_, err := s.AcceptInvite(rctx(t), tc.hash, now, u)
			wantErr(t, "AcceptInvite", err, tc.want)
			if u.ID != "" {
				t.Fatalf("failed AcceptInvite filled the user: %+v", u)
			}
		})
	}
	// Nothing half-done: the invites that failed are unchanged.
	for _, inv := range []*store.Invite{taken, ghost, expired} {
		got, err := s.GetInvite(c, inv.ID)
		if err != nil || got.Status != store.InvitePending || got.UserID != "" {
			t.Fatalf("invite %s after failed accept: %+v, %v", inv.Email, got, err)
		}
	}
	if _, err := s.GetUserByEmail(c, "ghost@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a user was created by a failed accept: %v", err)
	}
	// An invite is usable until just before its expiry.
	fresh, freshHash := mustInvite(t, s, "fresh@example.com", "user", now.Add(time.Minute))
	if _, err := s.AcceptInvite(c, freshHash, fresh.ExpiresAt.Add(-time.Millisecond), &store.User{PasswordHash: "$p"}); err != nil {
		t.Fatalf("accept just before expiry: %v", err)
	}
}

func testInviteRevoke(t *testing.T, s *sqlstore.Store) {
	syncDefaultRoles(t, s)
	c := rctx(t)
	now := time.Now().UTC()
	pending, _ := mustInvite(t, s, "p@example.com", "user", now.Add(time.Hour))
	used, usedHash := mustInvite(t, s, "u@example.com", "user", now.Add(time.Hour))
	if _, err := s.AcceptInvite(c, usedHash, now, &store.User{PasswordHash: "$p"}); err != nil {
		t.Fatalf("AcceptInvite: %v", err)
	}
	old, _ := mustInvite(t, s, "o@example.com", "user", now.Add(time.Hour))
	mustInvite(t, s, "o@example.com", "user", now.Add(time.Hour))
	for _, tc := range []struct {
		name string
		id   string
		want error
	}{
		{"ok/pending", pending.ID, nil},
		{"ok/revoked_again", pending.ID, nil},
		{"fail/accepted", used.ID, store.ErrConflict},
		{"fail/superseded", old.ID, store.ErrConflict},
		{"fail/unknown", "inv_missing", store.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.RevokeInvite(rctx(t), tc.id)
			if tc.want == nil && err != nil {
				t.Fatalf("RevokeInvite: %v", err)
			}
			if tc.want != nil {
				wantErr(t, "RevokeInvite", err, tc.want)
			}
		})
	}
	if got, _ := s.GetInvite(c, pending.ID); got.Status != store.InviteRevoked {
		t.Fatalf("revoked invite status %s", got.Status)
	}
	if got, _ := s.GetInvite(c, used.ID); got.Status != store.InviteAccepted {
		t.Fatalf("accepted invite status changed to %s", got.Status)
	}
}

// ---- one-time user tokens ----

// mustUserToken issues a link as the service does once its email went
// out: CreateUserToken, then SupersedeUserTokens.
func mustUserToken(t *testing.T, s *sqlstore.Store, userID string, purpose store.UserTokenPurpose, expires time.Time) []byte {
	t.Helper()
	tok, hash := issuedUserToken(t, s, userID, purpose, expires)
	if err := s.SupersedeUserTokens(rctx(t), tok); err != nil {
		t.Fatalf("SupersedeUserTokens: %v", err)
	}
	return hash
}

// issuedUserToken creates a link whose email has not gone out yet.
func issuedUserToken(t *testing.T, s *sqlstore.Store, userID string, purpose store.UserTokenPurpose, expires time.Time) (store.UserToken, []byte) {
	t.Helper()
	_, hash := secret()
	tok := &store.UserToken{UserID: userID, Purpose: purpose, TokenHash: hash, ExpiresAt: expires}
	if err := s.CreateUserToken(rctx(t), tok); err != nil {
		t.Fatalf("CreateUserToken: %v", err)
	}
	if !strings.HasPrefix(tok.ID, sqlstore.UserTokenIDPrefix) || tok.CreatedAt.IsZero() || tok.UsedAt != nil {
		t.Fatalf("created token %+v", tok)
	}
	return *tok, hash
}

// testUserTokenSupersedeOnceSent: CreateUserToken stops no link (the one
// sent before works, as when the new link's email cannot be sent);
// SupersedeUserTokens then stops every other link of the user of the same
// purpose, and no other: not the newer, one of another purpose or of
// another user. A link stopped meanwhile stops nothing.
func testUserTokenSupersedeOnceSent(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	now := time.Now().UTC()
	u := mustCreateUser(t, s, newUser("quin@example.com"))
	other := mustCreateUser(t, s, newUser("ursula@example.com"))
	_, sentHash := issuedUserToken(t, s, u.ID, store.PurposePasswordReset, now.Add(time.Hour))
	_, verifyHash := issuedUserToken(t, s, u.ID, store.PurposeVerifyEmail, now.Add(time.Hour))
	_, otherHash := issuedUserToken(t, s, other.ID, store.PurposePasswordReset, now.Add(time.Hour))
	newer, newerHash := issuedUserToken(t, s, u.ID, store.PurposePasswordReset, now.Add(time.Hour))
	_, laterHash := issuedUserToken(t, s, u.ID, store.PurposePasswordReset, now.Add(time.Hour))
	// Nothing superseded yet: the link sent before works (dry run: apply's
	// error rolls the consume back).
	dry := errors.New("dry run")
	for _, h := range [][]byte{sentHash, newerHash, laterHash} {
		if _, err := s.ConsumeUserToken(c, store.PurposePasswordReset, h, now, func(*store.User) error { return dry }); !errors.Is(err, dry) {
			t.Fatalf("a link before SupersedeUserTokens: %v, want it usable", err)
		}
	}
	if err := s.SupersedeUserTokens(c, newer); err != nil {
		t.Fatalf("SupersedeUserTokens: %v", err)
	}
	for name, h := range map[string][]byte{"older": sentHash, "later": laterHash} {
		_, err := s.ConsumeUserToken(c, store.PurposePasswordReset, h, now, nil)
		wantErr(t, "the "+name+" link", err, store.ErrTokenUsed)
	}
	for name, tc := range map[string]struct {
		purpose store.UserTokenPurpose
		hash    []byte
	}{
		"newer": {store.PurposePasswordReset, newerHash}, "another purpose": {store.PurposeVerifyEmail, verifyHash},
		"another user": {store.PurposePasswordReset, otherHash},
	} {
		if _, err := s.ConsumeUserToken(c, tc.purpose, tc.hash, now, func(*store.User) error { return dry }); !errors.Is(err, dry) {
			t.Fatalf("the %s link after SupersedeUserTokens: %v, want it usable", name, err)
		}
	}
	// A link stopped before its own supersession (another link sent at
	// once won) stops nothing.
	stopped, stoppedHash := issuedUserToken(t, s, u.ID, store.PurposeVerifyEmail, now.Add(time.Hour))
	winner, winnerHash := issuedUserToken(t, s, u.ID, store.PurposeVerifyEmail, now.Add(time.Hour))
	if err := s.SupersedeUserTokens(c, winner); err != nil {
		t.Fatal(err)
	}
	if err := s.SupersedeUserTokens(c, stopped); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ConsumeUserToken(c, store.PurposeVerifyEmail, winnerHash, now, func(*store.User) error { return dry }); !errors.Is(err, dry) {
		t.Fatalf("the winning link after a stopped one's supersession: %v, want it usable", err)
	}
	_, err := s.ConsumeUserToken(c, store.PurposeVerifyEmail, stoppedHash, now, nil)
	wantErr(t, "the stopped link", err, store.ErrTokenUsed)
	wantErr(t, "SupersedeUserTokens of an unknown link", s.SupersedeUserTokens(c, store.UserToken{ID: "utk_missing", UserID: u.ID}), store.ErrNotFound)
}

func testUserTokenConsume(t *testing.T, s *sqlstore.Store) {
	syncDefaultRoles(t, s)
	c := rctx(t)
	now := time.Now().UTC()
	u := mustCreateUser(t, s, newUser("olga@example.com", "user"))
	reset := mustUserToken(t, s, u.ID, store.PurposePasswordReset, now.Add(time.Hour))
	verify := mustUserToken(t, s, u.ID, store.PurposeVerifyEmail, now.Add(time.Hour))
	got, err := s.ConsumeUserToken(c, store.PurposePasswordReset, reset, now, func(x *store.User) error {
		if x.ID != u.ID || x.PasswordHash != u.PasswordHash {
			return fmt.Errorf("apply got %+v", x)
		}
		x.PasswordHash = "$reset"
		x.MustChangePassword = false
		x.Roles = nil // ignored
		return nil
	})
	if err != nil {
		t.Fatalf("ConsumeUserToken: %v", err)
	}
	if got.PasswordHash != "" || got.ID != u.ID || !reflect.DeepEqual(got.Roles, []string{"user"}) {
		t.Fatalf("consumed user %+v", got)
	}
	if stored, _ := s.GetUser(c, u.ID); stored.PasswordHash != "$reset" {
		t.Fatalf("apply not saved: hash %q", stored.PasswordHash)
	}
	_, err = s.ConsumeUserToken(c, store.PurposePasswordReset, reset, now, nil)
	wantErr(t, "consume twice", err, store.ErrTokenUsed)
	// A token of one purpose never works for another.
	_, err = s.ConsumeUserToken(c, store.PurposePasswordReset, verify, now, nil)
	wantErr(t, "verify token used as reset", err, store.ErrNotFound)
	got, err = s.ConsumeUserToken(c, store.PurposeVerifyEmail, verify, now, func(x *store.User) error {
		x.EmailVerified = true
		return nil
	})
	if err != nil || !got.EmailVerified {
		t.Fatalf("verify email: %+v, %v", got, err)
	}
}

func testUserTokenFail(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	now := time.Now().UTC()
	u := mustCreateUser(t, s, newUser("pete@example.com"))
	older := mustUserToken(t, s, u.ID, store.PurposePasswordReset, now.Add(time.Hour))
	newer := mustUserToken(t, s, u.ID, store.PurposePasswordReset, now.Add(time.Hour))
	expired := mustUserToken(t, s, u.ID, store.PurposeVerifyEmail, now)
	_, unknown := secret()
	boom := errors.New("password too weak")
	for _, tc := range []struct {
		name    string
		purpose store.UserTokenPurpose
		hash    []byte
		apply   func(*store.User) error
		want    error
	}{
		{"fail/unknown", store.PurposePasswordReset, unknown, nil, store.ErrNotFound},
		{"fail/empty", store.PurposePasswordReset, nil, nil, store.ErrNotFound},
		{"fail/superseded_by_newer", store.PurposePasswordReset, older, nil, store.ErrTokenUsed},
		{"fail/expired_at_expiry", store.PurposeVerifyEmail, expired, nil, store.ErrTokenExpired},
		{"fail/apply_error_returned_as_is", store.PurposePasswordReset, newer, func(x *store.User) error {
			x.PasswordHash = "$weak"
			return boom
		}, boom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.ConsumeUserToken(rctx(t), tc.purpose, tc.hash, now, tc.apply)
			wantErr(t, "ConsumeUserToken", err, tc.want)
		})
	}
	// The apply error rolled everything back: the token still works once.
	if stored, _ := s.GetUser(c, u.ID); stored.PasswordHash != u.PasswordHash {
		t.Fatalf("a failed apply was saved")
	}
	if _, err := s.ConsumeUserToken(c, store.PurposePasswordReset, newer, now, nil); err != nil {
		t.Fatalf("token after a failed apply: %v", err)
	}
	_, h := secret()
	wantErr(t, "token for unknown user", s.CreateUserToken(c, &store.UserToken{
		UserID: "usr_missing", Purpose: store.PurposePasswordReset, TokenHash: h, ExpiresAt: now.Add(time.Hour),
	}), store.ErrNotFound)
	wantErr(t, "incomplete token", s.CreateUserToken(c, &store.UserToken{UserID: u.ID}), sqlstore.ErrInvalidToken)
}

// testResetLinkVoided pins the rule of reset links: every write that
// changes a user's password hash (UpdateUser: a change, a temporary
// password, an upgraded hash; ConsumeUserToken: a reset) or deactivates
// the account voids the user's unused reset links in its transaction
// (ErrTokenUsed, as a used link); other writes leave them, and links of
// another purpose are never voided. A reset link issued while the account
// is off is refused (ErrTokenRevoked) and changes nothing.
func testResetLinkVoided(t *testing.T, s *sqlstore.Store) {
	now := time.Now().UTC()
	setHash := func(u *store.User) error { u.PasswordHash = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$bmV3"; return nil }
	for i, tc := range []struct {
		name string
		// write runs after the reset link and a verification link (verify)
		// are issued; it reports whether it used the verification link.
		write func(t *testing.T, id string, verify []byte) (verifyUsed bool)
		want  error // redeeming the reset link then; nil: it works
	}{
		{"fail/password_changed", func(t *testing.T, id string, _ []byte) bool {
			if _, err := s.UpdateUser(rctx(t), id, setHash); err != nil {
				t.Fatal(err)
			}
			return false
		}, store.ErrTokenUsed},
		{"fail/temporary_password", func(t *testing.T, id string, _ []byte) bool {
			if _, err := s.UpdateUser(rctx(t), id, func(u *store.User) error {
				u.MustChangePassword = true
				return setHash(u)
			}); err != nil {
				t.Fatal(err)
			}
			return false
		}, store.ErrTokenUsed},
		{"fail/deactivated", func(t *testing.T, id string, _ []byte) bool {
			if _, err := s.UpdateUser(rctx(t), id, func(u *store.User) error { u.Active = false; return nil }); err != nil {
				t.Fatal(err)
			}
			return false
		}, store.ErrTokenUsed},
		{"fail/deactivated_then_reactivated", func(t *testing.T, id string, _ []byte) bool {
			for _, active := range []bool{false, true} {
				if _, err := s.UpdateUser(rctx(t), id, func(u *store.User) error { u.Active = active; return nil }); err != nil {
					t.Fatal(err)
				}
			}
			return false
		}, store.ErrTokenUsed},
		{"fail/hash_changed_by_a_consume", func(t *testing.T, _ string, verify []byte) bool {
			// A consume whose apply changes the hash (as a reset's does)
			// voids the reset links too.
			if _, err := s.ConsumeUserToken(rctx(t), store.PurposeVerifyEmail, verify, now, setHash); err != nil {
				t.Fatal(err)
			}
			return true
		}, store.ErrTokenUsed},
		{"ok/other_fields_changed", func(t *testing.T, id string, _ []byte) bool {
			if _, err := s.UpdateUser(rctx(t), id, func(u *store.User) error {
				u.Name, u.EmailVerified, u.MustChangePassword = "Renamed", true, true
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			return false
		}, nil},
		{"ok/same_hash_written_again", func(t *testing.T, id string, _ []byte) bool {
			if _, err := s.UpdateUser(rctx(t), id, func(*store.User) error { return nil }); err != nil {
				t.Fatal(err)
			}
			return false
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := rctx(t)
			u := mustCreateUser(t, s, newUser(fmt.Sprintf("void%d@example.com", i)))
			reset := mustUserToken(t, s, u.ID, store.PurposePasswordReset, now.Add(time.Hour))
			verify := mustUserToken(t, s, u.ID, store.PurposeVerifyEmail, now.Add(time.Hour))
			verifyUsed := tc.write(t, u.ID, verify)
			before, err := s.GetUser(c, u.ID)
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.ConsumeUserToken(c, store.PurposePasswordReset, reset, now, func(x *store.User) error {
				x.PasswordHash = "$from-the-old-link"
				return nil
			})
			if tc.want == nil {
				if err != nil {
					t.Fatalf("the reset link after the write: %v", err)
				}
			} else {
				wantErr(t, "the reset link after the write", err, tc.want)
				if after, _ := s.GetUser(c, u.ID); after.PasswordHash != before.PasswordHash {
					t.Fatalf("a refused link set the password hash %q", after.PasswordHash)
				}
			}
			// A link of another purpose is not voided.
			if _, err := s.ConsumeUserToken(c, store.PurposeVerifyEmail, verify, now, nil); err != nil && !verifyUsed {
				t.Fatalf("the verification link after the write: %v", err)
			}
		})
	}

	t.Run("fail/issued_while_deactivated", func(t *testing.T) {
		c := rctx(t)
		u := mustCreateUser(t, s, newUser("void-off@example.com"))
		if _, err := s.UpdateUser(c, u.ID, func(x *store.User) error { x.Active = false; return nil }); err != nil {
			t.Fatal(err)
		}
		reset := mustUserToken(t, s, u.ID, store.PurposePasswordReset, now.Add(time.Hour))
		_, err := s.ConsumeUserToken(c, store.PurposePasswordReset, reset, now, setHash)
		wantErr(t, "a reset link of a deactivated account", err, store.ErrTokenRevoked)
		if after, _ := s.GetUser(c, u.ID); after.PasswordHash != u.PasswordHash || after.Active {
			t.Fatalf("the refused link changed the account: %+v", after)
		}
	})
}

// ---- audit ----

func testAudit(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	base := time.Date(2020, 3, 1, 12, 0, 0, 0, time.UTC)
	var events []*store.AuditEvent
	for i := 0; i < 9; i++ {
		e := &store.AuditEvent{
			Time:     base.Add(time.Duration(i) * time.Minute),
			Action:   []string{"login.succeeded", "login.failed", "role.granted"}[i%3],
			Outcome:  store.OutcomeSuccess,
			ActorID:  []string{"usr_a", "usr_b"}[i%2],
			TargetID: "usr_t" + strconv.Itoa(i%3),
			ClientID: "web",
			IP:       "192.0.2.1",
			Details:  map[string]string{"i": strconv.Itoa(i)},
		}
		if i == 4 {
			e.Time = events[3].Time // same time: order falls back to id
		}
		if err := s.AppendAudit(c, e); err != nil {
			t.Fatalf("AppendAudit: %v", err)
		}
		if !strings.HasPrefix(e.ID, sqlstore.AuditIDPrefix) {
			t.Fatalf("audit id %q", e.ID)
		}
		events = append(events, e)
	}
	now := &store.AuditEvent{Action: "key.rotated", Outcome: store.OutcomeSuccess}
	before := time.Now().Add(-time.Second)
	if err := s.AppendAudit(c, now); err != nil {
		t.Fatalf("AppendAudit without time: %v", err)
	}
	if now.Time.Before(before) || now.Details == nil {
		t.Fatalf("AppendAudit filled time %v details %v", now.Time, now.Details)
	}
	if err := s.AppendAudit(c, &store.AuditEvent{}); err == nil {
		t.Fatalf("AppendAudit without action: no error")
	}

	list := func(f store.AuditFilter) []store.AuditEvent {
		t.Helper()
		var out []store.AuditEvent
		for pages := 0; ; pages++ {
			p, err := s.ListAudit(c, f)
			if err != nil {
				t.Fatalf("ListAudit(%+v): %v", f, err)
			}
			out = append(out, p.Items...)
			if p.NextCursor == "" {
				return out
			}
			if pages > 100 {
				t.Fatalf("ListAudit never ends")
			}
			f.Cursor = p.NextCursor
		}
	}
	all := list(store.AuditFilter{Limit: 2})
	if len(all) != 10 || all[0].ID != now.ID {
		t.Fatalf("ListAudit: %d events, first %s; want 10, newest first", len(all), all[0].ID)
	}
	for i := 1; i < len(all); i++ {
		if all[i].Time.After(all[i-1].Time) || (all[i].Time.Equal(all[i-1].Time) && all[i].ID > all[i-1].ID) {
			t.Fatalf("audit not newest first at %d", i)
		}
	}
	got := all[len(all)-1]
	e0 := events[0]
	if got.ID != e0.ID || !got.Time.Equal(e0.Time) || got.Action != e0.Action || got.Outcome != e0.Outcome ||
		got.ActorID != e0.ActorID || got.TargetID != e0.TargetID || got.ClientID != e0.ClientID ||
		got.IP != e0.IP || !reflect.DeepEqual(got.Details, e0.Details) {
		t.Fatalf("oldest event %+v, want %+v", got, *e0)
	}
	ids := func(es []store.AuditEvent) []string {
		var out []string
		for _, e := range es {
			out = append(out, e.Details["i"])
		}
		sort.Strings(out)
		return out
	}
	for _, tc := range []struct {
		name string
		f    store.AuditFilter
		want []string
	}{
		{"ok/action", store.AuditFilter{Action: "login.failed"}, []string{"1", "4", "7"}},
		{"ok/actor", store.AuditFilter{ActorID: "usr_b"}, []string{"1", "3", "5", "7"}},
		{"ok/target", store.AuditFilter{TargetID: "usr_t2"}, []string{"2", "5", "8"}},
		{"ok/since_inclusive", store.AuditFilter{Since: base.Add(7 * time.Minute), Until: base.Add(time.Hour)}, []string{"7", "8"}},
		{"ok/until_exclusive", store.AuditFilter{Until: base.Add(2 * time.Minute)}, []string{"0", "1"}},
		{"ok/combined", store.AuditFilter{ActorID: "usr_a", Action: "login.succeeded", Limit: 1}, []string{"0", "6"}},
		{"ok/none", store.AuditFilter{Action: "user.deleted"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ids(list(tc.f)); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ListAudit(%+v) = %v, want %v", tc.f, got, tc.want)
			}
		})
	}
	_, err := s.ListAudit(c, store.AuditFilter{Cursor: "%%%"})
	wantErr(t, "ListAudit bad cursor", err, sqlstore.ErrInvalidCursor)
}

// requestTexts are a request's IP address and User-Agent as a client may
// send them, no backend able to store some as they are (PostgreSQL refuses
// invalid UTF-8 and NUL), and as every backend keeps them
// (store.CleanRequestMeta).
var requestTexts = []struct{ name, ip, ua, wantIP, wantUA string }{
	{"plain", "192.0.2.1", "Mozilla/5.0 (test) é", "192.0.2.1", "Mozilla/5.0 (test) é"},
	{"not_utf8", "\xff", "\xff", "\uFFFD", "\uFFFD"},
	{"nul_and_controls", "192.0.2.1\x00", "a\x00b\tc\nd\u0085", "192.0.2.1", "abcd"},
	{"cut_through_a_character", "192.0.2.1", strings.Repeat("a", store.MaxUserAgent-1) + "é", "192.0.2.1",
		strings.Repeat("a", store.MaxUserAgent-1)},
}

// testAuditRequestText: an event's IP address and User-Agent never fail
// its write, by AppendAudit or RecordLogin: the event is stored, with them
// as store.CleanRequestMeta makes them. The server's audit writes go on
// when they fail, so an event refused for its User-Agent was an event lost.
func testAuditRequestText(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	u := mustCreateUser(t, s, newUser("kim@example.com"))
	for _, tc := range requestTexts {
		t.Run(tc.name, func(t *testing.T) {
			for _, write := range []struct {
				action string
				put    func(context.Context, *store.AuditEvent) error
			}{{"login.failed", s.AppendAudit}, {"login.succeeded", s.RecordLogin}} {
				e := &store.AuditEvent{Action: write.action, Outcome: store.OutcomeSuccess, ActorID: u.ID, TargetID: u.ID,
					IP: tc.ip, UserAgent: tc.ua}
				if err := write.put(c, e); err != nil {
					t.Fatalf("%s with IP %q, User-Agent %q: %v", write.action, tc.ip, tc.ua, err)
				}
				page, err := s.ListAudit(c, store.AuditFilter{Action: write.action, TargetID: u.ID, Limit: 1})
				if err != nil || len(page.Items) != 1 || page.Items[0].ID != e.ID {
					t.Fatalf("ListAudit: %+v, %v; want the %s just stored", page.Items, err, write.action)
				}
				if got := page.Items[0]; got.IP != tc.wantIP || got.UserAgent != tc.wantUA {
					t.Fatalf("%s stored IP %q, User-Agent %q; want %q, %q", write.action, got.IP, got.UserAgent, tc.wantIP, tc.wantUA)
				}
			}
		})
	}
}

// testAuditDetailsCapped: each detail of an event is stored as
// store.CleanDetails makes it (CleanText, to store.MaxAuditDetail bytes),
// by AppendAudit and RecordLogin alike, so no request makes one row hold
// more than that a detail, whatever text it carries into a detail.
func testAuditDetailsCapped(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	u := mustCreateUser(t, s, newUser("kit@example.com"))
	in := map[string]string{"long": strings.Repeat("a", 16<<10), "controls": "a\x00b\nc", "plain": "corp"}
	want := map[string]string{"long": strings.Repeat("a", store.MaxAuditDetail), "controls": "abc", "plain": "corp"}
	for _, write := range []struct {
		action string
		put    func(context.Context, *store.AuditEvent) error
	}{{"login.failed", s.AppendAudit}, {"login.succeeded", s.RecordLogin}} {
		e := &store.AuditEvent{Action: write.action, Outcome: store.OutcomeFailure, TargetID: u.ID, Details: maps.Clone(in)}
		if err := write.put(c, e); err != nil {
			t.Fatalf("%s: %v", write.action, err)
		}
		page, err := s.ListAudit(c, store.AuditFilter{Action: write.action, TargetID: u.ID, Limit: 1})
		if err != nil || len(page.Items) != 1 {
			t.Fatalf("ListAudit: %+v, %v", page.Items, err)
		}
		if got := page.Items[0].Details; !maps.Equal(got, want) {
			t.Fatalf("%s stored details of %d, %q, %q; want %d bytes, %q, %q", write.action,
				len(got["long"]), got["controls"], got["plain"], store.MaxAuditDetail, want["controls"], want["plain"])
		}
	}
}

func testAuditScrub(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	mk := func(actor, target string) *store.AuditEvent {
		e := &store.AuditEvent{Action: "x", Outcome: store.OutcomeFailure, ActorID: actor, TargetID: target,
			IP: "203.0.113.9", UserAgent: "ua", Details: map[string]string{"email": "q@example.com"}}
		if err := s.AppendAudit(c, e); err != nil {
			t.Fatalf("AppendAudit: %v", err)
		}
		return e
	}
	byUser, anonOnUser, adminOnUser, unrelated := mk("usr_q", ""), mk("", "usr_q"), mk("usr_admin", "usr_q"), mk("usr_admin", "usr_z")
	if err := s.ScrubAuditPII(c, "usr_q"); err != nil {
		t.Fatalf("ScrubAuditPII: %v", err)
	}
	p, err := s.ListAudit(c, store.AuditFilter{})
	if err != nil || len(p.Items) != 4 {
		t.Fatalf("ListAudit: %d, %v", len(p.Items), err)
	}
	for _, e := range p.Items {
		scrubbedIP := e.IP == "" && e.UserAgent == ""
		switch e.ID {
		case byUser.ID, anonOnUser.ID:
			if !scrubbedIP || len(e.Details) != 0 || e.Action != "x" {
				t.Fatalf("event of the user not scrubbed: %+v", e)
			}
		case adminOnUser.ID:
			if scrubbedIP || len(e.Details) != 0 || e.TargetID != "usr_q" {
				t.Fatalf("admin's event on the user: %+v", e)
			}
		case unrelated.ID:
			if scrubbedIP || e.Details["email"] != "q@example.com" {
				t.Fatalf("unrelated event scrubbed: %+v", e)
			}
		}
	}
}

// ---- concurrency ----

const relRacers = 12

// race runs fn in n goroutines released at once and returns their errors.
func race(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	var start, done sync.WaitGroup
	start.Add(1)
	for i := 0; i < n; i++ {
		done.Add(1)
		go func(i int) {
			defer done.Done()
			start.Wait()
			errs[i] = fn(i)
		}(i)
	}
	start.Done()
	done.Wait()
	return errs
}

// oneWinner wants exactly one nil error and every other error to be want.
func oneWinner(t *testing.T, what string, errs []error, want error) int {
	t.Helper()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("%s: racers %d and %d both won", what, winner, i)
			}
			winner = i
		case !errors.Is(err, want):
			t.Fatalf("%s: racer %d: %v, want %v", what, i, err, want)
		}
	}
	if winner < 0 {
		t.Fatalf("%s: nobody won", what)
	}
	return winner
}

func testRaceUserUpdate(t *testing.T, s *sqlstore.Store) {
	u := mustCreateUser(t, s, newUser("race@example.com"))
	c := rctx(t)
	if _, err := s.UpdateUser(c, u.ID, func(x *store.User) error { x.Name = "0"; return nil }); err != nil {
		t.Fatalf("UpdateUser: %v", err)
	}
	errs := race(relRacers, func(int) error {
		_, err := s.UpdateUser(c, u.ID, func(x *store.User) error {
			n, err := strconv.Atoi(x.Name)
			if err != nil {
				return err
			}
			x.Name = strconv.Itoa(n + 1)
			return nil
		})
		return err
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("racer %d: %v", i, err)
		}
	}
	got, _ := s.GetUser(c, u.ID)
	if got.Name != strconv.Itoa(relRacers) {
		t.Fatalf("after %d concurrent increments the counter is %s: an update was lost", relRacers, got.Name)
	}
}

func testRaceInviteAccept(t *testing.T, s *sqlstore.Store) {
	syncDefaultRoles(t, s)
	c := rctx(t)
	now := time.Now().UTC()
	inv, hash := mustInvite(t, s, "once@example.com", "user", now.Add(time.Hour))
	users := make([]*store.User, relRacers)
	errs := race(relRacers, func(i int) error {
		users[i] = &store.User{PasswordHash: "$racer" + strconv.Itoa(i)}
		_, err := s.AcceptInvite(c, hash, now, users[i])
		return err
	})
	w := oneWinner(t, "AcceptInvite", errs, store.ErrTokenUsed)
	got, err := s.GetInvite(c, inv.ID)
	if err != nil || got.Status != store.InviteAccepted || got.UserID != users[w].ID {
		t.Fatalf("invite after the race: %+v, %v; want accepted by %s", got, err, users[w].ID)
	}
	stored, err := s.GetUserByEmail(c, "once@example.com")
	if err != nil || stored.PasswordHash != users[w].PasswordHash {
		t.Fatalf("user after the race: %+v, %v", stored, err)
	}
	if n, _ := s.CountUsersWithRole(c, "user"); n != 1 {
		t.Fatalf("%d users created by one invite", n)
	}
}

func testRaceUserToken(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	now := time.Now().UTC()
	u := mustCreateUser(t, s, newUser("tok@example.com"))
	hash := mustUserToken(t, s, u.ID, store.PurposePasswordReset, now.Add(time.Hour))
	errs := race(relRacers, func(i int) error {
		_, err := s.ConsumeUserToken(c, store.PurposePasswordReset, hash, now, func(x *store.User) error {
			x.PasswordHash = "$racer" + strconv.Itoa(i)
			return nil
		})
		return err
	})
	w := oneWinner(t, "ConsumeUserToken", errs, store.ErrTokenUsed)
	if got, _ := s.GetUser(c, u.ID); got.PasswordHash != "$racer"+strconv.Itoa(w) {
		t.Fatalf("password %q, want the winner's", got.PasswordHash)
	}
}

// testRaceUserTokensSent: links issued and sent at once for one user (each
// CreateUserToken then SupersedeUserTokens, as the service does once the
// email went out) leave exactly one live, whatever order the writes ran in.
func testRaceUserTokensSent(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	now := time.Now().UTC()
	u := mustCreateUser(t, s, newUser("links@example.com"))
	hashes := make([][]byte, relRacers)
	for i := range hashes {
		_, hashes[i] = secret()
	}
	errs := race(relRacers, func(i int) error {
		tok := store.UserToken{UserID: u.ID, Purpose: store.PurposePasswordReset, TokenHash: hashes[i], ExpiresAt: now.Add(time.Hour)}
		if err := s.CreateUserToken(c, &tok); err != nil {
			return err
		}
		return s.SupersedeUserTokens(c, tok)
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("racer %d: %v", i, err)
		}
	}
	live := 0
	for _, h := range hashes { // apply changes nothing, so voids nothing
		_, err := s.ConsumeUserToken(c, store.PurposePasswordReset, h, now, nil)
		switch {
		case err == nil:
			live++
		case !errors.Is(err, store.ErrTokenUsed):
			t.Fatalf("ConsumeUserToken: %v, want nil or store.ErrTokenUsed", err)
		}
	}
	if live != 1 {
		t.Fatalf("%d of %d links sent at once were live, want exactly 1", live, relRacers)
	}
}

func testRaceFirstKey(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	base := time.Now().UTC()
	keys := make([]store.SigningKey, relRacers)
	for i := range keys {
		keys[i] = newKey(store.KeyActive, base)
	}
	errs := race(relRacers, func(i int) error { return s.CreateSigningKey(c, keys[i]) })
	w := oneWinner(t, "first active key", errs, store.ErrConflict)
	got, err := s.ListSigningKeys(c)
	if err != nil || len(got) != 1 || got[0].KID != keys[w].KID {
		t.Fatalf("keys after the race: %+v, %v; want only the winner's", got, err)
	}
}

func testRaceRotation(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	base := time.Now().UTC().Truncate(time.Second)
	for _, k := range []store.SigningKey{newKey(store.KeyActive, base), newKey(store.KeyNext, base)} {
		if err := s.CreateSigningKey(c, k); err != nil {
			t.Fatalf("CreateSigningKey: %v", err)
		}
	}
	read, err := s.ListSigningKeys(c)
	if err != nil {
		t.Fatalf("ListSigningKeys: %v", err)
	}
	at := base.Add(time.Hour)
	retired, promoted := read[0], read[1]
	retired.State, retired.RetiredAt = store.KeyRetired, &at
	promoted.State, promoted.ActivatedAt = store.KeyActive, &at
	nexts := make([]store.SigningKey, relRacers)
	for i := range nexts {
		nexts[i] = newKey(store.KeyNext, at)
	}
	errs := race(relRacers, func(i int) error {
		return s.ApplySigningKeyChanges(c, []store.SigningKey{retired, promoted}, []store.SigningKey{nexts[i]})
	})
	w := oneWinner(t, "rotation", errs, store.ErrConflict)
	after := keysByKID(t, s)
	if len(after) != 3 || after[nexts[w].KID].State != store.KeyNext ||
		after[read[0].KID].State != store.KeyRetired || after[read[1].KID].State != store.KeyActive ||
		after[read[0].KID].Version != 2 || after[read[1].KID].Version != 2 {
		t.Fatalf("keys after the race: %+v", after)
	}
	// Racing updates of one key from one version, which no unique index
	// separates: the version compare-and-swap alone lets exactly one win.
	old := after[read[0].KID]
	untils := make([]time.Time, relRacers)
	errs = race(relRacers, func(i int) error {
		k := old
		untils[i] = at.Add(time.Duration(i+1) * time.Hour)
		k.PublishedUntil = &untils[i]
		return s.ApplySigningKeyChanges(c, []store.SigningKey{k}, nil)
	})
	w = oneWinner(t, "update of one key", errs, store.ErrConflict)
	got := keysByKID(t, s)[old.KID]
	if got.Version != old.Version+1 || got.PublishedUntil == nil || !got.PublishedUntil.Equal(untils[w]) {
		t.Fatalf("key after the update race: %+v; want version %d and the winner's PublishedUntil %v", got, old.Version+1, untils[w])
	}
}

// testInviteReplaceRefused: CreateInvite asks mayReplace about each pending
// invite the new one would supersede; a refusal writes nothing (the pending
// invite stays pending, no new invite exists), an approval lets
// SupersedeInvites cancel it.
func testInviteReplaceRefused(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	exp := time.Now().Add(time.Hour)
	pending, _ := mustInvite(t, s, "Kim@example.com", "admin", exp)
	refusal := errors.New("not yours to cancel")
	var asked []store.Invite
	_, hash := secret()
	inv := &store.Invite{Email: "kim@EXAMPLE.com", Role: "user", TokenHash: hash, InvitedBy: "usr_lower", ExpiresAt: exp}
	err := s.CreateInvite(c, inv, func(p []store.Invite) error { asked = p; return refusal })
	wantErr(t, "CreateInvite refused", err, refusal)
	if len(asked) != 1 || asked[0].ID != pending.ID || asked[0].Role != "admin" {
		t.Fatalf("mayReplace saw %+v, want the pending admin invite", asked)
	}
	if got, _ := s.GetInvite(c, pending.ID); got.Status != store.InvitePending {
		t.Fatalf("refused replacement changed the pending invite: %+v", got)
	}
	if p, _ := s.ListInvites(c, "", 10); len(p.Items) != 1 {
		t.Fatalf("refused replacement stored an invite: %+v", p.Items)
	}
	if err := s.CreateInvite(c, inv, func(p []store.Invite) error { asked = p; return nil }); err != nil {
		t.Fatalf("CreateInvite approved: %v", err)
	}
	if _, err := s.SupersedeInvites(c, *inv, inviteIDs(asked)); err != nil {
		t.Fatalf("SupersedeInvites: %v", err)
	}
	if got, _ := s.GetInvite(c, pending.ID); got.Status != store.InviteSuperseded {
		t.Fatalf("approved replacement left the older invite %s", got.Status)
	}
}

// testRaceInviteReplace: an invite whose mayReplace refuses to supersede a
// higher invite races with the creation of that higher invite, many times
// over. Whatever the order, the higher invite is never superseded by it:
// either it was seen and refused, or it was created meanwhile and left alone.
func testRaceInviteReplace(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	exp := time.Now().Add(time.Hour)
	refusal := errors.New("may not replace an admin invite")
	noAdmin := func(pending []store.Invite) error {
		for _, p := range pending {
			if p.Role == "admin" {
				return refusal
			}
		}
		return nil
	}
	for round := 0; round < 10; round++ {
		email := fmt.Sprintf("race%d@example.com", round)
		high := &store.Invite{Email: email, Role: "admin", InvitedBy: "usr_high", ExpiresAt: exp}
		_, high.TokenHash = secret()
		errs := race(2, func(i int) error {
			if i == 0 {
				return s.CreateInvite(c, high, nil)
			}
			low := &store.Invite{Email: email, Role: "user", InvitedBy: "usr_low", ExpiresAt: exp}
			_, low.TokenHash = secret()
			var approved []string
			if err := s.CreateInvite(c, low, func(p []store.Invite) error {
				approved = inviteIDs(p)
				return noAdmin(p)
			}); err != nil {
				return err
			}
			_, err := s.SupersedeInvites(c, *low, approved) // its email went out
			return err
		})
		if errs[0] != nil {
			t.Fatalf("round %d: the admin invite: %v", round, errs[0])
		}
		if errs[1] != nil && !errors.Is(errs[1], refusal) {
			t.Fatalf("round %d: the user invite: %v", round, errs[1])
		}
		if got, err := s.GetInvite(c, high.ID); err != nil || got.Status != store.InvitePending {
			t.Fatalf("round %d: the admin invite is %+v, %v; a refused replacement superseded it", round, got, err)
		}
	}
}

package storetest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
)

// RunMFAFactorsTests runs the conformance suite of store.MFAFactors on the
// relational store. open must return a store on a fresh, empty (unmigrated)
// database for every call; each subtest migrates it.
//
// Besides the behaviour documented on store.MFAFactors, the suite pins that
// of concurrent uses of one TOTP step, one recovery code or one WebAuthn
// sign count, exactly one wins, and that deleting a user removes their
// factors.
func RunMFAFactorsTests(t *testing.T, open func(t *testing.T) *sqlstore.Store) {
	t.Helper()
	tests := []struct {
		name string
		run  func(t *testing.T, s *sqlstore.Store)
	}{
		{"ok/totp_enrol_confirm_use", testMFATOTPLifecycle},
		{"fail/totp_confirm", testMFATOTPConfirmFail},
		{"fail/totp_step_replayed_or_old", testMFATOTPStepFail},
		{"ok/totp_reenrol_keeps_confirmed_secret", testMFATOTPReenrol},
		{"fail/totp_unknown_user", testMFATOTPUnknownUser},
		{"ok/recovery_codes", testMFARecoveryCodes},
		{"ok/webauthn_credentials", testMFAWebAuthn},
		{"fail/webauthn_credentials", testMFAWebAuthnFail},
		{"ok/delete_all_factors_and_user", testMFADeleteAll},
		{"ok/summary_follows_the_factors", testMFASummary},
		{"ok/removing_the_last_factor_drops_the_codes", testMFARemoveLastFactor},
		{"race/removing_the_last_two_factors_drops_the_codes", testMFARaceRemoveLastTwoFactors},
		{"ok/first_recovery_codes", testMFAFirstRecoveryCodes},
		{"race/first_recovery_codes_once", testMFARaceFirstRecoveryCodes},
		{"race/totp_step_once", testMFARaceTOTPStep},
		{"race/totp_confirm_once", testMFARaceTOTPConfirm},
		{"race/recovery_code_once", testMFARaceRecoveryCode},
		{"race/webauthn_count_once", testMFARaceWebAuthn},
		{"ok/totp_seals_found_by_prefix", testMFATOTPSealsOutside},
		{"ok/totp_reseal_swaps_only_what_was_read", testMFATOTPReseal},
		{"fail/totp_seals_prefixes_of_two_lengths", testMFATOTPSealsBadPrefixes},
	}
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

func mfaTime() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

func codeHashes(prefix string, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		h := sha256.Sum256(fmt.Appendf(nil, "%s-%d", prefix, i))
		out[i] = h[:]
	}
	return out
}

// enrolled creates a user with a confirmed TOTP secret at step 100 and ten
// recovery codes (codeHashes("rc", 10)).
func enrolled(t *testing.T, s *sqlstore.Store, email string) store.User {
	t.Helper()
	c := rctx(t)
	u := mustCreateUser(t, s, newUser(email))
	if err := s.PutPendingTOTP(c, u.ID, []byte("sealed-1"), mfaTime()); err != nil {
		t.Fatalf("PutPendingTOTP: %v", err)
	}
	if err := s.ConfirmTOTP(c, u.ID, []byte("sealed-1"), 100, codeHashes("rc", 10), mfaTime()); err != nil {
		t.Fatalf("ConfirmTOTP: %v", err)
	}
	return u
}

func testMFATOTPLifecycle(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	u := mustCreateUser(t, s, newUser("totp@example.com"))
	_, err := s.GetTOTP(c, u.ID)
	wantErr(t, "GetTOTP before enrolment", err, store.ErrNotFound)
	wantErr(t, "UseTOTPStep before enrolment", s.UseTOTPStep(c, u.ID, 5, mfaTime()), store.ErrNotFound)

	t0 := mfaTime()
	if err := s.PutPendingTOTP(c, u.ID, []byte("sealed-a"), t0); err != nil {
		t.Fatalf("PutPendingTOTP: %v", err)
	}
	f, err := s.GetTOTP(c, u.ID)
	if err != nil || f.Confirmed() || !bytes.Equal(f.PendingSealed, []byte("sealed-a")) || f.PendingCreatedAt == nil ||
		!f.PendingCreatedAt.Equal(t0) || f.PendingCreatedAt.Location() != time.UTC || f.LastStep != 0 {
		t.Fatalf("pending factor %+v, %v", f, err)
	}
	// A pending enrolment is no factor: no step can be used with it.
	wantErr(t, "UseTOTPStep with only a pending secret", s.UseTOTPStep(c, u.ID, 5, mfaTime()), store.ErrNotFound)
	// A second enrolment replaces the first.
	if err := s.PutPendingTOTP(c, u.ID, []byte("sealed-b"), t0); err != nil {
		t.Fatalf("PutPendingTOTP again: %v", err)
	}
	wantErr(t, "ConfirmTOTP of a replaced enrolment",
		s.ConfirmTOTP(c, u.ID, []byte("sealed-a"), 10, codeHashes("x", 10), mfaTime()), store.ErrConflict)

	t1 := mfaTime()
	if err := s.ConfirmTOTP(c, u.ID, []byte("sealed-b"), 10, codeHashes("x", 10), t1); err != nil {
		t.Fatalf("ConfirmTOTP: %v", err)
	}
	f, err = s.GetTOTP(c, u.ID)
	if err != nil || !f.Confirmed() || !bytes.Equal(f.SecretSealed, []byte("sealed-b")) || f.PendingSealed != nil ||
		f.PendingCreatedAt != nil || f.ConfirmedAt == nil || !f.ConfirmedAt.Equal(t1) || f.LastStep != 10 {
		t.Fatalf("confirmed factor %+v, %v", f, err)
	}
	if n, err := s.RecoveryCodesLeft(c, u.ID); err != nil || n != 10 {
		t.Fatalf("RecoveryCodesLeft after confirmation = %d, %v; want 10", n, err)
	}
	// The confirming step is used up.
	wantErr(t, "UseTOTPStep of the confirming step", s.UseTOTPStep(c, u.ID, 10, mfaTime()), store.ErrConflict)
	if err := s.UseTOTPStep(c, u.ID, 11, mfaTime()); err != nil {
		t.Fatalf("UseTOTPStep(11): %v", err)
	}
	if f, _ := s.GetTOTP(c, u.ID); f.LastStep != 11 {
		t.Fatalf("LastStep %d, want 11", f.LastStep)
	}
	if err := s.DeleteTOTP(c, u.ID); err != nil {
		t.Fatalf("DeleteTOTP: %v", err)
	}
	_, err = s.GetTOTP(c, u.ID)
	wantErr(t, "GetTOTP after DeleteTOTP", err, store.ErrNotFound)
	wantErr(t, "DeleteTOTP twice", s.DeleteTOTP(c, u.ID), store.ErrNotFound)
}

func testMFATOTPConfirmFail(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	u := mustCreateUser(t, s, newUser("confirm@example.com"))
	wantErr(t, "ConfirmTOTP without enrolment",
		s.ConfirmTOTP(c, u.ID, []byte("sealed"), 1, nil, mfaTime()), store.ErrNotFound)
	v := enrolled(t, s, "confirm2@example.com")
	wantErr(t, "ConfirmTOTP with nothing pending",
		s.ConfirmTOTP(c, v.ID, []byte("sealed-1"), 200, nil, mfaTime()), store.ErrNotFound)
	// A new enrolment cannot be confirmed with a step at or below LastStep.
	if err := s.PutPendingTOTP(c, v.ID, []byte("sealed-2"), mfaTime()); err != nil {
		t.Fatalf("PutPendingTOTP: %v", err)
	}
	for _, step := range []int64{99, 100} {
		wantErr(t, fmt.Sprintf("ConfirmTOTP at step %d (LastStep 100)", step),
			s.ConfirmTOTP(c, v.ID, []byte("sealed-2"), step, codeHashes("new", 10), mfaTime()), store.ErrConflict)
	}
	// Refused confirmations changed nothing: old secret, old codes.
	f, _ := s.GetTOTP(c, v.ID)
	if !bytes.Equal(f.SecretSealed, []byte("sealed-1")) || !bytes.Equal(f.PendingSealed, []byte("sealed-2")) || f.LastStep != 100 {
		t.Fatalf("after refused confirmations: %+v", f)
	}
	if _, err := s.UseRecoveryCode(c, v.ID, codeHashes("new", 10)[0], mfaTime()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused confirmation's recovery code works: %v", err)
	}
}

func testMFATOTPStepFail(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	u := enrolled(t, s, "step@example.com")
	if err := s.UseTOTPStep(c, u.ID, 105, mfaTime()); err != nil {
		t.Fatalf("UseTOTPStep(105): %v", err)
	}
	for _, step := range []int64{105, 104, 100, 1} {
		wantErr(t, fmt.Sprintf("UseTOTPStep(%d) after 105", step), s.UseTOTPStep(c, u.ID, step, mfaTime()), store.ErrConflict)
	}
	other := mustCreateUser(t, s, newUser("other@example.com"))
	wantErr(t, "UseTOTPStep of a user without TOTP", s.UseTOTPStep(c, other.ID, 106, mfaTime()), store.ErrNotFound)
}

func testMFATOTPReenrol(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	u := enrolled(t, s, "reenrol@example.com")
	if err := s.PutPendingTOTP(c, u.ID, []byte("sealed-2"), mfaTime()); err != nil {
		t.Fatalf("PutPendingTOTP: %v", err)
	}
	f, _ := s.GetTOTP(c, u.ID)
	if !bytes.Equal(f.SecretSealed, []byte("sealed-1")) || f.LastStep != 100 {
		t.Fatalf("a pending enrolment changed the confirmed factor: %+v", f)
	}
	// The confirmed secret keeps working while the new one is pending.
	if err := s.UseTOTPStep(c, u.ID, 101, mfaTime()); err != nil {
		t.Fatalf("UseTOTPStep with a pending enrolment: %v", err)
	}
	if err := s.ConfirmTOTP(c, u.ID, []byte("sealed-2"), 102, codeHashes("new", 10), mfaTime()); err != nil {
		t.Fatalf("ConfirmTOTP: %v", err)
	}
	if _, err := s.UseRecoveryCode(c, u.ID, codeHashes("rc", 10)[0], mfaTime()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("an old recovery code works after re-enrolment: %v", err)
	}
	if left, err := s.UseRecoveryCode(c, u.ID, codeHashes("new", 10)[0], mfaTime()); err != nil || left != 9 {
		t.Fatalf("a new recovery code: %d left, %v", left, err)
	}
}

func testMFATOTPUnknownUser(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	wantErr(t, "PutPendingTOTP for an unknown user", s.PutPendingTOTP(c, "usr_nobody", []byte("x"), mfaTime()), store.ErrNotFound)
	wantErr(t, "ReplaceRecoveryCodes for an unknown user",
		s.ReplaceRecoveryCodes(c, "usr_nobody", codeHashes("x", 2), mfaTime()), store.ErrNotFound)
	wantErr(t, "AddWebAuthnCredential for an unknown user", s.AddWebAuthnCredential(c, store.WebAuthnCredential{
		ID: rid("cred"), UserID: "usr_nobody", Credential: []byte("{}")}), store.ErrNotFound)
}

func testMFARecoveryCodes(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	u := mustCreateUser(t, s, newUser("rc@example.com"))
	v := mustCreateUser(t, s, newUser("rc2@example.com"))
	if n, err := s.RecoveryCodesLeft(c, u.ID); err != nil || n != 0 {
		t.Fatalf("RecoveryCodesLeft without codes = %d, %v", n, err)
	}
	codes := codeHashes("one", 3)
	if err := s.ReplaceRecoveryCodes(c, u.ID, codes, mfaTime()); err != nil {
		t.Fatalf("ReplaceRecoveryCodes: %v", err)
	}
	if err := s.ReplaceRecoveryCodes(c, v.ID, codes, mfaTime()); err != nil {
		t.Fatalf("ReplaceRecoveryCodes for another user with the same hashes: %v", err)
	}
	for i, want := range []int{2, 1} {
		if left, err := s.UseRecoveryCode(c, u.ID, codes[i], mfaTime()); err != nil || left != want {
			t.Fatalf("UseRecoveryCode(%d) = %d, %v; want %d", i, left, err, want)
		}
		_, err := s.UseRecoveryCode(c, u.ID, codes[i], mfaTime())
		wantErr(t, fmt.Sprintf("UseRecoveryCode(%d) twice", i), err, store.ErrNotFound)
	}
	_, err := s.UseRecoveryCode(c, u.ID, codeHashes("other", 1)[0], mfaTime())
	wantErr(t, "UseRecoveryCode of an unknown code", err, store.ErrNotFound)
	// Another user's codes are theirs: using u's codes left v's intact.
	if n, _ := s.RecoveryCodesLeft(c, v.ID); n != 3 {
		t.Fatalf("the other user has %d codes left, want 3", n)
	}
	fresh := codeHashes("two", 10)
	if err := s.ReplaceRecoveryCodes(c, u.ID, fresh, mfaTime()); err != nil {
		t.Fatalf("ReplaceRecoveryCodes again: %v", err)
	}
	_, err = s.UseRecoveryCode(c, u.ID, codes[2], mfaTime())
	wantErr(t, "UseRecoveryCode of a replaced code", err, store.ErrNotFound)
	if n, err := s.RecoveryCodesLeft(c, u.ID); err != nil || n != 10 {
		t.Fatalf("RecoveryCodesLeft after replacing = %d, %v; want 10", n, err)
	}
	if err := s.ReplaceRecoveryCodes(c, u.ID, nil, mfaTime()); err != nil {
		t.Fatalf("ReplaceRecoveryCodes(nil): %v", err)
	}
	if n, _ := s.RecoveryCodesLeft(c, u.ID); n != 0 {
		t.Fatalf("RecoveryCodesLeft after clearing = %d", n)
	}
}

// testMFASummary walks one user through every kind of factor change and
// checks, at each step, that MFASummary says what the factors' own reads
// say, and that GetUserForLogin (the login's read, by email and by
// username, of a user with two roles: two joined rows) says the same, while
// another user's factors never count.
func testMFASummary(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	syncDefaultRoles(t, s)
	nu := newUser("summary@example.com", "admin", "user")
	nu.Username = "summary"
	u := mustCreateUser(t, s, nu)
	other := enrolled(t, s, "summary-other@example.com")
	if err := s.AddWebAuthnCredential(c, newCredential(other.ID, mfaTime())); err != nil {
		t.Fatalf("AddWebAuthnCredential (other user): %v", err)
	}
	var cred store.WebAuthnCredential
	steps := []struct {
		name   string
		change func() error
		want   store.MFASummary
	}{
		{"no_factor", func() error { return nil }, store.MFASummary{}},
		{"pending_totp_is_no_factor", func() error { return s.PutPendingTOTP(c, u.ID, []byte("sealed-s"), mfaTime()) },
			store.MFASummary{}},
		{"confirmed_totp_with_codes", func() error {
			return s.ConfirmTOTP(c, u.ID, []byte("sealed-s"), 10, codeHashes("sum", 10), mfaTime())
		}, store.MFASummary{TOTP: true, RecoveryCodesLeft: 10}},
		{"a_code_used", func() error {
			_, err := s.UseRecoveryCode(c, u.ID, codeHashes("sum", 10)[3], mfaTime())
			return err
		}, store.MFASummary{TOTP: true, RecoveryCodesLeft: 9}},
		{"a_passkey", func() error {
			cred = newCredential(u.ID, mfaTime())
			return s.AddWebAuthnCredential(c, cred)
		}, store.MFASummary{TOTP: true, WebAuthnCredentials: 1, RecoveryCodesLeft: 9}},
		{"a_second_passkey", func() error { return s.AddWebAuthnCredential(c, newCredential(u.ID, mfaTime())) },
			store.MFASummary{TOTP: true, WebAuthnCredentials: 2, RecoveryCodesLeft: 9}},
		{"totp_removed", func() error { return s.DeleteTOTP(c, u.ID) },
			store.MFASummary{WebAuthnCredentials: 2, RecoveryCodesLeft: 9}},
		{"a_passkey_removed", func() error { return s.DeleteWebAuthnCredential(c, u.ID, cred.ID) },
			store.MFASummary{WebAuthnCredentials: 1, RecoveryCodesLeft: 9}},
		{"all_removed", func() error { return s.DeleteAllFactors(c, u.ID) }, store.MFASummary{}},
	}
	for _, st := range steps {
		if err := st.change(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		got, err := s.MFASummary(c, u.ID)
		if err != nil || got != st.want {
			t.Fatalf("%s: MFASummary = %+v, %v; want %+v", st.name, got, err, st.want)
		}
		// The summary agrees with the factors' own reads.
		f, err := s.GetTOTP(c, u.ID)
		confirmed := err == nil && f.Confirmed()
		creds, _ := s.ListWebAuthnCredentials(c, u.ID)
		left, _ := s.RecoveryCodesLeft(c, u.ID)
		if got.TOTP != confirmed || got.WebAuthnCredentials != len(creds) || got.RecoveryCodesLeft != left {
			t.Fatalf("%s: MFASummary %+v, but the reads say totp %v, %d credentials, %d codes", st.name, got, confirmed, len(creds), left)
		}
		for _, login := range []string{"SUMMARY@example.com", "summary"} {
			lu, ls, err := s.GetUserForLogin(c, login)
			if err != nil || lu.ID != u.ID || !reflect.DeepEqual(lu.Roles, []string{"admin", "user"}) || ls != got {
				t.Fatalf("%s: GetUserForLogin(%q) = %s %v, %+v, %v; want %s [admin user], %+v", st.name, login, lu.ID, lu.Roles, ls, err, u.ID, got)
			}
		}
	}
	for _, login := range []string{"", "absent@example.com", "absent"} {
		if _, _, err := s.GetUserForLogin(c, login); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetUserForLogin(%q): %v, want ErrNotFound", login, err)
		}
	}
	if _, ls, err := s.GetUserForLogin(c, "summary-other@example.com"); err != nil || ls != (store.MFASummary{TOTP: true, WebAuthnCredentials: 1, RecoveryCodesLeft: 10}) {
		t.Fatalf("GetUserForLogin of the other user: %+v, %v", ls, err)
	}
	if got, err := s.MFASummary(c, "usr_unknown"); err != nil || got != (store.MFASummary{}) {
		t.Fatalf("MFASummary of an unknown user = %+v, %v; want the zero summary", got, err)
	}
	if got, err := s.MFASummary(c, other.ID); err != nil || got != (store.MFASummary{TOTP: true, WebAuthnCredentials: 1, RecoveryCodesLeft: 10}) {
		t.Fatalf("MFASummary of the other user = %+v, %v", got, err)
	}
}

func newCredential(userID string, created time.Time) store.WebAuthnCredential {
	return store.WebAuthnCredential{ID: rid("cred_"), UserID: userID, Name: "Key", Credential: []byte(`{"v":0}`), CreatedAt: created}
}

func testMFAWebAuthn(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	u := mustCreateUser(t, s, newUser("wa@example.com"))
	base := mfaTime()
	a, b := newCredential(u.ID, base.Add(time.Second)), newCredential(u.ID, base)
	a.SignCount = 7
	for _, cr := range []store.WebAuthnCredential{a, b} {
		if err := s.AddWebAuthnCredential(c, cr); err != nil {
			t.Fatalf("AddWebAuthnCredential: %v", err)
		}
	}
	got, err := s.ListWebAuthnCredentials(c, u.ID)
	if err != nil || len(got) != 2 || got[0].ID != b.ID || got[1].ID != a.ID || got[1].SignCount != 7 ||
		!got[0].CreatedAt.Equal(base) || got[0].CreatedAt.Location() != time.UTC || got[0].LastUsedAt != nil {
		t.Fatalf("ListWebAuthnCredentials = %+v, %v; want b then a", got, err)
	}
	at := mfaTime()
	if err := s.UseWebAuthnCredential(c, u.ID, a.ID, 7, 8, []byte(`{"v":8}`), at); err != nil {
		t.Fatalf("UseWebAuthnCredential: %v", err)
	}
	// Counters beyond 2^31 survive the round trip.
	if err := s.UseWebAuthnCredential(c, u.ID, a.ID, 8, 1<<32-1, []byte(`{"v":"max"}`), at); err != nil {
		t.Fatalf("UseWebAuthnCredential to 2^32-1: %v", err)
	}
	got, _ = s.ListWebAuthnCredentials(c, u.ID)
	if got[1].SignCount != 1<<32-1 || string(got[1].Credential) != `{"v":"max"}` || got[1].LastUsedAt == nil || !got[1].LastUsedAt.Equal(at) {
		t.Fatalf("after use: %+v", got[1])
	}
	if err := s.DeleteWebAuthnCredential(c, u.ID, b.ID); err != nil {
		t.Fatalf("DeleteWebAuthnCredential: %v", err)
	}
	if got, _ := s.ListWebAuthnCredentials(c, u.ID); len(got) != 1 || got[0].ID != a.ID {
		t.Fatalf("after delete: %+v", got)
	}
	if got, err := s.ListWebAuthnCredentials(c, "usr_nobody"); err != nil || len(got) != 0 {
		t.Fatalf("ListWebAuthnCredentials of nobody = %+v, %v", got, err)
	}
}

func testMFAWebAuthnFail(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	u := mustCreateUser(t, s, newUser("waf@example.com"))
	v := mustCreateUser(t, s, newUser("waf2@example.com"))
	a := newCredential(u.ID, mfaTime())
	a.SignCount = 5
	if err := s.AddWebAuthnCredential(c, a); err != nil {
		t.Fatalf("AddWebAuthnCredential: %v", err)
	}
	dup := a
	dup.UserID = v.ID
	wantErr(t, "AddWebAuthnCredential of a registered id (another user)", s.AddWebAuthnCredential(c, dup), store.ErrAlreadyExists)
	wantErr(t, "UseWebAuthnCredential with a stale count",
		s.UseWebAuthnCredential(c, u.ID, a.ID, 4, 6, []byte("{}"), mfaTime()), store.ErrConflict)
	wantErr(t, "UseWebAuthnCredential by another user",
		s.UseWebAuthnCredential(c, v.ID, a.ID, 5, 6, []byte("{}"), mfaTime()), store.ErrNotFound)
	wantErr(t, "UseWebAuthnCredential of an unknown id",
		s.UseWebAuthnCredential(c, u.ID, "nope", 5, 6, []byte("{}"), mfaTime()), store.ErrNotFound)
	wantErr(t, "DeleteWebAuthnCredential by another user", s.DeleteWebAuthnCredential(c, v.ID, a.ID), store.ErrNotFound)
	if got, _ := s.ListWebAuthnCredentials(c, u.ID); len(got) != 1 || got[0].SignCount != 5 || string(got[0].Credential) != `{"v":0}` {
		t.Fatalf("refused calls changed the credential: %+v", got)
	}
}

func testMFADeleteAll(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	u := enrolled(t, s, "all@example.com")
	keep := enrolled(t, s, "keep@example.com")
	for _, id := range []string{u.ID, keep.ID} {
		if err := s.AddWebAuthnCredential(c, newCredential(id, mfaTime())); err != nil {
			t.Fatalf("AddWebAuthnCredential: %v", err)
		}
	}
	if err := s.DeleteAllFactors(c, u.ID); err != nil {
		t.Fatalf("DeleteAllFactors: %v", err)
	}
	assertNoFactors(t, s, u.ID)
	if err := s.DeleteAllFactors(c, u.ID); err != nil {
		t.Fatalf("DeleteAllFactors without factors: %v", err)
	}
	if _, err := s.GetTOTP(c, keep.ID); err != nil {
		t.Fatalf("another user's TOTP is gone: %v", err)
	}
	if n, _ := s.RecoveryCodesLeft(c, keep.ID); n != 10 {
		t.Fatalf("another user's codes: %d left", n)
	}
	if err := s.DeleteUser(c, keep.ID); err != nil {
		t.Fatalf("DeleteUser: %v", err)
	}
	assertNoFactors(t, s, keep.ID)
}

func assertNoFactors(t *testing.T, s *sqlstore.Store, userID string) {
	t.Helper()
	c := rctx(t)
	_, err := s.GetTOTP(c, userID)
	wantErr(t, "GetTOTP", err, store.ErrNotFound)
	for _, table := range []string{"mfa_totp", "mfa_recovery_codes", "webauthn_credentials"} {
		var n int64
		if err := s.DB().WithContext(c).Raw("SELECT count(*) FROM "+table+" WHERE user_id = ?", userID).Scan(&n).Error; err != nil || n != 0 {
			t.Fatalf("%s has %d rows of the user, %v", table, n, err)
		}
	}
}

// testMFARemoveLastFactor: DeleteTOTP and DeleteWebAuthnCredential drop
// the recovery codes in the same transaction when no confirmed factor is
// left (a pending TOTP enrolment is none), and keep them otherwise; another
// user's codes stay. Found by a review: removing the factor and dropping
// the codes were separate writes, and a failure between them left the old
// codes live with no factor.
func testMFARemoveLastFactor(t *testing.T, s *sqlstore.Store) {
	cases := []struct {
		name       string
		totp       bool // a confirmed TOTP factor
		pending    bool // an unconfirmed TOTP enrolment
		passkeys   int
		removeTOTP bool // remove the TOTP factor, else the first passkey
		wantCodes  int
	}{
		{"the_app_alone", true, false, 0, true, 0},
		{"the_app_with_a_passkey_left", true, false, 1, true, 10},
		{"a_passkey_alone", false, false, 1, false, 0},
		{"a_passkey_with_another_left", false, false, 2, false, 10},
		{"a_passkey_with_the_app_left", true, false, 1, false, 10},
		{"a_passkey_with_only_a_pending_app_left", false, true, 1, false, 0},
	}
	c := rctx(t)
	other := enrolled(t, s, "remove-last-other@example.com")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := mustCreateUser(t, s, newUser("remove-last-"+strings.ReplaceAll(tc.name, "_", "-")+"@example.com"))
			if tc.totp || tc.pending {
				if err := s.PutPendingTOTP(c, u.ID, []byte("sealed-1"), mfaTime()); err != nil {
					t.Fatalf("PutPendingTOTP: %v", err)
				}
			}
			if tc.totp {
				if err := s.ConfirmTOTP(c, u.ID, []byte("sealed-1"), 100, codeHashes("rc", 10), mfaTime()); err != nil {
					t.Fatalf("ConfirmTOTP: %v", err)
				}
			}
			var first string
			for i := range tc.passkeys {
				cr := newCredential(u.ID, mfaTime().Add(time.Duration(i)*time.Second))
				if i == 0 {
					first = cr.ID
				}
				if err := s.AddWebAuthnCredential(c, cr); err != nil {
					t.Fatalf("AddWebAuthnCredential: %v", err)
				}
			}
			if err := s.ReplaceRecoveryCodes(c, u.ID, codeHashes("rc", 10), mfaTime()); err != nil {
				t.Fatalf("ReplaceRecoveryCodes: %v", err)
			}
			var err error
			if tc.removeTOTP {
				err = s.DeleteTOTP(c, u.ID)
			} else {
				err = s.DeleteWebAuthnCredential(c, u.ID, first)
			}
			if err != nil {
				t.Fatalf("remove: %v", err)
			}
			if n, err := s.RecoveryCodesLeft(c, u.ID); err != nil || n != tc.wantCodes {
				t.Fatalf("RecoveryCodesLeft = %d, %v; want %d", n, err, tc.wantCodes)
			}
			if n, _ := s.RecoveryCodesLeft(c, other.ID); n != 10 {
				t.Fatalf("another user's codes: %d left, want 10", n)
			}
		})
	}
	u := mustCreateUser(t, s, newUser("remove-last-none@example.com"))
	wantErr(t, "DeleteTOTP without one", s.DeleteTOTP(c, u.ID), store.ErrNotFound)
	wantErr(t, "DeleteWebAuthnCredential without one", s.DeleteWebAuthnCredential(c, u.ID, "nope"), store.ErrNotFound)
}

// testMFARaceRemoveLastTwoFactors: a user's only two factors removed at
// once (the app and the passkey, on two instances) leave no recovery code:
// each removal counts what is left while holding the user, so the later
// one sees the earlier one's removal.
func testMFARaceRemoveLastTwoFactors(t *testing.T, s *sqlstore.Store) {
	WarmPool(t, s, 8) // the SQLite pool holds 8
	c := rctx(t)
	for round := range 10 {
		u := enrolled(t, s, fmt.Sprintf("race-remove-last-%d@example.com", round))
		cr := newCredential(u.ID, mfaTime())
		if err := s.AddWebAuthnCredential(c, cr); err != nil {
			t.Fatalf("AddWebAuthnCredential: %v", err)
		}
		errs := race(2, func(i int) error {
			if i == 0 {
				return s.DeleteTOTP(c, u.ID)
			}
			return s.DeleteWebAuthnCredential(c, u.ID, cr.ID)
		})
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: racer %d: %v", round, i, err)
			}
		}
		if sum, err := s.MFASummary(c, u.ID); err != nil || sum != (store.MFASummary{}) {
			t.Fatalf("round %d: after both removals MFASummary = %+v, %v; want none, no codes", round, sum, err)
		}
	}
}

// ---- concurrency ----

func testMFARaceTOTPStep(t *testing.T, s *sqlstore.Store) {
	WarmPool(t, s, 8) // the SQLite pool holds 8
	c := rctx(t)
	u := enrolled(t, s, "racestep@example.com")
	errs := race(relRacers, func(int) error { return s.UseTOTPStep(c, u.ID, 101, mfaTime()) })
	oneWinner(t, "UseTOTPStep", errs, store.ErrConflict)
	// Racers on different steps: the highest step ends up stored, and each
	// winner raised the step (a lower step never wins after a higher one).
	errs = race(relRacers, func(i int) error { return s.UseTOTPStep(c, u.ID, int64(102+i), mfaTime()) })
	won := 0
	for i, err := range errs {
		if err == nil {
			won++
		} else if !errors.Is(err, store.ErrConflict) {
			t.Fatalf("racer %d: %v", i, err)
		}
	}
	if f, _ := s.GetTOTP(c, u.ID); won == 0 || f.LastStep > int64(101+relRacers) {
		t.Fatalf("%d winners, LastStep %d", won, f.LastStep)
	}
	if f, _ := s.GetTOTP(c, u.ID); errs[relRacers-1] == nil && f.LastStep != int64(101+relRacers) {
		t.Fatalf("the highest step won, yet LastStep is %d", f.LastStep)
	}
}

func testMFARaceTOTPConfirm(t *testing.T, s *sqlstore.Store) {
	WarmPool(t, s, 8) // the SQLite pool holds 8
	c := rctx(t)
	u := mustCreateUser(t, s, newUser("raceconfirm@example.com"))
	if err := s.PutPendingTOTP(c, u.ID, []byte("sealed"), mfaTime()); err != nil {
		t.Fatalf("PutPendingTOTP: %v", err)
	}
	errs := race(relRacers, func(i int) error {
		return s.ConfirmTOTP(c, u.ID, []byte("sealed"), 50, codeHashes(fmt.Sprint("racer", i), 10), mfaTime())
	})
	w := -1
	for i, err := range errs {
		switch {
		case err == nil && w >= 0:
			t.Fatalf("racers %d and %d both confirmed", w, i)
		case err == nil:
			w = i
		case !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound):
			t.Fatalf("racer %d: %v", i, err)
		}
	}
	if w < 0 {
		t.Fatalf("nobody confirmed")
	}
	if left, err := s.UseRecoveryCode(c, u.ID, codeHashes(fmt.Sprint("racer", w), 10)[0], mfaTime()); err != nil || left != 9 {
		t.Fatalf("the winner's recovery codes: %d, %v", left, err)
	}
	wantErr(t, "the confirming step afterwards", s.UseTOTPStep(c, u.ID, 50, mfaTime()), store.ErrConflict)
}

// testMFAFirstRecoveryCodes: the first codes are stored for a user without
// any, never over unused ones, and again once all are used.
func testMFAFirstRecoveryCodes(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	u := mustCreateUser(t, s, newUser("first-rc@example.com"))
	first := codeHashes("first", 2)
	if added, err := s.AddFirstRecoveryCodes(c, u.ID, first, mfaTime()); err != nil || !added {
		t.Fatalf("AddFirstRecoveryCodes without codes = %v, %v; want added", added, err)
	}
	if added, err := s.AddFirstRecoveryCodes(c, u.ID, codeHashes("second", 10), mfaTime()); err != nil || added {
		t.Fatalf("AddFirstRecoveryCodes over unused codes = %v, %v; want not added", added, err)
	}
	// The unused codes stayed: the first ones work, the refused ones do not.
	_, err := s.UseRecoveryCode(c, u.ID, codeHashes("second", 10)[0], mfaTime())
	wantErr(t, "UseRecoveryCode of a refused code", err, store.ErrNotFound)
	for i, h := range first {
		if left, err := s.UseRecoveryCode(c, u.ID, h, mfaTime()); err != nil || left != 1-i {
			t.Fatalf("UseRecoveryCode(first %d) = %d, %v", i, left, err)
		}
	}
	// All used: new first codes are stored again.
	if added, err := s.AddFirstRecoveryCodes(c, u.ID, codeHashes("third", 10), mfaTime()); err != nil || !added {
		t.Fatalf("AddFirstRecoveryCodes with every code used = %v, %v; want added", added, err)
	}
	if n, _ := s.RecoveryCodesLeft(c, u.ID); n != 10 {
		t.Fatalf("RecoveryCodesLeft = %d, want 10", n)
	}
	_, err = s.AddFirstRecoveryCodes(c, "usr_unknown", codeHashes("x", 10), mfaTime())
	wantErr(t, "AddFirstRecoveryCodes of an unknown user", err, store.ErrNotFound)
}

// testMFARaceFirstRecoveryCodes: of concurrent first codes for one user
// (two passkeys registered at once), exactly one set is stored, and it is
// the one its call said it stored.
func testMFARaceFirstRecoveryCodes(t *testing.T, s *sqlstore.Store) {
	WarmPool(t, s, 8) // the SQLite pool holds 8
	c := rctx(t)
	u := mustCreateUser(t, s, newUser("race-first-rc@example.com"))
	sets := make([][][]byte, relRacers)
	for i := range sets {
		sets[i] = codeHashes(fmt.Sprintf("racer-%d", i), 10)
	}
	errs := race(relRacers, func(i int) error {
		added, err := s.AddFirstRecoveryCodes(c, u.ID, sets[i], mfaTime())
		if err == nil && !added {
			return store.ErrConflict
		}
		return err
	})
	w := oneWinner(t, "AddFirstRecoveryCodes", errs, store.ErrConflict)
	if n, _ := s.RecoveryCodesLeft(c, u.ID); n != 10 {
		t.Fatalf("RecoveryCodesLeft = %d, want 10", n)
	}
	if _, err := s.UseRecoveryCode(c, u.ID, sets[w][0], mfaTime()); err != nil {
		t.Fatalf("the winner's code: %v", err)
	}
}

func testMFARaceRecoveryCode(t *testing.T, s *sqlstore.Store) {
	WarmPool(t, s, 8) // the SQLite pool holds 8
	c := rctx(t)
	u := enrolled(t, s, "racerc@example.com")
	code := codeHashes("rc", 10)[3]
	lefts := make([]int, relRacers)
	errs := race(relRacers, func(i int) error {
		var err error
		lefts[i], err = s.UseRecoveryCode(c, u.ID, code, mfaTime())
		return err
	})
	w := oneWinner(t, "UseRecoveryCode", errs, store.ErrNotFound)
	if lefts[w] != 9 {
		t.Fatalf("the winner saw %d codes left, want 9", lefts[w])
	}
	if n, _ := s.RecoveryCodesLeft(c, u.ID); n != 9 {
		t.Fatalf("RecoveryCodesLeft = %d, want 9", n)
	}
}

func testMFARaceWebAuthn(t *testing.T, s *sqlstore.Store) {
	WarmPool(t, s, 8) // the SQLite pool holds 8
	c := rctx(t)
	u := mustCreateUser(t, s, newUser("racewa@example.com"))
	cr := newCredential(u.ID, mfaTime())
	cr.SignCount = 3
	if err := s.AddWebAuthnCredential(c, cr); err != nil {
		t.Fatalf("AddWebAuthnCredential: %v", err)
	}
	errs := race(relRacers, func(i int) error {
		return s.UseWebAuthnCredential(c, u.ID, cr.ID, 3, uint32(4+i), fmt.Appendf(nil, `{"racer":%d}`, i), mfaTime())
	})
	w := oneWinner(t, "UseWebAuthnCredential", errs, store.ErrConflict)
	got, _ := s.ListWebAuthnCredentials(c, u.ID)
	if len(got) != 1 || got[0].SignCount != uint32(4+w) || string(got[0].Credential) != fmt.Sprintf(`{"racer":%d}`, w) {
		t.Fatalf("after the race: %+v; want the winner's (%d)", got, w)
	}
}

// Sealed values of the KEK-rotation cases: a 5-byte prefix names the key
// that sealed them (the store only compares the bytes).
var (
	sealNew  = []byte("NEWK1")
	sealOld  = []byte("OLDK1")
	sealLost = []byte("LOST1")
)

func sealedAs(prefix []byte, what string) []byte { return append(slices.Clone(prefix), what...) }

// sealedUser creates a user whose TOTP factor holds secret (confirmed, when
// not nil) and pending (when not nil).
func sealedUser(t *testing.T, s *sqlstore.Store, email string, secret, pending []byte) store.User {
	t.Helper()
	c := rctx(t)
	u := mustCreateUser(t, s, newUser(email))
	if secret != nil {
		if err := s.PutPendingTOTP(c, u.ID, secret, mfaTime()); err != nil {
			t.Fatalf("PutPendingTOTP: %v", err)
		}
		if err := s.ConfirmTOTP(c, u.ID, secret, 100, codeHashes(email, 2), mfaTime()); err != nil {
			t.Fatalf("ConfirmTOTP: %v", err)
		}
	}
	if pending != nil {
		if err := s.PutPendingTOTP(c, u.ID, pending, mfaTime()); err != nil {
			t.Fatalf("PutPendingTOTP: %v", err)
		}
	}
	return u
}

func testMFATOTPSealsOutside(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	mixed := sealedUser(t, s, "mixed@example.com", sealedAs(sealNew, "s1"), sealedAs(sealOld, "p1"))
	old := sealedUser(t, s, "old@example.com", sealedAs(sealOld, "s2"), nil)
	sealedUser(t, s, "new@example.com", sealedAs(sealNew, "s3"), sealedAs(sealNew, "p3"))
	lost := sealedUser(t, s, "lost@example.com", nil, sealedAs(sealLost, "p4"))
	short := sealedUser(t, s, "short@example.com", []byte("NEW"), nil) // shorter than a prefix: begins with none
	mustCreateUser(t, s, newUser("none@example.com"))

	tests := []struct {
		name     string
		prefixes [][]byte
		want     []string
	}{
		{"not_under_the_first_key", [][]byte{sealNew}, []string{mixed.ID, old.ID, lost.ID, short.ID}},
		{"under_no_configured_key", [][]byte{sealNew, sealOld}, []string{lost.ID, short.ID}},
		{"no_prefix_is_every_sealed_secret", nil, nil}, // checked by count below
	}
	for _, tt := range tests {
		if tt.want == nil {
			if n, err := s.CountTOTPSealedOutside(c, tt.prefixes); err != nil || n != 5 {
				t.Fatalf("%s: CountTOTPSealedOutside = %d, %v; want 5", tt.name, n, err)
			}
			continue
		}
		slices.Sort(tt.want)
		var got []string
		after := ""
		for page := 0; page < 10; page++ { // pages of two: the paging is tested too
			list, err := s.ListTOTPSealedOutside(c, tt.prefixes, after, 2)
			if err != nil {
				t.Fatalf("%s: ListTOTPSealedOutside: %v", tt.name, err)
			}
			for _, f := range list {
				got = append(got, f.UserID)
				after = f.UserID
			}
			if len(list) < 2 {
				break
			}
		}
		if !slices.Equal(got, tt.want) {
			t.Fatalf("%s: listed %v, want %v", tt.name, got, tt.want)
		}
		if n, err := s.CountTOTPSealedOutside(c, tt.prefixes); err != nil || n != len(tt.want) {
			t.Fatalf("%s: CountTOTPSealedOutside = %d, %v; want %d", tt.name, n, err, len(tt.want))
		}
	}
	list, err := s.ListTOTPSealedOutside(c, [][]byte{sealNew}, "", 10)
	if err != nil || len(list) == 0 {
		t.Fatalf("ListTOTPSealedOutside = %v, %v", list, err)
	}
	for _, f := range list {
		if f.UserID == mixed.ID && (!bytes.Equal(f.SecretSealed, sealedAs(sealNew, "s1")) || !bytes.Equal(f.PendingSealed, sealedAs(sealOld, "p1"))) {
			t.Fatalf("a listed record does not hold both sealed secrets: %+v", f)
		}
	}
}

func testMFATOTPReseal(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	oldSecret, oldPending := sealedAs(sealOld, "s1"), sealedAs(sealOld, "p1")
	newSecret, newPending := sealedAs(sealNew, "s1"), sealedAs(sealNew, "p1")
	u := sealedUser(t, s, "reseal@example.com", oldSecret, oldPending)
	before, _ := s.GetTOTP(c, u.ID)

	tests := []struct {
		name    string
		pending bool
		old     []byte
		sealed  []byte
		want    bool
	}{
		{"ok/confirmed", false, oldSecret, newSecret, true},
		{"fail/confirmed_changed_meanwhile", false, oldSecret, sealedAs(sealNew, "other"), false},
		{"fail/pending_with_the_confirmed_bytes", true, newSecret, sealedAs(sealNew, "other"), false},
		{"ok/pending", true, oldPending, newPending, true},
	}
	for _, tt := range tests {
		ok, err := s.ResealTOTP(c, u.ID, tt.pending, tt.old, tt.sealed)
		if err != nil || ok != tt.want {
			t.Fatalf("%s: ResealTOTP = %v, %v; want %v", tt.name, ok, err, tt.want)
		}
	}
	f, _ := s.GetTOTP(c, u.ID)
	if !bytes.Equal(f.SecretSealed, newSecret) || !bytes.Equal(f.PendingSealed, newPending) || f.LastStep != before.LastStep ||
		!f.UpdatedAt.Equal(before.UpdatedAt) {
		t.Fatalf("after the re-seals: %+v (before %+v)", f, before)
	}

	// A confirmation between the read and the swap moved the pending
	// secret: the swap of the pending bytes read changes nothing.
	v := sealedUser(t, s, "confirmed-meanwhile@example.com", oldSecret, oldPending)
	if err := s.ConfirmTOTP(c, v.ID, oldPending, 200, codeHashes("v", 2), mfaTime()); err != nil {
		t.Fatalf("ConfirmTOTP: %v", err)
	}
	if ok, err := s.ResealTOTP(c, v.ID, true, oldPending, newPending); err != nil || ok {
		t.Fatalf("ResealTOTP of a pending secret confirmed meanwhile = %v, %v", ok, err)
	}
	if f, _ := s.GetTOTP(c, v.ID); !bytes.Equal(f.SecretSealed, oldPending) || f.PendingSealed != nil {
		t.Fatalf("the confirmation was overwritten: %+v", f)
	}
	// A removal meanwhile: nothing comes back.
	if err := s.DeleteTOTP(c, v.ID); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.ResealTOTP(c, v.ID, false, oldPending, newPending); err != nil || ok {
		t.Fatalf("ResealTOTP of a removed factor = %v, %v", ok, err)
	}
	if _, err := s.GetTOTP(c, v.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a removed factor came back: %v", err)
	}
}

func testMFATOTPSealsBadPrefixes(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	for _, prefixes := range [][][]byte{{sealNew, []byte("OLD")}, {{}}} {
		if _, err := s.ListTOTPSealedOutside(c, prefixes, "", 10); err == nil {
			t.Fatalf("ListTOTPSealedOutside with prefixes %q: no error", prefixes)
		}
		if _, err := s.CountTOTPSealedOutside(c, prefixes); err == nil {
			t.Fatalf("CountTOTPSealedOutside with prefixes %q: no error", prefixes)
		}
	}
}

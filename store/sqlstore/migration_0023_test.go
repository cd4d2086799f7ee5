package sqlstore

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestMigration0023RecoveryCodesWithoutFactor writes, as a binary of
// migration 22 could leave them, users with recovery codes and no second
// factor (a removal of the last factor cut short before removeFactor), and
// users whose codes stand beside a confirmed TOTP, a passkey, or both, then
// migrates: only the codes of users with no factor are gone (a pending TOTP
// enrolment is no factor, as MFASummary counts), used codes with them; the
// others are untouched. Run again, the migration deletes nothing more.
// Found by a review: existing rows were never cleaned up.
func TestMigration0023RecoveryCodesWithoutFactor(t *testing.T) {
	type seed struct {
		name                       string
		totp, pendingTOTP, passkey bool
		wantCodes                  int
	}
	seeds := []seed{
		{name: "codes_and_no_factor", wantCodes: 0},
		{name: "codes_and_a_pending_totp_only", pendingTOTP: true, wantCodes: 0},
		{name: "codes_and_a_totp", totp: true, wantCodes: 3},
		{name: "codes_and_a_passkey", passkey: true, wantCodes: 3},
		{name: "codes_a_totp_and_a_passkey", totp: true, passkey: true, wantCodes: 3},
	}
	for _, b := range migrationBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, db := openAtVersion(t, ctx, b.url(t), 22)
			now := time.Now().UTC().Truncate(time.Millisecond)
			ids := map[string]string{}
			for _, sd := range seeds {
				id := createOldUser(t, db, sd.name+"@example.com")
				ids[sd.name] = id
				for i := range 3 { // two unused codes and a used one
					c := v9MFARecoveryCode{UserID: id, CodeHash: []byte(fmt.Sprintf("code %d of %s", i, id)), CreatedAt: now}
					if i == 2 {
						c.UsedAt = &now
					}
					if err := db.Create(&c).Error; err != nil {
						t.Fatalf("%s: create a recovery code: %v", sd.name, err)
					}
				}
				if sd.totp || sd.pendingTOTP {
					f := v9MFATOTP{UserID: id, CreatedAt: now, UpdatedAt: now}
					if sd.totp {
						f.SecretSealed, f.ConfirmedAt = []byte("sealed secret"), &now
					} else {
						f.PendingSealed, f.PendingCreatedAt = []byte("sealed pending secret"), &now
					}
					if err := db.Create(&f).Error; err != nil {
						t.Fatalf("%s: create a totp: %v", sd.name, err)
					}
				}
				if sd.passkey {
					c := v9WebAuthnCredential{ID: "cred-" + id, UserID: id, Name: "Key", Credential: []byte("credential"), CreatedAt: now}
					if err := db.Create(&c).Error; err != nil {
						t.Fatalf("%s: create a passkey: %v", sd.name, err)
					}
				}
			}

			applied, err := s.Migrate(ctx)
			if err != nil || fmt.Sprint(applied) != fmt.Sprint(versionsFrom(23)) {
				t.Fatalf("Migrate applied %v, %v; want %v", applied, err, versionsFrom(23))
			}
			check := func(t *testing.T, after string) {
				t.Helper()
				for _, sd := range seeds {
					var n int64
					if err := db.Table("mfa_recovery_codes").Where("user_id = ?", ids[sd.name]).Count(&n).Error; err != nil {
						t.Fatalf("%s: count the codes: %v", sd.name, err)
					}
					if int(n) != sd.wantCodes {
						t.Errorf("%s: %d recovery codes %s; want %d", sd.name, n, after, sd.wantCodes)
					}
					sum, err := s.MFASummary(ctx, ids[sd.name])
					if err != nil {
						t.Fatalf("%s: MFASummary: %v", sd.name, err)
					}
					if wantLeft := min(sd.wantCodes, 2); sum.RecoveryCodesLeft != wantLeft || sum.TOTP != sd.totp {
						t.Errorf("%s: summary %+v %s; want %d codes left, TOTP %v", sd.name, sum, after, wantLeft, sd.totp)
					}
				}
			}
			check(t, "after the migration")
			if err := migrate0023(db); err != nil {
				t.Fatalf("the migration run again: %v", err)
			}
			check(t, "after the migration ran again")
		})
	}
}

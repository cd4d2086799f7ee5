package sqlstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// TestMigration0009ExistingUsers applies migrations 1 to 8, creates a user
// as a version-8 binary would, then migrates: the user can enrol factors,
// and the factor tables' foreign keys remove them with the user row.
func TestMigration0009ExistingUsers(t *testing.T) {
	for _, b := range migrationBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, db := openAtVersion(t, ctx, b.url(t), 8)
			u := store.User{ID: createOldUser(t, db, "old@example.com")}
			applied, err := s.Migrate(ctx)
			if err != nil || fmt.Sprint(applied) != fmt.Sprint(versionsFrom(9)) {
				t.Fatalf("Migrate applied %v, %v; want %v", applied, err, versionsFrom(9))
			}
			now := time.Now()
			if err := s.PutPendingTOTP(ctx, u.ID, []byte("sealed"), now); err != nil {
				t.Fatalf("PutPendingTOTP: %v", err)
			}
			if err := s.ConfirmTOTP(ctx, u.ID, []byte("sealed"), 1, [][]byte{[]byte("h1"), []byte("h2")}, now); err != nil {
				t.Fatalf("ConfirmTOTP: %v", err)
			}
			if err := s.AddWebAuthnCredential(ctx, store.WebAuthnCredential{ID: "cred", UserID: u.ID, Credential: []byte("{}")}); err != nil {
				t.Fatalf("AddWebAuthnCredential: %v", err)
			}
			if err := db.Exec("DELETE FROM users WHERE id = ?", u.ID).Error; err != nil {
				t.Fatalf("delete the user row: %v", err)
			}
			for _, table := range []string{"mfa_totp", "mfa_recovery_codes", "webauthn_credentials"} {
				var n int64
				if err := db.Raw("SELECT count(*) FROM " + table).Scan(&n).Error; err != nil || n != 0 {
					t.Fatalf("%s keeps %d rows of a deleted user (%v)", table, n, err)
				}
			}
		})
	}
}

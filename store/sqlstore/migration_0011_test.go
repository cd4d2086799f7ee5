package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// TestMigration0011ExistingUsers applies migrations up to 10, creates a
// user as a version-10 binary would, then migrates: the user can be linked
// to an upstream identity, (provider, subject) is unique, and the row goes
// with the user row.
func TestMigration0011ExistingUsers(t *testing.T) {
	for _, b := range migrationBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, db := openAtVersion(t, ctx, b.url(t), 10)
			u := store.User{ID: createOldUser(t, db, "old@example.com")}
			other := store.User{ID: createOldUser(t, db, "other@example.com")}
			applied, err := s.Migrate(ctx)
			if err != nil || fmt.Sprint(applied) != fmt.Sprint(versionsFrom(11)) {
				t.Fatalf("Migrate applied %v, %v; want %v", applied, err, versionsFrom(11))
			}
			if err := s.LinkFederatedIdentity(ctx, &store.FederatedIdentity{Provider: "google", Issuer: "https://accounts.google.com", Subject: "1", UserID: u.ID}); err != nil {
				t.Fatalf("LinkFederatedIdentity: %v", err)
			}
			if err := s.LinkFederatedIdentity(ctx, &store.FederatedIdentity{Provider: "google", Issuer: "https://accounts.google.com", Subject: "1", UserID: other.ID}); !errors.Is(err, store.ErrAlreadyExists) {
				t.Fatalf("second link of (provider, subject) = %v, want ErrAlreadyExists", err)
			}
			if err := db.Exec("DELETE FROM users WHERE id = ?", u.ID).Error; err != nil {
				t.Fatalf("delete the user row: %v", err)
			}
			var n int64
			if err := db.Raw("SELECT count(*) FROM federated_identities").Scan(&n).Error; err != nil || n != 0 {
				t.Fatalf("federated_identities keeps %d rows of a deleted user (%v)", n, err)
			}
		})
	}
}

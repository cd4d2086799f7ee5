package sqlstore

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// TestMigration0012ExistingUsers applies migrations up to 11, creates users
// as a version-11 binary would, then migrates: they are human users whose
// emails stay unique (case-insensitively), machine users without an email
// can be added beside them, and API keys go with their owner.
func TestMigration0012ExistingUsers(t *testing.T) {
	for _, b := range migrationBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, db := openAtVersion(t, ctx, b.url(t), 11)
			oldID := createOldUser(t, db, "Old@example.com")
			applied, err := s.Migrate(ctx)
			if err != nil || fmt.Sprint(applied) != fmt.Sprint(versionsFrom(12)) {
				t.Fatalf("Migrate applied %v, %v; want %v", applied, err, versionsFrom(12))
			}
			old, err := s.GetUserByEmail(ctx, "old@EXAMPLE.com")
			if err != nil || old.ID != oldID || old.Kind != store.UserHuman || old.IsMachine() {
				t.Fatalf("the version-11 user after migrating = %+v, %v; want a human", old, err)
			}
			if err := s.CreateUser(ctx, &store.User{Email: "OLD@example.com", Active: true}); !errors.Is(err, store.ErrAlreadyExists) {
				t.Fatalf("a second user with the old address = %v, want ErrAlreadyExists", err)
			}
			for i := 0; i < 2; i++ {
				m := store.User{Kind: store.UserMachine, Name: fmt.Sprintf("bot %d", i), Active: true}
				if err := s.CreateUser(ctx, &m); err != nil {
					t.Fatalf("machine user %d next to the old users: %v", i, err)
				}
			}
			h := sha256.Sum256([]byte("key"))
			k := store.APIKey{OwnerID: oldID, Name: "ci", Hint: "pcak_abc...wxyz", Hash: h[:], Scopes: []string{},
				ExpiresAt: time.Now().Add(time.Hour), CreatedBy: oldID}
			if err := s.CreateAPIKey(ctx, &k); err != nil {
				t.Fatalf("CreateAPIKey for the old user: %v", err)
			}
			if err := db.Exec("DELETE FROM users WHERE id = ?", oldID).Error; err != nil {
				t.Fatalf("delete the user row: %v", err)
			}
			var n int64
			if err := db.Raw("SELECT count(*) FROM api_keys").Scan(&n).Error; err != nil || n != 0 {
				t.Fatalf("api_keys keeps %d rows of a deleted user (%v)", n, err)
			}
		})
	}
}

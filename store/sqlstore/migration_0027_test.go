package sqlstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// TestMigration0027ExistingUsersForeign applies the migrations before 27,
// writes users as an older binary would, then migrates: every existing
// account's hash is marked password_hash_foreign (Portcullis's hashes
// cannot be told from imported ones), a row inserted by SQL afterwards
// without naming the column is marked too (an import), and a user the
// store creates is not. The partial index of the marked rows exists, and
// AnyForeignPasswordHash says true until the UPDATE docs/operations.md
// gives clears the marks.
func TestMigration0027ExistingUsersForeign(t *testing.T) {
	for _, b := range migrationBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, db := openAtVersion(t, ctx, b.url(t), 26)
			want := map[string]bool{} // id: want password_hash_foreign
			for _, email := range []string{"portcullis@example.com", "imported@example.com"} {
				id := createOldUser(t, db, email)
				if err := db.Exec("UPDATE users SET password_hash = ? WHERE id = ?", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA", id).Error; err != nil {
					t.Fatalf("set the hash of %s: %v", email, err)
				}
				want[id] = true
			}
			applied, err := s.Migrate(ctx)
			if err != nil || fmt.Sprint(applied) != fmt.Sprint(versionsFrom(27)) {
				t.Fatalf("Migrate applied %v, %v; want %v", applied, err, versionsFrom(27))
			}
			want[createOldUser(t, db, "sql-import@example.com")] = true
			u := store.User{Email: "created@example.com", PasswordHash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$bmV3", Active: true}
			if err := s.CreateUser(ctx, &u); err != nil {
				t.Fatalf("CreateUser: %v", err)
			}
			want[u.ID] = false
			for id, w := range want {
				got, err := s.GetUser(ctx, id)
				if err != nil {
					t.Fatalf("GetUser %s: %v", id, err)
				}
				if got.PasswordHashForeign != w {
					t.Errorf("%s: password_hash_foreign = %v, want %v", got.Email, got.PasswordHashForeign, w)
				}
			}
			if !db.Migrator().HasIndex("users", "users_password_hash_foreign_idx") {
				t.Errorf("no index users_password_hash_foreign_idx after the migration")
			}
			if marked, err := s.AnyForeignPasswordHash(ctx); err != nil || !marked {
				t.Errorf("AnyForeignPasswordHash after the migration = %v, %v; want true", marked, err)
			}
			if err := db.Exec("UPDATE users SET password_hash_foreign = false WHERE password_hash_foreign").Error; err != nil {
				t.Fatalf("clear the marks: %v", err)
			}
			if marked, err := s.AnyForeignPasswordHash(ctx); err != nil || marked {
				t.Errorf("AnyForeignPasswordHash once the marks are cleared = %v, %v; want false", marked, err)
			}
		})
	}
}

package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// TestMigration0019ExistingLinks applies migrations 1 to 18, links a user
// as a version-18 binary did (no issuer), then migrates: the link is kept
// with an empty issuer (store.IssuerUnresolved), which matches no sign-in
// until the start step resolves it; the key is (provider, issuer, subject),
// so the same sub of another issuer is another account; a user still holds
// one identity per provider id; links still go with their user.
func TestMigration0019ExistingLinks(t *testing.T) {
	for _, b := range migrationBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, db := openAtVersion(t, ctx, b.url(t), 18)
			alice := createOldUser(t, db, "alice@example.com")
			mallory := createOldUser(t, db, "mallory@example.com")
			linkedAt := time.Now().UTC().Truncate(time.Millisecond)
			if err := db.Exec(`INSERT INTO federated_identities (provider, subject, user_id, email, linked_at) VALUES (?, ?, ?, ?, ?)`,
				"gitlab", "42", alice, "alice@corp.example", linkedAt).Error; err != nil {
				t.Fatalf("insert a version-18 link: %v", err)
			}
			applied, err := s.Migrate(ctx)
			if err != nil || fmt.Sprint(applied) != fmt.Sprint(versionsFrom(19)) {
				t.Fatalf("Migrate applied %v, %v; want %v", applied, err, versionsFrom(19))
			}
			list, err := s.ListFederatedIdentities(ctx, alice)
			if err != nil || len(list) != 1 || list[0].Issuer != store.IssuerUnresolved || list[0].Subject != "42" ||
				list[0].Email != "alice@corp.example" || !list[0].LinkedAt.Equal(linkedAt) {
				t.Fatalf("the version-18 link after the migration: %+v, %v", list, err)
			}
			const corp, com = "https://gitlab.corp.example", "https://gitlab.com"
			if _, err := s.GetFederatedIdentity(ctx, "gitlab", com, "42"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("the unresolved link matched an issuer: %v", err)
			}
			if err := s.LinkFederatedIdentity(ctx, &store.FederatedIdentity{Provider: "gitlab", Issuer: com, Subject: "42", UserID: mallory}); err != nil {
				t.Fatalf("link sub 42 of another issuer to another user: %v", err)
			}
			if err := s.LinkFederatedIdentity(ctx, &store.FederatedIdentity{Provider: "gitlab", Issuer: corp, Subject: "7", UserID: alice}); !errors.Is(err, store.ErrAlreadyExists) {
				t.Fatalf("a second identity of alice at gitlab = %v, want ErrAlreadyExists", err)
			}
			var pending int64
			if err := db.Raw("SELECT count(*) FROM federated_identities WHERE issuer = ''").Scan(&pending).Error; err != nil || pending != 1 {
				t.Fatalf("links awaiting their issuer: %d, %v; want 1", pending, err)
			}
			if !db.Migrator().HasIndex("federated_identities", "federated_identities_unresolved_idx") ||
				!db.Migrator().HasIndex("federated_identities", "federated_identities_user_provider_idx") {
				t.Fatal("an index of federated_identities is missing")
			}
			if err := db.Exec("DELETE FROM users WHERE id = ?", alice).Error; err != nil {
				t.Fatalf("delete the user row: %v", err)
			}
			var n int64
			if err := db.Raw("SELECT count(*) FROM federated_identities WHERE user_id = ?", alice).Scan(&n).Error; err != nil || n != 0 {
				t.Fatalf("federated_identities keeps %d rows of a deleted user (%v)", n, err)
			}
		})
	}
}

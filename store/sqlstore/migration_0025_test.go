package sqlstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// TestMigration0025PurgeIndexes migrates a database a binary of migration
// 24 left, holding a reset link and an invite past their retention:
// migration 25 creates the indexes the purge reads by (of the expiry, or
// the revocation, and id), and the purge then deletes those rows.
// TestPurgeReadsByExpiryIndex shows the purge's statements use them.
func TestMigration0025PurgeIndexes(t *testing.T) {
	want := map[string][]string{
		"user_tokens": {"user_tokens_expires_idx"},
		"invites":     {"invites_expires_idx"},
		"api_keys":    {"api_keys_expires_idx", "api_keys_revoked_idx"},
	}
	for _, b := range migrationBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, db := openAtVersion(t, ctx, b.url(t), 24)
			now := time.Now().UTC()
			uid := createOldUser(t, db, "olga@example.com")
			old := now.Add(-store.InviteKeptFor - time.Hour)
			rows := map[string]map[string]any{
				"user_tokens": {"id": "utk_old", "user_id": uid, "purpose": string(store.PurposePasswordReset),
					"token_hash": []byte("old link"), "expires_at": old, "created_at": old},
				"invites": {"id": "inv_old", "email": "ivan@example.com", "email_lower": "ivan@example.com", "role": "user",
					"token_hash": []byte("old invite"), "invited_by": uid, "status": string(store.InvitePending),
					"expires_at": old, "created_at": old, "user_id": ""},
			}
			for table, row := range rows {
				if err := db.Table(table).Create(row).Error; err != nil {
					t.Fatalf("%s: create an old row: %v", table, err)
				}
			}
			applied, err := s.Migrate(ctx)
			if err != nil || fmt.Sprint(applied) != fmt.Sprint(versionsFrom(25)) {
				t.Fatalf("Migrate applied %v, %v; want %v", applied, err, versionsFrom(25))
			}
			for table, names := range want {
				for _, name := range names {
					if !db.Migrator().HasIndex(table, name) {
						t.Errorf("%s: no index %s after the migration", table, name)
					}
				}
			}
			pr, err := s.Purge(ctx, now)
			if err != nil || pr.UserTokens != 1 || pr.Invites != 1 {
				t.Errorf("Purge after the migration = %+v, %v; want the old link and invite", pr, err)
			}
		})
	}
}

package sqlstore

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestMigration0017UnappliedRevocations applies migrations 1 to 16, records
// a revocation as a version-16 binary would (no mark: whether Redis took
// it is unknown), then migrates: the record is unapplied, so the
// reconciliation of every instance applies it once more, and the unapplied
// rows are indexed.
func TestMigration0017UnappliedRevocations(t *testing.T) {
	for _, b := range migrationBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, db := openAtVersion(t, ctx, b.url(t), 16)
			now := time.Now().UTC().Truncate(time.Millisecond)
			old := v2TokenRevocation{Kind: "user", Value: "usr_1", At: now, ExpiresAt: now.Add(time.Hour)}
			if err := db.Create(&old).Error; err != nil {
				t.Fatalf("record a version-16 revocation: %v", err)
			}
			applied, err := s.Migrate(ctx)
			if err != nil || fmt.Sprint(applied) != fmt.Sprint(versionsFrom(17)) {
				t.Fatalf("Migrate applied %v, %v; want %v", applied, err, versionsFrom(17))
			}
			var n int64
			if err := db.Raw(`SELECT COUNT(*) FROM token_revocations WHERE unapplied_since IS NOT NULL AND unapplied_since <= ?`,
				time.Now().UTC().Add(time.Minute)).Scan(&n).Error; err != nil {
				t.Fatal(err)
			}
			if n != 1 {
				t.Fatalf("%d unapplied records after the migration, want the version-16 one", n)
			}
			if !db.Migrator().HasIndex("token_revocations", "token_revocations_unapplied_idx") {
				t.Fatal("the unapplied records are not indexed")
			}
		})
	}
}

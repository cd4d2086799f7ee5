package sqlstore

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestMigration0018ExistingFamilies applies migrations 1 to 17, writes a
// refresh family as a version-17 binary would, then migrates: the family
// is kept with a NULL granted_at (read as its created_at), and a new one
// can keep when its grant was made.
func TestMigration0018ExistingFamilies(t *testing.T) {
	for _, b := range migrationBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, db := openAtVersion(t, ctx, b.url(t), 17)
			now := time.Now().UTC().Truncate(time.Millisecond)
			if err := db.Exec(`INSERT INTO refresh_families (id, user_id, client_id, scope, requested_scope, created_at,
				absolute_expiry, idle_ttl_ms, idle_expires_at, current_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				"sid-old", "usr_old", "web", "openid", "", now, now.Add(time.Hour), 0, now.Add(time.Hour), []byte("hash")).Error; err != nil {
				t.Fatalf("insert a version-17 refresh family: %v", err)
			}
			applied, err := s.Migrate(ctx)
			if err != nil || fmt.Sprint(applied) != fmt.Sprint(versionsFrom(18)) {
				t.Fatalf("Migrate applied %v, %v; want %v", applied, err, versionsFrom(18))
			}
			var n int64
			if err := db.Raw("SELECT COUNT(*) FROM refresh_families WHERE id = ? AND granted_at IS NULL", "sid-old").Scan(&n).Error; err != nil {
				t.Fatalf("read the family: %v", err)
			}
			if n != 1 {
				t.Fatal("a version-17 family's granted_at is not NULL")
			}
			if err := db.Exec("UPDATE refresh_families SET granted_at = ? WHERE id = ?", now.Add(-time.Minute), "sid-old").Error; err != nil {
				t.Fatalf("write granted_at: %v", err)
			}
		})
	}
}

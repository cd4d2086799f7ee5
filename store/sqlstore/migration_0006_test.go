package sqlstore

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestMigration0006ExistingSessions applies migrations 1 to 5, writes a
// browser session as a version-5 binary would, then migrates: the session
// keeps its clients and has no grants ('[]'), and the back-channel logout
// queue starts empty.
func TestMigration0006ExistingSessions(t *testing.T) {
	for _, b := range migrationBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, db := openAtVersion(t, ctx, b.url(t), 5)
			now := time.Now().UTC()
			old := v4BrowserSession{ID: "bs-old", CookieHash: []byte("cookie"), UserID: "usr_old", AuthTime: now, AMR: `["pwd"]`,
				CreatedAt: now, LastUsedAt: now, IdleExpiresAt: now.Add(time.Hour), AbsoluteExpiry: now.Add(time.Hour),
				ClientIDs: `["web"]`}
			if err := db.Create(&old).Error; err != nil {
				t.Fatalf("insert a version-5 browser session: %v", err)
			}
			applied, err := s.Migrate(ctx)
			if err != nil || len(applied) == 0 || applied[0] != 6 {
				t.Fatalf("Migrate applied %v, %v; want 6 first", applied, err)
			}
			var row struct {
				ClientIDs string `gorm:"column:client_ids"`
				Grants    string `gorm:"column:grants"`
			}
			if err := db.Raw("SELECT client_ids, grants FROM browser_sessions WHERE id = ?", old.ID).Scan(&row).Error; err != nil {
				t.Fatalf("read the session: %v", err)
			}
			if row.ClientIDs != `["web"]` || row.Grants != "[]" {
				t.Fatalf("after migration 6: client_ids %q, grants %q; want [\"web\"] and []", row.ClientIDs, row.Grants)
			}
			var n int64
			if err := db.Raw("SELECT count(*) FROM backchannel_logouts").Scan(&n).Error; err != nil || n != 0 {
				t.Fatalf("backchannel_logouts: %d rows, %v", n, err)
			}
			if fmt.Sprint(applied) != fmt.Sprint(versionsFrom(6)) {
				t.Fatalf("Migrate applied %v, want %v", applied, versionsFrom(6))
			}
		})
	}
}

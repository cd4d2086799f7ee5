package sqlstore

import (
	"context"
	"testing"
	"time"
)

// TestMigration0010ExistingFamilies applies every migration before 10,
// writes a refresh family as an older binary would, then migrates: the
// family is kept with a NULL amr (it answers none), and a new one can keep
// its amr.
func TestMigration0010ExistingFamilies(t *testing.T) {
	for _, b := range migrationBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, db := openAtVersion(t, ctx, b.url(t), 9)
			now := time.Now().UTC()
			if err := db.Exec(`INSERT INTO refresh_families (id, user_id, client_id, scope, requested_scope, created_at,
				absolute_expiry, idle_ttl_ms, idle_expires_at, current_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				"sid-old", "usr_old", "web", "openid", "", now, now.Add(time.Hour), 0, now.Add(time.Hour), []byte("hash")).Error; err != nil {
				t.Fatalf("insert an older refresh family: %v", err)
			}
			applied, err := s.Migrate(ctx)
			if err != nil || len(applied) == 0 || applied[0] != 10 {
				t.Fatalf("Migrate applied %v, %v; want 10 first", applied, err)
			}
			var amr *string
			if err := db.Raw("SELECT amr FROM refresh_families WHERE id = ?", "sid-old").Scan(&amr).Error; err != nil {
				t.Fatalf("read the family: %v", err)
			}
			if amr != nil {
				t.Fatalf("an older family's amr is %q, want NULL", *amr)
			}
			if err := db.Exec("UPDATE refresh_families SET amr = ? WHERE id = ?", `["pwd","otp","mfa"]`, "sid-old").Error; err != nil {
				t.Fatalf("write amr: %v", err)
			}
		})
	}
}

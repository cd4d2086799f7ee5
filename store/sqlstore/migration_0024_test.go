package sqlstore

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestMigration0024RefreshFamilyRotations writes, as a binary of
// migration 23 left them, refresh families with and without used tokens,
// then migrates: each family's rotations is its number of used tokens, so
// a family rotated before the upgrade keeps to the same bound
// (store.MaxFamilyRotations).
func TestMigration0024RefreshFamilyRotations(t *testing.T) {
	want := map[string]int64{"never_rotated": 0, "rotated_once": 1, "rotated_five_times": 5}
	for _, b := range migrationBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, db := openAtVersion(t, ctx, b.url(t), 23)
			now := time.Now().UTC().Truncate(time.Millisecond)
			for id, n := range want {
				f := v2RefreshFamily{ID: id, UserID: "u", ClientID: "c", CreatedAt: now, AbsoluteExpiry: now.Add(time.Hour),
					IdleExpiresAt: now.Add(time.Hour), CurrentHash: []byte("current " + id)}
				if err := db.Create(&f).Error; err != nil {
					t.Fatalf("%s: create a family: %v", id, err)
				}
				for i := range n {
					u := map[string]any{"family_id": id, "token_hash": []byte(fmt.Sprintf("used %d of %s", i, id)), "used_at": now}
					if err := db.Table("refresh_used_tokens").Create(u).Error; err != nil {
						t.Fatalf("%s: create a used token: %v", id, err)
					}
				}
			}
			applied, err := s.Migrate(ctx)
			if err != nil || fmt.Sprint(applied) != fmt.Sprint(versionsFrom(24)) {
				t.Fatalf("Migrate applied %v, %v; want %v", applied, err, versionsFrom(24))
			}
			for id, n := range want {
				var got int64
				if err := db.Table("refresh_families").Where("id = ?", id).Select("rotations").Scan(&got).Error; err != nil {
					t.Fatalf("%s: read rotations: %v", id, err)
				}
				if got != n {
					t.Errorf("%s: rotations %d after the migration, want %d (its used tokens)", id, got, n)
				}
			}
		})
	}
}

package sqlstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// TestMigration0026RetiredClientNames migrates a database a binary of
// migration 25 left, holding a client that lists an audience: migration
// 26 creates retired_client_names and its index of (retired_until, id), so
// deleting that client retires its id and audience, which a creation's
// check then reads, and the purge deletes them once their retirement ends.
func TestMigration0026RetiredClientNames(t *testing.T) {
	for _, b := range migrationBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, db := openAtVersion(t, ctx, b.url(t), 25)
			if err := s.CreateClient(ctx, &store.Client{ID: "old-app", Name: "old", Audiences: []string{"old-api"}}, nil); err != nil {
				t.Fatalf("create a client before the migration: %v", err)
			}
			applied, err := s.Migrate(ctx)
			if err != nil || fmt.Sprint(applied) != fmt.Sprint(versionsFrom(26)) {
				t.Fatalf("Migrate applied %v, %v; want %v", applied, err, versionsFrom(26))
			}
			if !db.Migrator().HasTable("retired_client_names") || !db.Migrator().HasIndex("retired_client_names", "retired_client_names_until_id_idx") {
				t.Fatalf("no retired_client_names table or index after the migration")
			}
			if err := s.DeleteClient(ctx, "old-app"); err != nil {
				t.Fatalf("DeleteClient after the migration: %v", err)
			}
			var seen []store.RetiredClientName
			err = s.CreateClient(ctx, &store.Client{ID: "next", Name: "next"}, func(_ []store.Client, retired []store.RetiredClientName) error {
				seen = retired
				return nil
			})
			if err != nil || len(seen) != 2 {
				t.Fatalf("CreateClient saw retired %+v, %v; want old-app's id and audience", seen, err)
			}
			pr, err := s.Purge(ctx, time.Now().Add(DefaultClientRetirement+time.Minute))
			if err != nil || pr.RetiredClientNames != 2 {
				t.Errorf("Purge past the retirement = %+v, %v; want both names", pr, err)
			}
		})
	}
}

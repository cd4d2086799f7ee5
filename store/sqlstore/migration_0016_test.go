package sqlstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// TestMigration0016QueuedDeliveries applies migrations 1 to 15, queues
// deliveries as a version-15 binary would (one for a platform client, one
// for an organisation's), then migrates: both are still queued, each with
// its client's organisation, and a new one keeps its organisation.
func TestMigration0016QueuedDeliveries(t *testing.T) {
	for _, b := range migrationBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, db := openAtVersion(t, ctx, b.url(t), 15)
			now := time.Now().UTC().Truncate(time.Second)
			old := v6BackchannelLogout{ID: "bcl_old", ClientID: "web", URI: "https://web.example/bcl", Subject: "usr_1", SID: "sid-1",
				NextAttemptAt: now, CreatedAt: now}
			if err := db.Create(&old).Error; err != nil {
				t.Fatalf("queue a version-15 delivery: %v", err)
			}
			if err := s.CreateClient(ctx, &store.Client{ID: "globex-app", Name: "Globex app", Public: true,
				Grants: []string{"authorization_code"}, TenantID: "ten_globex"}, nil); err != nil {
				t.Fatalf("create an organisation's client at version 15: %v", err)
			}
			orgs := old
			orgs.ID, orgs.ClientID, orgs.URI = "bcl_org", "globex-app", "https://10.0.0.5/bcl"
			if err := db.Create(&orgs).Error; err != nil {
				t.Fatalf("queue a version-15 delivery of an organisation's client: %v", err)
			}
			applied, err := s.Migrate(ctx)
			if err != nil || fmt.Sprint(applied) != fmt.Sprint(versionsFrom(16)) {
				t.Fatalf("Migrate applied %v, %v; want %v", applied, err, versionsFrom(16))
			}
			if err := s.EnqueueBackchannelLogouts(ctx, []store.BackchannelLogout{{ID: "bcl_new", ClientID: "acme-app",
				URI: "https://acme.example/bcl", Subject: "usr_2", SID: "sid-2", TenantID: "ten_acme", NextAttemptAt: now}}); err != nil {
				t.Fatal(err)
			}
			got, err := s.ClaimBackchannelLogouts(ctx, store.BackchannelClaim{Now: now, Limit: 10, Lease: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			tenants := map[string]string{}
			for _, d := range got {
				tenants[d.ID] = d.TenantID
			}
			if want := map[string]string{"bcl_old": "", "bcl_org": "ten_globex", "bcl_new": "ten_acme"}; fmt.Sprint(tenants) != fmt.Sprint(want) {
				t.Fatalf("claimed deliveries' organisations %v, want %v", tenants, want)
			}
		})
	}
}

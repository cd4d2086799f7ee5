package sqlstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// TestMigration0003ExistingClients applies migrations 1 and 2, writes
// clients as a version-2 binary would, then migrates: existing clients
// become third-party web clients that require PKCE, except the built-in
// client, which becomes first-party.
func TestMigration0003ExistingClients(t *testing.T) {
	for _, b := range migrationBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, db := openAtVersion(t, ctx, b.url(t), 2)
			now := time.Now().UTC()
			for _, id := range []string{"portcullis", "legacy"} {
				if err := db.Create(&v1OAuthClient{ID: id, Name: id, CreatedAt: now, UpdatedAt: now}).Error; err != nil {
					t.Fatalf("insert version-2 client %s: %v", id, err)
				}
			}
			// Migration 3 and every later one run over the version-2 data.
			want := versionsFrom(3)
			applied, err := s.Migrate(ctx)
			if err != nil || fmt.Sprint(applied) != fmt.Sprint(want) || applied[0] != 3 {
				t.Fatalf("Migrate applied %v, %v; want %v", applied, err, want)
			}
			for _, tc := range []struct {
				id         string
				firstParty bool
			}{{"portcullis", true}, {"legacy", false}} {
				c, err := s.GetClient(ctx, tc.id)
				if err != nil {
					t.Fatalf("GetClient(%s): %v", tc.id, err)
				}
				if c.FirstParty != tc.firstParty || c.ApplicationType != store.ApplicationWeb || !c.RequirePKCE ||
					c.RedirectURIs != nil || c.PostLogoutRedirectURIs != nil ||
					c.BackchannelLogoutURI != "" || c.LogoURI != "" || c.ClientURI != "" ||
					// migration 8: existing clients keep the body delivery.
					c.RefreshTokenDelivery != store.RefreshDeliveryBody || c.RefreshByCookie() || c.AllowedOrigins != nil {
					t.Fatalf("%s after migrations 3 to 8: %#v", tc.id, c)
				}
			}
		})
	}
}

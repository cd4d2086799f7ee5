package sqlstore

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/testservers"
)

// TestMigration0003ExistingClients applies migrations 1 and 2, writes
// clients as a version-2 binary would, then migrates: existing clients
// become third-party web clients that require PKCE, except the built-in
// client, which becomes first-party.
func TestMigration0003ExistingClients(t *testing.T) {
	for _, b := range []struct {
		name string
		url  func(t *testing.T) string
	}{
		{"postgres", func(t *testing.T) string { return testservers.PostgresURL(t) }},
		{"sqlite", func(t *testing.T) string { return "sqlite://" + filepath.Join(t.TempDir(), "portcullis.db") }},
	} {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, err := Open(ctx, b.url(t))
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer s.Close()
			db := s.DB().WithContext(ctx)
			if err := db.Migrator().CreateTable(&schemaMigration{}); err != nil {
				t.Fatalf("create schema_migrations: %v", err)
			}
			for _, m := range Migrations()[:2] {
				if err := m.Up(db); err != nil {
					t.Fatalf("migration %d: %v", m.Version, err)
				}
				if err := db.Create(&schemaMigration{Version: m.Version, Name: m.Name, AppliedAt: time.Now()}).Error; err != nil {
					t.Fatalf("record migration %d: %v", m.Version, err)
				}
			}
			now := time.Now().UTC()
			for _, id := range []string{"portcullis", "legacy"} {
				if err := db.Create(&v1OAuthClient{ID: id, Name: id, CreatedAt: now, UpdatedAt: now}).Error; err != nil {
					t.Fatalf("insert version-2 client %s: %v", id, err)
				}
			}
			// Migration 3 and every later one run over the version-2 data.
			var want []int
			for _, m := range Migrations()[2:] {
				want = append(want, m.Version)
			}
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

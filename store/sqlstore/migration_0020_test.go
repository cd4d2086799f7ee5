package sqlstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// TestMigration0020HomeTenant applies migrations 1 to 18, writes accounts
// as a version-18 binary would, then migrates: an account an organisation
// created (its tenant role written with the user, at the user's creation
// time) is marked that organisation's; one that joined an organisation
// later, one whose roles were moved into the default organisation, and one
// of no organisation are marked no organisation's. A new account created
// in an organisation is marked at once.
func TestMigration0020HomeTenant(t *testing.T) {
	for _, b := range migrationBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, db := openAtVersion(t, ctx, b.url(t), 18)
			if err := s.SyncRoles(ctx, []store.Role{{Name: "user", Level: 10}}); err != nil {
				t.Fatal(err)
			}
			acme := store.Tenant{Slug: "acme", Name: "Acme", Active: true}
			if err := s.CreateTenant(ctx, &acme); err != nil {
				t.Fatal(err)
			}
			users := map[string]store.User{}
			for _, email := range []string{"made@example.com", "joined@example.com", "moved@example.com", "loner@example.com"} {
				u := store.User{Email: email, Active: true}
				if email == "moved@example.com" {
					u.Roles = []string{"user"}
				}
				if err := s.CreateUser(ctx, &u); err != nil {
					t.Fatalf("create a version-18 user: %v", err)
				}
				users[email] = u
			}
			role := func(u store.User, at time.Time) {
				t.Helper()
				if err := db.Exec("INSERT INTO tenant_roles (tenant_id, user_id, role, created_at) VALUES (?, ?, ?, ?)",
					acme.ID, u.ID, "user", at).Error; err != nil {
					t.Fatalf("give a version-18 tenant role: %v", err)
				}
			}
			role(users["made@example.com"], users["made@example.com"].CreatedAt) // written with the user
			role(users["joined@example.com"], users["joined@example.com"].CreatedAt.Add(time.Millisecond))
			role(users["moved@example.com"], users["moved@example.com"].CreatedAt.Add(time.Second))
			applied, err := s.Migrate(ctx)
			if err != nil || fmt.Sprint(applied) != fmt.Sprint(versionsFrom(19)) {
				t.Fatalf("Migrate applied %v, %v; want %v", applied, err, versionsFrom(19))
			}
			want := map[string]string{"made@example.com": acme.ID, "joined@example.com": "", "moved@example.com": "", "loner@example.com": ""}
			for email, home := range want {
				if got, err := s.UserHomeTenant(ctx, users[email].ID); err != nil || got != home {
					t.Fatalf("%s: home tenant %q, %v; want %q", email, got, err, home)
				}
			}
			bot := store.User{Kind: store.UserMachine, Name: "bot", Active: true}
			if err := s.CreateUserInTenant(ctx, &bot, acme.ID, []string{"user"}); err != nil {
				t.Fatal(err)
			}
			if got, err := s.UserHomeTenant(ctx, bot.ID); err != nil || got != acme.ID {
				t.Fatalf("a new account of acme: home tenant %q, %v", got, err)
			}
		})
	}
}

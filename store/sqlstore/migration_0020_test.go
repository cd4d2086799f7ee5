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
			// Users written as version 18 wrote them (no column of a later
			// migration), read back for their creation time.
			users := map[string]store.User{}
			old := func(key string, machine bool) store.User {
				t.Helper()
				id := createOldUser(t, db, key+"@example.com")
				if machine {
					if err := db.Exec("UPDATE users SET kind = 'machine' WHERE id = ?", id).Error; err != nil {
						t.Fatal(err)
					}
				}
				var created time.Time
				if err := db.Raw("SELECT created_at FROM users WHERE id = ?", id).Scan(&created).Error; err != nil {
					t.Fatal(err)
				}
				users[key] = store.User{ID: id, CreatedAt: created}
				return users[key]
			}
			role := func(u store.User, at time.Time) {
				t.Helper()
				if err := db.Exec("INSERT INTO tenant_roles (tenant_id, user_id, role, created_at) VALUES (?, ?, ?, ?)",
					acme.ID, u.ID, "user", at).Error; err != nil {
					t.Fatalf("give a version-18 tenant role: %v", err)
				}
			}
			made, joined, moved := old("made", false), old("joined", false), old("moved", false)
			old("loner", false)
			role(made, made.CreatedAt) // written with the user
			role(joined, joined.CreatedAt.Add(time.Millisecond))
			role(moved, moved.CreatedAt.Add(time.Second))
			// An organisation's machine user made the version-18 way: the
			// user first, its role in the tenant later, the creation audited
			// under the tenant. Another, audited under no tenant, stays
			// unmarked.
			oldBot, strayBot := old("old-bot", true), old("stray-bot", true)
			for _, ev := range []struct {
				u      store.User
				tenant string
			}{{oldBot, acme.ID}, {strayBot, ""}} {
				role(ev.u, ev.u.CreatedAt.Add(3*time.Millisecond))
				if err := db.Exec(`INSERT INTO audit_events (id, occurred_at, action, outcome, actor_id, target_id, client_id, ip, user_agent, details, tenant_id)
					VALUES (?, ?, 'user.created', 'success', '', ?, '', '', '', '{}', ?)`,
					newID(AuditIDPrefix), time.Now().UTC(), ev.u.ID, ev.tenant).Error; err != nil {
					t.Fatalf("write a version-18 audit event: %v", err)
				}
			}
			applied, err := s.Migrate(ctx)
			if err != nil || fmt.Sprint(applied) != fmt.Sprint(versionsFrom(19)) {
				t.Fatalf("Migrate applied %v, %v; want %v", applied, err, versionsFrom(19))
			}
			want := map[string]string{"made": acme.ID, "joined": "", "moved": "", "loner": "", "old-bot": acme.ID, "stray-bot": ""}
			for key, home := range want {
				if got, err := s.UserHomeTenant(ctx, users[key].ID); err != nil || got != home {
					t.Fatalf("%s: home tenant %q, %v; want %q", key, got, err, home)
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

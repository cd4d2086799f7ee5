package sqlstore

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestMigration0021ExistingUsers applies the migrations before 21, writes
// users and audit events as an older binary would, then migrates: an
// account the audit says was registered publicly, with no password reset
// since, is marked password_unproven; one reset since registering, one
// created otherwise (no registration event) and one registered without a
// password (none) are not.
func TestMigration0021ExistingUsers(t *testing.T) {
	for _, b := range migrationBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, db := openAtVersion(t, ctx, b.url(t), 20)
			now := time.Now().UTC().Truncate(time.Millisecond)
			users := map[string]bool{} // id: want password_unproven
			for _, tc := range []struct {
				email  string
				hash   string
				events []string // actions on the user, in order
				want   bool
			}{
				{"registered@example.com", "$hash", []string{"user.registered", "email.verified", "password.changed"}, true},
				{"reset@example.com", "$hash", []string{"user.registered", "password.reset"}, false},
				{"reset-before@example.com", "$hash", []string{"password.reset", "user.registered"}, true},
				{"created@example.com", "$hash", []string{"user.created"}, false},
				{"nopassword@example.com", "", []string{"user.registered"}, false},
			} {
				id := createOldUser(t, db, tc.email)
				if err := db.Exec("UPDATE users SET password_hash = ? WHERE id = ?", tc.hash, id).Error; err != nil {
					t.Fatalf("set the hash of %s: %v", tc.email, err)
				}
				for i, action := range tc.events {
					if err := db.Exec(`INSERT INTO audit_events (id, occurred_at, action, outcome, actor_id, target_id, client_id, ip, user_agent, details)
						VALUES (?, ?, ?, 'success', ?, ?, '', '', '', '{}')`,
						newID(AuditIDPrefix), now.Add(time.Duration(i)*time.Second), action, id, id).Error; err != nil {
						t.Fatalf("insert %s of %s: %v", action, tc.email, err)
					}
				}
				users[id] = tc.want
			}
			applied, err := s.Migrate(ctx)
			if err != nil || fmt.Sprint(applied) != fmt.Sprint(versionsFrom(21)) {
				t.Fatalf("Migrate applied %v, %v; want %v", applied, err, versionsFrom(21))
			}
			for id, want := range users {
				u, err := s.GetUser(ctx, id)
				if err != nil {
					t.Fatalf("GetUser %s: %v", id, err)
				}
				if u.PasswordUnproven != want {
					t.Errorf("%s: password_unproven = %v, want %v", u.Email, u.PasswordUnproven, want)
				}
			}
		})
	}
}

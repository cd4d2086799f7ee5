package sqlstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// TestMigration0022EmailKeys writes users and an invite as binaries before
// 22 did (email_lower = strings.ToLower), then migrates: each key becomes
// store.EmailKey of the address, so "b\u0130ll@example.com" (another
// mailbox) no longer holds bill@example.com, which can then register and be
// invited; ASCII addresses keep their keys (found by a review).
func TestMigration0022EmailKeys(t *testing.T) {
	for _, b := range migrationBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, db := openAtVersion(t, ctx, b.url(t), 21)
			emails := []string{
				"b\u0130ll@example.com",   // old key bill@example.com
				"\u212Aate@Example.com",   // old key kate@example.com
				"\u00C9lise@example.com",  // old key \u00E9lise@example.com
				"\u00E9mile@example.com",  // already its own key
				"Plain.Ascii@Example.COM", // ASCII: unchanged
			}
			ids := map[string]string{}
			for _, e := range emails {
				ids[e] = createOldUser(t, db, e)
			}
			now := time.Now().UTC().Truncate(time.Millisecond)
			inv := v1Invite{ID: newID(InviteIDPrefix), Email: "B\u0130LL@example.com", EmailLower: "bill@example.com", Role: "user",
				TokenHash: []byte("old invite token hash"), InvitedBy: "usr_inviter", Status: string(store.InvitePending),
				ExpiresAt: now.Add(time.Hour), CreatedAt: now}
			if err := db.Create(&inv).Error; err != nil {
				t.Fatalf("create an old invite: %v", err)
			}

			applied, err := s.Migrate(ctx)
			if err != nil || fmt.Sprint(applied) != fmt.Sprint(versionsFrom(22)) {
				t.Fatalf("Migrate applied %v, %v; want %v", applied, err, versionsFrom(22))
			}
			for _, e := range emails {
				var key string
				if err := db.Raw("SELECT email_lower FROM users WHERE id = ?", ids[e]).Scan(&key).Error; err != nil {
					t.Fatalf("read the key of %q: %v", e, err)
				}
				if want := store.EmailKey(e); key != want || v22EmailKey(e) != want {
					t.Errorf("%q: key %q, migration's rule %q; want store.EmailKey %q", e, key, v22EmailKey(e), want)
				}
				if u, err := s.GetUserByEmail(ctx, e); err != nil || u.ID != ids[e] {
					t.Errorf("GetUserByEmail(%q) = %s, %v; want %s", e, u.ID, err, ids[e])
				}
			}
			var invKey string
			if err := db.Raw("SELECT email_lower FROM invites WHERE id = ?", inv.ID).Scan(&invKey).Error; err != nil || invKey != "b\u0130ll@example.com" {
				t.Errorf("the invite's key = %q, %v; want %q", invKey, err, "b\u0130ll@example.com")
			}

			// bill@example.com is free: it can be invited (the other
			// mailbox's invite is not its to supersede) and register.
			owner := &store.Invite{Email: "bill@example.com", Role: "user", TokenHash: []byte("new invite token hash"),
				InvitedBy: "usr_inviter", ExpiresAt: now.Add(time.Hour)}
			var pending []store.Invite
			if err := s.CreateInvite(ctx, owner, func(p []store.Invite) error { pending = p; return nil }); err != nil || len(pending) != 0 {
				t.Errorf("CreateInvite(bill@example.com) = %v, would replace %+v; want none", err, pending)
			}
			if _, err := s.GetUserByEmail(ctx, "bill@example.com"); err == nil {
				t.Errorf("GetUserByEmail(bill@example.com) found %q's account", "b\u0130ll@example.com")
			}
			bill := &store.User{Email: "bill@example.com", Name: "Bill", Active: true}
			if err := s.CreateUser(ctx, bill); err != nil {
				t.Fatalf("CreateUser(bill@example.com) after the migration: %v", err)
			}
			if u, err := s.GetUserByEmail(ctx, "BILL@example.com"); err != nil || u.ID != bill.ID {
				t.Errorf("GetUserByEmail(BILL@example.com) = %s, %v; want %s", u.ID, err, bill.ID)
			}
		})
	}
}

package app_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/app"
	"github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// TestPurgeCoversOneTimeLinks: the periodic purge (app.Purge, what
// purgeLoop runs) deletes reset links and invites past their retention
// from the relational store, beside the token state's expired rows, on
// every backend; a live link stays. Found by a review: the periodic purge
// covered only the token state, and these rows were kept for good.
func TestPurgeCoversOneTimeLinks(t *testing.T) {
	for _, b := range backends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			core := openCore(t, servertest.NewEnv(t, b))
			states, err := app.OpenTokenState(core.Config, core.Store, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = states.Close() })
			ctx := context.Background()
			now := time.Now()
			u := &store.User{Email: "olga@example.com", Name: "Olga", PasswordHash: "$h", Active: true}
			if err := core.Store.CreateUser(ctx, u); err != nil {
				t.Fatalf("CreateUser: %v", err)
			}
			link := func(hash string, expires time.Time) []byte {
				tok := &store.UserToken{UserID: u.ID, Purpose: store.PurposePasswordReset, TokenHash: []byte(hash), ExpiresAt: expires}
				if err := core.Store.CreateUserToken(ctx, tok); err != nil {
					t.Fatalf("CreateUserToken: %v", err)
				}
				return tok.TokenHash
			}
			old := link("old-link", now.Add(-store.UserTokenKeptFor-time.Minute))
			live := link("live-link", now.Add(time.Hour))
			inv := &store.Invite{Email: "ivan@example.com", Role: core.Policy.RoleNames()[0], TokenHash: []byte("old-invite"),
				InvitedBy: u.ID, ExpiresAt: now.Add(-store.InviteKeptFor - time.Minute)}
			if err := core.Store.CreateInvite(ctx, inv, nil); err != nil {
				t.Fatalf("CreateInvite: %v", err)
			}

			if err := app.Purge(ctx, core.Store, states, now); err != nil {
				t.Fatalf("Purge: %v", err)
			}
			if _, err := core.Store.ConsumeUserToken(ctx, store.PurposePasswordReset, old, now, nil); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("reset link past its retention after the purge: %v, want not found", err)
			}
			if _, err := core.Store.GetInvite(ctx, inv.ID); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("invite past its retention after the purge: %v, want not found", err)
			}
			if _, err := core.Store.ConsumeUserToken(ctx, store.PurposePasswordReset, live, now, nil); err != nil {
				t.Errorf("live reset link after the purge: %v", err)
			}
		})
	}
}

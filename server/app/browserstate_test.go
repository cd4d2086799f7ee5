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

// TestBrowserStateWiring: the token state a process opens also keeps
// single-use records and browser sessions, on the same backend as its
// families (Redis when configured, else SQL), so ending every session of a
// user through State ends their browser sessions.
func TestBrowserStateWiring(t *testing.T) {
	for _, b := range backends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			core := openCore(t, servertest.NewEnv(t, b))
			states, err := app.OpenTokenState(core.Config, core.Store, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = states.Close() })
			if states.Once != states.State.(store.SingleUse) || states.Browser != states.State.(store.BrowserSessions) {
				t.Fatalf("Once %T and Browser %T are not the token state %T", states.Once, states.Browser, states.State)
			}
			ctx := context.Background()
			now := time.UnixMilli(time.Now().UnixMilli()).UTC()
			if err := states.Once.PutOnce(ctx, store.OnceAuthCode, []byte("code-hash"), []byte("v"), now.Add(time.Minute)); err != nil {
				t.Fatalf("PutOnce: %v", err)
			}
			if _, err := states.Once.TakeOnce(ctx, store.OnceAuthCode, []byte("code-hash"), now); err != nil {
				t.Fatalf("TakeOnce: %v", err)
			}
			if _, err := states.Once.TakeOnce(ctx, store.OnceAuthCode, []byte("code-hash"), now); !errors.Is(err, store.ErrTokenUsed) {
				t.Fatalf("second TakeOnce: %v, want ErrTokenUsed", err)
			}
			bs := store.BrowserSession{ID: "bs-wiring", UserID: "usr_wiring", AuthTime: now, CreatedAt: now, LastUsedAt: now,
				IdleTTL: time.Hour, AbsoluteExpiry: now.Add(time.Hour)}
			if _, err := states.Browser.CreateBrowserSession(ctx, bs, []byte("cookie-hash")); err != nil {
				t.Fatalf("CreateBrowserSession: %v", err)
			}
			if err := states.State.RevokeUserSessions(ctx, "usr_wiring", now); err != nil {
				t.Fatalf("RevokeUserSessions: %v", err)
			}
			if _, err := states.Browser.FindBrowserSession(ctx, []byte("cookie-hash"), now.Add(time.Second)); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("browser session after the user's cut-off: %v, want ErrNotFound", err)
			}
		})
	}
}

package keys_test

import (
	"context"
	"errors"
	"testing"

	"github.com/portcullis-auth/portcullis/keys"
	"github.com/portcullis-auth/portcullis/keys/keystest"
	"github.com/portcullis-auth/portcullis/store"
)

// TestKeyChangeReloadAfterCommit: a rotation or revocation that was stored
// is reloaded even when the caller's context ends right after the commit
// (the reload is bounded by the sync interval, not by the caller), and a
// reload that fails returns the stored change's result with an error
// wrapping keys.ErrReloadAfterCommit, never an error alone, nor a second
// attempt. Before, the caller going away failed the reload, and either
// failure returned an error that callers took for a change not made, so
// the change went unaudited.
func TestKeyChangeReloadAfterCommit(t *testing.T) {
	for _, backend := range backends {
		for _, tc := range []struct {
			name       string
			clientGone bool // else the first reload fails
		}{
			{"client_gone", true},
			{"reload_fails", false},
		} {
			t.Run(backend+"/"+tc.name, func(t *testing.T) {
				db := openStore(t, backend)
				st := &keystest.AfterCommitStore{Store: db}
				m := initManager(t, st, ring(t, kek(t)), keys.AlgEdDSA, newClock())
				// after checks the answer to a change, then reloads.
				after := func(t *testing.T, err error, before string) {
					t.Helper()
					if tc.clientGone {
						if err != nil {
							t.Fatalf("the change was stored and the keys can be reloaded: %v", err)
						}
						if m.ActiveKID() == before {
							t.Fatal("the reload after the change was cut short by the caller")
						}
						return
					}
					if !errors.Is(err, keys.ErrReloadAfterCommit) {
						t.Fatalf("a reload failing after the change: got %v, want keys.ErrReloadAfterCommit", err)
					}
					if err := m.Sync(context.Background()); err != nil {
						t.Fatal(err)
					}
				}
				arm := func() context.Context {
					ctx, cancel := context.WithCancel(context.Background())
					t.Cleanup(cancel)
					if tc.clientGone {
						st.Arm(cancel, false)
					} else {
						st.Arm(nil, true)
					}
					return ctx
				}

				active := m.ActiveKID()
				rev, err := m.Revoke(arm(), active)
				after(t, err, active)
				if rev.Revoked.KID != active || rev.PreviousState != store.KeyActive || rev.AlreadyRevoked || rev.Activated == nil || rev.Next == nil {
					t.Fatalf("revocation of the active key: %+v", rev)
				}
				if m.ActiveKID() != rev.Activated.KID {
					t.Fatalf("active %s, want the promoted %s", m.ActiveKID(), rev.Activated.KID)
				}
				s := statesOf(t, m)
				if len(s[store.KeyRevoked]) != 1 || len(s[store.KeyActive]) != 1 || len(s[store.KeyNext]) != 1 {
					t.Fatalf("after one revocation: %+v", s)
				}
				if again, err := m.Revoke(context.Background(), active); err != nil || !again.AlreadyRevoked {
					t.Fatalf("revoking again: %+v, %v", again, err)
				}

				before := m.ActiveKID()
				rot, err := m.Rotate(arm(), true)
				after(t, err, before)
				if rot.Retired.KID != before || rot.Activated.KID == "" || rot.Next.KID == "" || m.ActiveKID() != rot.Activated.KID {
					t.Fatalf("rotation: %+v, active %s", rot, m.ActiveKID())
				}
				if s := statesOf(t, m); len(s[store.KeyRetired]) != 1 || len(s[store.KeyActive]) != 1 || len(s[store.KeyNext]) != 1 {
					t.Fatalf("after one rotation: %+v", s)
				}
			})
		}
	}
}

package accounts_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/portcullis-auth/portcullis/keys"
	"github.com/portcullis-auth/portcullis/keys/keystest"
	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/store"
)

// TestKeyChangeAuditedWhenReloadFails: a rotation or revocation that was
// stored is audited whatever the reload after it does. The admin's client
// going away right after the change no longer cuts the reload short (the
// change is answered and the instance holds the new keys); a reload that
// fails is answered 503 saying the change was made, and the change is
// audited. Before, both answered 503 with no key.revoked or key.rotated
// event, so the revocation of the active key (and the promotion of the
// next) went unrecorded and its retry was audited as already revoked.
func TestKeyChangeAuditedWhenReloadFails(t *testing.T) {
	in, fx, smtp := deployment(t)
	core := in.App.Core
	root := fx.User(t, "root@example.com", "root long passphrase", "super_admin")
	ks := &keystest.AfterCommitStore{Store: core.Store}
	m, err := keys.NewManager(keys.Config{Store: ks, KEKs: core.KEKs, Alg: core.Config.SigningAlg, RSABits: core.Config.RSABits,
		JWKSMaxAge: core.Config.JWKSMaxAge, SyncInterval: core.Config.KeySyncInterval, MaxTokenTTL: core.Config.RevocationHorizon()})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Init(t.Context()); err != nil {
		t.Fatal(err)
	}
	svc := serviceEnding(t, in, smtp, &endingSessions{Service: in.App.Tokens}, func(d *accounts.Deps) { d.Keys, d.Revoker = m, m })
	events := func(t *testing.T, action, key, value string) []store.AuditEvent {
		t.Helper()
		page, err := core.Store.ListAudit(t.Context(), store.AuditFilter{Action: action, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		var out []store.AuditEvent
		for _, e := range page.Items {
			if e.Details[key] == value || key == "target" && e.TargetID == value {
				out = append(out, e)
			}
		}
		return out
	}

	for _, tc := range []struct {
		name       string
		clientGone bool // else the first reload fails
	}{
		{"client_gone_after_commit", true},
		{"reload_fails_after_commit", false},
	} {
		// check is the answer to the change: nil once the keys were
		// reloaded, else 503 saying what was done.
		check := func(t *testing.T, err error, said string) {
			t.Helper()
			if tc.clientGone {
				if err != nil {
					t.Errorf("the change was stored and the keys can be reloaded: answered %v", err)
				}
				return
			}
			var ae *apierr.Error
			if !errors.As(err, &ae) || ae.Status != 503 || !strings.Contains(ae.Description, said) {
				t.Errorf("a change stored but not reloaded: got %v, want 503 saying %q", err, said)
			}
			if !errors.Is(err, keys.ErrReloadAfterCommit) {
				t.Errorf("the cause is not keys.ErrReloadAfterCommit: %v", err)
			}
		}
		// armed reloads the keys, arms the store for tc's failure after the
		// next commit and returns the request's context and the active kid.
		armed := func(t *testing.T) (context.Context, string) {
			t.Helper()
			if err := m.Sync(t.Context()); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			t.Cleanup(cancel)
			if tc.clientGone {
				ks.Arm(cancel, false)
			} else {
				ks.Arm(nil, true)
			}
			return ctx, m.ActiveKID()
		}
		t.Run(tc.name+"/revoke_active", func(t *testing.T) {
			ctx, kid := armed(t)
			_, err := svc.RevokeKey(ctx, actor(root), kid)
			check(t, err, "was revoked")
			if tc.clientGone && m.ActiveKID() == kid {
				t.Error("the revoked key still signs on this instance: the reload was cut short")
			}
			got := events(t, "key.revoked", "target", kid)
			if len(got) != 1 || got[0].Details["previous_state"] != string(store.KeyActive) || got[0].Details["already_revoked"] != "false" {
				t.Fatalf("key.revoked events of %s: %+v, want one of the active key", kid, got)
			}
			rev, err := svc.RevokeKey(t.Context(), actor(root), kid)
			if err != nil || !rev.AlreadyRevoked {
				t.Fatalf("retry: %+v, %v", rev, err)
			}
			if n := len(events(t, "key.revoked", "target", kid)); n != 2 {
				t.Fatalf("%d key.revoked events after the retry, want 2", n)
			}
		})
		t.Run(tc.name+"/rotate", func(t *testing.T) {
			ctx, before := armed(t)
			_, err := svc.RotateKeys(ctx, actor(root), true)
			check(t, err, "were rotated")
			if tc.clientGone && m.ActiveKID() == before {
				t.Error("the retired key still signs on this instance: the reload was cut short")
			}
			if got := events(t, "key.rotated", "retired", before); len(got) != 1 || got[0].Details["forced"] != "true" {
				t.Fatalf("key.rotated events retiring %s: %+v, want one", before, got)
			}
		})
	}
}

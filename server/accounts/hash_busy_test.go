package accounts_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/policy/password"
	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/clients"
)

// busyHasher is the real hasher, which, while busy is set, hashes as it
// does when the request's deadline passes while it waits for a hashing
// slot: under a context already ended, so no hash runs.
type busyHasher struct {
	accounts.Hasher
	busy atomic.Bool
}

func (h *busyHasher) Hash(ctx context.Context, pw string) (string, error) {
	if h.busy.Load() {
		ended, cancel := context.WithDeadline(ctx, time.Now())
		defer cancel()
		return h.Hasher.Hash(ended, pw)
	}
	return h.Hasher.Hash(ctx, pw)
}

// TestHashBusyIs503: every account operation that hashes a new password
// (registration, reset, invite acceptance, password change, temporary
// password) answers a hash that never ran because the request ended
// waiting for a hashing slot with 503 temporarily_unavailable, as the
// password check does, never 500; nothing is used up, so the same request
// succeeds once a slot is free. Found by a review: each wrapped the error
// as a 500 server_error (logged at Error), the test failed before the
// change.
func TestHashBusyIs503(t *testing.T) {
	in, fx, smtp := deployment(t)
	ctx := context.Background()
	var hasher *busyHasher
	svc := newService(t, in, smtp, func(c *accounts.Config) { c.PublicRegistration = true }, func(d *accounts.Deps) {
		hasher = &busyHasher{Hasher: d.Hasher} // the password check keeps the real one
		d.Hasher = hasher
	})
	fx.Client(t, clients.Spec{ID: "web", Name: "Web"})
	root := fx.User(t, "root@example.com", "root long passphrase", "super_admin")
	const oldPW, newPW = "the old long passphrase", "a brand new long passphrase"
	m := accounts.Meta{IP: "192.0.2.9", UserAgent: "test"}
	lastLink := func(t *testing.T) string {
		t.Helper()
		msgs := smtp.Messages()
		l := msgs[len(msgs)-1].Link(t)
		return l[strings.Index(l, "token=")+len("token="):]
	}
	cases := []struct {
		name string
		// prepare returns the operation, made the same way each time it runs.
		prepare func(t *testing.T) func() error
	}{
		{"register", func(t *testing.T) func() error {
			return func() error {
				_, err := svc.Register(ctx, m, accounts.RegisterRequest{Email: "newcomer@example.com", Password: newPW})
				return err
			}
		}},
		{"password_reset", func(t *testing.T) func() error {
			u := fx.User(t, "reset@example.com", oldPW, "user")
			if _, err := svc.RequestPasswordReset(ctx, actor(root), u.ID); err != nil {
				t.Fatal(err)
			}
			link := lastLink(t)
			return func() error { return svc.ResetPassword(ctx, m, link, newPW) }
		}},
		{"invite_accept", func(t *testing.T) func() error {
			if _, err := svc.CreateInvite(ctx, actor(root), "guest@example.com", "user"); err != nil {
				t.Fatal(err)
			}
			tok := lastLink(t)
			return func() error {
				_, err := svc.AcceptInvite(ctx, m, accounts.AcceptInviteRequest{Token: tok, Password: newPW})
				return err
			}
		}},
		{"password_change", func(t *testing.T) func() error {
			u := fx.User(t, "change@example.com", oldPW, "user")
			return func() error {
				_, err := svc.ChangePassword(ctx, accounts.Actor{ID: u.ID, Meta: accounts.Meta{IP: "192.0.2.9", UserAgent: "test", ClientID: "web"}},
					accounts.ChangePasswordRequest{CurrentPassword: oldPW, NewPassword: newPW})
				return err
			}
		}},
		{"temporary_password", func(t *testing.T) func() error {
			u := fx.User(t, "temp@example.com", oldPW, "user")
			return func() error { _, err := svc.SetTemporaryPassword(ctx, actor(root), u.ID, newPW); return err }
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			run := tc.prepare(t)
			hasher.busy.Store(true)
			err := run()
			hasher.busy.Store(false)
			if ae := apierr.From(err); err == nil || ae.Status != http.StatusServiceUnavailable || ae.Code != "temporarily_unavailable" ||
				!errors.Is(err, password.ErrBusy) {
				t.Fatalf("fail/busy: %d %s (%v), want 503 temporarily_unavailable caused by password.ErrBusy", ae.Status, ae.Code, err)
			}
			if err := run(); err != nil {
				t.Fatalf("ok/retry_with_a_free_slot: %v", err)
			}
		})
	}
}

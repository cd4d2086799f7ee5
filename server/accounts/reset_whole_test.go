package accounts_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/store"
)

// TestResetIsWholeOrNothing: a password reset sets the password, spends
// the link, unlinks the identities of providers that do not vouch for the
// address and revokes the API keys together, or does none of it. Each
// failure is injected around the real store in a step of the reset (the
// database failing, or the request's context ending once the link is
// redeemed); the answer is then an error with the old password in place,
// the identity linked, the key live and the link usable, and the retry
// with the same link does all of it. Before, the password was set and the
// link spent by one transaction, then the identities and keys were handled
// by others: a failure there left the password changed, the link "already
// used", a squatter's identity linked and the key live, unaudited. Now
// those steps are the redemption's own transaction (the wrappers of the
// separate calls are no longer reached), and a context ended once the
// link is redeemed still lets the audits and the key follow-up finish.
func TestResetIsWholeOrNothing(t *testing.T) {
	in, fx, smtp := deployment(t)
	core := in.App.Core
	root := fx.User(t, "root@example.com", "root long passphrase", "super_admin")
	fs := &faultyStore{Store: core.Store}
	fk := &faultyKeys{APIKeys: in.App.APIKeys}
	sessions := &endingSessions{Service: in.App.Tokens}
	svc := serviceEnding(t, in, smtp, sessions, func(d *accounts.Deps) { d.Store, d.APIKeys = fs, fk })
	const oldPW, newPW = "the old long passphrase", "a brand new long passphrase"
	unavailable := apierr.ErrTemporarilyUnavailable

	for _, tc := range []struct {
		name  string
		store func(ctx context.Context, op string) error
		keys  func(op string) error
		// cancel ends the request's context when the store does op.
		cancel string
	}{
		{name: "listing_identities_fails", store: func(_ context.Context, op string) error {
			if op == "list_identities" {
				return unavailable
			}
			return nil
		}},
		{name: "unlinking_fails", store: func(_ context.Context, op string) error {
			if op == "unlink_identity" {
				return unavailable
			}
			return nil
		}},
		{name: "listing_keys_fails", keys: func(op string) error {
			if op == "list_keys" {
				return unavailable
			}
			return nil
		}},
		{name: "revoking_fails", keys: func(op string) error {
			if op == "revoke_key" {
				return unavailable
			}
			return nil
		}},
		{name: "client_gone_once_redeemed", cancel: "consumed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			u := fx.User(t, tc.name+"@example.com", oldPW, "user")
			before, err := core.Store.GetUser(ctx, u.ID)
			if err != nil {
				t.Fatal(err)
			}
			fi := store.FederatedIdentity{Provider: "squatter", Issuer: "https://squatter.example", Subject: "sub-" + tc.name, UserID: u.ID,
				Email: u.Email}
			if err := core.Store.LinkFederatedIdentity(ctx, &fi); err != nil {
				t.Fatal(err)
			}
			raw := make([]byte, 32)
			_, _ = rand.Read(raw)
			hash := sha256.Sum256(raw)
			key := store.APIKey{OwnerID: u.ID, Name: "ci", Hint: "pcak_abc...wxyz", Hash: hash[:], Scopes: []string{},
				ExpiresAt: time.Now().Add(24 * time.Hour), CreatedBy: u.ID}
			if err := core.Store.CreateAPIKey(ctx, &key); err != nil {
				t.Fatal(err)
			}
			if _, err := svc.RequestPasswordReset(ctx, actor(root), u.ID); err != nil {
				t.Fatal(err)
			}
			link := smtp.WaitFor(t, u.Email, 5*time.Second).Token(t)

			rctx, cancel := context.WithCancel(ctx)
			defer cancel()
			fs.fail, fk.fail = tc.store, tc.keys
			if tc.cancel != "" {
				fs.fail = func(_ context.Context, op string) error {
					if op == tc.cancel {
						cancel()
					}
					return nil
				}
			}
			err = svc.ResetPassword(rctx, accounts.Meta{IP: "192.0.2.9", UserAgent: "test"}, link, newPW)
			fs.fail, fk.fail = nil, nil

			whole := func(t *testing.T) {
				t.Helper()
				got, err := core.Store.GetUser(ctx, u.ID)
				if err != nil {
					t.Fatal(err)
				}
				if got.PasswordHash == before.PasswordHash {
					t.Error("the password is not the new one")
				}
				if ids, err := core.Store.ListFederatedIdentities(ctx, u.ID); err != nil || len(ids) != 0 {
					t.Errorf("identities after the reset: %+v, %v; want none", ids, err)
				}
				if k, err := core.Store.GetAPIKeyByHash(ctx, hash[:]); err != nil || !k.Revoked() {
					t.Errorf("the key after the reset: %+v, %v; want revoked", k, err)
				}
				for _, action := range []string{"password.reset", "identity.unlinked", "api_key.revoked"} {
					page, err := core.Store.ListAudit(ctx, store.AuditFilter{TargetID: u.ID, Action: action})
					if err != nil || len(page.Items) != 1 {
						t.Errorf("%s events: %d, %v; want one", action, len(page.Items), err)
					}
				}
			}
			if err == nil {
				whole(t)
				return
			}
			// Nothing changed, and the link still works.
			got, gerr := core.Store.GetUser(ctx, u.ID)
			if gerr != nil {
				t.Fatal(gerr)
			}
			if got.PasswordHash != before.PasswordHash {
				t.Errorf("the reset answered %v but set the password", err)
			}
			if ids, lerr := core.Store.ListFederatedIdentities(ctx, u.ID); lerr != nil || len(ids) != 1 {
				t.Errorf("the reset answered %v; identities %+v, %v; want the one linked", err, ids, lerr)
			}
			if k, kerr := core.Store.GetAPIKeyByHash(ctx, hash[:]); kerr != nil || k.Revoked() {
				t.Errorf("the reset answered %v; the key %+v, %v; want it live", err, k, kerr)
			}
			if rerr := svc.ResetPassword(ctx, accounts.Meta{IP: "192.0.2.9", UserAgent: "test"}, link, newPW); rerr != nil {
				t.Fatalf("the reset answered %v; the retry with the same link: %v", err, rerr)
			}
			whole(t)
		})
	}
}

package accounts_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/mail"
	"github.com/portcullis-auth/portcullis/server/mail/mailtest"
	"github.com/portcullis-auth/portcullis/server/passcheck"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/testservers"
)

func TestMain(m *testing.M) { testservers.Main(m) }

// deployment runs a real instance (PostgreSQL + Redis) whose emails go to a
// loopback SMTP server; the tests call its accounts service directly.
func deployment(t *testing.T) (*st.Instance, *st.Fixtures, *mailtest.Server) {
	t.Helper()
	smtp := mailtest.NewServer(t)
	env := st.NewEnv(t, st.PostgresRedis)
	env["PORTCULLIS_SMTP_URL"] = smtp.URL()
	in := st.Start(t, env)
	return in, st.NewFixtures(t, in.App.Core), smtp
}

// checker is the one password check over the instance's store.
func checker(t *testing.T, in *st.Instance, h passcheck.Hasher) *passcheck.Checker {
	t.Helper()
	c, err := passcheck.New(passcheck.Deps{Users: in.App.Core.Store, Hasher: h})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func actor(u store.User) accounts.Actor {
	return accounts.Actor{ID: u.ID, Meta: accounts.Meta{IP: "192.0.2.1", UserAgent: "test", ClientID: "test"}}
}

// TestCeilingUsesCurrentRoles: every refusal of the ceiling is a 403, and the
// actor's roles are read from the store at the time of the request, not
// taken from their token.
func TestCeilingUsesCurrentRoles(t *testing.T) {
	in, fx, _ := deployment(t)
	svc := in.App.Accounts
	ctx := context.Background()
	root := fx.User(t, "root@example.com", "root long passphrase", "super_admin")
	adm := fx.User(t, "adm@example.com", "adm long passphrase", "admin")
	peer := fx.User(t, "peer@example.com", "peer long passphrase", "admin")
	usr := fx.User(t, "usr@example.com", "usr long passphrase", "user")

	for _, tc := range []struct {
		name string
		run  func() error
		want *apierr.Error // nil: success
	}{
		{"ok/admin_invites_user", func() error { _, err := svc.CreateInvite(ctx, actor(adm), "n1@example.com", "user"); return err }, nil},
		{"fail/admin_invites_admin", func() error { _, err := svc.CreateInvite(ctx, actor(adm), "n2@example.com", "admin"); return err }, apierr.ErrForbidden},
		{"fail/user_invites_user", func() error { _, err := svc.CreateInvite(ctx, actor(usr), "n3@example.com", "user"); return err }, apierr.ErrForbidden},
		{"fail/unknown_role", func() error { _, err := svc.CreateInvite(ctx, actor(root), "n4@example.com", "pope"); return err }, apierr.ErrInvalidRequest},
		{"ok/root_invites_super_admin", func() error {
			_, err := svc.CreateInvite(ctx, actor(root), "n5@example.com", "super_admin")
			return err
		}, nil},
		{"fail/admin_grants_admin", func() error { _, err := svc.GrantRole(ctx, actor(adm), usr.ID, "admin"); return err }, apierr.ErrForbidden},
		{"fail/admin_manages_peer", func() error { return svc.RevokeSessions(ctx, actor(adm), peer.ID) }, apierr.ErrForbidden},
		{"fail/self_roles", func() error { _, err := svc.RevokeRole(ctx, actor(root), root.ID, "super_admin"); return err }, apierr.ErrForbidden},
		{"fail/self_active", func() error {
			f := false
			_, err := svc.UpdateUser(ctx, actor(adm), adm.ID, accounts.UserPatch{Active: &f})
			return err
		}, apierr.ErrForbidden},
		{"ok/admin_manages_user", func() error { return svc.RevokeSessions(ctx, actor(adm), usr.ID) }, nil},
		{"fail/unknown_target", func() error { return svc.RevokeSessions(ctx, actor(adm), "usr_nobody") }, apierr.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("error %v, want %s %d", err, tc.want.Code, tc.want.Status)
			}
		})
	}

	// The admin loses the role in the store: their next request is refused
	// although any token they hold would still say admin.
	if _, err := in.App.Core.Store.RevokeRole(ctx, adm.ID, "admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateInvite(ctx, actor(adm), "n6@example.com", "user"); !errors.Is(err, apierr.ErrForbidden) {
		t.Fatalf("invite by a former admin: %v", err)
	}
	// A deactivated or deleted actor is refused too.
	if _, err := in.App.Core.Store.UpdateUser(ctx, peer.ID, func(u *store.User) error { u.Active = false; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateInvite(ctx, actor(peer), "n7@example.com", "user"); !errors.Is(err, apierr.ErrForbidden) {
		t.Fatalf("invite by a deactivated admin: %v", err)
	}
	if err := in.App.Core.Store.DeleteUser(ctx, peer.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateInvite(ctx, actor(peer), "n8@example.com", "user"); !errors.Is(err, apierr.ErrInvalidToken) {
		t.Fatalf("invite by a deleted admin: %v", err)
	}
}

// gatedSender delivers through a real SMTP sender once its gate opens.
type gatedSender struct {
	gate    chan struct{}
	started chan struct{}
	next    mail.Sender
}

func (g *gatedSender) Send(ctx context.Context, msg mail.Message) error {
	g.started <- struct{}{}
	select {
	case <-g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.next.Send(ctx, msg)
}

// TestForgotPasswordInBackground: ForgotPassword answers before the lookup
// and the email are done, for known and unknown addresses alike; beyond
// MaxBackground jobs the answer is the same and the extra job is dropped.
func TestForgotPasswordInBackground(t *testing.T) {
	in, fx, smtp := deployment(t)
	ctx := context.Background()
	fx.User(t, "bea@example.com", "bea long passphrase", "user")
	var sender *gatedSender
	svc := newService(t, in, smtp, func(c *accounts.Config) {
		c.MaxBackground, c.BackgroundTimeout = 1, 20*time.Second
	}, func(d *accounts.Deps) {
		sender = &gatedSender{gate: make(chan struct{}), started: make(chan struct{}, 4), next: d.Mail}
		d.Mail = sender
	})
	m := accounts.Meta{IP: "192.0.2.7", UserAgent: "test"}
	// The job starts once the request is over (its context done).
	reqCtx, endRequest := context.WithCancel(ctx)
	if err := svc.ForgotPassword(reqCtx, m, "bea@example.com"); err != nil {
		t.Fatal(err)
	}
	endRequest()
	<-sender.started // the job is waiting to send: the call above returned first
	// The only slot is taken: the next request is answered alike, its job dropped.
	if err := svc.ForgotPassword(ctx, m, "bea@example.com"); err != nil {
		t.Fatal(err)
	}
	close(sender.gate)
	svc.Wait()
	got := smtp.WaitFor(t, "bea@example.com", 5*time.Second)
	if !strings.Contains(got.Link(t), "https://id.example.test/reset-password?token=") {
		t.Fatalf("link %q", got.Link(t))
	}
	if n := len(smtp.Messages()); n != 1 {
		t.Fatalf("%d messages, want 1 (the second job was dropped)", n)
	}
	// Unknown address: same answer; the job records a failed request.
	reqCtx, endRequest = context.WithCancel(ctx)
	if err := svc.ForgotPassword(reqCtx, m, "nobody@example.com"); err != nil {
		t.Fatal(err)
	}
	endRequest()
	svc.Wait()
	page, err := in.App.Core.Store.ListAudit(ctx, store.AuditFilter{Action: "password.reset_requested"})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Items) != 2 || page.Items[0].Outcome != store.OutcomeFailure || page.Items[0].TargetID != "" ||
		page.Items[0].Details["reason"] != "unknown_account" || page.Items[1].Outcome != store.OutcomeSuccess {
		t.Fatalf("audit: %+v", page.Items)
	}
	// A malformed address is refused whether or not it could exist.
	if err := svc.ForgotPassword(ctx, m, "not an address"); !errors.Is(err, apierr.ErrInvalidRequest) {
		t.Fatalf("malformed address: %v", err)
	}
}

func TestNewChecksDependencies(t *testing.T) {
	_, err := accounts.New(accounts.Config{PublicURL: "https://x.example", InviteTTL: 1, ResetTTL: 1, VerifyEmailTTL: 1}, accounts.Deps{})
	if err == nil || !strings.Contains(err.Error(), "Store") || !strings.Contains(err.Error(), "Templates") {
		t.Fatalf("missing deps: %v", err)
	}
}

// countingHasher counts the hashes computed by Hash.
type countingHasher struct {
	accounts.Hasher
	hashes atomic.Int64
}

func (h *countingHasher) Hash(ctx context.Context, pw string) (string, error) {
	h.hashes.Add(1)
	return h.Hasher.Hash(ctx, pw)
}

// TestResetChecksLinkBeforeHashing: an unknown, expired or used reset link,
// or a password the rules refuse, costs no password hash; a usable link
// costs one and is consumed once. Fails before this change: every request
// with a well-formed link hashed the new password before looking at it.
func TestResetChecksLinkBeforeHashing(t *testing.T) {
	in, fx, smtp := deployment(t)
	ctx := context.Background()
	u := fx.User(t, "rosa@example.com", "rosa long passphrase", "user")
	var hasher *countingHasher
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	svc := newService(t, in, smtp, nil, func(d *accounts.Deps) {
		hasher = &countingHasher{Hasher: d.Hasher} // the password check keeps the real one
		d.Hasher = hasher
		d.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	})
	root := fx.User(t, "root@example.com", "root long passphrase", "super_admin")
	link := func() string {
		t.Helper()
		if _, err := svc.RequestPasswordReset(ctx, actor(root), u.ID); err != nil {
			t.Fatal(err)
		}
		msgs := smtp.Messages()
		l := msgs[len(msgs)-1].Link(t)
		return l[strings.Index(l, "token=")+len("token="):]
	}
	m := accounts.Meta{IP: "192.0.2.9", UserAgent: "test"}
	const good = "a brand new long passphrase"
	expect := func(name string, err error, wantHashes int64) {
		t.Helper()
		if n := hasher.hashes.Load(); n != wantHashes {
			t.Fatalf("%s: %d hashes, want %d", name, n, wantHashes)
		}
		if wantHashes == 0 && !errors.Is(err, apierr.ErrOneTimeTokenInvalid) && !errors.Is(err, accounts.ErrWeakPassword) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	expect("fail/unknown_link", svc.ResetPassword(ctx, m, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", good), 0)
	tok := link()
	expect("fail/weak_password", svc.ResetPassword(ctx, m, tok, "short"), 0)
	expired := link()
	clock.Add(int64(2 * time.Hour))
	expect("fail/expired_link", svc.ResetPassword(ctx, m, expired, good), 0)
	clock.Add(-int64(2 * time.Hour))
	fresh := link()
	if err := svc.ResetPassword(ctx, m, fresh, good); err != nil {
		t.Fatalf("ok/usable_link: %v", err)
	}
	expect("ok/usable_link", nil, 1)
	if err := svc.ResetPassword(ctx, m, fresh, good); !errors.Is(err, apierr.ErrOneTimeTokenInvalid) {
		t.Fatalf("fail/used_link: %v", err)
	}
	expect("fail/used_link", nil, 1)
}

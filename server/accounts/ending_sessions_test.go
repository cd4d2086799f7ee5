package accounts_test

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/policy/password"
	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/app"
	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/server/mail"
	"github.com/portcullis-auth/portcullis/server/mail/mailtest"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// endingSessions is the instance's token service with its ending of every
// session of a user observed: fail answers a call's error before it runs
// (nil: it runs), after runs once a call has ended the sessions.
type endingSessions struct {
	*token.Service
	calls atomic.Int32
	fail  func(call int32) error
	after func(call int32)
	// clientEnd, when set, runs before each end of a client's grants.
	clientEnd func()
}

func (e *endingSessions) EndClientGrants(ctx context.Context, userID, clientID string) error {
	if e.clientEnd != nil {
		e.clientEnd()
	}
	return e.Service.EndClientGrants(ctx, userID, clientID)
}

func (e *endingSessions) EndUserSessions(ctx context.Context, id string) error {
	n := e.calls.Add(1)
	if e.fail != nil {
		if err := e.fail(n); err != nil {
			return err
		}
	}
	if err := e.Service.EndUserSessions(ctx, id); err != nil {
		return err
	}
	if e.after != nil {
		e.after(n)
	}
	return nil
}

// serviceEnding is an accounts service of the instance (its emails to
// smtp) whose ending of sessions goes through sessions; deps, when set,
// changes its dependencies first.
func serviceEnding(t *testing.T, in *st.Instance, smtp *mailtest.Server, sessions *endingSessions, deps func(*accounts.Deps)) *accounts.Service {
	t.Helper()
	return newService(t, in, smtp, nil, func(d *accounts.Deps) {
		d.Sessions = sessions
		if deps != nil {
			deps(d)
		}
	})
}

// newService is the accounts service of in, mailing through smtp, with the
// instance's sessions and the real hasher (and the password check over
// it); config and deps, when not nil, change its settings and its
// dependencies first.
func newService(t *testing.T, in *st.Instance, smtp *mailtest.Server, config func(*accounts.Config), deps func(*accounts.Deps)) *accounts.Service {
	t.Helper()
	hasher, err := app.NewHasher(in.Config)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := mail.NewTemplates()
	if err != nil {
		t.Fatal(err)
	}
	sender, err := mail.NewSMTPSender(smtp.URL(), "Portcullis <no-reply@example.com>", mail.Options{})
	if err != nil {
		t.Fatal(err)
	}
	core := in.App.Core
	d := accounts.Deps{Store: core.Store, Policy: core.Policy, Sessions: in.App.Tokens, Hasher: hasher, Checker: checker(t, in, hasher),
		Rules: password.DefaultRules(), Mail: sender, Templates: tmpl, Keys: core.Keys, Audit: core.Audit}
	if deps != nil {
		deps(&d)
	}
	c := accounts.Config{PublicURL: "https://id.example.test", InviteTTL: time.Hour, ResetTTL: time.Hour, VerifyEmailTTL: time.Hour}
	if config != nil {
		config(&c)
	}
	svc, err := accounts.New(c, d)
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// TestChangesEndSessionsAroundThem: the changes that end every session of
// an account (a password reset, a temporary password, a password change, a
// deactivation, a deletion, a role's removal) end them before they change
// anything and again after. When the sessions cannot be ended first,
// nothing changes (the old password still signs in, a reset link can be
// used again, the role is held) and the stolen session dies at the retry,
// which makes the change; a session started while the change is made is
// ended too; and once the change is made, a failure of the second end does
// not undo it.
func TestChangesEndSessionsAroundThem(t *testing.T) {
	in, fx, smtp := deployment(t)
	ctx := context.Background()
	secret := fx.Client(t, clients.Spec{ID: "web", Name: "Web"})
	root := fx.User(t, "root@example.com", "root long passphrase", "super_admin")
	sessions := &endingSessions{Service: in.App.Tokens}
	svc := serviceEnding(t, in, smtp, sessions, nil)
	core := in.App.Core
	const oldPW, newPW = "the old long passphrase", "a brand new long passphrase"
	login := func(c *st.Client, email, pw string) *st.Response {
		return c.PostForm("/oauth2/token", st.PasswordForm(email, pw, ""), st.Basic("web", secret))
	}
	refresh := func(c *st.Client, tok st.TokenResponse) *st.Response {
		return c.PostForm("/oauth2/token", st.RefreshForm(tok.RefreshToken), st.Basic("web", secret))
	}

	resetLink := func(t *testing.T, userID string) string {
		t.Helper()
		if _, err := svc.RequestPasswordReset(ctx, actor(root), userID); err != nil {
			t.Fatal(err)
		}
		msgs := smtp.Messages()
		l := msgs[len(msgs)-1].Link(t)
		return l[strings.Index(l, "token=")+len("token="):]
	}
	// signsIn: the change is not made (the old password still signs in
	// through a client of the user's platform roles, as before).
	signsIn := func(t *testing.T, c *st.Client, email, _ string) bool {
		t.Helper()
		return login(c, email, oldPW).StatusCode == 200
	}
	changes := []struct {
		name string
		// prepare returns the change, made the same way each time it runs.
		prepare func(t *testing.T, email, userID string) func() error
		// unchanged reports that the change is not in effect.
		unchanged func(t *testing.T, c *st.Client, email, userID string) bool
	}{
		{"password_reset", func(t *testing.T, _, userID string) func() error {
			link := resetLink(t, userID) // the retry uses the same link
			return func() error {
				return svc.ResetPassword(ctx, accounts.Meta{IP: "192.0.2.9", UserAgent: "test"}, link, newPW)
			}
		}, signsIn},
		{"temporary_password", func(t *testing.T, _, userID string) func() error {
			return func() error { _, err := svc.SetTemporaryPassword(ctx, actor(root), userID, newPW); return err }
		}, signsIn},
		{"password_change", func(t *testing.T, _, userID string) func() error {
			return func() error {
				_, err := svc.ChangePassword(ctx, accounts.Actor{ID: userID, Meta: accounts.Meta{IP: "192.0.2.9", UserAgent: "test", ClientID: "web"}},
					accounts.ChangePasswordRequest{CurrentPassword: oldPW, NewPassword: newPW})
				return err
			}
		}, signsIn},
		{"deactivation", func(t *testing.T, _, userID string) func() error {
			off := false
			return func() error {
				_, err := svc.UpdateUser(ctx, actor(root), userID, accounts.UserPatch{Active: &off})
				return err
			}
		}, signsIn},
		{"deletion", func(t *testing.T, _, userID string) func() error {
			return func() error { return svc.DeleteUser(ctx, actor(root), userID) }
		}, signsIn},
		{"role_removal", func(t *testing.T, _, userID string) func() error {
			return func() error { _, err := svc.RevokeRole(ctx, actor(root), userID, "user"); return err }
		}, func(t *testing.T, _ *st.Client, _, userID string) bool {
			t.Helper()
			u, err := core.Store.GetUser(ctx, userID)
			if err != nil {
				t.Fatal(err)
			}
			return slices.Contains(u.Roles, "user")
		}},
	}
	for _, ch := range changes {
		t.Run(ch.name, func(t *testing.T) {
			t.Run("first_end_fails", func(t *testing.T) {
				c := in.Client(t)
				email := ch.name + "-first@example.com"
				u := fx.User(t, email, oldPW, "user")
				stolen := login(c, email, oldPW).Token()
				run := ch.prepare(t, email, u.ID)
				sessions.calls.Store(0)
				sessions.fail = func(n int32) error {
					if n == 1 {
						return apierr.ErrTemporarilyUnavailable
					}
					return nil
				}
				defer func() { sessions.fail = nil }()
				if err := run(); err == nil {
					t.Fatal("the change succeeded although the sessions could not be ended")
				}
				// Nothing changed, and the stolen session still refreshes
				// (nothing ended it).
				if !ch.unchanged(t, c, email, u.ID) {
					t.Fatal("the change was made although the sessions could not be ended")
				}
				stolen = refresh(c, stolen).Token()
				// The retry (the same link for a reset) makes the change
				// and ends the stolen session.
				if err := run(); err != nil {
					t.Fatalf("retry: %v", err)
				}
				refresh(c, stolen).ExpectError(400, "invalid_grant")
				if ch.unchanged(t, c, email, u.ID) {
					t.Fatal("the retry did not make the change")
				}
			})
			t.Run("session_started_during_the_change", func(t *testing.T) {
				c := in.Client(t)
				email := ch.name + "-during@example.com"
				u := fx.User(t, email, oldPW, "user")
				run := ch.prepare(t, email, u.ID)
				var during st.TokenResponse
				sessions.calls.Store(0)
				sessions.after = func(n int32) {
					if n == 1 { // between the first end and the change
						during = login(c, email, oldPW).Token()
					}
				}
				defer func() { sessions.after = nil }()
				if err := run(); err != nil {
					t.Fatal(err)
				}
				if during.RefreshToken == "" {
					t.Fatal("no session was started during the change")
				}
				refresh(c, during).ExpectError(400, "invalid_grant")
			})
			t.Run("second_end_fails", func(t *testing.T) {
				c := in.Client(t)
				email := ch.name + "-second@example.com"
				u := fx.User(t, email, oldPW, "user")
				stolen := login(c, email, oldPW).Token()
				run := ch.prepare(t, email, u.ID)
				sessions.calls.Store(0)
				sessions.fail = func(n int32) error {
					if n == 2 {
						return apierr.ErrTemporarilyUnavailable
					}
					return nil
				}
				defer func() { sessions.fail = nil }()
				if err := run(); err != nil {
					t.Fatalf("the change answered %v after it was made", err)
				}
				if ch.unchanged(t, c, email, u.ID) {
					t.Fatal("the change was not made")
				}
				refresh(c, stolen).ExpectError(400, "invalid_grant")
			})
		})
	}
}

// TestWithdrawConsentEndsGrantsOnceTheConsentIsGone: the client's grants
// end before the consent is deleted (so a failure leaves it for a retry)
// and again once no authorization request can read it: a code issued
// between the first end and the deletion is stamped after the first
// end's cut-off, and only an end after the deletion moves the cut-off past
// it (found by this session's last review).
func TestWithdrawConsentEndsGrantsOnceTheConsentIsGone(t *testing.T) {
	in, fx, smtp := deployment(t)
	ctx := context.Background()
	fx.Client(t, clients.Spec{ID: "third", Name: "Third"})
	ann := fx.User(t, "ann@example.com", "ann's long passphrase", "user")
	core := in.App.Core
	if err := core.Store.PutConsent(ctx, store.Consent{UserID: ann.ID, ClientID: "third", Scopes: []string{"openid"}}); err != nil {
		t.Fatal(err)
	}
	var consentAtEachEnd []bool
	sessions := &endingSessions{Service: in.App.Tokens}
	sessions.clientEnd = func() {
		_, err := core.Store.GetConsent(ctx, ann.ID, "third")
		consentAtEachEnd = append(consentAtEachEnd, err == nil)
	}
	svc := serviceEnding(t, in, smtp, sessions, func(d *accounts.Deps) { d.Consents = core.Store })
	own := actor(ann)
	own.ClientID = accounts.DefaultFirstPartyClientID // the person's own (first-party) token
	if err := svc.WithdrawOwnConsent(ctx, own, "third"); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(consentAtEachEnd, []bool{true, false}) {
		t.Fatalf("the consent was held at each end of the client's grants: %v; want [true false] (ended before the deletion and after it)",
			consentAtEachEnd)
	}
}

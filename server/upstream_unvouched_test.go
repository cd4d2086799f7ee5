package server_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/server/upstream"
	"github.com/portcullis-auth/portcullis/server/upstream/upstreamtest"
	"github.com/portcullis-auth/portcullis/store"
)

// unvouchedAccounts makes, in e, one local account in each state an
// upstream identity's email may name (found by a review: a provider that
// does not vouch for its addresses told them apart): an active verified
// account, a deactivated one, one whose address is unverified, and one that
// already holds an identity of "plain". It returns the addresses by state,
// with "none" an address without an account.
func unvouchedAccounts(t *testing.T, ctx context.Context, in *st.Instance, fx *st.Fixtures, plainIssuer string) map[string]string {
	t.Helper()
	emails := map[string]string{"none": "nobody@example.com", "account": "victim@example.com", "deactivated": "gone@example.com",
		"unverified": "unverified@example.com", "already_linked": "linked@example.com"}
	for state, email := range emails {
		if state == "none" {
			continue
		}
		u := fx.User(t, email, state+" long passphrase", "user")
		var err error
		switch state {
		case "deactivated":
			_, err = in.App.Core.Store.UpdateUser(ctx, u.ID, func(u *store.User) error { u.Active = false; return nil })
		case "unverified":
			_, err = in.App.Core.Store.UpdateUser(ctx, u.ID, func(u *store.User) error { u.EmailVerified = false; return nil })
		case "already_linked":
			err = in.App.Core.Store.LinkFederatedIdentity(ctx, &store.FederatedIdentity{Provider: "plain", Issuer: plainIssuer,
				Subject: "the-owner", UserID: u.ID, Email: email})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return emails
}

// TestUpstreamUnvouchedExchangeHidesAccounts: an id token of a provider
// that does not vouch for its addresses ("plain": no allowed_domains, no
// just-in-time creation) whose verified email names an address, one address
// at a time, is answered the same by the token exchange whether the
// address has an account and whatever its state (found by a review: it
// answered jit_disabled, deactivated, local_email_unverified, already_linked
// or confirmation_required). The audit event keeps the reason, for admins.
// On PostgreSQL+Redis and on SQLite.
func TestUpstreamUnvouchedExchangeHidesAccounts(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newIDPEnv(t, b)
			emails := unvouchedAccounts(t, context.Background(), e.in, e.fx, e.op2.Issuer)
			audited := map[string]string{"none": "jit_disabled", "account": "confirmation_required", "deactivated": "deactivated",
				"unverified": "local_email_unverified", "already_linked": "already_linked"}
			var first string
			i := 0
			for _, state := range []string{"none", "account", "deactivated", "unverified", "already_linked"} {
				i++
				raw := e.op2.IDToken(t, upstreamtest.Token{Subject: fmt.Sprintf("attacker-%d", i), Email: emails[state],
					EmailVerified: upstreamtest.Bool(true)})
				r := e.exchange(t, raw)
				var body map[string]any
				r.JSON(&body)
				answer := fmt.Sprintf("%d %v: %v", r.StatusCode, body["error"], body["error_description"])
				t.Logf("%s (%s) -> %s", state, emails[state], answer)
				if first == "" {
					first = answer
				}
				if answer != first {
					t.Errorf("%s is answered %q, an address without an account %q", state, answer, first)
				}
				if r.StatusCode != http.StatusBadRequest || body["error"] != "invalid_request" {
					t.Errorf("%s: %s, want 400 invalid_request", state, answer)
				}
				ev := e.lastAudit(t, "login.failed")
				if ev.Details["method"] != "upstream" || ev.Details["reason"] != audited[state] || time.Since(ev.Time) > time.Minute {
					t.Errorf("%s: login.failed = %+v, want method upstream, reason %s", state, ev, audited[state])
				}
			}
		})
	}
}

// TestUpstreamUnvouchedSignInPagesHideAccounts: through the login page,
// on PostgreSQL+Redis and SQLite, a sign-in at a provider that does not
// vouch for its addresses ("plain": no allowed_domains, no just-in-time
// creation) whose verified email names an address with no account, an
// active account, a deactivated one, an unverified one or one already
// linked at "plain" ends on the same confirm-link page, which does not say
// that an account exists (found by a review: the callback answered each
// state with its own page). A wrong password, and any password for the
// address without an account, get the same answer; only after the right
// password is the state told (a deactivated account fails the password
// check as on the login page), and only the active account is linked. The
// reasons are audited (login.failed, details.method upstream).
func TestUpstreamUnvouchedSignInPagesHideAccounts(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			op := upstreamtest.New(t)
			file := filepath.Join(t.TempDir(), "providers.yaml")
			if err := os.WriteFile(file, []byte("providers:\n"+op.ProviderYAML("plain")), 0o600); err != nil {
				t.Fatal(err)
			}
			d := newSignIn(t, b, map[string]string{"PORTCULLIS_IDENTITY_PROVIDERS_FILE": file})
			ctx := context.Background()
			emails := unvouchedAccounts(t, ctx, d.in, st.NewFixtures(t, d.in.App.Core), op.Issuer)
			// dynamic drops what differs between two renderings of one page:
			// the address itself, handles, tokens, request ids and nonces.
			attr := regexp.MustCompile(`(value|nonce|href|action)="[^"]*"`)
			dynamic := func(p siPage, email string) string {
				return fmt.Sprintf("%d %s", p.StatusCode, attr.ReplaceAllString(strings.ReplaceAll(p.body, email, "EMAIL"), `$1=""`))
			}
			answers := map[string][2]string{} // the confirm page, a wrong password
			for i, state := range []string{"none", "account", "deactivated", "unverified", "already_linked"} {
				email := emails[state]
				hc := siBrowser(t)
				f, page := d.openLogin(t, hc)
				op.NextLogin(upstreamtest.Token{Subject: fmt.Sprintf("attacker-%d", i), Email: email, EmailVerified: upstreamtest.Bool(true)})
				q := browseTestProvider(t, pressProvider(t, hc, page, "plain"))
				confirm := siGet(t, hc, d.in.Config.Issuer+"/login/plain/callback?"+q.Encode())
				if confirm.StatusCode != http.StatusOK || !strings.Contains(confirm.body, `name="password"`) ||
					strings.Contains(confirm.body, "already exists") || !strings.Contains(confirm.body, "If an account with the email address") {
					t.Fatalf("%s: the confirm-link page: %d\n%s", state, confirm.StatusCode, confirm.body)
				}
				if reason, ok := map[string]string{"none": upstream.ReasonNoAccount, "deactivated": upstream.ReasonDeactivated,
					"unverified": upstream.ReasonLocalEmailUnverified, "already_linked": upstream.ReasonAlreadyLinked}[state]; ok {
					if ev := d.lastEvent(t, "login.failed"); ev.Details["method"] != "upstream" || ev.Details["reason"] != reason {
						t.Errorf("%s: login.failed = %+v, want method upstream, reason %s", state, ev, reason)
					}
				}
				wrong := confirm.submit(t, hc, url.Values{"password": {"not the password"}})
				if wrong.StatusCode != http.StatusBadRequest || !strings.Contains(wrong.body, "The password is incorrect.") {
					t.Fatalf("%s: a wrong password: %d\n%s", state, wrong.StatusCode, wrong.body)
				}
				answers[state] = [2]string{dynamic(confirm, email), dynamic(wrong, email)}
				if answers[state] != answers["none"] {
					t.Errorf("%s is answered otherwise than an address without an account:\n%s\n%s\n--- none:\n%s\n%s", state,
						answers[state][0], answers[state][1], answers["none"][0], answers["none"][1])
				}

				// The right password: the state's answer.
				right := wrong.submit(t, hc, url.Values{"password": {state + " long passphrase"}})
				u, err := d.in.App.Core.Store.GetUserByEmail(ctx, email)
				if state == "none" {
					if dynamic(right, email) != answers["none"][1] || err == nil {
						t.Errorf("none: any password answers otherwise than a wrong one: %d\n%s", right.StatusCode, right.body)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				linked := d.linked(t, u.ID)
				switch state {
				case "account":
					if idc, _ := d.tokens(t, f, right); idc["sub"] != u.ID || len(d.linked(t, u.ID)) != 1 {
						t.Fatalf("account: sub %v, identities %+v", idc["sub"], d.linked(t, u.ID))
					}
					continue
				case "deactivated":
					// The one password check refuses a deactivated account as a
					// wrong password, as the login page does.
					if dynamic(right, email) != answers["none"][1] || len(linked) != 0 {
						t.Errorf("deactivated: %d\n%s\nidentities %+v", right.StatusCode, right.body, linked)
					}
				default:
					reason := map[string]string{"unverified": upstream.ReasonLocalEmailUnverified, "already_linked": upstream.ReasonAlreadyLinked}[state]
					desc := (&upstream.Refusal{Reason: reason}).Description()
					if right.StatusCode != http.StatusForbidden || !strings.Contains(right.body, unescapeHTMLText(desc)) {
						t.Errorf("%s after the right password: %d, want 403 %q\n%s", state, right.StatusCode, desc, right.body)
					}
					if ev := d.lastEvent(t, "login.failed"); ev.Details["method"] != "upstream" || ev.Details["reason"] != reason || ev.TargetID != u.ID {
						t.Errorf("%s: login.failed = %+v, want method upstream, reason %s", state, ev, reason)
					}
					if want := map[string]int{"unverified": 0, "already_linked": 1}[state]; len(linked) != want {
						t.Errorf("%s: identities %+v", state, linked)
					}
				}
				if d.sessionCookie(t, hc) {
					t.Errorf("%s: a session was started", state)
				}
			}
		})
	}
}

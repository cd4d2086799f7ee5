package server_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/keys/verify"
	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/server/mail/mailtest"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// bclWithin bounds the wait for a logout token: the notifier is woken by
// the queueing, so it normally takes milliseconds.
const bclWithin = 20 * time.Second

// bclReceiver is a relying party's back-channel logout endpoint that keeps
// the logout tokens keys/verify accepts (signature against the JWKS, iss,
// aud bcl-rp, typ logout+jwt, events, no nonce).
type bclReceiver struct {
	url string
	got chan *verify.LogoutClaims
}

func newBCLReceiver(t *testing.T, in *st.Instance) *bclReceiver {
	t.Helper()
	keys, err := verify.NewRemoteKeySet(verify.RemoteKeySetOptions{Issuer: in.Config.Issuer,
		JWKSURL: in.URL + "/.well-known/jwks.json"})
	if err != nil {
		t.Fatal(err)
	}
	lv, err := verify.NewLogoutVerifier(keys, verify.LogoutConfig{Issuer: in.Config.Issuer, ClientID: "bcl-rp"})
	if err != nil {
		t.Fatal(err)
	}
	r := &bclReceiver{got: make(chan *verify.LogoutClaims, 16)}
	mux := http.NewServeMux()
	mux.Handle("POST /bcl", verify.LogoutHandler(lv, func(_ context.Context, c *verify.LogoutClaims) error {
		r.got <- c
		return nil
	}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	r.url = srv.URL + "/bcl"
	return r
}

// expect waits for one logout token per sid in sids (in any order), each
// for sub, and fails on a token for anything else.
func (r *bclReceiver) expect(t *testing.T, what, sub string, sids ...string) {
	t.Helper()
	want := slices.Clone(sids)
	deadline := time.NewTimer(bclWithin)
	defer deadline.Stop()
	for len(want) > 0 {
		select {
		case c := <-r.got:
			i := slices.Index(want, c.SessionID)
			if c.Subject != sub || i < 0 {
				t.Fatalf("%s: logout token sub %q sid %q, want sub %q and one of the sids %v", what, c.Subject, c.SessionID, sub, want)
			}
			want = slices.Delete(want, i, i+1)
		case <-deadline.C:
			t.Fatalf("%s: no back-channel logout token for the sids %v (sub %q)", what, want, sub)
		}
	}
}

// sidOf is the sid claim of a login's id token.
func sidOf(t *testing.T, l oidccLogin) string {
	t.Helper()
	var c struct {
		SID string `json:"sid"`
	}
	if err := l.idt.Claims(&c); err != nil || c.SID == "" {
		t.Fatalf("id token sid: %v", err)
	}
	return c.SID
}

// TestEndEverySessionSendsBackchannelLogout: every way of ending every
// session of a user (admin revoke, deactivation, deletion, temporary
// password, password reset, password change, role removal, MFA reset) tells
// each relying party with a backchannel_logout_uri that each of the user's
// live browser sessions ended, with the sid its id token carried and the
// user as sub, as a logout does. A client without a URI gets none (had one
// been queued for it, the all-or-none queueing would have refused the
// batch), and a session ended earlier by a logout is not told again (its
// repeated token would arrive before the next case's first one, or before
// the closing logout's, and fail there).
func TestEndEverySessionSendsBackchannelLogout(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			smtp := mailtest.NewServer(t)
			d := newSignIn(t, b, map[string]string{"PORTCULLIS_SMTP_URL": smtp.URL()})
			rcv := newBCLReceiver(t, d.in)
			fx := st.NewFixtures(t, d.in.App.Core)
			secret := fx.Client(t, clients.Spec{ID: "bcl-rp", Name: "BCL RP", FirstParty: true,
				Grants: []string{"authorization_code", "refresh_token"}, RedirectURIs: []string{siCallback},
				PostLogoutRedirectURIs: []string{siPostLogout}, BackchannelLogoutURI: rcv.url})
			bcl := d.oauth("bcl-rp", secret, oidc.ScopeOpenID)
			first := d.oauth("first", d.firstSecret, oidc.ScopeOpenID) // no back-channel URI
			fx.User(t, "root@example.com", "root passphrase long", "super_admin")
			web := fx.AdminClient(t, "web")
			c := d.in.Client(t)
			root := c.PostForm("/oauth2/token", st.PasswordForm("root@example.com", "root passphrase long", ""), st.Basic("web", web)).
				Token().AccessToken
			const newPassword = "a brand new passphrase 2"

			tests := []struct {
				name  string
				roles []string
				end   func(t *testing.T, u store.User)
			}{
				{name: "admin_revoke", end: func(t *testing.T, u store.User) {
					c.PostJSON("/admin/users/"+u.ID+"/sessions/revoke", map[string]any{}, st.Bearer(root)).ExpectStatus(http.StatusNoContent)
				}},
				{name: "deactivation", end: func(t *testing.T, u store.User) {
					c.PatchJSON("/admin/users/"+u.ID, map[string]any{"active": false}, st.Bearer(root)).ExpectStatus(http.StatusOK)
				}},
				{name: "deletion", end: func(t *testing.T, u store.User) {
					c.Delete("/admin/users/"+u.ID, st.Bearer(root)).ExpectStatus(http.StatusNoContent)
				}},
				{name: "temporary_password", end: func(t *testing.T, u store.User) {
					c.PostJSON("/admin/users/"+u.ID+"/temp-password", map[string]string{"password": newPassword}, st.Bearer(root)).
						ExpectStatus(http.StatusOK)
				}},
				{name: "password_reset", end: func(t *testing.T, u store.User) {
					c.PostJSON("/auth/password/forgot", map[string]string{"email": u.Email}).ExpectStatus(http.StatusAccepted)
					tok := smtp.WaitFor(t, u.Email, mailWithin).Token(t)
					c.PostJSON("/auth/password/reset", map[string]string{"token": tok, "new_password": newPassword}).
						ExpectStatus(http.StatusNoContent)
				}},
				{name: "password_change", end: func(t *testing.T, u store.User) {
					own := c.PostForm("/oauth2/token", st.PasswordForm(u.Email, siPassword, ""), st.Basic("web", web)).Token().AccessToken
					c.PostJSON("/auth/password/change", map[string]string{"current_password": siPassword, "new_password": newPassword},
						st.Bearer(own)).ExpectStatus(http.StatusOK)
				}},
				{name: "role_removal", roles: []string{"user", "admin"}, end: func(t *testing.T, u store.User) {
					c.Delete("/admin/users/"+u.ID+"/roles/admin", st.Bearer(root)).ExpectStatus(http.StatusOK)
				}},
				{name: "mfa_reset", end: func(t *testing.T, u store.User) {
					c.PostJSON("/admin/users/"+u.ID+"/mfa/reset", map[string]any{}, st.Bearer(root)).ExpectStatus(http.StatusNoContent)
				}},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					email := "bcl-" + tc.name + "@example.com"
					roles := tc.roles
					if roles == nil {
						roles = []string{"user"}
					}
					u := fx.User(t, email, siPassword, roles...)
					browser := func() *oidccEnv { return &oidccEnv{d: d, mode: "query", hc: siBrowser(t), email: email} }
					// One browser session with grants at both clients, another
					// at bcl-rp alone, and a third ended by a logout first.
					a, b2, gone := browser(), browser(), browser()
					_ = a.signIn(t, first)
					sidA := sidOf(t, a.signIn(t, bcl))
					sidB := sidOf(t, b2.signIn(t, bcl))
					lg := gone.signIn(t, bcl)
					expectPostLogoutRedirect(t, siGet(t, gone.hc, d.in.URL+"/oauth2/logout?"+url.Values{"id_token_hint": {lg.raw},
						"post_logout_redirect_uri": {siPostLogout}, "state": {"bye"}}.Encode()), "bye")
					rcv.expect(t, "the logout before", u.ID, sidOf(t, lg))

					tc.end(t, u)
					rcv.expect(t, tc.name, u.ID, sidA, sidB)
					for _, e := range []*oidccEnv{a, b2} { // the browser sessions are ended
						r := e.run(t, e.authURL(bcl, "after", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()),
							oauth2.SetAuthURLParam("prompt", "none")))
						expectError(t, r, "after", "login_required")
					}
				})
			}
			// A closing logout: its token is the next one, not a late repeat.
			closing := &oidccEnv{d: d, mode: "query", hc: siBrowser(t), email: siEmail}
			l := closing.signIn(t, bcl)
			expectPostLogoutRedirect(t, siGet(t, closing.hc, d.in.URL+"/oauth2/logout?"+url.Values{"id_token_hint": {l.raw},
				"post_logout_redirect_uri": {siPostLogout}, "state": {"bye"}}.Encode()), "bye")
			rcv.expect(t, "the closing logout", l.idt.Subject, sidOf(t, l))
		})
	}
}

// TestReviewAdminRevokeSendsBackchannelLogout is the reviewer's report of
// the defect, kept as it was written: the admin's "revoke every session"
// ended the browser session but posted no back-channel logout token.
func TestReviewAdminRevokeSendsBackchannelLogout(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			d := newSignIn(t, b)
			received := make(chan url.Values, 4)
			rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _ = r.ParseForm(); received <- r.PostForm }))
			t.Cleanup(rcv.Close)
			fx := st.NewFixtures(t, d.in.App.Core)
			secret := fx.Client(t, clients.Spec{ID: "bcl-rp", Name: "BCL RP", FirstParty: true,
				Grants: []string{"authorization_code", "refresh_token"}, RedirectURIs: []string{siCallback},
				PostLogoutRedirectURIs: []string{siPostLogout}, BackchannelLogoutURI: rcv.URL + "/bcl"})
			victim := fx.User(t, "bcl@example.com", siPassword, "user")
			fx.User(t, "root@example.com", "root passphrase long", "super_admin")
			web := fx.AdminClient(t, "web")
			c := d.in.Client(t)
			admin := c.PostForm("/oauth2/token", st.PasswordForm("root@example.com", "root passphrase long", ""), st.Basic("web", web)).Token().AccessToken
			e := &oidccEnv{d: d, mode: "query", hc: siBrowser(t), email: "bcl@example.com"}
			conf := d.oauth("bcl-rp", secret, oidc.ScopeOpenID)
			_ = e.signIn(t, conf)
			c.PostJSON("/admin/users/"+victim.ID+"/sessions/revoke", map[string]any{}, st.Bearer(admin))
			r := e.run(t, e.authURL(conf, "after", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()), oauth2.SetAuthURLParam("prompt", "none")))
			expectError(t, r, "after", "login_required") // the browser session IS ended
			select {
			case <-received:
			case <-time.After(8 * time.Second):
				t.Errorf("DEFECT: the browser session was ended by the admin revoke, but no back-channel logout token was posted to bcl-rp")
			}
		})
	}
}

package server_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/server/console"
	"github.com/portcullis-auth/portcullis/server/pages"
	"github.com/portcullis-auth/portcullis/server/ratelimit"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/testservers"
)

const consolePassword = "console operator password 1"

// consoleSecret finds the secret a console page shows once.
var consoleSecret = regexp.MustCompile(`id="secret-value">([^<]+)<`)

// follow follows the 303s from p (GETs, as a browser does) to the page
// that is not a redirect.
func follow(t *testing.T, hc *http.Client, p siPage) siPage {
	t.Helper()
	for i := 0; p.StatusCode >= 300 && p.StatusCode < 400; i++ {
		if i > 10 {
			t.Fatalf("too many redirects, last to %s", p.Header.Get("Location"))
		}
		next, err := p.Request.URL.Parse(p.Header.Get("Location"))
		if err != nil {
			t.Fatal(err)
		}
		p = siGet(t, hc, next.String())
	}
	return p
}

// consoleSignIn signs the person in to the console with hc through the
// hosted login (and its TOTP step when secret is set) and returns the page
// the sign-in ends on, and the console cookie the callback set.
func consoleSignIn(t *testing.T, in *st.Instance, hc *http.Client, email, secret, path string) (siPage, *http.Cookie) {
	t.Helper()
	cb := siGet(t, hc, consoleCallback(t, in, hc, email, secret, path))
	var cookie *http.Cookie
	for _, c := range cb.Cookies() {
		if strings.Contains(c.Name, "portcullis-console") && c.Name != "portcullis-console-login" {
			cookie = c
		}
	}
	return follow(t, hc, cb), cookie
}

// consoleCallback signs the person in with hc through the hosted login
// (and its TOTP step when secret is set), from path without a console
// session, and returns the console's callback URL the login sends the
// browser to, not yet opened.
func consoleCallback(t *testing.T, in *st.Instance, hc *http.Client, email, secret, path string) string {
	t.Helper()
	start := siGet(t, hc, in.URL+path)
	if start.StatusCode != http.StatusSeeOther || !strings.HasPrefix(start.Header.Get("Location"), "/console/login?next=") {
		t.Fatalf("%s without a session: %d to %q, want 303 to the console sign-in", path, start.StatusCode, start.Header.Get("Location"))
	}
	login := follow(t, hc, start)
	step := login.submit(t, hc, url.Values{"username": {email}, "password": {consolePassword}})
	if secret != "" {
		step = step.submit(t, hc, url.Values{"code": {totpAt(t, secret, time.Now())}, "mfa_action": {"verify"}})
	}
	if step.StatusCode != http.StatusSeeOther || !strings.HasPrefix(step.Header.Get("Location"), console.CallbackURL(in.Config.Issuer)+"?") {
		t.Fatalf("after the login: %d to %q, want 303 to the console's callback:\n%s", step.StatusCode, step.Header.Get("Location"), step.body)
	}
	next, err := step.Request.URL.Parse(step.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return next.String()
}

// auditCount counts the audit events of action about target made through
// the console.
func auditCount(t *testing.T, in *st.Instance, action, target string) int {
	t.Helper()
	page, err := in.App.Accounts.ListAudit(context.Background(), accounts.AuditQuery{Action: action, TargetID: target, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range page.Items {
		if e.ClientID == console.ClientID {
			n++
		}
	}
	return n
}

// TestConsole: on PostgreSQL+Redis and SQLite, without a browser. Without
// a session every screen answers 303 to the sign-in, which goes through
// /oauth2/authorize, the hosted login and its TOTP step to the callback,
// then back to the screen asked for. The console cookie is exactly
// portcullis-console (plain HTTP), HttpOnly, SameSite=Strict, Path=/,
// host-only, a browser-session cookie of 43 characters. Actions carry
// client_id console in the audit. Refusals change nothing: a form with a
// wrong or no CSRF field, or sent cross-site, is 403; a person with no admin
// permission gets the 403 page; "Send again" replaces a pending invite; a
// sign-in older than five minutes (an
// injected clock) makes key revocation, secret rotation, MFA reset and
// every action that mints a credential or hands over an account (a machine
// user, a client, a temporary password, a role, an invite)
// answer the "confirm it is you" page (403) with nothing changed, and its
// "Sign in again" goes through the hosted login with prompt=login, then
// back to the screen; a typed
// confirmation that differs from the kid is 400; signed in recently, the
// next key is revoked (gone from the JWKS) and a client secret rotated (the
// new one shown once, the old one refused); a code-flow client's redirect
// URIs are replaced under registration's rules (never the built-in
// client's, never a first-party client's by an admin); every form of a
// user's page (roles, deactivate, activate, temporary password, reset link,
// end every session) changes the store and is audited; a machine user is
// created and given an API key (shown once), which is then revoked. "Clear failed logins" lets
// a throttled account sign in at once. Deactivating an operator
// ends their console session. Logout ends the session on the server: its
// cookie, sent again, leads to the sign-in.
func TestConsole(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			env := st.NewEnv(t, b)
			env["PORTCULLIS_LOGIN_FAILURE_LIMIT"] = "3"
			in := st.Start(t, env)
			fx := st.NewFixtures(t, in.App.Core)
			root := fx.User(t, "root@example.com", consolePassword, "super_admin")
			secret, _ := st.EnrolTOTPPreviousStep(t, in.App.MFA, root)
			plain := fx.User(t, "plain@example.com", consolePassword, "user")
			st.EnrolTOTPPreviousStep(t, in.App.MFA, plain)
			webSecret := fx.Client(t, clients.Spec{ID: "web", Name: "Web"})
			ctx := context.Background()

			// Every screen needs a session: 303 to the sign-in, and back.
			hc := siBrowser(t)
			for _, path := range []string{"/console", "/console/users", "/console/users/" + root.ID, "/console/invites",
				"/console/sessions", "/console/audit", "/console/clients", "/console/roles", "/console/keys"} {
				p := siGet(t, hc, in.URL+path)
				if p.StatusCode != http.StatusSeeOther || !strings.HasPrefix(p.Header.Get("Location"), "/console/login") {
					t.Fatalf("%s without a session: %d %q", path, p.StatusCode, p.Header.Get("Location"))
				}
			}
			users, cookie := consoleSignIn(t, in, hc, root.Email, secret, "/console/users")
			if users.StatusCode != http.StatusOK || users.Request.URL.Path != "/console/users" || !strings.Contains(users.body, root.Email) {
				t.Fatalf("after the sign-in: %d %s:\n%s", users.StatusCode, users.Request.URL, users.body)
			}
			if cookie == nil || cookie.Name != console.InsecureCookieName || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode ||
				cookie.Path != "/" || cookie.Domain != "" || cookie.MaxAge != 0 || !cookie.Expires.IsZero() || cookie.Secure ||
				len(cookie.Value) != 43 {
				t.Fatalf("console cookie %+v (raw %q)", cookie, cookie.Raw)
			}
			if csp := users.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") ||
				strings.Contains(csp, "unsafe-inline") || users.Header.Get("X-Frame-Options") != "DENY" {
				t.Fatalf("headers %v", users.Header)
			}

			// An invite through the console: audited with client_id console.
			invites := siGet(t, hc, in.URL+"/console/invites")
			created := invites.form(t, "create").submit(t, hc, url.Values{"email": {"new@example.com"}, "role": {"user"}})
			if created.StatusCode != http.StatusOK || !strings.Contains(created.body, "Invited new@example.com") {
				t.Fatalf("invite: %d:\n%s", created.StatusCode, created.body)
			}
			if n := auditCount(t, in, "invite.created", ""); n != 1 {
				t.Fatalf("%d invite.created events with client_id console, want 1", n)
			}

			// Refused forms change nothing.
			form := invites.form(t, "create")
			for _, tc := range []struct {
				name   string
				fields url.Values
				header [2]string
			}{
				{"fail/wrong_csrf", url.Values{"csrf_token": {strings.Repeat("A", 43)}}, [2]string{}},
				{"fail/no_csrf", url.Values{"csrf_token": {""}}, [2]string{}},
				{"fail/cross_site", nil, [2]string{"Sec-Fetch-Site", "cross-site"}},
				{"fail/foreign_origin", nil, [2]string{"Origin", "https://evil.example"}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					fields := url.Values{"email": {"csrf@example.com"}, "role": {"user"}}
					for k, v := range tc.fields {
						fields[k] = v
					}
					p := form.submitWith(t, hc, fields, tc.header)
					if p.StatusCode != http.StatusForbidden || !strings.Contains(p.body, "Nothing was changed") {
						t.Fatalf("%d:\n%s", p.StatusCode, p.body)
					}
				})
			}
			list, err := in.App.Accounts.ListInvites(ctx, "", 100)
			if err != nil || len(list.Items) != 1 {
				t.Fatalf("invites after refused forms: %+v %v", list.Items, err)
			}
			// "Send again" replaces the pending invite with a new one.
			var resend siPage
			current := siGet(t, hc, in.URL+"/console/invites")
			for _, f := range regexp.MustCompile(`(?s)<form .*?</form>`).FindAllString(current.body, -1) {
				if strings.Contains(f, "Send again to new@example.com") {
					resend = siPage{Response: current.Response, body: f}
				}
			}
			if resend.Response == nil {
				t.Fatalf("no Send again form:\n%s", current.body)
			}
			if p := resend.submit(t, hc, nil); p.StatusCode != http.StatusOK || !strings.Contains(p.body, "Invited new@example.com as user") {
				t.Fatalf("send again: %d:\n%s", p.StatusCode, p.body)
			}
			if list, err = in.App.Accounts.ListInvites(ctx, "", 100); err != nil || len(list.Items) != 2 ||
				list.Items[0].Status != "pending" || list.Items[1].Status == "pending" {
				t.Fatalf("invites after sending again: %+v %v", list.Items, err)
			}

			// Stale sign-in: the sensitive actions ask to sign in again
			// (TestConsoleCredentialActionsNeedARecentSignIn has each of them).
			in.App.Console.SetClock(func() time.Time { return time.Now().Add(accounts.ReauthWindow + time.Minute) })
			keyList, err := in.App.Accounts.ListKeys(ctx)
			if err != nil {
				t.Fatal(err)
			}
			kid := keyList[0].KID
			stale := []struct{ name, path, action string }{
				{"fail/key_revoke", "/console/keys", "revoke"},
				{"fail/secret_rotation", "/console/clients", "rotate"},
				{"fail/mfa_reset", "/console/users/" + plain.ID, "mfa_reset"},
				{"fail/create_machine", "/console/users", "create_machine"},
				{"fail/create_client", "/console/clients", "create"},
				{"fail/temp_password", "/console/users/" + plain.ID, "temp_password"},
				{"fail/grant_role", "/console/users/" + plain.ID, "grant_role"},
				{"fail/invite", "/console/invites", "create"},
			}
			for _, tc := range stale {
				t.Run(tc.name, func(t *testing.T) {
					page := siGet(t, hc, in.URL+tc.path)
					p := page.form(t, tc.action).submit(t, hc, url.Values{"kid": {kid}, "confirm": {kid}, "client_id": {"web"},
						"name": {"Stale"}, "role": {"admin"}, "email": {"stale@example.com"}, "password": {"a temporary password 7"},
						"grants": {"client_credentials"}, "redirect_uris": {"https://evil.example/cb"}})
					if p.StatusCode != http.StatusForbidden || !strings.Contains(p.body, "Confirm it is you") ||
						!strings.Contains(p.body, "reauth=1") {
						t.Fatalf("%d:\n%s", p.StatusCode, p.body)
					}
				})
			}
			// "Sign in again" sends prompt=login (the hosted login then asks
			// for the password although the browser is signed in, unless that
			// sign-in is from this very second) and comes back to the screen.
			first := siGet(t, hc, in.URL+"/console/login?reauth=1&next=%2Fconsole%2Fkeys")
			if loc := first.Header.Get("Location"); first.StatusCode != http.StatusSeeOther || !strings.Contains(loc, "prompt=login") {
				t.Fatalf("re-authentication: %d to %q, want 303 to /oauth2/authorize with prompt=login", first.StatusCode, loc)
			}
			back := follow(t, hc, first)
			if strings.Contains(back.body, `name="password"`) {
				step := back.submit(t, hc, url.Values{"username": {root.Email}, "password": {consolePassword}})
				step = step.submit(t, hc, url.Values{"code": {totpAt(t, secret, time.Now().Add(30*time.Second))}, "mfa_action": {"verify"}})
				back = follow(t, hc, step)
			}
			if back.StatusCode != http.StatusOK || back.Request.URL.Path != "/console/keys" {
				t.Fatalf("after re-authenticating: %d %s", back.StatusCode, back.Request.URL)
			}
			in.App.Console.SetClock(time.Now)
			for _, action := range []string{"key.revoked", "client.secret_rotated", "mfa.reset", "user.created", "client.created",
				"client.updated", "password.temp_set", "role.granted"} {
				if n := auditCount(t, in, action, ""); n != 0 {
					t.Fatalf("%d %s events after stale attempts", n, action)
				}
			}
			if after, _ := in.App.Accounts.ListKeys(ctx); after[0].State != keyList[0].State || after[0].RevokedAt != nil {
				t.Fatalf("key changed: %+v", after[0])
			}
			in.Client(t).PostForm("/oauth2/introspect", url.Values{"token": {"x"}}, st.Basic("web", webSecret)).ExpectStatus(http.StatusOK)

			// A typed confirmation that differs is 400; nothing revoked.
			keys := siGet(t, hc, in.URL+"/console/keys")
			wrong := keys.form(t, "revoke").submit(t, hc, url.Values{"kid": {kid}, "confirm": {kid + "x"}})
			if wrong.StatusCode != http.StatusBadRequest || auditCount(t, in, "key.revoked", "") != 0 {
				t.Fatalf("wrong confirmation: %d:\n%s", wrong.StatusCode, wrong.body)
			}
			// Fresh: the MFA reset goes through, audited with client_id console.
			detail := siGet(t, hc, in.URL+"/console/users/"+plain.ID)
			reset := detail.form(t, "mfa_reset").submit(t, hc, nil)
			if reset.StatusCode != http.StatusOK || auditCount(t, in, "mfa.reset", plain.ID) != 1 {
				t.Fatalf("MFA reset: %d:\n%s", reset.StatusCode, reset.body)
			}

			// Fresh: the next key is revoked (it leaves the JWKS) and web's
			// secret rotated (the new one shown once, the old one refused).
			var next string
			for _, k := range keyList {
				if k.State == store.KeyNext {
					next = k.KID
				}
			}
			keys = siGet(t, hc, in.URL+"/console/keys")
			revoked := keys.form(t, "revoke").submit(t, hc, url.Values{"kid": {next}, "confirm": {next}})
			if revoked.StatusCode != http.StatusOK || auditCount(t, in, "key.revoked", next) != 1 {
				t.Fatalf("revoke the next key: %d:\n%s", revoked.StatusCode, revoked.body)
			}
			if jwks := in.Client(t).Get("/.well-known/jwks.json").ExpectStatus(http.StatusOK); strings.Contains(string(jwks.Body), next) {
				t.Fatalf("the revoked key %s is still published", next)
			}
			clientsPage := siGet(t, hc, in.URL+"/console/clients")
			rotated := clientsPage.form(t, "rotate").submit(t, hc, nil)
			m := consoleSecret.FindStringSubmatch(rotated.body)
			if rotated.StatusCode != http.StatusOK || m == nil || auditCount(t, in, "client.secret_rotated", "web") != 1 {
				t.Fatalf("rotate web's secret: %d:\n%s", rotated.StatusCode, rotated.body)
			}
			in.Client(t).PostForm("/oauth2/introspect", url.Values{"token": {"x"}}, st.Basic("web", webSecret)).
				ExpectError(http.StatusUnauthorized, "invalid_client")
			webSecret = unescapeHTML(m[1])
			in.Client(t).PostForm("/oauth2/introspect", url.Values{"token": {"x"}}, st.Basic("web", webSecret)).ExpectStatus(http.StatusOK)
			if again := siGet(t, hc, in.URL+"/console/clients"); strings.Contains(again.body, webSecret) {
				t.Fatal("the secret is shown again")
			}

			// Bad input is a clear 4xx page, never a fault.
			for _, tc := range []struct {
				name, path, form string
				fields           url.Values
				want             int
			}{
				{"fail/unknown_user", "/console/users/usr_nobody", "", nil, http.StatusNotFound},
				{"fail/bad_user_cursor", "/console/users?cursor=not-a-cursor", "", nil, http.StatusBadRequest},
				{"fail/bad_invite_cursor", "/console/invites?cursor=not-a-cursor", "", nil, http.StatusBadRequest},
				{"fail/bad_audit_cursor", "/console/audit?cursor=not-a-cursor", "", nil, http.StatusBadRequest},
				{"fail/bad_since", "/console/audit?since=yesterday", "", nil, http.StatusBadRequest},
				{"fail/since_after_until", "/console/audit?since=2026-01-02T00:00&until=2026-01-01T00:00", "", nil, http.StatusBadRequest},
				{"fail/unknown_session_user", "/console/sessions?user=nobody@example.com", "", nil, http.StatusNotFound},
				{"fail/unknown_action", "/console/users/" + plain.ID, "grant_role", url.Values{"action": {"explode"}}, http.StatusBadRequest},
				{"fail/unknown_role", "/console/users/" + plain.ID, "grant_role", url.Values{"role": {"emperor"}}, http.StatusBadRequest},
				{"fail/self_role", "/console/users/" + root.ID, "revoke_role", url.Values{"role": {"super_admin"}}, http.StatusForbidden},
				{"fail/bad_email", "/console/invites", "create", url.Values{"email": {"not an address"}}, http.StatusBadRequest},
				{"fail/taken_client_id", "/console/clients", "create", url.Values{"client_id": {"web"}, "name": {"Web"}}, http.StatusConflict},
				{"fail/bad_redirect_uri", "/console/clients", "create", url.Values{"client_id": {"bad"}, "name": {"Bad"},
					"grants": {"authorization_code"}, "redirect_uris": {"javascript:alert(1)"}}, http.StatusBadRequest},
				{"fail/unknown_kid", "/console/keys", "revoke", url.Values{"kid": {"nope"}, "confirm": {"nope"}}, http.StatusNotFound},
				// A form field is any bytes, where a query is checked first.
				{"fail/name_not_utf8", "/console/users", "create_machine", url.Values{"name": {"Nightly \xff"}, "role": {"admin"}}, http.StatusBadRequest},
				{"fail/session_user_with_nul", "/console/sessions?user=" + plain.ID, "end_all", url.Values{"user_id": {"a\x00b@example.com"}}, http.StatusNotFound},
			} {
				t.Run(tc.name, func(t *testing.T) {
					p := siGet(t, hc, in.URL+tc.path)
					if tc.form != "" {
						p = p.form(t, tc.form).submit(t, hc, tc.fields)
					}
					if p.StatusCode != tc.want || !strings.Contains(p.body, "<main") {
						t.Fatalf("%d, want %d:\n%s", p.StatusCode, tc.want, p.body)
					}
				})
			}

			// Redirect URIs of a code-flow client: replaced through the
			// console under registration's rules; the built-in client's never.
			code := []string{"authorization_code", "refresh_token"}
			fx.Client(t, clients.Spec{ID: "spa", Name: "SPA", Public: true, Grants: code, RedirectURIs: []string{"http://127.0.0.1:9/cb"}})
			fx.Client(t, clients.Spec{ID: "home", Name: "Home", Public: true, FirstParty: true, Grants: code,
				RedirectURIs: []string{"http://127.0.0.1:9/home"}})
			uris := func(id string) []string {
				c, err := in.App.Core.Store.GetClient(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				return c.RedirectURIs
			}
			for _, tc := range []struct {
				name, client, uris string
				want               int
				after              []string
			}{
				{"ok/replace", "spa", "http://127.0.0.1:9/new\nhttps://app.example.com/cb", http.StatusOK,
					[]string{"http://127.0.0.1:9/new", "https://app.example.com/cb"}},
				{"fail/javascript", "spa", "javascript:alert(1)", http.StatusBadRequest, []string{"http://127.0.0.1:9/new", "https://app.example.com/cb"}},
				{"fail/none", "spa", "", http.StatusBadRequest, []string{"http://127.0.0.1:9/new", "https://app.example.com/cb"}},
				{"fail/no_code_grant", "web", "https://app.example.com/cb", http.StatusBadRequest, nil},
				{"fail/built_in", "portcullis", "https://evil.example/cb", http.StatusConflict,
					[]string{console.CallbackURL(in.Config.Issuer), pages.SecuritySignInURL(in.Config.Issuer)}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					p := siGet(t, hc, in.URL+"/console/clients").form(t, "redirect_uris").
						submit(t, hc, url.Values{"client_id": {tc.client}, "redirect_uris": {tc.uris}})
					if p.StatusCode != tc.want || !slices.Equal(uris(tc.client), tc.after) {
						t.Fatalf("%d (want %d), redirect URIs now %v:\n%s", p.StatusCode, tc.want, uris(tc.client), p.body)
					}
				})
			}
			if n := auditCount(t, in, "client.updated", "spa"); n != 1 {
				t.Fatalf("%d client.updated events", n)
			}

			// A machine user and its API key: the key shown once, then
			// listed by its hint only; revoking it is audited.
			usersPage := siGet(t, hc, in.URL+"/console/users")
			made := usersPage.form(t, "create_machine").submit(t, hc, url.Values{"name": {"Nightly export"}, "role": {"admin"}})
			if made.StatusCode != http.StatusCreated || !strings.Contains(made.body, "Created the machine user Nightly export") {
				t.Fatalf("create a machine user: %d:\n%s", made.StatusCode, made.body)
			}
			machines, err := in.App.Accounts.ListUsers(ctx, accounts.UserQuery{Query: "Nightly", Limit: 10})
			if err != nil || len(machines.Items) != 1 || machines.Items[0].Kind != store.UserMachine {
				t.Fatalf("machine users: %+v %v", machines.Items, err)
			}
			machine := machines.Items[0]
			keyPage := siGet(t, hc, in.URL+"/console/users/"+machine.ID).form(t, "create_api_key").
				submit(t, hc, url.Values{"name": {"export"}, "scopes": {"users:read"}})
			km := consoleSecret.FindStringSubmatch(keyPage.body)
			if keyPage.StatusCode != http.StatusOK || km == nil || !strings.HasPrefix(km[1], "pcak_") {
				t.Fatalf("create an API key: %d:\n%s", keyPage.StatusCode, keyPage.body)
			}
			listed := siGet(t, hc, in.URL+"/console/users/"+machine.ID)
			if strings.Contains(listed.body, km[1]) || !strings.Contains(listed.body, "export") {
				t.Fatalf("the key page after creation shows the key again, or not its name:\n%s", listed.body)
			}
			if p := listed.form(t, "revoke_api_key").submit(t, hc, nil); p.StatusCode != http.StatusOK ||
				auditCount(t, in, "api_key.revoked", "") != 1 {
				t.Fatalf("revoke the API key: %d:\n%s", p.StatusCode, p.body)
			}

			// Clear failed logins: a throttled account may sign in at once.
			locked := fx.User(t, "locked@example.com", consolePassword, "user")
			api := in.Client(t)
			for i := 0; i < 3; i++ {
				api.PostForm("/oauth2/token", st.PasswordForm(locked.Email, "not the password", ""), st.Basic("web", webSecret)).
					ExpectError(http.StatusBadRequest, "invalid_grant")
			}
			// (The delay the third failure opened lasts a second: whether the
			// next attempt meets it depends on the machine's speed, so the
			// counters are read instead.)
			failKey, lockKey := ratelimit.LoginKeys(locked.Email)
			counters := func() (fails, lock int64) {
				t.Helper()
				fails, _, err1 := in.App.State.Peek(ctx, failKey, time.Now())
				lock, _, err2 := in.App.State.Peek(ctx, lockKey, time.Now())
				if err := errors.Join(err1, err2); err != nil {
					t.Fatal(err)
				}
				return fails, lock
			}
			if fails, _ := counters(); fails != 3 {
				t.Fatalf("%d failures counted, want 3", fails)
			}
			lockedPage := siGet(t, hc, in.URL+"/console/users/"+locked.ID)
			cleared := lockedPage.form(t, "clear_throttle").submit(t, hc, nil)
			if cleared.StatusCode != http.StatusOK || auditCount(t, in, "login.throttle_cleared", locked.ID) != 1 {
				t.Fatalf("clear failed logins: %d:\n%s", cleared.StatusCode, cleared.body)
			}
			if fails, lock := counters(); fails != 0 || lock != 0 {
				t.Fatalf("after clearing: %d failures, lock %d", fails, lock)
			}
			api.PostForm("/oauth2/token", st.PasswordForm(locked.Email, consolePassword, ""), st.Basic("web", webSecret)).
				ExpectStatus(http.StatusOK)

			// Each form of a user's page goes through its service method:
			// audited with client_id console, the change in the store.
			subject := fx.User(t, "subject@example.com", consolePassword, "user")
			for _, tc := range []struct {
				name, action, audit string
				fields              url.Values
				check               func(u store.User) bool
			}{
				{"ok/grant_role", "grant_role", "role.granted", url.Values{"role": {"admin"}},
					func(u store.User) bool { return slices.Contains(u.Roles, "admin") }},
				{"ok/revoke_role", "revoke_role", "role.revoked", url.Values{"role": {"admin"}},
					func(u store.User) bool { return !slices.Contains(u.Roles, "admin") }},
				{"ok/deactivate", "deactivate", "user.deactivated", nil, func(u store.User) bool { return !u.Active }},
				{"ok/activate", "activate", "user.reactivated", nil, func(u store.User) bool { return u.Active }},
				{"ok/temp_password", "temp_password", "password.temp_set", url.Values{"password": {"a temporary password 7"}},
					func(u store.User) bool { return u.MustChangePassword }},
				{"ok/reset_link", "reset_link", "password.reset_requested", nil, func(store.User) bool { return true }},
				{"ok/revoke_sessions", "revoke_sessions", "session.ended", nil, func(store.User) bool { return true }},
			} {
				t.Run(tc.name, func(t *testing.T) {
					page := siGet(t, hc, in.URL+"/console/users/"+subject.ID)
					p := page.form(t, tc.action).submit(t, hc, tc.fields)
					u, err := in.App.Core.Store.GetUser(ctx, subject.ID)
					if p.StatusCode != http.StatusOK || err != nil || !tc.check(u) || auditCount(t, in, tc.audit, subject.ID) < 1 {
						t.Fatalf("%d (%v), user %+v:\n%s", p.StatusCode, err, u, p.body)
					}
				})
			}

			// A person without admin permissions: the 403 page, no screen.
			other := siBrowser(t)
			refused, _ := consoleSignIn(t, in, other, plain.Email, "", "/console/users")
			if refused.StatusCode != http.StatusForbidden || !strings.Contains(refused.body, "Not an operator") ||
				strings.Contains(refused.body, root.Email) {
				t.Fatalf("a user without admin permissions: %d:\n%s", refused.StatusCode, refused.body)
			}

			// Deactivating an operator ends their console session at once.
			ops := fx.User(t, "ops@example.com", consolePassword, "admin")
			opsBrowser := siBrowser(t)
			if p, _ := consoleSignIn(t, in, opsBrowser, ops.Email, "", "/console/roles"); p.StatusCode != http.StatusOK {
				t.Fatalf("the admin's sign-in: %d", p.StatusCode)
			}
			// An admin (not every admin permission) may not redirect a
			// first-party client's codes elsewhere.
			home := siGet(t, opsBrowser, in.URL+"/console/clients").form(t, "redirect_uris").
				submit(t, opsBrowser, url.Values{"client_id": {"home"}, "redirect_uris": {"https://evil.example/cb"}})
			if home.StatusCode != http.StatusForbidden || !slices.Equal(uris("home"), []string{"http://127.0.0.1:9/home"}) {
				t.Fatalf("an admin redirecting a first-party client: %d, %v", home.StatusCode, uris("home"))
			}
			off := false
			if _, err := in.App.Accounts.UpdateUser(ctx, accounts.Actor{ID: root.ID}, ops.ID, accounts.UserPatch{Active: &off}); err != nil {
				t.Fatal(err)
			}
			if p := siGet(t, opsBrowser, in.URL+"/console/roles"); p.StatusCode != http.StatusSeeOther {
				t.Fatalf("a deactivated operator's console session: %d:\n%s", p.StatusCode, p.body)
			}

			// Logout ends the session on the server.
			out := siGet(t, hc, in.URL+"/console/roles")
			bye := out.submit(t, hc, nil) // the first form: Sign out
			if bye.StatusCode != http.StatusOK || !strings.Contains(bye.body, "Signed out") {
				t.Fatalf("logout: %d:\n%s", bye.StatusCode, bye.body)
			}
			replay := siBrowser(t)
			replay.Jar.SetCookies(mustURL(t, in.URL), []*http.Cookie{{Name: cookie.Name, Value: cookie.Value, Path: "/"}})
			if p := siGet(t, replay, in.URL+"/console/users"); p.StatusCode != http.StatusSeeOther {
				t.Fatalf("the ended session's cookie: %d", p.StatusCode)
			}
			if _, err := in.App.BrowserSessions.FindBrowserSession(ctx, []byte(cookie.Value), time.Now()); err == nil {
				t.Fatal("a session is stored under the raw cookie value")
			}
		})
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// submitWith is submit with fields, and header set on the request.
func (p siPage) submitWith(t *testing.T, hc *http.Client, fields url.Values, header [2]string) siPage {
	t.Helper()
	if header[0] == "" {
		return p.submit(t, hc, fields)
	}
	hc2 := *hc
	hc2.Transport = headerTransport{header: header, base: http.DefaultTransport}
	return p.submit(t, &hc2, fields)
}

type headerTransport struct {
	header [2]string
	base   http.RoundTripper
}

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(h.header[0], h.header[1])
	return h.base.RoundTrip(r)
}

// TestConsoleCookieOverHTTPS: served over TLS, the console cookie is
// exactly __Host-portcullis-console: Secure, HttpOnly, SameSite=Strict,
// Path=/, host-only, a browser-session cookie.
func TestConsoleCookieOverHTTPS(t *testing.T) {
	t.Parallel()
	certFile, keyFile := selfSignedCert(t)
	env := st.NewEnv(t, st.SQLite)
	env["PORTCULLIS_TLS_CERT"], env["PORTCULLIS_TLS_KEY"] = certFile, keyFile
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	env["PORTCULLIS_ISSUER"] = "https://" + ln.Addr().String()
	in := st.StartOn(t, env, ln)
	if !strings.HasPrefix(in.URL, "https://") || !strings.HasPrefix(in.Config.Issuer, "https://") {
		t.Fatalf("instance %s, issuer %s: want HTTPS", in.URL, in.Config.Issuer)
	}
	fx := st.NewFixtures(t, in.App.Core)
	root := fx.User(t, "root@example.com", consolePassword, "super_admin")
	hc := siBrowser(t)
	hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	page, cookie := consoleSignIn(t, in, hc, root.Email, "", "/console/keys")
	if page.StatusCode != http.StatusOK || page.Request.URL.Path != "/console/keys" {
		t.Fatalf("after the sign-in: %d %s", page.StatusCode, page.Request.URL)
	}
	if cookie == nil || cookie.Name != console.CookieName || !cookie.Secure || !cookie.HttpOnly ||
		cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/" || cookie.Domain != "" || cookie.MaxAge != 0 ||
		!cookie.Expires.IsZero() || len(cookie.Value) != 43 {
		t.Fatalf("console cookie over HTTPS %+v (raw %q)", cookie, cookie.Raw)
	}
}

// TestEveryPageFormNeedsCSRF: every form a browser page posts, the
// console's included, is refused (403) without its CSRF token, even from a
// browser signed in to the console and the pages; the POSTs without one are
// the API's, the authorization request and RP-initiated logout, which only
// leads to the page asking to confirm (the session stays).
func TestEveryPageFormNeedsCSRF(t *testing.T) {
	t.Parallel()
	in := st.Start(t, st.NewEnv(t, st.PostgresRedis))
	fx := st.NewFixtures(t, in.App.Core)
	root := fx.User(t, "root@example.com", consolePassword, "super_admin")
	secret, _ := st.EnrolTOTPPreviousStep(t, in.App.MFA, root)
	hc := siBrowser(t)
	_, consoleCookie := consoleSignIn(t, in, hc, root.Email, secret, "/console")
	cookies := []string{consoleCookie.Name + "=" + consoleCookie.Value}
	for _, c := range hc.Jar.Cookies(mustURL(t, in.URL)) { // the pages' session and CSRF cookies
		cookies = append(cookies, c.Name+"="+c.Value)
	}
	browser := st.WithHeader("Cookie", strings.Join(cookies, "; "))
	noForm := func(path string) bool {
		return strings.HasPrefix(path, "/admin/") || strings.HasPrefix(path, "/auth/") || path == "/userinfo" ||
			slices.Contains([]string{"/oauth2/token", "/oauth2/introspect", "/oauth2/revoke", "/oauth2/par", "/oauth2/authorize"}, path)
	}
	c := in.Client(t)
	forms := 0
	for _, r := range in.App.Server.Echo().Routes() {
		if r.Method != http.MethodPost || noForm(r.Path) {
			continue
		}
		path := strings.ReplaceAll(r.Path, ":id", root.ID)
		body := url.Values{"decision": {"logout"}, "name": {"x"}, "email": {"x@example.com"}, "role": {"user"}, "client_id": {"web"},
			"user_id": {root.ID}, "username": {root.Email}, "password": {consolePassword}}.Encode()
		resp := c.Do(r.Method, path, []byte(body), "application/x-www-form-urlencoded", browser)
		if r.Path == "/oauth2/logout" { // held, and decided at the GET it answers with
			loc := resp.Header.Get("Location")
			if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/logout?request=") {
				t.Fatalf("RP-initiated logout POSTed: %d Location %q, want 303 to /logout?request=…", resp.StatusCode, loc)
			}
			if page := c.Get(loc, browser); page.StatusCode != http.StatusOK || !strings.Contains(string(page.Body), "Sign out?") {
				t.Fatalf("RP-initiated logout without an ID token: %d, want the page asking to confirm:\n%s", page.StatusCode, page.Body)
			}
			continue
		}
		forms++
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("POST %s without a CSRF token: %d, want 403", path, resp.StatusCode)
		}
	}
	if forms < 15 {
		t.Fatalf("only %d page forms: the sweep lost its routes", forms)
	}
	if p := siGet(t, hc, in.URL+"/console/users"); p.StatusCode != http.StatusOK {
		t.Fatalf("the console session after the sweep: %d", p.StatusCode)
	}
}

// TestConsoleFailsClosed: when the token state (Redis) cannot be reached,
// a console request with a session cookie answers 503 and reveals nothing;
// it is never taken for "signed out" (no redirect to a sign-in that could
// not work either).
func TestConsoleFailsClosed(t *testing.T) {
	t.Parallel()
	redis := testservers.NewRedis(t)
	env := st.NewEnv(t, st.PostgresRedis)
	env["PORTCULLIS_REDIS_URL"] = redis.URL()
	in := st.Start(t, env)
	root := st.NewFixtures(t, in.App.Core).User(t, "root@example.com", consolePassword, "super_admin")
	hc := siBrowser(t)
	if p, _ := consoleSignIn(t, in, hc, root.Email, "", "/console/audit"); p.StatusCode != http.StatusOK {
		t.Fatalf("sign-in: %d", p.StatusCode)
	}
	if err := redis.Stop(); err != nil {
		t.Fatal(err)
	}
	p := siGet(t, hc, in.URL+"/console/audit")
	if p.StatusCode != http.StatusServiceUnavailable || p.Header.Get("Location") != "" ||
		!strings.Contains(p.body, "Something went wrong on our side") {
		t.Fatalf("with the token state down: %d %q:\n%s", p.StatusCode, p.Header.Get("Location"), p.body)
	}
}

// TestConsoleCallbackRefusals: the sign-in's callback answers 400 (and
// starts no session) for a state it does not know, none at all, a
// cancelled sign-in, a callback opened in another browser than the one
// that started the sign-in (which leaves that browser's sign-in usable),
// and a callback used twice.
func TestConsoleCallbackRefusals(t *testing.T) {
	t.Parallel()
	in := st.Start(t, st.NewEnv(t, st.SQLite))
	root := st.NewFixtures(t, in.App.Core).User(t, "root@example.com", consolePassword, "super_admin")
	hc := siBrowser(t)
	step := follow(t, hc, siGet(t, hc, in.URL+"/console/login?next=%2Fconsole%2Froles")).
		submit(t, hc, url.Values{"username": {root.Email}, "password": {consolePassword}})
	callback := step.Header.Get("Location")
	if step.StatusCode != http.StatusSeeOther || !strings.HasPrefix(callback, console.CallbackURL(in.Config.Issuer)+"?") {
		t.Fatalf("after the login: %d %q", step.StatusCode, callback)
	}
	refused := func(t *testing.T, hc *http.Client, u, says string) {
		t.Helper()
		p := siGet(t, hc, u)
		if p.StatusCode != http.StatusBadRequest || !strings.Contains(p.body, says) {
			t.Fatalf("%s: %d:\n%s", u, p.StatusCode, p.body)
		}
		for _, c := range p.Cookies() {
			if c.Name == console.InsecureCookieName && c.Value != "" {
				t.Fatalf("%s started a console session", u)
			}
		}
	}
	t.Run("fail/another_browser", func(t *testing.T) {
		refused(t, siBrowser(t), callback, "started in another browser")
	})
	if p := follow(t, hc, siGet(t, hc, callback)); p.StatusCode != http.StatusOK || p.Request.URL.Path != "/console/roles" {
		t.Fatalf("the right browser after another tried: %d %s", p.StatusCode, p.Request.URL)
	}
	cancelled := siGet(t, hc, in.URL+"/console/login")
	state, err := url.Parse(cancelled.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, query, says string }{
		{"fail/used_twice", strings.TrimPrefix(callback, console.CallbackURL(in.Config.Issuer)), "already used"},
		{"fail/no_state", "?code=x", "incomplete"},
		{"fail/unknown_state", "?code=x&state=unknown", "expired or was already used"},
		{"fail/cancelled", "?error=access_denied&state=" + url.QueryEscape(state.Query().Get("state")), "cancelled or refused"},
	} {
		t.Run(tc.name, func(t *testing.T) { refused(t, hc, in.URL+console.CallbackPath+tc.query, tc.says) })
	}
}

// TestConsoleListPages: a list longer than a page is fetched one cursor
// page at a time; following "Next page" shows every user exactly once.
func TestConsoleListPages(t *testing.T) {
	t.Parallel()
	in := st.Start(t, st.NewEnv(t, st.SQLite))
	fx := st.NewFixtures(t, in.App.Core)
	root := fx.User(t, "root@example.com", consolePassword, "super_admin")
	want := []string{root.Email}
	for i := range console.PageSize + 5 {
		want = append(want, fx.User(t, fmt.Sprintf("user%02d@example.com", i), consolePassword, "user").Email)
	}
	hc := siBrowser(t)
	page, _ := consoleSignIn(t, in, hc, root.Email, "", "/console/users")
	next := regexp.MustCompile(`<a href="([^"]+)" class="next"`)
	email := regexp.MustCompile(`<td data-label="User"><a href="[^"]+">([^<]+)</a>`)
	var seen []string
	for pages := 1; ; pages++ {
		rows := email.FindAllStringSubmatch(page.body, -1)
		if len(rows) > console.PageSize {
			t.Fatalf("page %d has %d rows", pages, len(rows))
		}
		for _, r := range rows {
			seen = append(seen, r[1])
		}
		m := next.FindStringSubmatch(page.body)
		if m == nil {
			break
		}
		if pages > 5 {
			t.Fatal("too many pages")
		}
		page = siGet(t, hc, in.URL+unescapeHTML(m[1]))
	}
	slices.Sort(seen)
	slices.Sort(want)
	if !slices.Equal(seen, want) {
		t.Fatalf("users across pages: %v, want %v", seen, want)
	}
}

// TestConsoleRotateUnderCeiling: the console's "rotate" passes the ceiling
// a new client passes. An admin (default policy: no keys:rotate), signed
// in just now, is refused (403 page, no secret shown, the old one still
// working) the secret of a super_admin's client whose client_credentials
// tokens carry keys:rotate, and is given that of a client within their
// permissions. Fails before this change: the page showed deployer's new
// secret, whose tokens carried keys:rotate.
func TestConsoleRotateUnderCeiling(t *testing.T) {
	t.Parallel()
	in := st.Start(t, st.NewEnv(t, st.PostgresRedis))
	fx := st.NewFixtures(t, in.App.Core)
	fx.User(t, "ada@example.com", consolePassword, "admin")
	cc := []string{token.GrantClientCredentials}
	deployer := fx.Client(t, clients.Spec{ID: "deployer", Name: "Deployer", Grants: cc, Scopes: []string{"keys:rotate"}})
	fx.Client(t, clients.Spec{ID: "reader", Name: "Reader", Grants: cc, Scopes: []string{"users:read"}})
	hc := siBrowser(t)
	consoleSignIn(t, in, hc, "ada@example.com", "", "/console/clients")
	for _, tc := range []struct {
		name, client string
		status       int
	}{
		{"fail/above_the_ceiling", "deployer", http.StatusForbidden},
		{"ok/within_the_ceiling", "reader", http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			page := siGet(t, hc, in.URL+"/console/clients")
			rotated := page.form(t, "rotate").submit(t, hc, url.Values{"client_id": {tc.client}})
			shown := consoleSecret.FindStringSubmatch(rotated.body)
			if rotated.StatusCode != tc.status || (shown != nil) != (tc.status == http.StatusOK) {
				t.Fatalf("rotate %s: %d, secret shown %v:\n%s", tc.client, rotated.StatusCode, shown != nil, rotated.body)
			}
		})
	}
	in.Client(t).PostForm("/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, st.Basic("deployer", deployer)).
		ExpectStatus(http.StatusOK)
}

// TestConsoleClientFormRefusesControlCharacters: the console's create
// form goes through the same validation as the API: a client name with a
// NUL (which PostgreSQL refuses to store) or another control character is
// a 400 page and creates nothing. Fails before this change: the NUL
// answered the error page of a fault (500), the bell 201.
func TestConsoleClientFormRefusesControlCharacters(t *testing.T) {
	t.Parallel()
	in := st.Start(t, st.NewEnv(t, st.PostgresRedis))
	fx := st.NewFixtures(t, in.App.Core)
	fx.User(t, "ada@example.com", consolePassword, "admin")
	hc := siBrowser(t)
	consoleSignIn(t, in, hc, "ada@example.com", "", "/console/clients")
	for _, tc := range []struct{ name, id, clientName string }{
		{"fail/name_nul", "nul-name", "Web\x00App"},
		{"fail/name_bell", "bell-name", "Web\aApp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			page := siGet(t, hc, in.URL+"/console/clients")
			created := page.form(t, "create").submit(t, hc, url.Values{"client_id": {tc.id}, "name": {tc.clientName},
				"grants": {token.GrantClientCredentials}})
			if created.StatusCode != http.StatusBadRequest {
				t.Fatalf("create %q: %d:\n%s", tc.clientName, created.StatusCode, created.body)
			}
			if _, err := in.App.Core.Store.GetClient(t.Context(), tc.id); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("the refused client was stored: %v", err)
			}
		})
	}
}

// TestConsoleCredentialActionsNeedARecentSignIn: on PostgreSQL+Redis and
// SQLite, every console action that mints or reveals a credential, or
// hands over an account or a client's codes, needs a sign-in within five
// minutes. With the console's clock six minutes on, each answers the
// "confirm it is you" page (403), shows no secret, records no audit event
// and changes nothing; the actions that only take access away still work.
// Signed in just now, each goes through. Fails before this change: a stale
// session created an admin machine user, an API key for it (shown), a
// confidential client (its secret shown), replaced a public client's
// redirect URIs, set a temporary password, granted a role, reactivated a
// user and sent an invite.
func TestConsoleCredentialActionsNeedARecentSignIn(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			in := st.Start(t, st.NewEnv(t, b))
			fx := st.NewFixtures(t, in.App.Core)
			ctx := context.Background()
			root := fx.User(t, "root@example.com", consolePassword, "super_admin")
			target := fx.User(t, "target@example.com", consolePassword, "user")
			st.EnrolTOTPPreviousStep(t, in.App.MFA, target)
			dormant := fx.User(t, "dormant@example.com", consolePassword, "user")
			bystander := fx.User(t, "bystander@example.com", consolePassword, "user")
			off := false
			if _, err := in.App.Accounts.UpdateUser(ctx, accounts.Actor{ID: root.ID}, dormant.ID, accounts.UserPatch{Active: &off}); err != nil {
				t.Fatal(err)
			}
			machine, err := in.App.Accounts.CreateUser(ctx, accounts.Actor{ID: root.ID},
				accounts.NewUser{Kind: store.UserMachine, Name: "Robot", Roles: []string{"admin"}})
			if err != nil {
				t.Fatal(err)
			}
			fx.Client(t, clients.Spec{ID: "web", Name: "Web"})
			fx.Client(t, clients.Spec{ID: "spa", Name: "SPA", Public: true, Grants: []string{"authorization_code"},
				RedirectURIs: []string{"http://127.0.0.1:9/cb"}})
			keyList, err := in.App.Accounts.ListKeys(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var next string
			for _, k := range keyList {
				if k.State == store.KeyNext {
					next = k.KID
				}
			}
			user := func(id string) store.User {
				t.Helper()
				u, err := in.App.Core.Store.GetUser(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				return u
			}
			hc := siBrowser(t)
			consoleSignIn(t, in, hc, root.Email, "", "/console/users")

			for _, tc := range []struct {
				name, path, form string
				fields           url.Values
				audit            string
				want             int  // signed in just now
				secret           bool // shown once, signed in just now
				changed          func() bool
			}{
				{"create_machine", "/console/users", "create_machine", url.Values{"name": {"backdoor"}, "role": {"admin"}},
					"user.created", http.StatusCreated, false, func() bool {
						page, err := in.App.Accounts.ListUsers(ctx, accounts.UserQuery{Query: "backdoor", Limit: 10})
						return err != nil || len(page.Items) > 0
					}},
				{"create_api_key", "/console/users/" + machine.ID, "create_api_key",
					url.Values{"name": {"root-key"}, "scopes": {"users:read users:write roles:assign"}},
					"api_key.created", http.StatusOK, true, func() bool {
						page, err := in.App.Accounts.ListMachineAPIKeys(ctx, accounts.Actor{ID: root.ID}, machine.ID, "", 10)
						return err != nil || len(page.Items) > 0
					}},
				{"grant_role", "/console/users/" + target.ID, "grant_role", url.Values{"role": {"admin"}},
					"role.granted", http.StatusOK, false, func() bool { return slices.Contains(user(target.ID).Roles, "admin") }},
				{"temp_password", "/console/users/" + target.ID, "temp_password", url.Values{"password": {"a temporary password 7"}},
					"password.temp_set", http.StatusOK, false, func() bool { return user(target.ID).MustChangePassword }},
				{"activate", "/console/users/" + dormant.ID, "activate", nil,
					"user.reactivated", http.StatusOK, false, func() bool { return user(dormant.ID).Active }},
				{"mfa_reset", "/console/users/" + target.ID, "mfa_reset", nil, "mfa.reset", http.StatusOK, false, nil},
				{"invite", "/console/invites", "create", url.Values{"email": {"friend@example.com"}, "role": {"admin"}},
					"invite.created", http.StatusOK, false, func() bool {
						list, err := in.App.Accounts.ListInvites(ctx, "", 10)
						return err != nil || len(list.Items) > 0
					}},
				{"create_client", "/console/clients", "create", url.Values{"client_id": {"backdoor"}, "name": {"Backdoor"},
					"type": {"confidential"}, "grants": {"client_credentials"}},
					"client.created", http.StatusCreated, true, func() bool {
						_, err := in.App.Core.Store.GetClient(ctx, "backdoor")
						return !errors.Is(err, store.ErrNotFound)
					}},
				{"redirect_uris", "/console/clients", "redirect_uris", url.Values{"client_id": {"spa"}, "redirect_uris": {"https://evil.example/cb"}},
					"client.updated", http.StatusOK, false, func() bool {
						c, err := in.App.Core.Store.GetClient(ctx, "spa")
						return err != nil || !slices.Equal(c.RedirectURIs, []string{"http://127.0.0.1:9/cb"})
					}},
				{"rotate", "/console/clients", "rotate", url.Values{"client_id": {"web"}}, "client.secret_rotated", http.StatusOK, true, nil},
				{"key_revoke", "/console/keys", "revoke", url.Values{"kid": {next}, "confirm": {next}}, "key.revoked", http.StatusOK, false, nil},
			} {
				t.Run(tc.name, func(t *testing.T) {
					before := auditCount(t, in, tc.audit, "")
					in.App.Console.SetClock(func() time.Time { return time.Now().Add(accounts.ReauthWindow + time.Minute) })
					page := siGet(t, hc, in.URL+tc.path)
					p := page.form(t, tc.form).submit(t, hc, tc.fields)
					if p.StatusCode != http.StatusForbidden || !strings.Contains(p.body, "Confirm it is you") ||
						!strings.Contains(p.body, "reauth=1") || consoleSecret.MatchString(p.body) {
						t.Fatalf("stale: %d, want 403 Confirm it is you:\n%s", p.StatusCode, p.body)
					}
					if n := auditCount(t, in, tc.audit, ""); n != before || tc.changed != nil && tc.changed() {
						t.Fatalf("stale: %d %s events, changed %v", n, tc.audit, tc.changed != nil && tc.changed())
					}

					in.App.Console.SetClock(time.Now)
					p = siGet(t, hc, in.URL+tc.path).form(t, tc.form).submit(t, hc, tc.fields)
					if p.StatusCode != tc.want || consoleSecret.MatchString(p.body) != tc.secret {
						t.Fatalf("fresh: %d (want %d), secret shown %v:\n%s", p.StatusCode, tc.want, consoleSecret.MatchString(p.body), p.body)
					}
					if n := auditCount(t, in, tc.audit, ""); n != before+1 || tc.changed != nil && !tc.changed() {
						t.Fatalf("fresh: %d %s events, changed %v", n, tc.audit, tc.changed != nil && tc.changed())
					}
				})
			}

			// Taking access away needs no recent sign-in.
			in.App.Console.SetClock(func() time.Time { return time.Now().Add(accounts.ReauthWindow + time.Minute) })
			defer in.App.Console.SetClock(time.Now)
			p := siGet(t, hc, in.URL+"/console/users/"+bystander.ID).form(t, "deactivate").submit(t, hc, nil)
			if p.StatusCode != http.StatusOK || user(bystander.ID).Active {
				t.Fatalf("stale deactivation: %d, active %v:\n%s", p.StatusCode, user(bystander.ID).Active, p.body)
			}
		})
	}
}

// TestConsoleSignOutDuringCallback: on PostgreSQL+Redis and SQLite, an
// end of every session of the operator's (a sign-out everywhere, a
// deactivation) that lands at any point of the console's callback, in the
// same second as the sign-in, leaves no console session: the callback
// answers a 4xx page or a cookie that leads to the sign-in, never a 5xx.
// The cut-off is made by the console's clock on its k-th call from the
// callback on (k = 0: none, the sign-in works). Fails before this change:
// a cut-off right after AuthenticateAdmin (k = 3) was taken for one before
// the sign-in (the session's AuthTime was capped at a later now), and the
// console session worked for up to 12 hours; one inside the session's
// start (k = 4) answered 500.
func TestConsoleSignOutDuringCallback(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			in := st.Start(t, st.NewEnv(t, b))
			fx := st.NewFixtures(t, in.App.Core)
			for k := range int32(6) {
				t.Run(fmt.Sprintf("cut_at_call_%d", k), func(t *testing.T) {
					u := fx.User(t, fmt.Sprintf("root%d@example.com", k), consolePassword, "super_admin")
					hc := siBrowser(t)
					callback := consoleCallback(t, in, hc, u.Email, "", "/console/users")
					var calls atomic.Int32
					in.App.Console.SetClock(func() time.Time {
						if calls.Add(1) == k {
							if err := in.App.Tokens.EndUserSessions(context.Background(), u.ID); err != nil {
								t.Error(err)
							}
						}
						return time.Now()
					})
					defer in.App.Console.SetClock(time.Now)
					cb := siGet(t, hc, callback)
					if cb.StatusCode >= 500 {
						t.Fatalf("callback: %d:\n%s", cb.StatusCode, cb.body)
					}
					p := siGet(t, hc, in.URL+"/console/users")
					if k == 0 {
						if cb.StatusCode != http.StatusSeeOther || p.StatusCode != http.StatusOK {
							t.Fatalf("without a cut-off: callback %d, users %d", cb.StatusCode, p.StatusCode)
						}
						return
					}
					if p.StatusCode != http.StatusSeeOther || !strings.Contains(p.Header.Get("Location"), "/console/login") {
						t.Fatalf("after a cut-off at clock call %d (of %d), callback %d: users %d:\n%s", k, calls.Load(), cb.StatusCode,
							p.StatusCode, p.body)
					}
				})
			}
		})
	}
}

package pages_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/server/console"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// walkByKeyboard checks a console screen by keyboard alone: every form
// control has a label, and Tab from the top of the page reaches every
// control and link that can take focus, in document order, each with a
// visible focus indicator.
func walkByKeyboard(t *testing.T, ctx context.Context, where string) {
	t.Helper()
	accessible(t, ctx) // labels
	n := value(t, ctx, chromedp.Evaluate[int64](`(() => {
	  const all = [...document.querySelectorAll('a[href], button, input:not([type=hidden]), select, textarea, [tabindex]:not([tabindex="-1"])')]
	    .filter((e) => !e.disabled && e.getClientRects().length > 0);
	  all.forEach((e, i) => { e.dataset.walk = String(i); });
	  return all.length;
	})()`))
	if n == 0 {
		t.Fatalf("%s: nothing to focus", where)
	}
	browse(t, ctx, chromedp.Evaluate[chromedp.Void](`document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); null`))
	for i := int64(0); i < n; i++ {
		var got string
		// A date and time input holds a Tab stop for each of its parts.
		for tries := 0; tries < 8 && (tries == 0 || i > 0 && got == fmt.Sprint(i-1)); tries++ {
			browse(t, ctx, chromedp.KeyEvent("\t"))
			got = value(t, ctx, chromedp.Evaluate[string](`document.activeElement.dataset.walk || document.activeElement.outerHTML.slice(0, 80)`))
		}
		if got != fmt.Sprint(i) {
			t.Fatalf("%s: Tab %d focuses %q, want control %d of %d in document order", where, i+1, got, i, n)
		}
		outline := value(t, ctx, chromedp.Evaluate[string](`getComputedStyle(document.activeElement).outlineStyle`))
		if outline == "none" || outline == "" {
			t.Fatalf("%s: control %d has no visible focus indicator", where, i)
		}
	}
}

// tabTo presses Tab until the element with id has the focus.
func tabTo(t *testing.T, ctx context.Context, id string) {
	t.Helper()
	browse(t, ctx, chromedp.Evaluate[chromedp.Void](`document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); null`))
	for i := 0; i < 200; i++ {
		browse(t, ctx, chromedp.KeyEvent("\t"))
		if value(t, ctx, chromedp.Evaluate[string](`document.activeElement.id`)) == id {
			return
		}
	}
	t.Fatalf("Tab never reaches #%s", id)
}

// pressEnter presses Enter on the focused control and waits for the page it
// leads to, returning its status.
func pressEnter(t *testing.T, ctx context.Context) int64 {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	resp, err := chromedp.RunResponse(tctx, chromedp.KeyEvent("\r"))
	if err != nil {
		t.Fatalf("press Enter: %v", err)
	}
	return resp.Status
}

// TestConsoleBrowser: the admin console in headless Chromium on
// PostgreSQL + Redis. The super_admin signs in through the hosted login
// with a TOTP code; the console cookie is portcullis-console, HttpOnly,
// SameSite=Strict, Path=/, a session cookie. By keyboard alone they invite
// a person as admin, who accepts the emailed link in a second browser
// context, signs in to the console there and tries to grant super_admin
// (above an admin's ceiling): the refusal is shown and the database is
// unchanged. The super_admin ends a user's browser session (the access
// token its application holds is then inactive at /oauth2/introspect) and
// every session of the user (a password-grant token too), creates a client (its
// secret shown once), rotates the signing keys (the JWKS then serves the
// new next key) and finds the invite, acceptance, session end and rotation
// in the audit screen, filtered by action. Every screen is walked by
// keyboard alone and screenshotted at 1280 and 390 px
// (docs/screenshots/console-*); no page reports a Content-Security-Policy
// violation. A form posted from another site is refused (403) and changes
// nothing.
func TestConsoleBrowser(t *testing.T) {
	dir := t.TempDir()
	if *updateScreenshots {
		dir = screenshotDir
	}
	d := newDeployment(t, nil)
	secret, _ := st.EnrolTOTP(t, d.in.App.MFA, d.root)
	tom := d.fx.User(t, "tom@example.com", goodPassword, "user")
	browser := newBrowser(t)
	tb := newTab(t, browser)
	ctx := tb.ctx
	var shots []string
	shoot := func(name string) {
		t.Helper()
		tb.noViolation(t, name)
		walkByKeyboard(t, ctx, name)
		browse(t, ctx, chromedp.Evaluate[chromedp.Void](`document.activeElement.blur(); window.scrollTo(0, 0); null`))
		shots = append(shots, screenshot(t, ctx, dir, "console-"+name)...)
	}
	expect := func(ctx context.Context, status, want int64, what string) {
		t.Helper()
		if status != want {
			t.Fatalf("%s: status %d, want %d: %s", what, status, want, text(t, ctx))
		}
	}

	// Sign in: the hosted login, then its TOTP step.
	expect(ctx, open(t, ctx, d.in.URL+"/console/users"), http.StatusOK, "the login page")
	browse(t, ctx, fill("username", rootEmail), fill("password", rootPass))
	expect(ctx, submit(t, ctx), http.StatusOK, "the second step")
	browse(t, ctx, fill("code", st.NextTOTPCode(t, secret)))
	expect(ctx, submit(t, ctx), http.StatusOK, "the console")
	if got := location(t, ctx); got != d.in.URL+"/console/users" {
		t.Fatalf("after the sign-in: %s", got)
	}
	mustContain(t, "the users screen", text(t, ctx), "Users", rootEmail, "tom@example.com")
	var cookie bool
	for _, c := range tb.cookies(t, d.in.URL) {
		if c.Name == console.InsecureCookieName {
			cookie = true
			if !c.HTTPOnly || c.SameSite != "Strict" || c.Path != "/" || !c.Session || c.Domain != "127.0.0.1" {
				t.Fatalf("console cookie %+v", c)
			}
		}
	}
	if !cookie {
		t.Fatal("no console cookie")
	}
	shoot("users")

	// Invite by keyboard alone: Tab to each field, type, Enter.
	expect(ctx, open(t, ctx, d.in.URL+"/console/invites"), http.StatusOK, "invites")
	tabTo(t, ctx, "email")
	browse(t, ctx, chromedp.KeyEvent("ada@example.com"), chromedp.KeyEvent("\t"), chromedp.KeyEvent("admin"))
	tabTo(t, ctx, "invite")
	expect(ctx, pressEnter(t, ctx), http.StatusOK, "invite")
	mustContain(t, "the invites screen", text(t, ctx), "Invited ada@example.com as admin", "pending")
	shoot("invites")

	// The invitee accepts in a second browser context.
	link := d.smtp.WaitFor(t, "ada@example.com", mailWithin).Link(t)
	other := newTab(t, browser)
	expect(other.ctx, open(t, other.ctx, link), http.StatusOK, "the invite page")
	browse(t, other.ctx, fill("password", goodPassword), fill("confirm_password", goodPassword))
	expect(other.ctx, submit(t, other.ctx), http.StatusOK, "accept the invite")
	// ... signs in to the console there and tries to grant super_admin.
	expect(other.ctx, open(t, other.ctx, d.in.URL+"/console/users/"+tom.ID), http.StatusOK, "the login page")
	browse(t, other.ctx, fill("username", "ada@example.com"), fill("password", goodPassword))
	expect(other.ctx, submit(t, other.ctx), http.StatusOK, "the user's page")
	browse(t, other.ctx, chromedp.SetValue(chromedp.ID("role"), "super_admin"))
	expect(other.ctx, other.click(t, "#grant"), http.StatusForbidden, "granting super_admin as an admin")
	mustContain(t, "the refusal", text(t, other.ctx), "There is a problem")
	other.noViolation(t, "the refusal")
	if u, err := d.in.App.Core.Store.GetUser(context.Background(), tom.ID); err != nil || !slices.Equal(u.Roles, []string{"user"}) {
		t.Fatalf("tom after the refused grant: %v %v", u.Roles, err)
	}

	// Tom signs in to an application (a first-party client, code flow) in
	// a third browser context, and through the password grant elsewhere.
	ln := listenIPv6(t)
	d.fx.Client(t, clients.Spec{ID: "notes", Name: "Notes", Public: true, FirstParty: true,
		Grants: []string{"authorization_code", "refresh_token"}, RedirectURIs: []string{"http://" + ln.Addr().String() + "/callback"}})
	notes := newRelyingParty(t, d.in.Config.Issuer, ln, "notes", "", oidc.ScopeOpenID)
	tomTab := newTab(t, browser)
	expect(tomTab.ctx, open(t, tomTab.ctx, notes.URL+"/"), http.StatusOK, "the application")
	expect(tomTab.ctx, tomTab.click(t, "#signin"), http.StatusOK, "the login page")
	browse(t, tomTab.ctx, fill("username", "tom@example.com"), fill("password", goodPassword))
	expect(tomTab.ctx, submit(t, tomTab.ctx), http.StatusOK, "back at the application")
	browserToken := notes.lastToken(t).AccessToken
	passwordToken := d.login(t, "tom@example.com", goodPassword).Token().AccessToken
	inactive := func(tok, what string) {
		t.Helper()
		intro := d.api.PostForm("/oauth2/introspect", url.Values{"token": {tok}}, st.Basic("web", d.webSecret)).ExpectStatus(http.StatusOK).Map()
		if intro["active"] != false {
			t.Fatalf("%s: %v", what, intro)
		}
	}

	// Ending his browser session on the sessions screen makes that
	// session's access token inactive at once; "End every session" then
	// ends the password grant's too.
	expect(ctx, open(t, ctx, d.in.URL+"/console/users/"+tom.ID), http.StatusOK, "tom's page")
	shoot("user")
	expect(ctx, open(t, ctx, d.in.URL+"/console/sessions?user="+url.QueryEscape("tom@example.com")), http.StatusOK, "sessions")
	mustContain(t, "the sessions screen", text(t, ctx), "notes")
	shoot("sessions")
	expect(ctx, tb.click(t, "button[data-sid]"), http.StatusOK, "end the session")
	mustContain(t, "the sessions screen", text(t, ctx), "Ended the session", "No live session")
	inactive(browserToken, "the access token of the session the console ended")
	expect(ctx, tb.click(t, "#end-all"), http.StatusOK, "end every session")
	mustContain(t, "the sessions screen", text(t, ctx), "Ended every session")
	inactive(passwordToken, "tom's password-grant token after the console ended every session")

	// A client: its secret shown once.
	expect(ctx, open(t, ctx, d.in.URL+"/console/clients"), http.StatusOK, "clients")
	browse(t, ctx, fill("client_id", "reports"), fill("name", "Reports"), chromedp.Click(chromedp.ID("grant-2")))
	expect(ctx, tb.click(t, "#create-client"), http.StatusCreated, "create a client")
	mustContain(t, "the clients screen", text(t, ctx), "Created the client reports", "shown this once")
	shoot("clients")

	expect(ctx, open(t, ctx, d.in.URL+"/console/roles"), http.StatusOK, "roles")
	mustContain(t, "the roles screen", text(t, ctx), "super_admin", "keys:rotate")
	shoot("roles")

	// Rotate the keys: the JWKS then serves the new next key.
	expect(ctx, open(t, ctx, d.in.URL+"/console/keys"), http.StatusOK, "keys")
	browse(t, ctx, chromedp.Click(chromedp.ID("force")))
	expect(ctx, tb.click(t, "#rotate"), http.StatusOK, "rotate")
	mustContain(t, "the keys screen", text(t, ctx), "Rotated:")
	list, err := d.in.App.Accounts.ListKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	jwks := d.api.Get("/.well-known/jwks.json").ExpectStatus(http.StatusOK).Map()
	for _, k := range list {
		if k.State == store.KeyNext && !strings.Contains(fmt.Sprint(jwks), k.KID) {
			t.Fatalf("the JWKS does not serve the new next key %s: %v", k.KID, jwks)
		}
	}
	shoot("keys")

	// The audit screen shows what was done, filtered by action.
	expect(ctx, open(t, ctx, d.in.URL+"/console/audit"), http.StatusOK, "audit")
	mustContain(t, "the audit screen", text(t, ctx), "invite.created", "invite.accepted", "key.rotated", "console")
	shoot("audit")
	for _, action := range []string{"invite.created", "invite.accepted", "key.rotated", "client.created"} {
		browse(t, ctx, chromedp.SetValue(chromedp.ID("action"), action))
		expect(ctx, tb.click(t, "#filter"), http.StatusOK, "filter "+action)
		rows := value(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('tr.event')].map((r) => r.textContent)`))
		if len(rows) == 0 {
			t.Fatalf("no %s event in the audit screen", action)
		}
		for _, r := range rows {
			if !strings.Contains(r, action) {
				t.Fatalf("filtered by %s, the audit screen shows %q", action, r)
			}
		}
	}

	// A form posted from another site (localhost is not 127.0.0.1's site)
	// is refused and changes nothing.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><title>Win</title><form method="post" action="%s/console/invites">
<input type="hidden" name="action" value="create"><input type="hidden" name="email" value="mallory@example.com">
<input type="hidden" name="role" value="admin"><input type="hidden" name="csrf_token" value="%s">
<button id="go" type="submit">Claim your prize</button></form>`, d.in.URL, strings.Repeat("A", 43))
	}))
	defer evil.Close()
	expect(ctx, open(t, ctx, strings.Replace(evil.URL, "127.0.0.1", "localhost", 1)), http.StatusOK, "the other site")
	expect(ctx, tb.click(t, "#go"), http.StatusForbidden, "a cross-site form post")
	if inv, err := d.in.App.Accounts.ListInvites(context.Background(), "", 100); err != nil || len(inv.Items) != 1 {
		t.Fatalf("invites after the cross-site post: %+v %v", inv.Items, err)
	}

	for _, n := range shots {
		if _, err := os.Stat(filepath.Join(screenshotDir, n)); err != nil {
			t.Errorf("docs/screenshots/%s is missing; run: go test ./server/pages -run TestConsoleBrowser -update-screenshots", n)
		}
	}
}

package pages_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// TestLogoutChromium: in headless Chromium, on PostgreSQL + Redis and on
// SQLite, a person signs in on two relying parties (the second by single
// sign-on) and signs out from the first with RP-initiated logout: no
// Portcullis page is shown (a trusted request), the browser is back on the
// first relying party with its state, the second's refresh token (no
// offline_access) is dead and signing in there again shows the login page.
// A request confirmed only by client_id shows the confirmation page, then
// goes back with state; one with no parameters shows it, then the
// signed-out page. A logout form posted from the relying party's page (no
// session cookie sent with it) ends the session too and goes back with
// state. No page reports a Content-Security-Policy violation.
func TestLogoutChromium(t *testing.T) {
	browser := newBrowser(t)
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			d := newDeploymentOn(t, b, nil)
			const email = "lou@example.com"
			d.fx.User(t, email, goodPassword, "user")
			code := []string{"authorization_code", "refresh_token"}
			ln1, ln2 := listenIPv6(t), listenIPv6(t)
			base1, base2 := "http://"+ln1.Addr().String(), "http://"+ln2.Addr().String()
			mailSecret := d.fx.Client(t, clients.Spec{ID: "mail", Name: "Mail", Grants: code, FirstParty: true,
				RedirectURIs: []string{base1 + "/callback"}, PostLogoutRedirectURIs: []string{base1 + "/logged-out"}})
			wikiSecret := d.fx.Client(t, clients.Spec{ID: "wiki", Name: "Wiki", Grants: code, FirstParty: true,
				RedirectURIs: []string{base2 + "/callback"}, PostLogoutRedirectURIs: []string{base2 + "/logged-out"}})
			issuer := d.in.Config.Issuer
			mail := newRelyingParty(t, issuer, ln1, "mail", mailSecret, oidc.ScopeOpenID)
			wiki := newRelyingParty(t, issuer, ln2, "wiki", wikiSecret, oidc.ScopeOpenID)
			tb := newTab(t, browser)

			signInAt := func(rp *relyingParty, wantLoginPage bool) {
				t.Helper()
				open(t, tb.ctx, rp.URL+"/")
				tb.click(t, "#signin")
				if wantLoginPage {
					mustContain(t, "the login page", text(t, tb.ctx), "Sign in", "Password")
					browse(t, tb.ctx, fill("username", email), fill("password", goodPassword))
					submit(t, tb.ctx)
				}
				if loc := location(t, tb.ctx); !strings.HasPrefix(loc, rp.URL+"/callback?") {
					t.Fatalf("signing in at %s ended at %q: %s", rp.URL, loc, text(t, tb.ctx))
				}
				rp.lastCallback(t)
			}
			signInAt(mail, true)
			signInAt(wiki, false) // single sign-on
			wikiTok := wiki.lastToken(t)
			if wikiTok.RefreshToken == "" {
				t.Fatal("wiki got no refresh token")
			}
			tb.noViolation(t, "signing in")

			// Sign out from mail: a trusted request, no page in between.
			tb.seen()
			if status := open(t, tb.ctx, mail.URL+"/logout"); status != http.StatusOK {
				t.Fatalf("logout: %d", status)
			}
			if loc := location(t, tb.ctx); !strings.HasPrefix(loc, mail.PostLogoutURI()+"?") {
				t.Fatalf("after logout the browser is at %q: %s", loc, text(t, tb.ctx))
			}
			if got := value(t, tb.ctx, chromedp.Text(chromedp.ID("state"))); got != "bye-1" {
				t.Fatalf("post-logout state %q", got)
			}
			for _, doc := range tb.seen() {
				if strings.Contains(doc, issuer) {
					t.Fatalf("a trusted logout showed a Portcullis page: %s", doc)
				}
			}
			tb.noViolation(t, "logout")
			for _, c := range tb.cookies(t, issuer) {
				if strings.Contains(c.Name, "portcullis-session") {
					t.Fatalf("the session cookie survived the logout: %+v", c)
				}
			}
			// wiki's grant ended with the browser session.
			if _, err := wiki.conf.TokenSource(context.Background(), &oauth2.Token{RefreshToken: wikiTok.RefreshToken}).Token(); err == nil ||
				!strings.Contains(err.Error(), "invalid_grant") {
				t.Fatalf("wiki's refresh token after the logout: %v, want invalid_grant", err)
			}
			// No single sign-on any more: the login page again.
			signInAt(wiki, true)

			// client_id confirms the URI but proves nothing about the
			// person: the confirmation page, then back with state.
			confirm := issuer + "/oauth2/logout?" + url.Values{"client_id": {"wiki"},
				"post_logout_redirect_uri": {wiki.PostLogoutURI()}, "state": {"confirm-me"}}.Encode()
			if status := open(t, tb.ctx, confirm); status != http.StatusOK {
				t.Fatalf("confirmation page: %d", status)
			}
			mustContain(t, "the confirmation page", text(t, tb.ctx), "Sign out?", "Sign out", "Stay signed in")
			tb.noViolation(t, "confirmation page")
			accessible(t, tb.ctx, "logout", "stay")
			tb.click(t, "#logout")
			if loc := location(t, tb.ctx); !strings.HasPrefix(loc, wiki.PostLogoutURI()+"?") {
				t.Fatalf("after confirming the browser is at %q: %s", loc, text(t, tb.ctx))
			}
			if got := value(t, tb.ctx, chromedp.Text(chromedp.ID("state"))); got != "confirm-me" {
				t.Fatalf("post-logout state %q", got)
			}
			tb.noViolation(t, "back after confirming")

			// No parameters: the confirmation page, then the signed-out page.
			signInAt(mail, true)
			open(t, tb.ctx, issuer+"/oauth2/logout")
			mustContain(t, "the confirmation page", text(t, tb.ctx), "Sign out?")
			if status := tb.click(t, "#logout"); status != http.StatusOK {
				t.Fatalf("signed-out page: %d", status)
			}
			mustContain(t, "the signed-out page", text(t, tb.ctx), "You are signed out")
			if loc := location(t, tb.ctx); !strings.HasPrefix(loc, issuer+"/") {
				t.Fatalf("the signed-out page is at %q", loc)
			}
			tb.noViolation(t, "signed-out page")

			// A logout form posted from mail's own page: another site, so
			// the browser sends no SameSite=Lax session cookie with the
			// POST. Portcullis continues it at its own GET /logout, which
			// carries the cookie: the session ends (wiki's grant with it)
			// and the browser is back on mail with its state.
			signInAt(mail, true)
			signInAt(wiki, false)
			wikiTok = wiki.lastToken(t)
			open(t, tb.ctx, mail.URL+"/logout-form")
			tb.click(t, "#post-logout")
			if loc := location(t, tb.ctx); !strings.HasPrefix(loc, mail.PostLogoutURI()+"?") {
				t.Fatalf("after the posted logout the browser is at %q: %s", loc, text(t, tb.ctx))
			}
			if got := value(t, tb.ctx, chromedp.Text(chromedp.ID("state"))); got != "bye-2" {
				t.Fatalf("posted logout's state %q", got)
			}
			if _, err := wiki.conf.TokenSource(context.Background(), &oauth2.Token{RefreshToken: wikiTok.RefreshToken}).Token(); err == nil ||
				!strings.Contains(err.Error(), "invalid_grant") {
				t.Fatalf("wiki's refresh token after the posted logout: %v, want invalid_grant", err)
			}
			tb.noViolation(t, "posted logout")
			signInAt(wiki, true)
		})
	}
}

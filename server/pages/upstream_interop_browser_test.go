package pages_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// TestBrowserUpstreamInterop signs in through the login page in headless
// Chromium, in one tab, at two OpenID providers Portcullis's upstream
// package did not write, typing into each provider's own login form: a
// second Portcullis instance (its login page and authorization code flow)
// and the example provider of github.com/zitadel/oidc/v3 run in the test
// process. ann, who has an account here too (same verified email, another
// password), signs in at the second Portcullis, then links on the
// confirm-link page with her password here (amr fed+pwd); signed out here,
// she signs in again through the provider's single sign-on with no page
// shown at all, by her linked sub (amr fed); test-user2 of the example
// provider is created just in time (amr fed). Each sign-in ends at the
// client with a code redeemed with golang.org/x/oauth2; the pages shown on
// the way are exactly the expected ones, and none reports a
// Content-Security-Policy violation.
func TestBrowserUpstreamInterop(t *testing.T) {
	t.Parallel()
	const (
		annEmail      = "ann@example.com"
		annUpPassword = "ann's passphrase upstream"
		zitadelEmail  = "test-user2@zitadel.ch"
	)

	// The example provider reads its clients from this map; its client is
	// added once the callback here is known.
	zsrv := httptest.NewUnstartedServer(nil)
	zIssuer := "http://" + zsrv.Listener.Addr().String() + "/"
	zClients := map[string]*storage.Client{}
	zsrv.Config.Handler = exampleop.SetupServer(zIssuer, storage.NewStorageWithClients(storage.NewUserStore(zIssuer), zClients),
		nil, false, op.WithAllowInsecure())
	zsrv.Start()
	t.Cleanup(zsrv.Close)

	// The second Portcullis listens on [::1]: a browser keeps cookies by
	// host, not port (RFC 6265 §8.5), so beside this one on 127.0.0.1 the
	// two would share the portcullis-session and portcullis-csrf cookies.
	// Its confidential client "down" may redirect to the callback here (a
	// loopback IP literal: any port, RFC 8252 §7.3).
	up := st.StartOn(t, st.NewEnv(t, st.SQLite), listenIPv6(t))
	upFx := st.NewFixtures(t, up.App.Core)
	upFx.User(t, annEmail, annUpPassword, "user")
	upSecret := upFx.Client(t, clients.Spec{ID: "down", Name: "Downstream", Grants: []string{"authorization_code"},
		RedirectURIs: []string{"http://127.0.0.1/login/up/callback"}, FirstParty: true})

	d := newProvidersDeployment(t, "  - id: up\n    name: Upstream Portcullis\n    issuer: "+up.Config.Issuer+
		"\n    client_id: down\n    client_secret_env: UP_SECRET\n    jit: {enabled: true, default_role: user}\n"+
		"  - id: zitadel\n    name: Zitadel example\n    issuer: "+zIssuer+
		"\n    client_id: portcullis-pages\n    client_secret: zitadel-client-secret\n    jit: {enabled: true, default_role: user}\n",
		map[string]string{"UP_SECRET": upSecret})
	zClients["portcullis-pages"] = storage.WebClient("portcullis-pages", "zitadel-client-secret", d.in.URL+"/login/zitadel/callback")
	ann := d.fx.User(t, annEmail, goodPassword, "user")
	users := d.in.App.Core.Store
	if _, err := users.GetUserByEmail(context.Background(), zitadelEmail); err == nil {
		t.Fatalf("%s exists before signing in", zitadelEmail)
	}

	tb := newTab(t, newBrowser(t))
	ctx := tb.ctx
	// signInAt types into a provider's login form at the address at, which
	// says says (both providers name their fields username and password),
	// and sends it.
	signInAt := func(what, at, says, username, password string) func() {
		return func() {
			t.Helper()
			if loc := location(t, ctx); !strings.HasPrefix(loc, at) {
				t.Fatalf("%s: the browser is at %q, not the provider's login page", what, loc)
			}
			mustContain(t, what+"'s login page", value(t, ctx, chromedp.Text(chromedp.CSS("body"))), says)
			browse(t, ctx, fill("username", username), fill("password", password))
			submit(t, ctx)
		}
	}
	client := d.in.URL + "/healthz?"
	for i, s := range []struct {
		what, provider string
		// login is what the person does at the provider (nil: nothing).
		login func()
		// confirm: the confirm-link page is shown and answered with ann's
		// password here.
		confirm bool
		// pages are the documents the browser shows after the provider
		// button, by address prefix.
		pages []string
		email string // of the account signed in here
		amr   []string
	}{
		{what: "second Portcullis, confirm-link", provider: "up",
			login:   signInAt("the second Portcullis", up.URL+"/oauth2/authorize?", "Sign in to continue to Downstream", annEmail, annUpPassword),
			confirm: true, pages: []string{up.URL + "/oauth2/authorize?", d.in.URL + "/login/up/callback?", client},
			email: annEmail, amr: []string{"fed", "pwd"}},
		{what: "second Portcullis, single sign-on there, linked here", provider: "up",
			pages: []string{client}, email: annEmail, amr: []string{"fed"}},
		{what: "zitadel example, just in time", provider: "zitadel",
			login: signInAt("the example provider", zIssuer+"login/username?", "Username:", "test-user2", "verysecure"),
			pages: []string{zIssuer + "login/username?", client}, email: zitadelEmail, amr: []string{"fed"}},
	} {
		if i > 0 {
			// Signed out here (the confirmation page of RP-initiated
			// logout), not at the providers.
			open(t, ctx, d.in.URL+"/oauth2/logout")
			if status := tb.click(t, "#logout"); status != http.StatusOK || hasSession(t, tb, d.in.URL) {
				t.Fatalf("%s: signing out here: %d, session cookie %v", s.what, status, hasSession(t, tb, d.in.URL))
			}
			mustContain(t, s.what+": the signed-out page", text(t, ctx), "You are signed out")
		}
		verifier := oauth2.GenerateVerifier()
		if status := open(t, ctx, d.oauth().AuthCodeURL("s", oauth2.S256ChallengeOption(verifier))); status != http.StatusOK {
			t.Fatalf("%s: login page: %d", s.what, status)
		}
		mustContain(t, s.what+": the login page", text(t, ctx), "Sign in to continue to Notes", "Or sign in with",
			"Upstream Portcullis", "Zitadel example")
		tb.seen()
		tb.click(t, `a[href*="/login/`+s.provider+`?"]`)
		if s.login != nil {
			s.login()
		}
		if s.confirm {
			if loc := location(t, ctx); !strings.HasPrefix(loc, d.in.URL+"/login/"+s.provider+"/callback?") {
				t.Fatalf("%s: the browser is at %q, not the confirm-link page", s.what, loc)
			}
			mustContain(t, s.what+": the confirm-link page", text(t, ctx), "Link your Upstream Portcullis account", "Password of your account")
			browse(t, ctx, fill("password", goodPassword))
			submit(t, ctx)
		}
		shown := tb.seen()
		if len(shown) != len(s.pages) {
			t.Fatalf("%s: pages shown %v, want %v", s.what, shown, s.pages)
		}
		for j, p := range s.pages {
			if !strings.HasPrefix(shown[j], "200 "+p) {
				t.Fatalf("%s: pages shown %v, want %v", s.what, shown, s.pages)
			}
		}
		got := d.idOfCode(t, ctx, verifier)
		u, err := users.GetUserByEmail(context.Background(), s.email)
		if err != nil || got.Sub != u.ID || !slices.Equal(got.AMR, s.amr) {
			t.Fatalf("%s: id token sub %q amr %v, want %s's (%v) with amr %v", s.what, got.Sub, got.AMR, s.email, err, s.amr)
		}
		tb.noViolation(t, s.what)
	}
	// ann's identity at the second Portcullis is linked to her account here.
	if ids, err := users.ListFederatedIdentities(context.Background(), ann.ID); err != nil || len(ids) != 1 || ids[0].Provider != "up" {
		t.Fatalf("ann's linked identities: %+v, %v", ids, err)
	}
}

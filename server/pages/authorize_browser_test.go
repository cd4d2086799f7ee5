package pages_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// Browser sign-in in headless Chromium: a relying party on its own origin
// (an httptest server on [::1], another site than Portcullis on 127.0.0.1)
// signs a person in with the authorization code flow and PKCE, built from
// golang.org/x/oauth2 and coreos/go-oidc as a Go web app would be.

// rpPending is what the relying party keeps between its redirect to
// Portcullis and its callback.
type rpPending struct{ verifier, nonce string }

// relyingParty is a small web app: "/" has a "Sign in" link, "/signin"
// redirects to Portcullis with state, nonce and an S256 challenge (and the
// response_mode of its query, if any), and
// "/callback" checks iss and state, exchanges the code with the verifier,
// verifies the id token and its nonce, and shows the subject.
type relyingParty struct {
	t      *testing.T
	URL    string
	issuer string
	conf   *oauth2.Config
	verify *oidc.IDTokenVerifier

	mu        sync.Mutex
	pending   map[string]rpPending
	callbacks []url.Values // every authorization response received
	errs      []string
	tokens    []*oauth2.Token // every token response, with its id token
	idTokens  []string
	logouts   int
}

// newRelyingParty serves a relying party for client id (secret "" for a
// public client) on [::1]; register its RedirectURI() before signing in.
func newRelyingParty(t *testing.T, issuer string, ln net.Listener, id, secret string, scopes ...string) *relyingParty {
	t.Helper()
	provider, err := oidc.NewProvider(context.Background(), issuer)
	if err != nil {
		t.Fatalf("go-oidc discovery: %v", err)
	}
	rp := &relyingParty{t: t, URL: "http://" + ln.Addr().String(), issuer: issuer, pending: map[string]rpPending{}}
	rp.conf = &oauth2.Config{ClientID: id, ClientSecret: secret, Endpoint: provider.Endpoint(),
		RedirectURL: rp.URL + "/callback", Scopes: scopes}
	rp.verify = provider.Verifier(&oidc.Config{ClientID: id})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		rp.page(w, http.StatusOK, `<h1>Example app</h1><p><a id="signin" href="/signin">Sign in</a></p>`)
	})
	mux.HandleFunc("GET /signin", rp.signIn)
	mux.HandleFunc("GET /callback", rp.callback)
	mux.HandleFunc("POST /callback", rp.callback) // response_mode=form_post
	mux.HandleFunc("GET /logout", rp.logout)
	mux.HandleFunc("GET /logout-form", rp.logoutForm)
	mux.HandleFunc("GET /logged-out", func(w http.ResponseWriter, r *http.Request) {
		rp.page(w, http.StatusOK, `<p>Signed out; state <span id="state">`+html.EscapeString(r.URL.Query().Get("state"))+`</span></p>`)
	})
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	srv.Start()
	t.Cleanup(srv.Close)
	return rp
}

// listenIPv6 listens on the IPv6 loopback: an origin that is another site
// than Portcullis on 127.0.0.1, and a redirect URI that registration allows
// over plain http (RFC 8252 §8.3).
func listenIPv6(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Fatalf("listen on [::1] for the relying party: %v", err)
	}
	return ln
}

func (rp *relyingParty) page(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, "<!doctype html><html lang=en><title>Example app</title><main>%s</main></html>", body)
}

func (rp *relyingParty) signIn(w http.ResponseWriter, r *http.Request) {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	// A state with characters that must survive the round trip byte for byte.
	state := "st/a+t e~" + hex.EncodeToString(b)
	p := rpPending{verifier: oauth2.GenerateVerifier(), nonce: "n-" + hex.EncodeToString(b[:8])}
	rp.mu.Lock()
	rp.pending[state] = p
	rp.mu.Unlock()
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(p.verifier), oidc.Nonce(p.nonce)}
	if mode := r.URL.Query().Get("response_mode"); mode != "" {
		opts = append(opts, oauth2.SetAuthURLParam("response_mode", mode))
	}
	http.Redirect(w, r, rp.conf.AuthCodeURL(state, opts...), http.StatusFound)
}

func (rp *relyingParty) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if r.Method == http.MethodPost {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		q = r.PostForm
	}
	rp.mu.Lock()
	rp.callbacks = append(rp.callbacks, q)
	p, ok := rp.pending[q.Get("state")]
	delete(rp.pending, q.Get("state"))
	rp.mu.Unlock()
	fail := func(msg string, args ...any) {
		m := fmt.Sprintf(msg, args...)
		rp.mu.Lock()
		rp.errs = append(rp.errs, m)
		rp.mu.Unlock()
		rp.page(w, http.StatusBadRequest, `<p id="error">`+html.EscapeString(m)+`</p>`)
	}
	switch {
	case q.Get("iss") != rp.issuer:
		fail("iss %q, want %q (RFC 9207)", q.Get("iss"), rp.issuer)
		return
	case !ok:
		fail("unknown state %q", q.Get("state"))
		return
	case q.Get("error") != "":
		fail("error %s: %s", q.Get("error"), q.Get("error_description"))
		return
	}
	tok, err := rp.conf.Exchange(r.Context(), q.Get("code"), oauth2.VerifierOption(p.verifier))
	if err != nil {
		fail("exchange: %v", err)
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := rp.verify.Verify(r.Context(), raw)
	if err != nil {
		fail("id token: %v", err)
		return
	}
	if idt.Nonce != p.nonce {
		fail("nonce %q, want %q", idt.Nonce, p.nonce)
		return
	}
	if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
		fail("at_hash: %v", err)
		return
	}
	rp.mu.Lock()
	rp.tokens, rp.idTokens = append(rp.tokens, tok), append(rp.idTokens, raw)
	rp.mu.Unlock()
	rp.page(w, http.StatusOK, `<p>Signed in as <span id="sub">`+html.EscapeString(idt.Subject)+`</span></p>`)
}

// PostLogoutURI is where the relying party asks to come back after signing out.
func (rp *relyingParty) PostLogoutURI() string { return rp.URL + "/logged-out" }

// logout is RP-initiated logout: the last id token as id_token_hint, the
// registered post-logout URI and a fresh state.
func (rp *relyingParty) logout(w http.ResponseWriter, r *http.Request) {
	rp.mu.Lock()
	rp.logouts++
	q := url.Values{"post_logout_redirect_uri": {rp.PostLogoutURI()}, "state": {fmt.Sprintf("bye-%d", rp.logouts)}}
	if n := len(rp.idTokens); n > 0 {
		q.Set("id_token_hint", rp.idTokens[n-1])
	}
	rp.mu.Unlock()
	http.Redirect(w, r, rp.issuer+"/oauth2/logout?"+q.Encode(), http.StatusFound)
}

// logoutForm is RP-initiated logout as a form the relying party's own page
// posts to the end_session_endpoint (RP-Initiated Logout §2): the same
// parameters as logout, in hidden fields, sent by the button "#post-logout".
func (rp *relyingParty) logoutForm(w http.ResponseWriter, r *http.Request) {
	rp.mu.Lock()
	rp.logouts++
	fields := [][2]string{{"post_logout_redirect_uri", rp.PostLogoutURI()}, {"state", fmt.Sprintf("bye-%d", rp.logouts)}}
	if n := len(rp.idTokens); n > 0 {
		fields = append(fields, [2]string{"id_token_hint", rp.idTokens[n-1]})
	}
	rp.mu.Unlock()
	var b strings.Builder
	b.WriteString(`<form method="post" action="` + html.EscapeString(rp.issuer+"/oauth2/logout") + `">`)
	for _, f := range fields {
		b.WriteString(`<input type="hidden" name="` + f[0] + `" value="` + html.EscapeString(f[1]) + `">`)
	}
	b.WriteString(`<button id="post-logout" type="submit">Sign out</button></form>`)
	rp.page(w, http.StatusOK, b.String())
}

// lastToken is the last token response the relying party got.
func (rp *relyingParty) lastToken(t *testing.T) *oauth2.Token {
	t.Helper()
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if len(rp.tokens) == 0 {
		t.Fatal("the relying party got no tokens")
	}
	return rp.tokens[len(rp.tokens)-1]
}

// lastCallback is the last authorization response the relying party got.
func (rp *relyingParty) lastCallback(t *testing.T) url.Values {
	t.Helper()
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if len(rp.errs) > 0 {
		t.Fatalf("the relying party refused the answer: %v", rp.errs)
	}
	if len(rp.callbacks) == 0 {
		t.Fatal("the relying party got no callback")
	}
	return rp.callbacks[len(rp.callbacks)-1]
}

// tab is a browser tab in its own browser context (its own cookies) that
// records every document it loads and every Content-Security-Policy
// violation any of them reports.
type tab struct {
	ctx context.Context

	mu         sync.Mutex
	documents  []string // "STATUS URL" of each document loaded
	violations []string
}

// cspListener is evaluated in every new document: it reports each
// securitypolicyviolation event through the portcullisCSP binding (a
// script the browser injects is not subject to the page's policy).
const cspListener = `document.addEventListener('securitypolicyviolation', (e) => {
  window.portcullisCSP(JSON.stringify({page: location.href, directive: e.violatedDirective, blocked: e.blockedURI}));
}, true);`

// newTab opens a tab in a new browser context of the browser.
func newTab(t *testing.T, browser context.Context) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	tb := &tab{ctx: ctx}
	// The first call on the context opens the tab and binds it to ctx (not
	// to a timeout): the listener first, then the binding and the script.
	if err := chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventBindingCalled:
			if ev.Name == "portcullisCSP" {
				tb.mu.Lock()
				tb.violations = append(tb.violations, ev.Payload)
				tb.mu.Unlock()
			}
		case *cdplog.EventEntryAdded:
			// Chromium also logs each violation to the console, even when
			// the document that would get the event is navigating away.
			if ev.Entry != nil && strings.Contains(ev.Entry.Text, "Content Security Policy") {
				tb.mu.Lock()
				tb.violations = append(tb.violations, "console: "+ev.Entry.Text)
				tb.mu.Unlock()
			}
		case *network.EventResponseReceived:
			if ev.Type == network.ResourceTypeDocument && ev.Response != nil {
				tb.mu.Lock()
				tb.documents = append(tb.documents, fmt.Sprintf("%d %s", ev.Response.Status, ev.Response.URL))
				tb.mu.Unlock()
			}
		}
	}); err != nil {
		t.Fatalf("open a tab: %v", err)
	}
	browse(t, ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, cdplog.Enable, cdp.Empty{}); err != nil {
			return err
		}
		if _, err := cdp.Call(ctx, tg, runtime.AddBinding, runtime.AddBindingParams{Name: "portcullisCSP"}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, tg, cdppage.AddScriptToEvaluateOnNewDocument, cdppage.AddScriptToEvaluateOnNewDocumentParams{Source: cspListener})
		return err
	}))
	return tb
}

// seen returns the documents loaded since the last call.
func (tb *tab) seen() []string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	d := tb.documents
	tb.documents = nil
	return d
}

// noViolation fails when any page reported a CSP violation.
func (tb *tab) noViolation(t *testing.T, where string) {
	t.Helper()
	// A round trip through the page lets a queued violation event be
	// reported first.
	value(t, tb.ctx, chromedp.Evaluate[bool](`new Promise((ok) => setTimeout(() => ok(true), 50))`, chromedp.EvalAwaitPromise))
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if len(tb.violations) > 0 {
		t.Fatalf("%s: Content-Security-Policy violations: %v", where, tb.violations)
	}
}

// click clicks sel and waits for the document the click leads to,
// returning its status.
func (tb *tab) click(t *testing.T, sel string) int64 {
	t.Helper()
	tctx, cancel := context.WithTimeout(tb.ctx, time.Minute)
	defer cancel()
	resp, err := chromedp.RunResponse(tctx, chromedp.Click(chromedp.CSS(sel)))
	if err != nil {
		tb.mu.Lock()
		defer tb.mu.Unlock()
		t.Fatalf("click %s: %v (CSP violations: %v)", sel, err, tb.violations)
	}
	return resp.Status
}

// cookies are the browser's cookies for u, read through the DevTools
// protocol (HttpOnly ones included).
func (tb *tab) cookies(t *testing.T, u string) []*network.Cookie {
	t.Helper()
	return value(t, tb.ctx, func(ctx context.Context, tg *chromedp.Target) ([]*network.Cookie, error) {
		res, err := cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{URLs: []string{u}})
		return res.Cookies, err
	})
}

// sessionCookie is the browser's portcullis-session cookie for u.
func (tb *tab) sessionCookie(t *testing.T, u string) *network.Cookie {
	t.Helper()
	var found *network.Cookie
	for _, c := range tb.cookies(t, u) {
		if strings.Contains(c.Name, "portcullis-session") {
			if found != nil {
				t.Fatalf("two session cookies: %+v and %+v", found, c)
			}
			found = c
		}
	}
	if found == nil {
		t.Fatalf("no portcullis-session cookie for %s", u)
	}
	return found
}

// TestBrowserSignInChromium: in headless Chromium, on PostgreSQL + Redis and
// on SQLite, a person clicks "Sign in" on a relying party (a third-party
// confidential client, PKCE), lands on the Portcullis login page, types the
// email and password, allows on the consent page and is back on the
// relying party's callback with code, state and iss, where the relying party
// exchanges the code and shows the id token's subject. The session cookie
// is portcullis-session over http: HttpOnly, SameSite=Lax, Path=/, host-only,
// a browser-session cookie; scripts cannot read it. A second (first-party,
// public) client on yet another origin then gets to its callback with no
// page shown (single sign-on), and with response_mode=form_post through
// Portcullis's self-submitting document; a third-party client after SSO
// shows only consent, and Deny brings access_denied with state and iss. "Keep me signed in" gives the cookie an
// expiry of the session's maximum age. No page of the flow reports a
// Content-Security-Policy violation, and the listener is shown to catch one.
func TestBrowserSignInChromium(t *testing.T) {
	browser := newBrowser(t)
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			d := newDeploymentOn(t, b, nil)
			const email = "sam@example.com"
			user := d.fx.User(t, email, goodPassword, "user")
			code := []string{"authorization_code", "refresh_token"}
			ln1, ln2, ln3 := listenIPv6(t), listenIPv6(t), listenIPv6(t)
			secret := d.fx.Client(t, clients.Spec{ID: "photos", Name: "Photo Album", Grants: code,
				RedirectURIs: []string{"http://" + ln1.Addr().String() + "/callback"}})
			d.fx.Client(t, clients.Spec{ID: "notes", Name: "Notes", Public: true, FirstParty: true, Grants: code,
				RedirectURIs: []string{"http://" + ln2.Addr().String() + "/callback"}})
			d.fx.Client(t, clients.Spec{ID: "calendar", Name: "Calendar", Public: true, Grants: code,
				RedirectURIs: []string{"http://" + ln3.Addr().String() + "/callback"}})
			issuer := d.in.Config.Issuer
			photos := newRelyingParty(t, issuer, ln1, "photos", secret, oidc.ScopeOpenID, "email")
			notes := newRelyingParty(t, issuer, ln2, "notes", "", oidc.ScopeOpenID)
			calendar := newRelyingParty(t, issuer, ln3, "calendar", "", oidc.ScopeOpenID, "profile")

			tb := newTab(t, browser)
			if status := open(t, tb.ctx, photos.URL+"/"); status != http.StatusOK {
				t.Fatalf("relying party home: %d", status)
			}
			// Sign in → the login page of Portcullis (the RP's 302 and the
			// request are followed by the browser).
			if status := tb.click(t, "#signin"); status != http.StatusOK {
				t.Fatalf("login page: %d: %s", status, text(t, tb.ctx))
			}
			if loc := location(t, tb.ctx); !strings.HasPrefix(loc, issuer+"/oauth2/authorize?") {
				t.Fatalf("after Sign in the browser is at %q, want the authorization endpoint", loc)
			}
			mustContain(t, "the login page", text(t, tb.ctx), "Sign in to continue to Photo Album", "Email address", "Password")
			tb.noViolation(t, "login page")
			accessible(t, tb.ctx, "username", "password", "remember", "Sign in")
			// Before signing in there is no session cookie.
			for _, c := range tb.cookies(t, issuer) {
				if strings.Contains(c.Name, "portcullis-session") {
					t.Fatalf("a session cookie before signing in: %+v", c)
				}
			}

			// A wrong password is refused on the page.
			browse(t, tb.ctx, fill("username", email), fill("password", "not the password"))
			if status := submit(t, tb.ctx); status != http.StatusBadRequest {
				t.Fatalf("wrong password: %d", status)
			}
			mustContain(t, "the refusal", text(t, tb.ctx), "The email address or password is incorrect")
			tb.noViolation(t, "login page with an error")

			// The right one leads to consent.
			if v := value(t, tb.ctx, chromedp.Value(chromedp.ID("username"))); v != email {
				t.Fatalf("the email address was not kept: %q", v)
			}
			browse(t, tb.ctx, fill("password", goodPassword))
			if status := submit(t, tb.ctx); status != http.StatusOK {
				t.Fatalf("login: %d: %s", status, text(t, tb.ctx))
			}
			mustContain(t, "the consent page", text(t, tb.ctx), "Photo Album wants to access your account", "Allow", "Deny")
			if loc := location(t, tb.ctx); !strings.HasPrefix(loc, issuer+"/") {
				t.Fatalf("consent page at %q", loc)
			}
			tb.noViolation(t, "consent page")
			accessible(t, tb.ctx, "Allow", "Deny")

			// The session cookie, as the browser keeps it.
			ck := tb.sessionCookie(t, issuer)
			host := strings.TrimPrefix(issuer, "http://")
			host = host[:strings.LastIndex(host, ":")]
			if ck.Name != "portcullis-session" || !ck.HTTPOnly || ck.SameSite != network.CookieSameSiteLax || ck.Path != "/" ||
				ck.Secure || !ck.Session || ck.Expires != -1 || ck.Domain != host {
				t.Fatalf("session cookie %+v: want portcullis-session, HttpOnly, SameSite=Lax, Path=/, host-only %s, no Expires", *ck, host)
			}
			if jsCookies := value(t, tb.ctx, chromedp.Evaluate[string](`document.cookie`)); strings.Contains(jsCookies, "portcullis-session") {
				t.Fatalf("a script can read the session cookie: %q", jsCookies)
			}

			// Allow → the relying party's callback, which exchanged the code.
			tb.seen()
			if status := tb.click(t, "#allow"); status != http.StatusOK {
				t.Fatalf("callback: %d: %s", status, text(t, tb.ctx))
			}
			if loc := location(t, tb.ctx); !strings.HasPrefix(loc, photos.URL+"/callback?") {
				t.Fatalf("after Allow the browser is at %q, want the relying party's callback", loc)
			}
			if sub := value(t, tb.ctx, chromedp.Text(chromedp.ID("sub"))); sub != user.ID {
				t.Fatalf("the relying party shows subject %q, want %q", sub, user.ID)
			}
			q := photos.lastCallback(t)
			if q.Get("code") == "" || q.Get("iss") != issuer || !strings.HasPrefix(q.Get("state"), "st/a+t e~") {
				t.Fatalf("authorization response %v", q)
			}
			tb.noViolation(t, "callback")

			// Single sign-on: the second client's callback, no page between.
			tb.seen()
			if status := open(t, tb.ctx, notes.URL+"/"); status != http.StatusOK {
				t.Fatalf("second relying party: %d", status)
			}
			if status := tb.click(t, "#signin"); status != http.StatusOK {
				t.Fatalf("SSO: %d: %s", status, text(t, tb.ctx))
			}
			if loc := location(t, tb.ctx); !strings.HasPrefix(loc, notes.URL+"/callback?") {
				t.Fatalf("SSO: the browser is at %q, want the second client's callback: %s", loc, text(t, tb.ctx))
			}
			if sub := value(t, tb.ctx, chromedp.Text(chromedp.ID("sub"))); sub != user.ID {
				t.Fatalf("SSO: subject %q, want %q", sub, user.ID)
			}
			for _, doc := range tb.seen() {
				if strings.Contains(doc, issuer) {
					t.Fatalf("SSO showed a Portcullis page: %s", doc)
				}
			}
			if q := notes.lastCallback(t); q.Get("iss") != issuer || q.Get("code") == "" {
				t.Fatalf("SSO authorization response %v", q)
			}
			tb.noViolation(t, "single sign-on")

			// response_mode=form_post in a real browser: Portcullis answers
			// its self-submitting document (its one script allowed by hash,
			// its form-action the client's origin), which posts code, state
			// and iss to the relying party.
			if status := open(t, tb.ctx, notes.URL+"/signin?response_mode=form_post"); status != http.StatusOK {
				t.Fatalf("form_post: %d", status)
			}
			browse(t, tb.ctx, chromedp.WaitVisible(chromedp.ID("sub")))
			if loc := location(t, tb.ctx); loc != notes.URL+"/callback" {
				t.Fatalf("form_post: the browser is at %q, want the callback it posted to", loc)
			}
			if sub := value(t, tb.ctx, chromedp.Text(chromedp.ID("sub"))); sub != user.ID {
				t.Fatalf("form_post: subject %q", sub)
			}
			if q := notes.lastCallback(t); q.Get("iss") != issuer || q.Get("code") == "" || !strings.HasPrefix(q.Get("state"), "st/a+t e~") {
				t.Fatalf("form_post authorization response %v", q)
			}
			var fromPortcullis []string
			for _, doc := range tb.seen() {
				if strings.Contains(doc, issuer) {
					fromPortcullis = append(fromPortcullis, doc)
				}
			}
			if len(fromPortcullis) != 1 || !strings.HasPrefix(fromPortcullis[0], "200 "+issuer+"/oauth2/authorize?") {
				t.Fatalf("form_post: Portcullis documents %v, want only the self-submitting one", fromPortcullis)
			}
			tb.noViolation(t, "form_post")

			// A third-party public client: SSO skips the login, consent is
			// asked; Deny sends access_denied with state and iss back.
			open(t, tb.ctx, calendar.URL+"/")
			if status := tb.click(t, "#signin"); status != http.StatusOK {
				t.Fatalf("consent for calendar: %d", status)
			}
			mustContain(t, "the consent page", text(t, tb.ctx), "Calendar wants to access your account")
			tb.noViolation(t, "consent page (SSO)")
			if status := tb.click(t, "#deny"); status != http.StatusBadRequest {
				t.Fatalf("deny: the relying party answered %d, want its refusal page", status)
			}
			calendar.mu.Lock()
			denied := calendar.callbacks[len(calendar.callbacks)-1]
			calendar.errs = nil
			calendar.mu.Unlock()
			if denied.Get("error") != "access_denied" || denied.Get("iss") != issuer || denied.Get("code") != "" ||
				!strings.HasPrefix(denied.Get("state"), "st/a+t e~") {
				t.Fatalf("deny: authorization response %v", denied)
			}
			tb.noViolation(t, "deny")

			// The error page of a request that cannot be answered (an
			// unregistered redirect URI): 400, no redirect, no violation.
			bad := issuer + "/oauth2/authorize?" + url.Values{"response_type": {"code"}, "client_id": {"photos"},
				"redirect_uri": {"https://evil.example/cb"}, "state": {"x"}, "code_challenge_method": {"S256"},
				"code_challenge": {oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())}, "scope": {"openid"}}.Encode()
			if status := open(t, tb.ctx, bad); status != http.StatusBadRequest {
				t.Fatalf("unregistered redirect URI: %d", status)
			}
			if loc := location(t, tb.ctx); !strings.HasPrefix(loc, issuer+"/") {
				t.Fatalf("the error page redirected to %q", loc)
			}
			mustContain(t, "the error page", text(t, tb.ctx), "you have not been sent back")
			tb.noViolation(t, "error page")

			// The listener does catch a violation: an image from another
			// origin is refused by img-src on this page.
			browse(t, tb.ctx, chromedp.Evaluate[chromedp.Void](`document.body.appendChild(Object.assign(document.createElement('img'), {src: 'https://blocked.example/x.png'})); null`))
			deadline := time.Now().Add(10 * time.Second)
			for {
				tb.mu.Lock()
				v := append([]string(nil), tb.violations...)
				tb.mu.Unlock()
				// Both listeners report it: the event and the console.
				if len(v) == 2 && strings.Contains(strings.Join(v, "\n"), `"directive":"img-src","blocked":"https://blocked.example/x.png"`) &&
					strings.Contains(strings.Join(v, "\n"), "console: Loading the image 'https://blocked.example/x.png' violates") {
					break
				}
				if len(v) > 2 || time.Now().After(deadline) {
					t.Fatalf("the CSP listeners reported %v for a blocked image, want the img-src event and its console message", v)
				}
				value(t, tb.ctx, chromedp.Evaluate[bool](`new Promise((ok) => setTimeout(() => ok(true), 50))`, chromedp.EvalAwaitPromise))
			}

			// "Keep me signed in": in a fresh browser context, the cookie
			// lasts the session's maximum age (168h by default). Consent was
			// remembered, so the login leads straight to the callback.
			kept := newTab(t, browser)
			open(t, kept.ctx, photos.URL+"/")
			if status := kept.click(t, "#signin"); status != http.StatusOK {
				t.Fatalf("login page: %d", status)
			}
			browse(t, kept.ctx, fill("username", email), fill("password", goodPassword), chromedp.Click(chromedp.ID("remember")))
			if status := submit(t, kept.ctx); status != http.StatusOK {
				t.Fatalf("login with remember: %d: %s", status, text(t, kept.ctx))
			}
			if loc := location(t, kept.ctx); !strings.HasPrefix(loc, photos.URL+"/callback?") {
				t.Fatalf("remembered consent: at %q: %s", loc, text(t, kept.ctx))
			}
			ck = kept.sessionCookie(t, issuer)
			exp := time.Unix(int64(ck.Expires), 0)
			if ck.Session || !ck.HTTPOnly || ck.SameSite != network.CookieSameSiteLax || ck.Path != "/" ||
				exp.Before(time.Now().Add(167*time.Hour)) || exp.After(time.Now().Add(169*time.Hour)) {
				t.Fatalf("remembered session cookie %+v: want HttpOnly, Lax, Path=/, expiring in 168h (%v)", *ck, exp)
			}
			kept.noViolation(t, "remembered sign-in")
			d.assertNoSecretInLogs(t, goodPassword)
		})
	}
}

// accessible checks a page of the flow with the keyboard: every visible
// form control has a label, and Tab from the top of the page reaches the
// controls in order (an id for a field, the text for a button), each with
// a visible focus indicator.
func accessible(t *testing.T, ctx context.Context, order ...string) {
	t.Helper()
	unlabelled := value(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
		.filter((e) => e.labels.length === 0 || e.labels[0].textContent.trim() === '').map((e) => e.id || e.name)`))
	if len(unlabelled) > 0 {
		t.Fatalf("form controls without a label: %v", unlabelled)
	}
	browse(t, ctx, chromedp.Evaluate[chromedp.Void](`document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); null`))
	for i, want := range order {
		browse(t, ctx, chromedp.KeyEvent("\t"))
		got := value(t, ctx, chromedp.Evaluate[string](`document.activeElement.id || ''`))
		if got != want {
			got = value(t, ctx, chromedp.Evaluate[string](`document.activeElement.textContent.trim()`))
		}
		if got != want {
			t.Fatalf("Tab %d focuses %q, want %q", i+1, got, want)
		}
		outline := value(t, ctx, chromedp.Evaluate[string](`getComputedStyle(document.activeElement).outlineStyle`))
		if outline == "none" || outline == "" {
			t.Fatalf("focused %q has no visible outline", want)
		}
	}
}

package pages_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/server/upstream"
	"github.com/portcullis-auth/portcullis/server/upstream/upstreamtest"
	"github.com/portcullis-auth/portcullis/store"
)

// fedDeployment is a deployment with the test provider "corp" (named
// "Corp Login": just-in-time creation with the role user, allowed_domains
// example.com, linking by confirmation) and the first-party client "notes"
// whose redirect URI is the instance's /healthz, so the browser lands
// somewhere.
type fedDeployment struct {
	*deployment
	op          *upstreamtest.Provider
	notesSecret string
}

func newFedDeployment(t *testing.T) *fedDeployment {
	t.Helper()
	op := upstreamtest.New(t)
	d := newProvidersDeployment(t, "  - id: corp\n    name: Corp Login\n    issuer: "+op.Issuer+"\n    client_id: "+op.ClientID+
		"\n    client_secret: "+op.ClientSecret+"\n    allowed_domains: [example.com]\n    jit: {enabled: true, default_role: user}\n", nil)
	d.op = op
	return d
}

// newProvidersDeployment is a deployment whose providers file lists
// providers (YAML list items), with settings, and the client "notes" (no
// test provider: op is nil).
func newProvidersDeployment(t *testing.T, providers string, settings map[string]string) *fedDeployment {
	t.Helper()
	file := filepath.Join(t.TempDir(), "providers.yaml")
	if err := os.WriteFile(file, []byte("providers:\n"+providers), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"PORTCULLIS_IDENTITY_PROVIDERS_FILE": file}
	for k, v := range settings {
		env[k] = v
	}
	d := newDeployment(t, env)
	secret := d.fx.Client(t, clients.Spec{ID: "notes", Name: "Notes", Grants: []string{"authorization_code"},
		RedirectURIs: []string{d.in.URL + "/healthz"}, FirstParty: true})
	return &fedDeployment{deployment: d, notesSecret: secret}
}

func (d *fedDeployment) oauth() *oauth2.Config {
	return &oauth2.Config{ClientID: "notes", ClientSecret: d.notesSecret, RedirectURL: d.in.URL + "/healthz",
		Scopes:   []string{"openid"},
		Endpoint: oauth2.Endpoint{AuthURL: d.in.URL + "/oauth2/authorize", TokenURL: d.in.URL + "/oauth2/token"}}
}

// idClaims are the id token claims the upstream tests look at.
type idClaims struct {
	Sub string   `json:"sub"`
	AMR []string `json:"amr"`
}

// idOfCode redeems the code in the browser's location with
// golang.org/x/oauth2 and returns the id token's sub and amr.
func (d *fedDeployment) idOfCode(t *testing.T, ctx context.Context, verifier string) idClaims {
	t.Helper()
	loc, err := url.Parse(location(t, ctx))
	if err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("the browser is at %q, not the client's callback with a code", location(t, ctx))
	}
	tok, err := d.oauth().Exchange(context.Background(), loc.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := tok.Extra("id_token").(string)
	parts := strings.Split(raw, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c idClaims
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func (d *fedDeployment) lastFailure(t *testing.T) store.AuditEvent {
	t.Helper()
	page, err := d.in.App.Core.Store.ListAudit(context.Background(), store.AuditFilter{Action: "login.failed", Limit: 1})
	if err != nil || len(page.Items) == 0 {
		t.Fatalf("no login.failed: %v", err)
	}
	return page.Items[0]
}

// clickProvider presses the login page's "Corp Login" button and returns
// the status of the page the browser lands on (after the provider).
func clickProvider(t *testing.T, ctx context.Context) int64 {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	resp, err := chromedp.RunResponse(tctx, chromedp.Click(chromedp.CSS(`a[href*="/login/corp?"]`)))
	if err != nil {
		t.Fatalf("press the provider button: %v", err)
	}
	return resp.Status
}

// TestBrowserUpstreamSignIn drives "Sign in with" through the login page in
// headless Chromium with the test provider: just-in-time creation ends at
// the client with amr ["fed"]; the confirm-link page refuses a wrong
// password and links with the right one (amr fed+pwd); then the hostile
// cases — a state mismatch, a replayed callback, a wrong nonce,
// email_verified false, a domain outside allowed_domains, a deactivated
// local user — each end on a 4xx page saying why, with login.failed
// (details.method upstream) and no session cookie. No page of the path
// reports a Content-Security-Policy violation.
func TestBrowserUpstreamSignIn(t *testing.T) {
	t.Parallel()
	d := newFedDeployment(t)
	tb := newTab(t, newBrowser(t))
	ctx := tb.ctx
	start := func() string {
		t.Helper()
		verifier := oauth2.GenerateVerifier()
		if st := open(t, ctx, d.oauth().AuthCodeURL("s", oauth2.S256ChallengeOption(verifier))); st != http.StatusOK {
			t.Fatalf("login page: %d", st)
		}
		return verifier
	}
	verified := upstreamtest.Bool(true)

	// Just in time.
	v := start()
	mustContain(t, "the login page", text(t, ctx), "Or sign in with", "Corp Login")
	tb.noViolation(t, "the login page with providers")
	// The button comes after the form in the keyboard order, with a visible
	// focus, and its text keeps its contrast (WCAG AA, 4.5:1).
	accessible(t, ctx, "username", "password", "remember", "Sign in", "Corp Login")
	if c := value(t, ctx, chromedp.Evaluate[float64](contrastJS+`contrastOf(document.querySelector('a[href*="/login/corp?"]'))`)); c < 4.5 {
		t.Fatalf("the provider button's contrast is %.2f, want at least 4.5", c)
	}
	d.op.NextLogin(upstreamtest.Token{Subject: "sub-new", Email: "new@example.com", EmailVerified: verified})
	if st := clickProvider(t, ctx); st != http.StatusOK {
		t.Fatalf("JIT sign-in landed with %d at %s", st, location(t, ctx))
	}
	if amr := d.idOfCode(t, ctx, v).AMR; !slices.Equal(amr, []string{"fed"}) {
		t.Fatalf("amr %v", amr)
	}

	// The confirm-link page: a wrong password, then the right one.
	tb.signOut(t)
	lena := d.fx.User(t, "lena@example.com", goodPassword, "user")
	v = start()
	d.op.NextLogin(upstreamtest.Token{Subject: "sub-lena", Email: "lena@example.com", EmailVerified: verified})
	if st := clickProvider(t, ctx); st != http.StatusOK {
		t.Fatalf("confirm-link page: %d", st)
	}
	mustContain(t, "the confirm-link page", text(t, ctx), "Link your Corp Login account", "Password of your account")
	tb.noViolation(t, "the confirm-link page")
	accessible(t, ctx, "password", "Link and sign in")
	browse(t, ctx, fill("password", "not her password"))
	if st := submit(t, ctx); st != http.StatusBadRequest {
		t.Fatalf("wrong password: %d", st)
	}
	mustContain(t, "the wrong password", text(t, ctx), "The password is incorrect.")
	if ids, _ := d.in.App.Core.Store.ListFederatedIdentities(context.Background(), lena.ID); len(ids) != 0 || hasSession(t, tb, d.in.URL) {
		t.Fatal("a wrong password linked the identity or started a session")
	}
	browse(t, ctx, fill("password", goodPassword))
	if st := submit(t, ctx); st != http.StatusOK {
		t.Fatalf("right password: %d", st)
	}
	if amr := d.idOfCode(t, ctx, v).AMR; !slices.Equal(amr, []string{"fed", "pwd"}) {
		t.Fatalf("amr %v", amr)
	}
	if ids, _ := d.in.App.Core.Store.ListFederatedIdentities(context.Background(), lena.ID); len(ids) != 1 {
		t.Fatal("not linked")
	}

	// The hostile cases.
	refused := func(what string, status int64, reason string) {
		t.Helper()
		if status < 400 || status >= 500 {
			t.Fatalf("%s: status %d at %s", what, status, location(t, ctx))
		}
		mustContain(t, what, text(t, ctx), "You could not be signed in", (&upstream.Refusal{Reason: reason}).Description())
		if hasSession(t, tb, d.in.URL) {
			t.Fatalf("%s: a session cookie was set", what)
		}
		if ev := d.lastFailure(t); ev.Details["method"] != "upstream" || ev.Details["reason"] != reason {
			t.Fatalf("%s: login.failed %+v", what, ev)
		}
		tb.noViolation(t, what)
	}
	fresh := func() {
		t.Helper()
		tb.signOut(t)
		start()
	}
	// A state mismatch.
	fresh()
	refused("state mismatch", open(t, ctx, d.in.URL+"/login/corp/callback?state=forged&code=c"), upstream.ReasonInvalidState)
	// A replayed callback: the provider's answer opened a second time.
	fresh()
	d.op.NextLogin(upstreamtest.Token{Subject: "sub-new", Email: "new@example.com", EmailVerified: verified})
	// The provider's answer (its redirect to the callback) is recorded as
	// the browser requests it; the browser signs in with it, then opens it
	// again.
	var mu sync.Mutex
	var callbacks []string
	chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok && e.Request != nil && strings.Contains(e.Request.URL, "/login/corp/callback?") {
			mu.Lock()
			callbacks = append(callbacks, e.Request.URL)
			mu.Unlock()
		}
	})
	d.op.NextLogin(upstreamtest.Token{Subject: "sub-new", Email: "new@example.com", EmailVerified: verified})
	if st := clickProvider(t, ctx); st != http.StatusOK || !strings.Contains(location(t, ctx), "code=") {
		t.Fatalf("first use of the callback: %d at %s", st, location(t, ctx))
	}
	mu.Lock()
	if len(callbacks) == 0 {
		mu.Unlock()
		t.Fatal("the callback was not seen")
	}
	cb := callbacks[len(callbacks)-1]
	mu.Unlock()
	tb.signOut(t) // (the state is taken before the browser is looked at)
	refused("replayed callback", open(t, ctx, cb), upstream.ReasonReplayedCallback)
	// A wrong nonce, email_verified false, a domain not allowed.
	for _, c := range []struct {
		what, reason string
		tok          upstreamtest.Token
	}{
		{"wrong nonce", upstream.ReasonInvalidToken, upstreamtest.Token{Subject: "s1", Email: "s1@example.com", EmailVerified: verified, Nonce: "other"}},
		{"email_verified false", upstream.ReasonEmailUnverified, upstreamtest.Token{Subject: "s2", Email: "s2@example.com", EmailVerified: upstreamtest.Bool(false)}},
		{"domain not allowed", upstream.ReasonDomainNotAllowed, upstreamtest.Token{Subject: "s3", Email: "s3@elsewhere.org", EmailVerified: verified}},
	} {
		fresh()
		d.op.NextLogin(c.tok)
		refused(c.what, clickProvider(t, ctx), c.reason)
	}
	// Lena is deactivated: her linked identity no longer signs in.
	if _, err := d.in.App.Core.Store.UpdateUser(context.Background(), lena.ID, func(u *store.User) error { u.Active = false; return nil }); err != nil {
		t.Fatal(err)
	}
	fresh()
	d.op.NextLogin(upstreamtest.Token{Subject: "sub-lena", Email: "lena@example.com", EmailVerified: verified})
	refused("deactivated user", clickProvider(t, ctx), upstream.ReasonDeactivated)
}

// hasSession reports whether the browser holds a session cookie for u.
func hasSession(t *testing.T, tb *tab, u string) bool {
	t.Helper()
	return slices.ContainsFunc(tb.cookies(t, u), func(c *network.Cookie) bool { return strings.Contains(c.Name, "portcullis-session") })
}

// contrastJS defines contrastOf(el): the WCAG contrast ratio of el's text
// colour on its background colour (both computed; opaque colours).
const contrastJS = `function contrastOf(el) {
	const rgb = (c) => c.match(/[0-9.]+/g).slice(0, 3).map(Number);
	const lum = ([r, g, b]) => [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); })
		.reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
	const s = getComputedStyle(el);
	const a = lum(rgb(s.color)), b = lum(rgb(s.backgroundColor));
	return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}
`

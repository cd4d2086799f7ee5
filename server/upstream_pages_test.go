package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/server/console"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/server/upstream"
	"github.com/portcullis-auth/portcullis/server/upstream/upstreamtest"
	"github.com/portcullis-auth/portcullis/store"
)

// The browser path of upstream identity providers through the login page,
// over plain HTTP with a cookie jar: the client's authorization request,
// the login page's provider button, the provider, the callback, then the
// client's callback with a code and tokens whose amr has "fed".

// fedDeployment is a sign-in deployment (siDeployment: ann with a
// password, the clients) with the test provider "corp" (just-in-time
// creation with the role user, allowed_domains example.com, linking by
// confirmation).
type fedDeployment struct {
	*siDeployment
	op *upstreamtest.Provider
}

func newFedSignIn(t *testing.T, b st.Backend) *fedDeployment {
	t.Helper()
	op := upstreamtest.New(t)
	file := filepath.Join(t.TempDir(), "providers.yaml")
	yaml := "providers:\n" + op.ProviderYAML("corp", "    allowed_domains: [example.com]", "    jit: {enabled: true, default_role: user}")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return &fedDeployment{siDeployment: newSignIn(t, b, map[string]string{"PORTCULLIS_IDENTITY_PROVIDERS_FILE": file}), op: op}
}

// fedFlow is one client sign-in in progress.
type fedFlow struct {
	conf            *oauth2.Config
	verifier, nonce string
}

var fedButton = regexp.MustCompile(`<a class="button button-secondary" href="([^"]*/login/([a-z0-9-]+)\?request=[^"]+)">([^<]+)</a>`)

// openLogin starts the "first" client's authorization request in hc and
// returns the login page.
func (d *siDeployment) openLogin(t *testing.T, hc *http.Client) (fedFlow, siPage) {
	t.Helper()
	f := fedFlow{conf: d.oauth("first", d.firstSecret, "openid", "email"), verifier: oauth2.GenerateVerifier(),
		nonce: "n-" + oauth2.GenerateVerifier()[:12]}
	page := siGet(t, hc, f.conf.AuthCodeURL("st-1", oauth2.S256ChallengeOption(f.verifier), oidc.Nonce(f.nonce)))
	if page.StatusCode != http.StatusOK {
		t.Fatalf("login page: %d\n%s", page.StatusCode, page.body)
	}
	return f, page
}

// pressProvider follows the login page's button for provider and returns
// the 303 to the provider's authorization endpoint.
func pressProvider(t *testing.T, hc *http.Client, page siPage, provider string) string {
	t.Helper()
	for _, m := range fedButton.FindAllStringSubmatch(page.body, -1) {
		if m[2] != provider {
			continue
		}
		u, err := page.Request.URL.Parse(unescapeHTML(m[1]))
		if err != nil {
			t.Fatal(err)
		}
		to := siGet(t, hc, u.String())
		if to.StatusCode != http.StatusSeeOther {
			t.Fatalf("GET /login/%s: %d\n%s", provider, to.StatusCode, to.body)
		}
		return to.Header.Get("Location")
	}
	t.Fatalf("no button for %s on the login page:\n%s", provider, page.body)
	return ""
}

// viaTestProvider runs a sign-in of who at the test provider through the
// login page up to Portcullis's callback URL (not yet opened).
func (d *fedDeployment) viaTestProvider(t *testing.T, hc *http.Client, who upstreamtest.Token) (fedFlow, string) {
	t.Helper()
	f, page := d.openLogin(t, hc)
	d.op.NextLogin(who)
	q := browseTestProvider(t, pressProvider(t, hc, page, "corp"))
	return f, d.in.Config.Issuer + "/login/corp/callback?" + q.Encode()
}

// tokens redeems the client's callback and returns the id token's claims
// (verified by go-oidc with the nonce) and the access token's.
func (d *siDeployment) tokens(t *testing.T, f fedFlow, p siPage) (idc, atc map[string]any) {
	t.Helper()
	q := d.callback(t, p)
	tok, err := f.conf.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(f.verifier))
	if err != nil {
		t.Fatalf("code exchange: %v", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := d.provider.Verifier(&oidc.Config{ClientID: "first"}).Verify(context.Background(), raw)
	if err != nil || idt.Nonce != f.nonce {
		t.Fatalf("id token: %v (nonce %q)", err, idt.Nonce)
	}
	return decodeClaims(t, raw), decodeClaims(t, tok.AccessToken)
}

func amrOf(c map[string]any) []string {
	var out []string
	list, _ := c["amr"].([]any)
	for _, a := range list {
		s, _ := a.(string)
		out = append(out, s)
	}
	return out
}

// sessionCookie reports whether hc holds a browser session of d.
func (d *siDeployment) sessionCookie(t *testing.T, hc *http.Client) bool {
	t.Helper()
	u, _ := url.Parse(d.in.Config.Issuer)
	for _, c := range hc.Jar.Cookies(u) {
		if strings.Contains(c.Name, "portcullis-session") {
			return true
		}
	}
	return false
}

func (d *siDeployment) lastEvent(t *testing.T, action string) store.AuditEvent {
	t.Helper()
	page, err := d.in.App.Core.Store.ListAudit(context.Background(), store.AuditFilter{Action: action, Limit: 1})
	if err != nil || len(page.Items) == 0 {
		t.Fatalf("no %s event: %v", action, err)
	}
	return page.Items[0]
}

func (d *siDeployment) linked(t *testing.T, userID string) []store.FederatedIdentity {
	t.Helper()
	ids, err := d.in.App.Core.Store.ListFederatedIdentities(context.Background(), userID)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestUpstreamSignInPages: through the login page over HTTP, on
// PostgreSQL+Redis and SQLite: the provider's button; just-in-time
// creation ending at the client's callback with amr ["fed"]; the
// confirm-link page (a wrong password links nothing and starts no session,
// the right one links and signs in with amr fed+pwd; the linked identity
// then signs in directly); a user with a second factor is asked for it
// (after the confirm-link page, and again at each upstream sign-in).
func TestUpstreamSignInPages(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newFedSignIn(t, b)
			ctx := context.Background()

			// The button: a link to /login/corp labelled with its name.
			_, page := d.openLogin(t, siBrowser(t))
			if m := fedButton.FindStringSubmatch(page.body); m == nil || m[2] != "corp" || m[3] != "Test corp" {
				t.Fatalf("login page has no provider button:\n%s", page.body)
			}

			// Just-in-time creation, straight to the client.
			hc := siBrowser(t)
			f, cb := d.viaTestProvider(t, hc, upstreamtest.Token{Subject: "sub-new", Email: "new@example.com", EmailVerified: upstreamtest.Bool(true)})
			idc, atc := d.tokens(t, f, siGet(t, hc, cb))
			created, err := d.in.App.Core.Store.GetUserByEmail(ctx, "new@example.com")
			if err != nil || idc["sub"] != created.ID {
				t.Fatalf("JIT user %+v, %v; id token %v", created, err, idc)
			}
			if !slices.Equal(amrOf(idc), []string{"fed"}) || !slices.Equal(amrOf(atc), []string{"fed"}) {
				t.Fatalf("amr = %v / %v, want [fed]", amrOf(idc), amrOf(atc))
			}
			if ev := d.lastEvent(t, "login.succeeded"); ev.ActorID != created.ID || ev.Details["method"] != "upstream" {
				t.Fatalf("login.succeeded = %+v", ev)
			}

			// ann exists with a password: the confirm-link page.
			ann := siUser(t, d.siDeployment, siEmail)
			hc = siBrowser(t)
			f, cb = d.viaTestProvider(t, hc, upstreamtest.Token{Subject: "sub-ann", Email: siEmail, EmailVerified: upstreamtest.Bool(true)})
			confirm := siGet(t, hc, cb)
			if confirm.StatusCode != http.StatusOK || !strings.Contains(confirm.body, `name="password"`) ||
				!strings.Contains(confirm.body, `value="upstream_link"`) {
				t.Fatalf("confirm-link page: %d\n%s", confirm.StatusCode, confirm.body)
			}
			if csp := confirm.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
				t.Fatalf("CSP %q", csp)
			}
			wrong := confirm.submit(t, hc, url.Values{"password": {"not the password"}})
			if wrong.StatusCode != http.StatusBadRequest || !strings.Contains(wrong.body, "The password is incorrect.") {
				t.Fatalf("wrong password: %d\n%s", wrong.StatusCode, wrong.body)
			}
			if len(d.linked(t, ann.ID)) != 0 || d.sessionCookie(t, hc) {
				t.Fatal("a wrong password linked the identity or started a session")
			}
			if ev := d.lastEvent(t, "login.failed"); ev.TargetID != ann.ID {
				t.Fatalf("login.failed = %+v (the password check's)", ev)
			}
			idc, _ = d.tokens(t, f, wrong.submit(t, hc, url.Values{"password": {siPassword}}))
			if idc["sub"] != ann.ID || !slices.Equal(amrOf(idc), []string{"fed", "pwd"}) {
				t.Fatalf("linked sign-in: sub %v amr %v", idc["sub"], amrOf(idc))
			}
			if ids := d.linked(t, ann.ID); len(ids) != 1 || ids[0].Subject != "sub-ann" || ids[0].Provider != "corp" {
				t.Fatalf("identities = %+v", ids)
			}
			if ev := d.lastEvent(t, "identity.linked"); ev.TargetID != ann.ID || ev.Details["via"] != "confirm" {
				t.Fatalf("identity.linked = %+v", ev)
			}
			// The form's record is single use: posting it again links nothing more and signs nobody in.
			// (Its pending request is completed too: the request's own answer.)
			again := wrong.submit(t, hc, url.Values{"password": {siPassword}})
			if again.StatusCode == http.StatusSeeOther || strings.Contains(again.Header.Get("Location"), "code=") || len(d.linked(t, ann.ID)) != 1 {
				t.Fatalf("a used confirm-link form: %d %s\n%s", again.StatusCode, again.Header.Get("Location"), again.body)
			}
			// Linked: the next sign-in goes straight through (by sub).
			hc = siBrowser(t)
			f, cb = d.viaTestProvider(t, hc, upstreamtest.Token{Subject: "sub-ann", Email: "changed@example.com", EmailVerified: upstreamtest.Bool(true)})
			if idc, _ = d.tokens(t, f, siGet(t, hc, cb)); idc["sub"] != ann.ID {
				t.Fatalf("returning sign-in: %v", idc)
			}

			// A user with TOTP: confirm-link, then the second step; later sign-ins owe it too.
			fx := st.NewFixtures(t, d.in.App.Core)
			bob := fx.User(t, "bob@example.com", siPassword, "user")
			secret, _ := st.EnrolTOTPPreviousStep(t, d.in.App.MFA, bob)
			hc = siBrowser(t)
			f, cb = d.viaTestProvider(t, hc, upstreamtest.Token{Subject: "sub-bob", Email: "bob@example.com", EmailVerified: upstreamtest.Bool(true)})
			step := siGet(t, hc, cb).submit(t, hc, url.Values{"password": {siPassword}})
			if step.StatusCode != http.StatusOK || !siMFAToken.MatchString(step.body) || d.sessionCookie(t, hc) {
				t.Fatalf("second step after confirm-link: %d\n%s", step.StatusCode, step.body)
			}
			if len(d.linked(t, bob.ID)) != 0 {
				t.Fatal("linked before the second factor")
			}
			idc, _ = d.tokens(t, f, step.submit(t, hc, url.Values{"code": {totpAt(t, secret, time.Now())}, "mfa_action": {"verify"}}))
			if idc["sub"] != bob.ID || !slices.Equal(amrOf(idc), []string{"fed", "pwd", "otp", "mfa"}) {
				t.Fatalf("confirm-link with MFA: sub %v amr %v", idc["sub"], amrOf(idc))
			}
			if len(d.linked(t, bob.ID)) != 1 {
				t.Fatal("not linked after the second factor")
			}
			hc = siBrowser(t)
			f, cb = d.viaTestProvider(t, hc, upstreamtest.Token{Subject: "sub-bob", Email: "bob@example.com", EmailVerified: upstreamtest.Bool(true),
				AMR: []string{"pwd", "otp", "mfa"}}) // corp is not trusted for MFA
			step = siGet(t, hc, cb)
			if step.StatusCode != http.StatusOK || !siMFAToken.MatchString(step.body) || d.sessionCookie(t, hc) {
				t.Fatalf("a linked MFA user was not asked for the second factor: %d\n%s", step.StatusCode, step.body)
			}
			idc, _ = d.tokens(t, f, step.submit(t, hc, url.Values{"code": {totpAt(t, secret, time.Now().Add(30*time.Second))}, "mfa_action": {"verify"}}))
			if idc["sub"] != bob.ID || !slices.Equal(amrOf(idc), []string{"fed", "otp", "mfa"}) {
				t.Fatalf("upstream + second factor: sub %v amr %v", idc["sub"], amrOf(idc))
			}
		})
	}
}

// TestUpstreamSignInPagesRefusals: the hostile cases through the login
// page with the test provider: an unknown provider, a state mismatch, a
// replayed callback, the provider's answer opened in another browser than
// the one that began the sign-in, a wrong nonce, email_verified false, a deactivated
// local user, a domain outside allowed_domains. Each answers a 4xx page
// saying why, records login.failed with details.method upstream and the
// reason, and sets no session cookie.
func TestUpstreamSignInPagesRefusals(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newFedSignIn(t, b)
			ctx := context.Background()
			refused := func(t *testing.T, hc *http.Client, p siPage, status int, reason string) {
				t.Helper()
				r := &upstream.Refusal{Reason: reason}
				if p.StatusCode != status || !strings.Contains(p.body, "You could not be signed in") ||
					!strings.Contains(p.body, unescapeHTMLText(r.Description())) {
					t.Fatalf("status %d, want %d with %q:\n%s", p.StatusCode, status, r.Description(), p.body)
				}
				if d.sessionCookie(t, hc) {
					t.Fatal("a refused sign-in set a session cookie")
				}
				if ev := d.lastEvent(t, "login.failed"); ev.Details["method"] != "upstream" || ev.Details["reason"] != reason ||
					time.Since(ev.Time) > time.Minute {
					t.Fatalf("login.failed = %+v, want reason %s", ev, reason)
				}
			}
			verified := upstreamtest.Bool(true)

			// An unknown provider: 404 at the start and at the callback.
			hc := siBrowser(t)
			if p := siGet(t, hc, d.in.Config.Issuer+"/login/nope?request=x"); p.StatusCode != http.StatusNotFound {
				t.Fatalf("unknown provider start: %d", p.StatusCode)
			}
			if p := siGet(t, hc, d.in.Config.Issuer+"/login/nope/callback?state=s&code=c"); p.StatusCode != http.StatusNotFound {
				t.Fatalf("unknown provider callback: %d", p.StatusCode)
			}
			if ev := d.lastEvent(t, "login.failed"); ev.Details["method"] != "upstream" || ev.Details["reason"] != upstream.ReasonUnknownProvider {
				t.Fatalf("login.failed = %+v", ev)
			}

			// State mismatch: the provider's answer with another state.
			hc = siBrowser(t)
			_, cb := d.viaTestProvider(t, hc, upstreamtest.Token{Subject: "s1", Email: "s1@example.com", EmailVerified: verified})
			u, _ := url.Parse(cb)
			q := u.Query()
			q.Set("state", q.Get("state")+"x")
			u.RawQuery = q.Encode()
			refused(t, hc, siGet(t, hc, u.String()), http.StatusBadRequest, upstream.ReasonInvalidState)

			// A replayed callback: the first use signs in, the second (another browser) is refused.
			hc = siBrowser(t)
			f, cb := d.viaTestProvider(t, hc, upstreamtest.Token{Subject: "s2", Email: "s2@example.com", EmailVerified: verified})
			d.tokens(t, f, siGet(t, hc, cb))
			hc = siBrowser(t)
			refused(t, hc, siGet(t, hc, cb), http.StatusBadRequest, upstream.ReasonReplayedCallback)

			// The provider's answer opened in another browser (login CSRF):
			// refused and used up; the browser that began it cannot use it either.
			hc = siBrowser(t)
			_, cb = d.viaTestProvider(t, hc, upstreamtest.Token{Subject: "s2b", Email: "s2b@example.com", EmailVerified: verified})
			other := siBrowser(t)
			refused(t, other, siGet(t, other, cb), http.StatusBadRequest, upstream.ReasonBrowserMismatch)
			if _, err := d.in.App.Core.Store.GetUserByEmail(ctx, "s2b@example.com"); err == nil {
				t.Fatal("an answer opened in another browser created an account")
			}
			refused(t, hc, siGet(t, hc, cb), http.StatusBadRequest, upstream.ReasonReplayedCallback)

			// A wrong nonce in the id token.
			hc = siBrowser(t)
			_, cb = d.viaTestProvider(t, hc, upstreamtest.Token{Subject: "s3", Email: "s3@example.com", EmailVerified: verified, Nonce: "not-the-nonce"})
			refused(t, hc, siGet(t, hc, cb), http.StatusBadRequest, upstream.ReasonInvalidToken)

			// email_verified false: no account is created.
			hc = siBrowser(t)
			_, cb = d.viaTestProvider(t, hc, upstreamtest.Token{Subject: "s4", Email: "s4@example.com", EmailVerified: upstreamtest.Bool(false)})
			refused(t, hc, siGet(t, hc, cb), http.StatusForbidden, upstream.ReasonEmailUnverified)
			if _, err := d.in.App.Core.Store.GetUserByEmail(ctx, "s4@example.com"); err == nil {
				t.Fatal("an unverified email created an account")
			}

			// A domain outside allowed_domains.
			hc = siBrowser(t)
			_, cb = d.viaTestProvider(t, hc, upstreamtest.Token{Subject: "s5", Email: "s5@elsewhere.org", EmailVerified: verified})
			refused(t, hc, siGet(t, hc, cb), http.StatusForbidden, upstream.ReasonDomainNotAllowed)

			// A deactivated local user whose identity is linked.
			fx := st.NewFixtures(t, d.in.App.Core)
			carl := fx.User(t, "carl@example.com", siPassword, "user")
			if err := d.in.App.Core.Store.LinkFederatedIdentity(ctx, &store.FederatedIdentity{Provider: "corp", Issuer: d.op.Issuer, Subject: "s6",
				UserID: carl.ID, Email: carl.Email}); err != nil {
				t.Fatal(err)
			}
			if _, err := d.in.App.Core.Store.UpdateUser(ctx, carl.ID, func(u *store.User) error { u.Active = false; return nil }); err != nil {
				t.Fatal(err)
			}
			hc = siBrowser(t)
			_, cb = d.viaTestProvider(t, hc, upstreamtest.Token{Subject: "s6", Email: "carl@example.com", EmailVerified: verified})
			refused(t, hc, siGet(t, hc, cb), http.StatusForbidden, upstream.ReasonDeactivated)
		})
	}
}

// unescapeHTMLText is s as html/template writes it in text.
func unescapeHTMLText(s string) string {
	return strings.NewReplacer("'", "&#39;", `"`, "&#34;").Replace(s)
}

// TestUpstreamSignInPagesInterop signs in through the login page at two
// OpenID providers Portcullis's upstream package did not write, over HTTP
// with a cookie jar: a second Portcullis instance (its own login page and
// code flow) and the example provider of github.com/zitadel/oidc/v3 in the
// test process; each ends at the client's callback with tokens whose amr
// has "fed": ann, who has an account here too, through the confirm-link
// page and then by sub; test-user2 of the example provider created just in
// time.
func TestUpstreamSignInPagesInterop(t *testing.T) {
	// The example provider keeps its clients in a map it reads; this one is
	// filled once the downstream's callback is known.
	zsrv := httptest.NewUnstartedServer(nil)
	zIssuer := "http://" + zsrv.Listener.Addr().String() + "/"
	zClients := map[string]*storage.Client{}
	zsrv.Config.Handler = exampleop.SetupServer(zIssuer, storage.NewStorageWithClients(storage.NewUserStore(zIssuer), zClients), nil, false, op.WithAllowInsecure())
	zsrv.Start()
	t.Cleanup(zsrv.Close)

	// The second Portcullis: its confidential client "down" may redirect to
	// the downstream's callback (a loopback IP: any port).
	up := newSignIn(t, st.SQLite)
	upSecret := st.NewFixtures(t, up.in.App.Core).Client(t, clients.Spec{ID: "down", Name: "Downstream",
		Grants: []string{"authorization_code"}, RedirectURIs: []string{"http://127.0.0.1/login/up/callback"}, FirstParty: true})

	file := filepath.Join(t.TempDir(), "providers.yaml")
	yaml := "providers:\n  - id: up\n    name: Upstream Portcullis\n    issuer: " + up.in.Config.Issuer +
		"\n    client_id: down\n    client_secret_env: UP_SECRET\n    jit: {enabled: true, default_role: user}\n" +
		"  - id: zitadel\n    name: Zitadel example\n    issuer: " + zIssuer +
		"\n    client_id: portcullis-pages\n    client_secret: zitadel-client-secret\n    jit: {enabled: true, default_role: user}\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	d := newSignIn(t, st.SQLite, map[string]string{"PORTCULLIS_IDENTITY_PROVIDERS_FILE": file, "UP_SECRET": upSecret})
	zClients["portcullis-pages"] = storage.WebClient("portcullis-pages", "zitadel-client-secret", d.in.Config.Issuer+"/login/zitadel/callback")

	// Through the second Portcullis: its login page signs ann in there.
	hc := siBrowser(t)
	f, page := d.openLogin(t, hc)
	q := upstreamBrowseTo(t, siBrowser(t), pressProvider(t, hc, page, "up"), d.in.Config.Issuer+"/login/up/callback", siEmail, siPassword)
	// ann also has an account here, with the same verified email: the
	// confirm-link page, then her password here links and signs her in.
	confirm := siGet(t, hc, d.in.Config.Issuer+"/login/up/callback?"+q.Encode())
	if confirm.StatusCode != http.StatusOK || !strings.Contains(confirm.body, `name="password"`) {
		t.Fatalf("confirm-link page: %d\n%s", confirm.StatusCode, confirm.body)
	}
	idc, _ := d.tokens(t, f, confirm.submit(t, hc, url.Values{"password": {siPassword}}))
	ann := siUser(t, d, siEmail)
	if idc["sub"] != ann.ID || !slices.Equal(amrOf(idc), []string{"fed", "pwd"}) || len(d.linked(t, ann.ID)) != 1 {
		t.Fatalf("second Portcullis: id token %v", idc)
	}
	// Linked: the next sign-in there is by sub, amr ["fed"].
	hc = siBrowser(t)
	f, page = d.openLogin(t, hc)
	q = upstreamBrowseTo(t, siBrowser(t), pressProvider(t, hc, page, "up"), d.in.Config.Issuer+"/login/up/callback", siEmail, siPassword)
	if idc, _ = d.tokens(t, f, siGet(t, hc, d.in.Config.Issuer+"/login/up/callback?"+q.Encode())); idc["sub"] != ann.ID ||
		!slices.Equal(amrOf(idc), []string{"fed"}) {
		t.Fatalf("second Portcullis, linked: id token %v", idc)
	}

	// Through the zitadel example provider (its login page, test-user2).
	hc = siBrowser(t)
	f, page = d.openLogin(t, hc)
	q = zitadelBrowseTo(t, pressProvider(t, hc, page, "zitadel"), d.in.Config.Issuer+"/login/zitadel/callback")
	idc, _ = d.tokens(t, f, siGet(t, hc, d.in.Config.Issuer+"/login/zitadel/callback?"+q.Encode()))
	zu, err := d.in.App.Core.Store.GetUserByEmail(context.Background(), "test-user2@zitadel.ch")
	if err != nil || idc["sub"] != zu.ID || !slices.Equal(amrOf(idc), []string{"fed"}) {
		t.Fatalf("zitadel: user %+v, %v; id token %v", zu, err, idc)
	}
}

// TestUpstreamConfirmLinkOnce: the confirm-link form is single use. The
// same form posted twice at once with the right password (real
// concurrency, released together) signs in exactly once: one answer goes
// to the client with a code, the other does not, and one identity.linked
// is recorded.
func TestUpstreamConfirmLinkOnce(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newFedSignIn(t, b)
			hc := siBrowser(t)
			_, cb := d.viaTestProvider(t, hc, upstreamtest.Token{Subject: "sub-ann", Email: siEmail, EmailVerified: upstreamtest.Bool(true)})
			confirm := siGet(t, hc, cb)
			if confirm.StatusCode != http.StatusOK {
				t.Fatalf("confirm-link page: %d", confirm.StatusCode)
			}
			const n = 2
			start := make(chan struct{})
			statuses := make(chan int, n)
			var wg sync.WaitGroup
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					statuses <- confirm.submit(t, hc, url.Values{"password": {siPassword}}).StatusCode
				}()
			}
			close(start)
			wg.Wait()
			close(statuses)
			var got []int
			for s := range statuses {
				got = append(got, s)
			}
			// The other answer is the login form again (400) or, when the
			// first already completed the request, that request's own page.
			codes := 0
			for _, s := range got {
				if s == http.StatusSeeOther {
					codes++
				}
			}
			if codes != 1 {
				t.Fatalf("answers %v, want exactly one 303 to the client", got)
			}
			page, err := d.in.App.Core.Store.ListAudit(context.Background(), store.AuditFilter{Action: "identity.linked", Limit: 10})
			if err != nil || len(page.Items) != 1 {
				t.Fatalf("identity.linked events: %d, %v", len(page.Items), err)
			}
		})
	}
}

// TestUpstreamPathsWithoutProviders: a server without a providers file
// still serves /login/{provider} and its callback (they are in its API
// description), and every name there is unknown: a 404 page, no redirect,
// no session cookie.
func TestUpstreamPathsWithoutProviders(t *testing.T) {
	t.Parallel()
	d := newSignIn(t, st.SQLite)
	hc := siBrowser(t)
	for _, path := range []string{"/login/google?request=x", "/login/google/callback?state=s&code=c"} {
		p := siGet(t, hc, d.in.Config.Issuer+path)
		if p.StatusCode != http.StatusNotFound || !strings.Contains(p.body, "This sign-in option does not exist") {
			t.Fatalf("%s: %d\n%s", path, p.StatusCode, p.body)
		}
		if d.sessionCookie(t, hc) {
			t.Fatalf("%s set a session cookie", path)
		}
	}
}

// TestUpstreamSignInFreshLogin: a client's prompt=login (and max_age) goes
// on to the identity provider, and a provider that answers from its own
// older session (auth_time before the request) signs nobody in: the
// refusal page, no code. Before, any answer of the provider counted as the
// fresh login the client asked for, at a browser signed in there. A
// provider that signs the person in again completes the request, its
// clock a little behind ours too.
func TestUpstreamSignInFreshLogin(t *testing.T) {
	d := newFedSignIn(t, st.SQLite)
	hc := siBrowser(t)
	who := upstreamtest.Token{Subject: "sub-new", Email: "new@example.com", EmailVerified: upstreamtest.Bool(true)}
	f, cb := d.viaTestProvider(t, hc, who)
	d.tokens(t, f, siGet(t, hc, cb)) // signed in, at Portcullis and at the provider
	time.Sleep(secondLater)          // auth_time is whole seconds: a login in the request's own second counts as fresh

	for _, tc := range []struct {
		name     string
		param    string
		value    string
		authTime time.Time
		refused  bool
	}{
		{"fail/prompt_login_answered_from_the_providers_session", "prompt", "login", time.Now().Add(-time.Hour), true},
		{"fail/max_age_answered_from_the_providers_session", "max_age", "0", time.Now().Add(-time.Hour), true},
		{"ok/prompt_login_signed_in_again", "prompt", "login", time.Now(), false},
		// The provider's clock 10 s behind ours: within the leeway, and the
		// session starts at the request (not at the provider's time, which
		// would send the person back to the login page).
		{"ok/prompt_login_provider_clock_behind", "prompt", "login", time.Now().Add(-10 * time.Second), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.refused {
				time.Sleep(secondLater) // after the session an earlier case started, in its own second
			}
			f := fedFlow{conf: d.oauth("first", d.firstSecret, "openid", "email"), verifier: oauth2.GenerateVerifier(),
				nonce: "n-" + oauth2.GenerateVerifier()[:12]}
			asked := time.Now().Truncate(time.Second)
			page := siGet(t, hc, f.conf.AuthCodeURL("st-2", oauth2.S256ChallengeOption(f.verifier), oidc.Nonce(f.nonce),
				oauth2.SetAuthURLParam(tc.param, tc.value)))
			if page.StatusCode != http.StatusOK {
				t.Fatalf("login page: %d %s\n%s", page.StatusCode, page.Header.Get("Location"), page.body)
			}
			at := who
			at.Extra = map[string]any{"auth_time": tc.authTime.Unix()}
			d.op.NextLogin(at)
			to := pressProvider(t, hc, page, "corp")
			if u, err := url.Parse(to); err != nil || u.Query().Get(tc.param) != tc.value {
				t.Fatalf("the provider was not asked %s=%s: %s", tc.param, tc.value, to)
			}
			back := siGet(t, hc, d.in.Config.Issuer+"/login/corp/callback?"+browseTestProvider(t, to).Encode())
			if !tc.refused {
				idc, _ := d.tokens(t, f, back)
				if authTime, _ := idc["auth_time"].(float64); int64(authTime) < asked.Unix() {
					t.Fatalf("auth_time %v is before the request (%d)", idc["auth_time"], asked.Unix())
				}
				return
			}
			if back.StatusCode != http.StatusForbidden || !strings.Contains(back.body, "did not confirm a sign-in as recent as needed") ||
				back.Header.Get("Location") != "" {
				t.Fatalf("a provider answering from its own session: %d %s\n%s", back.StatusCode, back.Header.Get("Location"), back.body)
			}
			if ev := d.lastEvent(t, "login.failed"); ev.Details["reason"] != upstream.ReasonStaleLogin {
				t.Fatalf("login.failed = %+v", ev)
			}
		})
	}
}

// TestUpstreamStartLimitedPerAddress: every start of a sign-in at an
// upstream provider keeps a record (state, nonce, verifier) for the
// provider's answer, and one pending request may be started from again and
// again, so each start counts in the caller's address budget of kept
// records (ratelimit.Limiter.AllowPending): past it, the 429 page and
// nothing kept. Before, one authorization request let an address make the
// token state keep records without end (found by this session's review of
// its own change).
func TestUpstreamStartLimitedPerAddress(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			op := upstreamtest.New(t)
			file := filepath.Join(t.TempDir(), "providers.yaml")
			yaml := "providers:\n" + op.ProviderYAML("corp", "    allowed_domains: [example.com]")
			if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			d := newSignIn(t, b, map[string]string{"PORTCULLIS_IDENTITY_PROVIDERS_FILE": file, "PORTCULLIS_RATE_LIMITS": "on"})
			hc := siBrowser(t)
			_, page := d.openLogin(t, hc) // one kept record: the pending request
			var start string
			for _, m := range fedButton.FindAllStringSubmatch(page.body, -1) {
				if m[2] == "corp" {
					u, err := page.Request.URL.Parse(unescapeHTML(m[1]))
					if err != nil {
						t.Fatal(err)
					}
					start = u.String()
				}
			}
			if start == "" {
				t.Fatalf("no button for corp on the login page:\n%s", page.body)
			}
			const budget = 180
			kept := 1
			for ; kept <= 2*budget; kept++ {
				p := siGet(t, hc, start)
				if p.StatusCode == http.StatusSeeOther {
					continue
				}
				if p.StatusCode != http.StatusTooManyRequests || p.Header.Get("Retry-After") == "" || kept > budget {
					t.Fatalf("start %d at the provider: %d (Retry-After %q), want 303 within the budget of %d, then 429",
						kept, p.StatusCode, p.Header.Get("Retry-After"), budget)
				}
				return
			}
			t.Fatalf("%d sign-ins started at the provider from one address, none refused", kept-1)
		})
	}
}

// TestUpstreamSessionStartsAtTheProvidersSignIn: on PostgreSQL+Redis and
// SQLite, a sign-in through the provider starts its session at the time
// the person signed in there (upstream.Claims.LoginTime: the id token's
// auth_time, else its iat), never at the callback's time: the client's id
// token carries it, a later max_age it does not meet sends the person to
// the login page, and the second step after such a sign-in keeps it too.
// The provider is always asked for auth_time (max_age, OIDC Core
// §3.1.2.1), a large one when the request asked none. Before (found by a
// review), the provider's own two-hour-old session was stamped now and met
// any max_age.
func TestUpstreamSessionStartsAtTheProvidersSignIn(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newFedSignIn(t, b)
			signedInAt := time.Now().Add(-2 * time.Hour)
			old := upstreamtest.Token{Subject: "sub-old", Email: "old@example.com", EmailVerified: upstreamtest.Bool(true),
				Extra: map[string]any{"auth_time": signedInAt.Unix()}}
			// signIn signs who in through the provider in hc and returns the
			// page Portcullis's callback answers, and the provider's
			// authorization request.
			signIn := func(t *testing.T, hc *http.Client, who upstreamtest.Token) (fedFlow, siPage, url.Values) {
				t.Helper()
				f, page := d.openLogin(t, hc)
				d.op.NextLogin(who)
				to := pressProvider(t, hc, page, "corp")
				asked, err := url.Parse(to)
				if err != nil {
					t.Fatal(err)
				}
				return f, siGet(t, hc, d.in.Config.Issuer+"/login/corp/callback?"+browseTestProvider(t, to).Encode()), asked.Query()
			}
			authTime := func(idc map[string]any) int64 { at, _ := idc["auth_time"].(float64); return int64(at) }

			t.Run("auth_time_of_the_provider", func(t *testing.T) {
				hc := siBrowser(t)
				f, back, asked := signIn(t, hc, old)
				if asked.Get("max_age") == "" || asked.Get("prompt") != "" {
					t.Errorf("the provider was not asked for auth_time: max_age %q, prompt %q", asked.Get("max_age"), asked.Get("prompt"))
				}
				if idc, _ := d.tokens(t, f, back); authTime(idc) > signedInAt.Unix()+1 {
					t.Errorf("id token auth_time %d; the provider authenticated the person at %d (2 h ago)", authTime(idc), signedInAt.Unix())
				}
				f2 := fedFlow{conf: d.oauth("first", d.firstSecret, "openid"), verifier: oauth2.GenerateVerifier(), nonce: "n-max-age"}
				page := siGet(t, hc, f2.conf.AuthCodeURL("st-2", oauth2.S256ChallengeOption(f2.verifier), oidc.Nonce(f2.nonce),
					oauth2.SetAuthURLParam("max_age", "600")))
				if page.StatusCode != http.StatusOK {
					t.Fatalf("max_age=600 after a provider sign-in 2 h old: %d to %s, not the login page", page.StatusCode, page.Header.Get("Location"))
				}
			})
			t.Run("iat_without_auth_time", func(t *testing.T) {
				issued := time.Now().Add(-time.Hour)
				hc := siBrowser(t)
				f, back, _ := signIn(t, hc, upstreamtest.Token{Subject: "sub-iat", Email: "iat@example.com",
					EmailVerified: upstreamtest.Bool(true), IssuedAt: issued})
				if idc, _ := d.tokens(t, f, back); authTime(idc) > issued.Unix()+1 {
					t.Fatalf("id token auth_time %d; the provider's token without auth_time was issued at %d", authTime(idc), issued.Unix())
				}
			})
			var oldSecret string
			t.Run("second_step_keeps_it", func(t *testing.T) {
				oldSecret, _ = st.EnrolTOTPPreviousStep(t, d.in.App.MFA, siUser(t, d.siDeployment, "old@example.com"))
				secret := oldSecret
				hc := siBrowser(t)
				f, step, _ := signIn(t, hc, old)
				if step.StatusCode != http.StatusOK || !siMFAToken.MatchString(step.body) {
					t.Fatalf("no second step: %d\n%s", step.StatusCode, step.body)
				}
				idc, _ := d.tokens(t, f, step.submit(t, hc, url.Values{"code": {totpAt(t, secret, time.Now())}, "mfa_action": {"verify"}}))
				if authTime(idc) > signedInAt.Unix()+1 || !slices.Equal(amrOf(idc), []string{"fed", "otp", "mfa"}) {
					t.Fatalf("after the second step: auth_time %d (the provider's sign-in %d), amr %v", authTime(idc), signedInAt.Unix(), amrOf(idc))
				}
			})
			// Every session of the person ended after the provider's sign-in
			// (a reset, say): the provider's answer from that sign-in starts
			// no session (a 403 page saying why, audited), directly or after
			// the second step; a new sign-in there does.
			t.Run("sessions_ended_since", func(t *testing.T) {
				tenMinutesAgo := map[string]any{"auth_time": time.Now().Add(-10 * time.Minute).Unix()}
				ended := upstreamtest.Token{Subject: "sub-ended", Email: "ended@example.com", EmailVerified: upstreamtest.Bool(true),
					Extra: tenMinutesAgo}
				hc := siBrowser(t)
				f, back, _ := signIn(t, hc, ended)
				d.tokens(t, f, back)
				for _, tc := range []struct {
					who  upstreamtest.Token
					code string // the second step's, for old (TOTP)
				}{{ended, ""}, {old, totpAt(t, oldSecret, time.Now().Add(30*time.Second))}} {
					u := siUser(t, d.siDeployment, tc.who.Email)
					if err := d.in.App.Tokens.EndUserSessions(context.Background(), u.ID); err != nil {
						t.Fatal(err)
					}
					hc := siBrowser(t)
					_, back, _ := signIn(t, hc, tc.who)
					if tc.code != "" {
						if !siMFAToken.MatchString(back.body) {
							t.Fatalf("no second step: %d\n%s", back.StatusCode, back.body)
						}
						back = back.submit(t, hc, url.Values{"code": {tc.code}, "mfa_action": {"verify"}})
					}
					if back.StatusCode != http.StatusForbidden || !strings.Contains(back.body, "Sign in there again") || d.sessionCookie(t, hc) {
						t.Fatalf("%s: a provider sign-in from before every session ended: %d %s\n%s", tc.who.Email, back.StatusCode,
							back.Header.Get("Location"), back.body)
					}
					if ev := d.lastEvent(t, "login.failed"); ev.TargetID != u.ID || ev.Details["reason"] != "sessions_ended" ||
						ev.Details["method"] != "upstream" {
						t.Fatalf("login.failed = %+v", ev)
					}
				}
				again := ended
				again.Extra = map[string]any{"auth_time": time.Now().Unix()}
				hc = siBrowser(t)
				f, back, _ = signIn(t, hc, again)
				d.tokens(t, f, back)
			})
		})
	}
}

// TestConsoleReauthNotMetByAProvidersOldSession: on PostgreSQL+Redis and
// SQLite, an operator who signs in to the console through the provider,
// whose own session there is two hours old, has not signed in within
// accounts.ReauthWindow: an action that mints a credential answers
// "Confirm it is you" and changes nothing. Its "Sign in again" asks the
// provider for a fresh login (prompt=login), after which the action is
// done. Before (found by a review), the silent provider sign-in was
// stamped now and passed the console's check.
func TestConsoleReauthNotMetByAProvidersOldSession(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newFedSignIn(t, b)
			fx := st.NewFixtures(t, d.in.App.Core)
			root := fx.User(t, "root@example.com", siPassword, "super_admin")
			who := upstreamtest.Token{Subject: "sub-root", Email: root.Email, EmailVerified: upstreamtest.Bool(true)}
			// Linked once through the confirm-link page (the password).
			hc := siBrowser(t)
			f, cb := d.viaTestProvider(t, hc, who)
			d.tokens(t, f, siGet(t, hc, cb).submit(t, hc, url.Values{"password": {siPassword}}))
			if len(d.linked(t, root.ID)) != 1 {
				t.Fatal("the operator's identity was not linked")
			}

			// viaProvider follows the console's sign-in from start through the
			// provider (who) to the console.
			viaProvider := func(t *testing.T, hc *http.Client, start string, who upstreamtest.Token) url.Values {
				t.Helper()
				login := follow(t, hc, siGet(t, hc, start))
				d.op.NextLogin(who)
				to := pressProvider(t, hc, login, "corp")
				asked, _ := url.Parse(to)
				back := siGet(t, hc, d.in.Config.Issuer+"/login/corp/callback?"+browseTestProvider(t, to).Encode())
				if back.StatusCode != http.StatusSeeOther || !strings.HasPrefix(back.Header.Get("Location"), console.CallbackURL(d.in.Config.Issuer)+"?") {
					t.Fatalf("after the provider: %d to %q\n%s", back.StatusCode, back.Header.Get("Location"), back.body)
				}
				follow(t, hc, back)
				return asked.Query()
			}
			createMachine := func(hc *http.Client, name string) siPage {
				return siGet(t, hc, d.in.URL+"/console/users").form(t, "create_machine").submit(t, hc,
					url.Values{"name": {name}, "role": {"user"}})
			}

			old := who
			old.Extra = map[string]any{"auth_time": time.Now().Add(-2 * time.Hour).Unix()}
			hc = siBrowser(t)
			viaProvider(t, hc, d.in.URL+"/console/users", old)
			p := createMachine(hc, "stale-robot")
			if p.StatusCode != http.StatusForbidden || !strings.Contains(p.body, "Confirm it is you") {
				t.Fatalf("console action after a silent provider sign-in of a 2-hour-old session: %d, want 403 Confirm it is you\n%s", p.StatusCode, p.body)
			}
			if n := auditCount(t, d.in, "user.created", ""); n != 0 {
				t.Fatalf("%d users created by a stale sign-in", n)
			}

			fresh := who
			fresh.Extra = map[string]any{"auth_time": time.Now().Unix()}
			if asked := viaProvider(t, hc, d.in.URL+"/console/login?reauth=1&next=%2Fconsole%2Fusers", fresh); asked.Get("prompt") != "login" {
				t.Fatalf("the console's sign-in again did not ask the provider for a login: %v", asked)
			}
			if p := createMachine(hc, "fresh-robot"); p.StatusCode != http.StatusCreated {
				t.Fatalf("console action after signing in again at the provider: %d\n%s", p.StatusCode, p.body)
			}
		})
	}
}

// TestUpstreamSecondStepAtTheTokenEndpointIsFederated: on
// PostgreSQL+Redis and SQLite, the second step of a sign-in through the
// provider, finished with the MFA grant at the token endpoint (the
// mfa_token copied from the page), describes the login the provider began:
// amr ["fed","otp","mfa"], never "pwd" (no password was given), and the
// provider's auth_time. Before (found by a review), the mfa_token's login
// was taken for a password login: amr ["pwd","otp","mfa"].
func TestUpstreamSecondStepAtTheTokenEndpointIsFederated(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newFedSignIn(t, b)
			fx := st.NewFixtures(t, d.in.App.Core)
			feSecret := fx.Client(t, clients.Spec{ID: "front", Name: "Front end", FirstParty: true,
				Grants: []string{"authorization_code", "refresh_token", "password"}, RedirectURIs: []string{siCallback}})
			who := upstreamtest.Token{Subject: "sub-carol", Email: "carol@example.com", EmailVerified: upstreamtest.Bool(true)}
			hc := siBrowser(t)
			f, cb := d.viaTestProvider(t, hc, who)
			d.tokens(t, f, siGet(t, hc, cb))
			secret, _ := st.EnrolTOTPPreviousStep(t, d.in.App.MFA, siUser(t, d.siDeployment, "carol@example.com"))

			signedInAt := time.Now().Add(-time.Hour)
			who.Extra = map[string]any{"auth_time": signedInAt.Unix()}
			hc = siBrowser(t)
			conf := d.oauth("front", feSecret, "openid")
			page := siGet(t, hc, conf.AuthCodeURL("st-fe", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
			d.op.NextLogin(who)
			q := browseTestProvider(t, pressProvider(t, hc, page, "corp"))
			step := siGet(t, hc, d.in.Config.Issuer+"/login/corp/callback?"+q.Encode())
			m := siMFAToken.FindStringSubmatch(step.body)
			if m == nil {
				t.Fatalf("no second step: %d\n%s", step.StatusCode, step.body)
			}
			resp, err := http.PostForm(d.in.Config.Issuer+"/oauth2/token", url.Values{
				"grant_type": {"urn:portcullis:params:oauth:grant-type:mfa-otp"}, "mfa_token": {unescapeHTML(m[1])},
				"otp": {totpAt(t, secret, time.Now().Add(30*time.Second))}, "client_id": {"front"}, "client_secret": {feSecret}})
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var tr struct {
				IDToken string `json:"id_token"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("MFA grant: %d, %v", resp.StatusCode, err)
			}
			idc := decodeClaims(t, tr.IDToken)
			if amr := amrOf(idc); !slices.Equal(amr, []string{"fed", "otp", "mfa"}) {
				t.Fatalf("a sign-in through the provider finished at the token endpoint: amr %v, want [fed otp mfa] (no password was given)", amr)
			}
			if at, _ := idc["auth_time"].(float64); int64(at) > signedInAt.Unix()+1 {
				t.Fatalf("auth_time %d; the provider's sign-in was at %d", int64(at), signedInAt.Unix())
			}
		})
	}
}

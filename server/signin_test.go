package server_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// Browser sign-in over HTTP: a relying party built from golang.org/x/oauth2
// (PKCE S256) and coreos/go-oidc drives the code flow the way the
// contract's automation hooks describe: a cookie-keeping client that
// submits the forms as served.

const (
	siEmail    = "ann@example.com"
	siPassword = "correct horse battery staple"
	// siCallback is the relying parties' redirect URI; the tests never
	// follow it, they read the 303's Location (or the form_post document).
	siCallback = "https://rp.example/callback"
	// siPostLogout is "first" and "third"'s registered post-logout URI.
	siPostLogout = "https://rp.example/post_logout_redirect"
)

// siDeployment is a running instance with a user and three code-flow
// clients: "third" (confidential, third-party: consent), "first"
// (confidential, first-party: no consent) and "spa" (public, PKCE).
type siDeployment struct {
	env         st.Env // more instances of the deployment start from it
	in          *st.Instance
	provider    *oidc.Provider
	thirdSecret string
	firstSecret string
}

func newSignIn(t *testing.T, backend st.Backend, settings ...map[string]string) *siDeployment {
	t.Helper()
	env := st.NewEnv(t, backend)
	for _, m := range settings {
		for k, v := range m {
			env[k] = v
		}
	}
	in := st.Start(t, env)
	fx := st.NewFixtures(t, in.App.Core)
	fx.User(t, siEmail, siPassword, "user")
	code := []string{"authorization_code", "refresh_token"}
	d := &siDeployment{env: env, in: in}
	d.thirdSecret = fx.Client(t, clients.Spec{ID: "third", Name: "Third App", Grants: code, RedirectURIs: []string{siCallback},
		PostLogoutRedirectURIs: []string{siPostLogout}, LogoURI: "https://rp.example/logo.png"})
	d.firstSecret = fx.Client(t, clients.Spec{ID: "first", Name: "First App", Grants: code, RedirectURIs: []string{siCallback},
		PostLogoutRedirectURIs: []string{siPostLogout}, FirstParty: true})
	fx.Client(t, clients.Spec{ID: "spa", Name: "SPA", Public: true, Grants: code, RedirectURIs: []string{siCallback}})
	p, err := oidc.NewProvider(context.Background(), in.Config.Issuer)
	if err != nil {
		t.Fatalf("go-oidc discovery: %v", err)
	}
	d.provider = p
	return d
}

// oauth is the x/oauth2 configuration of a client.
func (d *siDeployment) oauth(id, secret string, scopes ...string) *oauth2.Config {
	return &oauth2.Config{ClientID: id, ClientSecret: secret, Endpoint: d.provider.Endpoint(), RedirectURL: siCallback,
		Scopes: scopes}
}

// siBrowser keeps cookies and never follows redirects.
func siBrowser(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

type siPage struct {
	*http.Response
	body string
}

// siDo sends req and checks the answer against the OpenAPI description.
func siDo(t *testing.T, hc *http.Client, req *http.Request, body []byte) siPage {
	t.Helper()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CheckOpenAPI(req, body, resp, b); err != nil {
		t.Errorf("%s %s (%d) does not match the OpenAPI description: %v", req.Method, req.URL.Path, resp.StatusCode, err)
	}
	return siPage{resp, string(b)}
}

func siGet(t *testing.T, hc *http.Client, u string) siPage {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return siDo(t, hc, req, nil)
}

var (
	siHidden = regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`)
	siAction = regexp.MustCompile(`<form method="post" action="([^"]+)"`)
)

// submit posts the page's form as served (its hidden fields, then fields),
// to the form's action, like a browser.
func (p siPage) submit(t *testing.T, hc *http.Client, fields url.Values) siPage {
	t.Helper()
	m := siAction.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no form on the page (%d):\n%s", p.StatusCode, p.body)
	}
	form := p.hiddenFields()
	for k, v := range fields {
		form[k] = v
	}
	action, err := p.Request.URL.Parse(unescapeHTML(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(form.Encode())
	req, err := http.NewRequest(http.MethodPost, action.String(), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", p.Request.URL.Scheme+"://"+p.Request.URL.Host)
	return siDo(t, hc, req, body)
}

// hiddenFields are the page's hidden form fields, unescaped.
func (p siPage) hiddenFields() url.Values {
	form := url.Values{}
	for _, h := range siHidden.FindAllStringSubmatch(p.body, -1) {
		form.Set(h[1], unescapeHTML(h[2]))
	}
	return form
}

func unescapeHTML(s string) string {
	return strings.NewReplacer("&amp;", "&", "&#43;", "+", "&#39;", "'", "&#34;", `"`, "&lt;", "<", "&gt;", ">").Replace(s)
}

// callback is the authorization response in a 303's Location: it must go to
// the registered redirect URI and carry iss (RFC 9207).
func (d *siDeployment) callback(t *testing.T, p siPage) url.Values {
	t.Helper()
	if p.StatusCode != http.StatusSeeOther {
		t.Fatalf("status %d, want 303 to the client:\n%s", p.StatusCode, p.body)
	}
	loc := p.Header.Get("Location")
	if !strings.HasPrefix(loc, siCallback+"?") {
		t.Fatalf("Location %q is not the redirect URI", loc)
	}
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if q.Get("iss") != d.in.Config.Issuer {
		t.Fatalf("iss %q, want %q", q.Get("iss"), d.in.Config.Issuer)
	}
	return q
}

// TestBrowserSignInCodeFlow: login, consent for a third-party client, the
// callback with code, state (byte for byte) and iss, the token exchange
// with the PKCE verifier, the id token verified by go-oidc with its nonce,
// at_hash, sid, amr and auth_time; then single sign-on: a second
// (first-party) client gets a code with no page at all.
func TestBrowserSignInCodeFlow(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSignIn(t, b)
			ctx := context.Background()
			hc := siBrowser(t)
			conf := d.oauth("third", d.thirdSecret, oidc.ScopeOpenID, "email")
			verifier, nonce := oauth2.GenerateVerifier(), "n-"+oauth2.GenerateVerifier()[:16]
			state := "s t/a+t%e~\\\"<>&=?" + strings.Repeat("x", 100) // byte for byte through the flow (any VSCHAR)
			start := time.Now().Add(-time.Second)

			login := siGet(t, hc, conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce)))
			if login.StatusCode != http.StatusOK || !strings.Contains(login.body, `name="username"`) {
				t.Fatalf("authorize: %d\n%s", login.StatusCode, login.body)
			}
			csp := login.Header.Get("Content-Security-Policy")
			if !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "form-action 'self' https://rp.example;") {
				t.Fatalf("login page CSP %q", csp)
			}
			wrong := login.submit(t, hc, url.Values{"username": {siEmail}, "password": {"not the password"}})
			if wrong.StatusCode != http.StatusBadRequest || !strings.Contains(wrong.body, "incorrect") {
				t.Fatalf("wrong password: %d", wrong.StatusCode)
			}
			consent := wrong.submit(t, hc, url.Values{"username": {siEmail}, "password": {siPassword}})
			if consent.StatusCode != http.StatusOK || !strings.Contains(consent.body, `name="decision" value="allow"`) ||
				!strings.Contains(consent.body, "Third App") {
				t.Fatalf("after login: %d, want the consent page\n%s", consent.StatusCode, consent.body)
			}
			var session *http.Cookie
			for _, c := range consent.Cookies() {
				if c.Name == "portcullis-session" {
					session = c
				}
			}
			if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteLaxMode || session.Path != "/" || session.MaxAge != 0 {
				t.Fatalf("session cookie %+v (plain HTTP: portcullis-session, HttpOnly, Lax, Path=/, a browser-session cookie)", session)
			}
			q := d.callback(t, consent.submit(t, hc, url.Values{"decision": {"allow"}}))
			if q.Get("state") != state || q.Get("code") == "" {
				t.Fatalf("callback %v; state must come back byte for byte", q)
			}
			tok, err := conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatalf("x/oauth2 exchange: %v", err)
			}
			raw, _ := tok.Extra("id_token").(string)
			idt, err := d.provider.Verifier(&oidc.Config{ClientID: "third"}).Verify(ctx, raw)
			if err != nil {
				t.Fatalf("go-oidc refused the id token: %v", err)
			}
			if idt.Nonce != nonce {
				t.Fatalf("nonce %q, want %q", idt.Nonce, nonce)
			}
			if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
				t.Fatalf("at_hash: %v", err)
			}
			var claims struct {
				SID      string   `json:"sid"`
				AMR      []string `json:"amr"`
				AZP      string   `json:"azp"`
				AuthTime int64    `json:"auth_time"`
			}
			if err := idt.Claims(&claims); err != nil {
				t.Fatal(err)
			}
			if claims.SID == "" || !slices.Equal(claims.AMR, []string{"pwd"}) || claims.AZP != "third" ||
				time.Unix(claims.AuthTime, 0).Before(start.Truncate(time.Second)) {
				t.Fatalf("id token claims %+v", claims)
			}
			// The code is single-use.
			if _, err := conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier)); err == nil ||
				!strings.Contains(err.Error(), "invalid_grant") {
				t.Fatalf("second redemption: %v, want invalid_grant", err)
			}

			// Single sign-on: the first-party client gets its code at once.
			first := d.oauth("first", d.firstSecret, oidc.ScopeOpenID)
			v2 := oauth2.GenerateVerifier()
			q2 := d.callback(t, siGet(t, hc, first.AuthCodeURL("s2", oauth2.S256ChallengeOption(v2))))
			tok2, err := first.Exchange(ctx, q2.Get("code"), oauth2.VerifierOption(v2))
			if err != nil {
				t.Fatalf("SSO exchange: %v", err)
			}
			idt2, err := d.provider.Verifier(&oidc.Config{ClientID: "first"}).Verify(ctx, tok2.Extra("id_token").(string))
			if err != nil {
				t.Fatal(err)
			}
			var c2 struct {
				AuthTime int64  `json:"auth_time"`
				SID      string `json:"sid"`
			}
			if err := idt2.Claims(&c2); err != nil || idt2.Subject != idt.Subject || c2.AuthTime != claims.AuthTime {
				t.Fatalf("SSO id token: sub %q (want %q), auth_time %d (want the login's %d)", idt2.Subject, idt.Subject, c2.AuthTime, claims.AuthTime)
			}
			// The remembered consent covers the third-party client's next request.
			v3 := oauth2.GenerateVerifier()
			if q3 := d.callback(t, siGet(t, hc, conf.AuthCodeURL("s3", oauth2.S256ChallengeOption(v3), oidc.Nonce("n3")))); q3.Get("code") == "" {
				t.Fatalf("remembered consent: %v", q3)
			}

			// prompt=select_account with a third-party client not yet
			// consented to: the chooser, then consent, then the code; never the
			// chooser twice.
			spa := d.oauth("spa", "", oidc.ScopeOpenID)
			v5 := oauth2.GenerateVerifier()
			chooser := siGet(t, hc, spa.AuthCodeURL("s5", oauth2.S256ChallengeOption(v5),
				oauth2.SetAuthURLParam("prompt", "select_account")))
			if chooser.StatusCode != http.StatusOK || !strings.Contains(chooser.body, "Continue as "+siEmail) {
				t.Fatalf("select_account: %d\n%s", chooser.StatusCode, chooser.body)
			}
			asked := chooser.submit(t, hc, url.Values{"decision": {"continue"}})
			if asked.StatusCode != http.StatusOK || !strings.Contains(asked.body, `value="allow"`) {
				t.Fatalf("after the chooser: %d, want the consent page\n%s", asked.StatusCode, asked.body)
			}
			if q5 := d.callback(t, asked.submit(t, hc, url.Values{"decision": {"allow"}})); q5.Get("code") == "" || q5.Get("state") != "s5" {
				t.Fatalf("after consent: %v", q5)
			}

			// Every code's grant is in the browser session, oldest first:
			// the sids of the tokens, each client once.
			live, err := d.in.App.BrowserSessions.ListBrowserSessions(ctx, idt.Subject, time.Now())
			if err != nil || len(live) != 1 {
				t.Fatalf("browser sessions of %s: %+v, %v; want one", idt.Subject, live, err)
			}
			var grantClients []string
			for _, g := range live[0].Grants {
				grantClients = append(grantClients, g.ClientID)
			}
			if gs := live[0].Grants; !slices.Equal(grantClients, []string{"third", "first", "third", "spa"}) ||
				gs[0].SID != claims.SID || gs[1].SID != c2.SID || gs[0].Offline || gs[1].Offline ||
				!slices.Equal(live[0].ClientIDs, []string{"third", "first", "spa"}) {
				t.Fatalf("session grants %+v, clients %v; want the four codes' grants (sids %s, %s, …)", gs, live[0].ClientIDs,
					claims.SID, c2.SID)
			}

			// Nothing secret reached the log.
			logs := d.in.Logs.String()
			if !strings.Contains(logs, `"msg":"request"`) {
				t.Fatal("no request log lines captured; the check would prove nothing")
			}
			for name, secret := range map[string]string{"password": siPassword, "code": q.Get("code"), "cookie": session.Value,
				"verifier": verifier, "client secret": d.thirdSecret, "id token": raw, "access token": tok.AccessToken} {
				if strings.Contains(logs, secret) {
					t.Fatalf("the server log holds the %s", name)
				}
			}
		})
	}
}

// TestBrowserSignInAnswers: how /oauth2/authorize answers, table-driven on
// both backends: prompt=none without a session is login_required at the
// redirect URI; an unregistered redirect URI, an unknown client or a
// repeated parameter is the HTML error page (400) and never a redirect;
// errors after the redirect URI is known go to it with state and iss;
// form_post answers a self-submitting document under a hash-only CSP; a
// POSTed request continues at /login.
func TestBrowserSignInAnswers(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSignIn(t, b)
			auth := d.provider.Endpoint().AuthURL
			challenge := oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())
			base := func(extra ...string) string {
				q := url.Values{"client_id": {"third"}, "redirect_uri": {siCallback}, "response_type": {"code"},
					"scope": {"openid"}, "state": {"st 1"}, "code_challenge": {challenge}, "code_challenge_method": {"S256"}}
				for i := 0; i+1 < len(extra); i += 2 {
					if extra[i+1] == "" {
						q.Del(extra[i])
					} else {
						q.Set(extra[i], extra[i+1])
					}
				}
				return auth + "?" + q.Encode()
			}
			for _, tc := range []struct {
				name      string
				url       string
				status    int
				wantError string // at the redirect URI; "" with 303: a code
			}{
				{"fail/prompt_none_without_session", base("prompt", "none"), http.StatusSeeOther, "login_required"},
				{"fail/unregistered_redirect_uri", base("redirect_uri", "https://rp.example/other"), http.StatusBadRequest, ""},
				{"fail/redirect_uri_trailing_slash", base("redirect_uri", siCallback+"/"), http.StatusBadRequest, ""},
				{"fail/unknown_client", base("client_id", "nobody"), http.StatusBadRequest, ""},
				{"fail/repeated_parameter", base() + "&scope=openid", http.StatusBadRequest, ""},
				{"fail/response_type_token", base("response_type", "token"), http.StatusSeeOther, "unsupported_response_type"},
				{"fail/plain_pkce", base("code_challenge_method", "plain"), http.StatusSeeOther, "invalid_request"},
				{"fail/unknown_scope", base("scope", "openid nothing:here"), http.StatusSeeOther, "invalid_scope"},
				{"ok/login_page", base(), http.StatusOK, ""},
			} {
				t.Run(tc.name, func(t *testing.T) {
					p := siGet(t, siBrowser(t), tc.url)
					if p.StatusCode != tc.status {
						t.Fatalf("status %d, want %d\n%s", p.StatusCode, tc.status, p.body)
					}
					switch tc.status {
					case http.StatusBadRequest:
						if p.Header.Get("Location") != "" || !strings.HasPrefix(p.Header.Get("Content-Type"), "text/html") ||
							strings.Contains(p.body, "rp.example") {
							t.Fatalf("error page must not redirect nor name the client's URIs: %v\n%s", p.Header, p.body)
						}
					case http.StatusSeeOther:
						q := d.callback(t, p)
						if q.Get("error") != tc.wantError || q.Get("state") != "st 1" || q.Get("code") != "" {
							t.Fatalf("callback %v, want error %s with state", q, tc.wantError)
						}
					}
				})
			}
			t.Run("fail/hostile_input", func(t *testing.T) {
				hc := siBrowser(t)
				login := siGet(t, hc, base())
				for _, inj := range injections {
					for _, u := range []string{
						base("client_id", inj), base("redirect_uri", inj), base("state", inj), base("scope", inj),
						base("prompt", inj), base("max_age", inj), base("id_token_hint", inj), base("nonce", inj),
						base("code_challenge", inj), base("response_mode", inj), base("login_hint", inj),
						d.in.URL + "/login?request=" + url.QueryEscape(inj), d.in.URL + "/consent?request=" + url.QueryEscape(inj),
					} {
						p := siGet(t, hc, u)
						if p.StatusCode >= 500 {
							t.Fatalf("GET %.120q: %d", u, p.StatusCode)
						}
						if loc := p.Header.Get("Location"); loc != "" && !strings.HasPrefix(loc, siCallback+"?") {
							t.Fatalf("GET %.120q redirected to %.120q", u, loc)
						}
					}
					for _, f := range []url.Values{{"request": {inj}}, {"username": {inj}, "password": {inj}},
						{"step": {inj}}, {"remember": {inj}, "username": {"nobody@example.com"}, "password": {inj}}} {
						p := login.submit(t, hc, f)
						if p.StatusCode >= 500 {
							t.Fatalf("POST /login %.80q: %d", f, p.StatusCode)
						}
						for _, c := range p.Cookies() {
							if c.Name == "portcullis-session" && c.Value != "" {
								t.Fatalf("POST /login %.80q started a session", f)
							}
						}
					}
				}
			})
			t.Run("ok/form_post", func(t *testing.T) {
				hc := siBrowser(t)
				login := siGet(t, hc, base("response_mode", "form_post", "scope", "openid", "client_id", "first"))
				doc := login.submit(t, hc, url.Values{"username": {siEmail}, "password": {siPassword}})
				csp := doc.Header.Get("Content-Security-Policy")
				if doc.StatusCode != http.StatusOK || !strings.Contains(doc.body, `action="`+siCallback+`"`) ||
					!strings.Contains(doc.body, `name="code"`) || !strings.Contains(doc.body, `name="iss" value="`+d.in.Config.Issuer) ||
					!strings.Contains(doc.body, `name="state" value="st 1"`) || !strings.Contains(doc.body, "<noscript>") {
					t.Fatalf("form_post: %d\n%s", doc.StatusCode, doc.body)
				}
				if !strings.Contains(csp, "script-src 'sha256-") || strings.Contains(csp, "unsafe") ||
					!strings.Contains(csp, "form-action https://rp.example") || doc.Header.Get("Location") != "" {
					t.Fatalf("form_post CSP %q", csp)
				}
			})
			t.Run("ok/post_continues_at_login", func(t *testing.T) {
				hc := siBrowser(t)
				u, _ := url.Parse(base())
				body := []byte(u.RawQuery)
				req, _ := http.NewRequest(http.MethodPost, auth, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				p := siDo(t, hc, req, body)
				loc := p.Header.Get("Location")
				if p.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/login?request=") {
					t.Fatalf("%d %q", p.StatusCode, loc)
				}
				page := siGet(t, hc, d.in.URL+loc)
				if page.StatusCode != http.StatusOK || !strings.Contains(page.body, `name="password"`) {
					t.Fatalf("resume: %d", page.StatusCode)
				}
			})
		})
	}
}

// TestBrowserSignInSessions: two tabs signing in at once both complete;
// a temporary password starts the session, shows the change-password step
// and then the code; the login page's audit events say method "page";
// discovery advertises the code flow and nothing that is not served.
func TestBrowserSignInSessions(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSignIn(t, b)
			ctx := context.Background()
			first := d.oauth("first", d.firstSecret, oidc.ScopeOpenID)
			t.Run("ok/two_tabs", func(t *testing.T) {
				hc := siBrowser(t)
				va, vb := oauth2.GenerateVerifier(), oauth2.GenerateVerifier()
				tabA := siGet(t, hc, first.AuthCodeURL("tab-a", oauth2.S256ChallengeOption(va)))
				tabB := siGet(t, hc, first.AuthCodeURL("tab-b", oauth2.S256ChallengeOption(vb)))
				qa := d.callback(t, tabA.submit(t, hc, url.Values{"username": {siEmail}, "password": {siPassword}}))
				qb := d.callback(t, tabB.submit(t, hc, url.Values{"username": {siEmail}, "password": {siPassword}}))
				if qa.Get("state") != "tab-a" || qb.Get("state") != "tab-b" || qa.Get("code") == "" || qb.Get("code") == "" {
					t.Fatalf("tab A %v, tab B %v", qa, qb)
				}
				for _, c := range []struct{ code, v string }{{qa.Get("code"), va}, {qb.Get("code"), vb}} {
					if _, err := first.Exchange(ctx, c.code, oauth2.VerifierOption(c.v)); err != nil {
						t.Fatalf("exchange: %v", err)
					}
				}
				// Tab A again (the back button): never a second code.
				again := tabA.submit(t, hc, url.Values{"username": {siEmail}, "password": {siPassword}})
				if again.StatusCode == http.StatusSeeOther && strings.Contains(again.Header.Get("Location"), "code=") {
					t.Fatalf("a completed request answered a second code: %q", again.Header.Get("Location"))
				}
			})
			t.Run("ok/consent_denied_and_asked_again", func(t *testing.T) {
				hc := siBrowser(t)
				third := d.oauth("third", d.thirdSecret, oidc.ScopeOpenID)
				login := siGet(t, hc, third.AuthCodeURL("deny-me", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
				consent := login.submit(t, hc, url.Values{"username": {siEmail}, "password": {siPassword}})
				q := d.callback(t, consent.submit(t, hc, url.Values{"decision": {"deny"}}))
				if q.Get("error") != "access_denied" || q.Get("state") != "deny-me" || q.Get("code") != "" {
					t.Fatalf("deny: %v", q)
				}
				// Nothing was remembered: the next request asks again; with
				// prompt=none it is consent_required.
				again := siGet(t, hc, third.AuthCodeURL("again", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
				if again.StatusCode != http.StatusOK || !strings.Contains(again.body, `value="allow"`) {
					t.Fatalf("after a denial: %d, want the consent page", again.StatusCode)
				}
				none := d.callback(t, siGet(t, hc, third.AuthCodeURL("quiet", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()),
					oauth2.SetAuthURLParam("prompt", "none"))))
				if none.Get("error") != "consent_required" || none.Get("state") != "quiet" {
					t.Fatalf("prompt=none without consent: %v", none)
				}
			})
			t.Run("ok/another_user_ends_the_old_session", func(t *testing.T) {
				st.NewFixtures(t, d.in.App.Core).User(t, "bob@example.com", "bob's own passphrase 2", "user")
				hc := siBrowser(t)
				login := siGet(t, hc, first.AuthCodeURL("a", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
				signedIn := login.submit(t, hc, url.Values{"username": {siEmail}, "password": {siPassword}})
				d.callback(t, signedIn)
				var annCookie *http.Cookie
				for _, c := range signedIn.Cookies() {
					if c.Name == "portcullis-session" {
						annCookie = c
					}
				}
				chooser := siGet(t, hc, first.AuthCodeURL("b", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()),
					oauth2.SetAuthURLParam("prompt", "select_account")))
				other := chooser.submit(t, hc, url.Values{"decision": {"switch"}})
				if other.StatusCode != http.StatusOK || !strings.Contains(other.body, `name="password"`) {
					t.Fatalf("use another account: %d", other.StatusCode)
				}
				if q := d.callback(t, other.submit(t, hc, url.Values{"username": {"bob@example.com"}, "password": {"bob's own passphrase 2"}})); q.Get("state") != "b" {
					t.Fatalf("bob: %v", q)
				}
				// Ann's cookie, replayed from another browser, opens nothing.
				old := siBrowser(t)
				base, _ := url.Parse(d.in.URL)
				old.Jar.SetCookies(base, []*http.Cookie{{Name: annCookie.Name, Value: annCookie.Value}})
				q := d.callback(t, siGet(t, old, first.AuthCodeURL("c", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()),
					oauth2.SetAuthURLParam("prompt", "none"))))
				if q.Get("error") != "login_required" {
					t.Fatalf("the old session still works: %v", q)
				}
			})
			t.Run("ok/temporary_password", func(t *testing.T) {
				fx := st.NewFixtures(t, d.in.App.Core)
				u := fx.User(t, "tmp@example.com", "a temporary password 1", "user")
				if _, err := d.in.App.Core.Store.UpdateUser(ctx, u.ID, func(u *store.User) error {
					u.MustChangePassword = true
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				hc := siBrowser(t)
				v := oauth2.GenerateVerifier()
				login := siGet(t, hc, first.AuthCodeURL("tmp", oauth2.S256ChallengeOption(v)))
				step := login.submit(t, hc, url.Values{"username": {"tmp@example.com"}, "password": {"a temporary password 1"}})
				if step.StatusCode != http.StatusOK || !strings.Contains(step.body, `name="step" value="change_password"`) {
					t.Fatalf("after a temporary password: %d, want the change-password step\n%s", step.StatusCode, step.body)
				}
				q := d.callback(t, step.submit(t, hc, url.Values{"current_password": {"a temporary password 1"},
					"password": {"my own new passphrase 7"}, "confirm_password": {"my own new passphrase 7"}}))
				tok, err := first.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(v))
				if err != nil || q.Get("state") != "tmp" {
					t.Fatalf("exchange after the change: %v (%v)", err, q)
				}
				if _, err := d.provider.Verifier(&oidc.Config{ClientID: "first"}).Verify(ctx, tok.Extra("id_token").(string)); err != nil {
					t.Fatal(err)
				}
			})
			t.Run("ok/audit_method_page", func(t *testing.T) {
				for _, action := range []string{"login.succeeded", "session.started"} {
					page, err := d.in.App.Core.Store.ListAudit(ctx, store.AuditFilter{Action: action, Limit: 100})
					if err != nil {
						t.Fatal(err)
					}
					if len(page.Items) == 0 || page.Items[0].Details["method"] != "page" || page.Items[0].Details["sid"] == "" {
						t.Fatalf("%s events %+v", action, page.Items)
					}
				}
				hc := siBrowser(t)
				login := siGet(t, hc, first.AuthCodeURL("f", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
				login.submit(t, hc, url.Values{"username": {"nobody@example.com"}, "password": {"whatever it is"}})
				page, err := d.in.App.Core.Store.ListAudit(ctx, store.AuditFilter{Action: "login.failed", Limit: 10})
				if err != nil || len(page.Items) == 0 || page.Items[0].Details["method"] != "page" || page.Items[0].ClientID != "first" {
					t.Fatalf("login.failed events %+v, %v", page.Items, err)
				}
			})
			t.Run("ok/discovery", func(t *testing.T) {
				var m map[string]any
				if err := d.provider.Claims(&m); err != nil {
					t.Fatal(err)
				}
				iss := d.in.Config.Issuer
				want := map[string]string{
					"authorization_endpoint":                         iss + "/oauth2/authorize",
					"response_types_supported":                       "[code]",
					"response_modes_supported":                       "[query form_post]",
					"code_challenge_methods_supported":               "[S256]",
					"prompt_values_supported":                        "[none login consent select_account]",
					"authorization_response_iss_parameter_supported": "true",
					"request_parameter_supported":                    "false",
					"request_uri_parameter_supported":                "false",
					"claims_parameter_supported":                     "false",
					"pushed_authorization_request_endpoint":          iss + "/oauth2/par",
					"require_pushed_authorization_requests":          "false",
				}
				for k, v := range want {
					if got := fmt.Sprint(m[k]); got != v {
						t.Errorf("%s = %s, want %s", k, got, v)
					}
				}
				grants, claims := fmt.Sprint(m["grant_types_supported"]), fmt.Sprint(m["claims_supported"])
				if !strings.Contains(grants, "authorization_code") {
					t.Errorf("grant_types_supported %s", grants)
				}
				if fmt.Sprint(m["acr_values_supported"]) != "[pwd mfa]" {
					t.Errorf("acr_values_supported %v", m["acr_values_supported"])
				}
				for _, c := range []string{"nonce", "auth_time", "at_hash", "sid", "amr", "acr"} {
					if !strings.Contains(claims, c) {
						t.Errorf("claims_supported %s lacks %s", claims, c)
					}
				}
				if m["end_session_endpoint"] != d.in.Config.Issuer+"/oauth2/logout" || m["backchannel_logout_supported"] != true ||
					m["backchannel_logout_session_supported"] != true {
					t.Errorf("logout metadata %v %v %v", m["end_session_endpoint"], m["backchannel_logout_supported"],
						m["backchannel_logout_session_supported"])
				}
			})
		})
	}
}

// TestBrowserSignInSharesTheThrottle: failures on the login page count
// under the password grant's throttle (one check, one throttle): after
// them, the password grant refuses the right password with 429, and so does
// the page; an unknown account is throttled alike.
func TestBrowserSignInSharesTheThrottle(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSignIn(t, b, map[string]string{"PORTCULLIS_LOGIN_FAILURE_LIMIT": "3"})
			pwSecret := st.NewFixtures(t, d.in.App.Core).Client(t, clients.Spec{ID: "pwd"})
			first := d.oauth("first", d.firstSecret, oidc.ScopeOpenID)
			api := d.in.Client(t)
			for _, login := range []string{siEmail, "ghost@example.com"} {
				hc := siBrowser(t)
				page := siGet(t, hc, first.AuthCodeURL("t", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
				for i := 0; i < 3; i++ {
					page = page.submit(t, hc, url.Values{"username": {login}, "password": {"not the password"}})
					if page.StatusCode != http.StatusBadRequest {
						t.Fatalf("%s: failure %d answered %d", login, i+1, page.StatusCode)
					}
				}
				api.PostForm("/oauth2/token", st.PasswordForm(login, siPassword, ""), st.Basic("pwd", pwSecret)).
					ExpectError(http.StatusTooManyRequests, "rate_limited")
				again := page.submit(t, hc, url.Values{"username": {login}, "password": {siPassword}})
				if again.StatusCode != http.StatusTooManyRequests || again.Header.Get("Retry-After") == "" {
					t.Fatalf("%s: the page after the limit answered %d", login, again.StatusCode)
				}
				for _, c := range again.Cookies() {
					if c.Name == "portcullis-session" && c.Value != "" {
						t.Fatalf("%s: a throttled login started a session", login)
					}
				}
			}
		})
	}
}

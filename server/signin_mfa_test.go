package server_test

import (
	"context"
	"net/http"
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
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/mfa"
	"github.com/portcullis-auth/portcullis/server/pages"
	"github.com/portcullis-auth/portcullis/server/ratelimit"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// totpAt is the RFC 6238 code of secret at t (SHA-1, 6 digits, 30 s).
func totpAt(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	code, err := totp.GenerateCodeCustom(secret, at, totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		t.Fatal(err)
	}
	return code
}

func siUser(t *testing.T, d *siDeployment, email string) store.User {
	t.Helper()
	u, err := d.in.App.Core.Store.GetUserByEmail(context.Background(), email)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func sessionCookieOf(p siPage) *http.Cookie {
	for _, c := range p.Cookies() {
		if strings.Contains(c.Name, "portcullis-session") {
			return c
		}
	}
	return nil
}

var siMFAToken = regexp.MustCompile(`name="mfa_token" value="([^"]+)"`)

// TestBrowserSignInMFA: on PostgreSQL+Redis and SQLite, a TOTP user signs
// in with a plain HTTP client through /oauth2/authorize, the login page and
// its second step to the callback; the code's id token (checked by go-oidc)
// has amr [pwd otp mfa], acr mfa and the password step's auth_time. A correct
// password starts no session; a wrong code stays on the step; the step's
// mfa_token cannot be used for another client's pending request; a
// recovery code also finishes a login (amr [pwd mfa]). Fails on the old
// code: the password alone led to the callback with amr [pwd].
func TestBrowserSignInMFA(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSignIn(t, b)
			ctx := context.Background()
			secret, _ := st.EnrolTOTPPreviousStep(t, d.in.App.MFA, siUser(t, d, siEmail))
			hc := siBrowser(t)
			conf := d.oauth("first", d.firstSecret, oidc.ScopeOpenID)
			verifier := oauth2.GenerateVerifier()
			before := time.Now().Add(-time.Second).Truncate(time.Second)

			login := siGet(t, hc, conf.AuthCodeURL("st", oauth2.S256ChallengeOption(verifier)))
			step := login.submit(t, hc, url.Values{"username": {siEmail}, "password": {siPassword}})
			if step.StatusCode != http.StatusOK || !strings.Contains(step.body, `name="step" value="mfa"`) ||
				!strings.Contains(step.body, `autocomplete="one-time-code"`) || sessionCookieOf(step) != nil {
				t.Fatalf("after the password: %d (cookie %v), want the second step:\n%s", step.StatusCode, sessionCookieOf(step), step.body)
			}
			tok := siMFAToken.FindStringSubmatch(step.body)[1]

			// A wrong code stays on the step, with its error and no session.
			good := totpAt(t, secret, time.Now())
			bad := "000000"
			if bad == good {
				bad = "111111"
			}
			wrong := step.submit(t, hc, url.Values{"code": {bad}, "mfa_action": {"verify"}})
			if wrong.StatusCode != http.StatusBadRequest || !strings.Contains(wrong.body, "That code is not right") ||
				!strings.Contains(wrong.body, tok) || sessionCookieOf(wrong) != nil {
				t.Fatalf("wrong code: %d:\n%s", wrong.StatusCode, wrong.body)
			}

			// The step's mfa_token is bound to "first": sent with a pending
			// request of "third" (whose own step it replaces), it is refused
			// and the person is back at the login form.
			third := d.oauth("third", d.thirdSecret, oidc.ScopeOpenID)
			other := siGet(t, hc, third.AuthCodeURL("st3", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
			otherStep := other.submit(t, hc, url.Values{"username": {siEmail}, "password": {siPassword}})
			stolen := otherStep.submit(t, hc, url.Values{"mfa_token": {tok}, "code": {good}, "mfa_action": {"verify"}})
			if stolen.StatusCode != http.StatusBadRequest || !strings.Contains(stolen.body, "Sign in again") ||
				!strings.Contains(stolen.body, `name="password"`) || sessionCookieOf(stolen) != nil {
				t.Fatalf("another client's mfa_token: %d:\n%s", stolen.StatusCode, stolen.body)
			}

			// The right code, sent twice at once (two tabs, a double click):
			// exactly one finishes the login; the session starts and the
			// code comes back to the client.
			form := wrong.hiddenFields()
			form.Set("code", good)
			form.Set("mfa_action", "verify")
			start := make(chan struct{})
			answers := make([]*http.Response, 2)
			var wg sync.WaitGroup
			for i := range answers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					req, _ := http.NewRequest(http.MethodPost, d.in.URL+"/login", strings.NewReader(form.Encode()))
					req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
					<-start
					resp, err := hc.Do(req)
					if err != nil {
						t.Errorf("concurrent submit: %v", err)
						return
					}
					resp.Body.Close()
					answers[i] = resp
				}()
			}
			close(start)
			wg.Wait()
			var won *http.Response
			for _, a := range answers {
				switch {
				case a == nil:
					t.FailNow()
				case a.StatusCode == http.StatusSeeOther && strings.Contains(a.Header.Get("Location"), "code="):
					if won != nil {
						t.Fatal("both concurrent submits of one code finished the login")
					}
					won = a
				case sessionCookieOf(siPage{Response: a}) != nil || a.StatusCode >= 500:
					// The loser is refused (400), or finds the request already
					// answered ("You are signed in"): never a second login.
					t.Fatalf("the losing submit answered %d with a session cookie", a.StatusCode)
				}
			}
			if won == nil {
				t.Fatalf("neither concurrent submit finished the login: %d, %d", answers[0].StatusCode, answers[1].StatusCode)
			}
			q := d.callback(t, siPage{Response: won})
			tr, err := conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatalf("exchange: %v", err)
			}
			idt, err := d.provider.Verifier(&oidc.Config{ClientID: "first"}).Verify(ctx, tr.Extra("id_token").(string))
			if err != nil {
				t.Fatal(err)
			}
			var claims struct {
				AMR      []string `json:"amr"`
				ACR      string   `json:"acr"`
				AuthTime int64    `json:"auth_time"`
			}
			if err := idt.Claims(&claims); err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(claims.AMR, "otp") || !slices.Contains(claims.AMR, "mfa") || claims.AMR[0] != "pwd" || claims.ACR != "mfa" ||
				time.Unix(claims.AuthTime, 0).Before(before) || time.Unix(claims.AuthTime, 0).After(time.Now()) {
				t.Fatalf("id token amr %v acr %q auth_time %d", claims.AMR, claims.ACR, claims.AuthTime)
			}
			// The code of the step cannot be used again, nor its token.
			again := wrong.submit(t, hc, url.Values{"code": {good}, "mfa_action": {"verify"}})
			if loc := again.Header.Get("Location"); strings.Contains(loc, "code=") || sessionCookieOf(again) != nil {
				t.Fatalf("the used step again: %d %q", again.StatusCode, loc)
			}

			if logs := d.in.Logs.String(); !strings.Contains(logs, `"msg":"request"`) {
				t.Fatal("no request log lines captured; the check below would prove nothing")
			} else if strings.Contains(logs, tok) || strings.Contains(logs, good) {
				t.Fatal("the server log holds the mfa_token or the code")
			}

			// A recovery code finishes a login too: amr [pwd mfa].
			codes, err := d.in.App.MFA.RegenerateRecoveryCodes(ctx, siUser(t, d, siEmail).ID, mfa.Meta{})
			if err != nil {
				t.Fatal(err)
			}
			hc2 := siBrowser(t)
			v2 := oauth2.GenerateVerifier()
			step2 := siGet(t, hc2, conf.AuthCodeURL("st2", oauth2.S256ChallengeOption(v2))).
				submit(t, hc2, url.Values{"username": {siEmail}, "password": {siPassword}})
			recovery := step2.submit(t, hc2, url.Values{"mfa_action": {"use_recovery_code"}})
			if recovery.StatusCode != http.StatusOK || !strings.Contains(recovery.body, `<label for="code">Recovery code`) {
				t.Fatalf("recovery code form: %d:\n%s", recovery.StatusCode, recovery.body)
			}
			q2 := d.callback(t, recovery.submit(t, hc2, url.Values{"code": {codes[0]}, "mfa_action": {"verify"}}))
			tr2, err := conf.Exchange(ctx, q2.Get("code"), oauth2.VerifierOption(v2))
			if err != nil {
				t.Fatal(err)
			}
			idt2, err := d.provider.Verifier(&oidc.Config{ClientID: "first"}).Verify(ctx, tr2.Extra("id_token").(string))
			if err != nil {
				t.Fatal(err)
			}
			if err := idt2.Claims(&claims); err != nil || !slices.Equal(claims.AMR, []string{"pwd", "mfa"}) || claims.ACR != "mfa" {
				t.Fatalf("recovery code login amr %v acr %q (%v)", claims.AMR, claims.ACR, err)
			}
		})
	}
}

// mfaPolicy writes the built-in policy with mfa.required_for_level 50
// (admin and super_admin must use a second factor) and returns its path.
func mfaPolicy(t *testing.T) string {
	t.Helper()
	base, err := os.ReadFile("../policy/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(p, append(base, []byte("\nmfa:\n  required_for_level: 50\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

var (
	siSecretField = regexp.MustCompile(`name="secret" value="([A-Z2-7]+)"`)
	siCodes       = regexp.MustCompile(`<li><code>([^<]+)</code></li>`)
	siPrimary     = regexp.MustCompile(`<a class="button" href="([^"]+)"`)
)

// TestBrowserSignInMFAEnrolment: with mfa.required_for_level, an admin
// without a second factor is taken through enrolment on the login page
// after the password (QR code as a data: PNG, allowed by that page's CSP
// only; the secret as text), with no session; a wrong first code shows the
// step again; the right one shows ten recovery codes once; the person
// then signs in again with the password and a code of the new factor and
// reaches the callback with amr [pwd otp mfa]. Fails on the old code: the
// password alone signed the admin in.
func TestBrowserSignInMFAEnrolment(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSignIn(t, b, map[string]string{"PORTCULLIS_POLICY_FILE": mfaPolicy(t)})
			const email, pw = "ada@example.com", "ada's long admin passphrase"
			st.NewFixtures(t, d.in.App.Core).User(t, email, pw, "admin")
			ctx := context.Background()
			hc := siBrowser(t)
			conf := d.oauth("first", d.firstSecret, oidc.ScopeOpenID)
			verifier := oauth2.GenerateVerifier()
			login := siGet(t, hc, conf.AuthCodeURL("st", oauth2.S256ChallengeOption(verifier)))
			enrol := login.submit(t, hc, url.Values{"username": {email}, "password": {pw}})
			if enrol.StatusCode != http.StatusOK || !strings.Contains(enrol.body, "Set up two-step verification") ||
				!strings.Contains(enrol.body, `<img class="qr" src="data:image/png;base64,`) || sessionCookieOf(enrol) != nil {
				t.Fatalf("after the password: %d, want the enrolment step:\n%s", enrol.StatusCode, enrol.body)
			}
			if csp := enrol.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "img-src 'self' data:") ||
				strings.Contains(login.Header.Get("Content-Security-Policy"), "data:") {
				t.Fatalf("CSP of the enrolment step %q (login page %q)", csp, login.Header.Get("Content-Security-Policy"))
			}
			secret := siSecretField.FindStringSubmatch(enrol.body)[1]
			good := totpAt(t, secret, time.Now())
			bad := "000000"
			if bad == good {
				bad = "111111"
			}
			wrong := enrol.submit(t, hc, url.Values{"code": {bad}})
			if wrong.StatusCode != http.StatusBadRequest || !strings.Contains(wrong.body, "That code is not right") ||
				!strings.Contains(wrong.body, `src="data:image/png;base64,`) {
				t.Fatalf("wrong first code: %d:\n%s", wrong.StatusCode, wrong.body)
			}
			done := wrong.submit(t, hc, url.Values{"code": {good}})
			codes := siCodes.FindAllStringSubmatch(done.body, -1)
			if done.StatusCode != http.StatusOK || len(codes) != 10 || sessionCookieOf(done) != nil {
				t.Fatalf("confirmed: %d, %d codes:\n%s", done.StatusCode, len(codes), done.body)
			}
			// Sign in again: the password, then a code of the new factor
			// (the next step's: the enrolment used this one).
			again := siGet(t, hc, d.in.URL+unescapeHTML(siPrimary.FindStringSubmatch(done.body)[1]))
			step := again.submit(t, hc, url.Values{"username": {email}, "password": {pw}})
			if step.StatusCode != http.StatusOK || !strings.Contains(step.body, `name="step" value="mfa"`) {
				t.Fatalf("sign in again: %d:\n%s", step.StatusCode, step.body)
			}
			if reused := step.submit(t, hc, url.Values{"code": {good}}); reused.StatusCode != http.StatusBadRequest {
				t.Fatalf("the enrolment code was accepted to sign in: %d", reused.StatusCode)
			}
			q := d.callback(t, step.submit(t, hc, url.Values{"code": {totpAt(t, secret, time.Now().Add(30*time.Second))}}))
			tr, err := conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatal(err)
			}
			idt, err := d.provider.Verifier(&oidc.Config{ClientID: "first"}).Verify(ctx, tr.Extra("id_token").(string))
			if err != nil {
				t.Fatal(err)
			}
			var claims struct {
				AMR []string `json:"amr"`
				ACR string   `json:"acr"`
			}
			if err := idt.Claims(&claims); err != nil || !slices.Equal(claims.AMR, []string{"pwd", "otp", "mfa"}) || claims.ACR != "mfa" {
				t.Fatalf("amr %v acr %q (%v)", claims.AMR, claims.ACR, err)
			}
		})
	}
}

// form returns the page's form whose hidden action field is action, as
// a page of its own (submit posts that form).
func (p siPage) form(t *testing.T, action string) siPage {
	t.Helper()
	for _, f := range regexp.MustCompile(`(?s)<form .*?</form>`).FindAllString(p.body, -1) {
		if strings.Contains(f, `name="action" value="`+action+`"`) {
			return siPage{Response: p.Response, body: f}
		}
	}
	t.Fatalf("no %s form on the page:\n%s", action, p.body)
	return siPage{}
}

// TestAccountSecurityPage: on PostgreSQL+Redis and SQLite, with the login
// page's browser session, /account/security enrols an authenticator app
// (a wrong first code changes nothing), shows ten recovery codes once,
// makes new ones, refuses a second enrolment while one is on (the account
// service's rule), and turns the app off only with the current password.
// Without the session there is no form; without the CSRF token nothing
// changes.
func TestAccountSecurityPage(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSignIn(t, b)
			ctx := context.Background()
			u := siUser(t, d, siEmail)
			hc := siBrowser(t)
			if p := siGet(t, hc, d.in.URL+"/account/security"); p.StatusCode != http.StatusOK ||
				!strings.Contains(p.body, "You are not signed in") || strings.Contains(p.body, "<form") {
				t.Fatalf("without a session: %d:\n%s", p.StatusCode, p.body)
			}
			conf := d.oauth("first", d.firstSecret, oidc.ScopeOpenID)
			d.callback(t, siGet(t, hc, conf.AuthCodeURL("s", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))).
				submit(t, hc, url.Values{"username": {siEmail}, "password": {siPassword}}))
			status := func() mfa.Status {
				st, err := d.in.App.MFA.Status(ctx, u.ID)
				if err != nil {
					t.Fatal(err)
				}
				return st
			}

			page := siGet(t, hc, d.in.URL+"/account/security")
			if page.StatusCode != http.StatusOK || !strings.Contains(page.body, "Set up an authenticator app") {
				t.Fatalf("security page: %d:\n%s", page.StatusCode, page.body)
			}
			if p := page.form(t, "totp_start").submit(t, hc, url.Values{"csrf_token": {"x"}}); p.StatusCode != http.StatusForbidden {
				t.Fatalf("without the CSRF token: %d", p.StatusCode)
			}
			enrol := page.form(t, "totp_start").submit(t, hc, nil)
			if enrol.StatusCode != http.StatusOK || !strings.Contains(enrol.body, `src="data:image/png;base64,`) ||
				!strings.Contains(enrol.Header.Get("Content-Security-Policy"), "img-src 'self' data:") {
				t.Fatalf("start: %d:\n%s", enrol.StatusCode, enrol.body)
			}
			secret := siSecretField.FindStringSubmatch(enrol.body)[1]
			good := totpAt(t, secret, time.Now())
			bad := "000000"
			if bad == good {
				bad = "111111"
			}
			if p := enrol.submit(t, hc, url.Values{"code": {bad}}); p.StatusCode != http.StatusBadRequest || status().TOTP {
				t.Fatalf("wrong first code: %d", p.StatusCode)
			}
			done := enrol.submit(t, hc, url.Values{"code": {good}})
			if codes := siCodes.FindAllStringSubmatch(done.body, -1); done.StatusCode != http.StatusOK || len(codes) != 10 || !status().TOTP {
				t.Fatalf("confirm: %d, %d codes", done.StatusCode, len(codes))
			}
			page = siGet(t, hc, d.in.URL+"/account/security")
			if !strings.Contains(page.body, "10 unused recovery codes") || strings.Contains(page.body, `value="totp_start"`) {
				t.Fatalf("after enrolment:\n%s", page.body)
			}
			// The session's sign-in was the password alone: new codes take
			// one with the app; the page asks for it and changes nothing.
			asked := page.form(t, "recovery_regenerate").submit(t, hc, nil)
			if asked.StatusCode != http.StatusForbidden || !strings.Contains(asked.body, "Confirm it is you") ||
				siCodes.MatchString(asked.body) || status().RecoveryCodesLeft != 10 {
				t.Fatalf("new codes with a password sign-in: %d:\n%s", asked.StatusCode, asked.body)
			}
			page = signInAgain(t, d, hc, asked, secret)
			regen := page.form(t, "recovery_regenerate").submit(t, hc, nil)
			if codes := siCodes.FindAllStringSubmatch(regen.body, -1); regen.StatusCode != http.StatusOK || len(codes) != 10 {
				t.Fatalf("new recovery codes: %d, %d codes", regen.StatusCode, len(codes))
			}
			// A second enrolment while the app is on (a form from a stale
			// tab): the account service refuses it (it would replace a
			// factor without the password).
			again := siPage{Response: page.Response, body: strings.Replace(page.form(t, "recovery_regenerate").body,
				`value="recovery_regenerate"`, `value="totp_start"`, 1)}.submit(t, hc, nil)
			if again.StatusCode != http.StatusBadRequest || !strings.Contains(again.body, "remove it first") {
				t.Fatalf("a second enrolment: %d:\n%s", again.StatusCode, again.body)
			}

			// Turning it off needs the current password.
			confirm := page.form(t, "totp_remove").submit(t, hc, nil)
			if confirm.StatusCode != http.StatusOK || !strings.Contains(confirm.body, `autocomplete="current-password"`) || !status().TOTP {
				t.Fatalf("confirmation: %d:\n%s", confirm.StatusCode, confirm.body)
			}
			if p := confirm.submit(t, hc, url.Values{"current_password": {"not the password"}}); p.StatusCode != http.StatusBadRequest ||
				!strings.Contains(p.body, "The password is incorrect") || !status().TOTP {
				t.Fatalf("wrong password: %d", p.StatusCode)
			}
			if p := confirm.submit(t, hc, url.Values{"current_password": {siPassword}}); p.StatusCode != http.StatusSeeOther || status().TOTP {
				t.Fatalf("remove: %d (TOTP on: %v)", p.StatusCode, status().TOTP)
			}
		})
	}
}

var siSignInAgain = regexp.MustCompile(`href="([^"]+)">Sign in again<`)

// signInAgain follows the "Sign in again" of a page that asked for a
// recent sign-in: the hosted login with prompt=login through the built-in
// client, the password and, when secret is set, the authenticator app's
// next code; back at /account/security, whose page it returns.
func signInAgain(t *testing.T, d *siDeployment, hc *http.Client, p siPage, secret string) siPage {
	t.Helper()
	m := siSignInAgain.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no sign-in link on the page:\n%s", p.body)
	}
	u, err := p.Request.URL.Parse(unescapeHTML(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	if q := u.Query(); u.Path != "/oauth2/authorize" || q.Get("prompt") != "login" || q.Get("client_id") != "portcullis" ||
		q.Get("redirect_uri") != pages.SecuritySignInURL(d.in.Config.Issuer) {
		t.Fatalf("sign in again at %s", u)
	}
	// prompt=login takes a sign-in in the request's own second for one
	// during it (authorize.Request.SignedInDuring), and the login flow
	// runs on the wall clock: the request comes in the second after the
	// session's sign-in, at most a second from now.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	step := siGet(t, hc, u.String())
	if !strings.Contains(step.body, `name="password"`) {
		t.Fatalf("prompt=login did not ask for the password: %d %s:\n%s", step.StatusCode, step.Header.Get("Location"), step.body)
	}
	step = step.submit(t, hc, url.Values{"username": {siEmail}, "password": {siPassword}})
	if secret != "" {
		step = step.submit(t, hc, url.Values{"code": {totpAt(t, secret, time.Now().Add(30*time.Second))}, "mfa_action": {"verify"}})
	}
	back, err := url.Parse(step.Header.Get("Location"))
	if step.StatusCode != http.StatusSeeOther || err != nil || back.Path != pages.AccountSecuritySignedInPath || back.Query().Get("code") == "" {
		t.Fatalf("after the sign-in: %d to %q:\n%s", step.StatusCode, step.Header.Get("Location"), step.body)
	}
	again := siGet(t, hc, step.Header.Get("Location"))
	if again.StatusCode != http.StatusSeeOther || again.Header.Get("Location") != pages.AccountSecurityPath {
		t.Fatalf("the sign-in's return: %d to %q", again.StatusCode, again.Header.Get("Location"))
	}
	page := siGet(t, hc, d.in.URL+pages.AccountSecurityPath)
	if page.StatusCode != http.StatusOK {
		t.Fatalf("back at the page: %d", page.StatusCode)
	}
	return page
}

// TestAccountSecurityPageAsksForARecentSignIn: on PostgreSQL+Redis and
// SQLite, /account/security with a browser session whose sign-in is older
// than accounts.ReauthWindow (the account service's clock moved on) adds
// no factor: it answers "Confirm it is you", whose link signs in again
// (prompt=login) and comes back to the page; the session then renewed,
// the same form works. Before, any live session set up an app.
func TestAccountSecurityPageAsksForARecentSignIn(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSignIn(t, b)
			u := siUser(t, d, siEmail)
			hc := siBrowser(t)
			conf := d.oauth("first", d.firstSecret, oidc.ScopeOpenID)
			d.callback(t, siGet(t, hc, conf.AuthCodeURL("s", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))).
				submit(t, hc, url.Values{"username": {siEmail}, "password": {siPassword}}))
			page := siGet(t, hc, d.in.URL+pages.AccountSecurityPath)

			later := time.Now().Add(accounts.ReauthWindow + time.Minute)
			d.in.App.Accounts.SetClock(func() time.Time { return later })
			asked := page.form(t, "totp_start").submit(t, hc, nil)
			if asked.StatusCode != http.StatusForbidden || !strings.Contains(asked.body, "Confirm it is you") ||
				!strings.Contains(asked.body, "Nothing was changed") || strings.Contains(asked.body, `src="data:image/png;base64,`) {
				t.Fatalf("a stale session's enrolment: %d:\n%s", asked.StatusCode, asked.body)
			}
			if st, err := d.in.App.MFA.Status(context.Background(), u.ID); err != nil || st.TOTP {
				t.Fatalf("factors after the refusal: %+v, %v", st, err)
			}
			// The sign-in again happens "now" on the account service's clock.
			d.in.App.Accounts.SetClock(time.Now)
			page = signInAgain(t, d, hc, asked, "")
			d.in.App.Accounts.SetClock(func() time.Time { return time.Now().Add(time.Minute) })
			if enrol := page.form(t, "totp_start").submit(t, hc, nil); enrol.StatusCode != http.StatusOK ||
				!strings.Contains(enrol.body, `src="data:image/png;base64,`) {
				t.Fatalf("after signing in again: %d:\n%s", enrol.StatusCode, enrol.body)
			}
		})
	}
}

// TestBrowserSignInMFAThrottle: on the login page, wrong second factors
// count in the account's login throttle and a correct password does not
// wipe them (else each new mfa_token would bring fresh guesses); the
// completed login takes back its own two attempts (its password step and
// its second step) and no other, under the key the password step counted
// (a login typed as a username too). Fails on the old page: its password
// check cleared the failures at once.
func TestBrowserSignInMFAThrottle(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSignIn(t, b)
			ctx := context.Background()
			u := siUser(t, d, siEmail)
			if _, err := d.in.App.Core.Store.UpdateUser(ctx, u.ID, func(u *store.User) error {
				u.Username = "ann"
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			secret, _ := st.EnrolTOTPPreviousStep(t, d.in.App.MFA, u)
			failures := func(key string) int64 {
				n, _, err := d.in.App.State.Peek(ctx, "rl:login_fail:"+ratelimit.Hash(key), time.Now())
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
			conf := d.oauth("first", d.firstSecret, oidc.ScopeOpenID)
			step := func(hc *http.Client, login string) siPage {
				return siGet(t, hc, conf.AuthCodeURL("s", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))).
					submit(t, hc, url.Values{"username": {login}, "password": {siPassword}})
			}
			good := totpAt(t, secret, time.Now())
			bad := "000000"
			if bad == good {
				bad = "111111"
			}
			hc := siBrowser(t)
			first := step(hc, siEmail)
			for range 2 {
				if p := first.submit(t, hc, url.Values{"code": {bad}}); p.StatusCode != http.StatusBadRequest {
					t.Fatalf("wrong code: %d", p.StatusCode)
				}
			}
			second := step(hc, siEmail)
			if n := failures(siEmail); n != 4 { // two password steps not yet finished, two wrong codes
				t.Fatalf("the account's throttle counts %d after a new password step, want 4", n)
			}
			d.callback(t, second.submit(t, hc, url.Values{"code": {good}}))
			if n := failures(siEmail); n != 3 { // the abandoned password step, two wrong codes
				t.Fatalf("the throttle counts %d after a completed login, want 3", n)
			}

			// By username: counted and taken back under the username.
			hc2 := siBrowser(t)
			byName := step(hc2, "ann")
			if n := failures("ann"); n != 1 {
				t.Fatalf("the username's throttle counts %d during the second step, want 1", n)
			}
			d.callback(t, byName.submit(t, hc2, url.Values{"code": {totpAt(t, secret, time.Now().Add(30*time.Second))}}))
			if n := failures("ann"); n != 0 {
				t.Fatalf("the username's throttle counts %d after a completed login, want 0", n)
			}
		})
	}
}

// TestChangePasswordPageKeepsSecondFactorFailures: the change-password page
// checks the password, then refuses an account with a second factor (sign
// in first). The correct password it checked must not wipe the failures the
// second step counts in the account's throttle: before, a thief holding the
// password alternated a few wrong codes with one post of this page, and the
// account's throttle never engaged (found by this session's review).
func TestChangePasswordPageKeepsSecondFactorFailures(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSignIn(t, b)
			ctx := context.Background()
			u := siUser(t, d, siEmail)
			secret, _ := st.EnrolTOTPPreviousStep(t, d.in.App.MFA, u)
			failures := func() int64 {
				n, _, err := d.in.App.State.Peek(ctx, "rl:login_fail:"+ratelimit.Hash(siEmail), time.Now())
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
			bad := "000000"
			if bad == totpAt(t, secret, time.Now()) {
				bad = "111111"
			}
			conf := d.oauth("first", d.firstSecret, oidc.ScopeOpenID)
			hc := siBrowser(t)
			codeStep := siGet(t, hc, conf.AuthCodeURL("s", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))).
				submit(t, hc, url.Values{"username": {siEmail}, "password": {siPassword}})
			if p := codeStep.submit(t, hc, url.Values{"code": {bad}}); p.StatusCode != http.StatusBadRequest {
				t.Fatalf("wrong code: %d", p.StatusCode)
			}
			if n := failures(); n != 2 { // the password step not yet finished, one wrong code
				t.Fatalf("the account's throttle counts %d, want 2", n)
			}
			const next = "a brand new long passphrase"
			hc2 := siBrowser(t)
			p := siGet(t, hc2, d.in.URL+"/change-password").submit(t, hc2, url.Values{"email": {siEmail},
				"current_password": {siPassword}, "password": {next}, "confirm_password": {next}})
			if p.StatusCode != http.StatusBadRequest || !strings.Contains(p.body, "two-step verification") {
				t.Fatalf("the page with the correct password of an account with a second factor: %d\n%s", p.StatusCode, p.body)
			}
			if n := failures(); n != 3 { // and the page's own check
				t.Fatalf("the account's throttle counts %d after the page's correct password, want 3 (kept)", n)
			}
		})
	}
}

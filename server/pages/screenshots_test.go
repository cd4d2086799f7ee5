package pages_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"flag"
	"image/png"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/server/upstream/upstreamtest"
	"github.com/portcullis-auth/portcullis/store"
)

var updateScreenshots = flag.Bool("update-screenshots", false,
	"write the page screenshots into docs/screenshots (else into a temporary directory)")

// screenshotDir is where the committed screenshots live, from this package.
const screenshotDir = "../../docs/screenshots"

// viewports are the widths the screenshots are taken at.
var viewports = []struct {
	name          string
	width, height int64
	mobile        bool
}{
	{"desktop", 1280, 800, false},
	{"phone", 390, 844, true},
}

// TestScreenshots walks every page state in headless Chromium and takes a
// full-page screenshot of each at desktop (1280 px) and phone (390 px)
// width. They are written to a temporary directory and checked to be PNG
// images of that width, and each must have its committed counterpart in
// docs/screenshots. Regenerate those with
//
//	go test ./server/pages -run TestScreenshots -update-screenshots
func TestScreenshots(t *testing.T) {
	dir := t.TempDir()
	if *updateScreenshots {
		dir = screenshotDir
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	d := newDeployment(t, map[string]string{
		"PORTCULLIS_APP_URL":             "https://app.example.com/login",
		"PORTCULLIS_PUBLIC_REGISTRATION": "true",
		// Passkeys on (the pages offer them); none is used here.
		"PORTCULLIS_WEBAUTHN_RP_ID":   "localhost",
		"PORTCULLIS_WEBAUTHN_ORIGINS": "http://localhost:1",
	})
	// A tab that records Content-Security-Policy violations: the two-step
	// verification pages are checked to report none.
	tb := newTab(t, newBrowser(t))
	ctx := tb.ctx
	var names []string
	shoot := func(name string) {
		t.Helper()
		names = append(names, screenshot(t, ctx, dir, name)...)
	}
	expect := func(status, want int64, what string) {
		t.Helper()
		if status != want {
			t.Fatalf("%s: status %d, want %d: %s", what, status, want, text(t, ctx))
		}
	}

	// Invitation: the form, a refused password, success; an expired link.
	link := d.invite(t, "ines@example.com", "user")
	expect(open(t, ctx, link), http.StatusOK, "invite")
	shoot("invite")
	browse(t, ctx, fill("name", "Ines"), fill("password", weakPassword), fill("confirm_password", weakPassword))
	expect(submit(t, ctx), http.StatusBadRequest, "weak password")
	shoot("invite-weak-password")
	browse(t, ctx, fill("password", goodPassword), fill("confirm_password", goodPassword))
	expect(submit(t, ctx), http.StatusOK, "accept")
	shoot("invite-done")
	expired := d.invite(t, "eli@example.com", "user")
	d.expireInvites(t, "eli@example.com")
	expect(open(t, ctx, expired), http.StatusBadRequest, "expired invite")
	shoot("invite-expired")

	// Forgotten password, reset, a used reset link.
	expect(open(t, ctx, d.in.URL+"/forgot-password"), http.StatusOK, "forgot")
	shoot("forgot-password")
	browse(t, ctx, fill("email", "ines@example.com"))
	expect(submit(t, ctx), http.StatusOK, "forgot sent")
	shoot("forgot-password-sent")
	reset := d.smtp.WaitFor(t, "ines@example.com", mailWithin).Link(t)
	expect(open(t, ctx, reset), http.StatusOK, "reset")
	shoot("reset-password")
	browse(t, ctx, fill("password", "a brand new passphrase"), fill("confirm_password", "a brand new passphrase"))
	expect(submit(t, ctx), http.StatusOK, "reset done")
	shoot("reset-password-done")
	expect(open(t, ctx, reset), http.StatusOK, "used reset, form")
	browse(t, ctx, fill("password", "yet another passphrase"), fill("confirm_password", "yet another passphrase"))
	expect(submit(t, ctx), http.StatusBadRequest, "used reset")
	shoot("reset-password-used")

	// Email confirmation.
	d.api.PostJSON("/auth/register", map[string]string{"email": "vera@example.com", "password": goodPassword}).
		ExpectStatus(http.StatusCreated)
	verify := d.smtp.WaitFor(t, "vera@example.com", mailWithin).Link(t)
	expect(open(t, ctx, verify), http.StatusOK, "verify")
	shoot("verify-email")
	expect(submit(t, ctx), http.StatusOK, "verified")
	shoot("verify-email-done")

	// A required password change.
	u := d.fx.User(t, "tara@example.com", "tara's first passphrase", "user")
	d.api.PostJSON("/admin/users/"+u.ID+"/temp-password", map[string]string{"password": "temporary passphrase 7"},
		st.Bearer(d.rootToken(t))).ExpectStatus(http.StatusOK)
	expect(open(t, ctx, d.in.URL+"/change-password"), http.StatusOK, "change")
	shoot("change-password")
	browse(t, ctx, fill("email", "tara@example.com"), fill("current_password", "temporary passphrase 7"),
		fill("password", goodPassword), fill("confirm_password", goodPassword))
	expect(submit(t, ctx), http.StatusOK, "changed")
	shoot("change-password-done")

	// Browser sign-in: the login page, a refused password, the consent page
	// of a third-party client, the account chooser (prompt=select_account
	// with a session), and the error page of a request that cannot
	// be answered (an unregistered redirect URI). The client's redirect URI
	// is never followed.
	d.fx.User(t, "lena@example.com", goodPassword, "user")
	d.fx.Client(t, clients.Spec{ID: "photos", Name: "Photo Album", Grants: []string{"authorization_code", "refresh_token"},
		RedirectURIs: []string{"https://photos.example.com/callback"}})
	authorize := func(redirectURI string, extra ...string) string {
		q := url.Values{"response_type": {"code"}, "client_id": {"photos"},
			"redirect_uri": {redirectURI}, "scope": {"openid email profile"}, "state": {"s"},
			"code_challenge": {oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())}, "code_challenge_method": {"S256"}}
		for i := 0; i+1 < len(extra); i += 2 {
			q.Set(extra[i], extra[i+1])
		}
		return d.in.URL + "/oauth2/authorize?" + q.Encode()
	}
	expect(open(t, ctx, authorize("https://photos.example.com/callback")), http.StatusOK, "login")
	shoot("login")
	browse(t, ctx, fill("username", "lena@example.com"), fill("password", "not her password"))
	expect(submit(t, ctx), http.StatusBadRequest, "wrong password")
	shoot("login-wrong-password")
	browse(t, ctx, fill("password", goodPassword))
	expect(submit(t, ctx), http.StatusOK, "consent")
	mustContain(t, "the consent page", text(t, ctx), "Photo Album wants to access your account")
	shoot("consent")
	expect(open(t, ctx, authorize("https://photos.example.com/callback", "prompt", "select_account")), http.StatusOK, "chooser")
	mustContain(t, "the account chooser", text(t, ctx), "Continue as lena@example.com", "Use another account")
	shoot("choose-account")
	expect(open(t, ctx, authorize("https://evil.example/callback")), http.StatusBadRequest, "authorize error")
	shoot("authorize-error")

	// Signing out: the confirmation page, "Stay signed in", the signed-out
	// page, and a logout request that cannot be read (a repeated parameter).
	expect(open(t, ctx, d.in.URL+"/oauth2/logout?client_id=photos&state=s"), http.StatusOK, "logout confirmation")
	mustContain(t, "the logout confirmation", text(t, ctx), "Sign out?")
	shoot("logout-confirm")
	click := func(id string) int64 {
		t.Helper()
		resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID(id)))
		if err != nil {
			t.Fatalf("click %s: %v", id, err)
		}
		return resp.Status
	}
	expect(click("stay"), http.StatusOK, "stay signed in")
	mustContain(t, "stay signed in", text(t, ctx), "You are still signed in")
	shoot("logout-stay")
	expect(open(t, ctx, d.in.URL+"/oauth2/logout"), http.StatusOK, "logout confirmation")
	expect(click("logout"), http.StatusOK, "signed out")
	mustContain(t, "the signed-out page", text(t, ctx), "You are signed out")
	shoot("logout-done")
	expect(open(t, ctx, d.in.URL+"/oauth2/logout?state=a&state=b"), http.StatusBadRequest, "logout error")
	shoot("logout-error")

	// The sessions page: Lena signs in again (to a first-party client whose
	// redirect URI is this server's /healthz, so the browser lands
	// somewhere), her session also lists the photo album, she has one on
	// her phone and a consent to the album; then signing out this device,
	// and the page without a session.
	d.fx.Client(t, clients.Spec{ID: "notes", Name: "Notes", Grants: []string{"authorization_code", "refresh_token"},
		RedirectURIs: []string{d.in.URL + "/healthz"}, FirstParty: true})
	notes := url.Values{"response_type": {"code"}, "client_id": {"notes"}, "redirect_uri": {d.in.URL + "/healthz"},
		"scope": {"openid"}, "code_challenge": {oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())},
		"code_challenge_method": {"S256"}}
	expect(open(t, ctx, d.in.URL+"/oauth2/authorize?"+notes.Encode()), http.StatusOK, "login for the sessions page")
	browse(t, ctx, fill("username", "lena@example.com"), fill("password", goodPassword))
	expect(submit(t, ctx), http.StatusOK, "signed in to notes")
	seedAccount(t, d, "lena@example.com", "photos")
	expect(open(t, ctx, d.in.URL+"/account/sessions"), http.StatusOK, "account sessions")
	mustContain(t, "the sessions page", text(t, ctx), "This device", "Notes", "Photo Album", "iPhone", "Withdraw")
	shoot("account-sessions")
	expect(submit(t, ctx), http.StatusOK, "sign out this device") // the first button: this device
	mustContain(t, "signed out", text(t, ctx), "You are signed out")
	shoot("account-signed-out")
	expect(open(t, ctx, d.in.URL+"/account/sessions"), http.StatusOK, "account sessions, signed out")
	mustContain(t, "not signed in", text(t, ctx), "You are not signed in")
	shoot("account-not-signed-in")

	// Two-step verification: Mia has an authenticator app, recovery codes
	// and a passkey. The second step of the login page (the passkey
	// button, the code field, the switch to a recovery code), a wrong
	// code, the recovery code form; then /account/security and the
	// confirmation that turns the app off.
	mia := d.fx.User(t, "mia@example.com", goodPassword, "user")
	codes := enrolForScreenshots(t, d, mia)
	expect(open(t, ctx, d.in.URL+"/oauth2/authorize?"+notes.Encode()), http.StatusOK, "login for the second step")
	browse(t, ctx, fill("username", "mia@example.com"), fill("password", goodPassword))
	expect(submit(t, ctx), http.StatusOK, "second step")
	mustContain(t, "the second step", text(t, ctx), "Confirm it is you to continue to Notes", "Use your passkey",
		"Code from your authenticator app", "Use a recovery code instead")
	// The script ran (it shows the button) under the page's CSP.
	if hidden := value(t, ctx, chromedp.Evaluate[bool](`document.getElementById('webauthn').hidden`)); hidden {
		t.Fatal("the passkey button is hidden: the script did not run")
	}
	tb.noViolation(t, "the second step")
	shoot("mfa-step")
	accessible(t, ctx, "webauthn", "code", "Continue", "Use a recovery code instead")
	browse(t, ctx, fill("code", "000000"))
	expect(submit(t, ctx), http.StatusBadRequest, "wrong code")
	mustContain(t, "the wrong code", text(t, ctx), "That code is not right")
	shoot("mfa-step-wrong-code")
	expect(click("use-recovery-code"), http.StatusOK, "recovery code form")
	mustContain(t, "the recovery code form", text(t, ctx), "Recovery code", "Use your authenticator app instead")
	shoot("mfa-recovery-code")
	browse(t, ctx, fill("code", codes[0]))
	expect(submit(t, ctx), http.StatusOK, "signed in with a recovery code")
	expect(open(t, ctx, d.in.URL+"/account/security"), http.StatusOK, "account security")
	mustContain(t, "the security page", text(t, ctx), "Turn off the authenticator app", "Work laptop", "9 unused recovery codes")
	tb.noViolation(t, "/account/security")
	shoot("account-security")
	accessible(t, ctx, "totp-remove", "Remove the passkey Work laptop", "name", "passkey-add", "recovery-regenerate")
	expect(click("totp-remove"), http.StatusOK, "turn off the app")
	mustContain(t, "the confirmation", text(t, ctx), "Turn off the authenticator app?", "Your password")
	shoot("account-security-remove")
	expect(open(t, ctx, d.in.URL+"/account/security"), http.StatusOK, "account security")
	expect(click("recovery-regenerate"), http.StatusOK, "new recovery codes")
	mustContain(t, "the new codes", text(t, ctx), "Your new recovery codes")
	shoot("account-security-recovery-codes")

	// Enrolment required by the policy (mfa.required_for_level) at the
	// login page: the QR code and key, then the recovery codes.
	md := newDeployment(t, map[string]string{"PORTCULLIS_POLICY_FILE": mfaPolicyFile(t)})
	md.fx.User(t, "ada@example.com", goodPassword, "admin")
	md.fx.Client(t, clients.Spec{ID: "notes", Name: "Notes", Grants: []string{"authorization_code", "refresh_token"},
		RedirectURIs: []string{md.in.URL + "/healthz"}, FirstParty: true})
	notes.Set("redirect_uri", md.in.URL+"/healthz")
	expect(open(t, ctx, md.in.URL+"/oauth2/authorize?"+notes.Encode()), http.StatusOK, "login for enrolment")
	browse(t, ctx, fill("username", "ada@example.com"), fill("password", goodPassword))
	expect(submit(t, ctx), http.StatusOK, "enrolment step")
	mustContain(t, "the enrolment step", text(t, ctx), "Set up two-step verification", "Cannot scan it?")
	// The QR code (a data: PNG) loaded: this page's CSP allows it.
	if w := value(t, ctx, chromedp.Evaluate[int](`document.querySelector('img.qr').naturalWidth`)); w == 0 {
		t.Fatal("the QR code did not load")
	}
	tb.noViolation(t, "the enrolment step")
	shoot("mfa-enrol")
	accessible(t, ctx, "code", "Turn on two-step verification")
	secret := value(t, ctx, chromedp.Evaluate[string](`document.querySelector('input[name=secret]').value`))
	browse(t, ctx, fill("code", st.TOTPCode(t, secret, time.Now())))
	expect(submit(t, ctx), http.StatusOK, "enrolled")
	mustContain(t, "the recovery codes", text(t, ctx), "Two-step verification is on", "I have saved my codes: sign in")
	shoot("mfa-enrol-codes")
	tb.noViolation(t, "the recovery codes")

	// Sign in with an identity provider: the login page's buttons, the
	// confirm-link page (and a wrong password on it) and a refused sign-in.
	fd := newFedDeployment(t)
	fd.fx.User(t, "lena@example.com", goodPassword, "user")
	expect(open(t, ctx, fd.oauth().AuthCodeURL("s", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))), http.StatusOK, "login with providers")
	mustContain(t, "the login page", text(t, ctx), "Or sign in with", "Corp Login")
	tb.noViolation(t, "the login page with providers")
	shoot("login-providers")
	fd.op.NextLogin(upstreamtest.Token{Subject: "sub-lena", Email: "lena@example.com", EmailVerified: upstreamtest.Bool(true)})
	expect(clickProvider(t, ctx), http.StatusOK, "confirm-link page")
	mustContain(t, "the confirm-link page", text(t, ctx), "Link your Corp Login account")
	tb.noViolation(t, "the confirm-link page")
	shoot("upstream-link")
	browse(t, ctx, fill("password", "not her password"))
	expect(submit(t, ctx), http.StatusBadRequest, "confirm-link, wrong password")
	shoot("upstream-link-wrong-password")
	expect(open(t, ctx, fd.in.URL+"/login/corp/callback?state=forged&code=c"), http.StatusBadRequest, "refused")
	tb.noViolation(t, "the refusal page")
	shoot("upstream-refused")

	// The invitation page with a provider: its labelled "Accept with"
	// button, reached by keyboard after the password form, posts and
	// follows the redirect to the provider (the page's form-action allows
	// it), which accepts the invitation.
	ilink := fd.invite(t, "ivy@example.com", "user")
	expect(open(t, ctx, ilink), http.StatusOK, "invite with providers")
	mustContain(t, "the invite page", text(t, ctx), "Accept with Corp Login")
	tb.noViolation(t, "the invite page with providers")
	accessible(t, ctx, "name", "password", "confirm_password", "Create my account", "Accept with Corp Login")
	shoot("invite-providers")
	fd.op.NextLogin(upstreamtest.Token{Subject: "sub-ivy", Email: "ivy@example.com", EmailVerified: upstreamtest.Bool(true)})
	tctx, cancel := context.WithTimeout(ctx, time.Minute)
	resp, err := chromedp.RunResponse(tctx, chromedp.Click(chromedp.CSS(`form[action="/invite/corp"] button`)))
	cancel()
	if err != nil {
		t.Fatalf("press Accept with Corp Login: %v", err)
	}
	expect(resp.Status, http.StatusOK, "invite accepted with the provider")
	mustContain(t, "the accepted page", text(t, ctx), "Your invitation is accepted", "sign in with Corp Login")
	tb.noViolation(t, "the accepted page")

	// Every screenshot has its committed counterpart.
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(screenshotDir, n)); err != nil {
			t.Errorf("docs/screenshots/%s is missing; run: go test ./server/pages -run TestScreenshots -update-screenshots", n)
		}
	}
}

// enrolForScreenshots gives u an authenticator app (through the MFA
// service), its recovery codes (returned) and a passkey record "Work
// laptop" (only listed and offered: never used).
func enrolForScreenshots(t *testing.T, d *deployment, u store.User) []string {
	t.Helper()
	ctx := context.Background()
	_, codes := st.EnrolTOTPPreviousStep(t, d.in.App.MFA, u)
	used := time.Now().Add(-2 * time.Hour)
	if err := d.in.App.Core.Store.AddWebAuthnCredential(ctx, store.WebAuthnCredential{ID: "AQIDBAUGBwg", UserID: u.ID,
		Name: "Work laptop", Credential: []byte(`{"id":"AQIDBAUGBwg=","publicKey":"AQID"}`), SignCount: 3,
		CreatedAt: time.Now().Add(-72 * time.Hour), LastUsedAt: &used}); err != nil {
		t.Fatal(err)
	}
	return codes
}

// mfaPolicyFile is the built-in policy with mfa.required_for_level 50
// (admin and super_admin must use a second factor).
func mfaPolicyFile(t *testing.T) string {
	t.Helper()
	base, err := os.ReadFile("../../policy/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(p, append(base, []byte("\nmfa:\n  required_for_level: 50\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// seedAccount gives the user's live browser session a grant to clientID,
// a second session on a phone and a remembered consent to clientID, for
// the sessions page's screenshots.
func seedAccount(t *testing.T, d *deployment, email, clientID string) {
	t.Helper()
	ctx := context.Background()
	sessions := d.in.App.BrowserSessions
	u, err := d.in.App.Core.Store.GetUserByEmail(ctx, email)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	live, err := sessions.ListBrowserSessions(ctx, u.ID, now)
	if err != nil || len(live) != 1 {
		t.Fatalf("%s's sessions: %v, %v", email, live, err)
	}
	cookie := make([]byte, 32)
	if _, err := rand.Read(cookie); err != nil {
		t.Fatal(err)
	}
	phone := store.BrowserSession{ID: "phone-session", UserID: u.ID, AuthTime: now.Add(-26 * time.Hour), AMR: []string{"pwd"},
		Remember: true, CreatedAt: now.Add(-26 * time.Hour), LastUsedAt: now.Add(-3 * time.Hour), IdleTTL: 48 * time.Hour,
		AbsoluteExpiry: now.Add(100 * time.Hour), IP: "203.0.113.7",
		UserAgent: "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"}
	if _, err := sessions.CreateBrowserSession(ctx, phone, cookie); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{live[0].ID, phone.ID} {
		if _, err := sessions.AddBrowserSessionGrant(ctx, u.ID, id, store.SessionGrant{SID: "grant-" + id, ClientID: clientID, GrantedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.in.App.Core.Store.PutConsent(ctx, store.Consent{UserID: u.ID, ClientID: clientID,
		Scopes: []string{"email", "openid", "profile"}, GrantedAt: now.Add(-26 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
}

// screenshot takes a full-page screenshot of the tab at each of the
// viewports into dir as name-desktop.png and name-phone.png, checking that
// each is a PNG of the viewport's width and that nothing overflows
// sideways, and returns the file names.
func screenshot(t *testing.T, ctx context.Context, dir, name string) []string {
	t.Helper()
	var names []string
	for _, vp := range viewports {
		opts := []chromedp.EmulateViewportOption{chromedp.EmulatePortrait}
		if vp.mobile {
			opts = append(opts, chromedp.EmulateMobile)
		}
		browse(t, ctx, chromedp.EmulateViewport(vp.width, vp.height, opts...))
		img := value(t, ctx, chromedp.FullScreenshot(100))
		cfg, err := png.DecodeConfig(bytes.NewReader(img))
		if err != nil {
			t.Fatalf("%s at %s: not a PNG: %v", name, vp.name, err)
		}
		if int64(cfg.Width) != vp.width || int64(cfg.Height) < vp.height/2 {
			t.Fatalf("%s at %s: %dx%d, want %d wide", name, vp.name, cfg.Width, cfg.Height, vp.width)
		}
		// Nothing may overflow sideways: the page fits the width.
		if w := value(t, ctx, chromedp.Evaluate[int64](`document.documentElement.scrollWidth`)); w > vp.width {
			t.Fatalf("%s at %s: the page is %d px wide, more than the %d px viewport", name, vp.name, w, vp.width)
		}
		file := name + "-" + vp.name + ".png"
		if err := os.WriteFile(filepath.Join(dir, file), img, 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, file)
	}
	browse(t, ctx, chromedp.EmulateViewport(1280, 800))
	return names
}

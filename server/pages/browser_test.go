package pages_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// TestBrowserInvite: an invitation email arrives over SMTP; its link is
// opened in headless Chromium from a page on another site (as from a web
// mail client); the token leaves the address bar; a weak password is
// refused with its reason tied to the field; a good one creates the
// account, which then gets a token with the password grant; the link then
// says it was already used. The whole form is filled with the keyboard only.
func TestBrowserInvite(t *testing.T) {
	d := newDeployment(t, map[string]string{"PORTCULLIS_APP_URL": "https://app.example.test/signin"})
	link := d.invite(t, "ivy@example.com", "user")
	tok := tokenOf(t, link)

	// A "web mail" page on another site (localhost is not 127.0.0.1's site).
	mailbox := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><title>Mail</title><a id="link" href="%s">Accept the invitation</a>`, link)
	}))
	defer mailbox.Close()
	mailURL := strings.Replace(mailbox.URL, "127.0.0.1", "localhost", 1)

	ctx := newBrowser(t)
	open(t, ctx, mailURL)
	resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("link")))
	if err != nil {
		t.Fatalf("follow the emailed link: %v", err)
	}
	if resp.Status != http.StatusOK {
		t.Fatalf("invite page after the link: status %d", resp.Status)
	}
	if got := location(t, ctx); got != d.in.URL+"/invite" {
		t.Fatalf("address after the first load is %q, want %q (the token must leave the URL)", got, d.in.URL+"/invite")
	}
	mustContain(t, "the invite page", text(t, ctx), "Set up your account", "At least 8 characters", "commonly used password")

	// Keyboard only: Tab from the top of the page reaches the fields in order.
	browse(t, ctx, chromedp.KeyEvent("\t"))
	for i, id := range []string{"name", "password", "confirm_password"} {
		if i > 0 {
			browse(t, ctx, chromedp.KeyEvent("\t"))
		}
		if got := value(t, ctx, chromedp.Evaluate[string](`document.activeElement.id`)); got != id {
			t.Fatalf("Tab %d focuses %q, want %q", i+1, got, id)
		}
		// The focused field shows a visible focus indicator.
		outline := value(t, ctx, chromedp.Evaluate[string](`getComputedStyle(document.activeElement).outlineStyle + " " + getComputedStyle(document.activeElement).outlineWidth`))
		if outline != "solid 3px" {
			t.Fatalf("focused %s has outline %q, want a visible 3px one", id, outline)
		}
		switch id {
		case "name":
			browse(t, ctx, chromedp.KeyEvent("Ivy"))
		default:
			browse(t, ctx, chromedp.KeyEvent(weakPassword))
		}
	}
	browse(t, ctx, chromedp.KeyEvent("\t"))
	if got := value(t, ctx, chromedp.Evaluate[string](`document.activeElement.textContent`)); got != "Create my account" {
		t.Fatalf("Tab after the fields focuses %q, want the button", got)
	}
	resp, err = chromedp.RunResponse(ctx, chromedp.KeyEvent("\r"))
	if err != nil {
		t.Fatalf("press Enter on the button: %v", err)
	}
	if resp.Status != http.StatusBadRequest {
		t.Fatalf("weak password: status %d, want 400", resp.Status)
	}
	// The reason is shown, in the summary and at the field, and tied to it.
	mustContain(t, "the refusal", text(t, ctx), "There is a problem", "commonly used password")
	attrs := value(t, ctx, chromedp.Attributes(chromedp.ID("password")))
	if attrs["aria-invalid"] != "true" || !strings.Contains(attrs["aria-describedby"], "password-error") ||
		!strings.Contains(attrs["aria-describedby"], "password-hint") {
		t.Fatalf("the refused password field is not marked: %v", attrs)
	}
	fieldErr := value(t, ctx, chromedp.Text(chromedp.ID("password-error")))
	mustContain(t, "the field's error", fieldErr, "commonly used password")
	if v := value(t, ctx, chromedp.Value(chromedp.ID("name"))); v != "Ivy" {
		t.Fatalf("the name was not kept: %q", v)
	}
	if v := value(t, ctx, chromedp.Value(chromedp.ID("password"))); v != "" {
		t.Fatal("a password was written back into the page")
	}
	if got := value(t, ctx, chromedp.Evaluate[string](`document.activeElement.className`)); got != "error-summary" {
		t.Fatalf("after a refusal the focus is on %q, want the error summary", got)
	}
	if title := value(t, ctx, chromedp.Title()); !strings.HasPrefix(title, "Error: ") {
		t.Fatalf("title %q should start with Error:", title)
	}
	// The weak password did not create the account.
	d.login(t, "ivy@example.com", weakPassword).ExpectError(http.StatusBadRequest, "invalid_grant")

	// A good password creates the account.
	browse(t, ctx, fill("password", goodPassword), fill("confirm_password", goodPassword))
	if status := submit(t, ctx); status != http.StatusOK {
		t.Fatalf("good password: status %d; page: %s", status, text(t, ctx))
	}
	mustContain(t, "the success page", text(t, ctx), "Your account is ready", "Sign in with your email address")
	if href := value(t, ctx, chromedp.AttributeValue(chromedp.CSS("a.button"), "href")); href.Value != "https://app.example.test/signin" {
		t.Fatalf("sign-in link %q, want PORTCULLIS_APP_URL", href.Value)
	}
	tr := d.login(t, "ivy@example.com", goodPassword).Token()
	info := d.api.Get("/userinfo", st.Bearer(tr.AccessToken)).ExpectStatus(http.StatusOK).Map()
	if info["email"] != "ivy@example.com" || info["email_verified"] != true {
		t.Fatalf("userinfo of the new account: %v", info)
	}
	// The session that accepting started (nobody holds its tokens) was ended.
	d.assertPageSessionEnded(t, info["sub"].(string))

	// The link works once: opened again, it says so at once.
	if status := open(t, ctx, link); status != http.StatusBadRequest {
		t.Fatalf("used link: status %d", status)
	}
	mustContain(t, "the used link", text(t, ctx), "This invitation link cannot be used", "already been used", "Ask the person who invited you")
	d.assertNoSecretInLogs(t, tok, goodPassword, weakPassword)
}

// TestBrowserExpiredInvite: an expired invitation says so on opening and
// says what to do; its form is never shown.
func TestBrowserExpiredInvite(t *testing.T) {
	d := newDeployment(t, nil)
	link := d.invite(t, "exa@example.com", "user")
	d.expireInvites(t, "exa@example.com")
	ctx := newBrowser(t)
	if status := open(t, ctx, link); status != http.StatusBadRequest {
		t.Fatalf("expired link: status %d", status)
	}
	if got := location(t, ctx); got != d.in.URL+"/invite" {
		t.Fatalf("address %q still holds the token", got)
	}
	body := text(t, ctx)
	mustContain(t, "the expired link", body, "This invitation link cannot be used", "has expired", "Ask the person who invited you to send a new invitation")
	if n := value(t, ctx, chromedp.Evaluate[int](`document.forms.length`)); n != 0 {
		t.Fatalf("an expired link shows %d forms", n)
	}
	// Without PORTCULLIS_APP_URL there is no sign-in button to nowhere.
	if n := value(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll("a.button").length`)); n != 0 {
		t.Fatalf("%d buttons without an application URL", n)
	}
}

// TestBrowserResetPassword: the forgot-password page emails a link; the reset
// page refuses a weak password with its reason, accepts a good one; the old
// password stops working, the new one works, every session ended; the used
// link says so.
func TestBrowserResetPassword(t *testing.T) {
	d := newDeployment(t, nil)
	const email, oldPass = "rex@example.com", "rex's old long passphrase"
	d.fx.User(t, email, oldPass, "user")
	before := d.login(t, email, oldPass).Token()

	ctx := newBrowser(t)
	if status := open(t, ctx, d.in.URL+"/forgot-password"); status != http.StatusOK {
		t.Fatalf("forgot-password page: %d", status)
	}
	browse(t, ctx, fill("email", email))
	if status := submit(t, ctx); status != http.StatusOK {
		t.Fatalf("forgot-password: status %d: %s", status, text(t, ctx))
	}
	mustContain(t, "the forgot-password answer", text(t, ctx), "Check your email", email, "1 hour")
	link := d.smtp.WaitFor(t, email, mailWithin).Link(t)
	tok := tokenOf(t, link)

	if status := open(t, ctx, link); status != http.StatusOK {
		t.Fatalf("reset page: %d", status)
	}
	if got := location(t, ctx); got != d.in.URL+"/reset-password" {
		t.Fatalf("address %q still holds the token", got)
	}
	mustContain(t, "the reset page", text(t, ctx), "Choose a new password", "At least 8 characters")
	// Refused: the email address as password; then two different passwords.
	browse(t, ctx, fill("password", email), fill("confirm_password", email))
	if status := submit(t, ctx); status != http.StatusBadRequest {
		t.Fatalf("email as password: status %d", status)
	}
	mustContain(t, "the refusal", value(t, ctx, chromedp.Text(chromedp.ID("password-error"))), "email address")
	browse(t, ctx, fill("password", goodPassword), fill("confirm_password", goodPassword+"!"))
	if status := submit(t, ctx); status != http.StatusBadRequest {
		t.Fatalf("mismatch: status %d", status)
	}
	mustContain(t, "the mismatch", value(t, ctx, chromedp.Text(chromedp.ID("confirm_password-error"))), "do not match")
	d.login(t, email, oldPass).Token() // nothing changed yet

	browse(t, ctx, fill("password", goodPassword), fill("confirm_password", goodPassword))
	if status := submit(t, ctx); status != http.StatusOK {
		t.Fatalf("reset: status %d: %s", status, text(t, ctx))
	}
	mustContain(t, "the reset answer", text(t, ctx), "Your password has been changed", "signed out everywhere", "Sign in again")
	d.login(t, email, oldPass).ExpectError(http.StatusBadRequest, "invalid_grant")
	d.login(t, email, goodPassword).Token()
	d.api.Get("/userinfo", st.Bearer(before.AccessToken)).ExpectStatus(http.StatusUnauthorized)
	d.api.PostForm("/oauth2/token", st.RefreshForm(before.RefreshToken), st.Basic("web", d.webSecret)).
		ExpectError(http.StatusBadRequest, "invalid_grant")

	// The used link: its form still shows (a reset link cannot be checked
	// without redeeming it) and sending it says the link was used.
	if status := open(t, ctx, link); status != http.StatusOK {
		t.Fatalf("used reset link, first load: %d", status)
	}
	browse(t, ctx, fill("password", "another fine passphrase"), fill("confirm_password", "another fine passphrase"))
	if status := submit(t, ctx); status != http.StatusBadRequest {
		t.Fatalf("used reset link: status %d", status)
	}
	mustContain(t, "the used link", text(t, ctx), "This password reset link cannot be used", "already been used", "Request a new reset link")
	d.login(t, email, goodPassword).Token()
	d.assertNoSecretInLogs(t, tok, goodPassword, oldPass)
}

// TestBrowserVerifyEmail: opening a verification link changes nothing (link
// scanners prefetch); the button confirms; the link then says it was used.
func TestBrowserVerifyEmail(t *testing.T) {
	d := newDeployment(t, map[string]string{"PORTCULLIS_PUBLIC_REGISTRATION": "true"})
	const email = "val@example.com"
	d.api.PostJSON("/auth/register", map[string]string{"email": email, "password": goodPassword}).ExpectStatus(http.StatusCreated)
	link := d.smtp.WaitFor(t, email, mailWithin).Link(t)
	tok := tokenOf(t, link)
	verified := func() bool {
		u, _, err := d.in.App.Core.Store.GetUserForLogin(t.Context(), email)
		if err != nil {
			t.Fatal(err)
		}
		return u.EmailVerified
	}

	ctx := newBrowser(t)
	if status := open(t, ctx, link); status != http.StatusOK {
		t.Fatalf("verify page: %d", status)
	}
	if got := location(t, ctx); got != d.in.URL+"/verify-email" {
		t.Fatalf("address %q still holds the token", got)
	}
	mustContain(t, "the verify page", text(t, ctx), "Confirm your email address")
	if verified() {
		t.Fatal("opening the link verified the address: GET must change nothing")
	}
	if status := submit(t, ctx); status != http.StatusOK {
		t.Fatalf("confirm: %d: %s", status, text(t, ctx))
	}
	mustContain(t, "the confirmation", text(t, ctx), "Your email address is confirmed", email)
	if !verified() {
		t.Fatal("the address is not verified after confirming")
	}
	open(t, ctx, link)
	if status := submit(t, ctx); status != http.StatusBadRequest {
		t.Fatalf("used verification link: %d", status)
	}
	mustContain(t, "the used link", text(t, ctx), "This confirmation link cannot be used", "already been used")
	d.assertNoSecretInLogs(t, tok)
}

// TestBrowserChangePassword: a user with a temporary password changes it on
// the page (a wrong current password is refused without saying whether the
// account exists), then signs in with the new one and gets a full token.
func TestBrowserChangePassword(t *testing.T) {
	d := newDeployment(t, nil)
	const email, first, temp = "tim@example.com", "tim's first long passphrase", "temporary passphrase 42"
	u := d.fx.User(t, email, first, "user")
	d.api.PostJSON("/admin/users/"+u.ID+"/temp-password", map[string]string{"password": temp}, st.Bearer(d.rootToken(t))).
		ExpectStatus(http.StatusOK)
	if tr := d.login(t, email, temp).Token(); !tr.MustChangePassword || tr.RefreshToken != "" {
		t.Fatalf("a temporary password should give a restricted token: %+v", tr)
	}

	ctx := newBrowser(t)
	open(t, ctx, d.in.URL+"/change-password")
	mustContain(t, "the change-password page", text(t, ctx), "Change your password", "Current password")
	// A wrong current password and an unknown account get the same answer.
	var answers []string
	for _, who := range []string{email, "nobody@example.com"} {
		open(t, ctx, d.in.URL+"/change-password")
		browse(t, ctx, fill("email", who), fill("current_password", "not the password"),
			fill("password", goodPassword), fill("confirm_password", goodPassword))
		if status := submit(t, ctx); status != http.StatusBadRequest {
			t.Fatalf("wrong credentials for %s: %d", who, status)
		}
		answers = append(answers, value(t, ctx, chromedp.Text(chromedp.ID("current_password-error"))))
		if v := value(t, ctx, chromedp.Value(chromedp.ID("email"))); v != who {
			t.Fatalf("the email address was not kept: %q", v)
		}
	}
	if answers[0] != answers[1] || !strings.Contains(answers[0], "incorrect") {
		t.Fatalf("answers differ between a known and an unknown account: %q", answers)
	}
	// The temporary password itself is refused as the new one.
	browse(t, ctx, fill("current_password", temp), fill("password", temp), fill("confirm_password", temp))
	browse(t, ctx, chromedp.SetValue(chromedp.ID("email"), email))
	if status := submit(t, ctx); status != http.StatusBadRequest {
		t.Fatalf("same password: %d", status)
	}
	mustContain(t, "the refusal", value(t, ctx, chromedp.Text(chromedp.ID("password-error"))), "differ")

	browse(t, ctx, fill("current_password", temp), fill("password", goodPassword), fill("confirm_password", goodPassword))
	if status := submit(t, ctx); status != http.StatusOK {
		t.Fatalf("change: %d: %s", status, text(t, ctx))
	}
	mustContain(t, "the change answer", text(t, ctx), "Your password has been changed", "Sign in again")
	d.login(t, email, temp).ExpectError(http.StatusBadRequest, "invalid_grant")
	tr := d.login(t, email, goodPassword).Token()
	if tr.MustChangePassword || tr.RefreshToken == "" {
		t.Fatalf("after the change the login should be a full one: %+v", tr)
	}
	d.assertPageSessionEnded(t, u.ID)
	d.assertNoSecretInLogs(t, temp, goodPassword)
}

// TestBrowserCSRF: a form sent without its CSRF token is refused and changes
// nothing.
func TestBrowserCSRF(t *testing.T) {
	d := newDeployment(t, nil)
	link := d.invite(t, "cara@example.com", "user")
	ctx := newBrowser(t)
	open(t, ctx, link)
	browse(t, ctx, fill("password", goodPassword), fill("confirm_password", goodPassword),
		chromedp.Evaluate[chromedp.Void](`document.querySelector('input[name="csrf_token"]').remove()`))
	if status := submit(t, ctx); status != http.StatusForbidden {
		t.Fatalf("a form without its CSRF token: %d", status)
	}
	mustContain(t, "the refusal", text(t, ctx), "This form has expired", "Nothing was changed")
	d.login(t, "cara@example.com", goodPassword).ExpectError(http.StatusBadRequest, "invalid_grant")
	// The link still works from its page.
	open(t, ctx, d.in.URL+"/invite")
	browse(t, ctx, fill("password", goodPassword), fill("confirm_password", goodPassword))
	if status := submit(t, ctx); status != http.StatusOK {
		t.Fatalf("accept after the refused form: %d: %s", status, text(t, ctx))
	}
	d.login(t, "cara@example.com", goodPassword).Token()
}

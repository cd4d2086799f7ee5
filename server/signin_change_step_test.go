package server_test

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// The change-password step of the login page (step=change_password) is
// the way on for a signed-in user who must change a temporary password,
// and for nothing else: it is not a login. Before the fix, any signed-in
// browser could post it to a pending request and came back with a code
// whose auth_time was the change's and whose amr was the old session's, so
// the password alone passed prompt=login and max_age (and the console's
// five-minute re-authentication) as a two-factor sign-in.

const (
	csOldPassword = "the password before the step 1"
	csNewPassword = "a brand new passphrase here 9"
)

// csUser creates a user with csOldPassword and a TOTP factor, who must
// change the password when temporary is set; it returns the TOTP secret.
func csUser(t *testing.T, d *siDeployment, email string, temporary bool) string {
	t.Helper()
	u := st.NewFixtures(t, d.in.App.Core).User(t, email, csOldPassword, "user")
	if temporary {
		if _, err := d.in.App.Core.Store.UpdateUser(context.Background(), u.ID, func(u *store.User) error {
			u.MustChangePassword = true
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	secret, _ := st.EnrolTOTPPreviousStep(t, d.in.App.MFA, siUser(t, d, email))
	return secret
}

// csSignIn signs email in on login (the login page of a pending request)
// with csOldPassword and the current TOTP code, and returns what follows
// the second step.
func csSignIn(t *testing.T, hc *http.Client, login siPage, email, secret string) siPage {
	t.Helper()
	step := login.submit(t, hc, url.Values{"username": {email}, "password": {csOldPassword}})
	if step.StatusCode != http.StatusOK || !strings.Contains(step.body, `name="step" value="mfa"`) {
		t.Fatalf("after the password: %d, want the second step:\n%s", step.StatusCode, step.body)
	}
	return step.submit(t, hc, url.Values{"code": {totpAt(t, secret, time.Now())}, "mfa_action": {"verify"}})
}

// changeStep posts the change-password step to /login for the pending
// request of page (its hidden request and CSRF fields, whatever form the
// page shows), with the current password.
func changeStep(t *testing.T, hc *http.Client, page siPage, current string) siPage {
	t.Helper()
	form := page.hiddenFields()
	for k, v := range (url.Values{"step": {"change_password"}, "current_password": {current},
		"password": {csNewPassword}, "confirm_password": {csNewPassword}}) {
		form[k] = v
	}
	if form.Get("request") == "" || form.Get("csrf_token") == "" {
		t.Fatalf("no pending request or CSRF token on the page (%d):\n%s", page.StatusCode, page.body)
	}
	body := []byte(form.Encode())
	req, err := http.NewRequest(http.MethodPost, originOf(page)+"/login", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", originOf(page))
	return siDo(t, hc, req, body)
}

// originOf is the origin page was served from.
func originOf(page siPage) string {
	return page.Request.URL.Scheme + "://" + page.Request.URL.Host
}

// csClaims redeems the code of the callback page and returns the id
// token's amr, acr and auth_time.
func csClaims(t *testing.T, d *siDeployment, conf *oauth2.Config, page siPage, verifier string) ([]string, string, time.Time) {
	t.Helper()
	q := d.callback(t, page)
	tok, err := conf.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	idt, err := d.provider.Verifier(&oidc.Config{ClientID: conf.ClientID}).Verify(context.Background(), tok.Extra("id_token").(string))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		AMR      []string `json:"amr"`
		ACR      string   `json:"acr"`
		AuthTime int64    `json:"auth_time"`
	}
	if err := idt.Claims(&c); err != nil {
		t.Fatal(err)
	}
	return c.AMR, c.ACR, time.Unix(c.AuthTime, 0)
}

// refusedStep checks that a post of the step changed nothing: the login
// form again, no code, no new session, the password hash as before and no
// password.changed event.
func refusedStep(t *testing.T, d *siDeployment, got siPage, email, hashBefore string) {
	t.Helper()
	if got.StatusCode != http.StatusOK || !strings.Contains(got.body, `name="username"`) ||
		strings.Contains(got.body, `value="change_password"`) {
		t.Errorf("the step answered %d (Location %q), want the login form:\n%s", got.StatusCode, got.Header.Get("Location"), got.body)
	}
	if strings.Contains(got.Header.Get("Location"), "code=") || sessionCookieOf(got) != nil {
		t.Errorf("the step issued a code or started a session: %q", got.Header.Get("Location"))
	}
	u := siUser(t, d, email)
	if u.PasswordHash != hashBefore {
		t.Error("the step changed the password")
	}
	page, err := d.in.App.Core.Store.ListAudit(context.Background(), store.AuditFilter{Action: "password.changed", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range page.Items {
		if e.TargetID == u.ID {
			t.Errorf("password.changed recorded: %+v", e)
		}
	}
}

// TestChangePasswordStepIsNoReauthentication, on both backends: the step is
// refused (the login form, nothing changed, no code) to a signed-in user
// who has no temporary password, and to one who has but whose request asks
// for a fresh login (prompt=login, max_age) that has not happened; the
// legitimate step right after a temporary-password login keeps that
// login's amr (pwd otp mfa) under the change's auth_time, and the step
// reached from an older session gives amr [pwd] (what the step proved),
// never the older session's factors.
func TestChangePasswordStepIsNoReauthentication(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSignIn(t, b)
			first := d.oauth("first", d.firstSecret, oidc.ScopeOpenID)
			reauth := []struct{ name, param, value string }{
				{"prompt_login", "prompt", "login"},
				{"max_age", "max_age", "1"},
			}
			for _, tc := range reauth {
				// stepRefusedAtFreshLogin: a second later, the request asking
				// tc's fresh login shows the login page, and a post of the
				// change-password step there is refused.
				stepRefusedAtFreshLogin := func(t *testing.T, hc *http.Client, email string) {
					t.Helper()
					time.Sleep(secondLater)
					login := siGet(t, hc, first.AuthCodeURL("s2", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()),
						oauth2.SetAuthURLParam(tc.param, tc.value)))
					if login.StatusCode != http.StatusOK || !strings.Contains(login.body, `name="username"`) {
						t.Fatalf("%s=%s: %d, want the login page", tc.param, tc.value, login.StatusCode)
					}
					refusedStep(t, d, changeStep(t, hc, login, csOldPassword), email, siUser(t, d, email).PasswordHash)
				}
				// The reviewer's case: a TOTP user without a temporary
				// password, signed in with both factors, asked to sign in
				// again.
				t.Run("fail/"+tc.name+"_with_the_password_alone", func(t *testing.T) {
					email := "reauth-" + tc.name + "@example.com"
					secret := csUser(t, d, email, false)
					hc := siBrowser(t)
					signedIn := csSignIn(t, hc, siGet(t, hc, first.AuthCodeURL("s1", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))), email, secret)
					d.callback(t, signedIn)
					stepRefusedAtFreshLogin(t, hc, email)
				})
				// A user who must change a temporary password, whose browser
				// kept the session of an earlier login: the request asks for
				// a fresh login, so the step is not reachable before it.
				t.Run("fail/"+tc.name+"_temporary_password_older_session", func(t *testing.T) {
					email := "reauth-tmp-" + tc.name + "@example.com"
					secret := csUser(t, d, email, true)
					hc := siBrowser(t)
					step := csSignIn(t, hc, siGet(t, hc, first.AuthCodeURL("s1", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))), email, secret)
					if step.StatusCode != http.StatusOK || !strings.Contains(step.body, `value="change_password"`) {
						t.Fatalf("after the temporary password: %d, want the change-password step", step.StatusCode)
					}
					stepRefusedAtFreshLogin(t, hc, email)
				})
			}
			t.Run("fail/no_temporary_password", func(t *testing.T) {
				// Signed in with the password alone, at a consent page: the
				// step changes nothing.
				hc := siBrowser(t)
				third := d.oauth("third", d.thirdSecret, oidc.ScopeOpenID)
				consent := siGet(t, hc, third.AuthCodeURL("c", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))).
					submit(t, hc, url.Values{"username": {siEmail}, "password": {siPassword}})
				if consent.StatusCode != http.StatusOK || !strings.Contains(consent.body, `value="allow"`) {
					t.Fatalf("after the login: %d, want the consent page", consent.StatusCode)
				}
				refusedStep(t, d, changeStep(t, hc, consent, siPassword), siEmail, siUser(t, d, siEmail).PasswordHash)
			})
			t.Run("fail/not_signed_in", func(t *testing.T) {
				hc := siBrowser(t)
				login := siGet(t, hc, first.AuthCodeURL("n", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
				refusedStep(t, d, changeStep(t, hc, login, siPassword), siEmail, siUser(t, d, siEmail).PasswordHash)
			})
			t.Run("ok/right_after_the_temporary_password_login", func(t *testing.T) {
				email := "tmp-now@example.com"
				secret := csUser(t, d, email, true)
				hc := siBrowser(t)
				v := oauth2.GenerateVerifier()
				before := time.Now().Add(-time.Second).Truncate(time.Second)
				step := csSignIn(t, hc, siGet(t, hc, first.AuthCodeURL("t", oauth2.S256ChallengeOption(v))), email, secret)
				if step.StatusCode != http.StatusOK || !strings.Contains(step.body, `value="change_password"`) {
					t.Fatalf("after the temporary password: %d, want the change-password step", step.StatusCode)
				}
				changed := time.Now().Truncate(time.Second)
				amr, acr, authTime := csClaims(t, d, first, changeStep(t, hc, step, csOldPassword), v)
				if !slices.Equal(amr, []string{"pwd", "otp", "mfa"}) || acr != "mfa" {
					t.Errorf("amr %v acr %q, want the login's [pwd otp mfa], mfa", amr, acr)
				}
				if authTime.Before(before) || authTime.Before(changed) || authTime.After(time.Now()) {
					t.Errorf("auth_time %v, want the change's (at or after %v)", authTime, changed)
				}
				if u := siUser(t, d, email); u.MustChangePassword {
					t.Error("must_change_password still set after the change")
				}
			})
			t.Run("ok/from_an_older_session", func(t *testing.T) {
				// The step shown again to a session of an earlier login (the
				// contract's "user must change the password" row): the new
				// session's amr is what the step proved, the password.
				email := "tmp-later@example.com"
				secret := csUser(t, d, email, true)
				hc := siBrowser(t)
				step := csSignIn(t, hc, siGet(t, hc, first.AuthCodeURL("t1", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))), email, secret)
				if step.StatusCode != http.StatusOK || !strings.Contains(step.body, `value="change_password"`) {
					t.Fatalf("after the temporary password: %d, want the change-password step", step.StatusCode)
				}
				time.Sleep(secondLater)
				v := oauth2.GenerateVerifier()
				again := siGet(t, hc, first.AuthCodeURL("t2", oauth2.S256ChallengeOption(v)))
				if again.StatusCode != http.StatusOK || !strings.Contains(again.body, `value="change_password"`) {
					t.Fatalf("a later request of the session: %d, want the change-password step", again.StatusCode)
				}
				changed := time.Now().Truncate(time.Second)
				amr, acr, authTime := csClaims(t, d, first, changeStep(t, hc, again, csOldPassword), v)
				if !slices.Equal(amr, []string{"pwd"}) || acr != "pwd" {
					t.Errorf("amr %v acr %q, want [pwd], pwd (not the older session's factors)", amr, acr)
				}
				if authTime.Before(changed) || authTime.After(time.Now()) {
					t.Errorf("auth_time %v, want the change's (at or after %v)", authTime, changed)
				}
			})
		})
	}
}

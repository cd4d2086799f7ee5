package server_test

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// The policy's mfa.required_for_level is checked with the roles the
// tokens of a login will carry, at every issuance: the login page and its
// single sign-on use the roles of the organisation the request names, a
// refresh refuses a role gained since a login without a second factor, and
// a tenant switch refuses one held in the organisation switched to. Before
// the fix the rule was checked only when a password login started, with
// the user's platform roles: each test below got admin tokens with acr pwd.

// mfaLogin signs u in through "web" with the password pw and a TOTP factor
// it enrols first (the password grant, then the mfa-otp grant): a session
// whose amr has "mfa", for a user whose roles need it.
func (a *acctEnv) mfaLogin(t *testing.T, u store.User, pw string) st.TokenResponse {
	t.Helper()
	secret, _ := st.EnrolTOTPPreviousStep(t, a.in.App.MFA, u)
	m := a.c.PostForm("/oauth2/token", st.PasswordForm(u.Email, pw, ""), st.Basic("web", a.webSecret)).
		ExpectError(http.StatusBadRequest, "mfa_required").Map()
	tok, _ := m["mfa_token"].(string)
	return a.c.PostForm("/oauth2/token", url.Values{"grant_type": {token.GrantMFAOTP}, "mfa_token": {tok},
		"otp": {totpAt(t, secret, time.Now())}}, st.Basic("web", a.webSecret)).Token()
}

// wantACR checks an access token's roles hold role and its acr.
func wantACR(t *testing.T, what, at, role, acr string) {
	t.Helper()
	c := decodeClaims(t, at)
	if !slices.Contains(claimRoles(t, c), role) || fmt.Sprint(c["acr"]) != acr {
		t.Fatalf("%s: roles %v acr %v, want %s with acr %s", what, c["roles"], c["acr"], role, acr)
	}
}

// TestTenantCodeFlowAsksForRequiredMFA: with organisations on and MFA
// required from admin up, a member who is acme's admin (a "user" on the
// platform) signing in through the code flow naming acme is asked for the
// second factor on the login page and gets acr mfa; one without a factor
// is led to enrolment, never to a code; a browser session from a
// password-only login naming no organisation does not yield an acme code
// (the login page again; prompt=none: login_required). Before the fix the
// password alone gave an acme admin token with acr pwd.
func TestTenantCodeFlowAsksForRequiredMFA(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSignIn(t, b, map[string]string{"PORTCULLIS_TENANTS": "on", "PORTCULLIS_RATE_LIMITS": "off",
				"PORTCULLIS_POLICY_FILE": mfaPolicyFile(t, 50)})
			core := d.in.App.Core
			fx := st.NewFixtures(t, core)
			acme := store.Tenant{Slug: "acme", Name: "Acme", Active: true}
			if err := core.Store.CreateTenant(t.Context(), &acme); err != nil {
				t.Fatal(err)
			}
			const enrolled, bare = "enrolled@example.com", "bare@example.com"
			for _, email := range []string{enrolled, bare} {
				u := fx.User(t, email, siPassword, "user")
				if _, err := core.Store.GrantTenantRole(t.Context(), acme.ID, u.ID, "admin"); err != nil {
					t.Fatal(err)
				}
			}
			secret, _ := st.EnrolTOTPPreviousStep(t, d.in.App.MFA, siUser(t, d, enrolled))
			conf := d.oauth("first", d.firstSecret, oidc.ScopeOpenID)
			start := func(hc *http.Client, verifier string, extra ...oauth2.AuthCodeOption) siPage {
				opts := append([]oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("tenant", "acme")}, extra...)
				return siGet(t, hc, conf.AuthCodeURL("st", opts...))
			}

			t.Run("ok/second_step_then_acr_mfa", func(t *testing.T) {
				hc, verifier := siBrowser(t), oauth2.GenerateVerifier()
				step := start(hc, verifier).submit(t, hc, url.Values{"username": {enrolled}, "password": {siPassword}})
				if step.StatusCode != http.StatusOK || !strings.Contains(step.body, `name="step" value="mfa"`) {
					t.Fatalf("after the password: %d, want the second step:\n%s", step.StatusCode, step.body)
				}
				q := d.callback(t, step.submit(t, hc, url.Values{"code": {totpAt(t, secret, time.Now())}, "mfa_action": {"verify"}}))
				tok, err := conf.Exchange(t.Context(), q.Get("code"), oauth2.VerifierOption(verifier))
				if err != nil {
					t.Fatalf("exchange: %v", err)
				}
				wantACR(t, "acme token", tok.AccessToken, "admin", "mfa")
			})
			t.Run("fail/no_factor_is_led_to_enrolment", func(t *testing.T) {
				hc := siBrowser(t)
				enrol := start(hc, oauth2.GenerateVerifier()).submit(t, hc, url.Values{"username": {bare}, "password": {siPassword}})
				if enrol.StatusCode != http.StatusOK || !strings.Contains(enrol.body, "Set up two-step verification") || sessionCookieOf(enrol) != nil {
					t.Fatalf("after the password: %d, want the enrolment step and no session:\n%s", enrol.StatusCode, enrol.body)
				}
			})
			t.Run("fail/password_session_reused_for_acme", func(t *testing.T) {
				// A login naming no organisation: the platform role "user"
				// needs no second factor, so the password alone is a session.
				hc := siBrowser(t)
				login := siGet(t, hc, conf.AuthCodeURL("p", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
				d.callback(t, login.submit(t, hc, url.Values{"username": {bare}, "password": {siPassword}}))
				again := start(hc, oauth2.GenerateVerifier())
				if again.StatusCode != http.StatusOK || !strings.Contains(again.body, `name="username"`) {
					t.Fatalf("single sign-on into acme with a password session: %d, want the login page:\n%s", again.StatusCode, again.body)
				}
				q := d.callback(t, start(hc, oauth2.GenerateVerifier(), oauth2.SetAuthURLParam("prompt", "none")))
				if q.Get("error") != "login_required" || q.Get("code") != "" {
					t.Fatalf("prompt=none: %v, want login_required", q)
				}
				enrol := again.submit(t, hc, url.Values{"username": {bare}, "password": {siPassword}})
				if enrol.StatusCode != http.StatusOK || !strings.Contains(enrol.body, "Set up two-step verification") {
					t.Fatalf("signing in again: %d, want the enrolment step:\n%s", enrol.StatusCode, enrol.body)
				}
			})
		})
	}
}

// TestRefreshOwesSecondFactorForGainedRole: a password-only session of a
// user later granted admin (MFA required from admin up) is refused at its
// next refresh (400 invalid_grant saying a second factor is needed), its
// refresh token then answers invalid_grant as an ended session's (no reuse
// alarm), and a new password login answers mfa_required; a session whose
// login used the second factor refreshes into the new role. Before the fix
// the refresh gave admin tokens with acr pwd.
func TestRefreshOwesSecondFactorForGainedRole(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			a := newAcctEnvOn(t, b, map[string]string{"PORTCULLIS_RATE_LIMITS": "off", "PORTCULLIS_POLICY_FILE": mfaPolicyFile(t, 50)})
			root := st.Bearer(a.mfaLogin(t, a.root, rootPass).AccessToken)
			const bob, carl, pw = "bob@example.com", "carl@example.com", "a long password for the test 1"
			ub, uc := a.fx.User(t, bob, pw, "user"), a.fx.User(t, carl, pw, "user")
			pwd := a.login(t, bob, pw)
			withMFA := a.mfaLogin(t, uc, pw)
			for _, u := range []store.User{ub, uc} {
				a.c.PostJSON("/admin/users/"+u.ID+"/roles", map[string]string{"role": "admin"}, root).ExpectStatus(http.StatusOK)
			}

			r := a.refresh(t, pwd.RefreshToken).ExpectError(http.StatusBadRequest, "invalid_grant")
			if desc := fmt.Sprint(r.Map()["error_description"]); !strings.Contains(desc, "second factor") {
				t.Fatalf("refused refresh says %q, want that a second factor is required", desc)
			}
			a.refresh(t, pwd.RefreshToken).ExpectError(http.StatusBadRequest, "invalid_grant")
			a.c.PostForm("/oauth2/token", st.PasswordForm(bob, pw, ""), st.Basic("web", a.webSecret)).ExpectError(http.StatusBadRequest, "mfa_required")
			events, err := a.in.App.Core.Store.ListAudit(t.Context(), store.AuditFilter{Action: "token.refresh_reuse_detected", Limit: 10})
			if err != nil || len(events.Items) != 0 {
				t.Fatalf("reuse alarms %v (%v), want none", events.Items, err)
			}

			wantACR(t, "refresh of the mfa session", a.refresh(t, withMFA.RefreshToken).Token().AccessToken, "admin", "mfa")
		})
	}
}

// TestTenantSwitchOwesSecondFactor: a password-only token of globex (role
// user there) cannot be exchanged into acme, where the same person is
// admin and MFA is required from admin up (400 invalid_grant); the token of
// a login that used the second factor can. Before the fix the switch
// answered a token of acme's admin with acr pwd.
func TestTenantSwitchOwesSecondFactor(t *testing.T) {
	for _, b := range tenantBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			a := newAcctEnvOn(t, b, map[string]string{"PORTCULLIS_TENANTS": "on", "PORTCULLIS_RATE_LIMITS": "off",
				"PORTCULLIS_POLICY_FILE": mfaPolicyFile(t, 50)})
			a.fx.Client(t, clients.Spec{ID: "switcher", Name: "Switcher", Public: true,
				Grants: []string{token.GrantPassword, token.GrantRefreshToken, token.GrantTokenExchange}, Audiences: []string{a.fx.Issuer()}})
			e := &tenantEnv{acctEnv: a, rootTok: a.mfaLogin(t, a.root, rootPass).AccessToken}
			acme, globex := e.createTenant(t, "acme"), e.createTenant(t, "globex")
			const email = "switch@example.com"
			u := e.member(t, acme, email, "admin")
			e.member(t, globex, email, "user")

			pwd := e.loginToSwitcher(t, email, "globex")
			r := e.exchange(t, pwd.AccessToken, "acme").ExpectError(http.StatusBadRequest, "invalid_grant")
			if desc := fmt.Sprint(r.Map()["error_description"]); !strings.Contains(desc, "second factor") {
				t.Fatalf("refused switch says %q", desc)
			}

			secret, _ := st.EnrolTOTPPreviousStep(t, e.in.App.MFA, u)
			form := st.PasswordForm(email, tenantPass, "")
			form.Set("tenant", "globex")
			form.Set("client_id", "switcher")
			m := e.c.PostForm("/oauth2/token", form).ExpectError(http.StatusBadRequest, "mfa_required").Map()
			tok, _ := m["mfa_token"].(string)
			withMFA := e.c.PostForm("/oauth2/token", url.Values{"grant_type": {token.GrantMFAOTP}, "client_id": {"switcher"},
				"mfa_token": {tok}, "otp": {totpAt(t, secret, time.Now())}}).Token()
			wantTenantToken(t, "switch of an mfa login into acme", e.exchange(t, withMFA.AccessToken, "acme").Token().AccessToken, "acme")
		})
	}
}

// TestPasswordChangeOwesSecondFactor: a password change through the API by
// a user whose role (granted after a password-only login) requires a
// second factor changes the password and answers 400 mfa_required with an
// enrolment mfa_token instead of a session. Before the fix it answered an
// admin session with acr pwd.
func TestPasswordChangeOwesSecondFactor(t *testing.T) {
	a := newAcctEnvOn(t, st.SQLite, map[string]string{"PORTCULLIS_RATE_LIMITS": "off", "PORTCULLIS_POLICY_FILE": mfaPolicyFile(t, 50)})
	root := st.Bearer(a.mfaLogin(t, a.root, rootPass).AccessToken)
	const dan, pw, next = "dan@example.com", "dan's long password one", "dan's long password two"
	u := a.fx.User(t, dan, pw, "user")
	tr := a.login(t, dan, pw)
	a.c.PostJSON("/admin/users/"+u.ID+"/roles", map[string]string{"role": "admin"}, root).ExpectStatus(http.StatusOK)
	m := a.c.PostJSON("/auth/password/change", map[string]string{"current_password": pw, "new_password": next},
		st.Bearer(tr.AccessToken)).ExpectError(http.StatusBadRequest, "mfa_required").Map()
	if m["access_token"] != nil || m["mfa_token"] == nil || m["mfa_enrollment_required"] != true {
		t.Fatalf("answer %v, want mfa_required with an enrolment mfa_token and no token", m)
	}
	a.loginFails(t, dan, pw)
	a.c.PostForm("/oauth2/token", st.PasswordForm(dan, next, ""), st.Basic("web", a.webSecret)).ExpectError(http.StatusBadRequest, "mfa_required")
}

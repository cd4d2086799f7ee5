package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"image/png"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/server/mfa"
	"github.com/portcullis-auth/portcullis/server/passkeys/passkeystest"
	"github.com/portcullis-auth/portcullis/server/ratelimit"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// The self-service MFA endpoints (/auth/mfa…) and the admin MFA reset over
// HTTP, on PostgreSQL + Redis and on SQLite. Tokens are minted with the
// token service (IssueForUser) rather than the password grant, so that the
// tests hold whatever the password grant asks of a user with MFA.

var mfaBackends = []st.Backend{st.PostgresRedis, st.SQLite}

const (
	mfaOrigin   = "http://localhost:7443" // where the "browser" runs the WebAuthn ceremonies
	mfaRootPass = "root passphrase for mfa tests"
	mfaAdmPass  = "admin passphrase for mfa tests"
	mfaAnnPass  = "ann passphrase for mfa tests"
)

// mfaDeployment is a running instance with passkeys on (RP ID localhost),
// a super_admin, an admin and a user, the password-grant client "web"
// (issuer audience) and "third", a third-party client (authorization code,
// not first-party) that also has the password grant.
type mfaDeployment struct {
	in             *st.Instance
	c              *st.Client
	fx             *st.Fixtures
	root, adm, ann store.User
	webSecret      string // of the client "web"
}

// newMFADeployment starts one; requiredLevel > 0 writes a policy (the
// default roles) whose mfa.required_for_level is that level.
func newMFADeployment(t *testing.T, b st.Backend, requiredLevel int, settings ...map[string]string) *mfaDeployment {
	t.Helper()
	env := st.NewEnv(t, b)
	for _, m := range settings {
		for k, v := range m {
			env[k] = v
		}
	}
	env["PORTCULLIS_WEBAUTHN_RP_ID"] = "localhost"
	env["PORTCULLIS_WEBAUTHN_ORIGINS"] = mfaOrigin
	if requiredLevel > 0 {
		env["PORTCULLIS_POLICY_FILE"] = mfaPolicyFile(t, requiredLevel)
	}
	in := st.Start(t, env)
	fx := st.NewFixtures(t, in.App.Core)
	d := &mfaDeployment{in: in, c: in.Client(t), fx: fx}
	d.root = fx.User(t, "root@example.com", mfaRootPass, "super_admin")
	d.adm = fx.User(t, "adm@example.com", mfaAdmPass, "admin")
	d.ann = fx.User(t, "ann@example.com", mfaAnnPass, "user")
	d.webSecret = fx.AdminClient(t, "web")
	fx.Client(t, clients.Spec{ID: "third", Name: "Third", Grants: []string{"password", "authorization_code", "refresh_token"},
		RedirectURIs: []string{"https://rp.example/callback"}})
	return d
}

// token is an access token of u issued through clientID.
func (d *mfaDeployment) token(t *testing.T, u store.User, clientID string) st.Option {
	t.Helper()
	ctx := context.Background()
	c, err := d.in.App.Core.Store.GetClient(ctx, clientID)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := d.in.App.Tokens.IssueForUser(ctx, c, u, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	return st.Bearer(resp.AccessToken)
}

// mfaLogin is an access token of u's login through "web" with the
// password and then the authenticator app of secret (amr holds "mfa",
// auth_time is now): what a write of a factor asks of a person who has
// one. It uses the next TOTP step (the enrolment's is spent), so it serves
// once per user and test.
func (d *mfaDeployment) mfaLogin(t *testing.T, u store.User, password, secret string) st.Option {
	t.Helper()
	return st.Bearer(mfaLoginWith(t, d.c, "web", d.webSecret, u.Email, password, grantMFAOTP, "otp", st.NextTOTPCode(t, secret)))
}

// recoveryLogin is mfaLogin with a recovery code instead of the app.
func (d *mfaDeployment) recoveryLogin(t *testing.T, u store.User, password, code string) st.Option {
	t.Helper()
	return st.Bearer(mfaLoginWith(t, d.c, "web", d.webSecret, u.Email, password, grantMFARecovery, "recovery_code", code))
}

// mfaLoginWith runs a password grant and its second step (grant, with
// code as param) through any client of any deployment and returns the
// access token.
func mfaLoginWith(t *testing.T, c *st.Client, clientID, clientSecret, email, password, grant, param, code string) string {
	t.Helper()
	tok, _ := c.PostForm("/oauth2/token", st.PasswordForm(email, password, ""), st.Basic(clientID, clientSecret)).
		ExpectError(http.StatusBadRequest, "mfa_required").Map()["mfa_token"].(string)
	var resp struct {
		AccessToken string `json:"access_token"`
	}
	c.PostForm("/oauth2/token", url.Values{"grant_type": {grant}, "mfa_token": {tok}, param: {code}},
		st.Basic(clientID, clientSecret)).ExpectStatus(http.StatusOK).JSON(&resp)
	return resp.AccessToken
}

// mfaToken is an mfa_token of u's password login through "web" (the
// second step the password grant answers with mfa_required).
func (d *mfaDeployment) mfaToken(t *testing.T, u store.User) (string, bool) {
	t.Helper()
	ch, err := d.in.App.MFA.Begin(context.Background(), u, nil, ratelimit.Counted{}, "web", "", "", time.Now(), []string{mfa.AMRPassword})
	if err != nil || ch == nil {
		t.Fatalf("begin: %v %v", ch, err)
	}
	return ch.Token, ch.EnrollmentRequired
}

type mfaStatus struct {
	TOTP     bool `json:"totp"`
	WebAuthn []struct {
		ID         string     `json:"id"`
		Name       string     `json:"name"`
		CreatedAt  time.Time  `json:"created_at"`
		LastUsedAt *time.Time `json:"last_used_at"`
	} `json:"webauthn"`
	RecoveryCodesLeft int `json:"recovery_codes_left"`
}

func (d *mfaDeployment) status(t *testing.T, auth st.Option) mfaStatus {
	t.Helper()
	var s mfaStatus
	d.c.Get("/auth/mfa", auth).ExpectStatus(http.StatusOK).JSON(&s)
	return s
}

type totpEnrolment struct {
	Secret string `json:"secret"`
	URI    string `json:"otpauth_uri"`
	QRPNG  string `json:"qr_png"`
}

// enrolTOTP starts and confirms an authenticator app for auth, returning
// the secret and the recovery codes.
func (d *mfaDeployment) enrolTOTP(t *testing.T, auth st.Option) (string, []string) {
	t.Helper()
	return enrolTOTPWith(t, d.c, auth)
}

// enrolTOTPWith is enrolTOTP through the client c of any deployment.
func enrolTOTPWith(t *testing.T, c *st.Client, auth st.Option) (string, []string) {
	t.Helper()
	var en totpEnrolment
	c.PostJSON("/auth/mfa/totp", nil, auth).ExpectStatus(http.StatusCreated).JSON(&en)
	code, err := totp.GenerateCode(en.Secret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var rc struct {
		Codes []string `json:"recovery_codes"`
	}
	c.PostJSON("/auth/mfa/totp/confirm", map[string]string{"code": code}, auth).ExpectStatus(http.StatusOK).JSON(&rc)
	if len(rc.Codes) != 10 {
		t.Fatalf("%d recovery codes", len(rc.Codes))
	}
	return en.Secret, rc.Codes
}

// audited reports whether the store holds an event of action with outcome
// about target.
func (d *mfaDeployment) audited(t *testing.T, action string, outcome store.Outcome, target string, details map[string]string) bool {
	t.Helper()
	page, err := d.in.App.Core.Store.ListAudit(context.Background(), store.AuditFilter{Action: action, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(page.Items, func(e store.AuditEvent) bool {
		if e.Outcome != outcome || e.TargetID != target {
			return false
		}
		for k, v := range details {
			if e.Details[k] != v {
				return false
			}
		}
		return true
	})
}

// TestMFATOTPSelfService: a person sets up an authenticator app (a wrong
// first code changes nothing), reads their factors, replaces their recovery
// codes, and removes the app only with their current password.
func TestMFATOTPSelfService(t *testing.T) {
	for _, b := range mfaBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newMFADeployment(t, b, 0)
			ann := d.token(t, d.ann, "web")
			if s := d.status(t, ann); s.TOTP || len(s.WebAuthn) != 0 || s.RecoveryCodesLeft != 0 {
				t.Fatalf("fresh status %+v", s)
			}
			d.c.PostJSON("/auth/mfa/recovery-codes", nil, ann).ExpectError(http.StatusConflict, "conflict")

			var en totpEnrolment
			d.c.PostJSON("/auth/mfa/totp", nil, ann).ExpectStatus(http.StatusCreated).JSON(&en)
			raw, err := base64.StdEncoding.DecodeString(en.QRPNG)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := png.Decode(bytes.NewReader(raw)); err != nil {
				t.Fatalf("qr_png is not a PNG: %v", err)
			}
			if !strings.HasPrefix(en.URI, "otpauth://totp/") || !strings.Contains(en.URI, "secret="+en.Secret) || len(en.Secret) < 32 {
				t.Fatalf("enrolment %+v", en)
			}
			// Bad input: 400, and nothing changes.
			d.c.Do(http.MethodPost, "/auth/mfa/totp/confirm", nil, "", ann).ExpectError(http.StatusUnsupportedMediaType, "invalid_request")
			d.c.PostJSON("/auth/mfa/totp/confirm", map[string]string{}, ann).ExpectError(http.StatusBadRequest, "invalid_request")
			d.c.PostJSON("/auth/mfa/totp/confirm", map[string]any{"code": 123456}, ann).ExpectError(http.StatusBadRequest, "invalid_request")
			d.c.PostJSON("/auth/mfa/totp/confirm", map[string]string{"code": "12345678901234567"}, ann).ExpectError(http.StatusBadRequest, "invalid_request")
			good, err := totp.GenerateCode(en.Secret, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			wrong := "000000"
			if good == wrong {
				wrong = "111111"
			}
			d.c.PostJSON("/auth/mfa/totp/confirm", map[string]string{"code": wrong}, ann).ExpectError(http.StatusBadRequest, "invalid_request")
			if s := d.status(t, ann); s.TOTP || s.RecoveryCodesLeft != 0 {
				t.Fatalf("a wrong code changed the factors: %+v", s)
			}
			var rc struct {
				Codes []string `json:"recovery_codes"`
			}
			d.c.PostJSON("/auth/mfa/totp/confirm", map[string]string{"code": good}, ann).ExpectStatus(http.StatusOK).JSON(&rc)
			if len(rc.Codes) != 10 {
				t.Fatalf("recovery codes %v", rc.Codes)
			}
			if s := d.status(t, ann); !s.TOTP || s.RecoveryCodesLeft != 10 {
				t.Fatalf("after confirming: %+v", s)
			}
			if !d.audited(t, "mfa.enrolled", store.OutcomeSuccess, d.ann.ID, map[string]string{"method": "totp"}) {
				t.Fatal("no mfa.enrolled event")
			}
			// Changing the factors now takes a sign-in with the app.
			ann = d.mfaLogin(t, d.ann, mfaAnnPass, en.Secret)
			// A confirmed app is replaced only by removing it first.
			d.c.PostJSON("/auth/mfa/totp", nil, ann).ExpectError(http.StatusConflict, "conflict")
			d.c.PostJSON("/auth/mfa/totp/confirm", map[string]string{"code": good}, ann).ExpectError(http.StatusConflict, "conflict")

			var again struct {
				Codes []string `json:"recovery_codes"`
			}
			d.c.PostJSON("/auth/mfa/recovery-codes", nil, ann).ExpectStatus(http.StatusOK).JSON(&again)
			if len(again.Codes) != 10 || slices.ContainsFunc(again.Codes, func(c string) bool { return slices.Contains(rc.Codes, c) }) {
				t.Fatalf("regenerated codes %v (old %v)", again.Codes, rc.Codes)
			}
			d.c.PostJSON("/auth/mfa/recovery-codes", map[string]string{"x": "y"}, ann).ExpectError(http.StatusBadRequest, "invalid_request")

			// Removal needs the current password.
			d.c.Do(http.MethodDelete, "/auth/mfa/totp", nil, "", ann).ExpectError(http.StatusUnsupportedMediaType, "invalid_request")
			d.c.Do(http.MethodDelete, "/auth/mfa/totp", []byte(`{}`), "application/json", ann).ExpectError(http.StatusBadRequest, "invalid_request")
			d.c.Do(http.MethodDelete, "/auth/mfa/totp", []byte(`{"current_password":"wrong password!"}`), "application/json", ann).
				ExpectError(http.StatusBadRequest, "invalid_grant")
			if s := d.status(t, ann); !s.TOTP {
				t.Fatal("removed with a wrong password")
			}
			if !d.audited(t, "mfa.removed", store.OutcomeFailure, d.ann.ID, nil) {
				t.Fatal("the wrong password is not audited")
			}
			body, _ := json.Marshal(map[string]string{"current_password": mfaAnnPass})
			d.c.Do(http.MethodDelete, "/auth/mfa/totp", body, "application/json", ann).ExpectStatus(http.StatusNoContent)
			if s := d.status(t, ann); s.TOTP || s.RecoveryCodesLeft != 0 {
				t.Fatalf("after removal: %+v", s)
			}
			if !d.audited(t, "mfa.removed", store.OutcomeSuccess, d.ann.ID, map[string]string{"method": "totp"}) {
				t.Fatal("no mfa.removed event")
			}
			d.c.Do(http.MethodDelete, "/auth/mfa/totp", body, "application/json", ann).ExpectError(http.StatusNotFound, "not_found")
		})
	}
}

// TestFactorRemovalUnderLoginThrottle: the current password of a factor's
// removal is checked under the account's login throttle (a thief holding a
// token cannot guess it freely): past the limit even the right password is
// 429, and the factors stay.
func TestFactorRemovalUnderLoginThrottle(t *testing.T) {
	for _, b := range mfaBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newMFADeployment(t, b, 0, map[string]string{"PORTCULLIS_LOGIN_FAILURE_LIMIT": "2"})
			ann := d.token(t, d.ann, "web")
			d.enrolTOTP(t, ann)
			remove := func(pw string) *st.Response {
				body, _ := json.Marshal(map[string]string{"current_password": pw})
				return d.c.Do(http.MethodDelete, "/auth/mfa/totp", body, "application/json", ann)
			}
			remove("guess one").ExpectError(http.StatusBadRequest, "invalid_grant")
			remove("guess two").ExpectError(http.StatusBadRequest, "invalid_grant")
			remove(mfaAnnPass).ExpectError(http.StatusTooManyRequests, "rate_limited")
			if s := d.status(t, ann); !s.TOTP {
				t.Fatal("removed past the throttle")
			}
		})
	}
}

// TestMFAEndpointsNeedAFirstPartyUserToken: no token is 401; a third-party
// application's token is 403 at every /auth/mfa endpoint and changes
// nothing.
func TestMFAEndpointsNeedAFirstPartyUserToken(t *testing.T) {
	for _, b := range mfaBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newMFADeployment(t, b, 0)
			own := d.token(t, d.ann, "web")
			d.enrolTOTP(t, own)
			foreign := d.token(t, d.ann, "third")
			pw, _ := json.Marshal(map[string]string{"current_password": mfaAnnPass})
			routes := []struct {
				method, path string
				body         []byte
			}{
				{http.MethodGet, "/auth/mfa", nil},
				{http.MethodPost, "/auth/mfa/totp", nil},
				{http.MethodPost, "/auth/mfa/totp/confirm", []byte(`{"code":"123456"}`)},
				{http.MethodDelete, "/auth/mfa/totp", pw},
				{http.MethodPost, "/auth/mfa/recovery-codes", nil},
				{http.MethodPost, "/auth/mfa/webauthn/register/begin", nil},
				{http.MethodPost, "/auth/mfa/webauthn/register/finish", []byte(`{"handle":"h","credential":{}}`)},
				{http.MethodDelete, "/auth/mfa/webauthn/abc", pw},
			}
			for _, r := range routes {
				ct := ""
				if r.body != nil {
					ct = "application/json"
				}
				d.c.Do(r.method, r.path, r.body, ct).ExpectError(http.StatusUnauthorized, "unauthorized")
				d.c.Do(r.method, r.path, r.body, ct, foreign).ExpectError(http.StatusForbidden, "forbidden")
			}
			if s := d.status(t, own); !s.TOTP || s.RecoveryCodesLeft != 10 {
				t.Fatalf("a refused request changed the factors: %+v", s)
			}
		})
	}
}

// TestMFATokenOnlyEnrols: an mfa_token is accepted as the bearer only at
// POST /auth/mfa/totp and …/confirm, only while its login must enrol, and
// only until a factor is enrolled; everywhere else it is 401 invalid_token.
func TestMFATokenOnlyEnrols(t *testing.T) {
	for _, b := range mfaBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newMFADeployment(t, b, 50) // admin and above must use MFA
			tok, enrol := d.mfaToken(t, d.adm)
			if !enrol {
				t.Fatal("the admin's login does not require enrolment")
			}
			mt := st.Bearer(tok)
			// Every other route of the API that takes a bearer refuses it as
			// an invalid token; the public ones do nothing with it.
			checked := 0
			for _, r := range d.in.App.Server.Echo().Routes() {
				path := echoParam.ReplaceAllString(r.Path, "x")
				if !strings.HasPrefix(path, "/auth/") && !strings.HasPrefix(path, "/admin/") && path != "/userinfo" ||
					mfaEnrolRoutes[r.Method+" "+r.Path] || r.Method == http.MethodOptions || r.Method == "echo_route_any" {
					continue
				}
				var body []byte
				ct := ""
				if r.Method != http.MethodGet && r.Method != http.MethodHead {
					body, ct = []byte(`{}`), "application/json"
				}
				resp := d.c.Do(r.Method, path, body, ct, mt)
				if publicAccountRoutes[r.Method+" "+r.Path] {
					if resp.StatusCode < 400 {
						t.Errorf("%s %s with an mfa_token: %d", r.Method, path, resp.StatusCode)
					}
					continue
				}
				resp.ExpectError(http.StatusUnauthorized, "invalid_token")
				checked++
			}
			if checked < 30 {
				t.Fatalf("only %d routes checked", checked)
			}
			// A token that is neither an access token nor an mfa_token.
			d.c.PostJSON("/auth/mfa/totp", nil, st.Bearer("not-a-token")).ExpectError(http.StatusUnauthorized, "invalid_token")

			// Enrolment with it: start, a wrong code, the right one.
			var en totpEnrolment
			d.c.PostJSON("/auth/mfa/totp", nil, mt).ExpectStatus(http.StatusCreated).JSON(&en)
			d.c.PostJSON("/auth/mfa/totp/confirm", map[string]string{"code": "12"}, mt).ExpectError(http.StatusBadRequest, "invalid_request")
			code, _ := totp.GenerateCode(en.Secret, time.Now())
			d.c.PostJSON("/auth/mfa/totp/confirm", map[string]string{"code": code}, mt).ExpectStatus(http.StatusOK)
			st2, err := d.in.App.MFA.Status(context.Background(), d.adm.ID)
			if err != nil || !st2.TOTP {
				t.Fatalf("status after enrolling with the mfa_token: %+v %v", st2, err)
			}
			// Enrolled now: the same token can no longer start (and so
			// never replace) a factor.
			d.c.PostJSON("/auth/mfa/totp", nil, mt).ExpectError(http.StatusForbidden, "forbidden")
			d.c.PostJSON("/auth/mfa/totp/confirm", map[string]string{"code": code}, mt).ExpectError(http.StatusForbidden, "forbidden")

			// An mfa_token of a login that only needs its second factor.
			tok2, enrol2 := d.mfaToken(t, d.adm)
			if enrol2 {
				t.Fatal("enrolment still required")
			}
			d.c.PostJSON("/auth/mfa/totp", nil, st.Bearer(tok2)).ExpectError(http.StatusForbidden, "forbidden")
			d.c.Get("/userinfo", st.Bearer(tok2)).ExpectError(http.StatusUnauthorized, "invalid_token")
		})
	}
}

type passkeyOptions struct {
	Handle  string          `json:"handle"`
	Options json.RawMessage `json:"options"`
}

// TestPasskeyRegistrationOverHTTP: a person registers a passkey with a
// software authenticator; a wrong origin, a replayed ceremony and bad input
// are refused with 400 and store nothing; removal needs the current
// password and the id of one of the person's own credentials.
func TestPasskeyRegistrationOverHTTP(t *testing.T) {
	for _, b := range mfaBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newMFADeployment(t, b, 0)
			ann := d.token(t, d.ann, "web")
			key, err := passkeystest.New(mfaOrigin)
			if err != nil {
				t.Fatal(err)
			}
			var opts passkeyOptions
			d.c.PostJSON("/auth/mfa/webauthn/register/begin", nil, ann).ExpectStatus(http.StatusOK).JSON(&opts)
			resp, err := key.Create(opts.Options)
			if err != nil {
				t.Fatal(err)
			}
			finish := func(handle, name string, cred []byte) *st.Response {
				body, _ := json.Marshal(map[string]any{"handle": handle, "name": name, "credential": json.RawMessage(cred)})
				return d.c.Do(http.MethodPost, "/auth/mfa/webauthn/register/finish", body, "application/json", ann)
			}
			type registered struct {
				ID            string     `json:"id"`
				Name          string     `json:"name"`
				LastUsedAt    *time.Time `json:"last_used_at"`
				RecoveryCodes []string   `json:"recovery_codes"`
			}
			var pk registered
			finish(opts.Handle, "Laptop", resp).ExpectStatus(http.StatusCreated).JSON(&pk)
			if pk.Name != "Laptop" || pk.ID != base64.RawURLEncoding.EncodeToString(key.ID) || pk.LastUsedAt != nil {
				t.Fatalf("registered %+v", pk)
			}
			// A first factor comes with recovery codes, as a TOTP
			// enrolment does: a lost passkey must not lock the person out.
			if len(pk.RecoveryCodes) != 10 || len(pk.RecoveryCodes[0]) != 19 {
				t.Fatalf("the first passkey's recovery codes: %q", pk.RecoveryCodes)
			}
			if s := d.status(t, ann); len(s.WebAuthn) != 1 || s.WebAuthn[0].ID != pk.ID || s.WebAuthn[0].Name != "Laptop" || s.RecoveryCodesLeft != 10 {
				t.Fatalf("status %+v", s)
			}
			if !d.audited(t, "mfa.enrolled", store.OutcomeSuccess, d.ann.ID, map[string]string{"method": "webauthn"}) ||
				!d.audited(t, "mfa.enrolled", store.OutcomeSuccess, d.ann.ID, map[string]string{"method": "recovery_code", "via": "first_factor"}) {
				t.Fatal("no mfa.enrolled events for the passkey and its codes")
			}
			// The codes finish a password login, one with the second
			// factor: what adding another takes.
			ann = d.recoveryLogin(t, d.ann, mfaAnnPass, pk.RecoveryCodes[4])
			if s := d.status(t, ann); s.RecoveryCodesLeft != 9 {
				t.Fatalf("a login with a first passkey's recovery code left %d", s.RecoveryCodesLeft)
			}
			// A second passkey: the person has unused codes, which stay.
			second, err := passkeystest.New(mfaOrigin)
			if err != nil {
				t.Fatal(err)
			}
			d.c.PostJSON("/auth/mfa/webauthn/register/begin", nil, ann).ExpectStatus(http.StatusOK).JSON(&opts)
			resp2nd, err := second.Create(opts.Options)
			if err != nil {
				t.Fatal(err)
			}
			var pk2 registered
			finish(opts.Handle, "Phone", resp2nd).ExpectStatus(http.StatusCreated).JSON(&pk2)
			if pk2.Name != "Phone" || pk2.RecoveryCodes != nil {
				t.Fatalf("the second passkey: %+v", pk2)
			}
			if s := d.status(t, ann); len(s.WebAuthn) != 2 || s.RecoveryCodesLeft != 9 {
				t.Fatalf("status after a second passkey %+v", s)
			}
			del2 := map[string]string{"current_password": mfaAnnPass}
			body2, _ := json.Marshal(del2)
			d.c.Do(http.MethodDelete, "/auth/mfa/webauthn/"+pk2.ID, body2, "application/json", ann).ExpectStatus(http.StatusNoContent)
			// The ceremony was used up.
			finish(opts.Handle, "Again", resp).ExpectError(http.StatusBadRequest, "invalid_request")

			// A wrong origin: refused, audited, nothing stored.
			evil, _ := passkeystest.New("https://evil.example")
			d.c.PostJSON("/auth/mfa/webauthn/register/begin", nil, ann).ExpectStatus(http.StatusOK).JSON(&opts)
			resp2, _ := evil.Create(opts.Options)
			finish(opts.Handle, "Evil", resp2).ExpectError(http.StatusBadRequest, "invalid_request")
			if !d.audited(t, "mfa.enrolled", store.OutcomeFailure, d.ann.ID, map[string]string{"method": "webauthn"}) {
				t.Fatal("the refusal is not audited")
			}
			// Bad input.
			d.c.PostJSON("/auth/mfa/webauthn/register/begin", nil, ann).ExpectStatus(http.StatusOK).JSON(&opts)
			finish("", "x", resp).ExpectError(http.StatusBadRequest, "invalid_request")
			finish(opts.Handle, "x", []byte(`"a string"`)).ExpectError(http.StatusBadRequest, "invalid_request")
			finish(opts.Handle, strings.Repeat("n", 65), resp).ExpectError(http.StatusBadRequest, "invalid_request")
			finish(opts.Handle, "x", []byte(`{"id":"garbage"}`)).ExpectError(http.StatusBadRequest, "invalid_request")
			if s := d.status(t, ann); len(s.WebAuthn) != 1 {
				t.Fatalf("refused registrations stored credentials: %+v", s)
			}

			// The options exclude the registered credential.
			d.c.PostJSON("/auth/mfa/webauthn/register/begin", nil, ann).ExpectStatus(http.StatusOK).JSON(&opts)
			if !strings.Contains(string(opts.Options), pk.ID) {
				t.Fatalf("options do not exclude the credential: %s", opts.Options)
			}

			// Removal: the current password, one's own credential.
			del := func(id, pw string, auth st.Option) *st.Response {
				body, _ := json.Marshal(map[string]string{"current_password": pw})
				return d.c.Do(http.MethodDelete, "/auth/mfa/webauthn/"+id, body, "application/json", auth)
			}
			d.c.Do(http.MethodDelete, "/auth/mfa/webauthn/"+pk.ID, nil, "", ann).ExpectError(http.StatusUnsupportedMediaType, "invalid_request")
			d.c.Do(http.MethodDelete, "/auth/mfa/webauthn/"+pk.ID, []byte(`{}`), "application/json", ann).ExpectError(http.StatusBadRequest, "invalid_request")
			del(pk.ID, "wrong password!", ann).ExpectError(http.StatusBadRequest, "invalid_grant")
			adm := d.token(t, d.adm, "web")
			del(pk.ID, mfaAdmPass, adm).ExpectError(http.StatusNotFound, "not_found") // not the admin's
			if s := d.status(t, ann); len(s.WebAuthn) != 1 {
				t.Fatal("removed by a refused request")
			}
			del(pk.ID, mfaAnnPass, ann).ExpectStatus(http.StatusNoContent)
			if s := d.status(t, ann); len(s.WebAuthn) != 0 {
				t.Fatalf("after removal %+v", s)
			}
			if !d.audited(t, "mfa.removed", store.OutcomeSuccess, d.ann.ID, map[string]string{"method": "webauthn"}) {
				t.Fatal("no mfa.removed event")
			}
		})
	}
}

// TestPasskeysOffWithoutRelyingParty: an instance whose issuer is an IP
// address has no WebAuthn RP ID; registration answers 400.
func TestPasskeysOffWithoutRelyingParty(t *testing.T) {
	t.Parallel()
	in := st.Start(t, st.NewEnv(t, st.SQLite))
	if in.App.Passkeys != nil {
		t.Fatal("passkeys on without an RP ID")
	}
	fx := st.NewFixtures(t, in.App.Core)
	u := fx.User(t, "ann@example.com", mfaAnnPass, "user")
	fx.AdminClient(t, "web")
	d := &mfaDeployment{in: in, c: in.Client(t), fx: fx}
	d.c.PostJSON("/auth/mfa/webauthn/register/begin", nil, d.token(t, u, "web")).ExpectError(http.StatusBadRequest, "invalid_request")
}

// TestAdminMFAReset: an admin resets a user's factors, which ends the
// user's sessions and is audited; above the privilege ceiling (a
// super_admin), on themself or on nobody it is refused and nothing changes.
func TestAdminMFAReset(t *testing.T) {
	for _, b := range mfaBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newMFADeployment(t, b, 0)
			ctx := context.Background()
			ann := d.token(t, d.ann, "web")
			d.enrolTOTP(t, ann)
			root := d.token(t, d.root, "web")
			d.enrolTOTP(t, root)
			adm := d.token(t, d.adm, "web")

			// Above the ceiling: refused, the super_admin keeps every factor
			// and their session.
			d.c.PostJSON("/admin/users/"+d.root.ID+"/mfa/reset", nil, adm).ExpectError(http.StatusForbidden, "forbidden")
			if s, err := d.in.App.MFA.Status(ctx, d.root.ID); err != nil || !s.TOTP || s.RecoveryCodesLeft != 10 {
				t.Fatalf("root's factors after a refused reset: %+v %v", s, err)
			}
			d.c.Get("/userinfo", root).ExpectStatus(http.StatusOK)
			d.c.PostJSON("/admin/users/"+d.adm.ID+"/mfa/reset", nil, adm).ExpectError(http.StatusForbidden, "forbidden") // themself
			d.c.PostJSON("/admin/users/usr_nobody/mfa/reset", nil, adm).ExpectError(http.StatusNotFound, "not_found")
			d.c.PostJSON("/admin/users/"+d.ann.ID+"/mfa/reset", nil, ann).ExpectError(http.StatusForbidden, "insufficient_scope")
			d.c.PostJSON("/admin/users/"+d.ann.ID+"/mfa/reset", map[string]string{"x": "y"}, adm).ExpectError(http.StatusBadRequest, "invalid_request")
			if s, _ := d.in.App.MFA.Status(ctx, d.ann.ID); !s.TOTP {
				t.Fatal("a refused reset removed ann's factor")
			}

			d.c.PostJSON("/admin/users/"+d.ann.ID+"/mfa/reset", nil, adm).ExpectStatus(http.StatusNoContent)
			if s, err := d.in.App.MFA.Status(ctx, d.ann.ID); err != nil || s.TOTP || s.RecoveryCodesLeft != 0 || len(s.WebAuthn) != 0 {
				t.Fatalf("ann's factors after the reset: %+v %v", s, err)
			}
			d.c.Get("/userinfo", ann).ExpectError(http.StatusUnauthorized, "invalid_token")
			if !d.audited(t, "mfa.reset", store.OutcomeSuccess, d.ann.ID, nil) {
				t.Fatal("no mfa.reset event")
			}
			// The super_admin may reset the admin.
			d.c.PostJSON("/admin/users/"+d.adm.ID+"/mfa/reset", nil, root).ExpectStatus(http.StatusNoContent)
		})
	}
}

// mfaPolicyFile writes the default policy with mfa.required_for_level.
func mfaPolicyFile(t *testing.T, level int) string {
	t.Helper()
	def, err := os.ReadFile("../policy/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, append(def, []byte("mfa:\n  required_for_level: "+strconv.Itoa(level)+"\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestInviteToAnMFARoleAsksForEnrolment: accepting an invite to a role at
// or above mfa.required_for_level creates the account but answers 400
// mfa_required with mfa_enrollment_required and an mfa_token that enrols a
// factor; an invite to a role below it answers tokens.
func TestInviteToAnMFARoleAsksForEnrolment(t *testing.T) {
	for _, b := range mfaBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			a := newAcctEnvOn(t, b, map[string]string{"PORTCULLIS_POLICY_FILE": mfaPolicyFile(t, 50)})
			ctx := context.Background()
			// The super_admin's token: the policy requires their second
			// factor (no issuance hands out their roles without it).
			rootTok := a.mfaLogin(t, a.root, rootPass)
			link := a.invite(t, rootTok.AccessToken, "newadmin@example.com", "admin")
			r := a.c.PostJSON("/auth/invites/accept", map[string]string{"token": link, "password": "new admin passphrase 1", "name": "New Admin"}).
				ExpectError(http.StatusBadRequest, "mfa_required")
			var ans struct {
				Token   string   `json:"mfa_token"`
				Enrol   bool     `json:"mfa_enrollment_required"`
				Methods []string `json:"mfa_methods"`
				Access  string   `json:"access_token"`
			}
			r.JSON(&ans)
			if ans.Token == "" || !ans.Enrol || len(ans.Methods) != 0 || ans.Access != "" {
				t.Fatalf("answer %s", r.Body)
			}
			u, err := a.in.App.Core.Store.GetUserByEmail(ctx, "newadmin@example.com")
			if err != nil || !slices.Equal(u.Roles, []string{"admin"}) {
				t.Fatalf("the account: %+v %v", u, err)
			}
			// The link is used; the mfa_token enrols an authenticator app.
			a.c.PostJSON("/auth/invites/accept", map[string]string{"token": link, "password": "new admin passphrase 1"}).
				ExpectError(http.StatusBadRequest, "invalid_token")
			mt := st.Bearer(ans.Token)
			var en totpEnrolment
			a.c.PostJSON("/auth/mfa/totp", nil, mt).ExpectStatus(http.StatusCreated).JSON(&en)
			code, _ := totp.GenerateCode(en.Secret, time.Now())
			a.c.PostJSON("/auth/mfa/totp/confirm", map[string]string{"code": code}, mt).ExpectStatus(http.StatusOK)
			if s, err := a.in.App.MFA.Status(ctx, u.ID); err != nil || !s.TOTP {
				t.Fatalf("status %+v %v", s, err)
			}

			// Below the level: tokens, as before.
			link = a.invite(t, rootTok.AccessToken, "newuser@example.com", "user")
			if tok := a.accept(t, link, "new user passphrase 1"); tok.AccessToken == "" {
				t.Fatal("no token for a user invite")
			}
		})
	}
}

// TestPasskeyAsSecondFactor: the passkey registered over HTTP finishes a
// password login through mfa.Service.Complete with the real stores (amr
// pwd, hwk, user, mfa; the counter stored); a cloned authenticator whose
// counter does not grow is refused; of two assertions raced on the same
// credential exactly one wins (the store's compare-and-set).
func TestPasskeyAsSecondFactor(t *testing.T) {
	for _, b := range mfaBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newMFADeployment(t, b, 0)
			ctx := context.Background()
			ann := d.token(t, d.ann, "web")
			key, _ := passkeystest.New(mfaOrigin)
			var opts passkeyOptions
			d.c.PostJSON("/auth/mfa/webauthn/register/begin", nil, ann).ExpectStatus(http.StatusOK).JSON(&opts)
			resp, _ := key.Create(opts.Options)
			body, _ := json.Marshal(map[string]any{"handle": opts.Handle, "name": "Key", "credential": json.RawMessage(resp)})
			d.c.Do(http.MethodPost, "/auth/mfa/webauthn/register/finish", body, "application/json", ann).ExpectStatus(http.StatusCreated)

			pk := d.in.App.Passkeys
			// assert answers a login ceremony with a and returns the factor.
			assert := func(a *passkeystest.Authenticator) mfaFactor {
				t.Helper()
				lopts, handle, err := pk.BeginLogin(ctx, d.ann.ID, mfa.Meta{})
				if err != nil {
					t.Fatal(err)
				}
				r, err := a.Get(lopts)
				if err != nil {
					t.Fatal(err)
				}
				return pk.Assertion(handle, r)
			}
			clone := key.Clone()
			tok, _ := d.mfaToken(t, d.ann)
			done, err := d.in.App.MFA.Complete(ctx, tok, "web", assert(key), mfaMeta())
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(done.AMR, []string{"pwd", "hwk", "user", "mfa"}) || done.UserID != d.ann.ID {
				t.Fatalf("completed %+v", done)
			}
			if s := d.status(t, ann); len(s.WebAuthn) != 1 || s.WebAuthn[0].LastUsedAt == nil {
				t.Fatalf("after the login: %+v", s)
			}
			// The clone's counter (1) does not exceed the stored 1.
			tok, _ = d.mfaToken(t, d.ann)
			if _, err := d.in.App.MFA.Complete(ctx, tok, "web", assert(clone), mfaMeta()); err == nil {
				t.Fatal("a cloned authenticator finished a login")
			}
			if !d.audited(t, "mfa.failed", store.OutcomeFailure, d.ann.ID, map[string]string{"method": "webauthn"}) {
				t.Fatal("the refused assertion is not audited")
			}
			// The authenticator and its clone (both at counter 1) answer at
			// once with counter 2 against the stored 1: whichever order the
			// store sees them in, exactly one is accepted (the second either
			// finds 2 stored, or loses the compare-and-set).
			f1, f2 := assert(key), assert(clone)
			start := make(chan struct{})
			errs := make(chan error, 2)
			for _, f := range []mfaFactor{f1, f2} {
				go func() { <-start; _, err := f.Verify(ctx, d.ann.ID); errs <- err }()
			}
			close(start)
			ok := 0
			for range 2 {
				switch err := <-errs; {
				case err == nil:
					ok++
				case !errors.Is(err, mfa.ErrBadCode):
					t.Fatalf("refused with %v", err)
				}
			}
			if ok != 1 {
				t.Fatalf("%d of 2 assertions with the same counter accepted", ok)
			}
		})
	}
}

type mfaFactor = mfa.Factor

func mfaMeta() mfa.Meta { return mfa.Meta{IP: "192.0.2.1", UserAgent: "mfa-api-test"} }

// mfaEnrolRoutes are the only routes that take an mfa_token as the bearer.
var mfaEnrolRoutes = map[string]bool{"POST /auth/mfa/totp": true, "POST /auth/mfa/totp/confirm": true}

// publicAccountRoutes take no bearer at all.
var publicAccountRoutes = map[string]bool{
	"POST /auth/invites/accept": true, "POST /auth/password/forgot": true, "POST /auth/password/reset": true,
	"POST /auth/email/verify": true, "POST /auth/register": true,
}

// TestFactorWritesNeedARecentFullSignIn: every write of one's own factors
// (TOTP start and confirm, new recovery codes, passkey begin and finish)
// needs a login within accounts.ReauthWindow and, once the person has a
// factor, one made with it (amr "mfa"); else 401
// insufficient_user_authentication (RFC 9470) with max_age or acr_values,
// and nothing changes. Before, a stolen access token of any age, or of a
// password alone, took ten working recovery codes (voiding the owner's) or
// added its holder's passkey, and neither went away with a password reset.
func TestFactorWritesNeedARecentFullSignIn(t *testing.T) {
	for _, b := range mfaBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newMFADeployment(t, b, 0)
			secret, ownerCodes := d.enrolTOTP(t, d.token(t, d.ann, "web"))
			full := d.mfaLogin(t, d.ann, mfaAnnPass, secret) // fresh, with the app
			password := d.token(t, d.ann, "web")             // fresh, the password alone
			writes := []struct {
				name, path string
				body       any
				allowed    int // with a fresh sign-in with the app (one is on: 409s)
			}{
				{"totp_start", "/auth/mfa/totp", nil, http.StatusConflict},
				{"totp_confirm", "/auth/mfa/totp/confirm", map[string]string{"code": "123456"}, http.StatusConflict},
				{"recovery_codes", "/auth/mfa/recovery-codes", nil, http.StatusOK},
				{"passkey_begin", "/auth/mfa/webauthn/register/begin", nil, http.StatusOK},
				{"passkey_finish", "/auth/mfa/webauthn/register/finish",
					map[string]any{"handle": "unknown", "name": "thief", "credential": map[string]string{"id": "x"}}, http.StatusBadRequest},
			}
			const (
				staleChallenge = `Bearer error="insufficient_user_authentication", error_description="Changing your second factors needs a sign-in within the last five minutes: sign in again, then repeat it.", max_age="300"`
				weakChallenge  = `Bearer error="insufficient_user_authentication", error_description="Changing your second factors needs a sign-in with one of them: sign in again with your second factor, then repeat it.", acr_values="mfa"`
			)
			for _, tc := range []struct {
				name      string
				auth      st.Option
				later     time.Duration // the server's clock this far ahead
				challenge string
			}{
				{"fail/stale_auth_time", full, accounts.ReauthWindow + time.Minute, staleChallenge},
				{"fail/no_mfa_in_amr", password, 0, weakChallenge},
			} {
				for _, w := range writes {
					t.Run(tc.name+"/"+w.name, func(t *testing.T) {
						c := d.in.Client(t)
						d.in.App.Accounts.SetClock(func() time.Time { return time.Now().Add(tc.later) })
						defer d.in.App.Accounts.SetClock(time.Now)
						r := c.PostJSON(w.path, w.body, tc.auth).ExpectError(http.StatusUnauthorized, "insufficient_user_authentication")
						if got := r.Header.Get("WWW-Authenticate"); got != tc.challenge {
							t.Fatalf("WWW-Authenticate\n got %s\nwant %s", got, tc.challenge)
						}
						var s mfaStatus
						c.Get("/auth/mfa", full).ExpectStatus(http.StatusOK).JSON(&s)
						if !s.TOTP || len(s.WebAuthn) != 0 || s.RecoveryCodesLeft != 10 {
							t.Fatalf("a refused write changed the factors: %+v", s)
						}
					})
				}
			}
			// The owner's codes still work: the refusals voided nothing.
			if s := d.status(t, full); s.RecoveryCodesLeft != len(ownerCodes) {
				t.Fatalf("%d recovery codes left", s.RecoveryCodesLeft)
			}
			for _, w := range writes {
				t.Run("ok/fresh_with_factor/"+w.name, func(t *testing.T) {
					if r := d.in.Client(t).PostJSON(w.path, w.body, full); r.StatusCode != w.allowed {
						t.Fatalf("%s: %d %s, want %d", w.path, r.StatusCode, r.Body, w.allowed)
					}
				})
			}
			// Without a factor a fresh password login may add the first.
			t.Run("ok/fresh_without_factor", func(t *testing.T) {
				c := d.in.Client(t)
				c.PostJSON("/auth/mfa/totp", nil, d.token(t, d.adm, "web")).ExpectStatus(http.StatusCreated)
				d.in.App.Accounts.SetClock(func() time.Time { return time.Now().Add(accounts.ReauthWindow + time.Minute) })
				defer d.in.App.Accounts.SetClock(time.Now)
				c.PostJSON("/auth/mfa/totp", nil, d.token(t, d.adm, "web")).ExpectError(http.StatusUnauthorized, "insufficient_user_authentication")
			})
		})
	}
}

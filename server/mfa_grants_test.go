package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/server/mfa"
	"github.com/portcullis-auth/portcullis/server/ratelimit"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

const (
	grantMFAOTP      = "urn:portcullis:params:oauth:grant-type:mfa-otp"
	grantMFARecovery = "urn:portcullis:params:oauth:grant-type:mfa-recovery-code"
	mfaPass          = "second factor passphrase"
)

// grantsDeployment is a Portcullis with the demo policy requiring a second
// factor from level 80 (admin), clients app and app2 (password and
// refresh_token) and svc (client_credentials).
type grantsDeployment struct {
	in      *st.Instance
	c       *st.Client
	fx      *st.Fixtures
	secrets map[string]string
}

// newGrantsDeployment starts a grantsDeployment on b; extra settings
// (PORTCULLIS_SIGNING_ALG, say) are added to its environment.
func newGrantsDeployment(t *testing.T, b st.Backend, extra ...st.Env) *grantsDeployment {
	t.Helper()
	raw, err := os.ReadFile("../docs/examples/demo-policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	policy := string(raw) + "\nmfa:\n  required_for_level: 80\n"
	if strings.Contains(string(raw), "\nmfa:") {
		t.Fatal("the demo policy sets mfa already: adjust this test")
	}
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	env := st.NewEnv(t, b)
	env["PORTCULLIS_POLICY_FILE"] = path
	for _, e := range extra {
		maps.Copy(env, e)
	}
	in := st.Start(t, env)
	d := &grantsDeployment{in: in, c: in.Client(t), fx: st.NewFixtures(t, in.App.Core), secrets: map[string]string{}}
	d.secrets["app"] = d.fx.Client(t, clients.Spec{ID: "app", Name: "App"})
	d.secrets["app2"] = d.fx.Client(t, clients.Spec{ID: "app2", Name: "App 2"})
	d.secrets["svc"] = d.fx.Client(t, clients.Spec{ID: "svc", Name: "Service", Grants: []string{"client_credentials"}, Scopes: []string{"projects:read"}})
	return d
}

// totpUser creates an editor with TOTP enrolled and returns it, its TOTP
// secret and its recovery codes.
func (d *grantsDeployment) totpUser(t *testing.T, email string) (store.User, string, []string) {
	t.Helper()
	u := d.fx.User(t, email, mfaPass, "editor")
	secret, codes := st.EnrolTOTP(t, d.in.App.MFA, u)
	return u, secret, codes
}

// password runs a password grant through client.
func (d *grantsDeployment) password(t *testing.T, client, email, scope string) *st.Response {
	t.Helper()
	return d.c.PostForm("/oauth2/token", st.PasswordForm(email, mfaPass, scope), st.Basic(client, d.secrets[client]))
}

// mfaRequired runs a password grant that must answer mfa_required (and no
// token) and returns its body.
func (d *grantsDeployment) mfaRequired(t *testing.T, client, email, scope string) map[string]any {
	t.Helper()
	r := d.password(t, client, email, scope).ExpectError(400, "mfa_required")
	if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("mfa_required Cache-Control %q", cc)
	}
	m := r.Map()
	if tok, _ := m["mfa_token"].(string); tok == "" {
		t.Fatalf("mfa_required without an mfa_token: %s", r.Body)
	}
	if _, ok := m["access_token"]; ok {
		t.Fatalf("mfa_required came with a token: %s", r.Body)
	}
	return m
}

func (d *grantsDeployment) mfaGrant(t *testing.T, client, grant, tok, param, code string) *st.Response {
	t.Helper()
	form := url.Values{"grant_type": {grant}}
	if tok != "" {
		form.Set("mfa_token", tok)
	}
	if code != "" {
		form.Set(param, code)
	}
	return d.c.PostForm("/oauth2/token", form, st.Basic(client, d.secrets[client]))
}

func (d *grantsDeployment) otp(t *testing.T, client, tok, code string) *st.Response {
	t.Helper()
	return d.mfaGrant(t, client, grantMFAOTP, tok, "otp", code)
}

func wantLogin(t *testing.T, what, jwt string, amr []string, acr string) map[string]any {
	t.Helper()
	c := decodeClaims(t, jwt)
	var got []string
	if l, ok := c["amr"].([]any); ok {
		for _, v := range l {
			got = append(got, v.(string))
		}
	}
	if !slices.Equal(got, amr) || (acr == "" && c["acr"] != nil) || (acr != "" && c["acr"] != acr) {
		t.Fatalf("%s: amr %v acr %v, want %v %q", what, c["amr"], c["acr"], amr, acr)
	}
	return c
}

// TestMFAGrants: a user with TOTP gets mfa_required and no token from the
// password alone; the mfa-otp and mfa-recovery-code grants finish the login
// with amr/acr in the access and id tokens, kept unchanged on refresh; every
// refusal is invalid_grant (wrong, used or other-client code, expired or
// spent token), missing parameters invalid_request; a user the policy
// requires to enrol gets no token from the password alone.
func TestMFAGrants(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newGrantsDeployment(t, b)
			ctx := context.Background()

			t.Run("ok/otp", func(t *testing.T) {
				u, secret, _ := d.totpUser(t, "otp@example.com")
				before := time.Now().Unix()
				m := d.mfaRequired(t, "app", u.Email, "openid projects:read")
				if m["mfa_enrollment_required"] != false || !slices.Equal(claimStrings(t, m, "mfa_methods"), []string{"recovery_code", "totp"}) {
					t.Fatalf("challenge %v", m)
				}
				code := st.NextTOTPCode(t, secret)
				tok := d.otp(t, "app", m["mfa_token"].(string), code).Token()
				want := []string{mfa.AMRPassword, mfa.AMROTP, mfa.AMRMFA}
				at := wantLogin(t, "access token", tok.AccessToken, want, "mfa")
				idt := wantLogin(t, "id token", tok.IDToken, want, "mfa")
				authTime, _ := at["auth_time"].(float64)
				if int64(authTime) < before || int64(authTime) > time.Now().Unix() || idt["auth_time"] != at["auth_time"] {
					t.Fatalf("auth_time %v (id token %v), want the password step's", at["auth_time"], idt["auth_time"])
				}
				if at["scope"] != "projects:read openid" {
					t.Fatalf("scope %v, want the password step's", at["scope"])
				}
				next := d.c.PostForm("/oauth2/token", st.RefreshForm(tok.RefreshToken), st.Basic("app", d.secrets["app"])).Token()
				rat := wantLogin(t, "refreshed access token", next.AccessToken, want, "mfa")
				wantLogin(t, "refreshed id token", next.IDToken, want, "mfa")
				if rat["auth_time"] != at["auth_time"] {
					t.Fatalf("refreshed auth_time %v, want %v", rat["auth_time"], at["auth_time"])
				}
				in := d.c.PostForm("/oauth2/introspect", url.Values{"token": {next.AccessToken}}, st.Basic("app", d.secrets["app"])).ExpectStatus(200).Map()
				if in["acr"] != "mfa" || !slices.Equal(claimStrings(t, in, "amr"), []string{"mfa", "otp", "pwd"}) {
					t.Fatalf("introspection %v", in)
				}
				if !d.audited(t, "login.succeeded", store.OutcomeSuccess, u.ID, map[string]string{"grant": grantMFAOTP, "method": "totp"}) {
					t.Fatal("no login.succeeded audited for the mfa-otp grant")
				}
				// The code the login used cannot log in again (a new password step).
				m = d.mfaRequired(t, "app", u.Email, "")
				d.otp(t, "app", m["mfa_token"].(string), code).ExpectError(400, "invalid_grant")
				if !d.audited(t, "mfa.failed", store.OutcomeFailure, u.ID, nil) {
					t.Fatal("the replayed code's refusal is not audited")
				}
			})

			t.Run("ok/recovery_code", func(t *testing.T) {
				u, _, codes := d.totpUser(t, "recovery@example.com")
				m := d.mfaRequired(t, "app", u.Email, "openid")
				r := d.mfaGrant(t, "app", grantMFARecovery, m["mfa_token"].(string), "recovery_code", codes[0]).ExpectStatus(200)
				var tok struct {
					AccessToken       string `json:"access_token"`
					IDToken           string `json:"id_token"`
					RecoveryCodesLeft *int   `json:"recovery_codes_left"`
				}
				r.JSON(&tok)
				want := []string{mfa.AMRPassword, mfa.AMRMFA}
				wantLogin(t, "access token", tok.AccessToken, want, "mfa")
				wantLogin(t, "id token", tok.IDToken, want, "mfa")
				if tok.RecoveryCodesLeft == nil || *tok.RecoveryCodesLeft != len(codes)-1 {
					t.Fatalf("recovery_codes_left %v, want %d", tok.RecoveryCodesLeft, len(codes)-1)
				}
				if !d.audited(t, "login.succeeded", store.OutcomeSuccess, u.ID, map[string]string{"grant": grantMFARecovery, "method": "recovery_code"}) {
					t.Fatal("no login.succeeded audited for the mfa-recovery-code grant")
				}
				// A used recovery code is refused; another one works.
				m = d.mfaRequired(t, "app", u.Email, "")
				d.mfaGrant(t, "app", grantMFARecovery, m["mfa_token"].(string), "recovery_code", codes[0]).ExpectError(400, "invalid_grant")
				d.mfaGrant(t, "app", grantMFARecovery, m["mfa_token"].(string), "recovery_code", codes[1]).ExpectStatus(200)
			})

			t.Run("fail/refusals", func(t *testing.T) {
				for _, tc := range []struct {
					name string
					run  func(t *testing.T, tok, secret string) *st.Response
				}{
					{"wrong_code", func(t *testing.T, tok, secret string) *st.Response {
						code := st.NextTOTPCode(t, secret)
						wrong := []byte(code)
						wrong[0] = '0' + (wrong[0]-'0'+5)%10
						return d.otp(t, "app", tok, string(wrong))
					}},
					{"other_client", func(t *testing.T, tok, secret string) *st.Response {
						return d.otp(t, "app2", tok, st.NextTOTPCode(t, secret))
					}},
					{"unknown_token", func(t *testing.T, _, secret string) *st.Response {
						return d.otp(t, "app", strings.Repeat("A", 43), st.NextTOTPCode(t, secret))
					}},
					{"spent_token", func(t *testing.T, tok, secret string) *st.Response {
						d.otp(t, "app", tok, st.NextTOTPCode(t, secret)).Token()
						return d.otp(t, "app", tok, st.NextTOTPCode(t, secret))
					}},
					{"not_a_recovery_code", func(t *testing.T, tok, _ string) *st.Response {
						return d.mfaGrant(t, "app", grantMFARecovery, tok, "recovery_code", "AAAA-BBBB-CCCC-DDDD")
					}},
					{"totp_code_as_recovery_code", func(t *testing.T, tok, secret string) *st.Response {
						return d.mfaGrant(t, "app", grantMFARecovery, tok, "recovery_code", st.NextTOTPCode(t, secret))
					}},
				} {
					t.Run(tc.name, func(t *testing.T) {
						u, secret, _ := d.totpUser(t, tc.name+"@example.com")
						m := d.mfaRequired(t, "app", u.Email, "")
						r := tc.run(t, m["mfa_token"].(string), secret).ExpectError(400, "invalid_grant")
						if strings.Contains(string(r.Body), "access_token") {
							t.Fatalf("a refused MFA grant came with a token: %s", r.Body)
						}
					})
				}
			})

			t.Run("race/one_login_per_token", func(t *testing.T) {
				// The same mfa_token and code sent at once by several
				// requests (a double submit, a replay racing the original):
				// exactly one gets tokens.
				u, _, codes := d.totpUser(t, "race@example.com")
				tok := d.mfaRequired(t, "app", u.Email, "")["mfa_token"].(string)
				const n = 5 // the token's attempts
				form := url.Values{"grant_type": {grantMFARecovery}, "mfa_token": {tok}, "recovery_code": {codes[0]}}
				var ready, start sync.WaitGroup
				ready.Add(n)
				start.Add(1)
				statuses := make([]int, n)
				var wg sync.WaitGroup
				for i := range n {
					wg.Add(1)
					go func() {
						defer wg.Done()
						ready.Done()
						start.Wait()
						r, err := d.c.TryDo("POST", "/oauth2/token", []byte(form.Encode()), "application/x-www-form-urlencoded", st.Basic("app", d.secrets["app"]))
						if err == nil {
							statuses[i] = r.StatusCode
						}
					}()
				}
				ready.Wait()
				start.Done()
				wg.Wait()
				ok := 0
				for _, s := range statuses {
					switch s {
					case 200:
						ok++
					case 400, 429:
						// Refused; 429 when the account's login throttle
						// (the password step plus five reserved attempts at
						// once) refuses one before the winner clears it.
					default:
						t.Fatalf("statuses %v: want one 200 and 400s (or 429s)", statuses)
					}
				}
				if ok != 1 {
					t.Fatalf("statuses %v: %d logins from one mfa_token, want exactly 1", statuses, ok)
				}
			})

			t.Run("fail/throttle_survives_a_new_password_step", func(t *testing.T) {
				// Wrong second factors count in the account's login throttle,
				// and a correct password does not wipe them: else each new
				// mfa_token would bring five fresh guesses. A completed login
				// takes back only its own two attempts (its password step and
				// its second step): no success clears the others' failures,
				// which would tell an attacker the account is in use.
				u, secret, _ := d.totpUser(t, "throttle@example.com")
				failures := func() int64 {
					n, _, err := d.in.App.State.Peek(ctx, "rl:login_fail:"+ratelimit.Hash(u.Email), time.Now())
					if err != nil {
						t.Fatal(err)
					}
					return n
				}
				code := st.NextTOTPCode(t, secret)
				wrong := []byte(code)
				wrong[0] = '0' + (wrong[0]-'0'+5)%10
				tok := d.mfaRequired(t, "app", u.Email, "")["mfa_token"].(string)
				for range 2 {
					d.otp(t, "app", tok, string(wrong)).ExpectError(400, "invalid_grant")
				}
				tok = d.mfaRequired(t, "app", u.Email, "")["mfa_token"].(string)
				if n := failures(); n != 4 { // two password steps not yet finished, two wrong codes
					t.Fatalf("the account's throttle counts %d after a new password step, want 4", n)
				}
				d.otp(t, "app", tok, code).Token()
				if n := failures(); n != 3 { // the abandoned password step, two wrong codes
					t.Fatalf("the throttle counts %d after a completed login, want 3", n)
				}
			})

			t.Run("ok/username_login_clears_its_own_throttle_key", func(t *testing.T) {
				// A login typed as a username is throttled under the
				// username; the second step must count and take back its
				// attempts under the same key, or every MFA login by username
				// leaves a failure behind until the account is throttled.
				u, secret, _ := d.totpUser(t, "byname@example.com")
				if _, err := d.in.App.Core.Store.UpdateUser(ctx, u.ID, func(u *store.User) error {
					u.Username = "byname"
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				failures := func(key string) int64 {
					n, _, err := d.in.App.State.Peek(ctx, "rl:login_fail:"+ratelimit.Hash(key), time.Now())
					if err != nil {
						t.Fatal(err)
					}
					return n
				}
				tok := d.mfaRequired(t, "app", "byname", "")["mfa_token"].(string)
				if n := failures("byname"); n != 1 {
					t.Fatalf("the password step counts %d under the username, want 1 until the second step", n)
				}
				d.otp(t, "app", tok, st.NextTOTPCode(t, secret)).Token()
				if n, m := failures("byname"), failures(u.Email); n != 0 || m != 0 {
					t.Fatalf("after a completed login: %d under the username, %d under the email; want 0", n, m)
				}
			})

			t.Run("fail/expired_token", func(t *testing.T) {
				u, secret, _ := d.totpUser(t, "expired@example.com")
				// An mfa_token minted six minutes ago (its 5 minute lifetime
				// is over) by an instance sharing the stores.
				tok := staleMFAToken(t, d, u, "app")
				d.otp(t, "app", tok, st.NextTOTPCode(t, secret)).ExpectError(400, "invalid_grant")
			})

			t.Run("fail/missing_parameters", func(t *testing.T) {
				u, secret, _ := d.totpUser(t, "params@example.com")
				tok := d.mfaRequired(t, "app", u.Email, "")["mfa_token"].(string)
				d.otp(t, "app", tok, "").ExpectError(400, "invalid_request")
				d.otp(t, "app", "", st.NextTOTPCode(t, secret)).ExpectError(400, "invalid_request")
				d.mfaGrant(t, "app", grantMFARecovery, tok, "recovery_code", "").ExpectError(400, "invalid_request")
				// The client_credentials client has no password grant.
				d.otp(t, "svc", tok, st.NextTOTPCode(t, secret)).ExpectError(400, "unauthorized_client")
				// None of it spent the token.
				wantLogin(t, "after the refusals", d.otp(t, "app", tok, st.NextTOTPCode(t, secret)).Token().AccessToken,
					[]string{"pwd", "otp", "mfa"}, "mfa")
			})

			t.Run("fail/required_level_gets_no_token", func(t *testing.T) {
				admin := d.fx.User(t, "admin@example.com", mfaPass, "admin")
				m := d.mfaRequired(t, "app", admin.Email, "")
				if m["mfa_enrollment_required"] != true || len(claimStrings(t, m, "mfa_methods")) != 0 {
					t.Fatalf("challenge of a user required to enrol: %v", m)
				}
				// The enrolment token finishes no login.
				d.otp(t, "app", m["mfa_token"].(string), "123456").ExpectError(400, "invalid_grant")
				// Enrolled, the password alone still gives no token.
				secret, _ := st.EnrolTOTP(t, d.in.App.MFA, admin)
				m = d.mfaRequired(t, "app", admin.Email, "")
				wantLogin(t, "admin", d.otp(t, "app", m["mfa_token"].(string), st.NextTOTPCode(t, secret)).Token().AccessToken,
					[]string{"pwd", "otp", "mfa"}, "mfa")
			})

			t.Run("ok/password_only_and_client_credentials", func(t *testing.T) {
				d.fx.User(t, "viewer@example.com", mfaPass, "viewer")
				tok := d.password(t, "app", "viewer@example.com", "openid").Token()
				wantLogin(t, "password access token", tok.AccessToken, []string{"pwd"}, "pwd")
				wantLogin(t, "password id token", tok.IDToken, []string{"pwd"}, "pwd")
				cc := d.c.PostForm("/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, st.Basic("svc", d.secrets["svc"])).Token()
				wantLogin(t, "client_credentials token", cc.AccessToken, nil, "")
				in := d.c.PostForm("/oauth2/introspect", url.Values{"token": {cc.AccessToken}}, st.Basic("app", d.secrets["app"])).ExpectStatus(200).Map()
				if _, ok := in["amr"]; ok {
					t.Fatalf("client_credentials introspection has amr: %v", in)
				}
			})

			t.Run("ok/x_oauth2", func(t *testing.T) {
				u, secret, _ := d.totpUser(t, "xoauth2@example.com")
				endpoint := oauth2.Endpoint{TokenURL: d.in.URL + "/oauth2/token", AuthStyle: oauth2.AuthStyleInHeader}
				conf := &oauth2.Config{ClientID: "app", ClientSecret: d.secrets["app"], Endpoint: endpoint, Scopes: []string{"openid"}}
				_, err := conf.PasswordCredentialsToken(ctx, u.Email, mfaPass)
				var re *oauth2.RetrieveError
				if !errors.As(err, &re) || re.ErrorCode != "mfa_required" || re.Response.StatusCode != 400 {
					t.Fatalf("x/oauth2 password grant of a TOTP user: %v; want a RetrieveError mfa_required", err)
				}
				var challenge struct {
					Token   string   `json:"mfa_token"`
					Methods []string `json:"mfa_methods"`
				}
				if err := json.Unmarshal(re.Body, &challenge); err != nil || challenge.Token == "" || !slices.Contains(challenge.Methods, "totp") {
					t.Fatalf("mfa_required body %s: %v", re.Body, err)
				}
				// An extension grant through x/oauth2: the client credentials
				// flow lets EndpointParams name the grant_type.
				mfaConf := &clientcredentials.Config{ClientID: "app", ClientSecret: d.secrets["app"], TokenURL: endpoint.TokenURL,
					AuthStyle: oauth2.AuthStyleInHeader, EndpointParams: url.Values{"grant_type": {grantMFAOTP},
						"mfa_token": {challenge.Token}, "otp": {st.NextTOTPCode(t, secret)}}}
				tok, err := mfaConf.Token(ctx)
				if err != nil {
					t.Fatalf("x/oauth2 mfa-otp grant: %v", err)
				}
				idt, _ := tok.Extra("id_token").(string)
				wantLogin(t, "x/oauth2 access token", tok.AccessToken, []string{"pwd", "otp", "mfa"}, "mfa")
				wantLogin(t, "x/oauth2 id token", idt, []string{"pwd", "otp", "mfa"}, "mfa")
				// A refusal is a RetrieveError invalid_grant.
				_, err = mfaConf.Token(ctx)
				if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
					t.Fatalf("x/oauth2 second use of the mfa_token: %v", err)
				}
			})
		})
	}
}

// audited reports whether an audit event of action with this outcome,
// target and details (a subset) was recorded.
func (d *grantsDeployment) audited(t *testing.T, action string, outcome store.Outcome, target string, details map[string]string) bool {
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

// staleMFAToken is an mfa_token for u at client whose lifetime is over: an
// mfa.Service over the deployment's stores whose clock reads six minutes
// ago issues it (the single-use record is kept longer, so that it is the
// token's own expiry that refuses it).
func staleMFAToken(t *testing.T, d *grantsDeployment, u store.User, client string) string {
	t.Helper()
	core := d.in.App.Core
	past := func() time.Time { return time.Now().Add(-6 * time.Minute) }
	svc, err := mfa.New(mfa.Deps{Factors: core.Store, Once: keptLonger{d.in.App.Once}, Counter: d.in.App.State, KEKs: core.KEKs,
		Policy: core.Policy, Now: past})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := svc.Begin(context.Background(), u, nil, ratelimit.Counted{}, client, "", "", past(), []string{mfa.AMRPassword})
	if err != nil || ch == nil || !ch.ExpiresAt.Before(time.Now()) {
		t.Fatalf("stale challenge %+v, %v", ch, err)
	}
	return ch.Token
}

// keptLonger keeps single-use records an hour past what they ask.
type keptLonger struct{ store.SingleUse }

func (k keptLonger) PutOnce(ctx context.Context, kind string, key, value []byte, exp time.Time) error {
	return k.SingleUse.PutOnce(ctx, kind, key, value, exp.Add(time.Hour))
}

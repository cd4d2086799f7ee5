package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/passkeys/passkeystest"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// A second factor, or recovery codes, written with an access token that the
// bearer check accepted when the request's headers arrived, after the
// token's session ended while the body was held back (a password reset, an
// admin's MFA reset), is undone at once and never shown: the write reads
// the token's revocation again afterwards (accounts.keptFactor).

// heldRequest is a request whose headers are sent now, with tok as its
// bearer, and whose body waits for send. send returns the status and body.
func heldRequest(t *testing.T, in *st.Instance, path, tok string) (send func(body string) (int, []byte)) {
	t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPost, in.URL+path, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	done := make(chan *http.Response, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	return func(body string) (int, []byte) {
		t.Helper()
		_, _ = pw.Write([]byte(body))
		_ = pw.Close()
		resp := <-done
		if resp == nil {
			t.FailNow()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
}

// TestFactorRequestHeldPastTheResetWritesNoFactor: whoever holds a person's
// access token sends a request that writes a second factor or recovery
// codes and holds its body back past the end of the token's session; when
// the body comes the answer is 401 invalid_token and the person has no
// factor and no code of the holder's. Real concurrency: the bodies are held
// on the wire while the session ends.
func TestFactorRequestHeldPastTheResetWritesNoFactor(t *testing.T) {
	for _, b := range mfaBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newMFADeployment(t, b, 0)
			ctx := context.Background()
			adm := d.token(t, d.adm, "web")
			web, err := d.in.App.Core.Store.GetClient(ctx, "web")
			if err != nil {
				t.Fatal(err)
			}
			passwordReset := func(t *testing.T, u store.User) { resetByLink(t, d.in, u.ID, "a second passphrase for factors") }
			mfaReset := func(t *testing.T, u store.User) {
				d.c.PostJSON("/admin/users/"+u.ID+"/mfa/reset", nil, adm).ExpectStatus(http.StatusNoContent)
			}
			// holdPasskeyFinish begins a passkey's registration with tok and
			// holds its finish, the thief's passkey in its body.
			holdPasskeyFinish := func(t *testing.T, tok string) func(t *testing.T) (int, []byte) {
				key, err := passkeystest.New(mfaOrigin)
				if err != nil {
					t.Fatal(err)
				}
				var opts passkeyOptions
				d.c.PostJSON("/auth/mfa/webauthn/register/begin", nil, st.Bearer(tok)).ExpectStatus(http.StatusOK).JSON(&opts)
				cred, err := key.Create(opts.Options)
				if err != nil {
					t.Fatal(err)
				}
				finish := heldRequest(t, d.in, "/auth/mfa/webauthn/register/finish", tok)
				return func(t *testing.T) (int, []byte) {
					body, _ := json.Marshal(map[string]any{"handle": opts.Handle, "name": "thief", "credential": json.RawMessage(cred)})
					return finish(string(body))
				}
			}
			for i, tc := range []struct {
				name string
				// withTOTP: the person has an authenticator app before the
				// token is stolen (else no factor).
				withTOTP bool
				end      func(t *testing.T, u store.User)
				// hold sends the held requests' headers with tok; the
				// returned func sends their bodies once the session ended
				// and returns the last answer.
				hold   func(t *testing.T, tok string) func(t *testing.T) (int, []byte)
				method string // of the factor the undo removes (audited mfa.removed via token_revoked)
			}{
				{"totp_confirm/password_reset", false, passwordReset, func(t *testing.T, tok string) func(t *testing.T) (int, []byte) {
					// A pending enrolment from before the reset: the reset
					// leaves it in place.
					var en totpEnrolment
					d.c.PostJSON("/auth/mfa/totp", nil, st.Bearer(tok)).ExpectStatus(http.StatusCreated).JSON(&en)
					confirm := heldRequest(t, d.in, "/auth/mfa/totp/confirm", tok)
					return func(t *testing.T) (int, []byte) {
						return confirm(fmt.Sprintf(`{"code":%q}`, totpNow(t, en.Secret)))
					}
				}, "totp"},
				{"totp_start_and_confirm/mfa_reset", true, mfaReset, func(t *testing.T, tok string) func(t *testing.T) (int, []byte) {
					// The MFA reset deletes a pending enrolment, so the
					// start is held too: it runs after the reset.
					start := heldRequest(t, d.in, "/auth/mfa/totp", tok)
					confirm := heldRequest(t, d.in, "/auth/mfa/totp/confirm", tok)
					return func(t *testing.T) (int, []byte) {
						status, body := start(`{}`)
						var en totpEnrolment
						if status == http.StatusCreated {
							if err := json.Unmarshal(body, &en); err != nil {
								t.Fatal(err)
							}
						}
						return confirm(fmt.Sprintf(`{"code":%q}`, totpNow(t, en.Secret)))
					}
				}, "totp"},
				{"passkey_finish/mfa_reset", true, mfaReset, holdPasskeyFinish, "webauthn"},
				{"passkey_finish/password_reset", false, passwordReset, holdPasskeyFinish, "webauthn"},
				{"recovery_codes/password_reset", true, passwordReset, func(t *testing.T, tok string) func(t *testing.T) (int, []byte) {
					regenerate := heldRequest(t, d.in, "/auth/mfa/recovery-codes", tok)
					return func(t *testing.T) (int, []byte) { return regenerate(`{}`) }
				}, "recovery_code"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					const pw = "a passphrase for the factor session end test"
					u := d.fx.User(t, fmt.Sprintf("factor%d@example.com", i), pw, "user")
					resp, err := d.in.App.Tokens.IssueForUser(ctx, web, u, "", nil)
					if err != nil {
						t.Fatal(err)
					}
					tok := resp.AccessToken
					if tc.withTOTP {
						// Changing the factors then takes a sign-in with the app.
						secret, _ := enrolTOTPWith(t, d.c, st.Bearer(tok))
						tok = mfaLoginWith(t, d.c, "web", d.webSecret, u.Email, pw, grantMFAOTP, "otp", st.NextTOTPCode(t, secret))
					}
					release := tc.hold(t, tok)
					time.Sleep(300 * time.Millisecond) // the headers are in: the bearer check has run

					tc.end(t, u)
					d.c.Get("/auth/mfa", st.Bearer(tok)).ExpectError(http.StatusUnauthorized, "invalid_token")
					// What the person has now, theirs: the held request must
					// add nothing to it.
					want, err := d.in.App.Core.Store.MFASummary(ctx, u.ID)
					if err != nil {
						t.Fatal(err)
					}

					status, body := release(t)
					if status != http.StatusUnauthorized {
						t.Fatalf("the held request after its session ended: %d %s, want 401 invalid_token", status, body)
					}
					got, err := d.in.App.Core.Store.MFASummary(ctx, u.ID)
					if err != nil {
						t.Fatal(err)
					}
					if got.TOTP != want.TOTP || got.WebAuthnCredentials != want.WebAuthnCredentials {
						t.Fatalf("factors after the held request: %+v, want %+v", got, want)
					}
					if got.RecoveryCodesLeft != 0 && got.RecoveryCodesLeft != want.RecoveryCodesLeft {
						t.Fatalf("%d recovery codes after the held request: the holder's are live", got.RecoveryCodesLeft)
					}
					if got.RecoveryCodesLeft != 0 && tc.method == "recovery_code" {
						t.Fatalf("%d recovery codes after the held regeneration, want them voided", got.RecoveryCodesLeft)
					}
					if !d.audited(t, "mfa.removed", store.OutcomeSuccess, u.ID, map[string]string{"method": tc.method, "via": "token_revoked"}) {
						t.Fatalf("no mfa.removed (method %s) via token_revoked", tc.method)
					}
				})
			}
		})
	}
}

// totpNow is the current code of a base32 secret ("" gives a code of
// nothing: a request that must fail).
func totpNow(t *testing.T, secret string) string {
	t.Helper()
	if secret == "" {
		return "000000"
	}
	code, err := totp.GenerateCode(secret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// TestMFATokenOfAnEndedLoginEnrolsNothing: an mfa_token stands for a
// password step whose login must enrol a second factor; once the account's
// sessions end after that step (a password reset, an admin's MFA reset), an
// app it starts and confirms afterwards is removed at once with the codes
// it came with, and the answer is 401 invalid_token: whoever typed the old password cannot give
// the account a factor only they hold. With the login live the app is
// enrolled.
func TestMFATokenOfAnEndedLoginEnrolsNothing(t *testing.T) {
	for _, b := range mfaBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newMFADeployment(t, b, 50) // admin and above must use MFA
			ctx := context.Background()
			for i, tc := range []struct {
				name string
				end  func(t *testing.T, u store.User)
			}{
				{"ok/login_live", nil},
				{"fail/password_reset", func(t *testing.T, u store.User) {
					resetByLink(t, d.in, u.ID, "a second passphrase for the mfa_token test")
				}},
				{"fail/mfa_reset", func(t *testing.T, u store.User) {
					// The super_admin's own token would need a second factor.
					if err := d.in.App.Accounts.ResetMFA(ctx, accounts.Actor{ID: d.root.ID}, u.ID); err != nil {
						t.Fatal(err)
					}
				}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					u := d.fx.User(t, fmt.Sprintf("enrol%d@example.com", i), "a passphrase for the mfa_token test", "admin")
					tok, enrol := d.mfaToken(t, u)
					if !enrol {
						t.Fatal("the admin's login does not require enrolment")
					}
					if tc.end != nil {
						tc.end(t, u)
					}
					// The whole enrolment comes after the end: nothing is
					// held back, the mfa_token is still there to use.
					c := d.in.Client(t)
					var en totpEnrolment
					c.PostJSON("/auth/mfa/totp", nil, st.Bearer(tok)).ExpectStatus(http.StatusCreated).JSON(&en)
					resp := c.PostJSON("/auth/mfa/totp/confirm", map[string]string{"code": totpNow(t, en.Secret)}, st.Bearer(tok))
					got, err := d.in.App.Core.Store.MFASummary(ctx, u.ID)
					if err != nil {
						t.Fatal(err)
					}
					if tc.end == nil {
						resp.ExpectStatus(http.StatusOK)
						if !got.TOTP || got.RecoveryCodesLeft != 10 {
							t.Fatalf("factors after enrolling with a live login: %+v", got)
						}
						return
					}
					resp.ExpectError(http.StatusUnauthorized, "invalid_token")
					if got.TOTP || got.RecoveryCodesLeft != 0 {
						t.Fatalf("factors after enrolling with the mfa_token of an ended login: %+v, want none", got)
					}
					if !d.audited(t, "mfa.removed", store.OutcomeSuccess, u.ID, map[string]string{"method": "totp", "via": "token_revoked"}) {
						t.Fatal("no mfa.removed (method totp) via token_revoked")
					}
				})
			}
		})
	}
}

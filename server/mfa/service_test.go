package mfa

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/ratelimit"
	"github.com/portcullis-auth/portcullis/store"
)

// TestRFC6238Vectors checks the generator every code goes through against
// RFC 6238 Appendix B (SHA-1, 8 digits).
func TestRFC6238Vectors(t *testing.T) {
	secret := []byte("12345678901234567890")
	for _, tc := range []struct {
		unix int64
		want string
	}{
		{59, "94287082"}, {1111111109, "07081804"}, {1111111111, "14050471"},
		{1234567890, "89005924"}, {2000000000, "69279037"}, {20000000000, "65353130"},
	} {
		t.Run(fmt.Sprint(tc.unix), func(t *testing.T) {
			got, err := totpCode(secret, totpStep(time.Unix(tc.unix, 0)), otp.DigitsEight)
			if err != nil || got != tc.want {
				t.Fatalf("code at %d = %q, %v; want %q", tc.unix, got, err, tc.want)
			}
			// The six-digit code the service accepts is the same HOTP value.
			step, ok, err := matchTOTP(secret, tc.want[2:], time.Unix(tc.unix, 0))
			if err != nil || !ok || step != tc.unix/30 {
				t.Fatalf("matchTOTP(%s) at %d = %d, %v, %v", tc.want[2:], tc.unix, step, ok, err)
			}
		})
	}
}

func TestTOTPSkew(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		for _, tc := range []struct {
			d    int64
			want error
		}{{-2, ErrBadCode}, {-1, nil}, {0, nil}, {1, nil}, {2, ErrBadCode}} {
			t.Run(fmt.Sprintf("step%+d", tc.d), func(t *testing.T) {
				u := e.user(t)
				secret, _ := e.enrolled(t, u)
				ch := e.begin(t, u)
				done, err := e.svc.Complete(tctx(t), ch.Token, "app", e.svc.TOTPCode(e.code(t, secret, tc.d)), meta)
				if !errors.Is(err, tc.want) {
					t.Fatalf("code at step %+d: %v, want %v", tc.d, err, tc.want)
				}
				if err == nil && !reflect.DeepEqual(done.AMR, []string{"pwd", "otp", "mfa"}) {
					t.Fatalf("AMR %v", done.AMR)
				}
			})
		}
	})
}

func TestTOTPReplayRefused(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		u := e.user(t)
		secret, _ := e.enrolled(t, u)
		code := e.code(t, secret, 0)
		if _, err := e.svc.Complete(tctx(t), e.begin(t, u).Token, "app", e.svc.TOTPCode(code), meta); err != nil {
			t.Fatalf("first use: %v", err)
		}
		_, err := e.svc.Complete(tctx(t), e.begin(t, u).Token, "app", e.svc.TOTPCode(code), meta)
		if !errors.Is(err, ErrBadCode) {
			t.Fatalf("replayed code: %v, want ErrBadCode", err)
		}
		// An earlier step's code, still inside the skew, is refused too.
		_, err = e.svc.Complete(tctx(t), e.begin(t, u).Token, "app", e.svc.TOTPCode(e.code(t, secret, -1)), meta)
		if !errors.Is(err, ErrBadCode) {
			t.Fatalf("an older step after a newer one: %v, want ErrBadCode", err)
		}
		if n := len(e.audit.find("mfa.failed", reasonBadCode)); n != 2 {
			t.Fatalf("%d mfa.failed bad_code events, want 2", n)
		}
		for _, ev := range e.audit.find("mfa.failed", "") {
			for k, v := range ev.Details {
				if strings.Contains(v, code) {
					t.Fatalf("audit detail %s=%q holds the code", k, v)
				}
			}
		}
	})
}

// race runs fn in n goroutines released together.
func race(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	var start, done sync.WaitGroup
	start.Add(1)
	for i := range n {
		done.Add(1)
		go func() {
			defer done.Done()
			start.Wait()
			errs[i] = fn(i)
		}()
	}
	start.Done()
	done.Wait()
	return errs
}

func winners(t *testing.T, errs []error, allowed ...error) int {
	t.Helper()
	won := 0
	for i, err := range errs {
		if err == nil {
			won++
			continue
		}
		ok := false
		for _, a := range allowed {
			ok = ok || errors.Is(err, a)
		}
		if !ok {
			t.Fatalf("racer %d: %v", i, err)
		}
	}
	return won
}

func TestTOTPConcurrentSubmissionsAcceptedOnce(t *testing.T) {
	const n = 16
	eachBackend(t, func(t *testing.T, e *env) {
		u := e.user(t)
		secret, _ := e.enrolled(t, u)
		t.Run("one_token", func(t *testing.T) {
			ch := e.begin(t, u)
			code := e.code(t, secret, 0)
			errs := race(n, func(int) error {
				_, err := e.svc.Complete(tctx(t), ch.Token, "app", e.svc.TOTPCode(code), meta)
				return err
			})
			if won := winners(t, errs, ErrBadCode, ErrInvalidToken); won != 1 {
				t.Fatalf("%d of %d concurrent submissions completed, want exactly 1", won, n)
			}
		})
		t.Run("a_token_each", func(t *testing.T) {
			e.clock.Add(30 * time.Second) // a fresh step
			tokens := make([]string, n)
			for i := range tokens {
				tokens[i] = e.begin(t, u).Token
			}
			code := e.code(t, secret, 0)
			errs := race(n, func(i int) error {
				_, err := e.svc.Complete(tctx(t), tokens[i], "app", e.svc.TOTPCode(code), meta)
				return err
			})
			if won := winners(t, errs, ErrBadCode); won != 1 {
				t.Fatalf("%d of %d concurrent submissions completed, want exactly 1", won, n)
			}
		})
	})
}

func TestEnrolment(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		t.Run("confirming_code_refused_at_login", func(t *testing.T) {
			u := e.user(t)
			en, err := e.svc.StartTOTP(tctx(t), u, meta)
			if err != nil {
				t.Fatalf("StartTOTP: %v", err)
			}
			secret := decodeSecret(t, en.Secret)
			code := e.code(t, secret, 0)
			codes, err := e.svc.ConfirmTOTP(tctx(t), u, code, meta)
			if err != nil || len(codes) != 10 {
				t.Fatalf("ConfirmTOTP = %d codes, %v", len(codes), err)
			}
			_, err = e.svc.Complete(tctx(t), e.begin(t, u).Token, "app", e.svc.TOTPCode(code), meta)
			if !errors.Is(err, ErrBadCode) {
				t.Fatalf("login with the enrolment code: %v, want ErrBadCode", err)
			}
			if ev := e.audit.find("mfa.enrolled", ""); len(ev) == 0 || ev[len(ev)-1].TargetID != u.ID || ev[len(ev)-1].Details["method"] != "totp" {
				t.Fatalf("mfa.enrolled events %+v", ev)
			}
		})
		t.Run("start_shapes", func(t *testing.T) {
			u := e.user(t)
			en, err := e.svc.StartTOTP(tctx(t), u, meta)
			if err != nil {
				t.Fatalf("StartTOTP: %v", err)
			}
			if len(decodeSecret(t, en.Secret)) < 20 || strings.Contains(en.Secret, "=") {
				t.Fatalf("secret %q: want ≥ 160 bits, unpadded base32", en.Secret)
			}
			uri, err := url.Parse(en.URI)
			if err != nil || uri.Scheme != "otpauth" || uri.Host != "totp" || uri.Path != "/Example Co:"+u.Email ||
				uri.Query().Get("issuer") != "Example Co" || uri.Query().Get("secret") != en.Secret ||
				uri.Query().Get("digits") != "6" || uri.Query().Get("period") != "30" || uri.Query().Get("algorithm") != "SHA1" {
				t.Fatalf("URI %q", en.URI)
			}
			if !bytes.HasPrefix(en.QRPNG, []byte("\x89PNG\r\n\x1a\n")) {
				t.Fatalf("QR is not a PNG")
			}
			en2, _ := e.svc.StartTOTP(tctx(t), u, meta)
			if en2.Secret == en.Secret {
				t.Fatal("two enrolments got the same secret")
			}
		})
		t.Run("unconfirmed_changes_nothing", func(t *testing.T) {
			u := e.user(t)
			if _, err := e.svc.StartTOTP(tctx(t), u, meta); err != nil {
				t.Fatalf("StartTOTP: %v", err)
			}
			st, err := e.svc.Status(tctx(t), u.ID)
			if err != nil || st.Enrolled() || st.TOTP || st.RecoveryCodesLeft != 0 {
				t.Fatalf("Status after an unconfirmed enrolment = %+v, %v", st, err)
			}
			if ch, err := e.svc.Begin(tctx(t), u, nil, ratelimit.Counted{}, "app", "", "", e.clock.Now(), []string{AMRPassword}); ch != nil || err != nil {
				t.Fatalf("Begin after an unconfirmed enrolment = %+v, %v; want nil, nil", ch, err)
			}
			// An enrolled user's pending re-enrolment: the old secret still
			// logs in, the pending one does not.
			v := e.user(t)
			old, _ := e.enrolled(t, v)
			en, _ := e.svc.StartTOTP(tctx(t), v, meta)
			pending := decodeSecret(t, en.Secret)
			_, err = e.svc.Complete(tctx(t), e.begin(t, v).Token, "app", e.svc.TOTPCode(e.code(t, pending, 0)), meta)
			if !errors.Is(err, ErrBadCode) {
				t.Fatalf("the pending secret logged in: %v", err)
			}
			if _, err := e.svc.Complete(tctx(t), e.begin(t, v).Token, "app", e.svc.TOTPCode(e.code(t, old, 0)), meta); err != nil {
				t.Fatalf("the confirmed secret during a re-enrolment: %v", err)
			}
		})
		t.Run("confirm_refusals", func(t *testing.T) {
			u := e.user(t)
			if _, err := e.svc.ConfirmTOTP(tctx(t), u, "123456", meta); !errors.Is(err, ErrNotEnrolled) {
				t.Fatalf("ConfirmTOTP without enrolment: %v", err)
			}
			en, _ := e.svc.StartTOTP(tctx(t), u, meta)
			secret := decodeSecret(t, en.Secret)
			for _, bad := range []string{"", "12345", "abcdef", e.code(t, secret, 2), e.code(t, secret, -2)} {
				if _, err := e.svc.ConfirmTOTP(tctx(t), u, bad, meta); !errors.Is(err, ErrBadCode) {
					t.Fatalf("ConfirmTOTP(%q): %v, want ErrBadCode", bad, err)
				}
			}
			if st, _ := e.svc.Status(tctx(t), u.ID); st.Enrolled() {
				t.Fatal("refused confirmations enrolled the user")
			}
			// A code of an enrolment replaced meanwhile does not confirm.
			en2, _ := e.svc.StartTOTP(tctx(t), u, meta)
			if _, err := e.svc.ConfirmTOTP(tctx(t), u, e.code(t, secret, 0), meta); !errors.Is(err, ErrBadCode) {
				t.Fatalf("ConfirmTOTP with the replaced secret's code: %v", err)
			}
			if _, err := e.svc.ConfirmTOTP(tctx(t), u, e.code(t, decodeSecret(t, en2.Secret), 0), meta); err != nil {
				t.Fatalf("ConfirmTOTP: %v", err)
			}
		})
		t.Run("concurrent_confirmations_once", func(t *testing.T) {
			u := e.user(t)
			en, _ := e.svc.StartTOTP(tctx(t), u, meta)
			code := e.code(t, decodeSecret(t, en.Secret), 0)
			const n = 8
			got := make([][]string, n)
			errs := race(n, func(i int) error {
				var err error
				got[i], err = e.svc.ConfirmTOTP(tctx(t), u, code, meta)
				return err
			})
			if won := winners(t, errs, ErrBadCode, ErrNotEnrolled); won != 1 {
				t.Fatalf("%d of %d concurrent confirmations succeeded, want 1", won, n)
			}
			for i, err := range errs {
				if err == nil {
					if _, err := e.svc.RecoveryCode(got[i][0]).Verify(tctx(t), u.ID); err != nil {
						t.Fatalf("the winner's recovery codes are not the stored ones: %v", err)
					}
				}
			}
		})
		t.Run("bad_confirmation_audited", func(t *testing.T) {
			u := e.user(t)
			if _, err := e.svc.StartTOTP(tctx(t), u, meta); err != nil {
				t.Fatalf("StartTOTP: %v", err)
			}
			_, _ = e.svc.ConfirmTOTP(tctx(t), u, "12345x", meta)
			found := false
			for _, ev := range e.audit.find("mfa.failed", reasonBadCode) {
				if ev.TargetID == u.ID && ev.Details["stage"] == "enrol" && ev.Outcome == store.OutcomeFailure {
					found = true
				}
			}
			if !found {
				t.Fatal("a refused confirmation was not audited")
			}
		})
		t.Run("remove", func(t *testing.T) {
			u := e.user(t)
			secret, codes := e.enrolled(t, u)
			if err := e.svc.RemoveTOTP(tctx(t), u.ID, meta); err != nil {
				t.Fatalf("RemoveTOTP: %v", err)
			}
			if err := e.svc.RemoveTOTP(tctx(t), u.ID, meta); !errors.Is(err, ErrNotEnrolled) {
				t.Fatalf("RemoveTOTP twice: %v", err)
			}
			st, _ := e.svc.Status(tctx(t), u.ID)
			if st.Enrolled() || st.RecoveryCodesLeft != 0 {
				t.Fatalf("Status after removal: %+v", st)
			}
			if ch, err := e.svc.Begin(tctx(t), u, nil, ratelimit.Counted{}, "app", "", "", e.clock.Now(), []string{AMRPassword}); ch != nil || err != nil {
				t.Fatalf("Begin after removal = %+v, %v", ch, err)
			}
			f := e.svc.TOTPCode(e.code(t, secret, 0))
			if _, err := f.Verify(tctx(t), u.ID); !errors.Is(err, ErrNotEnrolled) || !errors.Is(err, ErrBadCode) {
				t.Fatalf("a removed factor's code: %v", err)
			}
			if _, err := e.svc.RecoveryCode(codes[0]).Verify(tctx(t), u.ID); !errors.Is(err, ErrBadCode) {
				t.Fatalf("a recovery code after removal: %v", err)
			}
			if len(e.audit.find("mfa.removed", "")) == 0 {
				t.Fatal("no mfa.removed event")
			}
		})
	})
}

func TestRecoveryCodes(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		u := e.user(t)
		_, codes := e.enrolled(t, u)
		seen := map[string]bool{}
		for _, c := range codes {
			if len(c) != 19 || c[4] != '-' || c[9] != '-' || c[14] != '-' || seen[c] {
				t.Fatalf("recovery code %q: want XXXX-XXXX-XXXX-XXXX, all different", c)
			}
			if _, ok := normaliseRecoveryCode(c); !ok {
				t.Fatalf("code %q does not normalise", c)
			}
			seen[c] = true
		}
		t.Run("once_any_spelling", func(t *testing.T) {
			typed := strings.ToLower(strings.ReplaceAll(codes[0], "-", " "))
			done, err := e.svc.Complete(tctx(t), e.begin(t, u).Token, "app", e.svc.RecoveryCode(typed), meta)
			if err != nil || !reflect.DeepEqual(done.AMR, []string{"pwd", "mfa"}) || done.RecoveryCodesLeft != 9 {
				t.Fatalf("recovery login = %+v, %v", done, err)
			}
			if ev := e.audit.find("mfa.recovery_code_used", ""); len(ev) != 1 || ev[0].TargetID != u.ID || ev[0].Details["left"] != "9" {
				t.Fatalf("mfa.recovery_code_used events %+v", ev)
			}
			_, err = e.svc.Complete(tctx(t), e.begin(t, u).Token, "app", e.svc.RecoveryCode(codes[0]), meta)
			if !errors.Is(err, ErrBadCode) {
				t.Fatalf("a used recovery code: %v, want ErrBadCode", err)
			}
			for _, bad := range []string{"", "AAAA-AAAA-AAAA-AAAA", "not a code", codes[1] + "A"} {
				_, err = e.svc.Complete(tctx(t), e.begin(t, u).Token, "app", e.svc.RecoveryCode(bad), meta)
				if !errors.Is(err, ErrBadCode) {
					t.Fatalf("recovery code %q: %v", bad, err)
				}
			}
		})
		t.Run("concurrently_once", func(t *testing.T) {
			const n = 16
			tokens := make([]string, n)
			for i := range tokens {
				tokens[i] = e.begin(t, u).Token
			}
			errs := race(n, func(i int) error {
				_, err := e.svc.Complete(tctx(t), tokens[i], "app", e.svc.RecoveryCode(codes[1]), meta)
				return err
			})
			if won := winners(t, errs, ErrBadCode); won != 1 {
				t.Fatalf("%d of %d concurrent uses of one code completed", won, n)
			}
		})
		t.Run("regenerate_replaces_all", func(t *testing.T) {
			fresh, err := e.svc.RegenerateRecoveryCodes(tctx(t), u.ID, meta)
			if err != nil || len(fresh) != 10 {
				t.Fatalf("RegenerateRecoveryCodes = %v, %v", fresh, err)
			}
			_, err = e.svc.Complete(tctx(t), e.begin(t, u).Token, "app", e.svc.RecoveryCode(codes[2]), meta)
			if !errors.Is(err, ErrBadCode) {
				t.Fatalf("an old code after regenerating: %v", err)
			}
			if st, _ := e.svc.Status(tctx(t), u.ID); st.RecoveryCodesLeft != 10 {
				t.Fatalf("codes left %d", st.RecoveryCodesLeft)
			}
			if _, err := e.svc.Complete(tctx(t), e.begin(t, u).Token, "app", e.svc.RecoveryCode(fresh[9]), meta); err != nil {
				t.Fatalf("a new code: %v", err)
			}
			if _, err := e.svc.RegenerateRecoveryCodes(tctx(t), e.user(t).ID, meta); !errors.Is(err, ErrNotEnrolled) {
				t.Fatalf("RegenerateRecoveryCodes without a factor: %v", err)
			}
		})
	})
}

func TestMFAToken(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		u := e.user(t)
		secret, _ := e.enrolled(t, u)
		t.Run("challenge_and_peek", func(t *testing.T) {
			authTime := e.clock.Now().Add(-time.Second)
			ch, err := e.svc.Begin(tctx(t), u, nil, ratelimit.Counted{}, "app", "openid profile", "", authTime, []string{AMRPassword})
			if err != nil || ch == nil || ch.EnrollmentRequired || !reflect.DeepEqual(ch.Methods, []string{"totp", "recovery_code"}) ||
				len(ch.Token) != 43 || !ch.ExpiresAt.Equal(e.clock.Now().Add(5*time.Minute)) {
				t.Fatalf("Begin = %+v, %v", ch, err)
			}
			p, err := e.svc.Peek(tctx(t), ch.Token, "app")
			if err != nil || p.UserID != u.ID || p.ClientID != "app" || p.Scope != "openid profile" || !p.AuthTime.Equal(authTime) {
				t.Fatalf("Peek = %+v, %v", p, err)
			}
			if _, err := e.svc.Peek(tctx(t), ch.Token, ""); err != nil {
				t.Fatalf("Peek without a client: %v", err)
			}
			for _, bad := range []string{"", "x", ch.Token[:42], ch.Token + "A", strings.Repeat("A", 43)} {
				if _, err := e.svc.Peek(tctx(t), bad, "app"); !errors.Is(err, ErrInvalidToken) {
					t.Fatalf("Peek(%q): %v", bad, err)
				}
			}
		})
		t.Run("single_use", func(t *testing.T) {
			e.clock.Add(30 * time.Second)
			ch := e.begin(t, u)
			done, err := e.svc.Complete(tctx(t), ch.Token, "app", e.svc.TOTPCode(e.code(t, secret, 0)), meta)
			if err != nil || done.UserID != u.ID || done.Scope != "openid profile" || done.RecoveryCodesLeft != -1 {
				t.Fatalf("Complete = %+v, %v", done, err)
			}
			e.clock.Add(30 * time.Second)
			if _, err := e.svc.Complete(tctx(t), ch.Token, "app", e.svc.TOTPCode(e.code(t, secret, 0)), meta); !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("a used token: %v", err)
			}
			if _, err := e.svc.Peek(tctx(t), ch.Token, "app"); !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("Peek of a used token: %v", err)
			}
		})
		t.Run("expires", func(t *testing.T) {
			e.clock.Add(30 * time.Second)
			ch := e.begin(t, u)
			e.clock.Add(5*time.Minute + time.Second)
			if _, err := e.svc.Peek(tctx(t), ch.Token, "app"); !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("Peek of an expired token: %v", err)
			}
			if _, err := e.svc.Complete(tctx(t), ch.Token, "app", e.svc.TOTPCode(e.code(t, secret, 0)), meta); !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("Complete with an expired token: %v", err)
			}
		})
		t.Run("bound_to_its_client", func(t *testing.T) {
			e.clock.Add(30 * time.Second)
			ch := e.begin(t, u)
			if _, err := e.svc.Peek(tctx(t), ch.Token, "other"); !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("Peek by another client: %v", err)
			}
			code := e.code(t, secret, 0)
			if _, err := e.svc.Complete(tctx(t), ch.Token, "other", e.svc.TOTPCode(code), meta); !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("Complete by another client: %v", err)
			}
			// The refusal used up neither the code nor the token.
			if _, err := e.svc.Complete(tctx(t), ch.Token, "app", e.svc.TOTPCode(code), meta); err != nil {
				t.Fatalf("Complete by its client afterwards: %v", err)
			}
		})
		t.Run("five_attempts", func(t *testing.T) {
			e.clock.Add(30 * time.Second)
			ch := e.begin(t, u)
			checks0, _ := e.throttle.counts()
			wrong := "000000"
			if wrong == e.code(t, secret, 0) || wrong == e.code(t, secret, 1) || wrong == e.code(t, secret, -1) {
				wrong = "999999"
			}
			for i := range maxAttempts {
				if _, err := e.svc.Complete(tctx(t), ch.Token, "app", e.svc.TOTPCode(wrong), meta); !errors.Is(err, ErrBadCode) {
					t.Fatalf("attempt %d: %v, want ErrBadCode", i+1, err)
				}
			}
			if checks, _ := e.throttle.counts(); checks-checks0 != maxAttempts {
				t.Fatalf("the login throttle saw %d attempts, want %d", checks-checks0, maxAttempts)
			}
			e.throttle.mu.Lock()
			last := e.throttle.checks[len(e.throttle.checks)-1]
			e.throttle.mu.Unlock()
			if last != meta.IP+"|"+u.Email {
				t.Fatalf("throttle counted %q, want the account's email", last)
			}
			if _, err := e.svc.Peek(tctx(t), ch.Token, "app"); !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("Peek after 5 failures: %v", err)
			}
			_, err := e.svc.Complete(tctx(t), ch.Token, "app", e.svc.TOTPCode(e.code(t, secret, 0)), meta)
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("the 6th attempt with the right code: %v, want ErrInvalidToken", err)
			}
			if len(e.audit.find("mfa.failed", reasonTooManyAttempts)) == 0 {
				t.Fatal("no mfa.failed too_many_attempts event")
			}
			// The right code is still unused: a new token completes with it.
			if _, err := e.svc.Complete(tctx(t), e.begin(t, u).Token, "app", e.svc.TOTPCode(e.code(t, secret, 0)), meta); err != nil {
				t.Fatalf("the code with a new token: %v", err)
			}
		})
		t.Run("throttle_refusal", func(t *testing.T) {
			e.clock.Add(30 * time.Second)
			ch := e.begin(t, u)
			code := e.code(t, secret, 0)
			e.throttle.mu.Lock()
			e.throttle.refuse = apierr.ErrTemporarilyUnavailable
			e.throttle.mu.Unlock()
			_, err := e.svc.Complete(tctx(t), ch.Token, "app", e.svc.TOTPCode(code), meta)
			e.throttle.mu.Lock()
			e.throttle.refuse = nil
			e.throttle.mu.Unlock()
			if !isStatus(err, http.StatusServiceUnavailable) {
				t.Fatalf("Complete while the throttle refuses: %v", err)
			}
			_, succ0 := e.throttle.counts()
			if _, err := e.svc.Complete(tctx(t), ch.Token, "app", e.svc.TOTPCode(code), meta); err != nil {
				t.Fatalf("the code was used by a refused attempt: %v", err)
			}
			if _, succ := e.throttle.counts(); succ != succ0+1 {
				t.Fatal("a completed second step did not take back its attempts")
			}
		})
		t.Run("invalid_token_audited", func(t *testing.T) {
			n := len(e.audit.find("mfa.failed", reasonInvalidToken))
			_, _ = e.svc.Complete(tctx(t), strings.Repeat("A", 43), "app", e.svc.TOTPCode("123456"), meta)
			if len(e.audit.find("mfa.failed", reasonInvalidToken)) != n+1 {
				t.Fatal("an unknown token was not audited")
			}
		})
	})
}

func TestBegin(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		if ch, err := e.svc.Begin(tctx(t), e.user(t, "user"), nil, ratelimit.Counted{}, "app", "", "", e.clock.Now(), []string{AMRPassword}); ch != nil || err != nil {
			t.Fatalf("Begin for a user without a factor, not required = %+v, %v", ch, err)
		}
		admin := e.user(t, "admin")
		if !e.svc.Required(admin.Roles) || e.svc.Required([]string{"user"}) {
			t.Fatal("Required does not follow the policy")
		}
		ch, err := e.svc.Begin(tctx(t), admin, nil, ratelimit.Counted{}, "app", "openid", "", e.clock.Now(), []string{AMRPassword})
		if err != nil || ch == nil || !ch.EnrollmentRequired || len(ch.Methods) != 0 {
			t.Fatalf("Begin for a required, unenrolled user = %+v, %v", ch, err)
		}
		p, err := e.svc.Peek(tctx(t), ch.Token, "app")
		if err != nil || !p.EnrollmentRequired || p.UserID != admin.ID {
			t.Fatalf("Peek = %+v, %v", p, err)
		}
		// The token allows enrolment, never a login.
		if _, err := e.svc.Complete(tctx(t), ch.Token, "app", e.svc.TOTPCode("123456"), meta); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("Complete with an enrolment token: %v", err)
		}
		e.enrolled(t, admin)
		ch, err = e.svc.Begin(tctx(t), admin, nil, ratelimit.Counted{}, "app", "openid", "", e.clock.Now(), []string{AMRPassword})
		if err != nil || ch == nil || ch.EnrollmentRequired || !reflect.DeepEqual(ch.Methods, []string{"totp", "recovery_code"}) {
			t.Fatalf("Begin after enrolment = %+v, %v", ch, err)
		}
	})
}

// TestBeginWithFactorsRead: a summary the caller read with the user (the
// login's one statement: passcheck.Result.Factors) is what Begin decides
// on; it does not read the factors again.
func TestBeginWithFactorsRead(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		plain, enrolledUser := e.user(t, "user"), e.user(t, "user")
		e.enrolled(t, enrolledUser)
		totp := Summary{TOTP: true, RecoveryCodesLeft: 2}
		ch, err := e.svc.Begin(tctx(t), plain, &totp, ratelimit.Counted{}, "app", "", "", e.clock.Now(), []string{AMRPassword})
		if err != nil || ch == nil || ch.EnrollmentRequired || !reflect.DeepEqual(ch.Methods, []string{"totp", "recovery_code"}) {
			t.Fatalf("Begin with a summary that has TOTP, for a user the store has none of = %+v, %v", ch, err)
		}
		if ch, err := e.svc.Begin(tctx(t), enrolledUser, &Summary{}, ratelimit.Counted{}, "app", "", "", e.clock.Now(), []string{AMRPassword}); ch != nil || err != nil {
			t.Fatalf("Begin with an empty summary = %+v, %v; want no second step", ch, err)
		}
		if ch, err := e.svc.Begin(tctx(t), enrolledUser, nil, ratelimit.Counted{}, "app", "", "", e.clock.Now(), []string{AMRPassword}); err != nil || ch == nil {
			t.Fatalf("Begin without a summary (reads the store) = %+v, %v; want a second step", ch, err)
		}
	})
}

// webAuthnFactor stands for server/passkeys' factor.
type webAuthnFactor struct{ err error }

func (webAuthnFactor) Method() string { return MethodWebAuthn }
func (f webAuthnFactor) Verify(context.Context, string) ([]string, error) {
	return []string{AMRHardwareKey, AMRUserPresence}, f.err
}

// TestCompleteAMRFollowsTheFirstFactor: the amr of a completed second
// step starts with the first factor Begin was given, whoever completes it
// (the login page or an MFA grant): "pwd" only for a password, "fed" for a
// sign-in at an identity provider. Before (found by a review), every
// completed step claimed "pwd", and the login page rewrote its own.
func TestCompleteAMRFollowsTheFirstFactor(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		u := e.user(t)
		e.enrolled(t, u)
		for _, tc := range []struct {
			name  string
			first []string
			want  []string
		}{
			{"ok/password", []string{AMRPassword}, []string{"pwd", "hwk", "user", "mfa"}},
			{"ok/upstream", []string{"fed"}, []string{"fed", "hwk", "user", "mfa"}},
			{"ok/upstream_linked_with_the_password", []string{"fed", AMRPassword}, []string{"fed", "pwd", "hwk", "user", "mfa"}},
			{"ok/upstream_methods_each_once_mfa_last", []string{"fed", AMRHardwareKey, AMRMFA}, []string{"fed", "hwk", "user", "mfa"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ch, err := e.svc.Begin(tctx(t), u, nil, ratelimit.Counted{}, "app", "openid", "", e.clock.Now(), tc.first)
				if err != nil || ch == nil {
					t.Fatalf("Begin = %+v, %v", ch, err)
				}
				done, err := e.svc.Complete(tctx(t), ch.Token, "app", webAuthnFactor{}, meta)
				if err != nil || !reflect.DeepEqual(done.AMR, tc.want) {
					t.Fatalf("Complete = %v, %v; want amr %v", done.AMR, err, tc.want)
				}
			})
		}
		t.Run("fail/no_first_factor", func(t *testing.T) {
			if ch, err := e.svc.Begin(tctx(t), u, nil, ratelimit.Counted{}, "app", "openid", "", e.clock.Now(), nil); err == nil || ch != nil {
				t.Fatalf("Begin without the first factor = %+v, %v", ch, err)
			}
		})
		t.Run("ok/record_of_an_earlier_version_is_a_password_login", func(t *testing.T) {
			if got := (tokenRecord{}).first(); !reflect.DeepEqual(got, []string{AMRPassword}) {
				t.Fatalf("first() of a record without it = %v", got)
			}
		})
	})
}

func TestCompleteOtherFactors(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		u := e.user(t)
		e.enrolled(t, u)
		done, err := e.svc.Complete(tctx(t), e.begin(t, u).Token, "app", webAuthnFactor{}, meta)
		if err != nil || !reflect.DeepEqual(done.AMR, []string{"pwd", "hwk", "user", "mfa"}) || ACR(done.AMR) != "mfa" {
			t.Fatalf("WebAuthn completion = %+v, %v", done, err)
		}
		// A factor's store failure is no bad code: 503, nothing audited as
		// a wrong code, the token still usable.
		ch := e.begin(t, u)
		failing := webAuthnFactor{err: apierr.ErrTemporarilyUnavailable.WithCause(errors.New("db down"))}
		n := len(e.audit.find("mfa.failed", reasonBadCode))
		if _, err := e.svc.Complete(tctx(t), ch.Token, "app", failing, meta); !isStatus(errors.Unwrap(err), 503) && !isStatusDeep(err, 503) {
			t.Fatalf("a factor's store failure: %v", err)
		}
		if len(e.audit.find("mfa.failed", reasonBadCode)) != n {
			t.Fatal("a store failure was audited as a bad code")
		}
		if _, err := e.svc.Complete(tctx(t), ch.Token, "app", webAuthnFactor{}, meta); err != nil {
			t.Fatalf("the token after a store failure: %v", err)
		}
	})
}

func isStatusDeep(err error, status int) bool {
	var ae *apierr.Error
	return errors.As(err, &ae) && ae.Status == status
}

func TestStoredOnlySealedOrHashed(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		u := e.user(t)
		en, err := e.svc.StartTOTP(tctx(t), u, meta)
		if err != nil {
			t.Fatalf("StartTOTP: %v", err)
		}
		secret := decodeSecret(t, en.Secret)
		codes, err := e.svc.ConfirmTOTP(tctx(t), u, e.code(t, secret, 0), meta)
		if err != nil {
			t.Fatalf("ConfirmTOTP: %v", err)
		}
		rows := rawRows(t, e, "SELECT * FROM mfa_totp")
		if len(rows) != 1 {
			t.Fatalf("read mfa_totp: %d rows", len(rows))
		}
		var sealed []byte
		for col, v := range rows[0] {
			b := asBytes(v)
			if bytes.Contains(b, secret) || bytes.Contains(b, []byte(en.Secret)) ||
				bytes.Contains(bytes.ToUpper(b), []byte(en.Secret)) {
				t.Fatalf("mfa_totp.%s holds the secret in the clear", col)
			}
			if col == "secret_sealed" {
				sealed = b
			}
		}
		if len(sealed) == 0 {
			t.Fatal("no sealed secret stored")
		}
		if plain, err := e.keks.Open(sealed, totpAAD(u.ID)); err != nil || !bytes.Equal(plain, secret) {
			t.Fatalf("the stored secret does not open under the user's AAD: %v", err)
		}
		if _, err := e.keks.Open(sealed, totpAAD("usr_someone_else")); err == nil {
			t.Fatal("the sealed secret opens for another user")
		}
		rc := rawRows(t, e, "SELECT * FROM mfa_recovery_codes")
		if len(rc) != 10 {
			t.Fatalf("read mfa_recovery_codes: %d rows", len(rc))
		}
		for _, row := range rc {
			for col, v := range row {
				b := asBytes(v)
				for _, c := range codes {
					norm, _ := normaliseRecoveryCode(c)
					if bytes.Contains(b, []byte(c)) || bytes.Contains(b, []byte(norm)) || bytes.Contains(b, []byte(strings.ToLower(norm))) {
						t.Fatalf("mfa_recovery_codes.%s holds a code in the clear", col)
					}
				}
			}
		}
	})
}

// rawRows reads every column of every row of query as the driver gives it.
func rawRows(t *testing.T, e *env, query string) []map[string]any {
	t.Helper()
	rows, err := e.st.DB().Raw(query).Rows()
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out []map[string]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		row := map[string]any{}
		for i, c := range cols {
			row[c] = vals[i]
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return out
}

func asBytes(v any) []byte {
	switch x := v.(type) {
	case []byte:
		return x
	case string:
		return []byte(x)
	default:
		return []byte(fmt.Sprint(x))
	}
}

func TestReset(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		u := e.user(t)
		secret, codes := e.enrolled(t, u)
		if err := e.st.AddWebAuthnCredential(tctx(t), store.WebAuthnCredential{ID: "cred-" + u.ID, UserID: u.ID, Name: "Key",
			Credential: []byte("{}")}); err != nil {
			t.Fatalf("AddWebAuthnCredential: %v", err)
		}
		admin := Meta{ActorID: "usr_admin", IP: "192.0.2.1"}
		if err := e.svc.Reset(tctx(t), u.ID, admin); err != nil {
			t.Fatalf("Reset: %v", err)
		}
		st, err := e.svc.Status(tctx(t), u.ID)
		if err != nil || st.TOTP || len(st.WebAuthn) != 0 || st.RecoveryCodesLeft != 0 {
			t.Fatalf("Status after Reset = %+v, %v", st, err)
		}
		if ch, err := e.svc.Begin(tctx(t), u, nil, ratelimit.Counted{}, "app", "", "", e.clock.Now(), []string{AMRPassword}); ch != nil || err != nil {
			t.Fatalf("Begin after Reset = %+v, %v", ch, err)
		}
		if _, err := e.svc.TOTPCode(e.code(t, secret, 0)).Verify(tctx(t), u.ID); !errors.Is(err, ErrBadCode) {
			t.Fatalf("TOTP after Reset: %v", err)
		}
		if _, err := e.svc.RecoveryCode(codes[0]).Verify(tctx(t), u.ID); !errors.Is(err, ErrBadCode) {
			t.Fatalf("recovery code after Reset: %v", err)
		}
		ev := e.audit.find("mfa.reset", "")
		if len(ev) != 1 || ev[0].ActorID != "usr_admin" || ev[0].TargetID != u.ID || ev[0].Outcome != store.OutcomeSuccess {
			t.Fatalf("mfa.reset events %+v", ev)
		}
	})
}

// downCounter is a counter whose backend is unreachable.
type downCounter struct{}

func (downCounter) Hit(context.Context, string, time.Duration, time.Time) (int64, time.Duration, error) {
	return 0, 0, store.ErrUnavailable
}

func (downCounter) Peek(context.Context, string, time.Time) (int64, time.Duration, error) {
	return 0, 0, store.ErrUnavailable
}

// TestFailsClosed: with the attempt counter down, no second step is
// accepted (503), and the code is not used up.
func TestFailsClosed(t *testing.T) {
	st, state := backends[0].open(t)
	e := newEnv(t, st, state, downCounter{})
	u := e.user(t)
	secret, _ := e.enrolled(t, u)
	ch := e.begin(t, u)
	if _, err := e.svc.Peek(tctx(t), ch.Token, "app"); !isStatusDeep(err, http.StatusServiceUnavailable) {
		t.Fatalf("Peek with the counter down: %v, want 503", err)
	}
	if _, err := e.svc.Complete(tctx(t), ch.Token, "app", e.svc.TOTPCode(e.code(t, secret, 0)), meta); !isStatusDeep(err, http.StatusServiceUnavailable) {
		t.Fatalf("Complete with the counter down: %v, want 503", err)
	}
	if _, err := e.svc.TOTPCode(e.code(t, secret, 0)).Verify(tctx(t), u.ID); err != nil {
		t.Fatalf("the code was used by a refused attempt: %v", err)
	}
}

// TestCompleteTakesBackTheLoginsAttempts: a completed second step takes back
// from the login throttle its own attempt and, when Begin was given the
// attempt the password step counted (its login and window), that step's
// attempt too, from its own window (the password step left it for the
// second step); nothing else. A record without the password step's window
// (an earlier version's, or rate limits off at the password step) takes
// back the second step's own attempt only. An abandoned step takes back
// nothing.
func TestCompleteTakesBackTheLoginsAttempts(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		u := e.user(t)
		e.enrolled(t, u)
		for _, tc := range []struct {
			name    string
			counted ratelimit.Counted
			want    string
		}{
			{"ok/after_a_password_step", ratelimit.Counted{Login: "Typed@Example.com", Window: 500},
				meta.IP + "|Typed@Example.com@500 Typed@Example.com@1000"},
			{"ok/no_password_step_counted", ratelimit.Counted{}, meta.IP + "|" + u.Email + "@1000"},
			{"ok/password_step_without_its_window", ratelimit.Counted{Login: "Typed@Example.com"},
				meta.IP + "|Typed@Example.com@1000"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ch, err := e.svc.Begin(tctx(t), u, nil, tc.counted, "app", "openid", "", e.clock.Now(), []string{AMRPassword})
				if err != nil || ch == nil {
					t.Fatalf("Begin = %+v, %v", ch, err)
				}
				_, before := e.throttle.counts()
				if _, err := e.svc.Complete(tctx(t), ch.Token, "app", webAuthnFactor{}, meta); err != nil {
					t.Fatalf("Complete: %v", err)
				}
				e.throttle.mu.Lock()
				got := e.throttle.successes[before:]
				e.throttle.mu.Unlock()
				if len(got) != 1 || got[0] != tc.want {
					t.Fatalf("the throttle was told %v, want [%s]", got, tc.want)
				}
			})
		}
	})
}

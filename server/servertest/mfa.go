package servertest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/portcullis-auth/portcullis/server/mfa"
	"github.com/portcullis-auth/portcullis/store"
)

// EnrolTOTP enrols TOTP for u through the deployment's mfa.Service
// (Instance.App.MFA), as the self-service endpoints do, confirming it with
// the current code, and returns the secret (base32) and the ten recovery
// codes. The confirmation uses up the current time step: the next code
// that logs in is NextTOTPCode's.
func EnrolTOTP(t testing.TB, svc *mfa.Service, u store.User) (secret string, recovery []string) {
	t.Helper()
	return enrolTOTP(t, svc, u, 0)
}

// EnrolTOTPPreviousStep enrols TOTP for u like EnrolTOTP, but confirms it
// with the previous time step's code (accepted within the server's skew of
// one step), so the current step's code is still unused for a login. A
// step boundary that passes between drawing that code and the server's
// check makes it two steps old and refused with mfa.ErrBadCode; the
// confirmation is then made once more with the new previous step's code
// (the refused one used up nothing). No sleep: the retry draws its code
// afresh.
func EnrolTOTPPreviousStep(t testing.TB, svc *mfa.Service, u store.User) (secret string, recovery []string) {
	t.Helper()
	return enrolTOTP(t, svc, u, -30*time.Second)
}

// enrolTOTP starts a TOTP enrolment of u and confirms it with the code of
// the time step at now+offset, drawn afresh for one more try when the
// first is refused with mfa.ErrBadCode (a step boundary passed in
// between).
func enrolTOTP(t testing.TB, svc *mfa.Service, u store.User, offset time.Duration) (string, []string) {
	t.Helper()
	ctx := context.Background()
	e, err := svc.StartTOTP(ctx, u, mfa.Meta{ActorID: u.ID})
	if err != nil {
		t.Fatalf("start TOTP enrolment of %s: %v", u.Email, err)
	}
	confirm := func() ([]string, error) {
		return svc.ConfirmTOTP(ctx, u, TOTPCode(t, e.Secret, time.Now().Add(offset)), mfa.Meta{ActorID: u.ID})
	}
	recovery, err := confirm()
	if errors.Is(err, mfa.ErrBadCode) {
		recovery, err = confirm()
	}
	if err != nil {
		t.Fatalf("confirm TOTP enrolment of %s: %v", u.Email, err)
	}
	return e.Secret, recovery
}

// TOTPCode is the RFC 6238 code (SHA-1, 6 digits, 30 s) of secret at at.
func TOTPCode(t testing.TB, secret string, at time.Time) string {
	t.Helper()
	code, err := totp.GenerateCodeCustom(secret, at, totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		t.Fatalf("TOTP code: %v", err)
	}
	return code
}

// NextTOTPCode is the code of the time step after the current one: the
// server accepts it (skew ±1) once the current step was used up by an
// enrolment or a login, for as long as the current step is at most one
// behind it.
func NextTOTPCode(t testing.TB, secret string) string {
	t.Helper()
	return TOTPCode(t, secret, time.Now().Add(30*time.Second))
}

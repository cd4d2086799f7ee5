// Package mfa is multi-factor authentication: TOTP (RFC 6238) enrolment and
// checks with replay refused across instances, single-use recovery codes,
// and the mfa_token that carries a correct password to its second factor
// (contract, "Multi-factor authentication"). WebAuthn ceremonies live in
// server/passkeys and plug in here as a Factor.
package mfa

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// Second-factor methods, as the contract's mfa_methods names them.
const (
	MethodTOTP         = "totp"
	MethodWebAuthn     = "webauthn"
	MethodRecoveryCode = "recovery_code"
)

// Authentication method references (RFC 8176) and the acr values Portcullis
// issues.
const (
	AMRPassword     = "pwd"
	AMROTP          = "otp"
	AMRHardwareKey  = "hwk"
	AMRUserPresence = "user"
	AMRMFA          = "mfa"

	ACRPassword = "pwd"
	ACRMFA      = "mfa"
)

// ACR is the acr claim for a login authenticated by amr: "mfa" when amr
// holds "mfa", else "pwd".
func ACR(amr []string) string {
	if slices.Contains(amr, AMRMFA) {
		return ACRMFA
	}
	return ACRPassword
}

// Errors of the second step. Every refusal of an MFA grant is invalid_grant
// to the client; these tell the cases apart for audit and tests.
var (
	// ErrInvalidToken: the mfa_token is unknown, expired, used, issued to
	// another client, or out of attempts.
	ErrInvalidToken = errors.New("mfa: invalid mfa_token")
	// ErrBadCode: the code or assertion is wrong, or was used already.
	ErrBadCode = errors.New("mfa: wrong or used second factor")
	// ErrNotEnrolled: the user has no such factor.
	ErrNotEnrolled = errors.New("mfa: factor not enrolled")
)

// Challenge is what a correct password yields when the user has a second
// factor or must enrol one: the mfa_token (shown once) and what it allows.
type Challenge struct {
	Token              string
	EnrollmentRequired bool
	Methods            []string
	ExpiresAt          time.Time
}

// Pending is the login an mfa_token stands for.
type Pending struct {
	UserID   string
	ClientID string
	// Scope is the scope the password step asked for.
	Scope string
	// Tenant is the organisation (slug) the password step named, "" for
	// none.
	Tenant string
	// AuthTime is when the first factor was given (the password step's
	// start, or the person's sign-in at the upstream provider): the
	// login's auth_time.
	AuthTime           time.Time
	EnrollmentRequired bool
	Methods            []string
	ExpiresAt          time.Time
}

// Factor is one second factor presented for a user: a TOTP code, a
// recovery code or a WebAuthn assertion.
type Factor interface {
	// Method names it ("totp", "recovery_code", "webauthn").
	Method() string
	// Verify checks it for userID and uses it up (the TOTP step, the
	// recovery code, the authenticator's counter), returning the RFC 8176
	// methods it proves beside "pwd" and "mfa" (["otp"], ["hwk","user"], or
	// none for a recovery code). A wrong or used factor is an error
	// wrapping ErrBadCode; a store failure any other error.
	Verify(ctx context.Context, userID string) (amr []string, err error)
}

// Completed is a second step that succeeded: the login it finishes.
type Completed struct {
	Pending
	// AMR is the login's methods: the first factor's ("pwd", or "fed" for
	// an upstream sign-in) first, the second factor's, "mfa" last.
	AMR []string
	// RecoveryCodesLeft is set when a recovery code was used (-1 otherwise).
	RecoveryCodesLeft int
}

// Status is what second factors a user has, the credentials listed (the
// self-service views).
type Status struct {
	Summary
	WebAuthn []store.WebAuthnCredential
}

// Summary counts a user's second factors: what deciding whether a login
// needs a second step, and which methods it offers, reads (one statement:
// store.MFAFactors.MFASummary).
type Summary store.MFASummary

// Enrolled reports whether the user has a second factor (recovery codes
// alone do not count: they come with a factor and replace it when lost).
func (s Summary) Enrolled() bool { return s.TOTP || s.WebAuthnCredentials > 0 }

// Methods lists the methods the user can finish a login with, in the
// contract's names.
func (s Summary) Methods() []string {
	var m []string
	if s.TOTP {
		m = append(m, MethodTOTP)
	}
	if s.WebAuthnCredentials > 0 {
		m = append(m, MethodWebAuthn)
	}
	if s.RecoveryCodesLeft > 0 {
		m = append(m, MethodRecoveryCode)
	}
	return m
}

// Meta is who asked, for the audit events.
type Meta struct {
	ActorID   string
	IP        string
	UserAgent string
	ClientID  string
	// Via, when set, is why a factor goes without its owner asking, as the
	// audit event's details.via: "token_revoked" (the enrolment was written
	// after the access token that made it was revoked, and is undone).
	Via string
}

// WithVia is an audit event's details with m.Via added as "via", when
// m has one (details itself is not changed).
func (m Meta) WithVia(details map[string]string) map[string]string {
	if m.Via == "" {
		return details
	}
	out := map[string]string{"via": m.Via}
	for k, v := range details {
		out[k] = v
	}
	return out
}

// Enrolment is a started TOTP enrolment: the secret (base32), its
// otpauth:// URI and a QR code of the URI (PNG).
type Enrolment struct {
	Secret string
	URI    string
	QRPNG  []byte
}

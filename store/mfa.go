package store

import (
	"context"
	"time"
)

// Single-use record kinds of multi-factor authentication (see SingleUse).
const (
	// OnceMFAToken is an mfa_token: a correct password waiting for its
	// second factor (contract, "Multi-factor authentication").
	OnceMFAToken = "mfa"
	// OnceWebAuthnSession is a WebAuthn ceremony's challenge and session
	// data, taken once by the ceremony's finish.
	OnceWebAuthnSession = "webauthn"
)

// TOTPFactor is a user's time-based one-time password (RFC 6238) factor.
// Secrets are stored only sealed under the key-encryption key.
type TOTPFactor struct {
	UserID string
	// SecretSealed is the confirmed secret (nil while only an enrolment is
	// pending: an unconfirmed enrolment changes nothing).
	SecretSealed []byte
	ConfirmedAt  *time.Time
	// PendingSealed is an enrolment started and not yet confirmed by a
	// first code; confirming it replaces SecretSealed.
	PendingSealed    []byte
	PendingCreatedAt *time.Time
	// LastStep is the highest RFC 6238 time step accepted for this user
	// (the enrolment's confirming code included): a step at or below it is
	// refused, so each code is accepted once.
	LastStep  int64
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Confirmed reports whether the factor is in use.
func (f TOTPFactor) Confirmed() bool { return f.SecretSealed != nil }

// TOTPSeals finds and re-seals the sealed TOTP secrets at rest, for a
// rotation of the key-encryption key (`portcullis keys reencrypt`) and the
// check at start that every one can still be opened. The store knows
// nothing of the sealed format: it filters on the bytes a sealed value
// begins with, which name the key that sealed it
// (keys.KEKRing.SealPrefixes). A value begins with none of prefixes when
// prefixes is empty.
type TOTPSeals interface {
	// ListTOTPSealedOutside returns, ordered by user id, at most limit TOTP
	// records of users after afterUserID ("" for the first page) whose
	// confirmed or pending sealed secret begins with none of prefixes (all
	// of one length).
	ListTOTPSealedOutside(ctx context.Context, prefixes [][]byte, afterUserID string, limit int) ([]TOTPFactor, error)
	// CountTOTPSealedOutside counts the users whose confirmed or pending
	// sealed secret begins with none of prefixes (all of one length).
	CountTOTPSealedOutside(ctx context.Context, prefixes [][]byte) (int, error)
	// ResealTOTP replaces one sealed secret of the user, the pending
	// enrolment's (pending) or the confirmed one's, by sealed, only while
	// it still holds old (compare-and-swap): false, changing nothing, when
	// an enrolment, a confirmation or a removal changed it meanwhile.
	// Nothing else of the factor changes.
	ResealTOTP(ctx context.Context, userID string, pending bool, old, sealed []byte) (bool, error)
}

// MFASummary counts a user's second factors: what deciding whether a login
// needs a second step, and which methods it may offer, reads.
type MFASummary struct {
	// TOTP is whether the user has a confirmed TOTP secret (a pending
	// enrolment does not count).
	TOTP bool
	// WebAuthnCredentials counts the registered passkeys and security keys.
	WebAuthnCredentials int
	// RecoveryCodesLeft counts the unused recovery codes.
	RecoveryCodesLeft int
}

// Enrolled says the user has a second factor (a confirmed TOTP app or a
// passkey; recovery codes exist only beside one).
func (s MFASummary) Enrolled() bool { return s.TOTP || s.WebAuthnCredentials > 0 }

// WebAuthnCredential is a registered passkey or security key.
type WebAuthnCredential struct {
	// ID is the credential id, base64url without padding.
	ID     string
	UserID string
	// Name is the label the person gave it ("Laptop", "YubiKey").
	Name string
	// Credential is the library's credential record as JSON
	// (github.com/go-webauthn/webauthn webauthn.Credential): public key,
	// attestation, flags, transports.
	Credential []byte
	// SignCount is the authenticator's signature counter as last seen; an
	// assertion must raise it (unless both are 0).
	SignCount  uint32
	CreatedAt  time.Time
	LastUsedAt *time.Time
}

// MFAFactors stores the second factors of users. Every method is atomic
// across any number of server instances sharing the database.
type MFAFactors interface {
	// GetTOTP returns the user's TOTP record, or ErrNotFound.
	GetTOTP(ctx context.Context, userID string) (TOTPFactor, error)
	// PutPendingTOTP records an enrolment (sealed secret) for the user,
	// replacing any earlier pending one and leaving a confirmed secret as it
	// is.
	PutPendingTOTP(ctx context.Context, userID string, sealed []byte, now time.Time) error
	// ConfirmTOTP makes the pending secret the confirmed one, raises
	// LastStep to step and replaces the recovery codes with codeHashes, in
	// one transaction, only when pending still holds pendingSealed and step
	// is above LastStep; ErrConflict otherwise (a replay, or another
	// enrolment in between), ErrNotFound when nothing is pending.
	ConfirmTOTP(ctx context.Context, userID string, pendingSealed []byte, step int64, codeHashes [][]byte, now time.Time) error
	// UseTOTPStep accepts step for the user's confirmed secret: it raises
	// LastStep to step only when step is above it (compare-and-set), and
	// returns ErrConflict when it is not (the code was used already, here
	// or on another instance), ErrNotFound without a confirmed secret.
	UseTOTPStep(ctx context.Context, userID string, step int64, now time.Time) error
	// DeleteTOTP removes the user's TOTP factor (confirmed and pending)
	// and, when no other factor (a passkey) is left, the recovery codes, in
	// one transaction; ErrNotFound when there was none.
	DeleteTOTP(ctx context.Context, userID string) error

	// ReplaceRecoveryCodes replaces all the user's recovery codes by
	// codeHashes (SHA-256 of each code).
	ReplaceRecoveryCodes(ctx context.Context, userID string, codeHashes [][]byte, now time.Time) error
	// AddFirstRecoveryCodes stores codeHashes as the user's recovery
	// codes only when the user has no unused one (a first factor, or codes
	// all used), in one transaction: of concurrent calls exactly one stores
	// its codes. added is false when the user had unused codes (they stay);
	// ErrNotFound for an unknown user.
	AddFirstRecoveryCodes(ctx context.Context, userID string, codeHashes [][]byte, now time.Time) (added bool, err error)
	// UseRecoveryCode marks the unused code hashing to codeHash as used
	// and returns how many unused codes remain; ErrNotFound when no unused
	// code of the user has that hash (never used twice, even concurrently).
	UseRecoveryCode(ctx context.Context, userID string, codeHash []byte, now time.Time) (left int, err error)
	// RecoveryCodesLeft counts the user's unused recovery codes.
	RecoveryCodesLeft(ctx context.Context, userID string) (int, error)
	// MFASummary counts the user's factors in one read (one statement;
	// a password login counts them with the user instead, in the read
	// that finds it): a user without any is the zero summary, not
	// ErrNotFound.
	MFASummary(ctx context.Context, userID string) (MFASummary, error)

	// AddWebAuthnCredential stores a new credential; ErrAlreadyExists when
	// its id is registered (to anyone).
	AddWebAuthnCredential(ctx context.Context, c WebAuthnCredential) error
	// ListWebAuthnCredentials returns the user's credentials, oldest first.
	ListWebAuthnCredentials(ctx context.Context, userID string) ([]WebAuthnCredential, error)
	// UseWebAuthnCredential records an assertion: it stores credential and
	// signCount and sets LastUsedAt only while the stored count is still
	// oldCount (compare-and-set); ErrConflict when it changed meanwhile,
	// ErrNotFound when the user has no such credential.
	UseWebAuthnCredential(ctx context.Context, userID, id string, oldCount, signCount uint32, credential []byte, now time.Time) error
	// DeleteWebAuthnCredential removes one credential of the user and,
	// when no other factor (a passkey, a confirmed TOTP secret) is left,
	// the recovery codes, in one transaction; ErrNotFound when the user has
	// none with that id.
	DeleteWebAuthnCredential(ctx context.Context, userID, id string) error

	// DeleteAllFactors removes every factor and recovery code of the user
	// (an administrator's MFA reset) in one transaction.
	DeleteAllFactors(ctx context.Context, userID string) error
}

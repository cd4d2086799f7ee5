package mfa

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base32"
	"errors"
	"fmt"
	"image/png"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/store"
)

// TOTP parameters (RFC 6238, as every authenticator app reads them).
const (
	totpPeriod     = 30
	totpDigits     = otp.DigitsSix
	totpSecretSize = 20 // bytes: 160 bits, RFC 4226's recommended length
	totpSkew       = 1  // steps accepted either side of now
	qrSize         = 200
)

var totpBase32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// totpAAD binds a sealed TOTP secret to its user: a sealed secret copied to
// another user's row does not open.
func totpAAD(userID string) []byte { return []byte("portcullis/mfa/totp:" + userID) }

// totpStep is the RFC 6238 time step of t.
func totpStep(t time.Time) int64 { return t.Unix() / totpPeriod }

// totpCode computes the code of secret at step with the given number of
// digits (SHA-1), through pquerna/otp's generator.
func totpCode(secret []byte, step int64, digits otp.Digits) (string, error) {
	return totp.GenerateCodeCustom(totpBase32.EncodeToString(secret), time.Unix(step*totpPeriod, 0).UTC(),
		totp.ValidateOpts{Period: totpPeriod, Digits: digits, Algorithm: otp.AlgorithmSHA1})
}

// matchTOTP returns the step within ±totpSkew of now whose code is code,
// comparing every candidate in constant time; false when none matches or
// the code is not six digits.
func matchTOTP(secret []byte, code string, now time.Time) (int64, bool, error) {
	code = strings.TrimSpace(code)
	if len(code) != totpDigits.Length() || strings.Trim(code, "0123456789") != "" {
		return 0, false, nil
	}
	center := totpStep(now)
	var step int64
	found := 0
	for d := int64(-totpSkew); d <= totpSkew; d++ {
		want, err := totpCode(secret, center+d, totpDigits)
		if err != nil {
			return 0, false, fmt.Errorf("compute totp code: %w", err)
		}
		eq := subtle.ConstantTimeCompare([]byte(want), []byte(code))
		if eq == 1 && found == 0 {
			step = center + d
		}
		found |= eq
	}
	return step, found == 1, nil
}

// totpFactor is a TOTP code presented as a second factor.
type totpFactor struct {
	s    *Service
	code string
}

// TOTPCode returns the Factor of a TOTP code.
func (s *Service) TOTPCode(code string) Factor { return &totpFactor{s: s, code: code} }

// Method is "totp".
func (f *totpFactor) Method() string { return MethodTOTP }

// Verify checks the code against the user's confirmed secret at ±1 step
// and uses its step up (store.MFAFactors.UseTOTPStep): a code already
// accepted, here or on another instance, is ErrBadCode.
func (f *totpFactor) Verify(ctx context.Context, userID string) ([]string, error) {
	rec, err := f.s.d.Factors.GetTOTP(ctx, userID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("%w: %w", ErrBadCode, ErrNotEnrolled)
	case err != nil:
		return nil, unavailable("load totp factor", err)
	case !rec.Confirmed():
		return nil, fmt.Errorf("%w: %w", ErrBadCode, ErrNotEnrolled)
	}
	secret, err := f.s.d.KEKs.Open(rec.SecretSealed, totpAAD(userID))
	if err != nil {
		return nil, fmt.Errorf("open totp secret: %w", err)
	}
	defer clear(secret)
	step, ok, err := matchTOTP(secret, f.code, f.s.d.Now())
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: wrong totp code", ErrBadCode)
	}
	switch err := f.s.d.Factors.UseTOTPStep(ctx, userID, step, f.s.d.Now()); {
	case errors.Is(err, store.ErrConflict):
		return nil, fmt.Errorf("%w: totp code used already", ErrBadCode)
	case errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("%w: %w", ErrBadCode, ErrNotEnrolled)
	case err != nil:
		return nil, unavailable("use totp step", err)
	}
	return []string{AMROTP}, nil
}

// StartTOTP begins a TOTP enrolment: a fresh 160-bit secret, sealed under
// the key-encryption key and recorded as pending (replacing an earlier
// pending one; a confirmed secret keeps working until ConfirmTOTP). Nothing
// else changes until the enrolment is confirmed.
func (s *Service) StartTOTP(ctx context.Context, u store.User, m Meta) (Enrolment, error) {
	secret := make([]byte, totpSecretSize)
	if _, err := rand.Read(secret); err != nil {
		return Enrolment{}, fmt.Errorf("totp secret: %w", err)
	}
	defer clear(secret)
	account := u.Email
	if account == "" {
		account = u.Username
	}
	if account == "" {
		account = u.ID
	}
	key, err := totp.Generate(totp.GenerateOpts{Issuer: s.d.Issuer, AccountName: account, Period: totpPeriod,
		Secret: secret, Digits: totpDigits, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		return Enrolment{}, fmt.Errorf("totp key: %w", err)
	}
	img, err := key.Image(qrSize, qrSize)
	if err != nil {
		return Enrolment{}, fmt.Errorf("totp qr code: %w", err)
	}
	var qr bytes.Buffer
	if err := png.Encode(&qr, img); err != nil {
		return Enrolment{}, fmt.Errorf("totp qr code: %w", err)
	}
	sealed, err := s.d.KEKs.Seal(secret, totpAAD(u.ID))
	if err != nil {
		return Enrolment{}, fmt.Errorf("seal totp secret: %w", err)
	}
	if err := s.d.Factors.PutPendingTOTP(ctx, u.ID, sealed, s.d.Now()); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return Enrolment{}, fmt.Errorf("start totp: %w", err)
		}
		return Enrolment{}, unavailable("store pending totp", err)
	}
	return Enrolment{Secret: key.Secret(), URI: key.URL(), QRPNG: qr.Bytes()}, nil
}

// ConfirmTOTP confirms the pending enrolment with a first code: the secret
// becomes the user's factor, the code's step is used up (it cannot then
// log in) and ten fresh recovery codes replace any earlier ones; they are
// returned, formatted, to be shown once. A wrong or replayed code is
// ErrBadCode (audited mfa.failed), no pending enrolment ErrNotEnrolled.
func (s *Service) ConfirmTOTP(ctx context.Context, u store.User, code string, m Meta) ([]string, error) {
	rec, err := s.d.Factors.GetTOTP(ctx, u.ID)
	switch {
	case errors.Is(err, store.ErrNotFound) || (err == nil && rec.PendingSealed == nil):
		return nil, fmt.Errorf("confirm totp: %w", ErrNotEnrolled)
	case err != nil:
		return nil, unavailable("load totp factor", err)
	}
	secret, err := s.d.KEKs.Open(rec.PendingSealed, totpAAD(u.ID))
	if err != nil {
		return nil, fmt.Errorf("open pending totp secret: %w", err)
	}
	defer clear(secret)
	step, ok, err := matchTOTP(secret, code, s.d.Now())
	if err != nil {
		return nil, err
	}
	if !ok {
		s.failed(ctx, m, u.ID, reasonBadCode, MethodTOTP, "enrol")
		return nil, fmt.Errorf("confirm totp: %w", ErrBadCode)
	}
	codes, hashes, err := newRecoveryCodes()
	if err != nil {
		return nil, err
	}
	switch err := s.d.Factors.ConfirmTOTP(ctx, u.ID, rec.PendingSealed, step, hashes, s.d.Now()); {
	case errors.Is(err, store.ErrConflict):
		s.failed(ctx, m, u.ID, reasonBadCode, MethodTOTP, "enrol")
		return nil, fmt.Errorf("confirm totp: code used already or enrolment replaced: %w", ErrBadCode)
	case errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("confirm totp: %w", ErrNotEnrolled)
	case err != nil:
		return nil, unavailable("confirm totp", err)
	}
	s.record(ctx, m, "mfa.enrolled", u.ID, map[string]string{"method": MethodTOTP})
	return codes, nil
}

// RemoveTOTP removes the user's TOTP factor (confirmed and pending);
// ErrNotEnrolled when there was none. When no other factor is left the
// recovery codes go too, in the same store write
// (store.MFAFactors.DeleteTOTP): they stand in for a lost factor, and a
// failure cannot leave them live without one.
func (s *Service) RemoveTOTP(ctx context.Context, userID string, m Meta) error {
	switch err := s.d.Factors.DeleteTOTP(ctx, userID); {
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("remove totp: %w", ErrNotEnrolled)
	case err != nil:
		return unavailable("remove totp", err)
	}
	s.record(ctx, m, "mfa.removed", userID, map[string]string{"method": MethodTOTP})
	return nil
}

// unavailable is a store failure: 503, fail closed.
func unavailable(what string, err error) error {
	var ae *apierr.Error
	if errors.As(err, &ae) {
		return err
	}
	return apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("%s: %w", what, err))
}

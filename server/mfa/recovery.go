package mfa

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"

	"github.com/portcullis-auth/portcullis/store"
)

// Recovery codes: ten of 80 random bits each, 16 base32 characters shown as
// XXXX-XXXX-XXXX-XXXX, stored as the SHA-256 of the 16 characters only.
const (
	recoveryCodeCount = 10
	recoveryCodeBytes = 10 // 80 bits
	recoveryCodeLen   = 16 // base32 characters
)

var recoveryBase32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// newRecoveryCodes returns ten fresh codes, formatted, and their hashes.
func newRecoveryCodes() (codes []string, hashes [][]byte, err error) {
	b := make([]byte, recoveryCodeBytes)
	for range recoveryCodeCount {
		if _, err := rand.Read(b); err != nil {
			return nil, nil, fmt.Errorf("recovery code: %w", err)
		}
		raw := recoveryBase32.EncodeToString(b)
		codes = append(codes, raw[0:4]+"-"+raw[4:8]+"-"+raw[8:12]+"-"+raw[12:16])
		hashes = append(hashes, hashRecoveryCode(raw))
	}
	clear(b)
	return codes, hashes, nil
}

// normaliseRecoveryCode accepts a code in any case, with or without dashes
// and spaces; false when it cannot be a recovery code.
func normaliseRecoveryCode(code string) (string, bool) {
	code = strings.ToUpper(strings.NewReplacer("-", "", " ", "").Replace(code))
	if len(code) != recoveryCodeLen {
		return "", false
	}
	if _, err := recoveryBase32.DecodeString(code); err != nil {
		return "", false
	}
	return code, true
}

func hashRecoveryCode(normalised string) []byte {
	h := sha256.Sum256([]byte(normalised))
	return h[:]
}

// recoveryFactor is a recovery code presented as a second factor.
type recoveryFactor struct {
	s    *Service
	code string
	left int // codes left after a successful Verify
}

// RecoveryCode returns the Factor of a recovery code.
func (s *Service) RecoveryCode(code string) Factor {
	return &recoveryFactor{s: s, code: code, left: -1}
}

// Method is "recovery_code".
func (f *recoveryFactor) Method() string { return MethodRecoveryCode }

// Verify uses the code up (store.MFAFactors.UseRecoveryCode: once, even
// concurrently). It proves no method beside "pwd" and "mfa".
func (f *recoveryFactor) Verify(ctx context.Context, userID string) ([]string, error) {
	code, ok := normaliseRecoveryCode(f.code)
	if !ok {
		return nil, fmt.Errorf("%w: not a recovery code", ErrBadCode)
	}
	left, err := f.s.d.Factors.UseRecoveryCode(ctx, userID, hashRecoveryCode(code), f.s.d.Now())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("%w: unknown or used recovery code", ErrBadCode)
	case err != nil:
		return nil, unavailable("use recovery code", err)
	}
	f.left = left
	return nil, nil
}

// FirstRecoveryCodes gives a user who has just enrolled a factor other
// than TOTP (whose confirmation comes with codes) ten recovery codes,
// returned formatted to be shown once, when the user has no unused one: a
// first passkey, lost, would otherwise leave no way in but an
// administrator's reset. nil when the user has unused codes (they keep
// them). Of concurrent calls, one stores its codes
// (store.MFAFactors.AddFirstRecoveryCodes).
func (s *Service) FirstRecoveryCodes(ctx context.Context, userID string, m Meta) ([]string, error) {
	codes, hashes, err := newRecoveryCodes()
	if err != nil {
		return nil, err
	}
	added, err := s.d.Factors.AddFirstRecoveryCodes(ctx, userID, hashes, s.d.Now())
	if err != nil {
		return nil, unavailable("add first recovery codes", err)
	}
	if !added {
		return nil, nil
	}
	s.record(ctx, m, "mfa.enrolled", userID, map[string]string{"method": MethodRecoveryCode, "via": "first_factor"})
	return codes, nil
}

// RegenerateRecoveryCodes replaces all the user's recovery codes with ten
// fresh ones, returned formatted to be shown once. A user without a second
// factor has no use for them: ErrNotEnrolled.
func (s *Service) RegenerateRecoveryCodes(ctx context.Context, userID string, m Meta) ([]string, error) {
	st, err := s.Summary(ctx, userID)
	if err != nil {
		return nil, err
	}
	if !st.Enrolled() {
		return nil, fmt.Errorf("regenerate recovery codes: %w", ErrNotEnrolled)
	}
	codes, hashes, err := newRecoveryCodes()
	if err != nil {
		return nil, err
	}
	if err := s.d.Factors.ReplaceRecoveryCodes(ctx, userID, hashes, s.d.Now()); err != nil {
		return nil, unavailable("replace recovery codes", err)
	}
	s.record(ctx, m, "mfa.enrolled", userID, map[string]string{"method": MethodRecoveryCode, "via": "regenerate"})
	return codes, nil
}

// VoidRecoveryCodes removes all the user's recovery codes, used or not,
// audited mfa.removed (method recovery_code): codes someone was shown who
// must not hold them (an enrolment undone because the token that made it
// was revoked meanwhile, m.Via "token_revoked"). The user makes new ones
// with RegenerateRecoveryCodes.
func (s *Service) VoidRecoveryCodes(ctx context.Context, userID string, m Meta) error {
	if err := s.d.Factors.ReplaceRecoveryCodes(ctx, userID, nil, s.d.Now()); err != nil {
		return unavailable("void recovery codes", err)
	}
	s.record(ctx, m, "mfa.removed", userID, map[string]string{"method": MethodRecoveryCode})
	return nil
}

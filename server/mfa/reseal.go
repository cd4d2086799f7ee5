package mfa

import (
	"context"
	"errors"
	"fmt"

	"github.com/portcullis-auth/portcullis/store"
)

// Resealer re-seals values at rest under the first key-encryption key
// (keys.KEKRing).
type Resealer interface {
	// Reseal returns sealed sealed again under the first key-encryption
	// key, or nil when it already is.
	Reseal(sealed, aad []byte) ([]byte, error)
	// SealPrefixes returns the bytes a value sealed under each configured
	// key begins with, the first key's first.
	SealPrefixes() [][]byte
}

// resealPage is how many TOTP records one read of ResealTOTP takes.
const resealPage = 500

// resealPasses bounds how often ResealTOTP reads again after a secret
// changed between its read and its swap.
const resealPasses = 5

// ResealTOTP re-seals every TOTP secret at rest, confirmed and pending, that
// is not sealed under the first key-encryption key, under it, with the same
// associated data (the user id): part of `portcullis keys reencrypt`, after
// which the old key can be removed. Each secret is swapped only while it
// still holds the bytes read (store.TOTPSeals.ResealTOTP), so an enrolment,
// a confirmation or a removal made meanwhile is never overwritten; one that
// moved a secret (a confirmation) is read again on another pass. It returns
// how many secrets it re-sealed. The secrets no configured key opens are
// left as they are and reported in the error after every other one is
// re-sealed: their users must re-enrol (or an administrator reset their
// second factors).
func ResealTOTP(ctx context.Context, st store.TOTPSeals, keks Resealer) (int, error) {
	prefixes := keks.SealPrefixes()
	if len(prefixes) == 0 {
		return 0, errors.New("reseal totp secrets: no key-encryption key configured")
	}
	resealed := 0
	for pass := 0; pass < resealPasses; pass++ {
		moved, unreadable := false, 0
		var firstErr error
		after := ""
		for {
			page, err := st.ListTOTPSealedOutside(ctx, prefixes[:1], after, resealPage)
			if err != nil {
				return resealed, fmt.Errorf("reseal totp secrets: %w", err)
			}
			for _, f := range page {
				after = f.UserID
				for _, s := range []struct {
					pending bool
					old     []byte
				}{{false, f.SecretSealed}, {true, f.PendingSealed}} {
					if s.old == nil {
						continue
					}
					sealed, err := keks.Reseal(s.old, totpAAD(f.UserID))
					if err != nil {
						unreadable++
						if firstErr == nil {
							firstErr = fmt.Errorf("user %s: %w", f.UserID, err)
						}
						continue
					}
					if sealed == nil {
						continue // this one is under the first key; the other is not
					}
					ok, err := st.ResealTOTP(ctx, f.UserID, s.pending, s.old, sealed)
					if err != nil {
						return resealed, fmt.Errorf("reseal totp secret of user %s: %w", f.UserID, err)
					}
					if ok {
						resealed++
					} else {
						moved = true
					}
				}
			}
			if len(page) < resealPage {
				break
			}
		}
		if unreadable > 0 {
			return resealed, fmt.Errorf("reseal totp secrets: %d could not be opened and were left as they are "+
				"(keep every key that sealed them in PORTCULLIS_KEY_ENCRYPTION_KEY; if one is lost, those users must re-enrol "+
				"or an administrator reset their second factors): %w", unreadable, firstErr)
		}
		if !moved {
			return resealed, nil
		}
	}
	return resealed, fmt.Errorf("reseal totp secrets: the secrets kept changing under concurrent enrolments: %w", store.ErrConflict)
}

// UnreadableTOTP counts the users whose TOTP secret, confirmed or pending,
// no configured key-encryption key opens (sealed under a key removed from
// PORTCULLIS_KEY_ENCRYPTION_KEY): their TOTP logins fail until it is back.
func UnreadableTOTP(ctx context.Context, st store.TOTPSeals, keks Resealer) (int, error) {
	n, err := st.CountTOTPSealedOutside(ctx, keks.SealPrefixes())
	if err != nil {
		return 0, fmt.Errorf("count unreadable totp secrets: %w", err)
	}
	return n, nil
}

package app

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/portcullis-auth/portcullis/server/mfa"
	"github.com/portcullis-auth/portcullis/store"
)

// Reencrypted counts what Core.Reencrypt re-sealed under the first
// key-encryption key.
type Reencrypted struct {
	// SigningKeys counts the private signing keys.
	SigningKeys int
	// TOTPSecrets counts the TOTP secrets, confirmed and pending.
	TOTPSecrets int
}

// Reencrypt re-seals under the first key-encryption key every value the
// key-encryption keys protect at rest (`portcullis keys reencrypt`): the
// private signing keys and the TOTP secrets. Once it has run, the old key
// can be removed, but only after PORTCULLIS_REFRESH_REUSE_GRACE more: the
// successors of rotated refresh tokens kept for the reuse grace are sealed
// too and are not re-sealed (they live no longer than the grace). A value
// no configured key opens fails the call, after the others are re-sealed.
func (c *Core) Reencrypt(ctx context.Context) (Reencrypted, error) {
	var r Reencrypted
	n, err := c.Keys.Reencrypt(ctx)
	if err != nil {
		return r, err
	}
	r.SigningKeys = n
	r.TOTPSecrets, err = mfa.ResealTOTP(ctx, c.Store, c.KEKs)
	if err != nil {
		return r, err
	}
	c.Logger.Info("re-encrypted the TOTP secrets under the first key-encryption key", "secrets", r.TOTPSecrets)
	return r, nil
}

// warnUnreadableTOTP logs an error at start when some users' TOTP secrets
// are sealed under a key-encryption key no longer configured (the old key
// was removed before `portcullis keys reencrypt` had re-sealed them): their
// TOTP logins would fail as server errors with no other sign. It does not
// refuse to start, as unreadable signing keys do: the server works without
// those secrets, and an administrator resets the factors of users whose
// key is lost through it.
func warnUnreadableTOTP(ctx context.Context, st store.TOTPSeals, keks mfa.Resealer, log *slog.Logger) error {
	n, err := mfa.UnreadableTOTP(ctx, st, keks)
	if err != nil {
		return fmt.Errorf("check the TOTP secrets: %w", err)
	}
	if n > 0 {
		log.Error("!!! TOTP SECRETS SEALED UNDER A KEY-ENCRYPTION KEY THAT IS NOT CONFIGURED: these users cannot sign in with TOTP. "+
			"Put the old key back after the new one in PORTCULLIS_KEY_ENCRYPTION_KEY (NEW,OLD), restart and run `portcullis keys reencrypt`, "+
			"then remove it; if the old key is lost, reset those users' second factors (or have them re-enrol).", "users", n)
	}
	return nil
}

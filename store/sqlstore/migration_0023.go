package sqlstore

import (
	"fmt"

	"gorm.io/gorm"
)

// Migration 23 deletes the recovery codes of every user left with no
// second factor. Before removeFactor (one transaction since the change
// that made it) the last factor was removed in three store calls, so a
// request cut short between them left the codes live with no factor, and
// the user's next passkey adopted them silently (found by a review). A
// user's codes stand in for a lost factor and must not outlive the last
// one: removeFactor now deletes them with it, and this migration clears
// what earlier binaries left. A factor is what MFASummary counts
// (factorCounts): a confirmed TOTP secret (a pending enrolment is none) or
// a WebAuthn credential. The tables are migration 9's. Never change it:
// write a new migration.

// migrate0023 deletes, in one statement, the recovery codes (used or not,
// as removeFactor does) of each user with neither a confirmed TOTP secret
// nor a WebAuthn credential. Run again it finds nothing to delete.
func migrate0023(tx *gorm.DB) error {
	res := tx.Exec(`DELETE FROM mfa_recovery_codes
		WHERE NOT EXISTS (SELECT 1 FROM mfa_totp t WHERE t.user_id = mfa_recovery_codes.user_id AND t.secret_sealed IS NOT NULL)
		AND NOT EXISTS (SELECT 1 FROM webauthn_credentials w WHERE w.user_id = mfa_recovery_codes.user_id)`)
	if res.Error != nil {
		return fmt.Errorf("delete the recovery codes of users without a second factor: %w", res.Error)
	}
	return nil
}

package sqlstore

import (
	"fmt"

	"gorm.io/gorm"
)

// Snapshot model of migration 21: users learn whether their current
// password was chosen through a channel that did not prove the mailbox
// (public registration), which verified_email_auto must not link to
// automatically. Never change it: write a new migration. (Versions 19 and
// 20 are other changes'.)

// v21User is the users table's new column.
type v21User struct {
	PasswordUnproven bool `gorm:"column:password_unproven;not null;default:false"`
}

func (v21User) TableName() string { return "users" }

// migrate0021 adds users.password_unproven. An existing account is marked
// when the audit says it was made by public registration (user.registered)
// and records no password reset of it since (password.reset): its password
// may still be a squatter's. Other accounts (created by an admin, by an
// invite, just in time, or reset since registering) start proven. An
// account registered publicly whose audit events were deleted cannot be
// told apart and starts proven (docs/security.md).
func migrate0021(tx *gorm.DB) error {
	if err := tx.Migrator().AddColumn(&v21User{}, "PasswordUnproven"); err != nil {
		return fmt.Errorf("add users.password_unproven: %w", err)
	}
	if err := tx.Exec(`UPDATE users SET password_unproven = ? WHERE password_hash <> '' AND EXISTS (
		SELECT 1 FROM audit_events r WHERE r.action = 'user.registered' AND r.outcome = 'success' AND r.target_id = users.id
		AND NOT EXISTS (SELECT 1 FROM audit_events p WHERE p.action = 'password.reset' AND p.outcome = 'success'
			AND p.target_id = users.id AND p.occurred_at >= r.occurred_at))`, true).Error; err != nil {
		return fmt.Errorf("mark publicly registered passwords unproven: %w", err)
	}
	return nil
}

package sqlstore

import (
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Snapshot models of migration 9 (issue 16): the second factors of users
// (store.MFAFactors). Never change them: write a new migration.

// v9User is the users table as the factors' foreign keys see it.
type v9User struct {
	ID string `gorm:"column:id;primaryKey"`
}

func (v9User) TableName() string { return "users" }

// v9MFATOTP is a user's TOTP factor: the confirmed secret and a pending
// enrolment, both sealed under the key-encryption key, and the highest
// accepted time step.
type v9MFATOTP struct {
	UserID           string     `gorm:"column:user_id;primaryKey;not null"`
	SecretSealed     []byte     `gorm:"column:secret_sealed"`
	ConfirmedAt      *time.Time `gorm:"column:confirmed_at"`
	PendingSealed    []byte     `gorm:"column:pending_sealed"`
	PendingCreatedAt *time.Time `gorm:"column:pending_created_at"`
	LastStep         int64      `gorm:"column:last_step;not null;default:0"`
	CreatedAt        time.Time  `gorm:"column:created_at;not null;autoCreateTime:false"`
	UpdatedAt        time.Time  `gorm:"column:updated_at;not null;autoUpdateTime:false"`
	User             v9User     `gorm:"foreignKey:UserID;references:ID;constraint:OnDelete:CASCADE"`
}

func (v9MFATOTP) TableName() string { return "mfa_totp" }

// v9MFARecoveryCode is one recovery code, stored as its SHA-256 only.
type v9MFARecoveryCode struct {
	UserID    string     `gorm:"column:user_id;primaryKey;not null"`
	CodeHash  []byte     `gorm:"column:code_hash;primaryKey;not null"`
	CreatedAt time.Time  `gorm:"column:created_at;not null;autoCreateTime:false"`
	UsedAt    *time.Time `gorm:"column:used_at"`
	User      v9User     `gorm:"foreignKey:UserID;references:ID;constraint:OnDelete:CASCADE"`
}

func (v9MFARecoveryCode) TableName() string { return "mfa_recovery_codes" }

// v9WebAuthnCredential is a registered passkey or security key; its id is
// unique across users.
type v9WebAuthnCredential struct {
	ID         string     `gorm:"column:id;primaryKey;not null"`
	UserID     string     `gorm:"column:user_id;not null;index:webauthn_credentials_user_idx,priority:1"`
	Name       string     `gorm:"column:name;not null"`
	Credential []byte     `gorm:"column:credential;not null"`
	SignCount  int64      `gorm:"column:sign_count;not null"`
	CreatedAt  time.Time  `gorm:"column:created_at;not null;autoCreateTime:false;index:webauthn_credentials_user_idx,priority:2"`
	LastUsedAt *time.Time `gorm:"column:last_used_at"`
	User       v9User     `gorm:"foreignKey:UserID;references:ID;constraint:OnDelete:CASCADE"`
}

func (v9WebAuthnCredential) TableName() string { return "webauthn_credentials" }

// migrate0009 creates mfa_totp, mfa_recovery_codes and webauthn_credentials,
// each removed with its user.
func migrate0009(tx *gorm.DB) error {
	for _, model := range []any{&v9MFATOTP{}, &v9MFARecoveryCode{}, &v9WebAuthnCredential{}} {
		if err := tx.Migrator().CreateTable(model); err != nil {
			return fmt.Errorf("create table for %T: %w", model, err)
		}
	}
	return nil
}

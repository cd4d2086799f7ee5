package sqlstore

import (
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Snapshot models of migration 12 (issue 18): machine users and API keys
// (store.APIKeys). Never change them: write a new migration.

// v12User is the users table's new column: what kind of account a row is.
type v12User struct {
	ID   string `gorm:"column:id;primaryKey"`
	Kind string `gorm:"column:kind;type:varchar(16);not null;default:human"`
}

func (v12User) TableName() string { return "users" }

// v12APIKey is one API key: only the SHA-256 of the key (unique) and its
// display hint are kept; removed with its owner. live_hash is the hash
// while the key is not revoked (NULL after): the lookup of every use
// searches it, so a revoked key misses the index exactly as an unknown one
// does, and costs the same.
type v12APIKey struct {
	ID          string     `gorm:"column:id;primaryKey;not null"`
	OwnerUserID string     `gorm:"column:owner_user_id;not null;index:api_keys_owner_idx,priority:1"`
	Name        string     `gorm:"column:name;not null"`
	Hint        string     `gorm:"column:hint;not null"`
	Hash        []byte     `gorm:"column:hash;not null;uniqueIndex:api_keys_hash_key"`
	LiveHash    []byte     `gorm:"column:live_hash;uniqueIndex:api_keys_live_hash_key"` // the hash while not revoked, else NULL
	Scopes      string     `gorm:"column:scopes;not null"`                              // JSON array
	ExpiresAt   time.Time  `gorm:"column:expires_at;not null"`
	CreatedAt   time.Time  `gorm:"column:created_at;not null;autoCreateTime:false;index:api_keys_owner_idx,priority:2"`
	CreatedBy   string     `gorm:"column:created_by;not null"`
	LastUsedAt  *time.Time `gorm:"column:last_used_at"`
	RevokedAt   *time.Time `gorm:"column:revoked_at"`
	RevokedBy   string     `gorm:"column:revoked_by;not null"`
	Owner       v12User    `gorm:"foreignKey:OwnerUserID;references:ID;constraint:OnDelete:CASCADE"`
}

func (v12APIKey) TableName() string { return "api_keys" }

// migrate0012 adds users.kind ('human' for every existing user), makes the
// email unique only among accounts that have one (machine users have none),
// and creates api_keys.
func migrate0012(tx *gorm.DB) error {
	if err := tx.Migrator().AddColumn(&v12User{}, "Kind"); err != nil {
		return fmt.Errorf("add users.kind: %w", err)
	}
	// The same statements on PostgreSQL and SQLite: a partial unique index.
	// Lookups by email name the index's condition (email_lower <> '') so
	// that both planners use it.
	for _, q := range []string{
		`DROP INDEX users_email_lower_key`,
		`CREATE UNIQUE INDEX users_email_lower_key ON users (email_lower) WHERE email_lower <> ''`,
	} {
		if err := tx.Exec(q).Error; err != nil {
			return fmt.Errorf("make the email unique among accounts that have one: %w", err)
		}
	}
	if err := tx.Migrator().CreateTable(&v12APIKey{}); err != nil {
		return fmt.Errorf("create api_keys: %w", err)
	}
	return nil
}

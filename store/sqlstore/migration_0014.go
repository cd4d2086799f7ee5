package sqlstore

import (
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Snapshot model of migration 14: when the coming expiry of an API key was
// announced to the people who use it. Never change it: write a new
// migration.

// v14APIKey is the api_keys table's new column: NULL until the notice of
// the key's coming expiry has been claimed for sending.
type v14APIKey struct {
	ID               string     `gorm:"column:id;primaryKey"`
	ExpiryNotifiedAt *time.Time `gorm:"column:expiry_notified_at"`
}

func (v14APIKey) TableName() string { return "api_keys" }

// migrate0014 adds api_keys.expiry_notified_at. Keys that exist already
// count as not notified: each gets its notice when it comes within the
// notice window.
func migrate0014(tx *gorm.DB) error {
	if err := tx.Migrator().AddColumn(&v14APIKey{}, "ExpiryNotifiedAt"); err != nil {
		return fmt.Errorf("add api_keys.expiry_notified_at: %w", err)
	}
	return nil
}

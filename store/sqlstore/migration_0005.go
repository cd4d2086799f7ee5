package sqlstore

import (
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Snapshot model of migration 5: refresh families learn when the person
// authenticated (auth_time), apart from when the family was issued
// (created_at). Never change it: write a new migration.

type v5RefreshFamily struct {
	AuthTime *time.Time `gorm:"column:auth_time"`
}

func (v5RefreshFamily) TableName() string { return "refresh_families" }

// migrate0005 adds refresh_families.auth_time (NULL for existing families,
// which read as their created_at, the time they were authenticated at
// before the code flow).
func migrate0005(tx *gorm.DB) error {
	if err := tx.Migrator().AddColumn(&v5RefreshFamily{}, "AuthTime"); err != nil {
		return fmt.Errorf("add refresh_families.auth_time: %w", err)
	}
	return nil
}

package sqlstore

import (
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Snapshot model of migration 18: refresh families learn when the client
// was granted the access they continue (granted_at: an authorization
// code's issue), apart from when the family was created (created_at: the
// code's redemption). Never change it: write a new migration.

// v18RefreshFamily is the refresh_families table's new column; NULL reads
// as created_at (every existing family, judged as before).
type v18RefreshFamily struct {
	GrantedAt *time.Time `gorm:"column:granted_at"`
}

func (v18RefreshFamily) TableName() string { return "refresh_families" }

// migrate0018 adds refresh_families.granted_at (NULL for existing
// families, which the user's cut-off at a client then judges by their
// created_at).
func migrate0018(tx *gorm.DB) error {
	if err := tx.Migrator().AddColumn(&v18RefreshFamily{}, "GrantedAt"); err != nil {
		return fmt.Errorf("add refresh_families.granted_at: %w", err)
	}
	return nil
}

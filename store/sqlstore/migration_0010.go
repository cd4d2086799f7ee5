package sqlstore

import (
	"fmt"

	"gorm.io/gorm"
)

// Snapshot model of migration 10: refresh families keep how the person
// proved who they are (amr, RFC 8176), so refreshed tokens carry the
// login's amr and acr. Never change it: write a new migration.

type v10RefreshFamily struct {
	AMR *string `gorm:"column:amr"` // JSON array; NULL for none
}

func (v10RefreshFamily) TableName() string { return "refresh_families" }

// migrate0010 adds refresh_families.amr (NULL for existing families, which
// then answer no amr: their refreshed tokens carry none, as before).
func migrate0010(tx *gorm.DB) error {
	if err := tx.Migrator().AddColumn(&v10RefreshFamily{}, "AMR"); err != nil {
		return fmt.Errorf("add refresh_families.amr: %w", err)
	}
	return nil
}

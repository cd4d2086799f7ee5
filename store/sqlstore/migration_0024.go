package sqlstore

import (
	"fmt"

	"gorm.io/gorm"
)

// Snapshot model of migration 24: a refresh family counts its rotations,
// so that the rotation that would keep one more used hash than
// store.MaxFamilyRotations ends the family without counting its rows of
// refresh_used_tokens. Never change it: write a new migration.

// v24RefreshFamily is the refresh_families table's new column: how many
// hashes the family has rotated away (its rows of refresh_used_tokens).
type v24RefreshFamily struct {
	Rotations int64 `gorm:"column:rotations;not null;default:0"`
}

func (v24RefreshFamily) TableName() string { return "refresh_families" }

// migrate0024 adds refresh_families.rotations and sets it, for every
// family that has rotated, to its number of used tokens, so that a family
// rotated before the upgrade keeps to the same bound.
func migrate0024(tx *gorm.DB) error {
	if err := tx.Migrator().AddColumn(&v24RefreshFamily{}, "Rotations"); err != nil {
		return fmt.Errorf("add refresh_families.rotations: %w", err)
	}
	err := tx.Exec(`UPDATE refresh_families SET rotations =
			(SELECT count(*) FROM refresh_used_tokens u WHERE u.family_id = refresh_families.id)
		WHERE id IN (SELECT family_id FROM refresh_used_tokens)`).Error
	if err != nil {
		return fmt.Errorf("count the rotations of refresh families: %w", err)
	}
	return nil
}

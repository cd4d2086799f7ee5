package sqlstore

import (
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Snapshot model of migration 17: a durable revocation record says whether
// it has been applied to the token state (Redis). Never change it: write a
// new migration.

// v17TokenRevocation is the token_revocations table's new column: when the
// record was written and not yet applied to the token state; NULL once
// applied (and for the SQL token state's own records, which are the state).
type v17TokenRevocation struct {
	UnappliedSince *time.Time `gorm:"column:unapplied_since"`
}

func (v17TokenRevocation) TableName() string { return "token_revocations" }

// migrate0017 adds token_revocations.unapplied_since, indexed on the
// unapplied rows only (what every instance's reconciliation reads), and
// marks every record already there unapplied: before this migration a
// record whose Redis write failed was applied only by the instance that
// queued it, so none is known to have reached Redis; each is applied once
// more (applying is idempotent).
func migrate0017(tx *gorm.DB) error {
	if err := tx.Migrator().AddColumn(&v17TokenRevocation{}, "UnappliedSince"); err != nil {
		return fmt.Errorf("add token_revocations.unapplied_since: %w", err)
	}
	now := time.UnixMilli(time.Now().UnixMilli()).UTC()
	if err := tx.Exec(`UPDATE token_revocations SET unapplied_since = ?`, now).Error; err != nil {
		return fmt.Errorf("mark existing revocations unapplied: %w", err)
	}
	if err := tx.Exec(`CREATE INDEX token_revocations_unapplied_idx ON token_revocations (unapplied_since)
		WHERE unapplied_since IS NOT NULL`).Error; err != nil {
		return fmt.Errorf("index unapplied revocations: %w", err)
	}
	return nil
}

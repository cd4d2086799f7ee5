package sqlstore

import (
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Migration 26 creates retired_client_names: what a deleted client leaves
// live in tokens (its audiences, in its access tokens, and its own id, in
// its id tokens) until the revocation horizon after its deletion
// (Store.DeleteClient writes them; Store.CreateClient's check reads those
// not yet expired; Store.Purge deletes the others). Found by a review:
// deleting a client freed its audiences at once, so a client created under
// one of them took the deleted client's live access tokens as its id
// tokens. Never change it: write a new migration.

// v26RetiredClientName is one retired name. A name retired twice (two
// deleted clients listed it) has two rows; the check reads every live one.
// Its index on (retired_until, id) answers both the check (retired_until
// after now) and the purge (retired_until up to now, in order of id).
type v26RetiredClientName struct {
	ID           string    `gorm:"column:id;primaryKey;not null"`
	Name         string    `gorm:"column:name;not null"`
	Kind         string    `gorm:"column:kind;type:varchar(16);not null"`
	ClientID     string    `gorm:"column:client_id;not null"`
	RetiredUntil time.Time `gorm:"column:retired_until;not null"`
	CreatedAt    time.Time `gorm:"column:created_at;not null;autoCreateTime:false"`
}

func (v26RetiredClientName) TableName() string { return "retired_client_names" }

// migrate0026 creates retired_client_names.
func migrate0026(tx *gorm.DB) error {
	if err := tx.Migrator().CreateTable(&v26RetiredClientName{}); err != nil {
		return fmt.Errorf("create retired_client_names: %w", err)
	}
	if err := tx.Exec(`CREATE INDEX retired_client_names_until_id_idx ON retired_client_names (retired_until, id)`).Error; err != nil {
		return fmt.Errorf("index retired_client_names by retired_until and id: %w", err)
	}
	return nil
}

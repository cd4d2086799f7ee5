package sqlstore

import (
	"fmt"

	"gorm.io/gorm"
)

// Migration 25 indexes the columns the periodic purge of the relational
// store (Store.Purge) bounds, each with the id after it: the purge walks
// every table in the order of one of them and id (PurgeInOrder), so each
// batch reads the index from where the last one ended up to the purge's
// bound, never the whole table (found by a review: it walked by id, so
// every run, every 5 minutes, read every row). The same statements on
// PostgreSQL and SQLite. Never change it: write a new migration.

// purgeIndexes0025 are migration 25's indexes.
var purgeIndexes0025 = []string{
	`CREATE INDEX user_tokens_expires_idx ON user_tokens (expires_at, id)`,
	`CREATE INDEX invites_expires_idx ON invites (expires_at, id)`,
	`CREATE INDEX api_keys_expires_idx ON api_keys (expires_at, id) WHERE revoked_at IS NULL`,
	`CREATE INDEX api_keys_revoked_idx ON api_keys (revoked_at, id) WHERE revoked_at IS NOT NULL`,
}

// migrate0025 creates purgeIndexes0025.
func migrate0025(tx *gorm.DB) error {
	for _, q := range purgeIndexes0025 {
		if err := tx.Exec(q).Error; err != nil {
			return fmt.Errorf("index what the purge bounds (%s): %w", q, err)
		}
	}
	return nil
}

package sqlstore

import (
	"fmt"

	"gorm.io/gorm"
)

// Snapshot model of migration 16: a queued back-channel logout delivery
// names the organisation of its client, whose deliveries connect only to
// public addresses. Never change it: write a new migration.

// v16BackchannelLogout is the backchannel_logouts table's new column: the
// client's organisation when the session ended; "" for a platform client
// (and every delivery queued before, as they were made).
type v16BackchannelLogout struct {
	TenantID string `gorm:"column:tenant_id;not null;default:''"`
}

func (v16BackchannelLogout) TableName() string { return "backchannel_logouts" }

// migrate0016 adds backchannel_logouts.tenant_id.
func migrate0016(tx *gorm.DB) error {
	if err := tx.Migrator().AddColumn(&v16BackchannelLogout{}, "TenantID"); err != nil {
		return fmt.Errorf("add backchannel_logouts.tenant_id: %w", err)
	}
	return nil
}

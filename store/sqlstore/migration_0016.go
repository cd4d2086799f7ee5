package sqlstore

import (
	"fmt"

	"gorm.io/gorm"
)

// Snapshot model of migration 16: a queued back-channel logout delivery
// names the organisation of its client, whose deliveries connect only to
// public addresses. Never change it: write a new migration.

// v16BackchannelLogout is the backchannel_logouts table's new column: the
// client's organisation when the session ended; "" for a platform client.
type v16BackchannelLogout struct {
	TenantID string `gorm:"column:tenant_id;not null;default:''"`
}

func (v16BackchannelLogout) TableName() string { return "backchannel_logouts" }

// migrate0016 adds backchannel_logouts.tenant_id and fills it for the
// deliveries already queued, from their client's organisation: one queued
// for an organisation's client before the upgrade must not be sent as a
// platform client's, unchecked, to an address its admin registered when
// internal ones were still allowed.
func migrate0016(tx *gorm.DB) error {
	if err := tx.Migrator().AddColumn(&v16BackchannelLogout{}, "TenantID"); err != nil {
		return fmt.Errorf("add backchannel_logouts.tenant_id: %w", err)
	}
	if err := tx.Exec(`UPDATE backchannel_logouts SET tenant_id = COALESCE(
		(SELECT c.tenant_id FROM oauth_clients c WHERE c.id = backchannel_logouts.client_id), '')`).Error; err != nil {
		return fmt.Errorf("fill backchannel_logouts.tenant_id: %w", err)
	}
	return nil
}

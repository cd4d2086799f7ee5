package sqlstore

import (
	"fmt"

	"gorm.io/gorm"
)

// Snapshot model of migration 20: a user records the organisation that
// created the account (its invite, or an admin of it making a machine
// user), the one mark of an organisation's own account. Never change it:
// write a new migration. (Version 19 is another change's.)

// v20User is the users table's new column: the creating tenant's id; ""
// for an account made outside any organisation.
type v20User struct {
	HomeTenantID string `gorm:"column:home_tenant_id;not null;default:''"`
}

func (v20User) TableName() string { return "users" }

// migrate0020 adds users.home_tenant_id and fills it for the accounts an
// organisation created before the upgrade. Both ways an organisation
// creates an account (an accepted invite of the organisation, and
// CreateUserInTenant) write the user and its roles in the tenant in one
// transaction with one timestamp, so a tenant role whose created_at is
// the user's own marks the account as that tenant's. A role given later
// (an existing account joining with its password, an admin adding a
// member, the move into the default tenant when organisations were turned
// on) carries a later time and marks nothing: such an account stays its
// owner's.
func migrate0020(tx *gorm.DB) error {
	if err := tx.Migrator().AddColumn(&v20User{}, "HomeTenantID"); err != nil {
		return fmt.Errorf("add users.home_tenant_id: %w", err)
	}
	if err := tx.Exec(`UPDATE users SET home_tenant_id = COALESCE((SELECT MIN(r.tenant_id) FROM tenant_roles r
		WHERE r.user_id = users.id AND r.created_at = users.created_at), '')`).Error; err != nil {
		return fmt.Errorf("fill users.home_tenant_id: %w", err)
	}
	return nil
}

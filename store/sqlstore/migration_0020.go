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
// owner's. An organisation's machine user made before its roles were
// written with it is found by its user.created audit event instead.
func migrate0020(tx *gorm.DB) error {
	if err := tx.Migrator().AddColumn(&v20User{}, "HomeTenantID"); err != nil {
		return fmt.Errorf("add users.home_tenant_id: %w", err)
	}
	if err := tx.Exec(`UPDATE users SET home_tenant_id = (SELECT MIN(r.tenant_id) FROM tenant_roles r
		WHERE r.user_id = users.id AND r.created_at = users.created_at)
		WHERE EXISTS (SELECT 1 FROM tenant_roles r WHERE r.user_id = users.id AND r.created_at = users.created_at)`).Error; err != nil {
		return fmt.Errorf("fill users.home_tenant_id: %w", err)
	}
	// Before 2026-12-07 (9e3a36e) an organisation's machine user was
	// created on its own and given its roles afterwards, each at its own
	// time, so the rule above misses it; its user.created event, recorded
	// under the organisation, names the creating tenant. Only a tenant the
	// machine user still holds a role in counts.
	if err := tx.Exec(`UPDATE users SET home_tenant_id = (SELECT MIN(a.tenant_id) FROM audit_events a
		WHERE a.action = 'user.created' AND a.outcome = 'success' AND a.target_id = users.id AND a.tenant_id <> ''
		AND EXISTS (SELECT 1 FROM tenant_roles r WHERE r.user_id = users.id AND r.tenant_id = a.tenant_id))
		WHERE users.kind = 'machine' AND users.home_tenant_id = ''
		AND EXISTS (SELECT 1 FROM audit_events a WHERE a.action = 'user.created' AND a.outcome = 'success'
			AND a.target_id = users.id AND a.tenant_id <> ''
			AND EXISTS (SELECT 1 FROM tenant_roles r WHERE r.user_id = users.id AND r.tenant_id = a.tenant_id))`).Error; err != nil {
		return fmt.Errorf("fill users.home_tenant_id of organisations' machine users: %w", err)
	}
	return nil
}

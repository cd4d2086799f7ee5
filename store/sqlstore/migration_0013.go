package sqlstore

import (
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Snapshot models of migration 13 (issue 20): organisations (tenants), the
// per-tenant role assignments, and the tenant of clients, invites, audit
// events and refresh families. Never change them: write a new migration.
// The schema exists whether or not organisations are on; with them off
// every new column stays empty and nothing reads the new tables.

// v13User is the users table as the memberships' foreign key sees it.
type v13User struct {
	ID string `gorm:"column:id;primaryKey"`
}

func (v13User) TableName() string { return "users" }

// v13Tenant is one organisation; its slug is the tokens' `tenant` claim.
type v13Tenant struct {
	ID        string    `gorm:"column:id;primaryKey;not null"`
	Slug      string    `gorm:"column:slug;not null;uniqueIndex:tenants_slug_key"`
	Name      string    `gorm:"column:name;not null"`
	Active    bool      `gorm:"column:active;not null"`
	CreatedAt time.Time `gorm:"column:created_at;not null;autoCreateTime:false"`
}

func (v13Tenant) TableName() string { return "tenants" }

// v13TenantRole is one role a user holds inside a tenant; removed with the
// user and with the tenant.
type v13TenantRole struct {
	TenantID  string    `gorm:"column:tenant_id;primaryKey;not null"`
	UserID    string    `gorm:"column:user_id;primaryKey;not null;index:tenant_roles_user_idx"`
	Role      string    `gorm:"column:role;primaryKey;not null"`
	CreatedAt time.Time `gorm:"column:created_at;not null;autoCreateTime:false"`
	Tenant    v13Tenant `gorm:"foreignKey:TenantID;references:ID;constraint:OnDelete:CASCADE"`
	User      v13User   `gorm:"foreignKey:UserID;references:ID;constraint:OnDelete:CASCADE"`
}

func (v13TenantRole) TableName() string { return "tenant_roles" }

type v13Client struct {
	TenantID string `gorm:"column:tenant_id;not null;default:''"`
}

func (v13Client) TableName() string { return "oauth_clients" }

type v13Invite struct {
	TenantID string `gorm:"column:tenant_id;not null;default:''"`
}

func (v13Invite) TableName() string { return "invites" }

type v13Audit struct {
	TenantID string `gorm:"column:tenant_id;not null;default:''"`
}

func (v13Audit) TableName() string { return "audit_events" }

type v13RefreshFamily struct {
	TenantID string `gorm:"column:tenant_id;not null;default:''"`
}

func (v13RefreshFamily) TableName() string { return "refresh_families" }

// migrate0013 creates tenants and tenant_roles and adds tenant_id (empty for
// every existing row: platform) to clients, invites, audit events and
// refresh families, with an index for the audit query of a tenant.
func migrate0013(tx *gorm.DB) error {
	if err := tx.Migrator().CreateTable(&v13Tenant{}, &v13TenantRole{}); err != nil {
		return fmt.Errorf("create tenants: %w", err)
	}
	for _, m := range []any{&v13Client{}, &v13Invite{}, &v13Audit{}, &v13RefreshFamily{}} {
		if err := tx.Migrator().AddColumn(m, "TenantID"); err != nil {
			return fmt.Errorf("add tenant_id: %w", err)
		}
	}
	if err := tx.Exec(`CREATE INDEX audit_events_tenant_idx ON audit_events (tenant_id, occurred_at)`).Error; err != nil {
		return fmt.Errorf("index audit events by tenant: %w", err)
	}
	return nil
}

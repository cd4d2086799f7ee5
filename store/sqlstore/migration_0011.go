package sqlstore

import (
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Snapshot models of migration 11 (issue 17): the links between accounts at
// upstream identity providers and local users (store.FederatedIdentities).
// Never change them: write a new migration.

// v11User is the users table as the identities' foreign key sees it.
type v11User struct {
	ID string `gorm:"column:id;primaryKey"`
}

func (v11User) TableName() string { return "users" }

// v11FederatedIdentity is one upstream account linked to a user: unique per
// (provider, subject), and per (user, provider); removed with its user.
type v11FederatedIdentity struct {
	Provider string    `gorm:"column:provider;primaryKey;not null;uniqueIndex:federated_identities_user_provider_idx,priority:2"`
	Subject  string    `gorm:"column:subject;primaryKey;not null"`
	UserID   string    `gorm:"column:user_id;not null;uniqueIndex:federated_identities_user_provider_idx,priority:1"`
	Email    string    `gorm:"column:email;not null"`
	LinkedAt time.Time `gorm:"column:linked_at;not null;autoCreateTime:false"`
	User     v11User   `gorm:"foreignKey:UserID;references:ID;constraint:OnDelete:CASCADE"`
}

func (v11FederatedIdentity) TableName() string { return "federated_identities" }

// migrate0011 creates federated_identities.
func migrate0011(tx *gorm.DB) error {
	if err := tx.Migrator().CreateTable(&v11FederatedIdentity{}); err != nil {
		return fmt.Errorf("create federated_identities: %w", err)
	}
	return nil
}

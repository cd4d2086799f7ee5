package sqlstore

import (
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Snapshot model of migration 19: a link to an upstream account keeps the
// issuer it was made under, and the issuer is part of the account's key
// (OIDC Core 5.7: only iss and sub together are stable). Never change it:
// write a new migration.

// v19FederatedIdentity is federated_identities with its issuer: unique per
// (provider, issuer, subject), and per (user, provider) as before (a user
// holds one identity per provider id, under whichever issuer). The issuer
// of a link made before it was kept is empty (store.IssuerUnresolved, also the
// default of a row that a version-18 binary writes) until the first start
// fills it in (Store.ResolveIdentityIssuers).
type v19FederatedIdentity struct {
	Provider string    `gorm:"column:provider;primaryKey;not null;uniqueIndex:federated_identities_user_provider_idx,priority:2"`
	Issuer   string    `gorm:"column:issuer;primaryKey;not null;default:''"`
	Subject  string    `gorm:"column:subject;primaryKey;not null"`
	UserID   string    `gorm:"column:user_id;not null;uniqueIndex:federated_identities_user_provider_idx,priority:1"`
	Email    string    `gorm:"column:email;not null"`
	LinkedAt time.Time `gorm:"column:linked_at;not null;autoCreateTime:false"`
	User     v11User   `gorm:"foreignKey:UserID;references:ID;constraint:OnDelete:CASCADE"`
}

func (v19FederatedIdentity) TableName() string { return "federated_identities" }

// migrate0019 adds federated_identities.issuer (empty for every existing link)
// and makes the primary key (provider, issuer, subject). PostgreSQL alters
// the table in place; SQLite, which cannot change a primary key, rebuilds
// it (rename, create, copy, drop: nothing references the table). A partial
// index finds the links still awaiting their issuer, so the start step that
// fills them in reads none of the others.
func migrate0019(tx *gorm.DB) error {
	if tx.Dialector.Name() == "postgres" {
		if err := tx.Migrator().AddColumn(&v19FederatedIdentity{}, "Issuer"); err != nil {
			return fmt.Errorf("add federated_identities.issuer: %w", err)
		}
		for _, q := range []string{
			`ALTER TABLE federated_identities DROP CONSTRAINT federated_identities_pkey`,
			`ALTER TABLE federated_identities ADD CONSTRAINT federated_identities_pkey PRIMARY KEY (provider, issuer, subject)`,
		} {
			if err := tx.Exec(q).Error; err != nil {
				return fmt.Errorf("key federated_identities by (provider, issuer, subject): %w", err)
			}
		}
	} else {
		if err := tx.Exec(`ALTER TABLE federated_identities RENAME TO federated_identities_v18`).Error; err != nil {
			return fmt.Errorf("set the old federated_identities aside: %w", err)
		}
		if err := tx.Exec(`DROP INDEX federated_identities_user_provider_idx`).Error; err != nil {
			return fmt.Errorf("drop the old federated_identities index: %w", err)
		}
		if err := tx.Migrator().CreateTable(&v19FederatedIdentity{}); err != nil {
			return fmt.Errorf("create federated_identities: %w", err)
		}
		for _, q := range []string{
			`INSERT INTO federated_identities (provider, issuer, subject, user_id, email, linked_at)
				SELECT provider, '', subject, user_id, email, linked_at FROM federated_identities_v18`,
			`DROP TABLE federated_identities_v18`,
		} {
			if err := tx.Exec(q).Error; err != nil {
				return fmt.Errorf("copy federated_identities: %w", err)
			}
		}
	}
	q := `CREATE INDEX federated_identities_unresolved_idx ON federated_identities (provider) WHERE issuer = ''`
	if err := tx.Exec(q).Error; err != nil {
		return fmt.Errorf("index the links awaiting their issuer: %w", err)
	}
	return nil
}

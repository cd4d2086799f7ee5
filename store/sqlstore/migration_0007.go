package sqlstore

import (
	"fmt"

	"gorm.io/gorm"
)

// Snapshot model of migration 7: clients learn whether they must push their
// authorization requests first (RFC 9126 §6,
// require_pushed_authorization_requests). Never change it: write a new
// migration.

type v7OAuthClient struct {
	RequirePAR bool `gorm:"column:require_pushed_authorization_requests;not null;default:false"`
}

func (v7OAuthClient) TableName() string { return "oauth_clients" }

// migrate0007 adds oauth_clients.require_pushed_authorization_requests
// (false for existing clients: nothing changes for them).
func migrate0007(tx *gorm.DB) error {
	if err := tx.Migrator().AddColumn(&v7OAuthClient{}, "RequirePAR"); err != nil {
		return fmt.Errorf("add oauth_clients.require_pushed_authorization_requests: %w", err)
	}
	return nil
}

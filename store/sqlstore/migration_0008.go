package sqlstore

import (
	"fmt"

	"gorm.io/gorm"
)

// Snapshot model of migration 8: clients learn how their refresh tokens
// leave Portcullis (refresh_token_delivery: body or cookie) and the browser
// origins a cookie client's requests must come from (allowed_origins).
// Never change it: write a new migration.

type v8OAuthClient struct {
	RefreshTokenDelivery string  `gorm:"column:refresh_token_delivery;not null;default:body"`
	AllowedOrigins       *string `gorm:"column:allowed_origins"` // JSON array; NULL for nil
}

func (v8OAuthClient) TableName() string { return "oauth_clients" }

// migrate0008 adds oauth_clients.refresh_token_delivery ("body" for existing
// clients: nothing changes for them) and oauth_clients.allowed_origins.
func migrate0008(tx *gorm.DB) error {
	for _, f := range []string{"RefreshTokenDelivery", "AllowedOrigins"} {
		if err := tx.Migrator().AddColumn(&v8OAuthClient{}, f); err != nil {
			return fmt.Errorf("add oauth_clients.%s: %w", f, err)
		}
	}
	return nil
}

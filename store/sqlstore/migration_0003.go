package sqlstore

import (
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Snapshot model of migration 3: oauth_clients with the fields of the
// authorization code flow (contract, "Browser sign-in"). Never change it:
// write a new migration.
type v3OAuthClient struct {
	ID                     string    `gorm:"column:id;primaryKey;not null"`
	Name                   string    `gorm:"column:name;not null"`
	Public                 bool      `gorm:"column:public;not null"`
	SecretHash             []byte    `gorm:"column:secret_hash"`
	Grants                 *string   `gorm:"column:grants"`
	Scopes                 *string   `gorm:"column:scopes"`
	Audiences              *string   `gorm:"column:audiences"`
	AccessTokenTTLMS       int64     `gorm:"column:access_token_ttl_ms;not null"`
	RefreshIdleTTLMS       int64     `gorm:"column:refresh_idle_ttl_ms;not null"`
	RefreshMaxAgeMS        int64     `gorm:"column:refresh_max_age_ms;not null"`
	CreatedAt              time.Time `gorm:"column:created_at;not null;autoCreateTime:false"`
	UpdatedAt              time.Time `gorm:"column:updated_at;not null;autoUpdateTime:false"`
	RedirectURIs           *string   `gorm:"column:redirect_uris"`             // JSON array; NULL for nil
	PostLogoutRedirectURIs *string   `gorm:"column:post_logout_redirect_uris"` // JSON array; NULL for nil
	FirstParty             bool      `gorm:"column:first_party;not null;default:false"`
	ApplicationType        string    `gorm:"column:application_type;not null;default:web"`
	RequirePKCE            bool      `gorm:"column:require_pkce;not null;default:true"`
	BackchannelLogoutURI   string    `gorm:"column:backchannel_logout_uri;not null;default:''"`
	LogoURI                string    `gorm:"column:logo_uri;not null;default:''"`
	ClientURI              string    `gorm:"column:client_uri;not null;default:''"`
}

func (v3OAuthClient) TableName() string { return "oauth_clients" }

// v3BuiltInClientID is the built-in first-party client as migration 3 knows
// it (the contract's `portcullis`); a deployment that renamed it is
// reconciled at start-up by accounts.EnsureFirstPartyClient.
const v3BuiltInClientID = "portcullis"

// migrate0003 adds the client fields of the authorization code flow.
// Existing clients become web clients that require PKCE and are
// third-party, except the built-in client, which is first-party.
func migrate0003(tx *gorm.DB) error {
	m := tx.Migrator()
	for _, field := range []string{
		"RedirectURIs", "PostLogoutRedirectURIs", "FirstParty", "ApplicationType", "RequirePKCE",
		"BackchannelLogoutURI", "LogoURI", "ClientURI",
	} {
		if err := m.AddColumn(&v3OAuthClient{}, field); err != nil {
			return fmt.Errorf("add oauth_clients column for %s: %w", field, err)
		}
	}
	if err := tx.Model(&v3OAuthClient{}).Where("id = ?", v3BuiltInClientID).
		Update("first_party", true).Error; err != nil {
		return fmt.Errorf("mark the built-in client first-party: %w", err)
	}
	return nil
}

package sqlstore

import (
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Snapshot models of migration 4: browser sign-in (issue 13). The
// single-use records and browser sessions belong to the SQL token state
// (sqlstate); consents to the relational store. Never change them: write a
// new migration.

type v4OnceRecord struct {
	Kind      string     `gorm:"column:kind;primaryKey;not null"`
	KeyHash   []byte     `gorm:"column:key_hash;primaryKey;not null"`
	Value     []byte     `gorm:"column:value;not null"`
	ExpiresAt time.Time  `gorm:"column:expires_at;not null;index:once_records_expiry_idx"`
	TakenAt   *time.Time `gorm:"column:taken_at"`
}

func (v4OnceRecord) TableName() string { return "once_records" }

type v4BrowserSession struct {
	ID             string     `gorm:"column:id;primaryKey;not null"`
	CookieHash     []byte     `gorm:"column:cookie_hash;not null;uniqueIndex:browser_sessions_cookie_key"`
	UserID         string     `gorm:"column:user_id;not null;index:browser_sessions_user_idx"`
	AuthTime       time.Time  `gorm:"column:auth_time;not null"`
	AMR            string     `gorm:"column:amr;not null"` // JSON array
	Remember       bool       `gorm:"column:remember;not null"`
	CreatedAt      time.Time  `gorm:"column:created_at;not null;autoCreateTime:false"`
	LastUsedAt     time.Time  `gorm:"column:last_used_at;not null"`
	IdleTTLMS      int64      `gorm:"column:idle_ttl_ms;not null"`
	IdleExpiresAt  time.Time  `gorm:"column:idle_expires_at;not null"`
	AbsoluteExpiry time.Time  `gorm:"column:absolute_expiry;not null;index:browser_sessions_expiry_idx"`
	IP             string     `gorm:"column:ip;not null"`
	UserAgent      string     `gorm:"column:user_agent;not null"`
	ClientIDs      string     `gorm:"column:client_ids;not null"` // JSON array
	EndedAt        *time.Time `gorm:"column:ended_at"`
}

func (v4BrowserSession) TableName() string { return "browser_sessions" }

type v4Consent struct {
	UserID    string        `gorm:"column:user_id;primaryKey;not null"`
	ClientID  string        `gorm:"column:client_id;primaryKey;not null;index:consents_client_idx"`
	Scopes    string        `gorm:"column:scopes;not null"` // JSON array, sorted
	GrantedAt time.Time     `gorm:"column:granted_at;not null"`
	User      v1User        `gorm:"foreignKey:UserID;references:ID;constraint:OnDelete:CASCADE"`
	Client    v1OAuthClient `gorm:"foreignKey:ClientID;references:ID;constraint:OnDelete:CASCADE"`
}

func (v4Consent) TableName() string { return "consents" }

// migrate0004 creates the tables of browser sign-in.
func migrate0004(tx *gorm.DB) error {
	m := tx.Migrator()
	for _, model := range []any{&v4OnceRecord{}, &v4BrowserSession{}, &v4Consent{}} {
		if err := m.CreateTable(model); err != nil {
			return fmt.Errorf("create table for %T: %w", model, err)
		}
	}
	return nil
}

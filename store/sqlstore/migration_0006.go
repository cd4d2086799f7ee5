package sqlstore

import (
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Snapshot models of migration 6 (issue 14): a browser session keeps its
// grants (sqlstate), and the durable queue of back-channel logout
// deliveries. Never change them: write a new migration.

// v6BrowserSession adds browser_sessions.grants, a JSON array of the
// session's grants, oldest first ('[]' for existing sessions).
type v6BrowserSession struct {
	Grants string `gorm:"column:grants;not null;default:'[]'"`
}

func (v6BrowserSession) TableName() string { return "browser_sessions" }

type v6BackchannelLogout struct {
	ID            string    `gorm:"column:id;primaryKey;not null"`
	ClientID      string    `gorm:"column:client_id;not null"`
	URI           string    `gorm:"column:uri;not null"`
	Subject       string    `gorm:"column:subject;not null"`
	SID           string    `gorm:"column:sid;not null"`
	Attempts      int64     `gorm:"column:attempts;not null"`
	NextAttemptAt time.Time `gorm:"column:next_attempt_at;not null;index:backchannel_logouts_due_idx"`
	CreatedAt     time.Time `gorm:"column:created_at;not null;autoCreateTime:false"`
	LastError     string    `gorm:"column:last_error;not null"`
}

func (v6BackchannelLogout) TableName() string { return "backchannel_logouts" }

// migrate0006 adds browser_sessions.grants and creates backchannel_logouts.
func migrate0006(tx *gorm.DB) error {
	if err := tx.Migrator().AddColumn(&v6BrowserSession{}, "Grants"); err != nil {
		return fmt.Errorf("add browser_sessions.grants: %w", err)
	}
	if err := tx.Migrator().CreateTable(&v6BackchannelLogout{}); err != nil {
		return fmt.Errorf("create table for %T: %w", &v6BackchannelLogout{}, err)
	}
	return nil
}

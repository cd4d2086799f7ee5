package sqlstore

import (
	"fmt"

	"gorm.io/gorm"
)

// Snapshot models of migration 15: a refresh family of a grant without
// offline_access names the browser session it ends with, and a browser
// session names the chain of re-logins it continues (its lineage), which
// such a family is bound to. Never change them: write a new migration.

// v15RefreshFamily is the refresh_families table's new column: the lineage
// of the browser session the family ends with; empty for a family that
// outlives browser sessions (every existing family, as before).
type v15RefreshFamily struct {
	BrowserSessionID string `gorm:"column:browser_session_id;not null;default:''"`
}

func (v15RefreshFamily) TableName() string { return "refresh_families" }

// v15BrowserSession is the browser_sessions table's new column: the id of
// the first session of the chain of re-logins the session continues.
type v15BrowserSession struct {
	Lineage string `gorm:"column:lineage;not null;default:''"`
}

func (v15BrowserSession) TableName() string { return "browser_sessions" }

// migrate0015 adds refresh_families.browser_session_id and
// browser_sessions.lineage; every existing session is its own lineage
// (none carried a lineage before), and the lineage is indexed with the
// user for the refresh's check of a family's browser session.
func migrate0015(tx *gorm.DB) error {
	if err := tx.Migrator().AddColumn(&v15RefreshFamily{}, "BrowserSessionID"); err != nil {
		return fmt.Errorf("add refresh_families.browser_session_id: %w", err)
	}
	if err := tx.Migrator().AddColumn(&v15BrowserSession{}, "Lineage"); err != nil {
		return fmt.Errorf("add browser_sessions.lineage: %w", err)
	}
	if err := tx.Exec(`UPDATE browser_sessions SET lineage = id`).Error; err != nil {
		return fmt.Errorf("fill browser_sessions.lineage: %w", err)
	}
	if err := tx.Exec(`CREATE INDEX browser_sessions_lineage_idx ON browser_sessions (user_id, lineage)`).Error; err != nil {
		return fmt.Errorf("index browser sessions by lineage: %w", err)
	}
	return nil
}

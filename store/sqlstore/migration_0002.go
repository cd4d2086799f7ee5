package sqlstore

import (
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Snapshot models of migration 2: the token-state tables used by sqlstate.
// Never change them: write a new migration.

type v2RefreshFamily struct {
	ID              string     `gorm:"column:id;primaryKey;not null"`
	UserID          string     `gorm:"column:user_id;not null;index:refresh_families_user_idx"`
	ClientID        string     `gorm:"column:client_id;not null"`
	Scope           string     `gorm:"column:scope;not null"`
	RequestedScope  string     `gorm:"column:requested_scope;not null"`
	CreatedAt       time.Time  `gorm:"column:created_at;not null;autoCreateTime:false"`
	AbsoluteExpiry  time.Time  `gorm:"column:absolute_expiry;not null;index:refresh_families_expiry_idx"`
	IdleTTLMS       int64      `gorm:"column:idle_ttl_ms;not null"`
	IdleExpiresAt   time.Time  `gorm:"column:idle_expires_at;not null"`
	CurrentHash     []byte     `gorm:"column:current_hash;not null"`
	PrevHash        []byte     `gorm:"column:prev_hash"`
	RotatedAt       *time.Time `gorm:"column:rotated_at"`
	SuccessorSealed []byte     `gorm:"column:successor_sealed"`
	GraceUntil      *time.Time `gorm:"column:grace_until"`
	RevokedAt       *time.Time `gorm:"column:revoked_at"`
}

func (v2RefreshFamily) TableName() string { return "refresh_families" }

type v2RefreshUsedToken struct {
	FamilyID  string          `gorm:"column:family_id;primaryKey;not null"`
	TokenHash []byte          `gorm:"column:token_hash;primaryKey;not null"`
	UsedAt    time.Time       `gorm:"column:used_at;not null"`
	Family    v2RefreshFamily `gorm:"foreignKey:FamilyID;references:ID;constraint:OnDelete:CASCADE"`
}

func (v2RefreshUsedToken) TableName() string { return "refresh_used_tokens" }

type v2TokenRevocation struct {
	Kind      string    `gorm:"column:kind;primaryKey;not null"`
	Value     string    `gorm:"column:value;primaryKey;not null"`
	At        time.Time `gorm:"column:at;not null"`
	ExpiresAt time.Time `gorm:"column:expires_at;not null;index:token_revocations_expiry_idx"`
}

func (v2TokenRevocation) TableName() string { return "token_revocations" }

// v2RateCounter keeps its times as Unix milliseconds: the counter upsert
// reads them back through RETURNING, where SQLite reports no column type.
type v2RateCounter struct {
	CounterKey    string `gorm:"column:counter_key;primaryKey;not null"`
	Hits          int64  `gorm:"column:hits;not null"`
	WindowStartMS int64  `gorm:"column:window_start_ms;not null"`
	ExpiresAtMS   int64  `gorm:"column:expires_at_ms;not null;index:rate_counters_expiry_idx"`
}

func (v2RateCounter) TableName() string { return "rate_counters" }

// migrate0002 creates the token-state tables.
func migrate0002(tx *gorm.DB) error {
	m := tx.Migrator()
	for _, model := range []any{
		&v2RefreshFamily{}, &v2RefreshUsedToken{}, &v2TokenRevocation{}, &v2RateCounter{},
	} {
		if err := m.CreateTable(model); err != nil {
			return fmt.Errorf("create table for %T: %w", model, err)
		}
	}
	return nil
}

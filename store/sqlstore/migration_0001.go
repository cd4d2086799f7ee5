package sqlstore

import (
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Snapshot models of migration 1. Never change them: write a new migration.
// GORM turns them into the dialect's DDL (timestamptz/bytea/boolean on
// PostgreSQL, datetime/blob/numeric on SQLite).

type v1User struct {
	ID                 string     `gorm:"column:id;primaryKey;not null"`
	Email              string     `gorm:"column:email;not null"`
	EmailLower         string     `gorm:"column:email_lower;not null;uniqueIndex:users_email_lower_key"`
	Username           *string    `gorm:"column:username;uniqueIndex:users_username_key"`
	Name               string     `gorm:"column:name;not null"`
	NameLower          string     `gorm:"column:name_lower;not null"`
	PasswordHash       string     `gorm:"column:password_hash;not null"`
	Active             bool       `gorm:"column:active;not null"`
	EmailVerified      bool       `gorm:"column:email_verified;not null"`
	MustChangePassword bool       `gorm:"column:must_change_password;not null"`
	CreatedAt          time.Time  `gorm:"column:created_at;not null;autoCreateTime:false"`
	UpdatedAt          time.Time  `gorm:"column:updated_at;not null;autoUpdateTime:false"`
	LastLoginAt        *time.Time `gorm:"column:last_login_at"`
}

func (v1User) TableName() string { return "users" }

type v1Role struct {
	Name        string `gorm:"column:name;primaryKey;not null"`
	Level       int    `gorm:"column:level;not null"`
	Description string `gorm:"column:description;not null"`
}

func (v1Role) TableName() string { return "roles" }

type v1UserRole struct {
	UserID    string    `gorm:"column:user_id;primaryKey;not null"`
	Role      string    `gorm:"column:role;primaryKey;not null;index:user_roles_role_idx"`
	CreatedAt time.Time `gorm:"column:created_at;not null;autoCreateTime:false"`
	User      v1User    `gorm:"foreignKey:UserID;references:ID;constraint:OnDelete:CASCADE"`
	RoleRow   v1Role    `gorm:"foreignKey:Role;references:Name;constraint:OnDelete:RESTRICT"`
}

func (v1UserRole) TableName() string { return "user_roles" }

type v1Invite struct {
	ID         string     `gorm:"column:id;primaryKey;not null"`
	Email      string     `gorm:"column:email;not null"`
	EmailLower string     `gorm:"column:email_lower;not null;index:invites_email_lower_idx"`
	Role       string     `gorm:"column:role;not null"`
	TokenHash  []byte     `gorm:"column:token_hash;not null;uniqueIndex:invites_token_hash_key"`
	InvitedBy  string     `gorm:"column:invited_by;not null"`
	Status     string     `gorm:"column:status;not null"`
	ExpiresAt  time.Time  `gorm:"column:expires_at;not null"`
	CreatedAt  time.Time  `gorm:"column:created_at;not null;autoCreateTime:false"`
	AcceptedAt *time.Time `gorm:"column:accepted_at"`
	UserID     string     `gorm:"column:user_id;not null;index:invites_user_id_idx"`
}

func (v1Invite) TableName() string { return "invites" }

type v1UserToken struct {
	ID        string     `gorm:"column:id;primaryKey;not null"`
	UserID    string     `gorm:"column:user_id;not null;index:user_tokens_user_purpose_idx,priority:1"`
	Purpose   string     `gorm:"column:purpose;not null;index:user_tokens_user_purpose_idx,priority:2"`
	TokenHash []byte     `gorm:"column:token_hash;not null;uniqueIndex:user_tokens_token_hash_key"`
	ExpiresAt time.Time  `gorm:"column:expires_at;not null"`
	UsedAt    *time.Time `gorm:"column:used_at"`
	CreatedAt time.Time  `gorm:"column:created_at;not null;autoCreateTime:false"`
	User      v1User     `gorm:"foreignKey:UserID;references:ID;constraint:OnDelete:CASCADE"`
}

func (v1UserToken) TableName() string { return "user_tokens" }

type v1OAuthClient struct {
	ID               string    `gorm:"column:id;primaryKey;not null"`
	Name             string    `gorm:"column:name;not null"`
	Public           bool      `gorm:"column:public;not null"`
	SecretHash       []byte    `gorm:"column:secret_hash"`
	Grants           *string   `gorm:"column:grants"`    // JSON array; NULL for nil
	Scopes           *string   `gorm:"column:scopes"`    // JSON array; NULL means every permission
	Audiences        *string   `gorm:"column:audiences"` // JSON array; NULL for nil
	AccessTokenTTLMS int64     `gorm:"column:access_token_ttl_ms;not null"`
	RefreshIdleTTLMS int64     `gorm:"column:refresh_idle_ttl_ms;not null"`
	RefreshMaxAgeMS  int64     `gorm:"column:refresh_max_age_ms;not null"`
	CreatedAt        time.Time `gorm:"column:created_at;not null;autoCreateTime:false"`
	UpdatedAt        time.Time `gorm:"column:updated_at;not null;autoUpdateTime:false"`
}

func (v1OAuthClient) TableName() string { return "oauth_clients" }

type v1SigningKey struct {
	KID              string     `gorm:"column:kid;primaryKey;not null"`
	Alg              string     `gorm:"column:alg;not null"`
	State            string     `gorm:"column:state;not null"`
	PublicJWK        string     `gorm:"column:public_jwk;not null"`
	PrivateEncrypted []byte     `gorm:"column:private_encrypted;not null"`
	CreatedAt        time.Time  `gorm:"column:created_at;not null;autoCreateTime:false"`
	ActivatedAt      *time.Time `gorm:"column:activated_at"`
	RetiredAt        *time.Time `gorm:"column:retired_at"`
	RevokedAt        *time.Time `gorm:"column:revoked_at"`
	PublishedUntil   *time.Time `gorm:"column:published_until"`
	Version          int64      `gorm:"column:version;not null"`
}

func (v1SigningKey) TableName() string { return "signing_keys" }

type v1AuditEvent struct {
	ID         string    `gorm:"column:id;primaryKey;not null"`
	OccurredAt time.Time `gorm:"column:occurred_at;not null"`
	Action     string    `gorm:"column:action;not null;index:audit_events_action_idx"`
	Outcome    string    `gorm:"column:outcome;not null"`
	ActorID    string    `gorm:"column:actor_id;not null;index:audit_events_actor_idx"`
	TargetID   string    `gorm:"column:target_id;not null;index:audit_events_target_idx"`
	ClientID   string    `gorm:"column:client_id;not null"`
	IP         string    `gorm:"column:ip;not null"`
	UserAgent  string    `gorm:"column:user_agent;not null"`
	Details    string    `gorm:"column:details;not null"` // JSON object
}

func (v1AuditEvent) TableName() string { return "audit_events" }

// migrate0001 creates the relational schema.
func migrate0001(tx *gorm.DB) error {
	m := tx.Migrator()
	for _, model := range []any{
		&v1User{}, &v1Role{}, &v1UserRole{}, &v1Invite{}, &v1UserToken{},
		&v1OAuthClient{}, &v1SigningKey{}, &v1AuditEvent{},
	} {
		if err := m.CreateTable(model); err != nil {
			return fmt.Errorf("create table for %T: %w", model, err)
		}
	}
	// The pagination indexes, and the partial unique
	// indexes that let only one key be active and one be next: instances
	// racing to create the first keys cannot both win. Same SQL on both.
	for _, stmt := range []string{
		"CREATE INDEX users_created_id_idx ON users (created_at, id)",
		"CREATE INDEX invites_created_id_idx ON invites (created_at, id)",
		"CREATE INDEX audit_events_time_id_idx ON audit_events (occurred_at, id)",
		"CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (state) WHERE state = 'active'",
		"CREATE UNIQUE INDEX signing_keys_one_next ON signing_keys (state) WHERE state = 'next'",
	} {
		if err := tx.Exec(stmt).Error; err != nil {
			return fmt.Errorf("%s: %w", stmt, err)
		}
	}
	return nil
}

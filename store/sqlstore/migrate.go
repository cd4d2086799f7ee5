package sqlstore

import (
	"context"
	"fmt"
	"sort"
	"time"

	"gorm.io/gorm"
)

// Migration is one versioned schema change. Up runs inside the migration
// transaction and must use only the snapshot models of its own version, so
// that later changes to the repository models never alter what an old
// migration does.
type Migration struct {
	Version int
	Name    string
	Up      func(tx *gorm.DB) error
}

// MigrationStatus is the state of one known migration.
type MigrationStatus struct {
	Version   int
	Name      string
	AppliedAt *time.Time // nil while pending
}

// migrationLockKey is the pg_advisory_xact_lock key serialising migrations
// ("portcullis" in ASCII, as an int64).
const migrationLockKey int64 = 0x706f7274637573

// schemaMigration is the row of schema_migrations; the table itself is never
// changed by a migration.
type schemaMigration struct {
	Version   int       `gorm:"column:version;primaryKey;autoIncrement:false;not null"`
	Name      string    `gorm:"column:name;not null"`
	AppliedAt time.Time `gorm:"column:applied_at;not null;autoCreateTime:false"`
}

func (schemaMigration) TableName() string { return "schema_migrations" }

// Migrations returns every migration, in version order.
func Migrations() []Migration {
	ms := []Migration{
		{Version: 1, Name: "relational_schema", Up: migrate0001},
		{Version: 2, Name: "token_state", Up: migrate0002},
		{Version: 3, Name: "client_code_flow", Up: migrate0003},
		{Version: 4, Name: "browser_sign_in", Up: migrate0004},
		{Version: 5, Name: "refresh_family_auth_time", Up: migrate0005},
		{Version: 6, Name: "session_grants_backchannel_logouts", Up: migrate0006},
		{Version: 7, Name: "client_require_par", Up: migrate0007},
		{Version: 8, Name: "client_refresh_cookie", Up: migrate0008},
		{Version: 9, Name: "mfa_factors", Up: migrate0009},
		{Version: 10, Name: "refresh_family_amr", Up: migrate0010},
		{Version: 11, Name: "federated_identities", Up: migrate0011},
		{Version: 12, Name: "machine_users_api_keys", Up: migrate0012},
		{Version: 13, Name: "tenants", Up: migrate0013},
		{Version: 14, Name: "api_key_expiry_notice", Up: migrate0014},
		{Version: 15, Name: "browser_session_families", Up: migrate0015},
		{Version: 16, Name: "backchannel_logout_tenant", Up: migrate0016},
		{Version: 17, Name: "token_revocation_applied", Up: migrate0017},
		{Version: 18, Name: "refresh_family_granted_at", Up: migrate0018},
		{Version: 19, Name: "federated_identity_issuer", Up: migrate0019},
		{Version: 20, Name: "user_home_tenant", Up: migrate0020},
		{Version: 21, Name: "user_password_unproven", Up: migrate0021},
		{Version: 22, Name: "email_key_ascii_fold", Up: migrate0022},
		{Version: 23, Name: "recovery_codes_without_factor", Up: migrate0023},
		{Version: 24, Name: "refresh_family_rotations", Up: migrate0024},
		{Version: 25, Name: "purge_expiry_indexes", Up: migrate0025},
		{Version: 26, Name: "retired_client_names", Up: migrate0026},
		{Version: 27, Name: "user_password_hash_foreign", Up: migrate0027},
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	return ms
}

// Migrate applies every pending migration in one transaction and returns the
// versions it applied (empty when the schema was current). Any number of
// processes may call it at once: on PostgreSQL the transaction first takes a
// transaction-scoped advisory lock (PostgreSQL DDL is transactional); on
// SQLite it is an immediate write transaction. Whoever comes second sees the
// migrations applied and applies nothing.
func (s *Store) Migrate(ctx context.Context) ([]int, error) {
	var applied []int
	err := s.tx(ctx, func(tx *gorm.DB) error {
		applied = nil
		if s.dialect == DialectPostgres {
			if err := tx.Exec("SELECT pg_advisory_xact_lock(?)", migrationLockKey).Error; err != nil {
				return fmt.Errorf("take migration lock: %w", err)
			}
		}
		exists, err := s.hasMigrationsTable(tx)
		if err != nil {
			return err
		}
		if !exists {
			if err := tx.Migrator().CreateTable(&schemaMigration{}); err != nil {
				return fmt.Errorf("create schema_migrations: %w", err)
			}
		}
		done, err := appliedMigrations(tx)
		if err != nil {
			return err
		}
		for _, m := range Migrations() {
			if _, ok := done[m.Version]; ok {
				continue
			}
			if err := m.Up(tx); err != nil {
				return fmt.Errorf("migration %d %s: %w", m.Version, m.Name, err)
			}
			row := schemaMigration{Version: m.Version, Name: m.Name, AppliedAt: s.clock()}
			if err := tx.Create(&row).Error; err != nil {
				return fmt.Errorf("record migration %d: %w", m.Version, err)
			}
			applied = append(applied, m.Version)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", WrapUnavailable(err))
	}
	return applied, nil
}

// MigrationStatus lists every known migration with when it was applied
// (nil AppliedAt for pending ones), plus any applied version this binary
// does not know (a newer binary migrated the database).
func (s *Store) MigrationStatus(ctx context.Context) ([]MigrationStatus, error) {
	db := s.db.WithContext(ctx)
	exists, err := s.hasMigrationsTable(db)
	if err != nil {
		return nil, fmt.Errorf("migration status: %w", WrapUnavailable(err))
	}
	done := map[int]schemaMigration{}
	if exists {
		done, err = appliedMigrations(db)
		if err != nil {
			return nil, fmt.Errorf("migration status: %w", WrapUnavailable(err))
		}
	}
	var out []MigrationStatus
	known := map[int]bool{}
	for _, m := range Migrations() {
		known[m.Version] = true
		st := MigrationStatus{Version: m.Version, Name: m.Name}
		if r, ok := done[m.Version]; ok {
			at := readTime(r.AppliedAt)
			st.AppliedAt = &at
		}
		out = append(out, st)
	}
	for v, r := range done {
		if !known[v] {
			at := readTime(r.AppliedAt)
			out = append(out, MigrationStatus{Version: v, Name: r.Name, AppliedAt: &at})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

func (s *Store) hasMigrationsTable(db *gorm.DB) (bool, error) {
	var n int64
	var q string
	if s.dialect == DialectPostgres {
		q = "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'schema_migrations'"
	} else {
		q = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
	}
	if err := db.Raw(q).Scan(&n).Error; err != nil {
		return false, fmt.Errorf("look for schema_migrations: %w", err)
	}
	return n > 0, nil
}

func appliedMigrations(db *gorm.DB) (map[int]schemaMigration, error) {
	var rows []schemaMigration
	if err := db.Order("version").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	out := make(map[int]schemaMigration, len(rows))
	for _, r := range rows {
		out[r.Version] = r
	}
	return out, nil
}

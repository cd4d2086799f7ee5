package sqlstore

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/portcullis-auth/portcullis/store/testservers"
)

// migrationBackends are the databases the migration tests run on.
var migrationBackends = []struct {
	name string
	url  func(t *testing.T) string
}{
	{"postgres", func(t *testing.T) string { return testservers.PostgresURL(t) }},
	{"sqlite", func(t *testing.T) string { return "sqlite://" + filepath.Join(t.TempDir(), "portcullis.db") }},
}

// openAtVersion opens a store on url and applies only its first n
// migrations, recorded as applied: the database as a binary of that
// version left it, for a test to write old rows into before Migrate. The
// store is closed when the test ends.
func openAtVersion(t *testing.T, ctx context.Context, url string, n int) (*Store, *gorm.DB) {
	t.Helper()
	s, err := Open(ctx, url)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	db := s.DB().WithContext(ctx)
	if err := db.Migrator().CreateTable(&schemaMigration{}); err != nil {
		t.Fatalf("create schema_migrations: %v", err)
	}
	for _, m := range Migrations()[:n] {
		if err := m.Up(db); err != nil {
			t.Fatalf("migration %d: %v", m.Version, err)
		}
		if err := db.Create(&schemaMigration{Version: m.Version, Name: m.Name, AppliedAt: time.Now()}).Error; err != nil {
			t.Fatalf("record migration %d: %v", m.Version, err)
		}
	}
	return s, db
}

// versionsFrom lists the known migration versions from v on.
func versionsFrom(v int) []int {
	var out []int
	for _, m := range Migrations() {
		if m.Version >= v {
			out = append(out, m.Version)
		}
	}
	return out
}

// createOldUser inserts an active user as binaries before migration 12
// wrote it (the users table of migration 1, no kind column) and returns
// its id: the repository's CreateUser writes columns later migrations add.
func createOldUser(t *testing.T, db *gorm.DB, email string) string {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Microsecond)
	u := v1User{ID: newID(UserIDPrefix), Email: email, EmailLower: strings.ToLower(email), Name: "Old " + email,
		NameLower: strings.ToLower("Old " + email), Active: true, CreatedAt: now, UpdatedAt: now}
	if err := db.Create(&u).Error; err != nil {
		t.Fatalf("create an old user %s: %v", email, err)
	}
	return u.ID
}

package app_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/portcullis-auth/portcullis/server/app"
	"github.com/portcullis-auth/portcullis/server/config"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
	"github.com/portcullis-auth/portcullis/store/testservers"
)

// TestStartRefusesPendingMigrations: with PORTCULLIS_AUTO_MIGRATE=false (the
// documented production way), a process started on a database that lacks a
// migration this binary knows (the servers were rolled out before
// `portcullis migrate`, or the migrate Job failed) refuses to start, naming
// the pending migrations and `portcullis migrate`. It used to start, answer
// /readyz 200 and every login 503 (a column of the missing migration).
// Versions newer than the binary knows are allowed (rolling upgrades), and
// `portcullis migrate status` and `portcullis migrate` work on such a
// database. Found by a review.
func TestStartRefusesPendingMigrations(t *testing.T) {
	ms := sqlstore.Migrations()
	newest := ms[len(ms)-1]
	cases := []struct {
		name    string
		applied []sqlstore.Migration // recorded in schema_migrations
		refused bool
	}{
		{"fail/newest pending", ms[:len(ms)-1], true},
		{"fail/empty database", nil, true},
		{"ok/every migration applied", ms, false},
		{"ok/a newer binary migrated too", append(append([]sqlstore.Migration{}, ms...),
			sqlstore.Migration{Version: newest.Version + 1, Name: "from_a_newer_binary", Up: func(*gorm.DB) error { return nil }}), false},
	}
	backends := []struct {
		name string
		url  func(t *testing.T) string
	}{
		{"sqlite", func(t *testing.T) string { return "sqlite://" + filepath.Join(t.TempDir(), "portcullis.db") }},
		{"postgres", func(t *testing.T) string { return testservers.PostgresURL(t) }},
	}
	for _, b := range backends {
		for _, tc := range cases {
			t.Run(b.name+"/"+tc.name, func(t *testing.T) {
				ctx := context.Background()
				dbURL := b.url(t)
				migrateOnly(t, dbURL, tc.applied)
				log := slog.New(slog.NewTextHandler(io.Discard, nil))
				cfg := migrationConfig(t, dbURL, "false")

				st, err := app.OpenStore(ctx, cfg, log)
				if !tc.refused {
					if err != nil {
						t.Fatalf("refused a database with nothing pending: %v", err)
					}
					_ = st.Close()
					return
				}
				if err == nil {
					_ = st.Close()
					t.Fatalf("started with PORTCULLIS_AUTO_MIGRATE=false and migration %d pending", newest.Version)
				}
				if !errors.Is(err, app.ErrMigrationsPending) || !strings.Contains(err.Error(), "portcullis migrate") ||
					!strings.Contains(err.Error(), newest.Name) {
					t.Fatalf("the refusal names neither the pending migration %d %s nor `portcullis migrate`: %v", newest.Version, newest.Name, err)
				}

				// `portcullis migrate status` still reads the database...
				st, err = app.OpenStoreForStatus(ctx, cfg, log)
				if err != nil {
					t.Fatalf("migrate status: %v", err)
				}
				list, err := st.MigrationStatus(ctx)
				_ = st.Close()
				if err != nil || len(list) == 0 || list[len(list)-1].AppliedAt != nil {
					t.Fatalf("migrate status does not list migration %d as pending: %v %+v", newest.Version, err, list)
				}
				// ...and `portcullis migrate` applies what is pending, after
				// which the store opens.
				st, err = app.OpenStore(ctx, migrationConfig(t, dbURL, "true"), log)
				if err != nil {
					t.Fatalf("migrate: %v", err)
				}
				_ = st.Close()
				st, err = app.OpenStore(ctx, cfg, log)
				if err != nil {
					t.Fatalf("refused after `portcullis migrate`: %v", err)
				}
				_ = st.Close()
			})
		}
	}
}

// migrateOnly applies the given migrations to the database at dbURL and
// records them in schema_migrations, as a binary that knew only those would.
func migrateOnly(t *testing.T, dbURL string, applied []sqlstore.Migration) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	db := st.DB().WithContext(ctx)
	timeType := "datetime"
	if st.Dialect() == "postgres" {
		timeType = "timestamptz"
	}
	if err := db.Exec(`CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at ` + timeType + ` NOT NULL)`).Error; err != nil {
		t.Fatal(err)
	}
	for _, m := range applied {
		if err := m.Up(db); err != nil {
			t.Fatalf("migration %d: %v", m.Version, err)
		}
		if err := db.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`, m.Version, m.Name, time.Now().UTC()).Error; err != nil {
			t.Fatal(err)
		}
	}
}

func migrationConfig(t *testing.T, dbURL, autoMigrate string) config.Config {
	t.Helper()
	env := map[string]string{"PORTCULLIS_DATABASE_URL": dbURL, "PORTCULLIS_AUTO_MIGRATE": autoMigrate,
		"PORTCULLIS_KEY_ENCRYPTION_KEY": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}
	cfg, err := config.Load(nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

package sqlstore_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
	"github.com/portcullis-auth/portcullis/store/storetest"
	"github.com/portcullis-auth/portcullis/store/testservers"
)

func TestMain(m *testing.M) { testservers.Main(m) }

func testCtx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// backends gives each test a fresh database URL per backend.
var backends = []struct {
	name string
	url  func(t *testing.T) string
}{
	{"postgres", func(t *testing.T) string { return testservers.PostgresURL(t) }},
	{"sqlite", func(t *testing.T) string { return "sqlite://" + filepath.Join(t.TempDir(), "portcullis.db") }},
}

func open(t *testing.T, url string) *sqlstore.Store {
	t.Helper()
	s, err := sqlstore.Open(testCtx(t), url)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestRelationalConformance(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			storetest.RunRelationalTests(t, func(t *testing.T) *sqlstore.Store {
				s := open(t, b.url(t))
				if s.Dialect() != b.name {
					t.Fatalf("Dialect() = %q on %s", s.Dialect(), b.name)
				}
				return s
			})
		})
	}
}

// TestConcurrentMigrate starts several stores (separate connection pools, as
// separate processes would have) on one empty database and migrates them at
// once: all succeed and every migration is applied exactly once.
func TestConcurrentMigrate(t *testing.T) {
	const instances = 6
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			url := b.url(t)
			stores := make([]*sqlstore.Store, instances)
			for i := range stores {
				stores[i] = open(t, url)
			}
			applied := make([][]int, instances)
			errs := make([]error, instances)
			var start, done sync.WaitGroup
			start.Add(1)
			for i := range stores {
				done.Add(1)
				go func(i int) {
					defer done.Done()
					start.Wait()
					applied[i], errs[i] = stores[i].Migrate(testCtx(t))
				}(i)
			}
			start.Done()
			done.Wait()
			var all []int
			for i, err := range errs {
				if err != nil {
					t.Fatalf("instance %d: Migrate: %v", i, err)
				}
				all = append(all, applied[i]...)
			}
			sort.Ints(all)
			var want []int
			for _, m := range sqlstore.Migrations() {
				want = append(want, m.Version)
			}
			if len(all) != len(want) {
				t.Fatalf("migrations applied %v across instances, want each of %v exactly once", all, want)
			}
			for i := range want {
				if all[i] != want[i] {
					t.Fatalf("migrations applied %v across instances, want each of %v exactly once", all, want)
				}
			}
			var rows int64
			if err := stores[0].DB().Raw("SELECT count(*) FROM schema_migrations").Scan(&rows).Error; err != nil {
				t.Fatalf("count schema_migrations: %v", err)
			}
			if rows != int64(len(want)) {
				t.Fatalf("schema_migrations has %d rows, want %d", rows, len(want))
			}
		})
	}
}

func TestOpen(t *testing.T) {
	for _, tc := range []struct {
		name    string
		url     string
		mention []string
	}{
		{"fail/mysql_scheme", "mysql://admin:hunter2secret@db/portcullis", []string{"PORTCULLIS_DATABASE_URL", "postgres://", "sqlite://", "mysql://"}},
		{"fail/no_scheme", "admin:hunter2secret@db/portcullis", []string{"PORTCULLIS_DATABASE_URL", "sqlite://PATH"}},
		{"fail/empty", "", []string{"PORTCULLIS_DATABASE_URL"}},
		{"fail/sqlite_without_path", "sqlite://", []string{"PORTCULLIS_DATABASE_URL", "sqlite://"}},
		{"fail/sqlite_with_query", "sqlite:///tmp/x.db?_pragma=foreign_keys(0)", []string{"PORTCULLIS_DATABASE_URL", "no query"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := sqlstore.Open(testCtx(t), tc.url)
			if err == nil {
				_ = s.Close()
				t.Fatalf("Open(%q) succeeded", tc.url)
			}
			for _, m := range tc.mention {
				if !strings.Contains(err.Error(), m) {
					t.Fatalf("error %q does not mention %q", err, m)
				}
			}
			if strings.Contains(err.Error(), "hunter2secret") {
				t.Fatalf("error %q reveals the password", err)
			}
		})
	}
	t.Run("fail/postgres_unreachable_is_unavailable", func(t *testing.T) {
		port, err := testservers.FreePort()
		if err != nil {
			t.Fatalf("FreePort: %v", err)
		}
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		url := "postgres://portcullis:hunter2secret@127.0.0.1:" + itoa(port) + "/x?sslmode=disable&connect_timeout=2"
		s, err := sqlstore.Open(c, url)
		if err == nil {
			_ = s.Close()
			t.Fatalf("Open on a closed port succeeded")
		}
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("error %v is not store.ErrUnavailable", err)
		}
		if strings.Contains(err.Error(), "hunter2secret") {
			t.Fatalf("error %q reveals the password", err)
		}
	})
	t.Run("ok/sqlite_creates_directory_and_sets_pragmas", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "nested", "data")
		s := open(t, "sqlite://"+filepath.Join(dir, "p.db"))
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			t.Fatalf("directory not created: %v", err)
		}
		// synchronous 2 (FULL): a commit is on disk before it returns,
		// also in WAL mode, so a power loss never undoes a revocation
		// already answered (found by a review: NORMAL, 1, could).
		for pragma, want := range map[string]string{"journal_mode": "wal", "foreign_keys": "1", "busy_timeout": "10000", "synchronous": "2"} {
			var got string
			if err := s.DB().Raw("PRAGMA " + pragma).Scan(&got).Error; err != nil {
				t.Fatalf("PRAGMA %s: %v", pragma, err)
			}
			if got != want {
				t.Fatalf("PRAGMA %s = %q, want %q", pragma, got, want)
			}
		}
	})
}

// TestSQLiteFilesPrivate: the SQLite database and its -wal and -shm files
// are created readable by their owner only, whatever the directory's mode
// (found by a review: they were created 0644 in a directory that already
// existed, readable by every local user, password hashes and audit
// included, while the key-encryption key beside them was 0600). An
// existing file others can read is used as it is, with a warning naming it.
func TestSQLiteFilesPrivate(t *testing.T) {
	for _, tc := range []struct {
		name     string
		existing os.FileMode // 0: no file before Open
		wantMode os.FileMode // of the database file after Open
		warn     bool
	}{
		{"ok/created_private", 0, 0o600, false},
		{"ok/existing_private_kept", 0o600, 0o600, false},
		{"ok/existing_readable_used_with_warning", 0o644, 0o644, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "portcullis.db")
			if tc.existing != 0 {
				if err := os.WriteFile(path, nil, tc.existing); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(path, tc.existing); err != nil { // past the umask
					t.Fatal(err)
				}
			}
			var logged bytes.Buffer
			s, err := sqlstore.Open(testCtx(t), "sqlite://"+path, sqlstore.WithLogger(slog.New(slog.NewTextHandler(&logged, nil))))
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			t.Cleanup(func() { _ = s.Close() })
			if _, err := s.Migrate(testCtx(t)); err != nil {
				t.Fatalf("Migrate: %v", err)
			}
			if got := strings.Contains(logged.String(), "readable by other users"); got != tc.warn {
				t.Fatalf("warned %v, want %v: %q", got, tc.warn, logged.String())
			}
			if tc.warn && !strings.Contains(logged.String(), path) {
				t.Fatalf("the warning does not name the file: %q", logged.String())
			}
			for _, f := range []string{path, path + "-wal", path + "-shm"} {
				fi, err := os.Stat(f)
				if err != nil {
					t.Errorf("%s: %v", f, err)
					continue
				}
				if got := fi.Mode().Perm(); got != tc.wantMode {
					t.Errorf("%s: mode %v, want %v", filepath.Base(f), got, tc.wantMode)
				}
			}
		})
	}
}

func itoa(n int) string {
	const digits = "0123456789"
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{digits[n%10]}, b...)
	}
	return string(b)
}

// TestPostgresDown stops a private PostgreSQL under a store: calls fail with
// store.ErrUnavailable, and work again once the server is back.
func TestPostgresDown(t *testing.T) {
	pg := testservers.NewPostgres(t)
	url, err := testservers.CreateDatabase(pg.URL())
	if err != nil {
		t.Fatalf("CreateDatabase: %v", err)
	}
	s := open(t, url)
	c := testCtx(t)
	if _, err := s.Migrate(c); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if err := pg.Stop(); err != nil {
		t.Fatalf("stop PostgreSQL: %v", err)
	}
	short, cancel := context.WithTimeout(c, 5*time.Second)
	defer cancel()
	if err := s.Ping(short); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Ping with PostgreSQL down: %v, want store.ErrUnavailable", err)
	}
	if _, err := s.GetUser(short, "usr_x"); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("GetUser with PostgreSQL down: %v, want store.ErrUnavailable", err)
	}
	if err := pg.Start(); err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := s.Ping(c)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("store did not recover: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := s.GetUser(c, "usr_x"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetUser after recovery: %v, want store.ErrNotFound", err)
	}
}

// TestRunInTxRetriesDeadlock makes two PostgreSQL transactions deadlock for
// real: PostgreSQL aborts one (40P01), RunInTx runs it again, and both
// transactions' effects are committed.
func TestRunInTxRetriesDeadlock(t *testing.T) {
	s := open(t, testservers.PostgresURL(t))
	c := testCtx(t)
	db := s.DB()
	if err := db.Exec("CREATE TABLE scratch (id int PRIMARY KEY, n int NOT NULL)").Error; err != nil {
		t.Fatalf("create scratch: %v", err)
	}
	if err := db.Exec("INSERT INTO scratch (id, n) VALUES (1, 0), (2, 0)").Error; err != nil {
		t.Fatalf("insert: %v", err)
	}
	var attempts [2]atomic.Int32
	locked := [2]chan struct{}{make(chan struct{}), make(chan struct{})}
	var once [2]sync.Once
	run := func(me int) error {
		first, second := me+1, 2-me // worker 0 locks row 1 then 2; worker 1 locks row 2 then 1
		return sqlstore.RunInTx(c, db, func(tx *gorm.DB) error {
			attempt := attempts[me].Add(1)
			if err := tx.Exec("UPDATE scratch SET n = n + 1 WHERE id = ?", first).Error; err != nil {
				return err
			}
			if attempt == 1 {
				once[me].Do(func() { close(locked[me]) })
				select { // wait until the other holds its first row
				case <-locked[1-me]:
				case <-c.Done():
					return c.Err()
				}
			}
			return tx.Exec("UPDATE scratch SET n = n + 1 WHERE id = ?", second).Error
		})
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func(i int) { defer wg.Done(); errs[i] = run(i) }(i)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("worker %d: %v", i, err)
		}
	}
	if total := attempts[0].Load() + attempts[1].Load(); total < 3 {
		t.Fatalf("%d attempts: the deadlock was not retried", total)
	}
	var ns []int
	if err := db.Raw("SELECT n FROM scratch ORDER BY id").Scan(&ns).Error; err != nil {
		t.Fatalf("read: %v", err)
	}
	if len(ns) != 2 || ns[0] != 2 || ns[1] != 2 {
		t.Fatalf("rows %v, want both transactions' increments [2 2]", ns)
	}
}

// TestPoolKeepsBusyConnections: a burst that uses every connection of the
// PostgreSQL pool at once leaves them all open for the next burst. With fewer
// idle slots than open connections the surplus was closed after each burst
// and forked again by PostgreSQL on the next (userinfo fell from 4,000/s to
// 800/s under 32 workers).
func TestPoolKeepsBusyConnections(t *testing.T) {
	t.Parallel()
	s := open(t, testservers.PostgresURL(t))
	c := testCtx(t)
	sqlDB, err := s.DB().DB()
	if err != nil {
		t.Fatal(err)
	}
	n := sqlDB.Stats().MaxOpenConnections
	for burst := 0; burst < 2; burst++ {
		var all sync.WaitGroup
		all.Add(n)
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			go func() {
				tx, err := sqlDB.BeginTx(c, nil)
				all.Done()
				if err != nil {
					errs <- err
					return
				}
				all.Wait() // every connection of the pool is held at once
				errs <- tx.Commit()
			}()
		}
		for i := 0; i < n; i++ {
			if err := <-errs; err != nil {
				t.Fatalf("burst %d: %v", burst, err)
			}
		}
		if st := sqlDB.Stats(); st.MaxIdleClosed != 0 || st.Idle != n {
			t.Fatalf("after burst %d of %d connections: %d idle, %d closed for want of an idle slot", burst, n, st.Idle, st.MaxIdleClosed)
		}
	}
}

// TestPoolWaitPastDeadlineIsUnavailable: on PostgreSQL and SQLite, a store
// call whose deadline runs out while every connection of the pool is busy
// fails with store.ErrUnavailable (the server's 503, retryable), not with
// an error the server would answer as its own fault (500). database/sql
// returns the bare context.DeadlineExceeded from the pool's wait; it counts
// as unavailable only because that error is a net.Error whose Timeout is
// true (isUnavailable), which this test pins.
func TestPoolWaitPastDeadlineIsUnavailable(t *testing.T) {
	t.Parallel()
	for name, url := range map[string]string{
		"postgres": testservers.PostgresURL(t),
		"sqlite":   "sqlite://" + filepath.Join(t.TempDir(), "pool.db"),
	} {
		t.Run(name, func(t *testing.T) {
			s := open(t, url)
			sqlDB, err := s.DB().DB()
			if err != nil {
				t.Fatal(err)
			}
			c := testCtx(t)
			for range sqlDB.Stats().MaxOpenConnections {
				conn, err := sqlDB.Conn(c)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = conn.Close() })
			}
			ctx, cancel := context.WithTimeout(c, 50*time.Millisecond) // the deadline is the behaviour
			defer cancel()
			_, err = s.GetUser(ctx, "usr_nobody")
			if !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("a lookup past its deadline in the pool's wait: %v, want ErrUnavailable wrapping the deadline", err)
			}
		})
	}
}

// TestUserStoredWithBadTextStaysWritable: a name SQLite kept before the
// store refused text PostgreSQL cannot hold (not UTF-8, a NUL) does not
// lock its user: the user can still be deactivated and given a new name,
// while a write that sets such text is refused.
func TestUserStoredWithBadTextStaysWritable(t *testing.T) {
	ctx := testCtx(t)
	s := open(t, "sqlite://"+filepath.Join(t.TempDir(), "portcullis.db"))
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	u := store.User{Email: "legacy@example.com", Name: "Legacy", Active: true}
	if err := s.CreateUser(ctx, &u); err != nil {
		t.Fatal(err)
	}
	if err := s.DB().Exec("UPDATE users SET name = ? WHERE id = ?", "Legacy \xff", u.ID).Error; err != nil {
		t.Fatal(err)
	}
	got, err := s.UpdateUser(ctx, u.ID, func(x *store.User) error { x.Active = false; return nil })
	if err != nil || got.Active {
		t.Fatalf("deactivate a user whose stored name is not UTF-8: %+v, %v", got, err)
	}
	if _, err := s.UpdateUser(ctx, u.ID, func(x *store.User) error { x.Name = "Other \xff"; return nil }); !errors.Is(err, sqlstore.ErrInvalidUser) {
		t.Fatalf("set another name that is not UTF-8: %v, want sqlstore.ErrInvalidUser", err)
	}
	got, err = s.UpdateUser(ctx, u.ID, func(x *store.User) error { x.Name = "Legacy"; return nil })
	if err != nil || got.Name != "Legacy" {
		t.Fatalf("mend the name: %+v, %v", got, err)
	}
}

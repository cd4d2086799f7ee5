package sqlstore

import (
	"context"
	"crypto/rand"
	"database/sql/driver"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/glebarez/sqlite"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/rawconn"
)

// Dialect names returned by (*Store).Dialect.
const (
	DialectPostgres = "postgres"
	DialectSQLite   = "sqlite"
)

// Pool and retry settings.
const (
	postgresMaxOpenConns = 20
	// Every open connection may stay idle: with fewer idle slots than open
	// ones, a burst above the idle count closes the surplus after each query
	// and opens it again on the next, and each PostgreSQL connection is a
	// forked backend (measured: 43% of the machine in system time and
	// userinfo at 800/s under 32 workers). Idle ones are closed after
	// ConnMaxIdleTime.
	postgresMaxIdleConns = postgresMaxOpenConns
	sqliteMaxOpenConns   = 8
	sqliteBusyTimeoutMS  = 10000
	txMaxAttempts        = 5
	txBaseBackoff        = 5 * time.Millisecond
)

// Store is the relational store on PostgreSQL or SQLite. It is safe for
// concurrent use and may be shared by any number of goroutines; several
// processes may share one database.
type Store struct {
	db      *gorm.DB
	dialect string
	now     func() time.Time
	log     *slog.Logger // Open's warnings

	userWrites atomic.Pointer[userWriteHooksBox] // see SetUserWriteHooks

	purgeBatch int // rows per step of Purge; 0: DefaultPurgeBatch (tests set fewer)

	retireFor time.Duration // see WithClientRetirement
}

// Option configures Open.
type Option func(*Store)

// WithClock sets the clock used for created/updated timestamps (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(s *Store) {
		if now != nil {
			s.now = now
		}
	}
}

// DefaultClientRetirement is how long a deleted client's id and audiences
// stay retired without WithClientRetirement: the default revocation
// horizon (PORTCULLIS_MAX_CLIENT_TOKEN_TTL's default).
const DefaultClientRetirement = 24 * time.Hour

// WithClientRetirement sets how long DeleteClient retires a deleted
// client's id and audiences: the longest any of its access or id tokens
// may live (config.Config.RevocationHorizon). Zero or less keeps
// DefaultClientRetirement.
func WithClientRetirement(d time.Duration) Option {
	return func(s *Store) {
		if d > 0 {
			s.retireFor = d
		}
	}
}

// WithLogger sets where Open warns (default slog.Default()): an SQLite
// database file other users can read.
func WithLogger(log *slog.Logger) Option {
	return func(s *Store) {
		if log != nil {
			s.log = log
		}
	}
}

// Open connects to the database named by databaseURL: postgres:// or
// postgresql:// for PostgreSQL, sqlite://PATH for an embedded SQLite file
// (its directory is created when missing, 0700, and the file readable by
// its owner only: see openSQLiteFile). It checks that the database answers
// but does not migrate; call Migrate for that.
func Open(ctx context.Context, databaseURL string, opts ...Option) (*Store, error) {
	s := &Store{now: time.Now, log: slog.Default(), retireFor: DefaultClientRetirement}
	for _, o := range opts {
		o(s)
	}
	var dialector gorm.Dialector
	switch {
	case strings.HasPrefix(databaseURL, "postgres://"), strings.HasPrefix(databaseURL, "postgresql://"):
		s.dialect = DialectPostgres
		// Connections read and write outside the Go scheduler's
		// system-call state (store/rawconn); the dial is pgx's own.
		dialector = postgres.New(postgres.Config{DSN: databaseURL, OptionOpenDB: []stdlib.OptionOpenDB{
			stdlib.OptionBeforeConnect(func(_ context.Context, cfg *pgx.ConnConfig) error {
				cfg.DialFunc = rawconn.WrapDial(cfg.DialFunc)
				return nil
			}),
		}})
	case strings.HasPrefix(databaseURL, "sqlite://"):
		path := strings.TrimPrefix(databaseURL, "sqlite://")
		if path == "" || strings.ContainsAny(path, "?#") {
			return nil, errors.New("PORTCULLIS_DATABASE_URL: expected sqlite://PATH with a file path and no query string (for example sqlite://./data/portcullis.db)")
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("create directory for the SQLite database: %w", err)
		}
		if err := openSQLiteFile(path, s.log); err != nil {
			return nil, err
		}
		s.dialect = DialectSQLite
		// _txlock=immediate: every transaction takes the write lock when it
		// begins, so read-modify-write transactions queue on busy_timeout
		// instead of failing when they upgrade a read lock.
		// synchronous(FULL): in WAL mode a commit is synced to disk before
		// it returns, so a power loss or an OS crash never undoes what was
		// answered (NORMAL could lose the last commits: a revocation
		// already answered 200).
		dsn := path + "?_txlock=immediate" +
			"&_pragma=busy_timeout(" + fmt.Sprint(sqliteBusyTimeoutMS) + ")" +
			"&_pragma=journal_mode(WAL)" +
			"&_pragma=foreign_keys(1)" +
			"&_pragma=synchronous(FULL)"
		dialector = sqlite.Open(dsn)
	default:
		scheme := "no scheme"
		if i := strings.Index(databaseURL, "://"); i > 0 && i < 20 {
			scheme = "scheme " + databaseURL[:i] + "://"
		}
		return nil, fmt.Errorf("PORTCULLIS_DATABASE_URL: expected postgres://…, postgresql://… or sqlite://PATH, got %s", scheme)
	}
	db, err := gorm.Open(dialector, &gorm.Config{
		Logger:                 logger.Discard,
		SkipDefaultTransaction: true,
		DisableAutomaticPing:   true,
		NowFunc:                func() time.Time { return dbTime(s.now()) },
		TranslateError:         false,
	})
	if err != nil {
		return nil, fmt.Errorf("open %s database: %w", s.dialect, WrapUnavailable(err))
	}
	s.db = db
	sqlDB, err := db.DB()
	if err != nil {
		return nil, fmt.Errorf("open %s database: %w", s.dialect, err)
	}
	if s.dialect == DialectPostgres {
		sqlDB.SetMaxOpenConns(postgresMaxOpenConns)
		sqlDB.SetMaxIdleConns(postgresMaxIdleConns)
		sqlDB.SetConnMaxLifetime(30 * time.Minute)
		sqlDB.SetConnMaxIdleTime(5 * time.Minute)
	} else {
		sqlDB.SetMaxOpenConns(sqliteMaxOpenConns)
		sqlDB.SetMaxIdleConns(sqliteMaxOpenConns)
	}
	if err := s.Ping(ctx); err != nil {
		_ = sqlDB.Close()
		return nil, fmt.Errorf("open %s database: %w", s.dialect, err)
	}
	return s, nil
}

// openSQLiteFile creates the SQLite database file at path, when missing,
// readable and writable by its owner only, before SQLite opens it: SQLite
// gives the -wal and -shm files it creates beside a database that file's
// mode. The file holds password hashes and audit events; created by
// SQLite it would be 0644 in a directory that already existed. An existing
// file (or -wal or -shm file) others may read is used as it is, with a
// warning: refusing it would stop a deployment that worked.
func openSQLiteFile(path string, log *slog.Logger) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open the SQLite database file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("open the SQLite database file: %w", err)
	}
	for _, name := range []string{path, path + "-wal", path + "-shm"} {
		// -wal and -shm exist only while the database is open.
		WarnIfOthersCanRead(log, name, "the SQLite database file (it holds password hashes and audit events; chmod its -wal and -shm files too)")
	}
	return nil
}

// WarnIfOthersCanRead logs at Warn, naming the file and its mode, when the
// file at path exists and users other than its owner (its group included)
// may read or write it; what says which file it is and what it holds. It
// is the one check of the embedded mode's private files: the SQLite
// database (openSQLiteFile) and the generated key-encryption key beside it
// (app). Such a file is used as it is: refusing it would stop a deployment
// that worked.
func WarnIfOthersCanRead(log *slog.Logger, path, what string) {
	fi, err := os.Stat(path)
	if err != nil {
		return
	}
	if mode := fi.Mode().Perm(); mode&0o077 != 0 {
		log.Warn(what+" is open to other users of this machine (readable by other users, or writable by them): chmod 600 it",
			"file", path, "mode", mode.String())
	}
}

// DB returns the underlying GORM handle (used by sqlstate for token state).
func (s *Store) DB() *gorm.DB { return s.db }

// Dialect returns "postgres" or "sqlite".
func (s *Store) Dialect() string { return s.dialect }

// Ping checks that the database answers; failures wrap store.ErrUnavailable.
func (s *Store) Ping(ctx context.Context) error {
	sqlDB, err := s.db.DB()
	if err != nil {
		return fmt.Errorf("ping database: %w", err)
	}
	if err := sqlDB.PingContext(ctx); err != nil {
		return fmt.Errorf("ping database: %w: %w", store.ErrUnavailable, err)
	}
	return nil
}

// Close closes the connection pool.
func (s *Store) Close() error {
	sqlDB, err := s.db.DB()
	if err != nil {
		return fmt.Errorf("close database: %w", err)
	}
	if err := sqlDB.Close(); err != nil {
		return fmt.Errorf("close database: %w", err)
	}
	return nil
}

// clock returns the store's current time as stored (UTC, microseconds).
func (s *Store) clock() time.Time { return dbTime(s.now()) }

// scanOne runs q (a Raw statement) and scans its first row into dest,
// reporting whether there was one; no row leaves dest as it was. It is
// gorm's DB.Scan without what that adds: DB.Scan swaps in a logger that
// records every statement it runs, writing the values into the SQL text with
// regular expressions (for the login's statement about 15 µs and 46
// allocations; the password grant's profile showed it), work nothing here
// reads. Like DB.Scan, and unlike Row().Scan (whose error sql.Row holds back
// until after gorm's callbacks have run), it goes through DB.Rows, so a
// statement that fails reaches the callbacks (the database metrics) as an
// error.
func scanOne(q *gorm.DB, dest ...any) (found bool, err error) {
	rows, err := q.Rows()
	if err != nil {
		return false, err
	}
	defer func() { _ = rows.Close() }()
	if rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return false, err
		}
		found = true
	}
	return found, rows.Err()
}

// tx runs fn in a transaction, retrying PostgreSQL serialization failures
// and deadlocks (and SQLite busy errors) a few times with jittered backoff.
// fn may therefore run more than once and must not have effects outside tx.
func (s *Store) tx(ctx context.Context, fn func(tx *gorm.DB) error) error {
	return RunInTx(ctx, s.db, fn)
}

// RunInTx runs fn in a transaction of db, retrying PostgreSQL serialization
// failures (40001) and deadlocks (40P01), and SQLite busy errors, up to a few
// times with jittered backoff. fn may run more than once.
func RunInTx(ctx context.Context, db *gorm.DB, fn func(tx *gorm.DB) error) error {
	var err error
	for attempt := 0; attempt < txMaxAttempts; attempt++ {
		err = db.WithContext(ctx).Transaction(fn)
		if err == nil || !IsRetryable(err) {
			return err
		}
		if attempt == txMaxAttempts-1 {
			break
		}
		backoff := txBaseBackoff << attempt
		jitter, jerr := rand.Int(rand.Reader, big.NewInt(int64(backoff)))
		if jerr == nil {
			backoff += time.Duration(jitter.Int64())
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (gave up retrying: %w)", err, ctx.Err())
		case <-t.C:
		}
	}
	return err
}

// dbTime normalises a time for storage: UTC, microsecond precision (what
// PostgreSQL keeps), so values read back equal the values written.
func dbTime(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC().Truncate(time.Microsecond)
}

func dbTimePtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	v := dbTime(*t)
	return &v
}

// readTime converts a time read from the database to UTC.
func readTime(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC()
}

func readTimePtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	v := t.UTC()
	return &v
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newID returns prefix + 26 lowercase base32 characters of 16 random bytes.
// User ids ("usr_…") can never be taken for client ids, which operators
// choose and which the clients command refuses in this shape.
func newID(prefix string) string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand never fails on supported platforms (Go 1.24+ panics itself).
		panic(fmt.Sprintf("sqlstore: read random bytes: %v", err))
	}
	return prefix + idEncoding.EncodeToString(b[:])
}

// ID prefixes.
const (
	UserIDPrefix      = "usr_"
	InviteIDPrefix    = "inv_"
	UserTokenIDPrefix = "utk_"
	AuditIDPrefix     = "evt_"
	// retiredNameIDPrefix starts the id of a retired client name's row.
	retiredNameIDPrefix = "rcn_"
)

type sqlStater interface{ SQLState() string }
type sqliteCoder interface{ Code() int }

func pgCode(err error) string {
	var e sqlStater
	if errors.As(err, &e) {
		return e.SQLState()
	}
	return ""
}

func sqliteCode(err error) int {
	var e sqliteCoder
	if errors.As(err, &e) {
		return e.Code()
	}
	return 0
}

// SQLite result codes used below.
const (
	sqliteBusy             = 5
	sqliteLocked           = 6
	sqliteConstraint       = 19
	sqliteConstraintFK     = 787
	sqliteConstraintPK     = 1555
	sqliteConstraintUnique = 2067
)

// IsUniqueViolation reports whether err is a unique-constraint violation on
// either backend.
func IsUniqueViolation(err error) bool {
	if pgCode(err) == "23505" {
		return true
	}
	c := sqliteCode(err)
	return c == sqliteConstraintUnique || c == sqliteConstraintPK ||
		(c&0xff == sqliteConstraint && strings.Contains(err.Error(), "UNIQUE constraint failed"))
}

// isUnstorableText reports PostgreSQL refusing a text parameter it cannot
// hold (SQLSTATE 22021: a NUL byte or invalid UTF-8). No row holds such a
// value, so mapErr makes it match nothing, as it does on SQLite: a request
// naming such an id gets its 404, not a 500. storableText is the same rule,
// checked before a statement where a lookup takes names from outside.
func isUnstorableText(err error) bool { return pgCode(err) == "22021" }

// IsForeignKeyViolation reports whether err is a foreign-key violation.
func IsForeignKeyViolation(err error) bool {
	if pgCode(err) == "23503" {
		return true
	}
	c := sqliteCode(err)
	return c == sqliteConstraintFK ||
		(c&0xff == sqliteConstraint && strings.Contains(err.Error(), "FOREIGN KEY constraint failed"))
}

// IsRetryable reports whether a transaction that failed with err may simply
// be run again: PostgreSQL serialization failure or deadlock, SQLite busy.
func IsRetryable(err error) bool {
	switch pgCode(err) {
	case "40001", "40P01":
		return true
	}
	c := sqliteCode(err) & 0xff
	return c == sqliteBusy || c == sqliteLocked
}

// isUnavailable reports whether err means the database could not be reached.
func isUnavailable(err error) bool {
	code := pgCode(err)
	if strings.HasPrefix(code, "08") || code == "57P01" || code == "57P02" || code == "57P03" {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	return errors.Is(err, driver.ErrBadConn) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}

// WrapUnavailable wraps an error meaning the database could not be reached
// (connection refused or lost, server shutting down) with
// store.ErrUnavailable; other errors come back unchanged.
func WrapUnavailable(err error) error {
	if err == nil || errors.Is(err, store.ErrUnavailable) {
		return err
	}
	if isUnavailable(err) {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return err
}

// mapErr turns driver errors into store sentinels: a missing row (or text
// no row can hold) becomes ErrNotFound, a unique violation ErrAlreadyExists,
// an unreachable database ErrUnavailable. Sentinels already present pass
// through.
func mapErr(what string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrAlreadyExists),
		errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrUnavailable),
		errors.Is(err, store.ErrTokenExpired), errors.Is(err, store.ErrTokenUsed),
		errors.Is(err, store.ErrTokenRevoked), errors.Is(err, ErrInvalidCursor):
		return fmt.Errorf("%s: %w", what, err)
	case errors.Is(err, gorm.ErrRecordNotFound), isUnstorableText(err):
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	case IsUniqueViolation(err):
		return fmt.Errorf("%s: %w", what, store.ErrAlreadyExists)
	}
	return fmt.Errorf("%s: %w", what, WrapUnavailable(err))
}

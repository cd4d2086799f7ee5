package sqlstore

import (
	"context"
	"errors"
	"testing"

	"gorm.io/gorm"

	"github.com/portcullis-auth/portcullis/store"
)

// TestScanOne: scanOne scans a statement's first row, leaves its
// destination alone and reports no row when there is none, and returns a
// failing statement's error, which the callbacks after the statement (the
// database metrics, metrics.InstrumentGORM) see as well.
func TestScanOne(t *testing.T) {
	for _, b := range migrationBackends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			s, seen := openSeeing(t, b.url(t))
			for _, tc := range []struct {
				name    string
				query   string
				args    []any
				want    int64
				found   bool
				wantErr bool
			}{
				{"one row", "SELECT 41 + ?", []any{1}, 42, true, false},
				{"the first of two rows", "SELECT 7 UNION ALL SELECT 8 ORDER BY 1", nil, 7, true, false},
				{"no row: the destination is left", "SELECT 1 WHERE 1 = 0", nil, -1, false, false},
				{"a failing statement", "SELECT count(*) FROM no_such_table", nil, -1, false, true},
			} {
				got := int64(-1)
				*seen = nil
				found, err := scanOne(s.DB().WithContext(ctx).Raw(tc.query, tc.args...), &got)
				if (err != nil) != tc.wantErr || got != tc.want || found != tc.found {
					t.Errorf("%s: %d, found %v, %v; want %d, found %v, an error %v", tc.name, got, found, err, tc.want, tc.found, tc.wantErr)
				}
				if (*seen != nil) != tc.wantErr {
					t.Errorf("%s: the callbacks saw %v, want an error %v", tc.name, *seen, tc.wantErr)
				}
			}
		})
	}
}

// TestAPIKeyLookupFailureIsCounted: a key nobody holds is store.ErrNotFound
// with nothing failed, while a lookup whose statement fails is an error that
// is not ErrNotFound, and the callbacks after the statement (the database
// metrics) see it: the lookup reads through scanOne, not Row().Scan.
func TestAPIKeyLookupFailureIsCounted(t *testing.T) {
	for _, b := range migrationBackends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			s, seen := openSeeing(t, b.url(t))
			_, err := s.GetAPIKeyByHash(ctx, []byte("no such key"))
			if !errors.Is(err, store.ErrNotFound) || *seen != nil {
				t.Fatalf("unknown key: %v, the callbacks saw %v; want ErrNotFound and nothing failed", err, *seen)
			}
			if err := s.DB().Exec("DROP TABLE api_keys").Error; err != nil {
				t.Fatal(err)
			}
			*seen = nil
			_, err = s.GetAPIKeyByHash(ctx, []byte("no such key"))
			if err == nil || errors.Is(err, store.ErrNotFound) {
				t.Fatalf("failing lookup: %v; want an error other than ErrNotFound", err)
			}
			if *seen == nil {
				t.Fatal("the callbacks did not see the failing lookup")
			}
		})
	}
}

// openSeeing opens and migrates a store on url, closed when the test ends,
// and returns with it where a callback after every row statement (where the
// database metrics read a statement's outcome) records that statement's
// error.
func openSeeing(t *testing.T, url string) (*Store, *error) {
	t.Helper()
	s, err := Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if _, err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	seen := new(error)
	if err := s.DB().Callback().Row().After("gorm:row").Register("test:seen", func(tx *gorm.DB) { *seen = tx.Error }); err != nil {
		t.Fatal(err)
	}
	return s, seen
}

// TestUnstorableTextFindsNothing: a value no row can hold (a NUL byte,
// invalid UTF-8) matches nothing on every backend: PostgreSQL refuses it
// with an error of its own (SQLSTATE 22021), which mapErr makes
// store.ErrNotFound, as SQLite's empty match is.
func TestUnstorableTextFindsNothing(t *testing.T) {
	for _, b := range migrationBackends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			s, _ := openSeeing(t, b.url(t))
			for _, id := range []string{"a\x00b", "\x00", "\xff"} {
				if err := s.DeleteClient(ctx, id); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("DeleteClient(%q): %v, want ErrNotFound", id, err)
				}
				if _, err := s.GetClient(ctx, id); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("GetClient(%q): %v, want ErrNotFound", id, err)
				}
			}
		})
	}
}

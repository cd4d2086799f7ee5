package sqlstore

import (
	"context"
	"testing"

	"gorm.io/gorm"
)

// TestScanOne: scanOne scans a statement's first row, leaves its
// destination alone when there is none, and returns a failing statement's
// error, which the callbacks after the statement (the database metrics,
// metrics.InstrumentGORM) see as well.
func TestScanOne(t *testing.T) {
	for _, b := range migrationBackends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			s, err := Open(ctx, b.url(t))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			var seen error
			if err := s.DB().Callback().Row().After("gorm:row").Register("test:seen", func(tx *gorm.DB) { seen = tx.Error }); err != nil {
				t.Fatal(err)
			}
			for _, tc := range []struct {
				name    string
				query   string
				args    []any
				want    int64
				wantErr bool
			}{
				{"one row", "SELECT 41 + ?", []any{1}, 42, false},
				{"the first of two rows", "SELECT 7 UNION ALL SELECT 8 ORDER BY 1", nil, 7, false},
				{"no row: the destination is left", "SELECT 1 WHERE 1 = 0", nil, -1, false},
				{"a failing statement", "SELECT count(*) FROM no_such_table", nil, -1, true},
			} {
				got := int64(-1)
				seen = nil
				err := scanOne(s.DB().WithContext(ctx).Raw(tc.query, tc.args...), &got)
				if (err != nil) != tc.wantErr || got != tc.want {
					t.Errorf("%s: %d, %v; want %d, an error %v", tc.name, got, err, tc.want, tc.wantErr)
				}
				if (seen != nil) != tc.wantErr {
					t.Errorf("%s: the callbacks saw %v, want an error %v", tc.name, seen, tc.wantErr)
				}
			}
		})
	}
}

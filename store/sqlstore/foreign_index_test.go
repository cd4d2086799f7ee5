package sqlstore_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"gorm.io/gorm"

	"github.com/portcullis-auth/portcullis/store"
)

// TestAnyForeignPasswordHashReadsItsIndex: the statement of
// AnyForeignPasswordHash (as issued, captured from GORM) is answered by the
// partial index of the marked users (migration 27), never by reading the
// users table: on PostgreSQL its plan, with enable_seqscan off, names the
// index and has no Seq Scan; on SQLite EXPLAIN QUERY PLAN reads the index.
// It answers true while a user is marked and false once none is.
func TestAnyForeignPasswordHashReadsItsIndex(t *testing.T) {
	const index = "users_password_hash_foreign_idx"
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s := open(t, b.url(t))
			c := testCtx(t)
			if _, err := s.Migrate(c); err != nil {
				t.Fatalf("Migrate: %v", err)
			}
			if err := s.SyncRoles(c, []store.Role{{Name: "user", Level: 10, Description: "a user"}}); err != nil {
				t.Fatalf("SyncRoles: %v", err)
			}
			for i, marked := range []bool{false, true, false} {
				u := &store.User{Email: fmt.Sprintf("u%d@example.com", i), PasswordHash: "$h", PasswordHashForeign: marked,
					Active: true, Roles: []string{"user"}}
				if err := s.CreateUser(c, u); err != nil {
					t.Fatalf("CreateUser: %v", err)
				}
			}
			var (
				mu   sync.Mutex
				seen []string
			)
			err := s.DB().Callback().Row().Before("gorm:row").Register("test:foreign_selects", func(db *gorm.DB) {
				if sql := db.Statement.SQL.String(); strings.Contains(sql, "password_hash_foreign") {
					mu.Lock()
					seen = append(seen, sql)
					mu.Unlock()
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			marked, err := s.AnyForeignPasswordHash(c)
			if rerr := s.DB().Callback().Row().Remove("test:foreign_selects"); rerr != nil {
				t.Fatal(rerr)
			}
			if err != nil || !marked {
				t.Fatalf("AnyForeignPasswordHash with a marked user = %v, %v; want true", marked, err)
			}
			if len(seen) != 1 {
				t.Fatalf("AnyForeignPasswordHash issued %q, want one statement", seen)
			}
			conn, explain := planConn(t, c, s, b.name == "postgres")
			text := queryPlan(t, c, conn, explain+seen[0])
			if !strings.Contains(text, index) || strings.Contains(text, "Seq Scan") || strings.Contains(text, "SCAN users\n") ||
				strings.HasSuffix(text, "SCAN users") {
				t.Errorf("%q reads\n%s\nwant the index %s", seen[0], text, index)
			}
			t.Logf("%s plan:\n%s", b.name, text)
			if err := s.DB().Exec("UPDATE users SET password_hash_foreign = false WHERE password_hash_foreign").Error; err != nil {
				t.Fatal(err)
			}
			if marked, err := s.AnyForeignPasswordHash(c); err != nil || marked {
				t.Fatalf("AnyForeignPasswordHash with no marked user = %v, %v; want false", marked, err)
			}
		})
	}
}

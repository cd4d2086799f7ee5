package sqlstore_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
)

// TestPurgeOneTimeLinks: the periodic purge of the relational store
// deletes reset and verification links once both their expiry and their
// use are store.UserTokenKeptFor in the past, and invites, whatever their
// status, store.InviteKeptFor past their expiry; what it keeps answers its
// redemption as before (used, revoked, expired), and invites it keeps stay
// listed. Each step deletes at most the batch. Found by a review: nothing
// ever deleted these rows (a reset-token row per accepted forgot-password
// request, kept for good with the user's id; invites with the invitee's
// address).
func TestPurgeOneTimeLinks(t *testing.T) {
	tokenKept, inviteKept := store.UserTokenKeptFor, store.InviteKeptFor
	type tokenCase struct {
		name    string
		expires time.Duration // from now
		usedAt  *time.Duration
		gone    bool
		want    error // ConsumeUserToken's answer at now when kept
	}
	at := func(d time.Duration) *time.Duration { return &d }
	tokens := []tokenCase{
		{name: "unused, expired past retention", expires: -tokenKept - time.Second, gone: true},
		{name: "unused, expired at the bound", expires: -tokenKept, gone: true},
		{name: "used, both past retention", expires: -tokenKept - time.Hour, usedAt: at(-tokenKept - 2*time.Hour), gone: true},
		{name: "voided after expiry, both past retention", expires: -tokenKept - time.Hour, usedAt: at(-tokenKept - time.Minute), gone: true},
		{name: "unused, expired inside retention", expires: -tokenKept + time.Minute, want: store.ErrTokenExpired},
		{name: "used long ago, link still live", expires: time.Hour, usedAt: at(-tokenKept - time.Hour), want: store.ErrTokenUsed},
		{name: "voided after expiry, inside retention", expires: -tokenKept - time.Hour, usedAt: at(-time.Hour), want: store.ErrTokenUsed},
		{name: "live", expires: time.Hour},
	}
	type inviteCase struct {
		name    string
		expires time.Duration // from now
		status  store.InviteStatus
		gone    bool
		want    error // AcceptInvite's answer at now when kept
	}
	invites := []inviteCase{
		{name: "pending, expired past retention", expires: -inviteKept - time.Second, status: store.InvitePending, gone: true},
		{name: "pending, expired at the bound", expires: -inviteKept, status: store.InvitePending, gone: true},
		{name: "accepted, past retention", expires: -inviteKept - time.Hour, status: store.InviteAccepted, gone: true},
		{name: "revoked, past retention", expires: -inviteKept - time.Hour, status: store.InviteRevoked, gone: true},
		{name: "superseded, past retention", expires: -inviteKept - time.Hour, status: store.InviteSuperseded, gone: true},
		{name: "pending, expired inside retention", expires: -inviteKept + time.Minute, status: store.InvitePending, want: store.ErrTokenExpired},
		{name: "accepted, inside retention", expires: -inviteKept + time.Hour, status: store.InviteAccepted, want: store.ErrTokenUsed},
		{name: "revoked, not expired", expires: time.Hour, status: store.InviteRevoked, want: store.ErrTokenRevoked},
		{name: "superseded, expired inside retention", expires: -time.Hour, status: store.InviteSuperseded, want: store.ErrTokenUsed},
		{name: "pending, live", expires: time.Hour, status: store.InvitePending},
	}
	var goneTokens, goneInvites int64
	for _, tc := range tokens {
		if tc.gone {
			goneTokens++
		}
	}
	for _, ic := range invites {
		if ic.gone {
			goneInvites++
		}
	}
	for _, b := range backends {
		for _, batch := range []int{1, 3, 0} { // 0: sqlstore.DefaultPurgeBatch
			t.Run(fmt.Sprintf("%s/batch_%d", b.name, batch), func(t *testing.T) {
				s := open(t, b.url(t))
				c := testCtx(t)
				if _, err := s.Migrate(c); err != nil {
					t.Fatalf("Migrate: %v", err)
				}
				if batch > 0 {
					sqlstore.SetPurgeBatch(s, batch)
				}
				if err := s.SyncRoles(c, []store.Role{{Name: "user", Level: 10, Description: "a user"}}); err != nil {
					t.Fatalf("SyncRoles: %v", err)
				}
				now := time.Now().UTC()
				u := &store.User{Email: "olga@example.com", Name: "Olga", PasswordHash: "$h", Active: true, Roles: []string{"user"}}
				if err := s.CreateUser(c, u); err != nil {
					t.Fatalf("CreateUser: %v", err)
				}

				tokenHashes := make([][]byte, len(tokens))
				for i, tc := range tokens {
					tokenHashes[i] = randomHash(t)
					tok := &store.UserToken{UserID: u.ID, Purpose: store.PurposePasswordReset, TokenHash: tokenHashes[i], ExpiresAt: now.Add(tc.expires)}
					if err := s.CreateUserToken(c, tok); err != nil {
						t.Fatalf("%s: CreateUserToken: %v", tc.name, err)
					}
					if tc.usedAt == nil {
						continue
					}
					if *tc.usedAt < tc.expires { // redeemed while live
						if _, err := s.ConsumeUserToken(c, store.PurposePasswordReset, tokenHashes[i], now.Add(*tc.usedAt), nil); err != nil {
							t.Fatalf("%s: ConsumeUserToken: %v", tc.name, err)
						}
						continue
					}
					// Voided (a password change) or superseded after its expiry.
					if err := s.DB().Table("user_tokens").Where("id = ?", tok.ID).Update("used_at", now.Add(*tc.usedAt)).Error; err != nil {
						t.Fatalf("%s: void: %v", tc.name, err)
					}
				}

				inviteHashes := make([][]byte, len(invites))
				inviteIDs := make([]string, len(invites))
				for i, ic := range invites {
					inviteHashes[i] = randomHash(t)
					inv := &store.Invite{Email: fmt.Sprintf("invitee%d@example.com", i), Role: "user", TokenHash: inviteHashes[i],
						InvitedBy: u.ID, ExpiresAt: now.Add(ic.expires)}
					if err := s.CreateInvite(c, inv, nil); err != nil {
						t.Fatalf("%s: CreateInvite: %v", ic.name, err)
					}
					inviteIDs[i] = inv.ID
					var err error
					switch ic.status {
					case store.InviteAccepted:
						_, err = s.AcceptInvite(c, inviteHashes[i], now.Add(ic.expires-time.Minute), &store.User{PasswordHash: "$h"})
					case store.InviteRevoked:
						err = s.RevokeInvite(c, inv.ID)
					case store.InviteSuperseded:
						err = s.DB().Table("invites").Where("id = ?", inv.ID).Update("status", string(store.InviteSuperseded)).Error
					}
					if err != nil {
						t.Fatalf("%s: make it %s: %v", ic.name, ic.status, err)
					}
				}

				// Every DELETE a step runs removes at most the batch.
				var mu sync.Mutex
				deletes := map[string][]int64{}
				err := s.DB().Callback().Raw().After("gorm:raw").Register("test:purge_deletes", func(db *gorm.DB) {
					sql := db.Statement.SQL.String()
					for _, table := range []string{"user_tokens", "invites"} {
						if strings.HasPrefix(sql, "DELETE FROM "+table+" ") {
							mu.Lock()
							deletes[table] = append(deletes[table], db.RowsAffected)
							mu.Unlock()
						}
					}
				})
				if err != nil {
					t.Fatal(err)
				}

				pr, err := s.Purge(c, now)
				want := sqlstore.PurgeResult{UserTokens: goneTokens, Invites: goneInvites}
				if err != nil {
					t.Fatalf("Purge: %v", err)
				}
				if pr != want {
					t.Errorf("Purge = %+v; want %+v", pr, want)
				}
				size := batch
				if size == 0 {
					size = sqlstore.DefaultPurgeBatch
				}
				for table, wantSum := range map[string]int64{"user_tokens": goneTokens, "invites": goneInvites} {
					ns := deletes[table]
					var sum int64
					for _, n := range ns {
						if n > int64(size) {
							t.Errorf("%s: a step deleted %d rows, batch %d", table, n, size)
						}
						sum += n
					}
					if sum != wantSum {
						t.Errorf("%s: the steps seen deleted %d rows, want %d", table, sum, wantSum)
					}
					if min := (sum + int64(size) - 1) / int64(size); int64(len(ns)) < min {
						t.Errorf("%s: %d rows in %d steps, batch %d", table, sum, len(ns), size)
					}
				}

				for i, tc := range tokens {
					_, err := s.ConsumeUserToken(c, store.PurposePasswordReset, tokenHashes[i], now, nil)
					want := tc.want
					if tc.gone {
						want = store.ErrNotFound
					}
					if want == nil && err != nil || want != nil && !errors.Is(err, want) {
						t.Errorf("token %q after the purge: %v, want %v", tc.name, err, want)
					}
				}
				page, err := s.ListInvites(c, "", 200)
				if err != nil {
					t.Fatalf("ListInvites: %v", err)
				}
				listed := map[string]bool{}
				for _, inv := range page.Items {
					listed[inv.ID] = true
				}
				for i, ic := range invites {
					if listed[inviteIDs[i]] == ic.gone {
						t.Errorf("invite %q: listed %v after the purge, want %v", ic.name, listed[inviteIDs[i]], !ic.gone)
					}
					_, err := s.AcceptInvite(c, inviteHashes[i], now, &store.User{PasswordHash: "$h"})
					want := ic.want
					if ic.gone {
						want = store.ErrNotFound
					}
					if want == nil && err != nil || want != nil && !errors.Is(err, want) {
						t.Errorf("invite %q after the purge: %v, want %v", ic.name, err, want)
					}
				}

				if pr, err := s.Purge(c, now); err != nil || pr != (sqlstore.PurgeResult{}) {
					t.Fatalf("second Purge = %+v, %v; want nothing", pr, err)
				}
			})
		}
	}
}

func randomHash(t *testing.T) []byte {
	t.Helper()
	h := make([]byte, 32)
	if _, err := rand.Read(h); err != nil {
		t.Fatal(err)
	}
	return h
}

// TestPurgeAPIKeys: the periodic purge of the relational store deletes an
// API key store.APIKeyKeptFor after its revocation, or after its expiry
// when it was never revoked; until then it stays listed and found by its
// hash (a presented revoked key is audited as revoked). The purge result
// counts it, each step deletes at most the batch, and the owner stays.
// Found by a review: revoked and expired keys were never purged, so
// creating and revoking keys in a loop grew api_keys without end.
func TestPurgeAPIKeys(t *testing.T) {
	kept := store.APIKeyKeptFor
	at := func(d time.Duration) *time.Duration { return &d }
	keys := []struct {
		name    string
		expires time.Duration  // from now
		revoked *time.Duration // from now
		gone    bool
	}{
		{name: "revoked 31 days ago", expires: time.Hour, revoked: at(-kept - 24*time.Hour), gone: true},
		{name: "revoked at the bound", expires: time.Hour, revoked: at(-kept), gone: true},
		{name: "revoked 29 days ago", expires: time.Hour, revoked: at(-kept + 24*time.Hour)},
		{name: "expired 31 days ago", expires: -kept - 24*time.Hour, gone: true},
		{name: "expired at the bound", expires: -kept, gone: true},
		{name: "expired 29 days ago", expires: -kept + 24*time.Hour},
		{name: "expired 31 days ago, revoked after its expiry 29 days ago", expires: -kept - 24*time.Hour, revoked: at(-kept + 24*time.Hour)},
		{name: "revoked 31 days ago, expired 29 days ago", expires: -kept + 24*time.Hour, revoked: at(-kept - 24*time.Hour), gone: true},
		{name: "live", expires: time.Hour},
	}
	var wantGone int64
	for _, k := range keys {
		if k.gone {
			wantGone++
		}
	}
	for _, b := range backends {
		for _, batch := range []int{1, 3, 0} { // 0: sqlstore.DefaultPurgeBatch
			t.Run(fmt.Sprintf("%s/batch_%d", b.name, batch), func(t *testing.T) {
				s := open(t, b.url(t))
				c := testCtx(t)
				if _, err := s.Migrate(c); err != nil {
					t.Fatalf("Migrate: %v", err)
				}
				if batch > 0 {
					sqlstore.SetPurgeBatch(s, batch)
				}
				if err := s.SyncRoles(c, []store.Role{{Name: "user", Level: 10, Description: "a user"}}); err != nil {
					t.Fatalf("SyncRoles: %v", err)
				}
				now := time.Now().UTC()
				u := &store.User{Email: "olga@example.com", Name: "Olga", PasswordHash: "$h", Active: true, Roles: []string{"user"}}
				if err := s.CreateUser(c, u); err != nil {
					t.Fatalf("CreateUser: %v", err)
				}
				hashes := make([][]byte, len(keys))
				ids := make([]string, len(keys))
				for i, kc := range keys {
					hashes[i] = randomHash(t)
					k := &store.APIKey{OwnerID: u.ID, Name: kc.name, Hint: "pk_hint", Hash: hashes[i], Scopes: []string{"profile"},
						ExpiresAt: now.Add(kc.expires), CreatedBy: u.ID}
					if err := s.CreateAPIKey(c, k); err != nil {
						t.Fatalf("%s: CreateAPIKey: %v", kc.name, err)
					}
					ids[i] = k.ID
					if kc.revoked != nil {
						if _, changed, err := s.RevokeAPIKey(c, u.ID, k.ID, u.ID, now.Add(*kc.revoked)); err != nil || !changed {
							t.Fatalf("%s: RevokeAPIKey = %v, %v", kc.name, changed, err)
						}
					}
				}

				var mu sync.Mutex
				var deletes []int64
				err := s.DB().Callback().Raw().After("gorm:raw").Register("test:purge_deletes", func(db *gorm.DB) {
					if strings.HasPrefix(db.Statement.SQL.String(), "DELETE FROM api_keys ") {
						mu.Lock()
						deletes = append(deletes, db.RowsAffected)
						mu.Unlock()
					}
				})
				if err != nil {
					t.Fatal(err)
				}

				pr, err := s.Purge(c, now)
				if err != nil {
					t.Fatalf("Purge: %v", err)
				}
				if want := (sqlstore.PurgeResult{APIKeys: wantGone}); pr != want {
					t.Errorf("Purge = %+v; want %+v", pr, want)
				}
				size := int64(batch)
				if size == 0 {
					size = sqlstore.DefaultPurgeBatch
				}
				var sum int64
				for _, n := range deletes {
					if n > size {
						t.Errorf("a step deleted %d keys, batch %d", n, size)
					}
					sum += n
				}
				if sum != wantGone {
					t.Errorf("the steps seen deleted %d keys, want %d", sum, wantGone)
				}

				page, err := s.ListAPIKeys(c, u.ID, "", 200)
				if err != nil {
					t.Fatalf("ListAPIKeys: %v", err)
				}
				listed := map[string]bool{}
				for _, k := range page.Items {
					listed[k.ID] = true
				}
				for i, kc := range keys {
					if listed[ids[i]] == kc.gone {
						t.Errorf("key %q: listed %v after the purge, want %v", kc.name, listed[ids[i]], !kc.gone)
					}
					k, err := s.GetAPIKeyByHash(c, hashes[i])
					switch {
					case kc.gone && !errors.Is(err, store.ErrNotFound):
						t.Errorf("key %q after the purge: %s, %v; want ErrNotFound", kc.name, k.ID, err)
					case !kc.gone && (err != nil || k.Revoked() != (kc.revoked != nil)):
						t.Errorf("key %q after the purge: %s revoked %v, %v; want it kept, revoked %v", kc.name, k.ID, k.Revoked(), err, kc.revoked != nil)
					}
				}
				if _, _, err := s.FindLiveAPIKey(c, hashes[len(keys)-1]); err != nil {
					t.Errorf("the live key after the purge: %v", err)
				}
				if got, err := s.GetUser(c, u.ID); err != nil || got.ID != u.ID {
					t.Errorf("the owner after the purge: %v", err)
				}

				if pr, err := s.Purge(c, now); err != nil || pr != (sqlstore.PurgeResult{}) {
					t.Fatalf("second Purge = %+v, %v; want nothing", pr, err)
				}
			})
		}
	}
}

// TestPurgeReadsByExpiryIndex: every SELECT the relational purge issues to
// find its rows (user tokens, invites, API keys; the first batch and the
// ones after) is answered by an index of the expiry (or revocation) its
// condition bounds, never by reading the whole table: on PostgreSQL the
// plan of the exact statement, with vars, names the index and has no Seq
// Scan with enable_seqscan off; on SQLite EXPLAIN QUERY PLAN searches the
// index. Found by a review: the purge walked these tables by id, so every
// run (every 5 minutes) read every row.
func TestPurgeReadsByExpiryIndex(t *testing.T) {
	indexes := map[string][]string{
		"user_tokens": {"user_tokens_expires_idx"},
		"invites":     {"invites_expires_idx"},
		"api_keys":    {"api_keys_expires_idx", "api_keys_revoked_idx"},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s := open(t, b.url(t))
			c := testCtx(t)
			if _, err := s.Migrate(c); err != nil {
				t.Fatalf("Migrate: %v", err)
			}
			sqlstore.SetPurgeBatch(s, 1) // a first batch and later ones
			if err := s.SyncRoles(c, []store.Role{{Name: "user", Level: 10, Description: "a user"}}); err != nil {
				t.Fatalf("SyncRoles: %v", err)
			}
			now := time.Now().UTC()
			u := &store.User{Email: "olga@example.com", Name: "Olga", PasswordHash: "$h", Active: true, Roles: []string{"user"}}
			if err := s.CreateUser(c, u); err != nil {
				t.Fatalf("CreateUser: %v", err)
			}
			old := -90 * 24 * time.Hour
			for i := range 3 {
				if err := s.CreateUserToken(c, &store.UserToken{UserID: u.ID, Purpose: store.PurposePasswordReset,
					TokenHash: randomHash(t), ExpiresAt: now.Add(old)}); err != nil {
					t.Fatalf("CreateUserToken: %v", err)
				}
				if err := s.CreateInvite(c, &store.Invite{Email: fmt.Sprintf("invitee%d@example.com", i), Role: "user",
					TokenHash: randomHash(t), InvitedBy: u.ID, ExpiresAt: now.Add(old)}, nil); err != nil {
					t.Fatalf("CreateInvite: %v", err)
				}
				for _, revoke := range []bool{false, true} {
					k := &store.APIKey{OwnerID: u.ID, Name: "k", Hint: "pk_hint", Hash: randomHash(t), Scopes: []string{},
						ExpiresAt: now.Add(old), CreatedBy: u.ID}
					if revoke {
						k.ExpiresAt = now.Add(time.Hour)
					}
					if err := s.CreateAPIKey(c, k); err != nil {
						t.Fatalf("CreateAPIKey: %v", err)
					}
					if revoke {
						if _, _, err := s.RevokeAPIKey(c, u.ID, k.ID, u.ID, now.Add(old)); err != nil {
							t.Fatalf("RevokeAPIKey: %v", err)
						}
					}
				}
			}

			type query struct {
				sql  string
				vars []any
			}
			var (
				mu   sync.Mutex
				seen = map[string][]query{}
			)
			err := s.DB().Callback().Row().Before("gorm:row").Register("test:purge_selects", func(db *gorm.DB) {
				sql := db.Statement.SQL.String()
				for table := range indexes {
					if strings.HasPrefix(sql, "SELECT ") && strings.Contains(sql, " FROM "+table+" ") && strings.Contains(sql, " LIMIT ") {
						mu.Lock()
						seen[table] = append(seen[table], query{sql, append([]any(nil), db.Statement.Vars...)})
						mu.Unlock()
					}
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Purge(c, now); err != nil {
				t.Fatalf("Purge: %v", err)
			}
			if err := s.DB().Callback().Row().Remove("test:purge_selects"); err != nil {
				t.Fatal(err)
			}

			conn, explain := planConn(t, c, s, b.name == "postgres")
			for table, names := range indexes {
				qs := seen[table]
				if len(qs) < 2 {
					t.Fatalf("%s: the purge issued %d SELECTs, want a first batch and later ones", table, len(qs))
				}
				used := map[string]bool{}
				for _, q := range qs {
					text := queryPlan(t, c, conn, explain+q.sql, q.vars...)
					ok := false
					for _, name := range names {
						if strings.Contains(text, "INDEX "+name+" ") || strings.Contains(text, "using "+name+" ") ||
							strings.HasSuffix(text, "INDEX "+name) {
							ok, used[name] = true, true
						}
					}
					if !ok || strings.Contains(text, "Seq Scan") || strings.HasPrefix(text, "SCAN ") || strings.Contains(text, "\nSCAN ") {
						t.Errorf("%s: the purge's %q (vars %v) reads\n%s\nwant an index scan of one of %v", table, q.sql, q.vars, text, names)
					}
				}
				for _, name := range names {
					if !used[name] {
						t.Errorf("%s: no SELECT of the purge used %s", table, name)
					}
				}
			}
		})
	}
}

// planConn is a connection of s for reading plans (queryPlan), closed
// when t ends, and the EXPLAIN prefix of its database; on PostgreSQL it
// turns sequential scans off, so a plan names the index a statement can
// use whatever the table's size.
func planConn(t *testing.T, ctx context.Context, s *sqlstore.Store, postgres bool) (*sql.Conn, string) {
	t.Helper()
	sqlDB, err := s.DB().DB()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := sqlDB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if !postgres {
		return conn, "EXPLAIN QUERY PLAN "
	}
	if _, err := conn.ExecContext(ctx, "SET enable_seqscan = off"); err != nil {
		t.Fatal(err)
	}
	return conn, "EXPLAIN "
}

// queryPlan runs explain (an EXPLAIN or EXPLAIN QUERY PLAN of a statement,
// with its arguments) on conn and returns the plan's lines, the last
// column of each row, joined by newlines.
func queryPlan(t *testing.T, ctx context.Context, conn *sql.Conn, explain string, args ...any) string {
	t.Helper()
	rows, err := conn.QueryContext(ctx, explain, args...)
	if err != nil {
		t.Fatalf("%q: %v", explain, err)
	}
	var plan []string
	for rows.Next() {
		cols, _ := rows.Columns()
		dest := make([]any, len(cols))
		for i := range dest {
			dest[i] = new(any)
		}
		if err := rows.Scan(dest...); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, fmt.Sprint(*dest[len(dest)-1].(*any)))
	}
	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(plan, "\n")
}

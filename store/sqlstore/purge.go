package sqlstore

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/portcullis-auth/portcullis/store"
)

// DefaultPurgeBatch is how many rows one step of a purge (Store.Purge,
// sqlstate.State.Purge) deletes or clears. A step of this size holds
// SQLite's write lock for milliseconds (a review measured a purge of
// 400,000 single-use records in one transaction: 23.6 s, every other
// write failing with SQLITE_BUSY).
const DefaultPurgeBatch = 500

// InBatches runs batch (which reports what it changed and whether more may
// be left) until nothing is left, resting after each batch for as long as
// it took so that other writers find the database free half the time. It
// returns the total batch reported; on an error (or ctx's end) what was
// done until then, with the error.
func InBatches(ctx context.Context, batch func() (n int64, more bool, err error)) (int64, error) {
	var total int64
	for {
		start := time.Now()
		n, more, err := batch()
		total += n
		if err != nil || !more {
			return total, err
		}
		rest := time.NewTimer(time.Since(start))
		select {
		case <-ctx.Done():
			rest.Stop()
			return total, ctx.Err()
		case <-rest.C:
		}
	}
}

// PurgeByID runs step on the ids of table's rows that match cond (args
// its arguments), size ids at a time in the order of id, each batch in one
// transaction of db (InBatches): for a condition no index answers, each
// batch reads on from where the last one ended instead of reading again
// the rows it kept. step must check cond again (a row may have changed
// since it was read) and reports how many rows it changed.
func PurgeByID(ctx context.Context, db *gorm.DB, size int, table, cond string, args []any,
	step func(tx *gorm.DB, ids []string) (int64, error)) (int64, error) {
	q := "SELECT id FROM " + table + " WHERE id > ? AND (" + cond + ") ORDER BY id LIMIT ?"
	after := ""
	return InBatches(ctx, func() (int64, bool, error) {
		var ids []string
		if err := db.WithContext(ctx).Raw(q, append(append([]any{after}, args...), size)...).Scan(&ids).Error; err != nil {
			return 0, false, err
		}
		if len(ids) == 0 {
			return 0, false, nil
		}
		var n int64
		err := RunInTx(ctx, db, func(tx *gorm.DB) error {
			var err error
			n, err = step(tx, ids)
			return err
		})
		after = ids[len(ids)-1]
		return n, len(ids) == size, err
	})
}

// PurgeResult counts what Store.Purge deleted.
type PurgeResult struct {
	UserTokens int64 // one-time links past their expiry and use by store.UserTokenKeptFor
	Invites    int64 // invites past their expiry by store.InviteKeptFor
	APIKeys    int64 // API keys past their revocation, or expiry, by store.APIKeyKeptFor
}

// userTokenGone is the condition of a user token Purge deletes (its two
// arguments: now less store.UserTokenKeptFor, twice): past its expiry and,
// when used, superseded or voided, past that too. Every token has an
// expiry, so one never used goes once it has expired.
const userTokenGone = "expires_at <= ? AND (used_at IS NULL OR used_at <= ?)"

// inviteGone is the condition of an invite Purge deletes (its argument:
// now less store.InviteKeptFor): past its expiry, whatever its status.
const inviteGone = "expires_at <= ?"

// apiKeyGone is the condition of an API key Purge deletes (its two
// arguments: now less store.APIKeyKeptFor, twice): revoked that long ago
// or, never revoked, expired that long ago. A key revoked after its expiry
// is kept for as long after its revocation, which its audit trail names.
const apiKeyGone = "revoked_at <= ? OR (revoked_at IS NULL AND expires_at <= ?)"

// Purge deletes the one-time records of the relational store that can no
// longer matter at now: user tokens (reset and verification links)
// store.UserTokenKeptFor past both their expiry and their use, and
// invites (pending, accepted, revoked or superseded) store.InviteKeptFor
// past their expiry, and API keys store.APIKeyKeptFor past their
// revocation or, never revoked, their expiry. Until then each answers its
// redemption as before (used, revoked, expired), and an invite or a key
// stays listed; nothing refers to a key's row (no foreign key, and audit
// events name it by id as text), so its delete orphans nothing. Run it periodically
// beside sqlstate.State.Purge; it is safe on many instances.
//
// It works as sqlstate.State.Purge does: steps of DefaultPurgeBatch rows,
// each its own short transaction, resting between steps as long as the
// last one took (InBatches). On an error (or ctx's end) it returns what it
// had done until then with the error; what it left, the next run does.
func (s *Store) Purge(ctx context.Context, now time.Time) (PurgeResult, error) {
	var pr PurgeResult
	tokensBefore := dbTime(now.Add(-store.UserTokenKeptFor))
	invitesBefore := dbTime(now.Add(-store.InviteKeptFor))
	keysBefore := dbTime(now.Add(-store.APIKeyKeptFor))
	steps := []struct {
		what string
		n    *int64
		run  func() (int64, error)
	}{
		{"purge user tokens", &pr.UserTokens, func() (int64, error) {
			return s.purgeWhere(ctx, "user_tokens", userTokenGone, tokensBefore, tokensBefore)
		}},
		{"purge invites", &pr.Invites, func() (int64, error) {
			return s.purgeWhere(ctx, "invites", inviteGone, invitesBefore)
		}},
		{"purge API keys", &pr.APIKeys, func() (int64, error) {
			return s.purgeWhere(ctx, "api_keys", apiKeyGone, keysBefore, keysBefore)
		}},
	}
	for _, st := range steps {
		n, err := st.run()
		*st.n = n
		if err != nil {
			return pr, mapErr(st.what, err)
		}
	}
	return pr, nil
}

// purgeWhere deletes table's rows that match cond (args its arguments), a
// batch at a time by id (PurgeByID), checking cond again in the delete.
func (s *Store) purgeWhere(ctx context.Context, table, cond string, args ...any) (int64, error) {
	del := fmt.Sprintf("DELETE FROM %s WHERE id IN ? AND (%s)", table, cond)
	return PurgeByID(ctx, s.db, s.purgeBatchSize(), table, cond, args, func(tx *gorm.DB, ids []string) (int64, error) {
		res := tx.Exec(del, append([]any{ids}, args...)...)
		return res.RowsAffected, res.Error
	})
}

// purgeBatchSize is how many rows one step of Purge deletes.
func (s *Store) purgeBatchSize() int {
	if s.purgeBatch > 0 {
		return s.purgeBatch
	}
	return DefaultPurgeBatch
}

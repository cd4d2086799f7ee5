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
// since it was read) and reports how many rows it changed. It is
// PurgeInOrder without a key.
func PurgeByID(ctx context.Context, db *gorm.DB, size int, table, cond string, args []any,
	step func(tx *gorm.DB, ids []string) (int64, error)) (int64, error) {
	return PurgeInOrder(ctx, db, size, table, "", cond, args, step)
}

// PurgeInOrder runs step on the ids of table's rows that match cond (args
// its arguments), size ids at a time in the order of (key, id), or of id
// when key is "", each batch in one transaction of db (InBatches). Each
// batch reads on from where the last one ended ((key, id) > the last
// batch's last, a row-value comparison both databases answer from an
// index), so with an index on (key, id) and a cond that bounds key from
// above (key <= a bound) every batch reads the index from there to the
// bound, never the whole table nor again the rows it kept. step must check
// cond again (a row may have changed since it was read) and reports how
// many rows it changed.
func PurgeInOrder(ctx context.Context, db *gorm.DB, size int, table, key, cond string, args []any,
	step func(tx *gorm.DB, ids []string) (int64, error)) (int64, error) {
	order, pos := "id", "id > ?"
	if key != "" {
		order, pos = key+", id", "("+key+", id) > (?, ?)"
	}
	first := "SELECT " + order + " FROM " + table + " WHERE (" + cond + ") ORDER BY " + order + " LIMIT ?"
	next := "SELECT " + order + " FROM " + table + " WHERE " + pos + " AND (" + cond + ") ORDER BY " + order + " LIMIT ?"
	var after []any // the last row read: its key (when ordered by one) and id
	return InBatches(ctx, func() (int64, bool, error) {
		q, qargs := first, append(append([]any{}, args...), size)
		if after != nil {
			q, qargs = next, append(append(append([]any{}, after...), args...), size)
		}
		ids, last, err := readPurgeBatch(db.WithContext(ctx).Raw(q, qargs...), key != "")
		if err != nil || len(ids) == 0 {
			return 0, false, err
		}
		var n int64
		err = RunInTx(ctx, db, func(tx *gorm.DB) error {
			var err error
			n, err = step(tx, ids)
			return err
		})
		after = last
		return n, len(ids) == size, err
	})
}

// readPurgeBatch reads the ids q (a SELECT of PurgeInOrder: the key, when
// keyed, then id) finds, and the position of the last one: its key and id,
// or its id alone.
func readPurgeBatch(q *gorm.DB, keyed bool) (ids []string, last []any, err error) {
	rows, err := q.Rows()
	if err != nil {
		return nil, nil, fmt.Errorf("find rows to purge: %w", err)
	}
	defer rows.Close()
	var (
		id string
		k  any
	)
	for rows.Next() {
		dest := []any{&id}
		if keyed {
			dest = []any{&k, &id}
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, nil, fmt.Errorf("read a row to purge: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("find rows to purge: %w", err)
	}
	if len(ids) == 0 {
		return nil, nil, nil
	}
	if keyed {
		return ids, []any{k, id}, nil
	}
	return ids, []any{id}, nil
}

// PurgeResult counts what Store.Purge deleted.
type PurgeResult struct {
	UserTokens int64 // one-time links past their expiry and use by store.UserTokenKeptFor
	Invites    int64 // invites past their expiry by store.InviteKeptFor
	APIKeys    int64 // API keys past their revocation, or expiry, by store.APIKeyKeptFor
	// RetiredClientNames are the names deleted clients left retired whose
	// retirement (DeleteClient) has ended.
	RetiredClientNames int64
}

// userTokenGone is the condition of a user token Purge deletes (its two
// arguments: now less store.UserTokenKeptFor, twice): past its expiry and,
// when used, superseded or voided, past that too. Every token has an
// expiry, so one never used goes once it has expired.
const userTokenGone = "expires_at <= ? AND (used_at IS NULL OR used_at <= ?)"

// inviteGone is the condition of an invite Purge deletes (its argument:
// now less store.InviteKeptFor): past its expiry, whatever its status.
const inviteGone = "expires_at <= ?"

// apiKeyRevokedGone and apiKeyExpiredGone are the conditions of an API
// key Purge deletes (the argument of each: now less store.APIKeyKeptFor):
// revoked that long ago or, never revoked, expired that long ago. A key
// revoked after its expiry is kept for as long after its revocation, which
// its audit trail names. Two conditions, so that an index answers each
// (api_keys_revoked_idx, api_keys_expires_idx).
const (
	apiKeyRevokedGone = "revoked_at <= ?"
	apiKeyExpiredGone = "revoked_at IS NULL AND expires_at <= ?"
)

// retiredNameGone is the condition of a retired client name Purge deletes
// (its argument: now): its retirement has ended, so no token of the
// deleted client it names is live, and CreateClient's check no longer
// reads it.
const retiredNameGone = "retired_until <= ?"

// Purge deletes the one-time records of the relational store that can no
// longer matter at now: user tokens (reset and verification links)
// store.UserTokenKeptFor past both their expiry and their use, and
// invites (pending, accepted, revoked or superseded) store.InviteKeptFor
// past their expiry, API keys store.APIKeyKeptFor past their
// revocation or, never revoked, their expiry, and the names deleted clients
// left retired (DeleteClient) once their retirement has ended. Until then each answers its
// redemption as before (used, revoked, expired), and an invite or a key
// stays listed; nothing refers to a key's row (no foreign key, and audit
// events name it by id as text), so its delete orphans nothing. Run it periodically
// beside sqlstate.State.Purge; it is safe on many instances.
//
// It reads each table from an index of the expiry or revocation its
// condition bounds (migrations 25 and 26), and works as sqlstate.State.Purge
// does: steps of DefaultPurgeBatch rows,
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
			return s.purgeWhere(ctx, "user_tokens", "expires_at", userTokenGone, tokensBefore, tokensBefore)
		}},
		{"purge invites", &pr.Invites, func() (int64, error) {
			return s.purgeWhere(ctx, "invites", "expires_at", inviteGone, invitesBefore)
		}},
		{"purge API keys", &pr.APIKeys, func() (int64, error) {
			revoked, err := s.purgeWhere(ctx, "api_keys", "revoked_at", apiKeyRevokedGone, keysBefore)
			if err != nil {
				return revoked, err
			}
			expired, err := s.purgeWhere(ctx, "api_keys", "expires_at", apiKeyExpiredGone, keysBefore)
			return revoked + expired, err
		}},
		{"purge retired client names", &pr.RetiredClientNames, func() (int64, error) {
			return s.purgeWhere(ctx, "retired_client_names", "retired_until", retiredNameGone, dbTime(now))
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
// batch at a time in the order of (key, id) (PurgeInOrder; migration 25
// indexes each key the purge walks by, and cond bounds it), checking cond
// again in the delete.
func (s *Store) purgeWhere(ctx context.Context, table, key, cond string, args ...any) (int64, error) {
	del := fmt.Sprintf("DELETE FROM %s WHERE id IN ? AND (%s)", table, cond)
	return PurgeInOrder(ctx, s.db, s.purgeBatchSize(), table, key, cond, args, func(tx *gorm.DB, ids []string) (int64, error) {
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

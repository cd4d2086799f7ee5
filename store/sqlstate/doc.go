// Package sqlstate is the SQL implementation of store.TokenState and
// store.RevocationLog, store.SingleUse and store.BrowserSessions, over the
// GORM handle of sqlstore, on PostgreSQL or SQLite. Embedded mode keeps
// refresh sessions, revocations, rate-limit counters, authorization codes,
// pending authorization requests and browser sessions in its database so they survive restarts; with Redis it serves as
// the durable revocation log Redis rebuilds itself from.
//
// Every check-and-set is atomic across processes sharing the database:
// refresh rotation is a compare-and-swap on the family's current hash,
// counters are single-statement upserts, a single-use record is taken by one
// UPDATE … WHERE taken_at IS NULL, and browser sessions are created under the
// same per-user lock and cut-off check as refresh families. It works only on the tables that
// sqlstore's migrations create.
//
// This package must never store a refresh token other than as its hash (the
// grace-window successor is stored only as the caller's sealed blob, and only
// for the window), never log, and never let a presented hash that is not one
// of the family's own revoke that family.
package sqlstate

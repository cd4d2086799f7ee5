// Package redisstate is the Redis implementation of store.TokenState (refresh
// families with rotation and reuse detection, access-token revocation, user
// cut-offs, rate-limit counters), of store.SingleUse (authorization codes,
// pending authorization requests) and of store.BrowserSessions, shared by any
// number of server instances.
//
// Every check-and-set is one Lua script on one hash slot, so it is atomic on
// a single server, under Sentinel and on Cluster. Times come from the caller
// (RotateRequest.Now, Hit's now), never from Redis, so tests control them.
// Every revocation is written to the durable store.RevocationLog before
// Redis; when Redis comes back empty (or its ready marker is deleted), the
// revocation set is rebuilt from the log, with all each revocation means
// (families marked, cut-offs for new families set), before any check,
// rotation or lookup answers, and refresh families that were lost fail
// closed (RotateInvalid). A record stays unapplied in the log until Redis
// has taken it, and every instance applies the records left unapplied past
// a short grace (Reconcile, at start and on a ticker: RunReconciler), so a
// revocation whose Redis write failed reaches Redis through any instance,
// even once the one that made it has stopped. A family whose session or user is revoked in the
// revocation set never rotates, marked or not. Browser sessions and single-use records lost with
// Redis are gone (people sign in again, codes are refused); a browser session
// is found only when authenticated after its user's cut-off both in Redis and
// in the rebuilt revocation set, so one created after data loss by a sign-in
// that began before a recorded cut-off is never found.
//
// It must never store a refresh token (only SHA-256 hashes and the caller's
// sealed successor), never put a password or token in an error or log, never
// answer "not revoked" from a revocation set that is not complete, and never
// wait on Redis beyond the client's short timeouts: every Redis failure is
// returned wrapping store.ErrUnavailable so callers fail closed.
package redisstate

package store

import (
	"context"
	"time"
)

// BackchannelLogout is one queued OIDC Back-Channel Logout 1.0 delivery: a
// logout token for one grant (sid) of an ended browser session, to be POSTed
// to one client's backchannel_logout_uri. The queue is durable (the
// relational store), so a restart loses none; the token itself is minted at
// each attempt (its exp is short).
type BackchannelLogout struct {
	ID       string // opaque queue id
	ClientID string // the logout token's aud
	URI      string // the client's backchannel_logout_uri when the session ended
	Subject  string // sub
	SID      string // sid: the grant's session id, as in the id token
	// Attempts made so far; NextAttemptAt is when the next one is due.
	Attempts      int
	NextAttemptAt time.Time
	CreatedAt     time.Time
	LastError     string // why the last attempt failed (no secret), "" before the first
}

// BackchannelQueue is the durable queue of back-channel logout deliveries,
// shared by every instance: a delivery claimed by one instance is not
// claimed by another until its lease runs out.
type BackchannelQueue interface {
	// EnqueueBackchannelLogouts stores the deliveries (IDs set by the
	// caller), all or none.
	EnqueueBackchannelLogouts(ctx context.Context, ds []BackchannelLogout) error
	// ClaimBackchannelLogouts returns up to limit deliveries due at now
	// (NextAttemptAt <= now), oldest due first, and moves their
	// NextAttemptAt to now+lease so that no other caller claims them
	// meanwhile.
	ClaimBackchannelLogouts(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]BackchannelLogout, error)
	// CompleteBackchannelLogout removes a delivered (or abandoned)
	// delivery; unknown ids are not an error.
	CompleteBackchannelLogout(ctx context.Context, id string) error
	// RetryBackchannelLogout records a failed attempt: Attempts+1,
	// NextAttemptAt = next, LastError = lastErr. ErrNotFound when unknown.
	RetryBackchannelLogout(ctx context.Context, id string, next time.Time, lastErr string) error
}

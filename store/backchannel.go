package store

import (
	"cmp"
	"context"
	"slices"
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
	// TenantID is the client's organisation when the session ended ("" for
	// a platform client). An organisation's deliveries connect only to
	// public addresses: its admin, not the operator, chose the URI.
	TenantID string
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
	// ClaimBackchannelLogouts returns up to c.Limit deliveries due at c.Now
	// (NextAttemptAt <= Now), taken fairly across clients as
	// BackchannelClaim says and returned in that order, and moves their
	// NextAttemptAt to Now+Lease so that no other caller claims them
	// meanwhile.
	ClaimBackchannelLogouts(ctx context.Context, c BackchannelClaim) ([]BackchannelLogout, error)
	// CompleteBackchannelLogout removes a delivered (or abandoned)
	// delivery; unknown ids are not an error.
	CompleteBackchannelLogout(ctx context.Context, id string) error
	// RetryBackchannelLogout records a failed attempt: Attempts+1,
	// NextAttemptAt = next, LastError = lastErr. ErrNotFound when unknown.
	RetryBackchannelLogout(ctx context.Context, id string, next time.Time, lastErr string) error
}

// BackchannelClaim asks ClaimBackchannelLogouts for due deliveries. The
// claim is fair across clients, because every delivery of a client may wait
// as long as its endpoint lets it (a client's timeout holds the caller's
// slot): a client's k-th due delivery, oldest first, ranks InFlight[client]+k,
// and the claim takes the lowest ranks first, oldest due first among equal
// ranks (then by id). So a client with many deliveries due, or many in
// flight, never keeps another client's first delivery behind its own.
type BackchannelClaim struct {
	Now   time.Time     // deliveries due at Now are claimed
	Limit int           // at most this many (none when <= 0)
	Lease time.Duration // the claimed ones are hidden until Now+Lease (positive)
	// PerClient bounds the rank claimed: a client with InFlight[client]
	// deliveries in flight gets at most PerClient-InFlight[client] more
	// (none at or above the bound). Zero: no bound.
	PerClient int
	// InFlight is how many deliveries of each client the caller is making
	// now (absent: none).
	InFlight map[string]int
}

// Pick returns the deliveries of ds (each due, NextAttemptAt being when) that
// c claims, in c's order: ranked, bounded by PerClient, at most Limit. It is
// the rule's reference: the relational store computes the same ranks in SQL
// and orders what it claimed with Pick, and in-memory queues claim with it.
func (c BackchannelClaim) Pick(ds []BackchannelLogout) []BackchannelLogout {
	if c.Limit <= 0 || len(ds) == 0 {
		return nil
	}
	byDue := func(a, b BackchannelLogout) int {
		return cmp.Or(a.NextAttemptAt.Compare(b.NextAttemptAt), cmp.Compare(a.ID, b.ID))
	}
	sorted := slices.SortedFunc(slices.Values(ds), byDue)
	type ranked struct {
		d    BackchannelLogout
		rank int
	}
	var out []ranked
	seen := map[string]int{}
	for _, d := range sorted {
		seen[d.ClientID]++
		r := max(c.InFlight[d.ClientID], 0) + seen[d.ClientID]
		if c.PerClient > 0 && r > c.PerClient {
			continue
		}
		out = append(out, ranked{d, r})
	}
	slices.SortStableFunc(out, func(a, b ranked) int { return cmp.Compare(a.rank, b.rank) })
	picked := make([]BackchannelLogout, 0, min(c.Limit, len(out)))
	for _, r := range out[:min(c.Limit, len(out))] {
		picked = append(picked, r.d)
	}
	return picked
}

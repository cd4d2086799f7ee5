package verify

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// Defaults of LoggedOutOptions.
const (
	// DefaultMaxAccessTokenLifetime is the longest access token lifetime
	// assumed (Portcullis's PORTCULLIS_MAX_CLIENT_TOKEN_TTL default).
	DefaultMaxAccessTokenLifetime = 24 * time.Hour
	// DefaultMaxLoggedOut bounds the sessions and subjects a LoggedOut
	// remembers.
	DefaultMaxLoggedOut = 100000
)

// ErrLoggedOut: the access token belongs to a session (or a user) logged
// out through back-channel logout. It wraps ErrInactive, so a Guard answers
// 401 invalid_token.
var ErrLoggedOut = fmt.Errorf("%w: its session was logged out", ErrInactive)

// ErrTooManyLoggedOut: a LoggedOut is full of logouts whose tokens may
// still be live; the logout is refused (the sender retries later).
var ErrTooManyLoggedOut = errors.New("too many logged-out sessions remembered")

// LoggedOutOptions configure a LoggedOut.
type LoggedOutOptions struct {
	// MaxAccessTokenLifetime is the longest lifetime of the issuer's access
	// tokens: a logout is remembered this long after its token's iat, after
	// which every token it refuses has expired anyway (default
	// DefaultMaxAccessTokenLifetime).
	MaxAccessTokenLifetime time.Duration
	// MaxEntries bounds what is remembered (default DefaultMaxLoggedOut).
	MaxEntries int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// LoggedOut remembers back-channel logouts and refuses the access tokens
// they ended: a token whose sid was logged out, or whose sub was logged out
// by a logout token without sid, is refused when it was issued at or before
// the logout (its iat is not after the logout token's iat). Tokens issued
// later under the same sid, by an offline_access grant that outlives the
// browser session, still pass. Plug it into a Guard as
// GuardOptions.Revocations and call Add from the LogoutHandler's callback.
// It is safe for concurrent use.
type LoggedOut struct {
	ttl  time.Duration
	max  int
	now  func() time.Time
	mu   sync.Mutex
	sids map[string]time.Time // sid → iat of its logout token
	subs map[string]time.Time // sub → iat of its sid-less logout token
}

// NewLoggedOut returns an empty LoggedOut.
func NewLoggedOut(opts LoggedOutOptions) *LoggedOut {
	if opts.MaxAccessTokenLifetime <= 0 {
		opts.MaxAccessTokenLifetime = DefaultMaxAccessTokenLifetime
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = DefaultMaxLoggedOut
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &LoggedOut{ttl: opts.MaxAccessTokenLifetime, max: opts.MaxEntries, now: opts.Now,
		sids: map[string]time.Time{}, subs: map[string]time.Time{}}
}

// Add records the logout c asks for: its sid, or, without a sid, every
// session of its sub. It refuses with ErrTooManyLoggedOut when full.
func (l *LoggedOut) Add(c *LogoutClaims) error {
	m, key := l.sids, c.SessionID
	if key == "" {
		m, key = l.subs, c.Subject
	}
	if key == "" {
		return fmt.Errorf("logged out: %w", ErrNotLogoutToken)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if at, ok := m[key]; ok {
		m[key] = maxTime(at, c.IssuedAt)
		return nil
	}
	if len(l.sids)+len(l.subs) >= l.max {
		l.purge()
		if len(l.sids)+len(l.subs) >= l.max {
			return ErrTooManyLoggedOut
		}
	}
	m[key] = c.IssuedAt
	return nil
}

// purge drops the logouts every token of which has expired.
func (l *LoggedOut) purge() {
	cut := l.now().Add(-l.ttl)
	for _, m := range []map[string]time.Time{l.sids, l.subs} {
		for k, at := range m {
			if at.Before(cut) {
				delete(m, k)
			}
		}
	}
}

// Revoked returns ErrLoggedOut when c was issued at or before a logout of
// its sid or of its sub, and nil otherwise.
func (l *LoggedOut) Revoked(c *Claims) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.SessionID != "" {
		if at, ok := l.sids[c.SessionID]; ok && !c.IssuedAt.After(at) {
			return ErrLoggedOut
		}
	}
	if c.Subject != "" {
		if at, ok := l.subs[c.Subject]; ok && !c.IssuedAt.After(at) {
			return ErrLoggedOut
		}
	}
	return nil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

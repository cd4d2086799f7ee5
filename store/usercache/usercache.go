// Package usercache keeps copies of users in memory for the paths that read
// a user on every request (an authorization request with a live session,
// the refresh grant, userinfo), and uses a copy only while the user's
// version says the user is unchanged since the copy was read.
//
// The versions live where every instance sees them (the Redis token state,
// redisstate.State.UserVersion), and every write of a user changes its
// version around the write (sqlstore.UserWriteHooks): a write through any
// instance is seen by the next read on every instance, as without the
// cache. The one write that does not is the record of a login (its
// last-login time), so that a login leaves every instance's copy valid:
// the cache serves users without it (LastLoginAt is nil), and what shows
// it (the account and admin views) reads the store. A copy is also never
// older than MaxAge, which bounds what a write whose hooks both failed
// (Redis unreachable throughout), a write that bypassed them (the CLI's
// bootstrap, which has no Redis) or a Redis that lost its latest writes
// could leave stale.
package usercache

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// Source reads users as stored: the truth the cache copies.
type Source interface {
	GetUser(ctx context.Context, id string) (store.User, error)
}

// Versions reads a user's version. "" means a write of the user is in
// flight: no copy may be used or kept.
type Versions interface {
	UserVersion(ctx context.Context, userID string) (string, error)
}

// Defaults of Options.
const (
	DefaultMaxAge     = 30 * time.Second
	DefaultMaxEntries = 100_000
)

// Outcomes of a read, as Options.Observe hears them.
const (
	// OutcomeCopy: the copy was used.
	OutcomeCopy = "copy"
	// OutcomeRead: the user was read from Source and the copy kept.
	OutcomeRead = "read"
	// OutcomeUnsure: the user was read from Source and nothing kept (a
	// write in flight, a version that could not be read, no Versions, or
	// a failed read).
	OutcomeUnsure = "unsure"
)

// Options tune a Cache; zero values take the defaults.
type Options struct {
	// Observe, when set, hears the outcome of every read (OutcomeCopy,
	// OutcomeRead, OutcomeUnsure): the server counts them in
	// portcullis_user_copies_total.
	Observe func(outcome string)
	// MaxAge is the longest a copy is used, whatever its version says.
	MaxAge time.Duration
	// MaxEntries bounds the copies kept; past it, some are dropped.
	MaxEntries int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Cache is a Source that keeps copies. It is safe for concurrent use.
type Cache struct {
	src        Source
	versions   Versions
	maxAge     time.Duration
	maxEntries int
	now        func() time.Time
	observe    func(string)

	mu     sync.RWMutex
	copies map[string]copyOf
}

type copyOf struct {
	user    store.User
	version string
	readAt  time.Time
}

// New returns a cache of src checked against versions; with versions nil
// it keeps nothing and every read goes to src.
func New(src Source, versions Versions, o Options) *Cache {
	if o.MaxAge <= 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultMaxEntries
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Observe == nil {
		o.Observe = func(string) {}
	}
	return &Cache{src: src, versions: versions, maxAge: o.MaxAge, maxEntries: o.MaxEntries, now: o.Now,
		observe: o.Observe, copies: map[string]copyOf{}}
}

// GetUser returns the user as Source would, without its last-login time
// (LastLoginAt nil; see the package doc): the copy when the user's
// version is the copy's and the copy is young enough, else the user read
// from Source (kept, unless a write is in flight). When the version cannot
// be read (or the cache has no Versions), the user is read from Source and
// nothing is kept.
func (c *Cache) GetUser(ctx context.Context, id string) (store.User, error) {
	return c.GetUserAt(ctx, id, store.UserVersion{})
}

// GetUserAt is GetUser with the user's version already read (v.Read), as
// the Redis token state reads it with a browser session; without it, the
// version is read here.
func (c *Cache) GetUserAt(ctx context.Context, id string, v store.UserVersion) (store.User, error) {
	version := v.Value
	if !v.Read {
		version = ""
		if c.versions != nil {
			if got, err := c.versions.UserVersion(ctx, id); err == nil {
				version = got
			}
		}
	}
	now := c.now()
	if version != "" {
		c.mu.RLock()
		cp, ok := c.copies[id]
		c.mu.RUnlock()
		if ok && cp.version == version && now.Sub(cp.readAt) < c.maxAge && !now.Before(cp.readAt) {
			c.observe(OutcomeCopy)
			return served(cp.user), nil
		}
	}
	u, err := c.src.GetUser(ctx, id)
	if err != nil {
		c.observe(OutcomeUnsure)
		return u, err
	}
	u = served(u)
	if version == "" {
		c.observe(OutcomeUnsure)
		return u, nil
	}
	c.keep(id, copyOf{user: served(u), version: version, readAt: now})
	c.observe(OutcomeRead)
	return u, nil
}

// keep stores cp, first dropping copies when the cache is full: those past
// MaxAge, then, if none was, an arbitrary eighth.
func (c *Cache) keep(id string, cp copyOf) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.copies[id]; !ok && len(c.copies) >= c.maxEntries {
		before := len(c.copies)
		for k, old := range c.copies {
			if cp.readAt.Sub(old.readAt) >= c.maxAge {
				delete(c.copies, k)
			}
		}
		for k := range c.copies {
			if len(c.copies) > before-max(before/8, 1) {
				delete(c.copies, k)
				continue
			}
			break
		}
	}
	c.copies[id] = cp
}

// Len returns how many copies are kept.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.copies)
}

// served is u as the cache serves it: sharing nothing mutable with u, and
// without the last-login time, which logins write without changing the
// user's version (sqlstore.Store.RecordLogin).
func served(u store.User) store.User {
	u.Roles = slices.Clone(u.Roles)
	u.LastLoginAt = nil
	return u
}

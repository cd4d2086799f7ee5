package clients

import (
	"context"
	"sync"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// Reader reads clients.
type Reader interface {
	GetClient(ctx context.Context, id string) (store.Client, error)
}

// Cache keeps recently read clients in memory for a short time, so the token
// endpoint does not read the database for every client_credentials or
// introspection request. A change made on another instance (a deleted client,
// a rotated secret) takes effect within the cache's TTL; changes made
// through this instance call Forget and take effect at once, also against a
// read in flight when Forget is called (it is then not kept). Unknown ids
// are not cached, so a new client works immediately.
type Cache struct {
	inner Reader
	ttl   time.Duration
	now   func() time.Time
	mu    sync.RWMutex
	items map[string]cached
	// gen counts the calls of Forget: a read of inner keeps its result only
	// if no Forget came between its start and its end, so that a client
	// read before a change made here is never kept after it.
	gen uint64
}

type cached struct {
	c       store.Client
	expires time.Time
}

// maxCached bounds memory: beyond it the cache is cleared (ids are chosen by
// operators, so this is never reached in practice).
const maxCached = 10000

// NewCache wraps inner with a cache of the given TTL.
func NewCache(inner Reader, ttl time.Duration) *Cache {
	return &Cache{inner: inner, ttl: ttl, now: time.Now, items: map[string]cached{}}
}

// GetClient returns the client, from memory when it was read less than the
// TTL ago. A client read from inner is kept only if Forget was not called
// while it was read (gen): the read may have begun before the change
// Forget follows.
func (c *Cache) GetClient(ctx context.Context, id string) (store.Client, error) {
	now := c.now()
	c.mu.RLock()
	it, ok := c.items[id]
	gen := c.gen
	c.mu.RUnlock()
	if ok && now.Before(it.expires) {
		return it.c, nil
	}
	cl, err := c.inner.GetClient(ctx, id)
	if err != nil {
		return store.Client{}, err
	}
	c.mu.Lock()
	if c.gen == gen {
		if len(c.items) >= maxCached {
			c.items = map[string]cached{}
		}
		c.items[id] = cached{c: cl, expires: now.Add(c.ttl)}
	}
	c.mu.Unlock()
	return cl, nil
}

// Forget drops a client from the cache (after it was changed or deleted
// here), and keeps any read in flight from storing what it read.
func (c *Cache) Forget(id string) {
	c.mu.Lock()
	delete(c.items, id)
	c.gen++
	c.mu.Unlock()
}

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
// through this instance call Forget and take effect at once. Unknown ids are
// not cached, so a new client works immediately.
type Cache struct {
	inner Reader
	ttl   time.Duration
	now   func() time.Time
	mu    sync.RWMutex
	items map[string]cached
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

// GetClient returns the client, from memory when it was read less than the TTL ago.
func (c *Cache) GetClient(ctx context.Context, id string) (store.Client, error) {
	now := c.now()
	c.mu.RLock()
	it, ok := c.items[id]
	c.mu.RUnlock()
	if ok && now.Before(it.expires) {
		return it.c, nil
	}
	cl, err := c.inner.GetClient(ctx, id)
	if err != nil {
		return store.Client{}, err
	}
	c.mu.Lock()
	if len(c.items) >= maxCached {
		c.items = map[string]cached{}
	}
	c.items[id] = cached{c: cl, expires: now.Add(c.ttl)}
	c.mu.Unlock()
	return cl, nil
}

// Forget drops a client from the cache (after it was changed or deleted here).
func (c *Cache) Forget(id string) {
	c.mu.Lock()
	delete(c.items, id)
	c.mu.Unlock()
}

package backchannel_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/keys"
	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
)

// memQueue is an in-memory store.BackchannelQueue with the interface's
// documented semantics (claim leases, fair claims by store.BackchannelClaim,
// all-or-none enqueue). Each Complete and Retry is reported on events.
type memQueue struct {
	mu     sync.Mutex
	items  map[string]store.BackchannelLogout
	events chan queueEvent
	claims []store.BackchannelClaim // every claim made, in order
}

type queueEvent struct {
	op string // "complete" or "retry"
	d  store.BackchannelLogout
}

func newMemQueue() *memQueue {
	return &memQueue{items: map[string]store.BackchannelLogout{}, events: make(chan queueEvent, 1024)}
}

func (q *memQueue) EnqueueBackchannelLogouts(_ context.Context, ds []store.BackchannelLogout) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, d := range ds {
		if d.ID == "" {
			return fmt.Errorf("enqueue: empty id")
		}
		if _, dup := q.items[d.ID]; dup {
			return store.ErrAlreadyExists
		}
	}
	for _, d := range ds {
		q.items[d.ID] = d
	}
	return nil
}

func (q *memQueue) ClaimBackchannelLogouts(_ context.Context, c store.BackchannelClaim) ([]store.BackchannelLogout, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var due []store.BackchannelLogout
	for _, d := range q.items {
		if !d.NextAttemptAt.After(c.Now) {
			due = append(due, d)
		}
	}
	due = c.Pick(due)
	for i := range due {
		due[i].NextAttemptAt = c.Now.Add(c.Lease)
		q.items[due[i].ID] = due[i]
	}
	q.claims = append(q.claims, c)
	return due, nil
}

func (q *memQueue) CompleteBackchannelLogout(_ context.Context, id string) error {
	q.mu.Lock()
	d, ok := q.items[id]
	delete(q.items, id)
	q.mu.Unlock()
	if ok {
		q.events <- queueEvent{op: "complete", d: d}
	}
	return nil
}

func (q *memQueue) RetryBackchannelLogout(_ context.Context, id string, next time.Time, lastErr string) error {
	q.mu.Lock()
	d, ok := q.items[id]
	if ok {
		d.Attempts++
		d.NextAttemptAt = next
		d.LastError = lastErr
		q.items[id] = d
	}
	q.mu.Unlock()
	if !ok {
		return store.ErrNotFound
	}
	q.events <- queueEvent{op: "retry", d: d}
	return nil
}

func (q *memQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// next waits for the queue's next event (failing the test after 10 s: a
// guard against a hang, not a wait for timing).
func (q *memQueue) next(t *testing.T) queueEvent {
	t.Helper()
	select {
	case e := <-q.events:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no queue event")
		return queueEvent{}
	}
}

// memAudit collects audit events.
type memAudit struct {
	mu     sync.Mutex
	events []store.AuditEvent
}

func (a *memAudit) Record(_ context.Context, e store.AuditEvent) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, e)
}

func (a *memAudit) all() []store.AuditEvent {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.events)
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) Advance(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

// newKeyManager returns an initialised *keys.Manager (ES256) over a fresh
// SQLite store: the real signer.
func newKeyManager(t *testing.T) *keys.Manager {
	t.Helper()
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, "sqlite://"+t.TempDir()+"/keys.db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	kek, err := keys.GenerateKEK()
	if err != nil {
		t.Fatal(err)
	}
	ring, err := keys.ParseKEKs(kek)
	if err != nil {
		t.Fatal(err)
	}
	m, err := keys.NewManager(keys.Config{Store: st, KEKs: ring, Alg: keys.AlgES256, JWKSMaxAge: time.Minute,
		SyncInterval: time.Minute, MaxTokenTTL: 15 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Init(ctx); err != nil {
		t.Fatal(err)
	}
	return m
}

package clients

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// gatedReader answers the client as stored when a read begins; a read
// begun while gated waits, once started is closed, for release before it
// returns (a database read in flight while an admin's write commits on
// the same instance).
type gatedReader struct {
	mu      sync.Mutex
	stored  store.Client
	gone    bool // the client is deleted: store.ErrNotFound
	gated   bool // the next read waits for release
	started chan struct{}
	release chan struct{}
}

func (r *gatedReader) GetClient(ctx context.Context, id string) (store.Client, error) {
	r.mu.Lock()
	c, gone, gated := r.stored, r.gone, r.gated
	r.gated = false
	r.mu.Unlock()
	if gated {
		close(r.started)
		<-r.release
	}
	if gone {
		return store.Client{}, store.ErrNotFound
	}
	return c, nil
}

// set changes the stored client (what the admin's write commits).
func (r *gatedReader) set(change func(r *gatedReader)) {
	r.mu.Lock()
	change(r)
	r.mu.Unlock()
}

// TestForgetDuringARead: a client changed through this instance (then
// Forget) while a request on the same instance is reading it: the read
// that began before the change answers what it read, but the cache does
// not keep it, so the next read sees the change at once. Found by a
// review: before the change the read stored the old client after Forget,
// and the old secret's hash (or a deleted client) was served for the TTL.
func TestForgetDuringARead(t *testing.T) {
	old := store.Client{ID: "web", SecretHash: []byte("old-hash")}
	for _, tc := range []struct {
		name   string
		change func(r *gatedReader)
		check  func(t *testing.T, got store.Client, err error)
	}{
		{name: "secret_rotated", change: func(r *gatedReader) { r.stored.SecretHash = []byte("new-hash") },
			check: func(t *testing.T, got store.Client, err error) {
				if err != nil || !bytes.Equal(got.SecretHash, []byte("new-hash")) {
					t.Fatalf("after the rotation and Forget: %q, %v; want the new secret hash", got.SecretHash, err)
				}
			}},
		{name: "deleted", change: func(r *gatedReader) { r.gone = true },
			check: func(t *testing.T, got store.Client, err error) {
				if !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("after the deletion and Forget: %+v, %v; want store.ErrNotFound", got, err)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &gatedReader{stored: old, gated: true, started: make(chan struct{}), release: make(chan struct{})}
			c := NewCache(r, time.Hour)
			inFlight := make(chan store.Client)
			go func() {
				got, _ := c.GetClient(context.Background(), "web")
				inFlight <- got
			}()
			<-r.started
			r.set(tc.change)
			c.Forget("web")
			close(r.release)
			if got := <-inFlight; !bytes.Equal(got.SecretHash, old.SecretHash) {
				t.Fatalf("the read in flight answered %q, want what it read", got.SecretHash)
			}
			got, err := c.GetClient(context.Background(), "web")
			tc.check(t, got, err)
			// Without a Forget in flight, a read is kept as before.
			r.set(func(r *gatedReader) { r.gone, r.stored = false, old })
			c.Forget("web")
			if _, err := c.GetClient(context.Background(), "web"); err != nil {
				t.Fatal(err)
			}
			r.set(func(r *gatedReader) { r.stored.SecretHash = []byte("changed-elsewhere") })
			if got, _ := c.GetClient(context.Background(), "web"); !bytes.Equal(got.SecretHash, old.SecretHash) {
				t.Fatalf("a read with no Forget in flight was not kept: %q", got.SecretHash)
			}
		})
	}
}

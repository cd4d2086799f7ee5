package keys_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/keys"
	"github.com/portcullis-auth/portcullis/store"
)

// stallingStore is a key store whose calls hang, as on a blackholed
// connection or behind another instance's transaction holding the row lock:
// while stallWrites is set ApplySigningKeyChanges hangs, while stallReads is
// set ListSigningKeys hangs too, and with deadOnceStalled the first write
// that hangs sets stallReads (the connection went dead). A hung call returns
// when its context ends or release is closed. stalled counts the calls that
// hung, and entered receives one value per hung call when it is not nil.
type stallingStore struct {
	keys.Store
	stallWrites, stallReads atomic.Bool
	deadOnceStalled         atomic.Bool
	stalled                 atomic.Int32
	entered                 chan struct{}
	release                 chan struct{}
}

func newStallingStore(st keys.Store) *stallingStore {
	return &stallingStore{Store: st, release: make(chan struct{})}
}

func (s *stallingStore) hang(ctx context.Context) error {
	s.stalled.Add(1)
	if s.entered != nil {
		s.entered <- struct{}{}
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-s.release:
		return errors.New("released")
	}
}

func (s *stallingStore) ListSigningKeys(ctx context.Context) ([]store.SigningKey, error) {
	if s.stallReads.Load() {
		return nil, s.hang(ctx)
	}
	return s.Store.ListSigningKeys(ctx)
}

func (s *stallingStore) ApplySigningKeyChanges(ctx context.Context, updates, creates []store.SigningKey) error {
	if s.stallWrites.Load() || s.stallReads.Load() {
		if s.deadOnceStalled.Load() {
			s.stallReads.Store(true)
		}
		return s.hang(ctx)
	}
	return s.Store.ApplySigningKeyChanges(ctx, updates, creates)
}

// TestKeysGoStaleWhileASyncHangs: staleness is a matter of time, whatever
// the sync is doing. A sync stuck in a store call that never answers (no
// error comes back to mark anything) does not let the instance go on
// signing, verifying and publishing with keys it read two sync intervals
// ago, which may miss a revocation made elsewhere meanwhile.
func TestKeysGoStaleWhileASyncHangs(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			clk := newClock()
			db := openStore(t, backend)
			kr := ring(t, kek(t))
			st := newStallingStore(db)
			m := initManager(t, st, kr, keys.AlgEdDSA, clk)
			other := initManager(t, db, kr, keys.AlgEdDSA, clk)
			tok := sign(t, m)
			revoked := m.ActiveKID()

			st.entered = make(chan struct{}, 1)
			st.stallReads.Store(true)
			ctx, cancel := context.WithCancel(context.Background())
			refreshed := make(chan error, 1)
			go func() { refreshed <- m.Refresh(ctx) }()
			<-st.entered // the sync hangs in the store from now on
			if _, err := other.Revoke(context.Background(), revoked); err != nil {
				t.Fatal(err)
			}

			clk.Advance(2*syncInterval - time.Nanosecond)
			if _, _, err := m.Verify(tok); err != nil {
				t.Fatalf("Verify with keys read less than two intervals ago: %v", err)
			}
			clk.Advance(time.Nanosecond)
			if _, _, err := m.Verify(tok); !errors.Is(err, keys.ErrStale) {
				t.Errorf("Verify with keys read two intervals ago, the sync still hanging: %v, want ErrStale", err)
			}
			if _, _, err := m.VerifyTyped(tok, "at+jwt"); !errors.Is(err, keys.ErrStale) {
				t.Errorf("VerifyTyped: %v, want ErrStale", err)
			}
			if _, err := m.Sign(map[string]any{"sub": "u"}, "at+jwt"); !errors.Is(err, keys.ErrStale) {
				t.Errorf("Sign: %v, want ErrStale", err)
			}
			if err := m.Usable(); !errors.Is(err, keys.ErrStale) {
				t.Errorf("Usable: %v, want ErrStale", err)
			}
			if body, _, err := m.JWKS(); !errors.Is(err, keys.ErrStale) || body != nil {
				t.Errorf("JWKS: %d bytes, %v; want ErrStale", len(body), err)
			}

			cancel()
			if err := <-refreshed; !errors.Is(err, context.Canceled) {
				t.Fatalf("the hung Refresh returned %v, want context.Canceled", err)
			}
			st.stallReads.Store(false)
			if err := m.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			if _, _, err := m.Verify(tok); !errors.Is(err, keys.ErrRevokedKey) {
				t.Fatalf("Verify after a sync: %v, want ErrRevokedKey", err)
			}
		})
	}
}

// TestStalledAutomaticRotationKeepsNoRevokedKey runs an instance whose
// automatic rotation hangs in the store (found by a review: Run waited on
// it for ever, holding the lock every sync needs, so the instance never
// reloaded nor went stale, and went on accepting, publishing and signing
// with a key another instance revoked). Run bounds each store call by the
// sync interval, so the instance takes the revocation when only the
// rotation hangs, and goes stale when every call hangs.
func TestStalledAutomaticRotationKeepsNoRevokedKey(t *testing.T) {
	const tick = 200 * time.Millisecond // the real sync interval of Run
	tests := []struct {
		name        string
		stallReads  bool
		wantRefusal error
	}{
		{name: "only-the-rotation-hangs", wantRefusal: keys.ErrRevokedKey},
		{name: "every-store-call-hangs", stallReads: true, wantRefusal: keys.ErrStale},
	}
	for _, backend := range backends {
		for _, tt := range tests {
			t.Run(backend+"/"+tt.name, func(t *testing.T) {
				db := openStore(t, backend)
				kr := ring(t, kek(t))
				st := newStallingStore(db)
				mk := func(s keys.Store) *keys.Manager {
					m, err := keys.NewManager(keys.Config{Store: s, KEKs: kr, Alg: keys.AlgEdDSA,
						SyncInterval: tick, RotationInterval: 2 * tick, MaxTokenTTL: time.Minute})
					if err != nil {
						t.Fatal(err)
					}
					if err := m.Init(context.Background()); err != nil {
						t.Fatal(err)
					}
					return m
				}
				m, other := mk(st), mk(db)
				tok := sign(t, m)
				compromised := m.ActiveKID()

				st.stallWrites.Store(true)
				st.deadOnceStalled.Store(tt.stallReads)
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() { defer close(done); m.Run(ctx) }()
				defer func() { cancel(); <-done }()
				waitFor(t, "the automatic rotation to hang", func() bool { return st.stalled.Load() > 0 })
				if _, err := other.Revoke(context.Background(), compromised); err != nil {
					t.Fatal(err)
				}

				waitFor(t, "the instance to refuse the revoked key", func() bool {
					_, _, err := m.VerifyTyped(tok, "at+jwt")
					return err != nil
				})
				if _, _, err := m.VerifyTyped(tok, "at+jwt"); !errors.Is(err, tt.wantRefusal) {
					t.Errorf("VerifyTyped of the revoked key's token: %v, want %v", err, tt.wantRefusal)
				}
				signed, err := m.Sign(map[string]any{"sub": "u"}, "at+jwt")
				switch {
				case tt.wantRefusal == keys.ErrStale && !errors.Is(err, keys.ErrStale):
					t.Errorf("Sign with a store that never answers: %v, want ErrStale", err)
				case tt.wantRefusal == keys.ErrStale:
				case err != nil:
					t.Errorf("Sign after the revocation was synced: %v", err)
				default:
					if _, kid, err := other.Verify(signed); err != nil || kid == compromised {
						t.Errorf("signed with %s (%v), the revoked key is %s", kid, err, compromised)
					}
				}
				if _, _, err := m.JWKS(); err != nil {
					if !errors.Is(err, tt.wantRefusal) {
						t.Errorf("JWKS: %v", err)
					}
				} else if kids := jwksKIDs(t, m); contains(kids, compromised) {
					t.Errorf("the JWKS still publishes the revoked key: %v", kids)
				}

				// An admin change on this instance answers within its own
				// context, whatever the rotation holds.
				for _, change := range []struct {
					name string
					call func(context.Context) error
				}{
					{"Rotate", func(ctx context.Context) error { _, err := m.Rotate(ctx, true); return err }},
					{"Revoke", func(ctx context.Context) error { _, err := m.Revoke(ctx, other.ActiveKID()); return err }},
				} {
					if err := withinContext(t, change.call); !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("%s against a hanging store: %v, want context.DeadlineExceeded", change.name, err)
					}
				}
			})
		}
	}
}

// TestKeyChangesWaitForTheLockOnlyAsLongAsTheirContext: while a change
// hangs in the store holding the Manager's lock, every other call that
// needs the lock gives up when its own context ends instead of queueing
// behind it for ever.
func TestKeyChangesWaitForTheLockOnlyAsLongAsTheirContext(t *testing.T) {
	clk := newClock()
	db := openStore(t, "sqlite")
	kr := ring(t, kek(t))
	st := newStallingStore(db)
	m := initManager(t, st, kr, keys.AlgEdDSA, clk)
	kid := m.ActiveKID()

	st.entered = make(chan struct{}, 1)
	st.stallWrites.Store(true)
	stuck := make(chan error, 1)
	go func() { _, err := m.Rotate(context.Background(), true); stuck <- err }()
	<-st.entered // the rotation holds the lock, hanging in the store
	st.stallWrites.Store(false)

	tests := []struct {
		name string
		call func(context.Context) error
	}{
		{"Rotate", func(ctx context.Context) error { _, err := m.Rotate(ctx, true); return err }},
		{"Revoke", func(ctx context.Context) error { _, err := m.Revoke(ctx, kid); return err }},
		{"Reencrypt", func(ctx context.Context) error { _, err := m.Reencrypt(ctx); return err }},
		{"Sync", m.Sync},
		{"Refresh", m.Refresh},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := withinContext(t, tt.call); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("%s behind a hung change: %v, want context.DeadlineExceeded", tt.name, err)
			}
		})
	}

	close(st.release)
	if err := <-stuck; err == nil {
		t.Fatal("the hung rotation succeeded")
	}
	if _, err := m.Rotate(context.Background(), true); err != nil {
		t.Fatalf("Rotate once the lock is free: %v", err)
	}
}

// withinContext runs call with a context that ends shortly and returns its
// error; it fails the test when call does not return long after that.
func withinContext(t *testing.T, call func(context.Context) error) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	result := make(chan error, 1)
	go func() { result <- call(ctx) }()
	select {
	case err := <-result:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("still waiting 5s after its context ended")
		return nil
	}
}

// waitFor polls cond until it holds, failing the test after 5 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 5s for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRunSyncsAtOnce: keys that Init read long before the instance starts
// serving are stale by then; Run reloads them at once rather than one sync
// interval later, so a slow start does not answer 503 until the first tick.
func TestRunSyncsAtOnce(t *testing.T) {
	clk := newClock()
	m := newManager(t, openStore(t, "sqlite"), ring(t, kek(t)), keys.AlgEdDSA, clk,
		func(c *keys.Config) { c.SyncInterval = time.Hour })
	if err := m.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Hour)
	if err := m.Usable(); !errors.Is(err, keys.ErrStale) {
		t.Fatalf("Usable with keys read two intervals ago: %v, want ErrStale", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "Run to reload the keys", func() bool { return m.Usable() == nil })
}

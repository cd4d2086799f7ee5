package password

import (
	"context"
	"errors"
	"sync"
	"testing"

	xargon2 "golang.org/x/crypto/argon2"
)

// endsAtRun is a request's context whose deadline passes once its hasher
// has started n hashes (Hasher.runs): the deadline of a login whose
// verification's first hash is running, or has run while the second waits.
type endsAtRun struct {
	context.Context
	h    *Hasher
	n    uint64
	once *sync.Once
	done chan struct{}
}

func newEndsAtRun(h *Hasher, n uint64) endsAtRun {
	return endsAtRun{Context: context.Background(), h: h, n: n, once: new(sync.Once), done: make(chan struct{})}
}

func (c endsAtRun) Err() error {
	if c.h.runs.Load() < c.n {
		return nil
	}
	c.once.Do(func() { close(c.done) })
	return context.DeadlineExceeded
}

func (c endsAtRun) Done() <-chan struct{} {
	_ = c.Err()
	return c.done
}

// TestVerifyAfterItsFirstRunAnswersAVerdict: once a verification's first
// hash has run, its answer is a verdict, never ErrBusy: the deadline of its
// request passing while the first hash runs (or after it, while the
// second waits for a slot) does not stop the second run of a foreign hash
// and a password NFKC changes, and ErrBusy is left for a verification
// none of whose hashes ran. Found by a review: Verify answered ErrBusy
// after refusing the NFKC form, and server/passcheck answers ErrBusy 503
// and takes the login throttle's attempt back, so a guess that was tested
// went uncounted.
func TestVerifyAfterItsFirstRunAnswersAVerdict(t *testing.T) {
	h := newHasher(t, fastParams)
	const right = "\uff48unter2" // fullwidth h: NFKC "hunter2"
	salt := []byte("0123456789abcdef")
	raw := encodePHC("argon2id", fastParams, salt, argon2IDKey(right, salt))
	nfkc, err := h.Hash(ctx, right)
	if err != nil {
		t.Fatal(err)
	}
	foreign, cost := []VerifyOption{ForeignHash(true)}, []VerifyOption{ForeignCost(true)}
	for _, tt := range []struct {
		name       string
		hash, pw   string
		opts       []VerifyOption
		endsAt     uint64 // the deadline passes once this many hashes started (0: before the call)
		ok, rehash bool
		runs       uint64
		busy       bool
	}{
		{"ok/wrong_guess_deadline_in_first_run", raw, "\uff48unter1", foreign, 1, false, false, 2, false},
		{"ok/right_typed_form_deadline_in_first_run", raw, right, foreign, 1, true, true, 2, false},
		{"ok/right_nfkc_form_deadline_in_first_run", nfkc, right, foreign, 1, true, true, 1, false},
		{"ok/wrong_guess_deadline_after_both", raw, "\uff48unter1", foreign, 2, false, false, 2, false},
		{"ok/own_hash_at_foreign_cost_deadline_in_first_run", nfkc, "\uff48unter1", cost, 1, false, false, 2, false},
		{"fail/deadline_before_the_call_busy", raw, "\uff48unter1", foreign, 0, false, false, 0, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := h.runs.Load()
			c := newEndsAtRun(h, before+tt.endsAt)
			ok, rehash, _, err := h.Verify(c, tt.hash, tt.pw, tt.opts...)
			runs := h.runs.Load() - before
			if tt.busy {
				if !errors.Is(err, ErrBusy) || !errors.Is(err, context.DeadlineExceeded) || ok || runs != 0 {
					t.Fatalf("Verify = %v, %v after %d runs; want ErrBusy (DeadlineExceeded) and no run", ok, err, runs)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify after %d runs: %v; want a verdict (its first hash ran)", runs, err)
			}
			if ok != tt.ok || rehash != tt.rehash || runs != tt.runs {
				t.Fatalf("ok %v, rehash %v, %d runs; want %v, %v, %d", ok, rehash, runs, tt.ok, tt.rehash, tt.runs)
			}
		})
	}
}

// argon2IDKey is x/crypto's argon2id of pw as typed under fastParams: a
// hash imported from a system that did not normalize.
func argon2IDKey(pw string, salt []byte) []byte {
	p := fastParams
	return xargon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, p.KeyLength)
}

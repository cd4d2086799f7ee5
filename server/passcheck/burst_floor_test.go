package passcheck

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/policy/password"
)

// TestRefusalFloorIgnoresTheQueueWait: one burst of concurrent unknown-login
// attempts (nothing but ordinary refusals, 80 of them: two client
// addresses under the per-address limit) leaves the refusal floor at about
// one hash's time, not the length of the queue for a hashing slot. Found by
// a review; failed before the floor learnt the hasher's own run time
// (password.Hasher reports it without the wait for a slot): the floor was
// learnt from the wall time of each verification, so the burst put the
// dummy class's estimate at the queue's length and the floor at
// MaxRefusalFloor (2 s, 38 times one refusal) for every refusal on the
// instance, and real users' wrong passwords (of their own class) never
// brought it down.
func TestRefusalFloorIgnoresTheQueueWait(t *testing.T) {
	h, err := password.NewHasher(password.DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	hash, err := h.Hash(ctx, "right-password")
	if err != nil {
		t.Fatal(err)
	}
	users := fakeUsers{"usr_1": {ID: "usr_1", Email: "ann@example.com", PasswordHash: hash, Active: true}}
	c, err := New(Deps{Users: users, Hasher: h})
	if err != nil {
		t.Fatal(err)
	}
	// refuse runs n unknown-login refusals at once and returns the slowest's
	// wall time.
	refuse := func(n int, prefix string) time.Duration {
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			worst time.Duration
		)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				start := time.Now()
				if _, err := c.Check(ctx, Attempt{Login: fmt.Sprintf("%s%d@example.com", prefix, i), Password: "x"}); !errors.Is(err, ErrBadCredentials) {
					t.Error(err)
				}
				mu.Lock()
				worst = max(worst, time.Since(start))
				mu.Unlock()
			}()
		}
		wg.Wait()
		return worst
	}
	// Quiet refusals: as many at once as there are hashing slots (every
	// core busy, as in the burst, but no queue), the slowest of two rounds.
	quiet := max(refuse(runtime.GOMAXPROCS(0), "quiet-a-"), refuse(runtime.GOMAXPROCS(0), "quiet-b-"))
	// The burst: 80 unknown logins at once (the attacker's).
	burst := refuse(80, "nobody")
	t.Logf("quiet refusal %s; the burst's slowest %s; floor after it %s", quiet, burst, c.floor.floor())
	// Afterwards, the account's owner mistypes ten times, one at a time.
	for range 10 {
		if _, err := c.Check(ctx, Attempt{Login: "ann@example.com", Password: "typo"}); !errors.Is(err, ErrBadCredentials) {
			t.Fatal(err)
		}
	}
	if f := c.floor.floor(); f > 4*quiet {
		t.Errorf("the floor stays at %s (%.0fx a quiet refusal of %s) after the burst: every refusal is padded to the queue's length",
			f, float64(f)/float64(quiet), quiet)
	}
}

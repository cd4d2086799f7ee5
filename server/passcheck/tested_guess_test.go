package passcheck

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/policy/password"
	"github.com/portcullis-auth/portcullis/server/apierr"
)

// TestTestedGuessIsCounted (the reviewer's case, with a real Hasher): a
// wrong guess NFKC changes, against a marked account, whose request ends
// once its NFKC form has been hashed, while the typed form waits for a
// slot that other requests' hashes hold, is a refusal like any other: a
// counted failure, the login.failed event, never the 503 of a hash that
// never ran with its throttle attempt taken back. Found by a review.
func TestTestedGuessIsCounted(t *testing.T) {
	h, err := password.NewHasher(password.Params{Memory: 8 * 1024, Time: 3, Threads: 1, SaltLength: 16, KeyLength: 32})
	if err != nil {
		t.Fatal(err)
	}
	stored, err := h.Hash(context.Background(), "hunter2")
	if err != nil {
		t.Fatal(err)
	}
	users := fakeUsers{"usr_1": {ID: "usr_1", Email: "ann@example.com", PasswordHash: stored, PasswordHashForeign: true, Active: true}}
	th, rec := &fakeThrottle{}, &recorder{}
	c, err := New(Deps{Users: users, Hasher: h, Throttle: th, Audit: rec, Metrics: rec})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := c.Check(ctx, Attempt{Login: "ann@example.com", Password: "\uff48unter1", FailureAction: "login.failed"})
		done <- err
	}()
	waitLoad := func(what string, ok func(running, waiting int) bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; runtime.Gosched() {
			if r, w := h.Load(); ok(r, w) {
				return
			}
			if time.Now().After(deadline) {
				r, w := h.Load()
				t.Fatalf("never %s: running %d, waiting %d", what, r, w)
			}
		}
	}
	// The guess's first (NFKC) run has started; other requests' hashes
	// then take every slot, the one it frees included, so the typed form
	// waits; then its request ends.
	waitLoad("the first run", func(r, _ int) bool { return r > 0 })
	slots := runtime.GOMAXPROCS(0)
	var fillers sync.WaitGroup
	for range slots + 1 {
		fillers.Add(1)
		go func() { defer fillers.Done(); _, _ = h.Hash(context.Background(), "filler") }()
	}
	waitLoad("every slot held and one waiting", func(r, w int) bool { return r == slots && w == 1 })
	cancel()
	err = <-done
	fillers.Wait()
	t.Logf("Check: %v; throttle checked %v, took back %v; failures %d, events %d", err, th.checked, th.succeeded, rec.failed, len(rec.events))
	if errors.Is(err, apierr.ErrTemporarilyUnavailable) {
		t.Fatalf("a tested wrong guess answered %v, its throttle attempt taken back (%v)", err, th.succeeded)
	}
	if !errors.Is(err, ErrBadCredentials) || rec.failed != 1 || len(rec.events) != 1 || len(th.succeeded) != 0 {
		t.Fatalf("Check = %v, failures %d, events %d, taken back %v; want a counted refusal", err, rec.failed, len(rec.events), th.succeeded)
	}
}

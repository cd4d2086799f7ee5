package passcheck

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/portcullis-auth/portcullis/policy/password"
	"github.com/portcullis-auth/portcullis/server/apierr"
)

// endsAfterARun is the context of a request whose deadline passes once its
// first hash has started: the first time Err is asked while the hasher's
// Load shows a hash running (the hash has its slot), the request is still
// alive; at any later time it has ended. The hasher runs nothing else.
type endsAfterARun struct {
	context.Context
	h    *password.Hasher
	mu   *sync.Mutex
	seen *bool
	done chan struct{}
}

func newEndsAfterARun(h *password.Hasher) endsAfterARun {
	return endsAfterARun{Context: context.Background(), h: h, mu: new(sync.Mutex), seen: new(bool), done: make(chan struct{})}
}

func (c endsAfterARun) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.done:
		return context.DeadlineExceeded
	default:
	}
	if *c.seen {
		close(c.done)
		return context.DeadlineExceeded
	}
	if running, _ := c.h.Load(); running > 0 {
		*c.seen = true
	}
	return nil
}

func (c endsAfterARun) Done() <-chan struct{} { return c.done }

// TestTestedGuessIsCounted (the reviewer's case, with a real Hasher): a
// wrong guess NFKC changes, against a marked account, whose request's
// deadline passes once the hash of its NFKC form has started (before the
// typed form's run), is a refusal like any other: a counted failure and
// the login.failed event, never the 503 of a hash that never ran with its
// throttle attempt taken back. Found by a review: Verify refused the NFKC
// form, then answered password.ErrBusy for the typed form, so a tested
// guess went uncounted.
func TestTestedGuessIsCounted(t *testing.T) {
	h, err := password.NewHasher(password.Params{Memory: 64, Time: 1, Threads: 1, SaltLength: 16, KeyLength: 32})
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
	_, err = c.Check(newEndsAfterARun(h), Attempt{Login: "ann@example.com", Password: "\uff48unter1", FailureAction: "login.failed"})
	t.Logf("Check: %v; throttle checked %v, took back %v; failures %d, events %d", err, th.checked, th.succeeded, rec.failed, len(rec.events))
	if errors.Is(err, apierr.ErrTemporarilyUnavailable) {
		t.Fatalf("a tested wrong guess answered %v, its throttle attempt taken back (%v)", err, th.succeeded)
	}
	if !errors.Is(err, ErrBadCredentials) || rec.failed != 1 || len(rec.events) != 1 || len(th.succeeded) != 0 {
		t.Fatalf("Check = %v, failures %d, events %d, taken back %v; want a counted refusal", err, rec.failed, len(rec.events), th.succeeded)
	}
}

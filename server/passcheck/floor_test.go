package passcheck

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/policy/password"
)

// fakeClock is the padding's clock: it moves only when a fake
// verification or the padding's sleep moves it.
type fakeClock struct {
	t     time.Time
	slept []time.Duration
}

func (c *fakeClock) now() time.Time { return c.t }
func (c *fakeClock) sleep(ctx context.Context, d time.Duration) {
	c.slept = append(c.slept, d)
	c.t = c.t.Add(d)
}

// timedHasher verifies hashes at the cost its table gives the
// verification's class, moving the fake clock by it: the password of every
// hash is "right"; the dummy costs dummy a run (password.RunsTwice: two for
// a password NFKC changes under password.ForeignCost).
type timedHasher struct {
	clk   *fakeClock
	cost  map[string]time.Duration // by password.VerifyClass
	dummy time.Duration
}

func (h *timedHasher) Verify(_ context.Context, hash, pw string, opts ...password.VerifyOption) (bool, bool, time.Duration, error) {
	class := password.VerifyClass(hash, pw, opts...)
	if class == "unreadable" {
		return false, false, 0, errors.New("malformed hash") // refused before hashing
	}
	h.clk.t = h.clk.t.Add(h.cost[class])
	return pw == "right", false, h.cost[class], nil
}

func (h *timedHasher) DummyVerify(_ context.Context, pw string, opts ...password.VerifyOption) (time.Duration, error) {
	d := h.dummy
	if password.RunsTwice(pw, opts...) {
		d *= 2
	}
	h.clk.t = h.clk.t.Add(d)
	return d, nil
}

// phcArgon2id is a well-formed argon2id hash of the parameters, of no
// password in particular (timedHasher only reads its class).
func phcArgon2id(m, t, p int) string {
	b := base64.RawStdEncoding.EncodeToString
	return fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", m, t, p, b(make([]byte, 16)), b(make([]byte, 32)))
}

// TestRefusalFloor: every refusal takes at least the slowest class
// verified so far (capped at MaxRefusalFloor), the padding slept for the
// difference and never a success. Fails before this change: a wrong
// password for an account with a slower imported hash took longer than an
// unknown account's dummy verification, which nothing padded.
func TestRefusalFloor(t *testing.T) {
	const (
		current = 40 * time.Millisecond
		bc      = 140 * time.Millisecond
		huge    = 5 * time.Second
	)
	bcrypt10 := "$2b$10$" + strings.Repeat("a", 53)
	users := fakeUsers{
		"usr_1": {ID: "usr_1", Email: "ann@example.com", PasswordHash: phcArgon2id(19456, 2, 1), Active: true},
		"usr_2": {ID: "usr_2", Email: "imp@example.com", PasswordHash: bcrypt10, Active: true},
		"usr_3": {ID: "usr_3", Email: "odd@example.com", PasswordHash: "$unknown$x", Active: true},
		"usr_4": {ID: "usr_4", Email: "fed@example.com", Active: true},
		"usr_5": {ID: "usr_5", Email: "old@example.com", PasswordHash: phcArgon2id(65536, 3, 4), Active: true},
		"usr_6": {ID: "usr_6", Email: "bob@example.com", PasswordHash: phcArgon2id(19456, 2, 1), Active: false},
	}
	clk := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	h := &timedHasher{clk: clk, dummy: current, cost: map[string]time.Duration{
		"argon2id m=19456,t=2,p=1,k=32": current, "bcrypt cost 10": bc, "argon2id m=65536,t=3,p=4,k=32": huge,
	}}
	c, err := New(Deps{Users: users, Hasher: h})
	if err != nil {
		t.Fatal(err)
	}
	c.now, c.sleep = clk.now, clk.sleep
	for i, step := range []struct {
		name      string
		login, pw string
		ok        bool
		took      time.Duration // the verification and the padding
	}{
		{"unknown account, nothing slower seen", "ghost@example.com", "x", false, current},
		{"wrong password, current hash", "ann@example.com", "x", false, current},
		{"wrong password, bcrypt: its first refusal sets the floor", "imp@example.com", "x", false, bc},
		{"unknown account after it", "ghost@example.com", "x", false, bc},
		{"wrong password, current hash after it", "ann@example.com", "x", false, bc},
		{"unreadable hash", "odd@example.com", "x", false, bc},
		{"no password", "fed@example.com", "", false, bc},
		{"deactivated, right password", "bob@example.com", "right", false, bc},
		{"success is not padded", "ann@example.com", "right", true, current},
		{"bcrypt success is not padded", "imp@example.com", "right", true, bc},
		// Its first sample counts for maxSampleRatio times the floor at
		// most (one outlier cannot jump it); the next raises it further.
		{"a slower class than the cap", "old@example.com", "x", false, huge},
		{"unknown account: padded to the first sample's bound", "ghost@example.com", "x", false, maxSampleRatio * bc},
		{"the slower class again", "old@example.com", "x", false, huge},
		{"unknown account: padded to the cap", "ghost@example.com", "x", false, MaxRefusalFloor},
		{"bcrypt wrong password: padded to the cap", "imp@example.com", "x", false, MaxRefusalFloor},
	} {
		start, sleeps := clk.now(), len(clk.slept)
		_, err := c.Check(context.Background(), Attempt{Login: step.login, Password: step.pw})
		if (err == nil) != step.ok || (err != nil && !errors.Is(err, ErrBadCredentials)) {
			t.Fatalf("%d %s: Check = %v, want ok %v", i, step.name, err, step.ok)
		}
		if got := clk.now().Sub(start); got != step.took {
			t.Errorf("%d %s: took %s, want %s", i, step.name, got, step.took)
		}
		if step.ok && len(clk.slept) != sleeps {
			t.Errorf("%d %s: a success slept %s", i, step.name, clk.slept[sleeps:])
		}
	}
}

// twoRunStep is one check of TestRefusalFloorTwoRunClass and the time it
// takes, the verification and the padding.
type twoRunStep struct {
	name, login, pw string
	took            time.Duration
}

// TestRefusalFloorTwoRunClass: a wrong password that NFKC changes, for an
// account whose hash Portcullis may not have made (PasswordHashForeign),
// runs the hash twice: that is its own class, so once one was refused
// every refusal takes its time. While such an account exists, the same
// password runs twice for every account (password.ForeignCost: an unknown
// account's dummy verification, an account with Portcullis's own hash), a
// plain one once; with no account marked, it runs once for each. Found by
// a review: every verification of such a password ran twice, the dummy's
// included; and then (found by a review of that change) only a marked
// account's did, so the hashing load told it from an unknown account.
func TestRefusalFloorTwoRunClass(t *testing.T) {
	const current = 40 * time.Millisecond
	ligature := "wrong \ufb01"
	for _, tt := range []struct {
		name   string
		marked bool
		steps  []twoRunStep
	}{
		{"one_marked", true, []twoRunStep{
			{"unknown account, plain", "ghost@example.com", "x", current},
			{"own hash, plain", "own@example.com", "x", current},
			{"foreign hash, plain password: one run", "imp@example.com", "x", current},
			{"unknown account, ligature: two runs, its own class", "ghost@example.com", ligature, 2 * current},
			{"own hash, ligature: two runs", "own@example.com", ligature, 2 * current},
			{"foreign hash, ligature: two runs", "imp@example.com", ligature, 2 * current},
			{"own hash, plain after it: padded", "own@example.com", "x", 2 * current},
		}},
		{"none_marked", false, []twoRunStep{
			{"unknown account, ligature: one run", "ghost@example.com", ligature, current},
			{"own hash, ligature: one run", "own@example.com", ligature, current},
			{"unmarked hash, ligature: one run", "imp@example.com", ligature, current},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			users := fakeUsers{
				"usr_1": {ID: "usr_1", Email: "own@example.com", PasswordHash: phcArgon2id(19456, 2, 1), Active: true},
				"usr_2": {ID: "usr_2", Email: "imp@example.com", PasswordHash: phcArgon2id(19456, 2, 1), PasswordHashForeign: tt.marked, Active: true},
			}
			clk := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
			h := &timedHasher{clk: clk, dummy: current, cost: map[string]time.Duration{
				"argon2id m=19456,t=2,p=1,k=32": current, "argon2id m=19456,t=2,p=1,k=32 twice": 2 * current,
			}}
			c, err := New(Deps{Users: users, Hasher: h})
			if err != nil {
				t.Fatal(err)
			}
			c.now, c.sleep = clk.now, clk.sleep
			for i, step := range tt.steps {
				start := clk.now()
				if _, err := c.Check(context.Background(), Attempt{Login: step.login, Password: step.pw}); !errors.Is(err, ErrBadCredentials) {
					t.Fatalf("%d %s: Check = %v, want ErrBadCredentials", i, step.name, err)
				}
				if got := clk.now().Sub(start); got != step.took {
					t.Errorf("%d %s: took %s, want %s", i, step.name, got, step.took)
				}
			}
		})
	}
}

// TestRefusalFloorEstimate: a class's estimate follows its verifications
// but one outlier (a garbage collection pause) moves it by a quarter of at
// most maxSampleRatio times the floor and fades, rather than setting the
// floor for good; a new class's first sample is bounded alike; the floor
// is the largest class's estimate.
func TestRefusalFloorEstimate(t *testing.T) {
	ms := time.Millisecond
	var f refusalFloor
	if got := f.floor(); got != 0 {
		t.Fatalf("empty floor %s", got)
	}
	for _, tt := range []struct {
		class string
		d     time.Duration
		floor time.Duration
	}{
		{"a", 100 * ms, 100 * ms},
		{"a", 100 * ms, 100 * ms},
		{"a", 900 * ms, 275 * ms}, // an outlier: bounded at 800 ms, a quarter of the way
		{"a", 100 * ms, 231250 * time.Microsecond},
		{"b", 50 * ms, 231250 * time.Microsecond}, // a faster class does not lower it
		{"b", 0, 231250 * time.Microsecond},       // nothing hashed: no sample
		{"c", 3 * time.Second, 1850 * ms},         // a first sample: bounded at 8 x 231.25 ms
		{"c", 3 * time.Second, MaxRefusalFloor},   // learnt further, and capped
	} {
		f.observe(tt.class, tt.d)
		if got := f.floor(); got != tt.floor {
			t.Fatalf("after %s %s: floor %s, want %s", tt.class, tt.d, got, tt.floor)
		}
	}
	// Classes beyond the bound share one estimate.
	var g refusalFloor
	for i := range maxClasses + 10 {
		g.observe(fmt.Sprint(i), ms)
	}
	if len(g.est) != maxClasses+1 {
		t.Fatalf("%d classes kept, want %d", len(g.est), maxClasses+1)
	}
}

// TestRefusalPaddingEndsWithTheRequest: the padding's sleep returns when
// the request's context ends, and a request already gone is not padded.
func TestRefusalPaddingEndsWithTheRequest(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan struct{})
	go func() { sleepCtx(ctx, time.Hour); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("sleepCtx did not return when its context ended")
	}
	clk := &fakeClock{t: time.Unix(0, 0)}
	c, err := New(Deps{Users: fakeUsers{}, Hasher: &timedHasher{clk: clk, dummy: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	c.now, c.sleep = clk.now, clk.sleep
	c.floor.observe("slow", time.Second)
	if _, err := c.Check(ctx, Attempt{Login: "ghost@example.com", Password: "x"}); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("Check = %v", err)
	}
	if len(clk.slept) != 0 {
		t.Fatalf("a gone request slept %v", clk.slept)
	}
}

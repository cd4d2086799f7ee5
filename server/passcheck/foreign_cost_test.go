package passcheck

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/policy/password"
	"github.com/portcullis-auth/portcullis/store"
)

// runCounter is a Hasher that counts the runs of the hash each
// verification makes, by the password package's own rule
// (password.VerifyClass: " twice" for a verification that runs the hash
// twice); no password matches.
type runCounter struct {
	mu   sync.Mutex
	runs int
}

func (h *runCounter) add(n int) {
	h.mu.Lock()
	h.runs += n
	h.mu.Unlock()
}

func (h *runCounter) Verify(_ context.Context, hash, pw string, opts ...password.VerifyOption) (bool, bool, time.Duration, error) {
	n := 1
	if strings.HasSuffix(password.VerifyClass(hash, pw, opts...), " twice") {
		n = 2
	}
	h.add(n)
	return false, false, time.Duration(n) * time.Millisecond, nil
}

func (h *runCounter) DummyVerify(_ context.Context, pw string, opts ...password.VerifyOption) (time.Duration, error) {
	n := 1
	if password.RunsTwice(pw, opts...) {
		n = 2
	}
	h.add(n)
	return time.Duration(n) * time.Millisecond, nil
}

// marksUsers are fakeUsers whose AnyForeignPasswordHash counts its reads and
// may fail.
type marksUsers struct {
	fakeUsers
	mu    sync.Mutex
	reads int
	err   error
}

func (u *marksUsers) AnyForeignPasswordHash(ctx context.Context) (bool, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.reads++
	if u.err != nil {
		return false, u.err
	}
	return u.fakeUsers.AnyForeignPasswordHash(ctx)
}

// TestRefusalCostsTheCostliestRuns: while any account may still be marked
// PasswordHashForeign, a refused check of a password NFKC changes runs the
// hash as often as the verification of a marked account would (twice):
// for an unknown account (the dummy verification), a machine user, a
// person without a password and an account whose hash Portcullis made
// alike; once no account is marked, each runs it once again. A store
// error reading the marks counts as marked. Found by a review: a marked
// account (every account that existed before migration 27) cost two runs
// for such a guess and an unknown account one, so a batch of concurrent
// guesses told from the hashing load whether an account exists.
func TestRefusalCostsTheCostliestRuns(t *testing.T) {
	own := phcArgon2id(19456, 2, 1)
	accounts := func(marked bool) fakeUsers {
		return fakeUsers{
			"usr_1": {ID: "usr_1", Email: "own@example.com", PasswordHash: own, Active: true},
			"usr_2": {ID: "usr_2", Email: "imp@example.com", PasswordHash: own, PasswordHashForeign: marked, Active: true},
			"usr_3": {ID: "usr_3", Email: "fed@example.com", Active: true},
			"usr_4": {ID: "usr_4", Email: "off@example.com", PasswordHash: own, Active: false},
		}
	}
	const lig = "wrong \ufb01" // NFKC: "wrong fi"
	for _, tt := range []struct {
		name   string
		marked bool
		err    error // of AnyForeignPasswordHash
		login  string
		pw     string
		runs   int
	}{
		{"ok/marked_account_ligature", true, nil, "imp@example.com", lig, 2},
		{"ok/unknown_ligature_while_one_is_marked", true, nil, "ghost@example.com", lig, 2},
		{"ok/own_hash_ligature_while_one_is_marked", true, nil, "own@example.com", lig, 2},
		{"ok/no_password_ligature_while_one_is_marked", true, nil, "fed@example.com", lig, 2},
		{"ok/deactivated_ligature_while_one_is_marked", true, nil, "off@example.com", lig, 2},
		{"ok/unknown_plain_while_one_is_marked", true, nil, "ghost@example.com", "wrong", 1},
		{"ok/marked_account_plain", true, nil, "imp@example.com", "wrong", 1},
		{"ok/unknown_ligature_none_marked", false, nil, "ghost@example.com", lig, 1},
		{"ok/own_hash_ligature_none_marked", false, nil, "own@example.com", lig, 1},
		{"ok/unknown_ligature_marks_unreadable", false, errors.New("database down"), "ghost@example.com", lig, 2},
		{"ok/own_hash_ligature_marks_unreadable", false, errors.New("database down"), "own@example.com", lig, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := &runCounter{}
			c, err := New(Deps{Users: &marksUsers{fakeUsers: accounts(tt.marked), err: tt.err}, Hasher: h})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Check(context.Background(), Attempt{Login: tt.login, Password: tt.pw}); !errors.Is(err, ErrBadCredentials) {
				t.Fatalf("Check = %v, want ErrBadCredentials", err)
			}
			if h.runs != tt.runs {
				t.Fatalf("the refusal ran the hash %d times, want %d", h.runs, tt.runs)
			}
		})
	}
}

// TestForeignMarksReadOncePerMinute: the Checker reads whether any account
// is marked at most once a minute (its clock), keeps the answer that long,
// and reads again after it: a mark cleared meanwhile brings the dummy
// verification back to one run. A failed read is not kept.
func TestForeignMarksReadOncePerMinute(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	users := &marksUsers{fakeUsers: fakeUsers{
		"usr_2": {ID: "usr_2", Email: "imp@example.com", PasswordHash: phcArgon2id(19456, 2, 1), PasswordHashForeign: true, Active: true},
	}}
	h := &runCounter{}
	c, err := New(Deps{Users: users, Hasher: h})
	if err != nil {
		t.Fatal(err)
	}
	c.now, c.sleep = clk.now, clk.sleep
	guess := func() int {
		t.Helper()
		before := h.runs
		if _, err := c.Check(context.Background(), Attempt{Login: "ghost@example.com", Password: "wrong \ufb01"}); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("Check = %v", err)
		}
		return h.runs - before
	}
	if runs := guess(); runs != 2 || users.reads != 1 {
		t.Fatalf("marked: %d runs, %d reads; want 2, 1", runs, users.reads)
	}
	// The last mark is cleared (the account signed in, or an operator's UPDATE).
	users.fakeUsers["usr_2"] = store.User{ID: "usr_2", Email: "imp@example.com", PasswordHash: phcArgon2id(19456, 2, 1), Active: true}
	clk.t = clk.t.Add(59 * time.Second)
	if runs := guess(); runs != 2 || users.reads != 1 {
		t.Fatalf("within the minute: %d runs, %d reads; want the kept answer: 2, 1", runs, users.reads)
	}
	clk.t = clk.t.Add(time.Second)
	if runs := guess(); runs != 1 || users.reads != 2 {
		t.Fatalf("after the minute: %d runs, %d reads; want 1, 2", runs, users.reads)
	}
	users.err = errors.New("database down")
	clk.t = clk.t.Add(time.Minute)
	if runs := guess(); runs != 2 || users.reads != 3 {
		t.Fatalf("store error: %d runs, %d reads; want 2 (counted as marked), 3", runs, users.reads)
	}
	users.err = nil
	if runs := guess(); runs != 1 || users.reads != 4 {
		t.Fatalf("after the error: %d runs, %d reads; want 1, 4 (the error was not kept)", runs, users.reads)
	}
}

package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/store/redisstate"
	"github.com/portcullis-auth/portcullis/store/sqlstate"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
	"github.com/portcullis-auth/portcullis/store/testservers"
)

func TestMain(m *testing.M) { testservers.Main(m) }

// backends are the token states the throttle runs on, each fresh per test.
var backends = []struct {
	name string
	open func(t *testing.T) Counters
}{
	{"redis", func(t *testing.T) Counters {
		u, prefix := testservers.RedisURL(t)
		c, err := redisstate.NewClient(u)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return redisstate.New(c, redisstate.Options{Prefix: prefix})
	}},
	{"postgres", func(t *testing.T) Counters { return sqlState(t, testservers.PostgresURL(t)) }},
	{"sqlite", func(t *testing.T) Counters {
		return sqlState(t, "sqlite://"+filepath.Join(t.TempDir(), "state.db"))
	}},
}

func sqlState(t *testing.T, url string) Counters {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := sqlstore.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return sqlstate.New(s.DB())
}

// clock is a settable time for the limiter.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// race releases n checks of one account from n addresses at once (a
// barrier) and returns how many were admitted; every refusal must be the
// 429 with a Retry-After.
func race(t *testing.T, l *Limiter, n int, login string) int {
	t.Helper()
	var start, done sync.WaitGroup
	start.Add(1)
	errs := make([]error, n)
	for i := range n {
		done.Add(1)
		go func() {
			defer done.Done()
			start.Wait()
			errs[i] = l.CheckLogin(context.Background(), fmt.Sprintf("198.51.100.%d", i+1), login)
		}()
	}
	start.Done()
	done.Wait()
	admitted := 0
	for _, err := range errs {
		var ae *apierr.Error
		switch {
		case err == nil:
			admitted++
		case errors.As(err, &ae) && errors.Is(err, apierr.ErrRateLimited) && ae.RetryAfterSeconds >= 1:
		default:
			t.Fatalf("refusal %v, want 429 rate_limited with Retry-After", err)
		}
	}
	return admitted
}

// TestLoginThrottleReservesOneGuessPerWindow: on every backend, however many
// checks of one account arrive at once from different addresses, the free
// attempts below the failure limit are handed out exactly, and from the
// limit on exactly one check is admitted per delay window; a success clears
// the account. Fails before this change: every racer passed the peek.
func TestLoginThrottleReservesOneGuessPerWindow(t *testing.T) {
	const limit, racers = 3, 24
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			clk := &clock{}
			clk.ns.Store(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
			rules := DefaultRules(limit)
			rules.LoginFailureWindow = 24 * time.Hour // failures outlive every delay below
			l := New(b.open(t), rules, nil)
			l.now = clk.now
			const login = "victim@example.com"
			if got := race(t, l, racers, login); got != limit {
				t.Fatalf("fresh account: %d checks admitted at once, want the %d free attempts", got, limit)
			}
			for window := 0; window < 4; window++ {
				if got := race(t, l, racers, login); got != 0 {
					t.Fatalf("window %d still open: %d admitted, want 0", window, got)
				}
				clk.advance(5 * time.Minute) // the longest delay
				if got := race(t, l, racers, login); got != 1 {
					t.Fatalf("window %d: %d checks admitted, want exactly 1", window, got)
				}
			}
			// Another account is untouched, and a success clears this one.
			if got := race(t, l, 1, "bystander@example.com"); got != 1 {
				t.Fatal("another account is throttled")
			}
			l.LoginSucceeded(context.Background(), "198.51.100.1", login)
			if got := race(t, l, racers, login); got != limit {
				t.Fatalf("after a success: %d admitted, want %d", got, limit)
			}
		})
	}
}

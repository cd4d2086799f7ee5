package ratelimit

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/apierr"
)

// keysSeen records the counter keys Hit is asked for.
type keysSeen struct {
	Counters
	mu   sync.Mutex
	keys []string
}

func (k *keysSeen) Hit(ctx context.Context, key string, window time.Duration, now time.Time) (int64, time.Duration, error) {
	k.mu.Lock()
	k.keys = append(k.keys, key)
	k.mu.Unlock()
	return k.Counters.Hit(ctx, key, window, now)
}

// TestAllowCodeCountsPerBrowserSession: on every backend, one browser
// session mints CodesPerBrowserSession codes a window, then each is the
// 429 with Retry-After until the window ends; another session has a
// budget of its own; the counter's key holds a hash of the session id,
// never the id; a nil limiter (rate limits off) allows everything.
func TestAllowCodeCountsPerBrowserSession(t *testing.T) {
	const sessionA, sessionB = "Qm9keSBvZiBzZXNzaW9uIEE", "Qm9keSBvZiBzZXNzaW9uIEI"
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			rules := DefaultRules(5)
			seen := &keysSeen{Counters: b.open(t)}
			refusals := 0
			l, clk := limiterAt(seen, rules, func(endpoint string) {
				if endpoint == "code_session" {
					refusals++
				}
			})
			for i := range rules.CodesPerBrowserSession.Limit {
				if err := l.AllowCode(ctx, sessionA); err != nil {
					t.Fatalf("code %d of the session: %v", i+1, err)
				}
			}
			err := l.AllowCode(ctx, sessionA)
			var ae *apierr.Error
			if !errors.As(err, &ae) || !errors.Is(err, apierr.ErrRateLimited) || ae.RetryAfterSeconds < 1 || refusals != 1 {
				t.Fatalf("past the budget: %v (%d refusals observed), want 429 rate_limited with Retry-After", err, refusals)
			}
			if err := l.AllowCode(ctx, sessionB); err != nil {
				t.Fatalf("another session: %v", err)
			}
			clk.advance(rules.CodesPerBrowserSession.Window)
			if err := l.AllowCode(ctx, sessionA); err != nil {
				t.Fatalf("the next window: %v", err)
			}
			for _, k := range seen.keys {
				if l := strings.ToLower(k); strings.Contains(l, strings.ToLower(sessionA)) || strings.Contains(l, strings.ToLower(sessionB)) {
					t.Fatalf("key %q holds a session id", k)
				}
			}
			var off *Limiter
			if err := off.AllowCode(ctx, sessionA); err != nil {
				t.Fatalf("rate limits off: %v", err)
			}
		})
	}
}

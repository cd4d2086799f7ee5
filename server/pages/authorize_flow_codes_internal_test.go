package pages

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
)

// codeBudget is a CodeLimiter allowing limit codes per browser session
// (or failing every count with down), recording the ids it counted.
type codeBudget struct {
	mu      sync.Mutex
	limit   int
	down    bool
	counted map[string]int
}

func (b *codeBudget) AllowCode(_ context.Context, sessionID string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.down {
		return apierr.ErrTemporarilyUnavailable.WithCause(errors.New("rate limit: connection refused"))
	}
	b.counted[sessionID]++
	if b.counted[sessionID] > b.limit {
		return apierr.ErrRateLimited.WithRetryAfter(42)
	}
	return nil
}

// TestAuthorizeFlowCountsCodesPerBrowserSession: every code the flow
// mints is first counted against the browser session that mints it
// (issueWithGrant through Codes), whether answered at once (single
// sign-on) or on a page of a kept request (consent): past the session's
// budget the limiter's 429 is returned (the pages' 429 page, no redirect)
// and neither the code nor its grant is kept. Another session of the same
// person has its own budget; a limiter that cannot answer fails closed
// (503). Before the change nothing was counted and every code was kept.
func TestAuthorizeFlowCountsCodesPerBrowserSession(t *testing.T) {
	const limit = 2
	for _, tc := range []struct {
		name    string
		used    map[string]int // codes each session minted before
		down    bool
		session string
		consent bool  // a third-party request answered on its consent page, not at once
		want    error // nil: a code
		status  int
	}{
		{name: "ok/sso_within_the_budget", used: map[string]int{"bs-ann": limit - 1}, session: "bs-ann"},
		{name: "fail/sso_past_the_budget", used: map[string]int{"bs-ann": limit}, session: "bs-ann",
			want: apierr.ErrRateLimited, status: http.StatusTooManyRequests},
		{name: "ok/another_session_of_the_same_person", used: map[string]int{"bs-ann": limit}, session: "bs-ann-2"},
		{name: "ok/consent_within_the_budget", used: map[string]int{"bs-ann": limit - 1}, session: "bs-ann", consent: true},
		{name: "fail/consent_past_the_budget", used: map[string]int{"bs-ann": limit}, session: "bs-ann", consent: true,
			want: apierr.ErrRateLimited, status: http.StatusTooManyRequests},
		{name: "fail/budget_unavailable", down: true, session: "bs-ann",
			want: apierr.ErrTemporarilyUnavailable, status: http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newFlowEnv()
			budget := &codeBudget{limit: limit, down: tc.down, counted: map[string]int{}}
			for id, n := range tc.used {
				budget.counted[id] = n
			}
			env.f.Codes = budget
			bs := session("usr_ann", env.now.Add(-time.Minute))
			bs.ID = tc.session
			ctx := context.Background()

			var s Step
			var err error
			if tc.consent {
				id := env.authorize(t, "third")
				s, err = env.f.Proceed(ctx, id, bs, DoneConsent, accounts.Meta{IP: "192.0.2.1"})
			} else {
				q := url.Values{"client_id": {"first"}, "redirect_uri": {testRedirect}, "response_type": {"code"}, "scope": {"openid"},
					"state": {"st"}, "code_challenge": {flowChallenge}, "code_challenge_method": {"S256"}}
				s, err = env.f.AuthorizeNow(ctx, httptest.NewRequest(http.MethodGet, "/oauth2/authorize?"+q.Encode(), nil), bs,
					accounts.Meta{IP: "192.0.2.1"})
			}

			if !tc.down && budget.counted[tc.session] != tc.used[tc.session]+1 {
				t.Fatalf("session %s counted %d codes, want %d", tc.session, budget.counted[tc.session], tc.used[tc.session]+1)
			}
			codes, grants := len(env.once.codes(t)), len(env.sessions.added)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if q := clientAnswer(t, s); q.Get("code") == "" || codes != 1 || grants != 1 {
					t.Fatalf("answer %v, %d codes and %d grants kept; want a code, kept with its grant", q, codes, grants)
				}
				return
			}
			if !errors.Is(err, tc.want) || apierr.From(err).Status != tc.status || s.Kind != 0 || s.Location != "" {
				t.Fatalf("step %+v, error %v; want %v (%d) and no answer to the client", s, err, tc.want, tc.status)
			}
			if tc.status == http.StatusTooManyRequests && apierr.From(err).RetryAfterSeconds != 42 {
				t.Fatalf("Retry-After %d, want the limiter's", apierr.From(err).RetryAfterSeconds)
			}
			if codes != 0 || grants != 0 {
				t.Fatalf("refused, yet %d codes and %d grants kept", codes, grants)
			}
		})
	}
}

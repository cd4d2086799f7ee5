package server_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// codeBudget is ratelimit.DefaultRules' CodesPerBrowserSession: the
// authorization codes one browser session may mint a minute.
const codeBudget = 120

// TestSSOCodesLimitedPerBrowserSession: a signed-in browser is answered
// with a code at once (single sign-on), and each code is kept until it
// expires with a grant added to the session; the codes a browser session
// mints count against its own budget. One browser, signed in and having
// consented to a third-party client, repeats the authorization request for
// the first-party and the third-party client, twice the budget at once from
// four workers: at most the budget of codes (its sign-in's and consent's
// included) are minted, kept and recorded as grants of its session; the
// rest are the error page with 429 and Retry-After, send nothing to the
// client and keep nothing. A second browser session of the same person, at
// the same address (people behind one NAT), still signs in at once. Found
// by a review: before the change every request was answered with a code
// and every code was kept.
func TestSSOCodesLimitedPerBrowserSession(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSignIn(t, b, map[string]string{"PORTCULLIS_RATE_LIMITS": "on"})
			ctx := context.Background()
			user := siUser(t, d, siEmail)
			first := d.oauth("first", d.firstSecret, oidc.ScopeOpenID)
			third := d.oauth("third", d.thirdSecret, oidc.ScopeOpenID)

			// The browser signs in (a code) and consents to the third
			// party (another): two codes of its session's budget.
			e := &oidccEnv{d: d, mode: "query", hc: siBrowser(t), email: siEmail}
			if l := e.signIn(t, first); !l.sawLogin {
				t.Fatal("the first sign-in showed no login page")
			}
			if l := e.signIn(t, third); !l.sawConsent || l.sawLogin {
				t.Fatalf("the third party: consent %v, login %v; want the consent page only", l.sawConsent, l.sawLogin)
			}
			live, err := d.in.App.BrowserSessions.ListBrowserSessions(ctx, user.ID, time.Now())
			if err != nil || len(live) != 1 {
				t.Fatalf("browser sessions %+v, %v; want the one", live, err)
			}
			sessionID := live[0].ID
			const minted = 2

			const n, workers = 2 * codeBudget, 4
			type answer struct {
				status      int
				code        string
				location    string
				retryAfter  string
				contentType string
			}
			answers := make(chan answer, n)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for w := range workers {
				conf := first
				if w%2 == 1 {
					conf = third
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					for range n / workers {
						req, err := http.NewRequest(http.MethodGet, conf.AuthCodeURL("sso", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())), nil)
						if err != nil {
							t.Error(err)
							return
						}
						resp, err := e.hc.Do(req)
						if err != nil {
							t.Errorf("authorize: %v", err)
							return
						}
						body, err := io.ReadAll(resp.Body)
						resp.Body.Close()
						if err != nil {
							t.Errorf("authorize: %v", err)
							return
						}
						if err := st.CheckOpenAPI(req, nil, resp, body); err != nil {
							t.Errorf("authorize (%d) does not match the OpenAPI description: %v", resp.StatusCode, err)
						}
						a := answer{status: resp.StatusCode, location: resp.Header.Get("Location"), retryAfter: resp.Header.Get("Retry-After"),
							contentType: resp.Header.Get("Content-Type")}
						if loc, err := url.Parse(a.location); err == nil && strings.HasPrefix(a.location, siCallback+"?") {
							a.code = loc.Query().Get("code")
						}
						answers <- a
					}
				}()
			}
			close(start)
			wg.Wait()
			close(answers)

			var codes []string
			refused := 0
			for a := range answers {
				switch {
				case a.status == http.StatusSeeOther && a.code != "":
					codes = append(codes, a.code)
				case a.status == http.StatusTooManyRequests && a.retryAfter != "" && a.location == "" &&
					strings.HasPrefix(a.contentType, "text/html"):
					refused++
				default:
					t.Fatalf("an authorization request answered %+v, want a code or the 429 page with Retry-After", a)
				}
			}
			kept := 0
			for _, c := range codes {
				if _, err := d.in.App.Once.PeekOnce(ctx, store.OnceAuthCode, token.HashSecret(c), time.Now()); err == nil {
					kept++
				}
			}
			bs, err := d.in.App.BrowserSessions.ListBrowserSessions(ctx, user.ID, time.Now())
			if err != nil || len(bs) != 1 || bs[0].ID != sessionID {
				t.Fatalf("browser sessions %+v, %v; want the one", bs, err)
			}
			grants := len(bs[0].Grants)
			if minted+len(codes) > codeBudget || kept != len(codes) || refused != n-len(codes) || grants != minted+len(codes) {
				t.Fatalf("no budget: %d of %d single sign-ons answered with a code (%d refused), %d codes kept, %d grants in the session; "+
					"want at most %d codes in the session, each kept and recorded, and nothing kept for a refusal",
					len(codes), n, refused, kept, grants, codeBudget-minted)
			}

			// A second browser session of the same person, at the same
			// address, has a budget of its own.
			other := &oidccEnv{d: d, mode: "query", hc: siBrowser(t), email: siEmail}
			other.signIn(t, first)
			if r := other.run(t, first.AuthCodeURL("again", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))); r.sawLogin ||
				r.params.Get("code") == "" {
				t.Fatalf("the second session's single sign-on: %+v, want a code at once", r)
			}
		})
	}
}

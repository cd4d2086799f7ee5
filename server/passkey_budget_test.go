package server_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/passkeys/passkeystest"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// pendingBudget is ratelimit.DefaultRules' PendingPerIP: the records of
// interactive state one address may have kept a minute.
const pendingBudget = 180

// budgetSettings turn the rate limits on and believe X-Forwarded-For from
// loopback, so that a test speaks from several addresses.
var budgetSettings = map[string]string{"PORTCULLIS_RATE_LIMITS": "on", "PORTCULLIS_TRUSTED_PROXIES": "127.0.0.1/32"}

// from makes a request come from ip (through the trusted proxy).
func from(ip string) st.Option { return st.WithHeader("X-Forwarded-For", ip) }

// TestPasskeyCeremoniesLimitedPerAddress: every begun WebAuthn ceremony
// (about 600 bytes kept for five minutes) counts in its caller's address
// budget of kept records (AllowPending), as every other record of
// interactive state does. Twice the budget of registration begins, sent at
// once by four workers from one address with one token, keep at most the
// budget; the rest are the /auth/* 429 (rate_limited, Retry-After) and keep
// nothing. The same person at another address is unaffected: a begin and
// its finish register a passkey. Found by a review: before the change all
// the begins answered 200 and every ceremony was kept.
func TestPasskeyCeremoniesLimitedPerAddress(t *testing.T) {
	for _, b := range mfaBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newMFADeployment(t, b, 0, budgetSettings)
			ann := d.token(t, d.ann, "web")
			const n, workers = 2 * pendingBudget, 4
			type answer struct {
				status            int
				handle, errorCode string
				retryAfter        string
			}
			answers := make(chan answer, n)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					for i := 0; i < n/workers; i++ {
						r, err := d.c.TryDo(http.MethodPost, "/auth/mfa/webauthn/register/begin", nil, "", ann, from("203.0.113.7"))
						if err != nil {
							t.Errorf("begin: %v", err)
							return
						}
						var body struct {
							Handle string `json:"handle"`
							Error  string `json:"error"`
						}
						_ = json.Unmarshal(r.Body, &body)
						answers <- answer{status: r.StatusCode, handle: body.Handle, errorCode: body.Error, retryAfter: r.Header.Get("Retry-After")}
					}
				}()
			}
			close(start)
			wg.Wait()
			close(answers)

			begun, refused := 0, 0
			var handles []string
			for a := range answers {
				switch {
				case a.status == http.StatusOK && a.handle != "":
					begun++
					handles = append(handles, a.handle)
				case a.status == http.StatusTooManyRequests && a.errorCode == "rate_limited" && a.retryAfter != "":
					refused++
				default:
					t.Fatalf("a begin answered %d (error %q, Retry-After %q), want 200 or the 429 rate_limited with Retry-After",
						a.status, a.errorCode, a.retryAfter)
				}
			}
			live := 0
			for _, h := range handles {
				k := sha256.Sum256([]byte(h))
				if _, err := d.in.App.Once.PeekOnce(context.Background(), store.OnceWebAuthnSession, k[:], time.Now()); err == nil {
					live++
				}
			}
			if begun > pendingBudget || live > pendingBudget || refused != n-begun {
				t.Fatalf("no budget: %d of %d begins from one address answered 200 (%d refused), %d ceremonies kept; want at most %d",
					begun, n, refused, live, pendingBudget)
			}

			// The same person at another address registers a passkey.
			key, err := passkeystest.New(mfaOrigin)
			if err != nil {
				t.Fatal(err)
			}
			var opts passkeyOptions
			d.c.PostJSON("/auth/mfa/webauthn/register/begin", nil, ann, from("203.0.113.8")).ExpectStatus(http.StatusOK).JSON(&opts)
			resp, err := key.Create(opts.Options)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := json.Marshal(map[string]any{"handle": opts.Handle, "name": "Laptop", "credential": json.RawMessage(resp)})
			d.c.Do(http.MethodPost, "/auth/mfa/webauthn/register/finish", body, "application/json", ann, from("203.0.113.8")).
				ExpectStatus(http.StatusCreated)
		})
	}
}

// forwardedFrom sends every request of a browser from ip (through the
// trusted proxy).
type forwardedFrom struct {
	ip   string
	next http.RoundTripper
}

func (f forwardedFrom) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Forwarded-For", f.ip)
	return f.next.RoundTrip(r)
}

// budgetBrowser is siBrowser at ip.
func budgetBrowser(t *testing.T, ip string) *http.Client {
	t.Helper()
	hc := siBrowser(t)
	hc.Transport = forwardedFrom{ip: ip, next: http.DefaultTransport}
	return hc
}

// TestPasskeyLoginCeremoniesLimitedPerAddress: the login page's second
// step begins a WebAuthn login ceremony each time it is drawn, and
// switching between an authenticator code and a recovery code draws it
// again with the same mfa_token, keeping nothing else. Those redraws count
// in the address budget: from one address, at most the budget of drawn
// steps (with the pending request), then the error page with 429 and
// Retry-After. Someone at another address signing in meanwhile reaches the
// passkey step. Found by a review: before the change every redraw answered
// 200 and kept a ceremony. Both backends.
func TestPasskeyLoginCeremoniesLimitedPerAddress(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			settings := map[string]string{"PORTCULLIS_WEBAUTHN_RP_ID": "localhost", "PORTCULLIS_WEBAUTHN_ORIGINS": mfaOrigin}
			for k, v := range budgetSettings {
				settings[k] = v
			}
			d := newSignIn(t, b, settings)
			ctx := context.Background()
			u := siUser(t, d, siEmail)

			// A passkey (registered through the API, from an address of
			// its own), then an authenticator app: the step offers both.
			cl, err := d.in.App.Core.Store.GetClient(ctx, "first")
			if err != nil {
				t.Fatal(err)
			}
			tok, err := d.in.App.Tokens.IssueForUser(ctx, cl, u, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			api := d.in.Client(t)
			key, err := passkeystest.New(mfaOrigin)
			if err != nil {
				t.Fatal(err)
			}
			var opts passkeyOptions
			api.PostJSON("/auth/mfa/webauthn/register/begin", nil, st.Bearer(tok.AccessToken), from("198.51.100.1")).
				ExpectStatus(http.StatusOK).JSON(&opts)
			resp, err := key.Create(opts.Options)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := json.Marshal(map[string]any{"handle": opts.Handle, "credential": json.RawMessage(resp)})
			api.Do(http.MethodPost, "/auth/mfa/webauthn/register/finish", body, "application/json", st.Bearer(tok.AccessToken),
				from("198.51.100.1")).ExpectStatus(http.StatusCreated)
			st.EnrolTOTPPreviousStep(t, d.in.App.MFA, u)

			conf := d.oauth("first", d.firstSecret, oidc.ScopeOpenID)
			secondStep := func(hc *http.Client) siPage {
				t.Helper()
				p := siGet(t, hc, conf.AuthCodeURL("s", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))).
					submit(t, hc, url.Values{"username": {siEmail}, "password": {siPassword}})
				if p.StatusCode != http.StatusOK || !strings.Contains(p.body, `name="webauthn_handle"`) {
					t.Fatalf("after the password: %d, want the second step with the passkey button:\n%s", p.StatusCode, p.body)
				}
				return p
			}
			hc := budgetBrowser(t, "203.0.113.7")
			step := secondStep(hc)
			drawn := 2 // the pending request and the first ceremony
			var refused siPage
			actions := []string{"use_recovery_code", "use_totp"}
			for drawn <= 2*pendingBudget {
				p := step.submit(t, hc, url.Values{"mfa_action": {actions[drawn%2]}})
				if p.StatusCode != http.StatusOK {
					refused = p
					break
				}
				if !strings.Contains(p.body, `name="webauthn_handle"`) {
					t.Fatalf("a redraw without the passkey button:\n%s", p.body)
				}
				drawn++
			}
			if refused.Response == nil {
				t.Fatalf("no budget: %d records kept for one address by redrawing the second step, none refused", drawn)
			}
			if drawn > pendingBudget || refused.StatusCode != http.StatusTooManyRequests || refused.Header.Get("Retry-After") == "" ||
				!strings.HasPrefix(refused.Header.Get("Content-Type"), "text/html") {
				t.Fatalf("after %d kept: %d (Retry-After %q, Content-Type %q), want the 429 page after at most %d",
					drawn, refused.StatusCode, refused.Header.Get("Retry-After"), refused.Header.Get("Content-Type"), pendingBudget)
			}

			// Someone at another address is unaffected.
			secondStep(budgetBrowser(t, "203.0.113.8"))
		})
	}
}

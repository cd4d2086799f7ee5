package server_test

import (
	"bytes"
	"crypto/sha256"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// What unauthenticated callers make the token state keep: a pending
// authorization request and its tombstone, a held logout request, a
// console sign-in. Each is bounded in size (found by a review: 4 KiB of
// '<' in state became 24 KiB of JSON escapes, kept in the tombstone for a
// day) and in number per client address (no limit at all before).

// floodAuthorizeURL is an authorization request of the public client that
// shows the login page, with extra parameters.
func floodAuthorizeURL(d *siDeployment, extra ...string) string {
	q := url.Values{"client_id": {"spa"}, "redirect_uri": {siCallback}, "response_type": {"code"}, "scope": {"openid"},
		"code_challenge": {oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())}, "code_challenge_method": {"S256"}}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	return d.in.URL + "/oauth2/authorize?" + q.Encode()
}

// onceValue reads a single-use record through the real store without
// taking it.
func onceValue(t *testing.T, in *st.Instance, kind string, key []byte) []byte {
	t.Helper()
	v, err := in.App.Once.PeekOnce(t.Context(), kind, key, time.Now())
	if err != nil {
		t.Fatalf("read the %s record: %v", kind, err)
	}
	return v
}

// TestKeptRequestsBounded: a hostile but valid request makes the store
// keep about what it sent, not six times as much (no HTML escaping of
// single-use records); a state outside VSCHAR is refused with the error
// page, nothing kept; a POSTed logout request with a parameter no client
// could send is refused, and a valid one is kept at its own size; a
// console sign-in keeps at most 512 bytes of next. Failed before the
// change: the pending request of a 4 KiB state of '<' and a 1 KiB nonce
// was 30 KiB and its tombstone 24 KiB; a 60 KB logout form was held (and
// a 4 KiB state of '<' held as 24 KiB); a 4 KB next was kept whole.
func TestKeptRequestsBounded(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSignIn(t, b)
			hc := siBrowser(t)
			state, nonce := strings.Repeat("<", 4<<10), strings.Repeat("&", 1<<10)

			t.Run("pending request and tombstone", func(t *testing.T) {
				login := siGet(t, hc, floodAuthorizeURL(d, "state", state, "nonce", nonce))
				id := login.hiddenFields().Get("request")
				if login.StatusCode != http.StatusOK || id == "" {
					t.Fatalf("authorize: %d, want the login page with its request\n%.500s", login.StatusCode, login.body)
				}
				pending := onceValue(t, d.in, store.OnceAuthRequest, token.HashSecret(id))
				// The tombstone's key, as authorize.SavePending derives it.
				tomb := onceValue(t, d.in, store.OnceAuthRequest, token.HashSecret("tombstone:"+id))
				if max := len(state) + len(nonce) + 1024; len(pending) > max {
					t.Errorf("pending request kept as %d bytes, at most %d", len(pending), max)
				}
				if max := len(state) + 512; len(tomb) > max {
					t.Errorf("tombstone kept as %d bytes, at most %d", len(tomb), max)
				}
			})

			// A state outside VSCHAR: the error page, never the redirect URI.
			t.Run("state not VSCHAR", func(t *testing.T) {
				for name, bad := range map[string]string{"control": "a\tb", "non-ASCII": "café", "DEL": "a\x7f",
					"over 4 KiB": strings.Repeat("s", 4<<10+1)} {
					p := siGet(t, hc, floodAuthorizeURL(d, "state", bad))
					expectErrorPage(t, p, http.StatusBadRequest, "state "+name)
				}
			})

			// A POSTed logout request no client could send is not held.
			t.Run("held logout request", func(t *testing.T) {
				post := func(raw string) siPage {
					body := []byte(raw)
					req, err := http.NewRequest(http.MethodPost, d.in.URL+"/oauth2/logout", bytes.NewReader(body))
					if err != nil {
						t.Fatal(err)
					}
					req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
					return siDo(t, hc, req, body)
				}
				for name, body := range map[string]string{
					// As sent by the review: '<' unescaped, which a form body allows.
					"state of 60 KB":         "state=" + strings.Repeat("<", 60_000),
					"state not VSCHAR":       url.Values{"state": {"bye\r\n"}}.Encode(),
					"id_token_hint of 20 KB": "id_token_hint=" + strings.Repeat("a", 20_000),
					"client_id of 65 bytes":  "client_id=" + strings.Repeat("c", 65),
					"post-logout URI of 2 KB": url.Values{"client_id": {"first"},
						"post_logout_redirect_uri": {siPostLogout + "?" + strings.Repeat("x", 2000)}}.Encode(),
				} {
					expectErrorPage(t, post(body), http.StatusBadRequest, "logout "+name)
				}
				held := post(url.Values{"client_id": {"first"}, "post_logout_redirect_uri": {siPostLogout}, "state": {state}}.Encode())
				loc, err := url.Parse(held.Header.Get("Location"))
				if held.StatusCode != http.StatusSeeOther || err != nil || loc.Query().Get("request") == "" {
					t.Fatalf("logout POST: %d to %q, want 303 to /logout?request=…", held.StatusCode, held.Header.Get("Location"))
				}
				rec := onceValue(t, d.in, store.OnceLogoutRequest, token.HashSecret(loc.Query().Get("request")))
				if max := len(state) + 512; len(rec) > max {
					t.Errorf("held logout request kept as %d bytes, at most %d", len(rec), max)
				}
			})

			// The console keeps at most 512 bytes of next.
			t.Run("console sign-in", func(t *testing.T) {
				start := siGet(t, hc, d.in.URL+"/console/login?next="+url.QueryEscape("/console/users?q="+strings.Repeat("<", 4000)))
				to, err := url.Parse(start.Header.Get("Location"))
				if start.StatusCode != http.StatusSeeOther || err != nil || to.Query().Get("state") == "" {
					t.Fatalf("console sign-in: %d to %q", start.StatusCode, start.Header.Get("Location"))
				}
				sum := sha256.Sum256([]byte(to.Query().Get("state")))
				if rec := onceValue(t, d.in, "console_login", sum[:]); len(rec) > 512+256 {
					t.Errorf("console sign-in kept as %d bytes, at most %d", len(rec), 512+256)
				}
			})
		})
	}
}

// TestKeptRequestsLimitedPerAddress: with rate limits on, one address may
// make the server keep 180 records a minute (pending authorization
// requests, a public client's pushed ones, held logout requests, console
// sign-ins; ratelimit.DefaultRules' PendingPerIP); past it each surface
// answers 429 in its own format with Retry-After and keeps nothing. A
// confidential client's pushes and single sign-on (which keep nothing for
// an unauthenticated caller) are not counted. Failed before the change:
// every request was kept, without end.
func TestKeptRequestsLimitedPerAddress(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSignIn(t, b, map[string]string{"PORTCULLIS_RATE_LIMITS": "on"})
			// A person signs in first (one kept request).
			signedIn := siBrowser(t)
			conf := d.oauth("first", d.firstSecret, "openid")
			verifier := oauth2.GenerateVerifier()
			q := d.callback(t, siGet(t, signedIn, conf.AuthCodeURL("s0", oauth2.S256ChallengeOption(verifier))).
				submit(t, signedIn, url.Values{"username": {siEmail}, "password": {siPassword}}))
			if q.Get("code") == "" {
				t.Fatalf("sign-in: %v", q)
			}

			const budget = 180
			hc := siBrowser(t)
			kept := 1
			var refused siPage
			for kept <= 2*budget {
				p := siGet(t, hc, floodAuthorizeURL(d, "state", "flood"))
				if p.StatusCode != http.StatusOK {
					refused = p
					break
				}
				kept++
			}
			if refused.Response == nil {
				t.Fatalf("%d requests kept from one address, none refused", kept)
			}
			if kept > budget || refused.StatusCode != http.StatusTooManyRequests || refused.Header.Get("Retry-After") == "" ||
				refused.Header.Get("Location") != "" || !strings.HasPrefix(refused.Header.Get("Content-Type"), "text/html") {
				t.Fatalf("after %d kept: %d (Retry-After %q, Location %q), want the 429 page after at most %d",
					kept, refused.StatusCode, refused.Header.Get("Retry-After"), refused.Header.Get("Location"), budget)
			}

			// Every other surface that keeps a record refuses in its format.
			form := url.Values{"client_id": {"first"}, "post_logout_redirect_uri": {siPostLogout}, "state": {"bye"}}
			body := []byte(form.Encode())
			req, err := http.NewRequest(http.MethodPost, d.in.URL+"/oauth2/logout", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if p := siDo(t, hc, req, body); p.StatusCode != http.StatusTooManyRequests || p.Header.Get("Retry-After") == "" {
				t.Fatalf("logout POST past the budget: %d, want 429 with Retry-After", p.StatusCode)
			}
			spa := parRequest("p1", verifier)
			spa.Set("client_id", "spa")
			r := d.push(t, spa).ExpectError(http.StatusTooManyRequests, "rate_limited")
			if r.Header.Get("Retry-After") == "" {
				t.Fatal("PAR of a public client past the budget: no Retry-After")
			}
			if p := siGet(t, hc, d.in.URL+"/console/login"); p.StatusCode != http.StatusTooManyRequests || p.Header.Get("Retry-After") == "" {
				t.Fatalf("console sign-in past the budget: %d, want 429 with Retry-After", p.StatusCode)
			}

			// Not counted: a confidential client's push, and single sign-on.
			d.pushed(t, parRequest("p2", verifier), st.Basic("third", d.thirdSecret))
			sso := d.callback(t, siGet(t, signedIn, conf.AuthCodeURL("s1", oauth2.S256ChallengeOption(verifier))))
			if sso.Get("code") == "" || sso.Get("state") != "s1" {
				t.Fatalf("single sign-on past the budget: %v, want a code", sso)
			}
		})
	}
}

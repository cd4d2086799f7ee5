package server_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/server/upstream"
	"github.com/portcullis-auth/portcullis/server/upstream/upstreamtest"
	"github.com/portcullis-auth/portcullis/store"
)

// The per-address budget of refusal audits (RefusalAuditPerIP, 30 a
// minute) bounds only the callbacks of unknown providers and the mfa.failed
// events of mfa_tokens that name no user: CONTRACT.md has login.failed
// written for every refused upstream id token, state and replayed callback.
// The tests below first spend the budget from the test's address, then
// check that refusals needing a real credential or a kept sign-in are still
// recorded, every one. Found by a review of the budget: each event below
// was dropped after such a flood.

// floodFree sends n requests answered with a free refusal, 8 at once, and
// checks each is answered with want.
func floodFree(t *testing.T, n, want int, send func() (*http.Response, error)) {
	t.Helper()
	codes := flood(t, n, func() (int, error) {
		resp, err := send()
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	})
	if codes[want] != n {
		t.Fatalf("the flood was answered %v, want %d × %d", codes, n, want)
	}
}

// TestCrossBrowserCallbackAuditedPastTheBudget: the provider's answer
// opened in another browser than the one that began the sign-in (login
// CSRF, a stolen callback URL) is refused after its kept state was taken
// and its code redeemed; it is recorded with its own reason
// (browser_mismatch), whatever callbacks of unknown providers from the same
// address spent before; each replay of the spent answer is recorded
// (replayed_callback).
func TestCrossBrowserCallbackAuditedPastTheBudget(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newFedSignIn(t, b) // rate limits on (the default)
			_, cb := d.viaTestProvider(t, siBrowser(t), upstreamtest.Token{Subject: "s-x", Email: "x@example.com",
				EmailVerified: upstreamtest.Bool(true)})
			floodFree(t, 40, http.StatusNotFound, func() (*http.Response, error) {
				return http.Get(d.in.URL + "/login/nosuch/callback?state=bogus&code=c")
			})
			before := len(failedUpstream(t, d.in.App.Core.Store, ""))
			other := siBrowser(t)
			if p := siGet(t, other, cb); p.StatusCode != http.StatusBadRequest {
				t.Fatalf("the answer opened in another browser: %d", p.StatusCode)
			}
			after := len(failedUpstream(t, d.in.App.Core.Store, ""))
			ev := d.lastEvent(t, "login.failed")
			t.Logf("login.failed rows %d -> %d; last %v", before, after, ev.Details)
			if after != before+1 || ev.Details["reason"] != upstream.ReasonBrowserMismatch || ev.Details["provider"] != "corp" {
				t.Fatalf("the answer opened in another browser (state taken, code redeemed) was not recorded as %s once the address's budget was spent",
					upstream.ReasonBrowserMismatch)
			}

			// The spent answer replayed 40 times at once: each recorded.
			floodFree(t, 40, http.StatusBadRequest, func() (*http.Response, error) { return http.Get(cb) })
			if n := len(failedUpstream(t, d.in.App.Core.Store, upstream.ReasonReplayedCallback)); n != 40 {
				t.Fatalf("40 replays of one spent callback left %d %s rows, want 40", n, upstream.ReasonReplayedCallback)
			}
		})
	}
}

// TestExchangeReplayAuditedPastTheBudget: after callbacks of unknown
// providers spent the budget and made-up subject tokens were refused, each
// of 40 concurrent replays of a real, verified and already exchanged id
// token is recorded (replayed_token), as every refused id token is.
func TestExchangeReplayAuditedPastTheBudget(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newIDPEnv(t, b)
			raw := e.op.IDToken(t, upstreamtest.Token{Subject: "sub-r", Email: "r@example.com", EmailVerified: upstreamtest.Bool(true)})
			e.exchange(t, raw).ExpectStatus(http.StatusOK)
			floodFree(t, 40, http.StatusNotFound, func() (*http.Response, error) {
				return http.Get(e.in.URL + "/login/nosuch/callback?state=bogus&code=c")
			})
			garbage := strings.Repeat("g", 64)
			floodFree(t, 40, http.StatusBadRequest, func() (*http.Response, error) {
				return http.PostForm(e.in.URL+"/oauth2/token", exchangeForm(garbage))
			})
			floodFree(t, 40, http.StatusBadRequest, func() (*http.Response, error) {
				return http.PostForm(e.in.URL+"/oauth2/token", exchangeForm(raw))
			})
			n := len(failedUpstream(t, e.in.App.Core.Store, upstream.ReasonReplayedToken))
			t.Logf("%d %s rows after 40 garbage exchanges and 40 replays", n, upstream.ReasonReplayedToken)
			if n != 40 {
				t.Fatalf("40 replays of one verified id token after a spent budget left %d %s rows, want 40",
					n, upstream.ReasonReplayedToken)
			}
		})
	}
}

// TestMFATokenMisuseAuditedPastTheBudget: a real mfa_token (its password
// was known) presented by another client names its user, so its
// mfa.failed event is recorded against that user even after made-up
// mfa_tokens from the same address spent the budget.
func TestMFATokenMisuseAuditedPastTheBudget(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newGrantsDeployment(t, b)
			d.fx.Client(t, clients.Spec{ID: "spa", Name: "SPA", Public: true})
			u, _, _ := d.totpUser(t, "victim@example.com")
			tok := d.mfaRequired(t, "app", "victim@example.com", "openid")["mfa_token"].(string)
			floodFree(t, 40, http.StatusBadRequest, func() (*http.Response, error) {
				return http.PostForm(d.in.URL+"/oauth2/token", url.Values{"grant_type": {grantMFAOTP}, "client_id": {"spa"},
					"mfa_token": {"made-up"}, "otp": {"123456"}})
			})
			d.otp(t, "app2", tok, "123456").ExpectError(http.StatusBadRequest, "invalid_grant")
			if !d.audited(t, "mfa.failed", store.OutcomeFailure, u.ID, map[string]string{"reason": "invalid_token"}) {
				t.Fatal("the victim's real mfa_token used by another client left no mfa.failed event after 40 made-up tokens from the same address")
			}
		})
	}
}

package server_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/server/upstream"
	"github.com/portcullis-auth/portcullis/server/upstream/upstreamtest"
	"github.com/portcullis-auth/portcullis/store"
)

// auditFloodBound is the most refusal rows one address may leave after a
// flood of the tests below (the budget is well under it).
const auditFloodBound = 60

// failedUpstream lists the login.failed events of method upstream with
// reason, or with any reason for "" (every page of them).
func failedUpstream(t *testing.T, s interface {
	ListAudit(context.Context, store.AuditFilter) (store.Page[store.AuditEvent], error)
}, reason string) []store.AuditEvent {
	t.Helper()
	var out []store.AuditEvent
	f := store.AuditFilter{Action: "login.failed", Limit: 200}
	for {
		page, err := s.ListAudit(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range page.Items {
			if ev.Details["method"] == "upstream" && (reason == "" || ev.Details["reason"] == reason) {
				out = append(out, ev)
			}
		}
		if page.NextCursor == "" {
			return out
		}
		f.Cursor = page.NextCursor
	}
}

// flood runs n calls of do on 8 goroutines at once and counts the status
// codes they answer.
func flood(t *testing.T, n int, do func() (int, error)) map[int]int {
	t.Helper()
	var mu sync.Mutex
	codes := map[int]int{}
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				code, err := do()
				if err != nil {
					t.Error(err)
					continue
				}
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}
		}()
	}
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	return codes
}

// TestUpstreamCallbackRefusalAuditBounded: GET /login/{provider}/callback
// needs no credentials, so the login.failed events it writes for
// a refusal that matched no kept sign-in (an unknown provider, a missing
// or bogus state) are kept within a per-address budget, and an unknown
// provider's id is recorded as "unknown", never as sent (in the row and
// in the log line). A configured provider's refusal is recorded with its
// id under the budget, and a refusal after a kept sign-in (here a domain
// outside allowed_domains) is recorded even once the budget is spent.
// Found by a review: 300 requests with a 16 KiB provider id wrote 300 rows
// holding 4.9 MB.
func TestUpstreamCallbackRefusalAuditBounded(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newFedSignIn(t, b) // rate limits on (the default)
			in := d.in
			get := func(u string) (int, error) {
				resp, err := http.Get(u)
				if err != nil {
					return 0, err
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return resp.StatusCode, nil
			}

			// A configured provider with a bogus state: always recorded.
			if code, err := get(in.URL + "/login/corp/callback?state=bogus&code=c"); err != nil || code != http.StatusBadRequest {
				t.Fatalf("bogus state: %d %v", code, err)
			}
			if ev := d.lastEvent(t, "login.failed"); ev.Details["reason"] != upstream.ReasonInvalidState || ev.Details["provider"] != "corp" {
				t.Fatalf("login.failed = %+v, want invalid_state of corp", ev)
			}

			id := strings.Repeat("a", 16<<10)
			const n = 300
			codes := flood(t, n, func() (int, error) { return get(in.URL + "/login/" + id + "/callback") })
			if codes[http.StatusNotFound] != n {
				t.Fatalf("answers %v, want %d × 404", codes, n)
			}
			rows := failedUpstream(t, in.App.Core.Store, upstream.ReasonUnknownProvider)
			kept, asSent := 0, 0
			for _, ev := range rows {
				kept += len(ev.Details["provider"])
				if ev.Details["provider"] != "unknown" {
					asSent++
				}
			}
			if asSent > 0 {
				t.Errorf("%d rows record an unknown provider as other than unknown", asSent)
			}
			t.Logf("answers %v; %d audit rows kept, %d bytes of provider id", codes, len(rows), kept)
			if len(rows) == 0 || len(rows) > auditFloodBound || kept > auditFloodBound*len("unknown") {
				t.Errorf("%d unauthenticated requests from one address wrote %d audit rows holding %d bytes of provider id",
					n, len(rows), kept)
			}
			if strings.Contains(in.Logs.String(), id[:1024]) {
				t.Error("the log holds the provider id as sent")
			}

			// Beyond the budget, a refusal after a kept sign-in is still audited.
			hc := siBrowser(t)
			_, cb := d.viaTestProvider(t, hc, upstreamtest.Token{Subject: "s5", Email: "s5@elsewhere.org", EmailVerified: upstreamtest.Bool(true)})
			if p := siGet(t, hc, cb); p.StatusCode != http.StatusForbidden {
				t.Fatalf("domain outside allowed_domains: %d", p.StatusCode)
			}
			if ev := d.lastEvent(t, "login.failed"); ev.Details["reason"] != upstream.ReasonDomainNotAllowed || ev.Details["provider"] != "corp" {
				t.Fatalf("login.failed = %+v, want domain_not_allowed of corp", ev)
			}
		})
	}
}

// TestUpstreamExchangeRefusalAuditBounded: the built-in public client may
// call token exchange without credentials of its own; CONTRACT.md has
// login.failed written for every refused id token, so each refused subject
// token is audited, with details of bounded size however large the token
// (store.CleanDetails), the answer 400 invalid_request.
func TestUpstreamExchangeRefusalAuditBounded(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newIDPEnv(t, b)
			// A configured provider's refusal: recorded.
			e.refused(t, e.exchange(t, e.op.IDToken(t, upstreamtest.Token{Subject: "sub-x", Email: "x@elsewhere.example",
				EmailVerified: upstreamtest.Bool(true)})), upstream.ReasonDomainNotAllowed)
			if ev := e.lastAudit(t, "login.failed"); ev.Details["provider"] != "corp" {
				t.Fatalf("login.failed = %+v, want provider corp", ev)
			}
			const n = 200
			garbage := strings.Repeat("g", 8<<10)
			codes := flood(t, n, func() (int, error) {
				resp, err := http.PostForm(e.in.URL+"/oauth2/token", exchangeForm(garbage))
				if err != nil {
					return 0, err
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return resp.StatusCode, nil
			})
			if codes[http.StatusBadRequest] != n {
				t.Fatalf("answers %v, want %d × 400", codes, n)
			}
			// CONTRACT.md: login.failed for every refused id token; each
			// row is bounded (store.CleanDetails), whatever the token's size.
			rows := failedUpstream(t, e.in.App.Core.Store, upstream.ReasonInvalidToken)
			size := 0
			for _, ev := range rows {
				for k, v := range ev.Details {
					size += len(k) + len(v)
				}
			}
			t.Logf("answers %v; %d audit rows kept, %d bytes of details", codes, len(rows), size)
			if len(rows) != n || size > n*store.MaxAuditDetail {
				t.Errorf("%d refused exchanges from one address wrote %d audit rows holding %d bytes of details, want %d rows of bounded details",
					n, len(rows), size, n)
			}
		})
	}
}

// TestMFAGrantRefusalAuditBounded: a public client with the password grant
// needs no secret, so anyone may send the MFA grant an mfa_token of their
// own making; its mfa.failed events (reason invalid_token, before any
// password was checked) are kept within the per-address budget, the answer
// unchanged (400 invalid_grant) beyond it. Found auditing the audit writes
// of unauthenticated requests after the review above.
func TestMFAGrantRefusalAuditBounded(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newGrantsDeployment(t, b)
			d.fx.Client(t, clients.Spec{ID: "spa", Name: "SPA", Public: true})
			const n = 200
			codes := flood(t, n, func() (int, error) {
				form := url.Values{"grant_type": {grantMFAOTP}, "client_id": {"spa"}, "mfa_token": {"made-up"}, "otp": {"123456"}}
				resp, err := http.PostForm(d.in.URL+"/oauth2/token", form)
				if err != nil {
					return 0, err
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return resp.StatusCode, nil
			})
			if codes[http.StatusBadRequest] != n {
				t.Fatalf("answers %v, want %d × 400", codes, n)
			}
			rows := 0
			f := store.AuditFilter{Action: "mfa.failed", Limit: 200}
			for {
				page, err := d.in.App.Core.Store.ListAudit(context.Background(), f)
				if err != nil {
					t.Fatal(err)
				}
				rows += len(page.Items)
				if page.NextCursor == "" {
					break
				}
				f.Cursor = page.NextCursor
			}
			t.Logf("answers %v; %d mfa.failed rows kept", codes, rows)
			if rows == 0 || rows > auditFloodBound {
				t.Errorf("%d MFA grants with a made-up mfa_token from one address wrote %d audit rows", n, rows)
			}
		})
	}
}

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

	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// Single use across instances, over HTTP: three in-process instances of one
// deployment (one Env: the same database and token state, the same issuer)
// behind no load balancer; the test spreads requests over them itself.

const (
	crIssuer = "http://auth.portcullis.test"
	crRaces  = 32 // concurrent redemptions of one code
	crTabs   = 16 // concurrent submits of one pending request
)

// crCluster is three instances sharing a deployment, with a user and a
// confidential first-party code-flow client "first".
type crCluster struct {
	ins    []*st.Instance
	user   store.User
	secret string
}

func newCodeCluster(t *testing.T, b st.Backend) *crCluster {
	t.Helper()
	env := st.NewEnv(t, b)
	env["PORTCULLIS_ISSUER"] = crIssuer // one issuer: a token from any instance is valid at every other
	cl := &crCluster{}
	for i := 0; i < 3; i++ {
		cl.ins = append(cl.ins, st.Start(t, env))
	}
	fx := st.NewFixtures(t, cl.ins[0].App.Core)
	cl.user = fx.User(t, siEmail, siPassword, "user")
	cl.secret = fx.Client(t, clients.Spec{ID: "first", Name: "First App", FirstParty: true,
		Grants: []string{"authorization_code", "refresh_token"}, RedirectURIs: []string{siCallback}})
	return cl
}

// authorizeURL is a PKCE authorization request of "first" at instance i.
func (cl *crCluster) authorizeURL(i int, state, verifier string) string {
	return cl.ins[i].URL + "/oauth2/authorize?" + url.Values{"client_id": {"first"}, "redirect_uri": {siCallback},
		"response_type": {"code"}, "scope": {"openid offline_access"}, "state": {state},
		"code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"}}.Encode()
}

// codeOf returns the code of a 303 to the redirect URI carrying state and
// the deployment's iss, or "" when the answer is anything else.
func codeOf(resp *http.Response, state string) string {
	if resp.StatusCode != http.StatusSeeOther {
		return ""
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, siCallback+"?") {
		return ""
	}
	u, err := url.Parse(loc)
	if err != nil {
		return ""
	}
	q := u.Query()
	if q.Get("state") != state || q.Get("iss") != crIssuer {
		return ""
	}
	return q.Get("code")
}

// codeForm is the token request redeeming code with its PKCE verifier.
func codeForm(code, verifier string) url.Values {
	return url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {siCallback},
		"code_verifier": {verifier}}
}

// signInOnce completes the flow for "first" on instance 0 and returns the
// code (first-party: no consent page).
func (cl *crCluster) signInOnce(t *testing.T, state, verifier string) string {
	t.Helper()
	hc := siBrowser(t)
	login := siGet(t, hc, cl.authorizeURL(0, state, verifier))
	done := login.submit(t, hc, url.Values{"username": {siEmail}, "password": {siPassword}})
	code := codeOf(done.Response, state)
	if code == "" {
		t.Fatalf("sign-in did not end with a code at the redirect URI: %d %q\n%s", done.StatusCode, done.Header.Get("Location"), done.body)
	}
	return code
}

// TestCodeReuseAcrossInstances: one authorization code obtained through the
// real flow is redeemed by 32 goroutines released together, spread over
// three instances: exactly one token response, every other answer
// invalid_grant; the reuse revokes what the one response issued (its
// refresh token is refused, its access token too, on every instance) and
// audit has token.code_reuse_detected for each replay. A code redeemed once
// keeps its tokens (the control). Before it, one pending request submitted
// by 16 tabs at once over the three instances answers exactly one code.
// On PostgreSQL + Redis and on the embedded store (three instances on one
// SQLite file).
func TestCodeReuseAcrossInstances(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			cl := newCodeCluster(t, b)
			ctx := context.Background()
			cs := []*st.Client{cl.ins[0].Client(t), cl.ins[1].Client(t), cl.ins[2].Client(t)}
			basic := st.Basic("first", cl.secret)

			// One pending request, its login form submitted by many tabs of
			// one browser at once, on every instance: one code, no 5xx.
			verifier, state := oauth2.GenerateVerifier(), "race-state"
			hc := siBrowser(t)
			login := siGet(t, hc, cl.authorizeURL(0, state, verifier))
			form, action := loginForm(t, login)
			type answer struct {
				status int
				code   string
				err    error
			}
			tabs := make([]answer, crTabs)
			release := make(chan struct{})
			var wg sync.WaitGroup
			for i := range tabs {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					in := cl.ins[i%len(cl.ins)]
					req, err := http.NewRequest(http.MethodPost, in.URL+action, strings.NewReader(form))
					if err != nil {
						tabs[i].err = err
						return
					}
					req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
					req.Header.Set("Origin", in.URL)
					<-release
					resp, err := hc.Do(req)
					if err != nil {
						tabs[i].err = err
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					tabs[i] = answer{status: resp.StatusCode, code: codeOf(resp, state)}
				}(i)
			}
			close(release)
			wg.Wait()
			var code string
			for i, a := range tabs {
				switch {
				case a.err != nil:
					t.Fatalf("tab %d: %v", i, a.err)
				case a.status >= 500:
					t.Fatalf("tab %d: status %d", i, a.status)
				case a.code != "" && code != "":
					t.Fatalf("one pending request answered two codes (tab %d)", i)
				case a.code != "":
					code = a.code
				}
			}
			if code == "" {
				t.Fatalf("no tab got a code: %+v", tabs)
			}

			// The code, redeemed by 32 goroutines over the three instances.
			results := make([]*st.Response, crRaces)
			errs := make([]error, crRaces)
			release = make(chan struct{})
			body := []byte(codeForm(code, verifier).Encode())
			for i := range results {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					<-release
					results[i], errs[i] = cs[i%len(cs)].TryDo(http.MethodPost, "/oauth2/token", body,
						"application/x-www-form-urlencoded", basic)
				}(i)
			}
			close(release)
			wg.Wait()
			var won *st.Response
			for i, r := range results {
				switch {
				case errs[i] != nil:
					t.Fatalf("redemption %d: %v", i, errs[i])
				case r.StatusCode == http.StatusOK && won != nil:
					t.Fatalf("two token responses for one code:\n%s\n%s", won.Body, r.Body)
				case r.StatusCode == http.StatusOK:
					won = r
				default:
					r.ExpectError(http.StatusBadRequest, "invalid_grant")
				}
			}
			if won == nil {
				t.Fatalf("no redemption succeeded, want exactly one")
			}
			tok := won.Token()
			if tok.RefreshToken == "" || tok.IDToken == "" {
				t.Fatalf("the token response lacks a refresh or id token: %s", won.Body)
			}
			// What the one response issued is dead on every instance.
			for i, c := range cs {
				c.PostForm("/oauth2/token", st.RefreshForm(tok.RefreshToken), basic).ExpectError(http.StatusBadRequest, "invalid_grant")
				if got := c.Get("/userinfo", st.Bearer(tok.AccessToken)); got.StatusCode != http.StatusUnauthorized {
					t.Fatalf("instance %d: /userinfo with the access token of a reused code: %d %s", i, got.StatusCode, got.Body)
				}
			}
			events, err := cl.ins[1].App.Core.Store.ListAudit(ctx, store.AuditFilter{Action: "token.code_reuse_detected", Limit: 100})
			if err != nil {
				t.Fatal(err)
			}
			if len(events.Items) != crRaces-1 {
				t.Fatalf("%d token.code_reuse_detected events, want one per replay (%d)", len(events.Items), crRaces-1)
			}
			for _, e := range events.Items {
				if e.TargetID != cl.user.ID || e.ClientID != "first" || e.Details["sid"] == "" || e.Details["code_client_id"] != "first" {
					t.Fatalf("audit event %+v", e)
				}
			}

			// Control: a code redeemed once keeps its tokens alive on every instance.
			v2 := oauth2.GenerateVerifier()
			once := cs[1].PostForm("/oauth2/token", codeForm(cl.signInOnce(t, "control", v2), v2), basic).Token()
			for _, c := range cs {
				c.Get("/userinfo", st.Bearer(once.AccessToken)).ExpectStatus(http.StatusOK)
			}
			cs[2].PostForm("/oauth2/token", st.RefreshForm(once.RefreshToken), basic).Token()
		})
	}
}

// TestCodeReplayAfterExpiryRevokesTheGrant: a code redeemed at once and
// replayed after its own expiry (PORTCULLIS_AUTH_CODE_TTL 2 s here) is
// still known as used: the replay answers invalid_grant, revokes what the
// first redemption issued (its access token at /userinfo, its refresh
// token) and is audited as token.code_reuse_detected, because a taken code
// stays as a tombstone for store.TakenKeptFor. The server has no clock to
// inject, so the test waits out the code's lifetime (2.5 s, both backends
// at once).
func TestCodeReplayAfterExpiryRevokesTheGrant(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			env := st.NewEnv(t, b)
			env["PORTCULLIS_ISSUER"] = crIssuer
			env["PORTCULLIS_AUTH_CODE_TTL"] = "2s"
			cl := &crCluster{}
			cl.ins = append(cl.ins, st.Start(t, env))
			fx := st.NewFixtures(t, cl.ins[0].App.Core)
			cl.user = fx.User(t, siEmail, siPassword, "user")
			cl.secret = fx.Client(t, clients.Spec{ID: "first", Name: "First App", FirstParty: true,
				Grants: []string{"authorization_code", "refresh_token"}, RedirectURIs: []string{siCallback}})
			c := cl.ins[0].Client(t)
			basic := st.Basic("first", cl.secret)
			v := oauth2.GenerateVerifier()
			code := cl.signInOnce(t, "s1", v)
			tok := c.PostForm("/oauth2/token", codeForm(code, v), basic).Token()
			if tok.RefreshToken == "" {
				t.Fatal("the token response has no refresh token")
			}
			c.Get("/userinfo", st.Bearer(tok.AccessToken)).ExpectStatus(http.StatusOK)

			time.Sleep(2500 * time.Millisecond) // past the code's expiry
			c.PostForm("/oauth2/token", codeForm(code, v), basic).ExpectError(http.StatusBadRequest, "invalid_grant")
			if got := c.Get("/userinfo", st.Bearer(tok.AccessToken)); got.StatusCode != http.StatusUnauthorized {
				t.Errorf("/userinfo with the access token of a code replayed after its expiry: %d %s", got.StatusCode, got.Body)
			}
			if r := c.PostForm("/oauth2/token", st.RefreshForm(tok.RefreshToken), basic); r.StatusCode == http.StatusOK {
				t.Errorf("the refresh token of a code replayed after its expiry still works: %s", r.Body)
			} else {
				r.ExpectError(http.StatusBadRequest, "invalid_grant")
			}
			events, err := cl.ins[0].App.Core.Store.ListAudit(context.Background(),
				store.AuditFilter{Action: "token.code_reuse_detected", Limit: 10})
			if err != nil {
				t.Fatal(err)
			}
			if len(events.Items) != 1 || events.Items[0].TargetID != cl.user.ID || events.Items[0].ClientID != "first" {
				t.Fatalf("token.code_reuse_detected events %+v, want one for the user and client \"first\"", events.Items)
			}
		})
	}
}

// loginForm is the login page's form filled with the user's password, as
// a browser would post it, and its action path.
func loginForm(t *testing.T, p siPage) (string, string) {
	t.Helper()
	m := siAction.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no form on the page (%d):\n%s", p.StatusCode, p.body)
	}
	form := url.Values{}
	for _, h := range siHidden.FindAllStringSubmatch(p.body, -1) {
		form.Set(h[1], unescapeHTML(h[2]))
	}
	form.Set("username", siEmail)
	form.Set("password", siPassword)
	action, err := url.Parse(unescapeHTML(m[1]))
	if err != nil || action.IsAbs() {
		t.Fatalf("form action %q: want a path on the instance (%v)", m[1], err)
	}
	return form.Encode(), action.String()
}

package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// Browser sign-in scenarios (issue 13). Both use a confidential
// first-party client of the code flow (-code-client, no consent page) and
// browsers that signed in once through the login page before the clock
// starts: each worker keeps the session cookie (portcullis-session) in its
// own cookie jar, as one person's browser would.
//
//   - sso: one iteration is a whole single sign-on round trip of a web
//     application: GET /oauth2/authorize with PKCE S256 and the live
//     session (303 to the redirect URI with the code, state and iss), then
//     POST /oauth2/token exchanging the code with its verifier (200 with
//     access, id and refresh tokens). Two HTTP requests per iteration.
//   - code_redemption: one iteration is the token-exchange leg alone, one
//     POST /oauth2/token per iteration. The codes are minted before the
//     clock starts, by the same authorize request as sso, for twice the
//     warm-up plus the run (less when that would let the oldest code pass
//     the codes' 60 s lifetime before its turn: codes are redeemed oldest
//     first); when they run out the scenario ends and its rate is over the
//     time it ran. The rate is therefore of redemption with no
//     authorization requests competing for the server.

// codeLifetime is the server's default PORTCULLIS_AUTH_CODE_TTL, less a
// margin: no minted code may be older when its turn comes.
const codeLifetime = 55 * time.Second

// benchRedirectURI is the code-flow client's redirect URI. Nothing listens
// there: the driver reads the 303's Location and never follows it.
const benchRedirectURI = "https://bench.example/callback"

// logOut receives progress lines.
var logOut io.Writer = os.Stderr

// browser is one worker's user agent: a cookie jar holding its SSO session.
type browser struct {
	hc    *http.Client
	o     Options
	fails *failureLog // the scenario's, shared by its browsers
}

var (
	formAction  = regexp.MustCompile(`<form method="post" action="([^"]+)"`)
	hiddenField = regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`)
)

// newBrowser signs in through the login page (GET /oauth2/authorize, then
// the login form as served) and returns the browser with its session. The
// code of that first sign-in is left unredeemed.
func newBrowser(ctx context.Context, c *http.Client, o Options, fails *failureLog) (*browser, error) {
	jar, err := cookiejar.New(nil)
	if err != nil {
		return nil, err
	}
	b := &browser{o: o, fails: fails, hc: &http.Client{Transport: c.Transport, Jar: jar, Timeout: c.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	_, challenge := pkce()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.authorizeURL("login", challenge), nil)
	if err != nil {
		return nil, err
	}
	status, page, _, _ := b.do(req)
	m := formAction.FindStringSubmatch(page)
	if status != http.StatusOK || m == nil {
		return nil, fmt.Errorf("sso: the authorization request answered %d without the login form", status)
	}
	form := url.Values{}
	for _, h := range hiddenField.FindAllStringSubmatch(page, -1) {
		form.Set(h[1], html.UnescapeString(h[2]))
	}
	form.Set("username", o.Username)
	form.Set("password", o.Password)
	action, err := url.Parse(html.UnescapeString(m[1]))
	if err != nil {
		return nil, err
	}
	base, _ := url.Parse(o.URL)
	req, err = http.NewRequestWithContext(ctx, http.MethodPost, base.ResolveReference(action).String(), strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base.Scheme+"://"+base.Host)
	status, page, loc, _ := b.do(req)
	if status != http.StatusSeeOther || !strings.Contains(loc, "code=") {
		return nil, fmt.Errorf("sso: signing in answered %d (Location %q): %.300s", status, loc, page)
	}
	return b, nil
}

// authorizeURL is the client's authorization request with an S256 challenge.
func (b *browser) authorizeURL(state, challenge string) string {
	return b.o.URL + "/oauth2/authorize?" + url.Values{"client_id": {b.o.CodeClient}, "redirect_uri": {b.o.RedirectURI},
		"response_type": {"code"}, "scope": {"openid"}, "state": {state}, "code_challenge": {challenge},
		"code_challenge_method": {"S256"}}.Encode()
}

// code asks for a code with the browser's session: the answer must be a
// 303 to the redirect URI carrying the code and the same state.
func (b *browser) code(ctx context.Context) (code, verifier string, ok bool) {
	verifier, challenge := pkce()
	state := verifier[:16]
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.authorizeURL(state, challenge), nil)
	if err != nil {
		return "", "", b.fails.fail(ctx, "authorize: %v", err)
	}
	status, page, loc, err := b.do(req)
	if status != http.StatusSeeOther || !strings.HasPrefix(loc, b.o.RedirectURI+"?") {
		return "", "", b.fails.fail(ctx, "authorize: status %d, Location %q, error %v: %.200s", status, loc, err, page)
	}
	u, err := url.Parse(loc)
	if err != nil {
		return "", "", b.fails.fail(ctx, "authorize: Location %q: %v", loc, err)
	}
	q := u.Query()
	if q.Get("state") != state || q.Get("code") == "" {
		return "", "", b.fails.fail(ctx, "authorize: Location %q lacks the code or the state %q", loc, state)
	}
	return q.Get("code"), verifier, true
}

// redeem exchanges a code at the token endpoint: 200 with an id token.
func (b *browser) redeem(ctx context.Context, code, verifier string) bool {
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {b.o.RedirectURI},
		"code_verifier": {verifier}}.Encode()
	status, body := post(ctx, b.hc, b.o.URL+"/oauth2/token", form, b.o.CodeClient, b.o.CodeSecret)
	if status != http.StatusOK {
		return b.fails.fail(ctx, "token: status %d: %.300s", status, body)
	}
	var tr struct {
		AccessToken string `json:"access_token"`
		IDToken     string `json:"id_token"`
	}
	if err := json.Unmarshal(body, &tr); err != nil || tr.AccessToken == "" || tr.IDToken == "" {
		return b.fails.fail(ctx, "token: no access and id token (%v): %.300s", err, body)
	}
	return true
}

// do sends req with the browser's cookies: the answer's status, body and
// Location, or the error that left none.
func (b *browser) do(req *http.Request) (status int, body, location string, err error) {
	resp, err := b.hc.Do(req)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data), resp.Header.Get("Location"), err
}

// pkce returns a fresh code verifier and its S256 challenge (RFC 7636).
func pkce() (verifier, challenge string) {
	var b [32]byte
	_, _ = rand.Read(b[:])
	verifier = base64.RawURLEncoding.EncodeToString(b[:])
	sum := sha256.Sum256([]byte(verifier))
	return verifier, base64.RawURLEncoding.EncodeToString(sum[:])
}

// browsersPerWorker is how many browser sessions each worker signs in
// before the clock and uses in turn, and grantsPerBrowser how many codes
// one session may be asked for in a run (its sign-in holds one grant more).
// A browser session keeps at most store.MaxSessionGrants grants: past
// that, each new code drops the session's oldest grant and ends it (a
// revocation, with its durable SQL write), which is the cost of an abusive
// browser, not of a single sign-on, and a code_redemption code minted before
// its grant was dropped redeems into revoked tokens. So no session is taken
// past the cap: a worker whose sessions are all used up ends the run, which
// is then timed up to there.
const (
	browsersPerWorker = 4
	grantsPerBrowser  = store.MaxSessionGrants - 10
)

// ssoWorker is the sso scenario: each worker's browsers sign in once
// before the clock starts; each iteration is authorize with the next of
// those sessions, then the code exchange.
func ssoWorker(ctx context.Context, c *http.Client, o Options, end func()) (func() (worker, error), error) {
	browsers, err := signIn(ctx, c, o, browsersPerWorker*o.Concurrency, newFailureLog("sso", 3))
	if err != nil {
		return nil, err
	}
	i := 0
	return func() (worker, error) {
		mine := browsers[i*browsersPerWorker : (i+1)*browsersPerWorker]
		i++
		n := 0
		return func(ctx context.Context) bool {
			if n == len(mine)*grantsPerBrowser {
				end() // every session of this worker is at its cap
				<-ctx.Done()
				return false
			}
			b := mine[n%len(mine)]
			n++
			code, verifier, ok := b.code(ctx)
			return ok && b.redeem(ctx, code, verifier)
		}, nil
	}, nil
}

// browserUsers is how many users the browsers of the code-flow scenarios
// sign in as, in turn (bench-browser-K@example.com, registered by signIn
// with the bench user's password). With the bench user alone, a run's
// families (a hundred thousand in the sso and code_redemption scenarios
// together) reached the per-user session cap the stack sets
// (PORTCULLIS_MAX_SESSIONS_PER_USER, at most 100,000), where every new
// login prunes the whole index: the run measured that instead, with 503s
// from Redis calls that timed out.
const browserUsers = 8

// signIn starts n browser sessions, before the run's clock, signed in as
// the browserUsers users in turn (registered first when new: the server
// needs PORTCULLIS_PUBLIC_REGISTRATION).
func signIn(ctx context.Context, c *http.Client, o Options, n int, fails *failureLog) ([]*browser, error) {
	users := make([]string, browserUsers)
	for k := range users {
		users[k] = fmt.Sprintf("bench-browser-%d@example.com", k)
		status, body := sendJSON(ctx, c, o.URL+"/auth/register", "", map[string]string{"email": users[k], "password": o.Password})
		if status != http.StatusCreated && status != http.StatusConflict {
			return nil, fmt.Errorf("register %s: status %d: %.200s (PORTCULLIS_PUBLIC_REGISTRATION must be on)", users[k], status, body)
		}
	}
	browsers := make([]*browser, n)
	for i := range browsers {
		as := o
		as.Username = users[i%len(users)]
		b, err := newBrowser(ctx, c, as, fails)
		if err != nil {
			return nil, err
		}
		browsers[i] = b
	}
	return browsers, nil
}

type mintedCode struct{ code, verifier string }

// codeRedemptionWorker is the code_redemption scenario: before the clock
// starts, browsersPerWorker × o.Concurrency browsers mint codes (see
// mintTime; at most grantsPerBrowser each); each
// iteration redeems one. When none are left the worker
// ends the scenario (end), which the driver times up to then.
func codeRedemptionWorker(ctx context.Context, c *http.Client, o Options, end func()) (func() (worker, error), error) {
	browsers, err := signIn(ctx, c, o, browsersPerWorker*o.Concurrency, newFailureLog("code_redemption", 3))
	if err != nil {
		return nil, err
	}
	mintFor := mintTime(o.Warmup + o.Duration)
	if mintFor < time.Second {
		return nil, fmt.Errorf("a run of %s would redeem codes past their lifetime; use a shorter -duration", o.Warmup+o.Duration)
	}
	mintCtx, cancel := context.WithTimeout(ctx, mintFor)
	defer cancel()
	var (
		mu       sync.Mutex
		pool     []mintedCode
		failures int
		wg       sync.WaitGroup
	)
	for _, b := range browsers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for minted := 0; minted < grantsPerBrowser && mintCtx.Err() == nil; {
				code, verifier, ok := b.code(mintCtx)
				mu.Lock()
				switch {
				case ok:
					pool = append(pool, mintedCode{code, verifier})
					minted++
				case mintCtx.Err() == nil:
					failures++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if failures > 0 {
		return nil, fmt.Errorf("minting codes: %d authorization requests failed", failures)
	}
	fmt.Fprintf(logOut, "code_redemption: %d codes minted in %s\n", len(pool), mintFor)
	next := 0
	take := func() (mintedCode, bool) {
		mu.Lock()
		defer mu.Unlock()
		if next == len(pool) {
			return mintedCode{}, false
		}
		next++
		return pool[next-1], true
	}
	i := 0
	return func() (worker, error) {
		b := browsers[i%len(browsers)]
		i++
		return func(ctx context.Context) bool {
			mc, ok := take()
			if !ok {
				end() // out of codes: the run stops here, this call is not counted
				<-ctx.Done()
				return false
			}
			return b.redeem(ctx, mc.code, mc.verifier)
		}, nil
	}, nil
}

// mintTime is how long code_redemption mints codes for a run of run:
// twice the run, so that redemption faster than minting still has codes
// to the end, but never so long that a code minted first and redeemed
// last (at most mintTime + run later, oldest first) outlives codeLifetime.
func mintTime(run time.Duration) time.Duration {
	return min(2*run, codeLifetime-run)
}

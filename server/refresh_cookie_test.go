package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/app"
	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/server/rtcookie"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

const (
	bodyOrigin  = "https://body.example.test"
	spaOrigin   = "https://app.example.test"
	spaClientID = "spa"
	cookieGrace = 10 * time.Second
)

// cookieEnv is a deployment with a cookie client (spa, public) and a body
// client (web, confidential), over plain HTTP (the cookie portcullis-rt).
type cookieEnv struct {
	in        *st.Instance
	c         *st.Client
	webSecret string
}

func newCookieEnv(t *testing.T, b st.Backend, settings ...map[string]string) cookieEnv {
	t.Helper()
	env := st.NewEnv(t, b)
	env["PORTCULLIS_REFRESH_REUSE_GRACE"] = cookieGrace.String()
	for _, m := range settings {
		for k, v := range m {
			env[k] = v
		}
	}
	in := st.Start(t, env)
	fx := st.NewFixtures(t, in.App.Core)
	fx.User(t, userEmail, userPass, "user")
	fx.Client(t, clients.Spec{ID: spaClientID, Public: true, RefreshTokenDelivery: store.RefreshDeliveryCookie,
		AllowedOrigins: []string{spaOrigin}, RefreshReuseGrace: cookieGrace})
	secret := fx.Client(t, clients.Spec{ID: "web"})
	return cookieEnv{in: in, c: in.Client(t), webSecret: secret}
}

// spaHeaders are what the SPA's fetch sends: its Origin, the CSRF header and
// same-site fetch metadata.
func spaHeaders() map[string]string {
	return map[string]string{"Origin": spaOrigin, rtcookie.CSRFHeader: "1", "Sec-Fetch-Site": "same-site"}
}

// post sends form to path with headers (a value "" drops the header) and
// the refresh-token cookie rt when not "".
func (e cookieEnv) post(path string, form url.Values, headers map[string]string, rt string, opts ...st.Option) *st.Response {
	for k, v := range headers {
		if v != "" {
			opts = append(opts, st.WithHeader(k, v))
		}
	}
	if rt != "" {
		opts = append(opts, st.WithHeader("Cookie", rtcookie.InsecureCookieName+"="+rt))
	}
	return e.c.PostForm(path, form, opts...)
}

func (e cookieEnv) login(t *testing.T) (st.TokenResponse, string) {
	t.Helper()
	form := st.PasswordForm(userEmail, userPass, "")
	form.Set("client_id", spaClientID)
	r := e.post("/oauth2/token", form, spaHeaders(), "")
	return cookieAnswer(t, r, e.in.Config.RefreshMaxAge)
}

// refresh refreshes with the cookie rt alone (no refresh_token parameter).
func (e cookieEnv) refresh(t *testing.T, rt string) (st.TokenResponse, string) {
	t.Helper()
	r := e.post("/oauth2/token", cookieRefreshForm(), spaHeaders(), rt)
	return cookieAnswer(t, r, e.in.Config.RefreshMaxAge)
}

func cookieRefreshForm() url.Values {
	return url.Values{"grant_type": {"refresh_token"}, "client_id": {spaClientID}}
}

// cookieAnswer checks a token answer to the cookie client: no refresh token
// in the body, and exactly one Set-Cookie with the cookie's exact
// attributes; it returns the tokens and the cookie's refresh token.
func cookieAnswer(t *testing.T, r *st.Response, maxAge time.Duration) (st.TokenResponse, string) {
	t.Helper()
	tok := r.Token()
	if tok.RefreshToken != "" || strings.Contains(string(r.Body), "refresh_token") || strings.Contains(string(r.Body), token.RefreshTokenPrefix) {
		t.Fatalf("the body carries a refresh token: %s", r.Body)
	}
	return tok, setCookie(t, r, maxAge)
}

// setCookie checks the one Set-Cookie header, attribute by attribute and in
// Go's exact serialisation, and returns its value: portcullis-rt over plain
// HTTP, or __Host-portcullis-rt and Secure when the deployment is HTTPS.
func setCookie(t *testing.T, r *st.Response, maxAge time.Duration) string {
	t.Helper()
	raw := r.Header.Values("Set-Cookie")
	if len(raw) != 1 {
		t.Fatalf("Set-Cookie %q, want exactly one", raw)
	}
	name, rest, _ := strings.Cut(raw[0], "=")
	value, attrs, _ := strings.Cut(rest, "; ")
	if name != rtcookie.InsecureCookieName && name != rtcookie.CookieName || !strings.HasPrefix(value, token.RefreshTokenPrefix) {
		t.Fatalf("Set-Cookie %q: want %s=pcrt_… or %s=pcrt_…", raw[0], rtcookie.InsecureCookieName, rtcookie.CookieName)
	}
	suffix := "; HttpOnly; SameSite=Strict"
	if name == rtcookie.CookieName {
		suffix = "; HttpOnly; Secure; SameSite=Strict"
	}
	ma := strings.TrimSuffix(strings.TrimPrefix(attrs, "Path=/; Max-Age="), suffix)
	n, err := strconv.Atoi(ma)
	if err != nil || !strings.HasPrefix(attrs, "Path=/; Max-Age=") || !strings.HasSuffix(attrs, suffix) {
		t.Fatalf("Set-Cookie attributes %q, want Path=/; Max-Age=N%s", attrs, suffix)
	}
	if want := int(maxAge.Seconds()); n > want || n < want-60 {
		t.Fatalf("Max-Age=%d, want the family's remaining absolute lifetime (about %d)", n, want)
	}
	return value
}

// isCurrent reports whether rt is its family's current refresh token (the
// token state's own answer: a refused request must not have rotated it).
func (e cookieEnv) isCurrent(t *testing.T, rt string) bool {
	t.Helper()
	sid := strings.TrimPrefix(rt, token.RefreshTokenPrefix)[:22]
	_, err := e.in.App.State.FindRefresh(context.Background(), sid, token.HashSecret(rt), time.Now(), 0)
	return err == nil
}

func cookieBackends() []st.Backend { return []st.Backend{st.PostgresRedis, st.SQLite} }

// TestRefreshCookieFlow: a cookie client logs in, refreshes with the cookie
// alone and gets each refresh token only as the cookie, with its exact
// attributes; an explicit refresh_token parameter still works for it.
func TestRefreshCookieFlow(t *testing.T) {
	t.Parallel()
	for _, b := range cookieBackends() {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newCookieEnv(t, b)
			_, rt := e.login(t)
			_, next := e.refresh(t, rt)
			if next == rt {
				t.Fatal("the refresh did not rotate the cookie")
			}
			if e.isCurrent(t, rt) || !e.isCurrent(t, next) {
				t.Fatal("the cookie's successor is not the family's current token")
			}
			// No cookie: the parameter is missing, as for any client.
			e.post("/oauth2/token", cookieRefreshForm(), spaHeaders(), "").ExpectError(400, "invalid_request")
			// Over HTTPS (here a proxy saying so) the cookie is __Host- and Secure.
			r := e.post("/oauth2/token", cookieRefreshForm(), spaHeaders(), "", st.WithHeader("X-Forwarded-Proto", "https"),
				st.WithHeader("Cookie", rtcookie.CookieName+"="+next))
			raw := r.ExpectStatus(200).Header.Get("Set-Cookie")
			if !strings.HasPrefix(raw, rtcookie.CookieName+"=pcrt_") || !strings.HasSuffix(raw, "; HttpOnly; Secure; SameSite=Strict") ||
				!strings.Contains(raw, "; Path=/; Max-Age=") {
				t.Fatalf("Set-Cookie over HTTPS %q", raw)
			}
		})
	}
}

// TestRefreshCookieRefusals: every request of the cookie client without an
// allowed Origin, without X-Portcullis-CSRF: 1, or sent cross-site answers
// 403 invalid_request, sets no cookie and rotates, revokes or ends nothing:
// the cookie is still its family's current token and refreshes afterwards.
// On the old code the token endpoint ignored these headers (200).
func TestRefreshCookieRefusals(t *testing.T) {
	t.Parallel()
	refusals := []struct {
		name    string
		headers map[string]string
	}{
		{"missing Origin", map[string]string{rtcookie.CSRFHeader: "1"}},
		{"foreign Origin", map[string]string{"Origin": "https://evil.example.test", rtcookie.CSRFHeader: "1"}},
		{"sibling Origin", map[string]string{"Origin": "https://other.example.test", rtcookie.CSRFHeader: "1", "Sec-Fetch-Site": "same-site"}},
		{"Origin with a path", map[string]string{"Origin": spaOrigin + "/", rtcookie.CSRFHeader: "1"}},
		{"missing header", map[string]string{"Origin": spaOrigin}},
		{"header not 1", map[string]string{"Origin": spaOrigin, rtcookie.CSRFHeader: "true"}},
		{"cross-site", map[string]string{"Origin": spaOrigin, rtcookie.CSRFHeader: "1", "Sec-Fetch-Site": "cross-site"}},
	}
	for _, b := range cookieBackends() {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newCookieEnv(t, b)
			tok, rt := e.login(t)
			login := st.PasswordForm(userEmail, userPass, "")
			login.Set("client_id", spaClientID)
			revoke := url.Values{"client_id": {spaClientID}}
			for _, rf := range refusals {
				t.Run(rf.name, func(t *testing.T) {
					for _, req := range []struct {
						what string
						send func() *st.Response
					}{
						{"refresh", func() *st.Response { return e.post("/oauth2/token", cookieRefreshForm(), rf.headers, rt) }},
						{"refresh parameter", func() *st.Response {
							f := cookieRefreshForm()
							f.Set("refresh_token", rt)
							return e.post("/oauth2/token", f, rf.headers, "")
						}},
						{"login", func() *st.Response { return e.post("/oauth2/token", login, rf.headers, "") }},
						{"revoke", func() *st.Response { return e.post("/oauth2/revoke", revoke, rf.headers, rt) }},
						{"logout", func() *st.Response {
							return e.post("/auth/logout", url.Values{}, rf.headers, rt, st.Bearer(tok.AccessToken))
						}},
					} {
						r := req.send().ExpectError(http.StatusForbidden, "invalid_request")
						if sc := r.Header.Values("Set-Cookie"); len(sc) != 0 {
							t.Fatalf("%s: a refused request set %q", req.what, sc)
						}
						if !e.isCurrent(t, rt) {
							t.Fatalf("%s: a refused request rotated or revoked the cookie's token", req.what)
						}
					}
				})
			}
			// The access token still works (logout was refused) and so does the cookie.
			e.c.Get("/userinfo", st.Bearer(tok.AccessToken)).ExpectStatus(200)
			e.refresh(t, rt)
		})
	}
}

// TestRefreshCookieRevokeAndLogout: revocation without token revokes the
// cookie's refresh token and clears the cookie; with a token it clears the
// cookie too; logout ends the session and clears it.
func TestRefreshCookieRevokeAndLogout(t *testing.T) {
	t.Parallel()
	for _, b := range cookieBackends() {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newCookieEnv(t, b)
			cleared := func(t *testing.T, r *st.Response) {
				t.Helper()
				want := rtcookie.InsecureCookieName + "=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"
				if got := r.Header.Values("Set-Cookie"); len(got) != 1 || got[0] != want {
					t.Fatalf("Set-Cookie %q, want [%q]", got, want)
				}
			}
			refused := func(t *testing.T, rt string) {
				t.Helper()
				e.post("/oauth2/token", cookieRefreshForm(), spaHeaders(), rt).ExpectError(400, "invalid_grant")
			}
			revoke := url.Values{"client_id": {spaClientID}}

			_, rt := e.login(t)
			r := e.post("/oauth2/revoke", revoke, spaHeaders(), rt).ExpectStatus(200)
			cleared(t, r)
			refused(t, rt)

			_, rt = e.login(t)
			withToken := url.Values{"client_id": {spaClientID}, "token": {rt}}
			cleared(t, e.post("/oauth2/revoke", withToken, spaHeaders(), "").ExpectStatus(200))
			refused(t, rt)

			// No cookie and no token: nothing to revoke, the cookie is cleared.
			cleared(t, e.post("/oauth2/revoke", revoke, spaHeaders(), "").ExpectStatus(200))

			tok, rt := e.login(t)
			cleared(t, e.post("/auth/logout", url.Values{}, spaHeaders(), rt, st.Bearer(tok.AccessToken)).ExpectStatus(204))
			refused(t, rt)
		})
	}
}

// TestRefreshCookieRevokeAfterRotation: one tab rotates the cookie while
// another tab's logout revokes, through the cookie, the value that tab
// still holds, inside the grace window where that value still refreshes:
// the revocation ends the session, so neither value refreshes afterwards.
func TestRefreshCookieRevokeAfterRotation(t *testing.T) {
	t.Parallel()
	for _, b := range cookieBackends() {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newCookieEnv(t, b)
			_, old := e.login(t)
			_, cur := e.refresh(t, old)
			e.post("/oauth2/revoke", url.Values{"client_id": {spaClientID}}, spaHeaders(), old).ExpectStatus(200)
			for _, rt := range []string{old, cur} {
				e.post("/oauth2/token", cookieRefreshForm(), spaHeaders(), rt).ExpectError(400, "invalid_grant")
			}
		})
	}
}

// TestRefreshCookieBodyClientUnchanged: a body client behaves as before —
// refresh tokens in the body, no cookie, no Origin or header needed, the
// token parameter of revocation required — even when it sends a cookie.
func TestRefreshCookieBodyClientUnchanged(t *testing.T) {
	t.Parallel()
	for _, b := range cookieBackends() {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newCookieEnv(t, b, map[string]string{"PORTCULLIS_CORS_ORIGINS": bodyOrigin})
			basic := st.Basic("web", e.webSecret)
			// PORTCULLIS_CORS_ORIGINS still answers the token endpoint as
			// before: that origin, never with credentials.
			pre := e.c.Do(http.MethodOptions, "/oauth2/token", nil, "", st.WithHeader("Origin", bodyOrigin),
				st.WithHeader("Access-Control-Request-Method", "POST")).ExpectStatus(204)
			if pre.Header.Get("Access-Control-Allow-Origin") != bodyOrigin || pre.Header.Get("Access-Control-Allow-Credentials") != "" ||
				!slices.Equal(pre.Header.Values("Vary"), []string{"Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers"}) {
				t.Fatalf("preflight for a PORTCULLIS_CORS_ORIGINS origin: %v", pre.Header)
			}
			noCookie := func(t *testing.T, r *st.Response) {
				t.Helper()
				if sc := r.Header.Values("Set-Cookie"); len(sc) != 0 {
					t.Fatalf("a body client got Set-Cookie %q", sc)
				}
			}
			r := e.c.PostForm("/oauth2/token", st.PasswordForm(userEmail, userPass, ""), basic)
			tok := r.Token()
			noCookie(t, r)
			if !strings.HasPrefix(tok.RefreshToken, token.RefreshTokenPrefix) {
				t.Fatalf("no refresh token in the body: %s", r.Body)
			}
			// A cookie (even a valid refresh token in it) means nothing to a body client.
			r = e.post("/oauth2/token", url.Values{"grant_type": {"refresh_token"}}, nil, tok.RefreshToken, basic).
				ExpectError(400, "invalid_request")
			noCookie(t, r)
			r = e.c.PostForm("/oauth2/token", st.RefreshForm(tok.RefreshToken), basic)
			next := r.Token()
			noCookie(t, r)
			if next.RefreshToken == "" || next.RefreshToken == tok.RefreshToken {
				t.Fatalf("the body refresh did not rotate: %s", r.Body)
			}
			e.post("/oauth2/revoke", url.Values{}, nil, next.RefreshToken, basic).ExpectError(400, "invalid_request")
			noCookie(t, e.c.PostForm("/oauth2/revoke", url.Values{"token": {next.RefreshToken}}, basic).ExpectStatus(200))
			tok = e.c.PostForm("/oauth2/token", st.PasswordForm(userEmail, userPass, ""), basic).Token()
			noCookie(t, e.c.PostForm("/auth/logout", url.Values{}, st.Bearer(tok.AccessToken)).ExpectStatus(204))
		})
	}
}

// TestRefreshCookieCORS: preflights and answers on the token, revocation
// and logout endpoints, and on the account endpoints that start a session
// (password change, invite acceptance), carry credentialed CORS for the
// cookie client's exact origin, and no CORS headers for any other origin.
// On the old code no origin got any.
func TestRefreshCookieCORS(t *testing.T) {
	t.Parallel()
	e := newCookieEnv(t, st.PostgresRedis)
	for _, path := range []string{"/oauth2/token", "/oauth2/revoke", "/auth/logout", "/auth/password/change", "/auth/invites/accept"} {
		for _, tc := range []struct {
			origin string
			allow  bool
		}{
			{spaOrigin, true},
			{"https://evil.example.test", false},
			{"https://app.example.test:8443", false},
			{"http://app.example.test", false},
			{"null", false},
		} {
			t.Run(path+" "+tc.origin, func(t *testing.T) {
				r := e.c.Do(http.MethodOptions, path, nil, "", st.WithHeader("Origin", tc.origin),
					st.WithHeader("Access-Control-Request-Method", "POST"),
					st.WithHeader("Access-Control-Request-Headers", "content-type,x-portcullis-csrf"))
				h := r.Header
				if !tc.allow {
					for k := range h {
						if strings.HasPrefix(k, "Access-Control-") {
							t.Fatalf("preflight from %s answered %s: %q", tc.origin, k, h.Values(k))
						}
					}
					return
				}
				r.ExpectStatus(204)
				if h.Get("Access-Control-Allow-Origin") != tc.origin || h.Get("Access-Control-Allow-Credentials") != "true" ||
					h.Get("Access-Control-Allow-Headers") != "X-Portcullis-CSRF, Content-Type, Authorization" ||
					!strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") || !strings.Contains(strings.Join(h.Values("Vary"), ","), "Origin") {
					t.Fatalf("preflight answer headers %v", h)
				}
				// The answer itself (here a refusal: no cookie) carries them too.
				a := e.post(path, cookieRefreshForm(), spaHeaders(), "")
				if a.Header.Get("Access-Control-Allow-Origin") != tc.origin || a.Header.Get("Access-Control-Allow-Credentials") != "true" {
					t.Fatalf("answer headers %v", a.Header)
				}
			})
		}
	}
}

// TestRefreshCookieConcurrentTabs: 16 refreshes with the one cookie at once
// (as browser tabs do) all succeed within the grace with the same successor,
// which then works; no reuse revocation.
func TestRefreshCookieConcurrentTabs(t *testing.T) {
	t.Parallel()
	for _, b := range cookieBackends() {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newCookieEnv(t, b)
			_, rt := e.login(t)
			const tabs = 16
			var start, done sync.WaitGroup
			start.Add(1)
			results := make([]*st.Response, tabs)
			for i := range tabs {
				done.Add(1)
				go func() {
					defer done.Done()
					start.Wait()
					results[i] = e.post("/oauth2/token", cookieRefreshForm(), spaHeaders(), rt)
				}()
			}
			start.Done()
			done.Wait()
			successors := map[string]bool{}
			for _, r := range results {
				_, next := cookieAnswer(t, r, e.in.Config.RefreshMaxAge)
				successors[next] = true
			}
			if len(successors) != 1 {
				t.Fatalf("%d different successors in the cookies, want 1", len(successors))
			}
			for next := range successors {
				e.refresh(t, next)
			}
		})
	}
}

// TestRefreshCookieTwoClientsShareOneCookie: two cookie clients of one
// issuer share the one cookie, so after a login to app B the cookie holds
// B's refresh token when app A refreshes. A's refresh with it answers 400
// invalid_grant, sets no cookie and leaves B's session as it was: B's token
// is still current and B refreshes with it. Before, the grant rotated B's
// family and then ended it as theft ("presented by another client"), so two
// apps signed each other out, and a script on either's origin could end the
// other's sessions at will. B's token sent by A in the body is still theft
// evidence: it answers the same and ends B's session.
func TestRefreshCookieTwoClientsShareOneCookie(t *testing.T) {
	t.Parallel()
	const otherOrigin, otherClient = "https://other.example.test", "spa-b"
	bHeaders := map[string]string{"Origin": otherOrigin, rtcookie.CSRFHeader: "1", "Sec-Fetch-Site": "same-site"}
	cases := []struct {
		name    string
		send    func(e cookieEnv, rtB string) *st.Response // app A's refresh, B's token at hand
		bLives  bool
		because string
	}{
		{"ok/the cookie holds B's token", func(e cookieEnv, rtB string) *st.Response {
			return e.post("/oauth2/token", cookieRefreshForm(), spaHeaders(), rtB)
		}, true, "a clash in the shared cookie is no theft"},
		{"fail/B's token in the body", func(e cookieEnv, rtB string) *st.Response {
			f := cookieRefreshForm()
			f.Set("refresh_token", rtB)
			return e.post("/oauth2/token", f, spaHeaders(), "")
		}, false, "another client's token sent on purpose is theft"},
	}
	for _, b := range cookieBackends() {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newCookieEnv(t, b)
			st.NewFixtures(t, e.in.App.Core).Client(t, clients.Spec{ID: otherClient, Public: true,
				RefreshTokenDelivery: store.RefreshDeliveryCookie, AllowedOrigins: []string{otherOrigin}, RefreshReuseGrace: cookieGrace})
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					form := st.PasswordForm(userEmail, userPass, "")
					form.Set("client_id", otherClient)
					_, rtB := cookieAnswer(t, e.post("/oauth2/token", form, bHeaders, ""), e.in.Config.RefreshMaxAge)
					r := tc.send(e, rtB).ExpectError(400, "invalid_grant")
					if sc := r.Header.Values("Set-Cookie"); len(sc) != 0 {
						t.Fatalf("app A's refused refresh set %q", sc)
					}
					if got := e.isCurrent(t, rtB); got != tc.bLives {
						t.Fatalf("B's token current after A's refresh: %v, want %v (%s)", got, tc.bLives, tc.because)
					}
					bRefresh := e.post("/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "client_id": {otherClient}}, bHeaders, rtB)
					if !tc.bLives {
						bRefresh.ExpectError(400, "invalid_grant")
						return
					}
					if _, next := cookieAnswer(t, bRefresh, e.in.Config.RefreshMaxAge); next == rtB {
						t.Fatal("B's own refresh did not rotate its token")
					}
				})
			}
		})
	}
}

// TestRefreshCookieNeedsGrace: while PORTCULLIS_REFRESH_REUSE_GRACE is under
// 2 s, creating a cookie client answers 400 invalid_request naming the
// setting (admin API; CLI through the same service), and serve refuses to
// start while one exists; with the grace it starts and warns when an
// allowed origin is another site than Portcullis.
func TestRefreshCookieNeedsGrace(t *testing.T) {
	t.Parallel()
	t.Run("creation", func(t *testing.T) {
		t.Parallel()
		a := newAcctEnvOn(t, st.SQLite, map[string]string{"PORTCULLIS_REFRESH_REUSE_GRACE": "1s"})
		root := a.login(t, rootEmail, rootPass).AccessToken
		body := map[string]any{"client_id": "spa", "public": true, "refresh_token_delivery": "cookie", "allowed_origins": []string{spaOrigin}}
		r := a.c.PostJSON("/admin/clients", body, st.Bearer(root)).ExpectError(400, "invalid_request")
		if !strings.Contains(string(r.Body), "PORTCULLIS_REFRESH_REUSE_GRACE") {
			t.Fatalf("the refusal does not name the setting: %s", r.Body)
		}
		body["client_id"] = "web-spa"
		body["refresh_token_delivery"] = "body"
		delete(body, "allowed_origins")
		r = a.c.PostJSON("/admin/clients", body, st.Bearer(root)).ExpectStatus(201)
		if got := r.Map(); got["refresh_token_delivery"] != "body" {
			t.Fatalf("created %v", got)
		}
	})
	t.Run("startup", func(t *testing.T) {
		t.Parallel()
		for _, b := range cookieBackends() {
			env := st.NewEnv(t, b)
			env["PORTCULLIS_REFRESH_REUSE_GRACE"] = "2s"
			in := st.Start(t, env)
			st.NewFixtures(t, in.App.Core).Client(t, clients.Spec{ID: spaClientID, Public: true,
				RefreshTokenDelivery: store.RefreshDeliveryCookie, AllowedOrigins: []string{spaOrigin}, RefreshReuseGrace: 2 * time.Second})
			in.Stop()
			env["PORTCULLIS_REFRESH_REUSE_GRACE"] = "1500ms"
			built, err := app.Build(context.Background(), env.Config(t, "127.0.0.1:0"), slog.New(slog.DiscardHandler))
			if err == nil {
				_ = built.Close()
				t.Fatalf("%s: serve started with a cookie client and a 1.5 s grace", b)
			}
			if !strings.Contains(err.Error(), "PORTCULLIS_REFRESH_REUSE_GRACE") || !strings.Contains(err.Error(), fmt.Sprintf("%q", spaClientID)) {
				t.Fatalf("%s: the refusal %q does not name the setting and the client", b, err)
			}
			// With the grace it starts, and warns that the app's origin is
			// another site than Portcullis (the deployment rule).
			env["PORTCULLIS_REFRESH_REUSE_GRACE"] = "2s"
			var logs st.SyncBuffer
			built, err = app.Build(context.Background(), env.Config(t, "127.0.0.1:0"), slog.New(slog.NewJSONHandler(&logs, nil)))
			if err != nil {
				t.Fatalf("%s: with a 2 s grace: %v", b, err)
			}
			_ = built.Close()
			if !strings.Contains(logs.String(), "another site than Portcullis") || !strings.Contains(logs.String(), spaOrigin) {
				t.Fatalf("%s: no deployment-rule warning in %s", b, logs.String())
			}
		}
	})
}

// TestRefreshCookieCodeFlow: the authorization_code grant of a cookie
// client (public, PKCE) sets the cookie and leaves the refresh token out of
// the body; the code exchange without the defences is refused and the code
// stays unspent; the cookie then refreshes.
func TestRefreshCookieCodeFlow(t *testing.T) {
	t.Parallel()
	for _, b := range cookieBackends() {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSignIn(t, b, map[string]string{"PORTCULLIS_REFRESH_REUSE_GRACE": cookieGrace.String()})
			st.NewFixtures(t, d.in.App.Core).Client(t, clients.Spec{ID: "spa.cookie", Public: true, FirstParty: true,
				Grants: []string{"authorization_code", "refresh_token"}, RedirectURIs: []string{siCallback},
				RefreshTokenDelivery: store.RefreshDeliveryCookie, AllowedOrigins: []string{spaOrigin}, RefreshReuseGrace: cookieGrace})
			conf := d.oauth("spa.cookie", "", "openid")
			verifier := oauth2.GenerateVerifier()
			hc := siBrowser(t)
			login := siGet(t, hc, conf.AuthCodeURL("st", oauth2.S256ChallengeOption(verifier)))
			q := d.callback(t, login.submit(t, hc, url.Values{"username": {siEmail}, "password": {siPassword}}))
			e := cookieEnv{in: d.in, c: d.in.Client(t)}
			form := url.Values{"grant_type": {"authorization_code"}, "client_id": {"spa.cookie"}, "code": {q.Get("code")},
				"redirect_uri": {siCallback}, "code_verifier": {verifier}}
			e.post("/oauth2/token", form, map[string]string{"Origin": spaOrigin}, "").ExpectError(http.StatusForbidden, "invalid_request")
			// The grant has no offline_access: its family ends with the
			// browser session, so no later than the session's maximum age.
			lifetime := min(d.in.Config.RefreshMaxAge, d.in.Config.SessionMaxAge)
			tok, rt := cookieAnswer(t, e.post("/oauth2/token", form, spaHeaders(), ""), lifetime)
			if tok.IDToken == "" {
				t.Fatal("no id token from the code exchange")
			}
			refresh := url.Values{"grant_type": {"refresh_token"}, "client_id": {"spa.cookie"}}
			cookieAnswer(t, e.post("/oauth2/token", refresh, spaHeaders(), rt), lifetime)
		})
	}
}

package server_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

var b64 = base64.RawURLEncoding.EncodeToString

func jsonB64(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b64(b)
}

// expect4xx fails unless r is a client error with a body that says what went wrong.
func expect4xx(t *testing.T, what string, r *st.Response) {
	t.Helper()
	if r.StatusCode < 400 || r.StatusCode >= 500 {
		t.Fatalf("%s: status %d, want 4xx; body %s", what, r.StatusCode, r.Body)
	}
	if len(r.Body) == 0 {
		t.Fatalf("%s: empty error body", what)
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(r.Body, &e) != nil || e.Error == "" {
			t.Fatalf("%s: JSON error body without an error code: %s", what, r.Body)
		}
	}
}

// TestHostileTokens: forged, tampered, confused and foreign tokens are
// refused at every endpoint that checks tokens.
func TestHostileTokens(t *testing.T) {
	d := newDeployment(t, st.PostgresRedis, map[string]string{"PORTCULLIS_SIGNING_ALG": "RS256"})
	svc := st.Basic("svc", d.svcSecret)
	tok := d.login(t, "openid")
	parts := strings.Split(tok.AccessToken, ".")
	var header map[string]any
	hb, _ := base64.RawURLEncoding.DecodeString(parts[0])
	_ = json.Unmarshal(hb, &header)
	kid := header["kid"].(string)
	var claims map[string]any
	cb, _ := base64.RawURLEncoding.DecodeString(parts[1])
	_ = json.Unmarshal(cb, &claims)

	jwks := d.c.Get("/.well-known/jwks.json").Body
	hs256 := func(key []byte, h, c string) string {
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(h + "." + c))
		return h + "." + c + "." + b64(mac.Sum(nil))
	}
	_, attackerKey, _ := ed25519.GenerateKey(rand.Reader)
	attackerSigned := func(h map[string]any, c map[string]any) string {
		hs, cs := jsonB64(t, h), jsonB64(t, c)
		return hs + "." + cs + "." + b64(ed25519.Sign(attackerKey, []byte(hs+"."+cs)))
	}
	with := func(mut func(c map[string]any)) map[string]any {
		c := map[string]any{}
		for k, v := range claims {
			c[k] = v
		}
		mut(c)
		return c
	}
	sign := func(c map[string]any) string {
		s, err := d.in.App.Keys.Sign(c, "at+jwt")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	flip := func(s string) string {
		b := []byte(s)
		if b[len(b)-2] == 'A' {
			b[len(b)-2] = 'B'
		} else {
			b[len(b)-2] = 'A'
		}
		return string(b)
	}
	other := newDeployment(t, st.SQLite)
	foreign := other.login(t, "")

	cases := map[string]string{
		"alg none":                jsonB64(t, map[string]any{"alg": "none", "typ": "at+jwt", "kid": kid}) + "." + parts[1] + ".",
		"alg none no sig":         jsonB64(t, map[string]any{"alg": "none", "typ": "at+jwt"}) + "." + parts[1],
		"HS256 with the JWKS":     hs256(jwks, jsonB64(t, map[string]any{"alg": "HS256", "typ": "at+jwt", "kid": kid}), parts[1]),
		"HS256 with the kid":      hs256([]byte(kid), jsonB64(t, map[string]any{"alg": "HS256", "typ": "at+jwt", "kid": kid}), parts[1]),
		"tampered payload":        parts[0] + "." + jsonB64(t, with(func(c map[string]any) { c["scope"] = "keys:rotate" })) + "." + parts[2],
		"tampered signature":      flip(tok.AccessToken),
		"truncated":               parts[0] + "." + parts[1],
		"unknown kid":             attackerSigned(map[string]any{"alg": "EdDSA", "typ": "at+jwt", "kid": "attacker"}, claims),
		"path-like kid":           attackerSigned(map[string]any{"alg": "EdDSA", "typ": "at+jwt", "kid": "../../../../etc/passwd"}, claims),
		"sql kid":                 attackerSigned(map[string]any{"alg": "EdDSA", "typ": "at+jwt", "kid": "' OR '1'='1"}, claims),
		"real kid, attacker key":  attackerSigned(map[string]any{"alg": "EdDSA", "typ": "at+jwt", "kid": kid}, claims),
		"embedded jwk":            attackerSigned(map[string]any{"alg": "EdDSA", "typ": "at+jwt", "jwk": map[string]any{"kty": "OKP", "crv": "Ed25519", "x": b64(attackerKey.Public().(ed25519.PublicKey))}}, claims),
		"jku and x5u":             attackerSigned(map[string]any{"alg": "EdDSA", "typ": "at+jwt", "kid": "x", "jku": "http://127.0.0.1:1/jwks", "x5u": "http://127.0.0.1:1/x5u"}, claims),
		"expired":                 sign(with(func(c map[string]any) { c["exp"] = time.Now().Add(-time.Minute).Unix() })),
		"not yet valid":           sign(with(func(c map[string]any) { c["nbf"] = time.Now().Add(time.Hour).Unix() })),
		"wrong issuer":            sign(with(func(c map[string]any) { c["iss"] = "https://evil.example" })),
		"id token as bearer":      tok.IDToken,
		"refresh token as bearer": tok.RefreshToken,
		"another issuer's token":  foreign.AccessToken,
		"oversized":               parts[0] + "." + strings.Repeat("A", 20000) + "." + parts[2],
		"garbage":                 "not a token at all",
		"empty segments":          "..",
	}
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			c := st.NewClient(t, d.in.URL)
			r := c.Get("/userinfo", st.Bearer(bad))
			expect4xx(t, "userinfo", r)
			if r.StatusCode != 401 {
				t.Fatalf("userinfo status %d, want 401", r.StatusCode)
			}
			c.Get("/admin/users", st.Bearer(bad)).ExpectStatus(401)
			if bad == tok.RefreshToken {
				return // a live refresh token introspects as active (RFC 7662), with token_type refresh_token
			}
			m := c.PostForm("/oauth2/introspect", url.Values{"token": {bad}}, svc).ExpectStatus(200).Map()
			if len(m) != 1 || m["active"] != false {
				t.Fatalf("introspection of a hostile token: %v", m)
			}
		})
	}
	t.Run("access token as refresh token", func(t *testing.T) {
		d.c.PostForm("/oauth2/token", st.RefreshForm(tok.AccessToken), st.Basic("web", d.webSecret)).ExpectError(400, "invalid_grant")
	})
	// The genuine token still works after all that.
	d.c.Get("/userinfo", st.Bearer(tok.AccessToken)).ExpectStatus(200)
}

// injections are strings that break naive SQL, templates, headers, paths or parsers.
var injections = []string{
	"' OR '1'='1' --", "\"; DROP TABLE users; --", "admin'/*", "{{.}}", "{{template \"x\"}}", "${7*7}", "<script>alert(1)</script>",
	"../../../../etc/passwd", "%00", "\x00", "\r\nSet-Cookie: x=1", strings.Repeat("A", 5000), "ΩΣ😀", "\xff\xfe",
	"*", "usr_' UNION SELECT password_hash FROM users --",
}

// TestHostileInput: malformed, oversized, duplicated and injected input gets a
// clear 4xx at every endpoint, never a 5xx, and is never accepted.
func TestHostileInput(t *testing.T) {
	d := newDeployment(t, st.PostgresRedis)
	root := d.fx.User(t, "root@example.com", userPass, "super_admin")
	admin := d.c.PostForm("/oauth2/token", st.PasswordForm("root@example.com", userPass, ""), st.Basic("web", d.webSecret)).Token()
	bearer := st.Bearer(admin.AccessToken)
	web := st.Basic("web", d.webSecret)
	form := "application/x-www-form-urlencoded"

	t.Run("malformed and duplicated forms", func(t *testing.T) {
		for _, body := range []string{"grant_type=password&username=%zz", "grant_type=client_credentials&grant_type=client_credentials",
			"grant_type=password&username=a&password=b&password=c", "%", "&&&=", strings.Repeat("a=b&", 20000)} {
			expect4xx(t, body[:min(len(body), 40)], d.c.Do(http.MethodPost, "/oauth2/token", []byte(body), form, web))
		}
		expect4xx(t, "revoke dup", d.c.Do(http.MethodPost, "/oauth2/revoke", []byte("token=a&token=b"), form, web))
		expect4xx(t, "introspect dup", d.c.Do(http.MethodPost, "/oauth2/introspect", []byte("token=a&token=b"), form, st.Basic("svc", d.svcSecret)))
	})
	t.Run("oversized", func(t *testing.T) {
		expect4xx(t, "1 MiB form", d.c.Do(http.MethodPost, "/oauth2/token", []byte("grant_type=password&password="+strings.Repeat("x", 1<<20)), form, web))
		expect4xx(t, "1 MiB JSON", d.c.Do(http.MethodPost, "/auth/password/forgot", []byte(`{"email":"`+strings.Repeat("x", 1<<20)+`"}`), "application/json"))
		resp, err := d.c.TryDo(http.MethodGet, "/userinfo", nil, "", st.WithHeader("X-Big", strings.Repeat("x", 64<<10)))
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Fatalf("64 KiB header: status %d", resp.StatusCode)
		}
	})
	t.Run("malformed JSON", func(t *testing.T) {
		for _, path := range []string{"/auth/password/forgot", "/auth/password/reset", "/auth/invites/accept", "/auth/email/verify", "/admin/invites"} {
			for _, body := range []string{"{", "[]", `{"email":1}`, `{"email":"a@b.c"} trailing`, `{"unknown":"field"}`, "null", "\xff"} {
				r := d.c.Do(http.MethodPost, path, []byte(body), "application/json", bearer)
				if r.StatusCode == 202 && path == "/auth/password/forgot" && body == "null" {
					continue
				}
				expect4xx(t, path+" "+body, r)
			}
		}
	})
	t.Run("injection strings", func(t *testing.T) {
		for _, inj := range injections {
			expect4xx(t, "username", d.c.PostForm("/oauth2/token", st.PasswordForm(inj, inj, ""), web))
			expect4xx(t, "client_id", d.c.PostForm("/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {inj}, "client_secret": {inj}}))
			expect4xx(t, "scope", d.c.PostForm("/oauth2/token", st.PasswordForm(userEmail, userPass, inj), web))
			expect4xx(t, "refresh_token", d.c.PostForm("/oauth2/token", st.RefreshForm(inj), web))
			expect4xx(t, "basic id", d.c.PostForm("/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, st.Basic(inj, inj)))
			expect4xx(t, "reset token", d.c.PostJSON("/auth/password/reset", map[string]string{"token": inj, "new_password": "a fine new passphrase"}))
			expect4xx(t, "invite token", d.c.PostJSON("/auth/invites/accept", map[string]string{"token": inj, "password": "a fine new passphrase"}))
			expect4xx(t, "verify token", d.c.PostJSON("/auth/email/verify", map[string]string{"token": inj}))
			expect4xx(t, "invite email", d.c.PostJSON("/admin/invites", map[string]string{"email": inj, "role": "user"}, bearer))
			expect4xx(t, "invite role", d.c.PostJSON("/admin/invites", map[string]string{"email": "x@example.com", "role": inj}, bearer))
			expect4xx(t, "user id", d.c.Get("/admin/users/"+url.PathEscape(inj), bearer))
			expect4xx(t, "grant role", d.c.PostJSON("/admin/users/"+url.PathEscape(inj)+"/roles", map[string]string{"role": inj}, bearer))
			expect4xx(t, "client create", d.c.PostJSON("/admin/clients", map[string]any{"client_id": inj, "name": inj}, bearer))
			for _, q := range []string{"q", "email", "cursor"} {
				r := d.c.Get("/admin/users?"+q+"="+url.QueryEscape(inj), bearer)
				if r.StatusCode >= 500 {
					t.Fatalf("user search %s=%q: %d %s", q, inj, r.StatusCode, r.Body)
				}
				if r.StatusCode == 200 && strings.Contains(string(r.Body), "password_hash") {
					t.Fatal("search leaked a password hash")
				}
			}
			for _, q := range []string{"action", "actor_id", "since", "cursor"} {
				if r := d.c.Get("/admin/audit?"+q+"="+url.QueryEscape(inj), bearer); r.StatusCode >= 500 {
					t.Fatalf("audit filter %s=%q: %d", q, inj, r.StatusCode)
				}
			}
			forgot := d.c.PostJSON("/auth/password/forgot", map[string]string{"email": inj})
			if forgot.StatusCode >= 500 {
				t.Fatalf("forgot with %q: %d", inj, forgot.StatusCode)
			}
		}
		// Nothing was created or changed by any of it.
		users := d.c.Get("/admin/users", bearer).ExpectStatus(200).Map()
		if items := users["items"].([]any); len(items) != 2 {
			t.Fatalf("hostile input changed the users: %d users", len(items))
		}
	})
	t.Run("crafted cursors", func(t *testing.T) {
		// Cursors that decode (base64url JSON with a time and an id) but
		// name an id no store holds, or are not JSON objects at all: every
		// paged list refuses them with 400, PostgreSQL never sees them.
		cursor := func(js string) string { return base64.RawURLEncoding.EncodeToString([]byte(js)) }
		bad := []string{cursor(`{"t":"2026-01-01T00:00:00Z","i":"\u0000"}`), cursor(`{"t":"2026-01-01T00:00:00Z","i":"a\u0000b"}`),
			cursor(`[]`), cursor(`{"t":"not a time","i":"x"}`)}
		paths := []string{"/admin/users", "/admin/invites", "/admin/audit", "/admin/users/" + root.ID + "/sessions",
			"/admin/users/" + root.ID + "/consents", "/auth/api-keys", "/auth/sessions", "/auth/consents"}
		for _, p := range paths {
			for _, cur := range bad {
				expect4xx(t, p+" cursor "+cur, d.c.Get(p+"?cursor="+cur, bearer))
			}
			// A cursor of the right shape is a page.
			d.c.Get(p+"?cursor="+cursor(`{"t":"2000-01-01T00:00:00Z","i":"zzz"}`), bearer).ExpectStatus(200)
		}
	})
	t.Run("unknown paths and methods", func(t *testing.T) {
		expect4xx(t, "unknown path", d.c.Get("/../../etc/passwd"))
		expect4xx(t, "authorize without a client", d.c.Get("/oauth2/authorize?response_type=code"))
		expect4xx(t, "wrong method", d.c.Do(http.MethodPut, "/oauth2/token", nil, ""))
		expect4xx(t, "wrong content type", d.c.Do(http.MethodPost, "/oauth2/token", []byte("grant_type=password"), "text/plain", web))
	})
}

// TestHostileRoutes sweeps every route, asked with a super_admin's bearer
// token and with a console session alike (so the API's and the console's
// handlers both run), and every answer is also held to the OpenAPI
// description by the test client:
//   - ids no store can hold (a NUL byte, invalid UTF-8, which PostgreSQL
//     refuses as an error of its own) in every path parameter never answer a
//     5xx (nothing holds them: an API that reads the id answers 404);
//   - a malformed query string (unparseable, a parameter with a NUL byte or
//     invalid UTF-8) answers 400 invalid_request as JSON on the API, and the
//     browser pages answer it themselves, with an HTML page.
func TestHostileRoutes(t *testing.T) {
	env := st.NewEnv(t, st.PostgresRedis)
	env["PORTCULLIS_TENANTS"] = "on"
	in := st.Start(t, env)
	who := newSweepActors(t, in)
	c, bearer, session := in.Client(t), who.bearer, who.session
	// with is the route's path with every parameter v.
	with := func(route, v string) string { return fillRoute(route, func(string) string { return v }) }
	t.Run("unstorable ids", func(t *testing.T) {
		routes := 0
		for _, r := range in.App.Server.Echo().Routes() {
			if !strings.Contains(r.Path, ":") {
				continue
			}
			routes++
			for _, v := range []string{"a%00b", "%ff", "%00"} {
				path := with(r.Path, v)
				for _, auth := range []st.Option{bearer, session} {
					if resp := c.Do(r.Method, path, []byte("{}"), "application/json", auth); resp.StatusCode >= 500 {
						t.Errorf("%s %s: %d %s", r.Method, path, resp.StatusCode, resp.Body)
					}
				}
			}
		}
		if routes < 30 {
			t.Fatalf("only %d routes take an id: the sweep lost its routes", routes)
		}
	})
	t.Run("malformed queries", func(t *testing.T) {
		for _, r := range in.App.Server.Echo().Routes() {
			for _, q := range []string{"x=a%00b", "token=%ff", "%zz"} {
				path := with(r.Path, "x") + "?" + q
				for _, auth := range []st.Option{bearer, session} {
					if resp := c.Do(r.Method, path, nil, "", auth); resp.StatusCode >= 500 {
						t.Errorf("%s %s: %d %s", r.Method, path, resp.StatusCode, resp.Body)
					}
				}
			}
		}
		c.Get("/admin/users?q=a%00b", bearer).ExpectError(http.StatusBadRequest, "invalid_request")
		for _, path := range []string{"/reset-password?token=%ff", "/oauth2/logout?client_id=%00", "/console/users?q=%00"} {
			page := c.Get(path, session)
			if ct := page.Header.Get("Content-Type"); page.StatusCode >= 500 || strings.Contains(ct, "json") {
				t.Fatalf("%s: %d %q, want the page's own answer, never JSON", path, page.StatusCode, ct)
			}
		}
	})
}

func TestLoginTimingHidesAccounts(t *testing.T) {
	env := st.NewEnv(t, st.PostgresRedis)
	env["PORTCULLIS_RATE_LIMITS"] = "off"
	// The production argon2id parameters: the dummy verification must cost what a real one costs.
	delete(env, "PORTCULLIS_ARGON2_MEMORY")
	delete(env, "PORTCULLIS_ARGON2_TIME")
	in := st.Start(t, env)
	fx := st.NewFixtures(t, in.App.Core)
	fx.User(t, userEmail, userPass, "user")
	secret := fx.Client(t, clients.Spec{ID: "web"})
	c := in.Client(t)
	measure := func(login string) time.Duration {
		start := time.Now()
		c.PostForm("/oauth2/token", st.PasswordForm(login, "not the password", ""), st.Basic("web", secret)).ExpectError(400, "invalid_grant")
		return time.Since(start)
	}
	// Other tests share the two cores, so one round can be skewed by a burst of
	// their work; a real leak (no dummy verification: an unknown account
	// answered in a millisecond against tens for a real one) fails every round,
	// so the test fails only when five rounds in a row disagree. The two kinds
	// are interleaved and take turns going first: under the memory pressure of
	// the whole suite, every second argon2id run (19 MiB each) can pay for the
	// garbage collector or fresh pages, and a fixed order put that cost on the
	// same kind each time (ratios of 0.5–0.7 in make test, 1.0 alone).
	var mk, mu time.Duration
	for round := 0; round < 5; round++ {
		var known, unknown []time.Duration
		for i := 0; i < 16; i++ {
			nobody := fmt.Sprintf("nobody-%d-%d@example.com", round, i)
			if i%2 == 0 {
				known = append(known, measure(userEmail))
				unknown = append(unknown, measure(nobody))
			} else {
				unknown = append(unknown, measure(nobody))
				known = append(known, measure(userEmail))
			}
		}
		mk, mu = median(known), median(unknown)
		ratio := float64(mu) / float64(mk)
		t.Logf("round %d: median wrong password for a real account %s, unknown account %s (ratio %.2f)", round, mk, mu, ratio)
		if ratio >= 0.7 && ratio <= 1.3 {
			return
		}
	}
	t.Fatalf("login timing reveals accounts in five rounds: known %s vs unknown %s", mk, mu)
}

// fillRoute is the route template (Echo's, with ":name" parameters) with
// each parameter replaced by value(name).
func fillRoute(route string, value func(param string) string) string {
	parts := strings.Split(route, "/")
	for i, p := range parts {
		if name, ok := strings.CutPrefix(p, ":"); ok {
			parts[i] = value(name)
		}
	}
	return strings.Join(parts, "/")
}

// routeFor is the route template with its ":id" the user id and every
// other parameter "x", for the sweeps over every route.
func routeFor(route, id string) string {
	return fillRoute(route, func(name string) string {
		if name == "id" {
			return id
		}
		return "x"
	})
}

// sweepActors are the credentials the route sweeps ask with: a
// super_admin's bearer token (client "web", whose audiences hold the
// issuer), another super_admin's console session (TOTP enrolled, as the
// console asks), and web's client credentials; api is the bearer's user.
type sweepActors struct {
	api                  store.User
	bearer, session, web st.Option
}

// newSweepActors creates the users and the client of sweepActors on in and
// signs them in.
func newSweepActors(t *testing.T, in *st.Instance) sweepActors {
	t.Helper()
	fx := st.NewFixtures(t, in.App.Core)
	root := fx.User(t, "root@example.com", consolePassword, "super_admin") // the console's operator
	secret, _ := st.EnrolTOTPPreviousStep(t, in.App.MFA, root)
	a := sweepActors{api: fx.User(t, "api@example.com", userPass, "super_admin")} // the API's
	a.web = st.Basic("web", fx.Client(t, clients.Spec{ID: "web", Name: "Web", Audiences: []string{"api", fx.Issuer()}}))
	a.bearer = st.Bearer(in.Client(t).PostForm("/oauth2/token", st.PasswordForm(a.api.Email, userPass, ""), a.web).Token().AccessToken)
	_, cookie := consoleSignIn(t, in, siBrowser(t), "root@example.com", secret, "/console")
	a.session = st.WithHeader("Cookie", cookie.Name+"="+cookie.Value)
	return a
}

// unsizedReader hides a body's length, so the request goes out chunked
// and only reading it finds it over the limit.
type unsizedReader struct{ r io.Reader }

func (u unsizedReader) Read(p []byte) (int, error) { return u.r.Read(p) }

// TestOversizedFormsAnswerInKind: a form over the body limit, sent to every
// POST route with a signed-in browser's cookie and a bearer token, answers
// 413, never a 5xx; on the browser pages it is the pages' HTML error page
// with their CSP (the test client holds each answer to the OpenAPI
// description, whose pages list PageTooLarge), on the API the JSON error.
// Sent chunked, so that the limit is met only while the page reads its
// form, a page still answers with its HTML page. Fails on the code before
// this change: the pages answered the API's JSON.
func TestOversizedFormsAnswerInKind(t *testing.T) {
	t.Parallel()
	in := st.Start(t, st.NewEnv(t, st.PostgresRedis))
	who := newSweepActors(t, in)
	c := in.Client(t)
	big := []byte("a=" + strings.Repeat("x", 70<<10)) // over the 64 KB default
	pages := 0
	for _, r := range in.App.Server.Echo().Routes() {
		if r.Method != http.MethodPost {
			continue
		}
		path := fillRoute(r.Path, func(string) string { return "x" })
		for _, auth := range []st.Option{who.bearer, who.session} {
			resp := c.Do(r.Method, path, big, "application/x-www-form-urlencoded", auth)
			if resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Errorf("POST %s: %d %s, want 413", path, resp.StatusCode, resp.Body)
				continue
			}
			if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
				pages++
				if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") ||
					!strings.Contains(string(resp.Body), "more than this page accepts") {
					t.Errorf("POST %s: the page's 413 without its CSP or its words (%q):\n%s", path, csp, resp.Body)
				}
			}
		}
	}
	// Twenty forms, each asked twice.
	if pages != 2*20 {
		t.Errorf("%d answers were the pages' HTML, want %d", pages, 2*20)
	}
	for _, path := range []string{"/login", "/reset-password", "/console/users", "/oauth2/token"} {
		req, err := http.NewRequest(http.MethodPost, in.URL+path, unsizedReader{bytes.NewReader(big)})
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		wantHTML := path != "/oauth2/token"
		if isHTML := strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html"); resp.StatusCode >= 500 || isHTML != wantHTML {
			t.Errorf("POST %s, chunked: %d %q, want HTML %v", path, resp.StatusCode, resp.Header.Get("Content-Type"), wantHTML)
		}
	}
}

// hostileAgents are User-Agents a client can send that no backend can store
// as they are, and the text every record keeps of them instead
// (store.CleanRequestMeta): a cut at store.MaxUserAgent through a
// character, a byte that is not UTF-8 (Go's server takes raw bytes
// 0x80–0xFF in a header), a control character (the one, a tab, that HTTP
// lets through; the store's own test has NUL and the rest).
var hostileAgents = []struct{ name, ua, stored string }{
	{"ok/plain", "curl/8.0", "curl/8.0"},
	{"ok/cut_through_a_character", strings.Repeat("a", store.MaxUserAgent-1) + "é", strings.Repeat("a", store.MaxUserAgent-1)},
	{"ok/not_utf8", "\xff", "\uFFFD"},
	{"ok/control_character", "a\tb", "ab"},
}

// wantAgent fails unless got, a stored User-Agent, is want, and text every
// backend can hold.
func wantAgent(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want || !utf8.ValidString(got) || len(got) > store.MaxUserAgent {
		t.Fatalf("%s: stored User-Agent %q, want %q", what, got, want)
	}
}

// TestHostileUserAgentKeepsAuditEvents: whatever User-Agent a client sends,
// its failed and successful logins at the token endpoint are audited (and
// the success sets the last login). A User-Agent PostgreSQL refused made
// the event's write fail, and the event was lost: password guessing left
// no login.failed.
func TestHostileUserAgentKeepsAuditEvents(t *testing.T) {
	d := newDeployment(t, st.PostgresRedis, map[string]string{"PORTCULLIS_LOGIN_FAILURE_LIMIT": "100"})
	ctx := t.Context()
	web := st.Basic("web", d.webSecret)
	newest := func(t *testing.T, action string) (store.AuditEvent, int) {
		t.Helper()
		p, err := d.in.App.Core.Store.ListAudit(ctx, store.AuditFilter{Action: action, Limit: 200})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Items) == 0 {
			return store.AuditEvent{}, 0
		}
		return p.Items[0], len(p.Items)
	}
	user, err := d.in.App.Core.Store.GetUserByEmail(ctx, userEmail)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range hostileAgents {
		t.Run(tc.name, func(t *testing.T) {
			agent := st.WithHeader("User-Agent", tc.ua)
			_, before := newest(t, "login.failed")
			d.c.PostForm("/oauth2/token", st.PasswordForm(userEmail, "wrong password!!", ""), web, agent).ExpectError(400, "invalid_grant")
			failed, n := newest(t, "login.failed")
			if n != before+1 {
				t.Fatalf("%d login.failed events, want %d: the failure was not audited", n, before+1)
			}
			wantAgent(t, "login.failed", failed.UserAgent, tc.stored)

			_, before = newest(t, "login.succeeded")
			d.c.PostForm("/oauth2/token", st.PasswordForm(userEmail, userPass, ""), web, agent).ExpectStatus(200)
			ok, n := newest(t, "login.succeeded")
			if n != before+1 {
				t.Fatalf("%d login.succeeded events, want %d: the login was not audited", n, before+1)
			}
			wantAgent(t, "login.succeeded", ok.UserAgent, tc.stored)
			u, err := d.in.App.Core.Store.GetUser(ctx, user.ID)
			if err != nil || u.LastLoginAt == nil || !u.LastLoginAt.Equal(ok.Time) {
				t.Fatalf("last login %v (%v), want the login's time %v", u.LastLoginAt, err, ok.Time)
			}
		})
	}
}

// TestHostileUserAgentSignsIn: whatever User-Agent a browser sends, it
// signs in through the hosted login and to the console, with its token
// state in PostgreSQL (where a User-Agent PostgreSQL refused failed the
// session's write: 503, no sign-in) and in Redis, and every session and
// login event keeps the same text of it.
func TestHostileUserAgentSignsIn(t *testing.T) {
	for _, b := range []st.Backend{st.Postgres, st.PostgresRedis} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSignIn(t, b)
			fx := st.NewFixtures(t, d.in.App.Core)
			ctx := t.Context()
			for i, tc := range hostileAgents {
				t.Run(tc.name, func(t *testing.T) {
					email := fmt.Sprintf("agent%d@example.com", i)
					u := fx.User(t, email, consolePassword, "admin")
					browser := func() *http.Client {
						hc := siBrowser(t)
						hc.Transport = uaTransport{tc.ua}
						return hc
					}
					hc := browser()
					conf := d.oauth("first", d.firstSecret, oidc.ScopeOpenID)
					login := siGet(t, hc, conf.AuthCodeURL("st", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
					done := login.submit(t, hc, url.Values{"username": {email}, "password": {consolePassword}})
					d.callback(t, done)
					if _, cookie := consoleSignIn(t, d.in, browser(), email, "", "/console/users"); cookie == nil {
						t.Fatal("no console session")
					}

					live, err := d.in.App.BrowserSessions.ListBrowserSessions(ctx, u.ID, time.Now())
					if err != nil || len(live) < 2 {
						t.Fatalf("browser sessions %+v, %v; want the hosted login's and the console's", live, err)
					}
					for _, s := range live {
						wantAgent(t, "browser session", s.UserAgent, tc.stored)
					}
					p, err := d.in.App.Core.Store.ListAudit(ctx, store.AuditFilter{Action: "login.succeeded", TargetID: u.ID})
					if err != nil || len(p.Items) < 2 {
						t.Fatalf("login.succeeded events %+v, %v; want the two sign-ins'", p.Items, err)
					}
					for _, e := range p.Items {
						wantAgent(t, "login.succeeded", e.UserAgent, tc.stored)
					}
				})
			}
		})
	}
}

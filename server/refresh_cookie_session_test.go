package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/server/rtcookie"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// withHeaders turns headers into request options (a value "" drops the header).
func withHeaders(headers map[string]string, opts ...st.Option) []st.Option {
	for k, v := range headers {
		if v != "" {
			opts = append(opts, st.WithHeader(k, v))
		}
	}
	return opts
}

// newCookieTenantEnv is newTenantEnv (organisations on) with the cookie
// client spa and the grace it needs. Its public URL is HTTPS, so the cookie
// is __Host-portcullis-rt.
func newCookieTenantEnv(t *testing.T) *tenantEnv {
	t.Helper()
	e := newTenantEnv(t, st.SQLite, map[string]string{"PORTCULLIS_REFRESH_REUSE_GRACE": cookieGrace.String()})
	e.fx.Client(t, clients.Spec{ID: spaClientID, Public: true, RefreshTokenDelivery: store.RefreshDeliveryCookie,
		AllowedOrigins: []string{spaOrigin}, RefreshReuseGrace: cookieGrace})
	return e
}

// TestRefreshCookieSessionRoutes: the answers outside the token endpoint
// that start a session — POST /auth/password/change (through the client of
// the presented token) and POST /auth/invites/accept with client_id naming
// the client, for a new account and for an existing account joining an
// organisation — give a cookie client's refresh token only as the cookie,
// never in the body, with credentialed CORS for its origin; the cookie
// then refreshes. Without the token endpoint's defences they answer 403
// invalid_request and change nothing: the password stays, the invite stays
// usable, no cookie is set. On the old code the refresh token came in the
// JSON body, no cookie was set, and the defences were not asked for.
func TestRefreshCookieSessionRoutes(t *testing.T) {
	t.Parallel()
	parent := newCookieTenantEnv(t)
	acme := parent.createTenant(t, "acme")
	parent.member(t, acme, "admin-a@example.com", "admin")
	tokA := parent.loginTo(t, "admin-a@example.com", "acme").Token().AccessToken
	const newPass = "a completely new passphrase 42"
	refusals := map[string]map[string]string{
		"no CSRF header": {"Origin": spaOrigin},
		"foreign Origin": {"Origin": "https://evil.example.test", rtcookie.CSRFHeader: "1"},
		"cross-site":     {"Origin": spaOrigin, rtcookie.CSRFHeader: "1", "Sec-Fetch-Site": "cross-site"},
	}
	tests := []struct {
		name string
		// setup prepares one request and returns its sender, and a check
		// that nothing changed after a refusal.
		setup func(t *testing.T, e *tenantEnv, email string) (send func(headers map[string]string) *st.Response, unchanged func())
	}{
		{"password change", func(t *testing.T, e *tenantEnv, email string) (func(map[string]string) *st.Response, func()) {
			e.fx.User(t, email, tenantPass, "user")
			form := st.PasswordForm(email, tenantPass, "")
			form.Set("client_id", spaClientID)
			tok, _ := cookieAnswer(t, e.c.PostForm("/oauth2/token", form, withHeaders(spaHeaders())...), e.in.Config.RefreshMaxAge)
			body := map[string]string{"current_password": tenantPass, "new_password": newPass}
			return func(h map[string]string) *st.Response {
					return e.c.PostJSON("/auth/password/change", body, withHeaders(h, st.Bearer(tok.AccessToken))...)
				}, func() {
					e.loginTo(t, email, "").ExpectStatus(http.StatusOK)
				}
		}},
		{"invite, new account", func(t *testing.T, e *tenantEnv, email string) (func(map[string]string) *st.Response, func()) {
			inv := e.invite(t, tokA, email, "user")
			body := map[string]string{"token": inv, "password": newPass, "client_id": spaClientID}
			return func(h map[string]string) *st.Response {
					return e.c.PostJSON("/auth/invites/accept", body, withHeaders(h)...)
				}, func() {
					if _, err := e.in.App.Core.Store.GetUserByEmail(t.Context(), email); err == nil {
						t.Fatal("a refused acceptance created the account")
					}
				}
		}},
		{"invite, existing account joins an organisation", func(t *testing.T, e *tenantEnv, email string) (func(map[string]string) *st.Response, func()) {
			u := e.fx.User(t, email, tenantPass, "user")
			inv := e.invite(t, tokA, email, "user")
			body := map[string]string{"token": inv, "password": tenantPass, "client_id": spaClientID}
			return func(h map[string]string) *st.Response {
					return e.c.PostJSON("/auth/invites/accept", body, withHeaders(h)...)
				}, func() {
					if roles, _ := e.in.App.Core.Store.TenantRoles(t.Context(), acme, u.ID); len(roles) != 0 {
						t.Fatalf("a refused acceptance joined the organisation: %v", roles)
					}
				}
		}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := &tenantEnv{acctEnv: parent.with(t), rootTok: parent.rootTok}
			email := "cookie" + string(rune('a'+i)) + "@example.com"
			send, unchanged := tc.setup(t, e, email)
			for why, h := range refusals {
				r := send(h).ExpectError(http.StatusForbidden, "invalid_request")
				if sc := r.Header.Values("Set-Cookie"); len(sc) != 0 || strings.Contains(string(r.Body), token.RefreshTokenPrefix) {
					t.Fatalf("%s: a refused request set %q or answered %s", why, sc, r.Body)
				}
				unchanged()
			}
			r := send(spaHeaders())
			if got := r.Header.Get("Access-Control-Allow-Origin"); got != spaOrigin || r.Header.Get("Access-Control-Allow-Credentials") != "true" {
				t.Fatalf("CORS answer headers %v", r.Header)
			}
			tok, rt := cookieAnswer(t, r, e.in.Config.RefreshMaxAge)
			e.c.Get("/userinfo", st.Bearer(tok.AccessToken)).ExpectStatus(http.StatusOK)
			r = e.c.PostForm("/oauth2/token", cookieRefreshForm(), withHeaders(spaHeaders(), st.WithHeader("Cookie", rtcookie.CookieName+"="+rt))...)
			if _, next := cookieAnswer(t, r, e.in.Config.RefreshMaxAge); next == rt {
				t.Fatal("the cookie did not refresh")
			}
		})
	}
}

// TestRefreshCookieSessionRoutesBodyClient: a body client's password change
// and invite acceptance answer as before: the refresh token in the body, no
// cookie, no Origin or CSRF header needed.
func TestRefreshCookieSessionRoutesBodyClient(t *testing.T) {
	t.Parallel()
	e := newCookieTenantEnv(t)
	noCookie := func(t *testing.T, what string, r *st.Response) st.TokenResponse {
		t.Helper()
		tok := r.Token()
		if sc := r.Header.Values("Set-Cookie"); len(sc) != 0 || !strings.HasPrefix(tok.RefreshToken, token.RefreshTokenPrefix) {
			t.Fatalf("%s: Set-Cookie %q, body %s", what, sc, r.Body)
		}
		return tok
	}
	e.fx.User(t, "body@example.com", tenantPass, "user")
	tok := noCookie(t, "login", e.loginTo(t, "body@example.com", ""))
	noCookie(t, "password change", e.c.PostJSON("/auth/password/change",
		map[string]string{"current_password": tenantPass, "new_password": "a completely new passphrase 42"}, st.Bearer(tok.AccessToken)))
	acme := e.createTenant(t, "acme")
	e.member(t, acme, "admin-a@example.com", "admin")
	tokA := e.loginTo(t, "admin-a@example.com", "acme").Token().AccessToken
	inv := e.invite(t, tokA, "body-invite@example.com", "user")
	noCookie(t, "invite through web", e.c.PostJSON("/auth/invites/accept",
		map[string]string{"token": inv, "password": tenantPass, "client_id": "web"}, st.Basic("web", e.webSecret)))
	inv = e.invite(t, tokA, "first-party@example.com", "user")
	noCookie(t, "invite through the first-party client", e.c.PostJSON("/auth/invites/accept",
		map[string]string{"token": inv, "password": tenantPass}))
}

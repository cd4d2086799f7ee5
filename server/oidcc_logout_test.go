package server_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// The OpenID Foundation's RP-Initiated Logout plan
// (oidcc-rp-initiated-logout-certification-test-plan), mirrored like
// TestOIDCConformance: each module a subtest named like it, with the
// suite's checks, against the real server with x/oauth2 + go-oidc as the
// relying party. Each module signs in through the login page, then sends
// the logout request of the module from the same browser, and checks that
// the browser is signed out afterwards (prompt=none answers login_required)
// or, where the module expects a confirmation, that nothing redirects
// before it and only the registered URI after it.

// logoutEnv is one logout module's browser signed in at "first".
type logoutEnv struct {
	*oidccEnv
	conf  *oauth2.Config
	login oidccLogin
}

// logoutURL is the end_session_endpoint with params.
func (l *logoutEnv) logoutURL(params url.Values) string {
	u := l.d.in.URL + "/oauth2/logout"
	if len(params) > 0 {
		u += "?" + params.Encode()
	}
	return u
}

// expectSignedOut checks that the browser's session is over: prompt=none
// answers login_required, and the grant's refresh token (no
// offline_access) is dead.
func (l *logoutEnv) expectSignedOut(t *testing.T) {
	t.Helper()
	r := l.run(t, l.authURL(l.conf, "after", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()),
		oauth2.SetAuthURLParam("prompt", "none")))
	expectError(t, r, "after", "login_required")
	if l.login.tok.RefreshToken != "" {
		l.d.in.Client(t).PostForm("/oauth2/token", st.RefreshForm(l.login.tok.RefreshToken), st.Basic("first", l.d.firstSecret)).
			ExpectError(http.StatusBadRequest, "invalid_grant")
	}
	l.d.in.Client(t).Get("/userinfo", st.Bearer(l.login.tok.AccessToken)).ExpectError(http.StatusUnauthorized, "invalid_token")
}

// expectSignedIn checks that the browser's session still works.
func (l *logoutEnv) expectSignedIn(t *testing.T) {
	t.Helper()
	r := l.run(t, l.authURL(l.conf, "still", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()),
		oauth2.SetAuthURLParam("prompt", "none")))
	if r.params.Get("code") == "" {
		t.Fatalf("the session ended before the confirmation: %v", r.params)
	}
}

// expectConfirmation checks p is the confirmation page (200, no
// redirect), confirms it, and returns the answer to the confirmation.
func (l *logoutEnv) expectConfirmation(t *testing.T, p siPage) siPage {
	t.Helper()
	if p.StatusCode != http.StatusOK || p.Header.Get("Location") != "" ||
		!strings.Contains(p.body, `name="decision" value="logout"`) {
		t.Fatalf("want the confirmation page, got %d (Location %q):\n%s", p.StatusCode, p.Header.Get("Location"), p.body)
	}
	l.expectSignedIn(t)
	return p.submit(t, l.hc, url.Values{"decision": {"logout"}})
}

// expectSignedOutPage checks p is the signed-out page, not a redirect.
func expectSignedOutPage(t *testing.T, p siPage) {
	t.Helper()
	if p.StatusCode != http.StatusOK || p.Header.Get("Location") != "" || !strings.Contains(p.body, "You are signed out") {
		t.Fatalf("want the signed-out page, got %d (Location %q):\n%s", p.StatusCode, p.Header.Get("Location"), p.body)
	}
}

// expectPostLogoutRedirect checks p is a 303 to the registered post-logout
// URI with exactly the state sent (none when "").
func expectPostLogoutRedirect(t *testing.T, p siPage, state string) {
	t.Helper()
	loc := p.Header.Get("Location")
	u, err := url.Parse(loc)
	if p.StatusCode != http.StatusSeeOther || err != nil || u.Scheme+"://"+u.Host+u.Path != siPostLogout {
		t.Fatalf("want 303 to %s, got %d Location %q:\n%s", siPostLogout, p.StatusCode, loc, p.body)
	}
	if got := u.Query(); got.Get("state") != state || (state == "" && got.Has("state")) || len(got) > 1 {
		t.Fatalf("post-logout redirect query %v, want state %q only", got, state)
	}
}

// forgeHint returns the id token re-signed by a key that is not ours (same
// claims, a kid of ours).
func forgeHint(t *testing.T, raw string) string {
	t.Helper()
	parts := strings.Split(raw, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	head, _ := base64.RawURLEncoding.DecodeString(parts[0])
	var h struct{ Kid string }
	_ = json.Unmarshal(head, &h)
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: priv},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", h.Kid))
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	out, err := jwt.Signed(sig).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// unsignedHint is oidcc-rp-initiated-logout-modified-id-token-hint's
// hint: the id token with alg none and no signature.
func unsignedHint(raw string) string {
	parts := strings.Split(raw, ".")
	head := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	return head + "." + parts[1] + "."
}

var logoutModules = []struct {
	name string
	run  func(t *testing.T, l *logoutEnv)
}{
	{"oidcc-rp-initiated-logout", func(t *testing.T, l *logoutEnv) {
		p := siGet(t, l.hc, l.logoutURL(url.Values{"id_token_hint": {l.login.raw},
			"post_logout_redirect_uri": {siPostLogout}, "state": {"s t&a=te"}}))
		expectPostLogoutRedirect(t, p, "s t&a=te")
		l.expectSignedOut(t)
	}},
	{"oidcc-rp-initiated-logout-no-state", func(t *testing.T, l *logoutEnv) {
		p := siGet(t, l.hc, l.logoutURL(url.Values{"id_token_hint": {l.login.raw}, "post_logout_redirect_uri": {siPostLogout}}))
		expectPostLogoutRedirect(t, p, "")
		l.expectSignedOut(t)
	}},
	{"oidcc-rp-initiated-logout-bad-post-logout-redirect-uri", func(t *testing.T, l *logoutEnv) {
		p := siGet(t, l.hc, l.logoutURL(url.Values{"id_token_hint": {l.login.raw},
			"post_logout_redirect_uri": {"https://rp.example/elsewhere"}, "state": {"x"}}))
		expectSignedOutPage(t, l.expectConfirmation(t, p))
		l.expectSignedOut(t)
	}},
	{"oidcc-rp-initiated-logout-query-added-to-post-logout-redirect-uri", func(t *testing.T, l *logoutEnv) {
		p := siGet(t, l.hc, l.logoutURL(url.Values{"id_token_hint": {l.login.raw},
			"post_logout_redirect_uri": {siPostLogout + "?foo=bar"}, "state": {"x"}}))
		expectSignedOutPage(t, l.expectConfirmation(t, p))
		l.expectSignedOut(t)
	}},
	{"oidcc-rp-initiated-logout-modified-id-token-hint", func(t *testing.T, l *logoutEnv) {
		p := siGet(t, l.hc, l.logoutURL(url.Values{"id_token_hint": {unsignedHint(l.login.raw)},
			"post_logout_redirect_uri": {siPostLogout}, "state": {"x"}}))
		expectSignedOutPage(t, l.expectConfirmation(t, p))
		l.expectSignedOut(t)
	}},
	{"oidcc-rp-initiated-logout-bad-id-token-hint", func(t *testing.T, l *logoutEnv) {
		p := siGet(t, l.hc, l.logoutURL(url.Values{"id_token_hint": {forgeHint(t, l.login.raw)},
			"post_logout_redirect_uri": {siPostLogout}, "state": {"x"}}))
		expectSignedOutPage(t, l.expectConfirmation(t, p))
		l.expectSignedOut(t)
	}},
	{"oidcc-rp-initiated-logout-no-id-token-hint", func(t *testing.T, l *logoutEnv) {
		// client_id confirms the URI, so after the confirmation the
		// person goes back to it with state.
		p := siGet(t, l.hc, l.logoutURL(url.Values{"client_id": {"first"},
			"post_logout_redirect_uri": {siPostLogout}, "state": {"nohint"}}))
		expectPostLogoutRedirect(t, l.expectConfirmation(t, p), "nohint")
		l.expectSignedOut(t)
	}},
	{"oidcc-rp-initiated-logout-no-params", func(t *testing.T, l *logoutEnv) {
		p := siGet(t, l.hc, l.logoutURL(nil))
		expectSignedOutPage(t, l.expectConfirmation(t, p))
		l.expectSignedOut(t)
	}},
	{"oidcc-rp-initiated-logout-no-post-logout-redirect-uri", func(t *testing.T, l *logoutEnv) {
		p := siGet(t, l.hc, l.logoutURL(url.Values{"id_token_hint": {l.login.raw}, "state": {"x"}}))
		expectSignedOutPage(t, p)
		l.expectSignedOut(t)
	}},
	{"oidcc-rp-initiated-logout-only-state", func(t *testing.T, l *logoutEnv) {
		p := siGet(t, l.hc, l.logoutURL(url.Values{"state": {"only"}}))
		expectSignedOutPage(t, l.expectConfirmation(t, p))
		l.expectSignedOut(t)
	}},
	// Not modules of the plan; the contract's other refusals.
	{"portcullis-logout-hint-aud-differs-from-client-id", func(t *testing.T, l *logoutEnv) {
		p := siGet(t, l.hc, l.logoutURL(url.Values{"id_token_hint": {l.login.raw}, "client_id": {"third"},
			"post_logout_redirect_uri": {siPostLogout}, "state": {"x"}}))
		expectSignedOutPage(t, l.expectConfirmation(t, p))
		l.expectSignedOut(t)
	}},
	{"portcullis-logout-post-form", func(t *testing.T, l *logoutEnv) {
		body := []byte(url.Values{"id_token_hint": {l.login.raw}, "post_logout_redirect_uri": {siPostLogout},
			"state": {"posted"}}.Encode())
		req, err := http.NewRequest(http.MethodPost, l.logoutURL(nil), strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		// Held, then decided at the GET it answers with (TestRPLogoutCrossSitePost).
		expectPostLogoutRedirect(t, l.followHop(t, l.hc, siDo(t, l.hc, req, body)), "posted")
		l.expectSignedOut(t)
	}},
	{"portcullis-logout-repeated-parameter", func(t *testing.T, l *logoutEnv) {
		p := siGet(t, l.hc, l.logoutURL(nil)+"?state=a&state=b")
		if p.StatusCode != http.StatusBadRequest || p.Header.Get("Location") != "" {
			t.Fatalf("repeated state: %d (Location %q)", p.StatusCode, p.Header.Get("Location"))
		}
		l.expectSignedIn(t)
	}},
	{"portcullis-logout-stay-signed-in", func(t *testing.T, l *logoutEnv) {
		p := siGet(t, l.hc, l.logoutURL(nil))
		stay := p.submit(t, l.hc, url.Values{"decision": {"stay"}})
		if stay.StatusCode != http.StatusOK || !strings.Contains(stay.body, "still signed in") {
			t.Fatalf("stay: %d\n%s", stay.StatusCode, stay.body)
		}
		l.expectSignedIn(t)
	}},
	{"portcullis-logout-confirmation-needs-csrf", func(t *testing.T, l *logoutEnv) {
		body := []byte(url.Values{"decision": {"logout"}, "csrf_token": {strings.Repeat("A", 43)}}.Encode())
		req, err := http.NewRequest(http.MethodPost, l.d.in.URL+"/logout", strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if p := siDo(t, l.hc, req, body); p.StatusCode != http.StatusForbidden {
			t.Fatalf("a confirmation without the page's CSRF token: %d", p.StatusCode)
		}
		l.expectSignedIn(t)
	}},
	{"portcullis-logout-keeps-offline-grants", func(t *testing.T, l *logoutEnv) {
		offline := l.signIn(t, l.d.oauth("first", l.d.firstSecret, oidc.ScopeOpenID, oidc.ScopeOfflineAccess))
		p := siGet(t, l.hc, l.logoutURL(url.Values{"id_token_hint": {l.login.raw}, "post_logout_redirect_uri": {siPostLogout}}))
		expectPostLogoutRedirect(t, p, "")
		l.expectSignedOut(t)
		l.d.in.Client(t).PostForm("/oauth2/token", st.RefreshForm(offline.tok.RefreshToken), st.Basic("first", l.d.firstSecret)).
			ExpectStatus(http.StatusOK)
	}},
}

// TestRPInitiatedLogout runs the RP-Initiated Logout plan on PostgreSQL +
// Redis and on the embedded store.
func TestRPInitiatedLogout(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSignIn(t, b)
			fx := st.NewFixtures(t, d.in.App.Core)
			t.Run("oidcc-rp-initiated-logout-discovery-endpoint-verification", func(t *testing.T) {
				t.Parallel()
				var m struct {
					EndSession string `json:"end_session_endpoint"`
				}
				if err := d.provider.Claims(&m); err != nil || m.EndSession != d.in.Config.Issuer+"/oauth2/logout" {
					t.Fatalf("end_session_endpoint %q (%v)", m.EndSession, err)
				}
			})
			for i, m := range logoutModules {
				t.Run(m.name, func(t *testing.T) {
					t.Parallel()
					email := fmt.Sprintf("lo%d@example.com", i)
					fx.User(t, email, siPassword, "user")
					e := &oidccEnv{d: d, mode: "query", hc: siBrowser(t), email: email}
					conf := d.oauth("first", d.firstSecret, oidc.ScopeOpenID)
					l := &logoutEnv{oidccEnv: e, conf: conf, login: e.signIn(t, conf)}
					if l.login.tok.RefreshToken == "" {
						t.Fatal("the grant has no refresh token to show dying")
					}
					m.run(t, l)
				})
			}
		})
	}
}

// TestBackchannelLogoutConformance mirrors the back-channel plan
// (oidcc-backchannel-rp-initiated-logout-certification-test-plan) on both
// backends: discovery advertises back-channel logout with sessions, and
// RP-initiated logout POSTs a logout token to the client's
// backchannel_logout_uri, verified here with go-jose against the JWKS: typ
// logout+jwt, iss, aud, iat, exp within 2 minutes, jti, sub and sid equal
// to the id token's, the back-channel event, no nonce; then the browser is
// redirected with state and prompt=none fails.
func TestBackchannelLogoutConformance(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSignIn(t, b)
			t.Run("oidcc-backchannel-rp-initiated-logout-discovery-endpoint-verification", func(t *testing.T) {
				var m struct {
					Supported bool `json:"backchannel_logout_supported"`
					Session   bool `json:"backchannel_logout_session_supported"`
				}
				if err := d.provider.Claims(&m); err != nil || !m.Supported || !m.Session {
					t.Fatalf("back-channel metadata %+v (%v)", m, err)
				}
			})
			t.Run("oidcc-backchannel-rp-initiated-logout", func(t *testing.T) {
				received := make(chan url.Values, 4)
				rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if err := r.ParseForm(); err != nil || r.Method != http.MethodPost ||
						r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
						http.Error(w, "bad request", http.StatusBadRequest)
						return
					}
					received <- r.PostForm
					w.Header().Set("Cache-Control", "no-store")
				}))
				t.Cleanup(rcv.Close)
				fx := st.NewFixtures(t, d.in.App.Core)
				secret := fx.Client(t, clients.Spec{ID: "bcl-rp", Name: "BCL RP", FirstParty: true,
					Grants: []string{"authorization_code", "refresh_token"}, RedirectURIs: []string{siCallback},
					PostLogoutRedirectURIs: []string{siPostLogout}, BackchannelLogoutURI: rcv.URL + "/bcl"})
				fx.User(t, "bcl@example.com", siPassword, "user")
				e := &oidccEnv{d: d, mode: "query", hc: siBrowser(t), email: "bcl@example.com"}
				conf := d.oauth("bcl-rp", secret, oidc.ScopeOpenID)
				login := e.signIn(t, conf)
				var idc struct {
					SID string `json:"sid"`
				}
				if err := login.idt.Claims(&idc); err != nil || idc.SID == "" {
					t.Fatalf("id token sid: %v", err)
				}
				p := siGet(t, e.hc, d.in.URL+"/oauth2/logout?"+url.Values{"id_token_hint": {login.raw},
					"post_logout_redirect_uri": {siPostLogout}, "state": {"bcl"}}.Encode())
				expectPostLogoutRedirect(t, p, "bcl")
				var form url.Values
				select {
				case form = <-received:
				case <-time.After(20 * time.Second):
					t.Fatal("no logout token was posted to the back-channel logout URI")
				}
				if len(form["logout_token"]) != 1 || len(form) != 1 {
					t.Fatalf("back-channel body %v, want one logout_token", form)
				}
				raw := form.Get("logout_token")
				jws, err := jose.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA})
				if err != nil {
					t.Fatalf("logout token: %v", err)
				}
				h := jws.Signatures[0].Protected
				if h.ExtraHeaders[jose.HeaderType] != "logout+jwt" || h.KeyID == "" {
					t.Fatalf("logout token header %+v", h)
				}
				jwks := siGet(t, siBrowser(t), d.in.URL+"/.well-known/jwks.json")
				var set jose.JSONWebKeySet
				if err := json.Unmarshal([]byte(jwks.body), &set); err != nil {
					t.Fatal(err)
				}
				keys := set.Key(h.KeyID)
				if len(keys) != 1 {
					t.Fatalf("kid %q not in the JWKS", h.KeyID)
				}
				payload, err := jws.Verify(keys[0])
				if err != nil {
					t.Fatalf("the logout token's signature does not verify against the JWKS: %v", err)
				}
				var c map[string]any
				if err := json.Unmarshal(payload, &c); err != nil {
					t.Fatal(err)
				}
				events, _ := c["events"].(map[string]any)
				ev, isObject := events["http://schemas.openid.net/event/backchannel-logout"].(map[string]any)
				iat, _ := c["iat"].(float64)
				exp, _ := c["exp"].(float64)
				if c["iss"] != d.in.Config.Issuer || c["aud"] != "bcl-rp" || c["sub"] != login.idt.Subject ||
					c["sid"] != idc.SID || !isObject || len(ev) != 0 || c["jti"] == "" || c["jti"] == nil ||
					iat == 0 || exp <= iat || exp-iat > 120 || time.Since(time.Unix(int64(iat), 0)) > time.Minute {
					t.Fatalf("logout token claims %v", c)
				}
				if _, ok := c["nonce"]; ok {
					t.Fatalf("a logout token with a nonce: %v", c)
				}
				r := e.run(t, e.authURL(conf, "after", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()),
					oauth2.SetAuthURLParam("prompt", "none")))
				expectError(t, r, "after", "login_required")
			})
		})
	}
}

// laxWithheld is a browser's cookie jar as seen by a form posted from
// another site: the browser's own cookies (what the answer sets is kept in
// them), but none sent, as browsers withhold SameSite=Lax cookies from a
// cross-site POST.
type laxWithheld struct{ http.CookieJar }

func (laxWithheld) Cookies(*url.URL) []*http.Cookie { return nil }

// crossSitePost posts form to the end_session_endpoint from the relying
// party's page in hc's browser: form-serialised (RP-Initiated Logout §2),
// without the browser's session cookie.
func (l *logoutEnv) crossSitePost(t *testing.T, hc *http.Client, form string) siPage {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, l.logoutURL(nil), strings.NewReader(form))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://rp.example")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	post := &http.Client{Jar: laxWithheld{hc.Jar}, Timeout: hc.Timeout, CheckRedirect: hc.CheckRedirect}
	return siDo(t, post, req, []byte(form))
}

// followHop follows the answer to a POSTed logout request as the browser
// does: a 303 to Portcullis's own GET /logout, which carries the cookie.
func (l *logoutEnv) followHop(t *testing.T, hc *http.Client, p siPage) siPage {
	t.Helper()
	loc, err := p.Request.URL.Parse(p.Header.Get("Location"))
	if p.StatusCode != http.StatusSeeOther || err != nil || loc.Scheme+"://"+loc.Host+loc.Path != l.d.in.URL+"/logout" ||
		loc.Query().Get("request") == "" || len(loc.Query()) != 1 {
		t.Fatalf("want a 303 to this server's /logout?request=…, got %d Location %q:\n%s", p.StatusCode, p.Header.Get("Location"), p.body)
	}
	return siGet(t, hc, loc.String())
}

// TestRPLogoutCrossSitePost: a logout request form-posted from the relying
// party's site, which carries no SameSite=Lax session cookie, is held and
// answered with a 303 to this server's GET /logout?request=…; that GET
// carries the cookie and is decided as a GET of the same parameters would
// be: a valid hint with a registered URI ends the session (the grant's
// refresh token refused) and goes back with state, a valid hint alone shows
// the signed-out page, client_id alone asks first. A browser with no
// session is sent back as before and ends no one else's; a repeated
// parameter is refused at the POST; a held request is used once, and an
// unknown one is refused, neither ending the session. Before, the POST
// decided without the cookie, ended nothing on the server and redirected as
// if it had.
func TestRPLogoutCrossSitePost(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, l *logoutEnv)
	}{
		{"ok/hint_and_registered_uri", func(t *testing.T, l *logoutEnv) {
			p := l.crossSitePost(t, l.hc, url.Values{"id_token_hint": {l.login.raw}, "post_logout_redirect_uri": {siPostLogout},
				"state": {"po st&ed"}}.Encode())
			expectPostLogoutRedirect(t, l.followHop(t, l.hc, p), "po st&ed")
			l.expectSignedOut(t)
		}},
		{"ok/hint_only", func(t *testing.T, l *logoutEnv) {
			p := l.crossSitePost(t, l.hc, url.Values{"id_token_hint": {l.login.raw}}.Encode())
			expectSignedOutPage(t, l.followHop(t, l.hc, p))
			l.expectSignedOut(t)
		}},
		{"ok/client_id_asks_first", func(t *testing.T, l *logoutEnv) {
			p := l.crossSitePost(t, l.hc, url.Values{"client_id": {"first"}, "post_logout_redirect_uri": {siPostLogout},
				"state": {"asked"}}.Encode())
			expectPostLogoutRedirect(t, l.expectConfirmation(t, l.followHop(t, l.hc, p)), "asked")
			l.expectSignedOut(t)
		}},
		{"ok/no_session_in_this_browser", func(t *testing.T, l *logoutEnv) {
			other := siBrowser(t)
			p := l.crossSitePost(t, other, url.Values{"id_token_hint": {l.login.raw}, "post_logout_redirect_uri": {siPostLogout},
				"state": {"none"}}.Encode())
			expectPostLogoutRedirect(t, l.followHop(t, other, p), "none")
			l.expectSignedIn(t)
		}},
		{"fail/repeated_parameter", func(t *testing.T, l *logoutEnv) {
			p := l.crossSitePost(t, l.hc, "id_token_hint="+l.login.raw+"&state=a&state=b")
			if p.StatusCode != http.StatusBadRequest || p.Header.Get("Location") != "" {
				t.Fatalf("repeated state: %d (Location %q)", p.StatusCode, p.Header.Get("Location"))
			}
			l.expectSignedIn(t)
		}},
		{"fail/held_request_used_twice", func(t *testing.T, l *logoutEnv) {
			other := siBrowser(t)
			p := l.crossSitePost(t, other, url.Values{"id_token_hint": {l.login.raw}, "post_logout_redirect_uri": {siPostLogout}}.Encode())
			expectPostLogoutRedirect(t, l.followHop(t, other, p), "")
			again := l.followHop(t, l.hc, p) // the same link, now in the signed-in browser
			if again.StatusCode != http.StatusBadRequest || again.Header.Get("Location") != "" {
				t.Fatalf("a held request taken twice: %d (Location %q)", again.StatusCode, again.Header.Get("Location"))
			}
			l.expectSignedIn(t)
		}},
		{"fail/unknown_request", func(t *testing.T, l *logoutEnv) {
			p := siGet(t, l.hc, l.d.in.URL+"/logout?request="+strings.Repeat("A", 22))
			if p.StatusCode != http.StatusBadRequest || p.Header.Get("Location") != "" {
				t.Fatalf("an unknown held request: %d (Location %q)", p.StatusCode, p.Header.Get("Location"))
			}
			l.expectSignedIn(t)
		}},
	}
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSignIn(t, b)
			fx := st.NewFixtures(t, d.in.App.Core)
			for i, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					email := fmt.Sprintf("xpost%d@example.com", i)
					fx.User(t, email, siPassword, "user")
					e := &oidccEnv{d: d, mode: "query", hc: siBrowser(t), email: email}
					conf := d.oauth("first", d.firstSecret, oidc.ScopeOpenID)
					l := &logoutEnv{oidccEnv: e, conf: conf, login: e.signIn(t, conf)}
					tc.run(t, l)
				})
			}
		})
	}
}

package server_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/server/rtcookie"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// TestRPLogoutClearsTheRefreshCookie: the OIDC logout (GET /oauth2/logout
// with the id_token_hint of a cookie client, confirmed or not) clears the
// refresh-token cookie as the contract's "logout and revocation clear it"
// says, beside the browser session's cookie: with offline_access the family
// outlives the session by design, so a cookie left behind kept the person
// signed in to the application on that browser (found by a review: only the
// session cookie was cleared, and the cookie's token still refreshed).
func TestRPLogoutClearsTheRefreshCookie(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		scopes []string
	}{
		{"offline_access", []string{"openid", "offline_access"}},
		{"session_bound", []string{"openid"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := newSignIn(t, st.SQLite, map[string]string{"PORTCULLIS_REFRESH_REUSE_GRACE": cookieGrace.String()})
			st.NewFixtures(t, d.in.App.Core).Client(t, clients.Spec{ID: "spa.cookie", Public: true, FirstParty: true,
				Grants: []string{"authorization_code", "refresh_token"}, RedirectURIs: []string{siCallback},
				RefreshTokenDelivery: store.RefreshDeliveryCookie, AllowedOrigins: []string{spaOrigin}, RefreshReuseGrace: cookieGrace})
			conf := d.oauth("spa.cookie", "", tc.scopes...)
			verifier := oauth2.GenerateVerifier()
			hc := siBrowser(t)
			login := siGet(t, hc, conf.AuthCodeURL("st", oauth2.S256ChallengeOption(verifier)))
			q := d.callback(t, login.submit(t, hc, url.Values{"username": {siEmail}, "password": {siPassword}}))
			e := cookieEnv{in: d.in, c: d.in.Client(t)}
			form := url.Values{"grant_type": {"authorization_code"}, "client_id": {"spa.cookie"}, "code": {q.Get("code")},
				"redirect_uri": {siCallback}, "code_verifier": {verifier}}
			r := e.post("/oauth2/token", form, spaHeaders(), "").ExpectStatus(http.StatusOK)
			tok := r.Token()
			if tok.IDToken == "" || tok.RefreshToken != "" {
				t.Fatalf("code answer: id token %t, refresh token in the body %t", tok.IDToken != "", tok.RefreshToken != "")
			}
			out := siGet(t, hc, d.in.Config.Issuer+"/oauth2/logout?"+url.Values{"id_token_hint": {tok.IDToken}, "client_id": {"spa.cookie"}}.Encode())
			if out.StatusCode != http.StatusOK {
				t.Fatalf("logout: %d", out.StatusCode)
			}
			var session, refresh bool
			for _, sc := range out.Header.Values("Set-Cookie") {
				session = session || strings.HasPrefix(sc, "portcullis-session=;") && strings.Contains(sc, "Max-Age=0")
				refresh = refresh || strings.HasPrefix(sc, rtcookie.InsecureCookieName+"=;") && strings.Contains(sc, "Max-Age=0") &&
					strings.Contains(sc, "Path=/")
			}
			if !session || !refresh {
				t.Fatalf("the logout cleared the session cookie %t and the refresh-token cookie %t: %q", session, refresh,
					out.Header.Values("Set-Cookie"))
			}
		})
	}
}

package server_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// TestBrowserSessionCap (found by a review: TestReviewLifecycleBrowserSessionsUncapped): with
// PORTCULLIS_MAX_SESSIONS_PER_USER=3, one person signing in through the
// login page in twelve new browsers keeps three live browser sessions, the
// newest: each sign-in past the cap ends the oldest session, as a logout
// would. The ended sessions' cookies sign in no more (prompt=none answers
// login_required), the refresh tokens of their grants are refused, and the
// relying party with a backchannel_logout_uri is told of each of their
// grants (sid and sub), while the three kept sessions still sign in.
func TestBrowserSessionCap(t *testing.T) {
	const logins, limit = 12, 3
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := &svDeployment{siDeployment: newSignIn(t, b, map[string]string{
				"PORTCULLIS_MAX_SESSIONS_PER_USER": "3", "PORTCULLIS_RATE_LIMITS": "off"})}
			d.fx = st.NewFixtures(t, d.in.App.Core)
			d.c = d.in.Client(t)
			d.webSecret = d.fx.AdminClient(t, "web")
			rcv := newBCLReceiver(t, d.in)
			secret := d.fx.Client(t, clients.Spec{ID: "bcl-rp", Name: "BCL RP", FirstParty: true,
				Grants: []string{"authorization_code", "refresh_token"}, RedirectURIs: []string{siCallback},
				PostLogoutRedirectURIs: []string{siPostLogout}, BackchannelLogoutURI: rcv.url})
			conf := d.oauth("bcl-rp", secret, oidc.ScopeOpenID)

			browsers := make([]*oidccEnv, logins)
			signIns := make([]oidccLogin, logins)
			for i := range browsers {
				browsers[i] = &oidccEnv{d: d.siDeployment, mode: "query", hc: siBrowser(t), email: siEmail}
				signIns[i] = browsers[i].signIn(t, conf)
				if !signIns[i].sawLogin {
					t.Fatalf("sign-in %d: no login page in a new browser", i)
				}
			}
			sub := signIns[0].idt.Subject
			var ended []string
			for _, l := range signIns[:logins-limit] {
				ended = append(ended, sidOf(t, l))
			}
			rcv.expect(t, "grants of the sessions the cap ended", sub, ended...)

			live, cursor := 0, ""
			auth := d.bearer(t, siEmail, siPassword)
			for {
				p := "/auth/sessions?limit=100"
				if cursor != "" {
					p += "&cursor=" + url.QueryEscape(cursor)
				}
				l := d.sessions(t, p, auth)
				live += len(l.Items)
				if cursor = l.NextCursor; cursor == "" {
					break
				}
			}
			if live != limit {
				t.Fatalf("%d browser sign-ins: %d live browser sessions, want the cap, %d", logins, live, limit)
			}
			for i, e := range browsers {
				r := e.run(t, e.authURL(conf, "again", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()),
					oauth2.SetAuthURLParam("prompt", "none")))
				kept := i >= logins-limit
				switch {
				case kept && r.params.Get("code") == "":
					t.Fatalf("browser %d (kept): prompt=none answered %v, want a code", i, r.params)
				case !kept && r.params.Get("error") != "login_required":
					t.Fatalf("browser %d (its session ended by the cap): prompt=none answered %v, want login_required", i, r.params)
				}
				if !kept && signIns[i].tok.RefreshToken != "" {
					d.c.PostForm("/oauth2/token", st.RefreshForm(signIns[i].tok.RefreshToken), st.Basic("bcl-rp", secret)).
						ExpectError(http.StatusBadRequest, "invalid_grant")
				}
			}
		})
	}
}

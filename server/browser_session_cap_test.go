package server_test

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// TestBrowserSessionCap (found by a review: TestReviewLifecycleBrowserSessionsUncapped): with
// PORTCULLIS_MAX_SESSIONS_PER_USER=3, one person signing in through the
// login page in twelve new browsers keeps three live browser sessions, the
// newest: each sign-in past the cap ends the oldest session, as a logout
// would. The ended sessions' cookies sign in no more (prompt=none answers
// login_required), the refresh tokens of their grants are refused, and the
// relying party with a backchannel_logout_uri is told of each of their
// grants (sid and sub), while the three kept sessions still sign in. Each
// ended session is audited once, as a logout's is: session.ended with its
// sid, the reason session_cap and the kind browser (found by a review:
// nothing recorded which sessions the cap ended).
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

			ctx := context.Background()
			browsers := make([]*oidccEnv, logins)
			signIns := make([]oidccLogin, logins)
			sessionIDs := make([]string, logins) // the browser session each sign-in started
			for i := range browsers {
				browsers[i] = &oidccEnv{d: d.siDeployment, mode: "query", hc: siBrowser(t), email: siEmail}
				signIns[i] = browsers[i].signIn(t, conf)
				if !signIns[i].sawLogin {
					t.Fatalf("sign-in %d: no login page in a new browser", i)
				}
				live, err := d.in.App.BrowserSessions.ListBrowserSessions(ctx, signIns[i].idt.Subject, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				for _, bs := range live {
					if !slices.Contains(sessionIDs[:i], bs.ID) {
						sessionIDs[i] = bs.ID
					}
				}
			}
			sub := signIns[0].idt.Subject
			var ended []string
			for _, l := range signIns[:logins-limit] {
				ended = append(ended, sidOf(t, l))
			}
			rcv.expect(t, "grants of the sessions the cap ended", sub, ended...)

			events, err := d.in.App.Core.Store.ListAudit(ctx, store.AuditFilter{Action: "session.ended", Limit: 100})
			if err != nil {
				t.Fatal(err)
			}
			audited := map[string]int{}
			for _, e := range events.Items {
				if e.Details["reason"] == "session_cap" {
					if e.Details["kind"] != "browser" || e.TargetID != sub || e.Outcome != store.OutcomeSuccess {
						t.Errorf("session.ended by the cap: %+v, want the user's browser session, a success", e)
					}
					audited[e.Details["sid"]]++
				}
			}
			for i, id := range sessionIDs {
				want := 0
				if i < logins-limit {
					want = 1
				}
				if audited[id] != want {
					t.Errorf("browser session %d (%s): audited %d times as ended by the cap, want %d", i, id, audited[id], want)
				}
			}
			if len(audited) != logins-limit {
				t.Errorf("sessions audited as ended by the cap: %v, want the %d oldest of %v", audited, logins-limit, sessionIDs)
			}

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

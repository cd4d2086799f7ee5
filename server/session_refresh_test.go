package server_test

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// Refresh tokens of a grant without offline_access end with the browser
// session (contract, "Browser sign-in"), however the session ends: logout
// (oidcc_logout_test.go), idle timeout or absolute age (here). The server
// has no injectable clock, so these tests run with lifetimes of seconds
// and sleep past them.

// newShortSessions is a session-views deployment whose browser sessions
// live by settings (PORTCULLIS_SESSION_IDLE_TTL, _MAX_AGE).
func newShortSessions(t *testing.T, b st.Backend, settings map[string]string) *svDeployment {
	t.Helper()
	d0 := newSignIn(t, b, settings)
	fx := st.NewFixtures(t, d0.in.App.Core)
	return &svDeployment{siDeployment: d0, fx: fx, c: d0.in.Client(t), webSecret: fx.AdminClient(t, "web")}
}

// introspect is the first-party client's RFC 7662 answer for tok.
func (d *svDeployment) introspect(tok string) map[string]any {
	return d.c.PostForm("/oauth2/introspect", url.Values{"token": {tok}}, st.Basic("first", d.firstSecret)).
		ExpectStatus(http.StatusOK).Map()
}

func TestReviewNonOfflineRefreshOutlivesExpiredSession(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			d0 := newSignIn(t, b, map[string]string{"PORTCULLIS_SESSION_IDLE_TTL": "2s"})
			fx := st.NewFixtures(t, d0.in.App.Core)
			d := &svDeployment{siDeployment: d0, fx: fx, c: d0.in.Client(t), webSecret: fx.AdminClient(t, "web")}
			hc, tok := d.browser(t, siEmail, siPassword, "review-ua") // first-party, openid only
			if q := d.silent(t, hc); q.Get("code") == "" {
				t.Fatalf("session should be alive: %v", q)
			}
			time.Sleep(3 * time.Second)
			if q := d.silent(t, hc); q.Get("error") != "login_required" {
				t.Fatalf("session should have expired: %v", q)
			}
			if err := refresh(d.oauth("first", d.firstSecret, "openid"), tok); err == nil {
				t.Errorf("DEFECT: refresh token of a non-offline grant still refreshes after its browser session ended (idle TTL)")
			}
		})
	}
}

// TestRefreshEndsWithBrowserSession: a grant without offline_access stops
// refreshing once its browser session is idle or past its absolute age,
// with invalid_grant, and its access tokens end with it; its family never
// outlives the session's absolute expiry; an offline_access grant goes on;
// and refreshing counts as activity of the session, keeping an
// application in use signed in past the idle timeout.
func TestRefreshEndsWithBrowserSession(t *testing.T) {
	for _, tc := range []struct {
		name     string
		settings map[string]string
		run      func(t *testing.T, d *svDeployment)
	}{
		{"fail/idle_session_ends_grant", map[string]string{"PORTCULLIS_SESSION_IDLE_TTL": "2s"}, func(t *testing.T, d *svDeployment) {
			hc, tok := d.browser(t, siEmail, siPassword, "idle-ua")
			time.Sleep(3 * time.Second)
			wantRefused(t, d, tok)
			if q := d.silent(t, hc); q.Get("error") != "login_required" {
				t.Fatalf("session should have expired: %v", q)
			}
		}},
		{"fail/session_past_absolute_age_ends_grant", map[string]string{"PORTCULLIS_SESSION_MAX_AGE": "3s"}, func(t *testing.T, d *svDeployment) {
			start := time.Now()
			_, tok := d.browser(t, siEmail, siPassword, "abs-ua")
			// The family's absolute expiry is capped at the session's.
			exp, _ := d.introspect(tok.RefreshToken)["exp"].(float64)
			if limit := start.Add(3 * time.Second).Unix(); exp == 0 || int64(exp) > limit+1 {
				t.Fatalf("refresh token exp %v, want at most the session's absolute expiry %d", exp, limit)
			}
			if err := refresh(d.oauth("first", d.firstSecret, oidc.ScopeOpenID), tok); err != nil {
				t.Fatalf("refresh within the session's age: %v", err)
			}
			time.Sleep(time.Until(start.Add(4 * time.Second)))
			// The family expired with the session (the cap): refused like
			// any family past its absolute expiry, whose last access token
			// lives out its own lifetime.
			d.c.PostForm("/oauth2/token", st.RefreshForm(tok.RefreshToken), st.Basic("first", d.firstSecret)).
				ExpectError(http.StatusBadRequest, "invalid_grant")
		}},
		{"ok/offline_grant_outlives_session", map[string]string{"PORTCULLIS_SESSION_IDLE_TTL": "2s"}, func(t *testing.T, d *svDeployment) {
			hc, tok := d.browserScoped(t, siEmail, siPassword, "offline-ua", oidc.ScopeOpenID, oidc.ScopeOfflineAccess)
			time.Sleep(3 * time.Second)
			if q := d.silent(t, hc); q.Get("error") != "login_required" {
				t.Fatalf("session should have expired: %v", q)
			}
			if err := refresh(d.oauth("first", d.firstSecret, oidc.ScopeOpenID, oidc.ScopeOfflineAccess), tok); err != nil {
				t.Fatalf("offline_access grant after its browser session expired: %v", err)
			}
		}},
		{"ok/relogin_keeps_grant", nil, func(t *testing.T, d *svDeployment) {
			// prompt=login ends the session and starts one continuing it,
			// carrying its grants: their refresh tokens go on.
			hc, tok := d.browser(t, siEmail, siPassword, "relogin-ua")
			first := d.oauth("first", d.firstSecret, oidc.ScopeOpenID)
			e := &oidccEnv{d: d.siDeployment, mode: "query", hc: hc, email: siEmail}
			time.Sleep(secondLater) // as oidcc-prompt-login: auth_time has second resolution
			again := e.signIn(t, first, oauth2.SetAuthURLParam("prompt", "login"))
			if !again.sawLogin {
				t.Fatal("prompt=login showed no login page")
			}
			if err := refresh(first, tok); err != nil {
				t.Fatalf("refresh of a grant carried by a re-login: %v", err)
			}
		}},
		{"ok/refresh_keeps_session_alive", map[string]string{"PORTCULLIS_SESSION_IDLE_TTL": "3s"}, func(t *testing.T, d *svDeployment) {
			hc, tok := d.browser(t, siEmail, siPassword, "busy-ua")
			conf := d.oauth("first", d.firstSecret, oidc.ScopeOpenID)
			for i := range 3 { // 4.5 s in all: past the idle TTL, but never idle for it
				time.Sleep(1500 * time.Millisecond)
				next, err := conf.TokenSource(t.Context(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
				if err != nil {
					t.Fatalf("refresh %d of an application in use: %v", i+1, err)
				}
				tok = next
			}
			if q := d.silent(t, hc); q.Get("code") == "" {
				t.Fatalf("the refreshes should have kept the session alive: %v", q)
			}
		}},
	} {
		for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
			t.Run(tc.name+"/"+b.String(), func(t *testing.T) {
				tc.run(t, newShortSessions(t, b, tc.settings))
			})
		}
	}
}

// TestIntrospectRefreshEndsWithBrowserSession: introspection calls the
// refresh token of a grant without offline_access active while its browser
// session lives, and answers exactly {"active": false} once the session has
// ended, as the refresh then refuses it (RFC 7662 §2.2: active means
// currently usable). The session is ended in the token state, as an idle
// timeout ends it: its families are left for their next refresh to end,
// and no sleep is needed.
func TestIntrospectRefreshEndsWithBrowserSession(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			d := newShortSessions(t, b, nil)
			_, tok := d.browser(t, siEmail, siPassword, "introspect-ua")
			if got := d.introspect(tok.RefreshToken); got["active"] != true {
				t.Fatalf("introspection of a live grant's refresh token: %v, want active", got)
			}
			user, _ := d.introspect(tok.AccessToken)["sub"].(string)
			sessions := d.in.App.BrowserSessions
			live, err := sessions.ListBrowserSessions(t.Context(), user, time.Now())
			if err != nil || len(live) != 1 {
				t.Fatalf("browser sessions of %q: %v, %v; want one", user, live, err)
			}
			if _, err := sessions.EndBrowserSessionGrants(t.Context(), live[0].ID, time.Now()); err != nil {
				t.Fatal(err)
			}
			got := d.introspect(tok.RefreshToken)
			if len(got) != 1 || got["active"] != false {
				t.Fatalf("introspection after the browser session ended: %v, want exactly {\"active\": false}", got)
			}
			wantRefused(t, d, tok)
		})
	}
}

// wantRefused: tok's refresh token is refused with invalid_grant, and the
// grant's access token is revoked with its family.
func wantRefused(t *testing.T, d *svDeployment, tok *oauth2.Token) {
	t.Helper()
	d.c.PostForm("/oauth2/token", st.RefreshForm(tok.RefreshToken), st.Basic("first", d.firstSecret)).
		ExpectError(http.StatusBadRequest, "invalid_grant")
	if got := d.introspect(tok.AccessToken)["active"]; got != false {
		t.Fatalf("the grant's access token is still active (%v) after its family ended", got)
	}
}

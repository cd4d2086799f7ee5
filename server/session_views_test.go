package server_test

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// The session and consent views over HTTP: GET/DELETE /auth/sessions and
// /auth/consents for the caller, and the /admin/users/{id}/… equivalents,
// on both backends. Sessions are started through the login page.

// svDeployment is a sign-in deployment with a password-grant client whose
// tokens are accepted at /auth and /admin.
type svDeployment struct {
	*siDeployment
	fx        *st.Fixtures
	c         *st.Client
	webSecret string
}

func newSessionViews(t *testing.T, b st.Backend) *svDeployment {
	t.Helper()
	d := newSignIn(t, b)
	fx := st.NewFixtures(t, d.in.App.Core)
	return &svDeployment{siDeployment: d, fx: fx, c: d.in.Client(t), webSecret: fx.AdminClient(t, "web")}
}

// bearer is a password-grant access token of email (issuer audience).
func (d *svDeployment) bearer(t *testing.T, email, pw string) st.Option {
	t.Helper()
	return st.Bearer(d.c.PostForm("/oauth2/token", st.PasswordForm(email, pw, ""), st.Basic("web", d.webSecret)).Token().AccessToken)
}

// uaTransport sends every request with its own User-Agent, so that a test
// can tell its browsers' sessions apart in the lists.
type uaTransport struct{ ua string }

func (u uaTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("User-Agent", u.ua)
	return http.DefaultTransport.RoundTrip(r)
}

// browser signs email in through the login page of the first-party client
// in a new browser whose User-Agent is ua, and returns the browser and the
// grant's tokens (openid, no offline_access).
func (d *svDeployment) browser(t *testing.T, email, pw, ua string) (*http.Client, *oauth2.Token) {
	t.Helper()
	return d.browserScoped(t, email, pw, ua, oidc.ScopeOpenID)
}

// browserScoped is browser for a grant of scopes.
func (d *svDeployment) browserScoped(t *testing.T, email, pw, ua string, scopes ...string) (*http.Client, *oauth2.Token) {
	t.Helper()
	hc := siBrowser(t)
	hc.Transport = uaTransport{ua}
	first := d.oauth("first", d.firstSecret, scopes...)
	v := oauth2.GenerateVerifier()
	login := siGet(t, hc, first.AuthCodeURL("s", oauth2.S256ChallengeOption(v)))
	q := d.callback(t, login.submit(t, hc, url.Values{"username": {email}, "password": {pw}}))
	tok, err := first.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(v))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	return hc, tok
}

// silent asks the first-party client's authorization with prompt=none in
// hc: a code when hc's session is alive, login_required when not.
func (d *svDeployment) silent(t *testing.T, hc *http.Client) url.Values {
	t.Helper()
	first := d.oauth("first", d.firstSecret, oidc.ScopeOpenID)
	return d.callback(t, siGet(t, hc, first.AuthCodeURL("quiet", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()),
		oauth2.SetAuthURLParam("prompt", "none"))))
}

type svSession struct {
	SID        string    `json:"sid"`
	ClientIDs  []string  `json:"client_ids"`
	CreatedAt  time.Time `json:"created_at"`
	LastUsedAt time.Time `json:"last_used_at"`
	IP         string    `json:"ip"`
	UserAgent  string    `json:"user_agent"`
	AMR        []string  `json:"amr"`
}

type svSessionList struct {
	Items      []svSession `json:"items"`
	NextCursor string      `json:"next_cursor"`
}

type svConsentList struct {
	Items []struct {
		ClientID  string    `json:"client_id"`
		Scopes    []string  `json:"scopes"`
		GrantedAt time.Time `json:"granted_at"`
	} `json:"items"`
	NextCursor string `json:"next_cursor"`
}

// sessions lists the sessions at path.
func (d *svDeployment) sessions(t *testing.T, path string, auth st.Option) svSessionList {
	t.Helper()
	var l svSessionList
	d.c.Get(path, auth).ExpectStatus(http.StatusOK).JSON(&l)
	return l
}

// sid is the id of the session of the browser with user agent ua.
func (l svSessionList) sid(t *testing.T, ua string) string {
	t.Helper()
	for _, s := range l.Items {
		if s.UserAgent == ua {
			return s.SID
		}
	}
	t.Fatalf("no session of %q in %+v", ua, l.Items)
	return ""
}

// TestOwnSessions: a person lists the sessions they started through the
// login page (sid, client_ids, amr, ip, user_agent, times), pages through
// them, ends one (its cookie no longer signs in: prompt=none answers
// login_required; its grant without offline_access can no longer refresh;
// its offline grant and the other session keep working), and can neither
// see nor end another person's session (404, as for an unknown sid).
func TestOwnSessions(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSessionViews(t, b)
			d.fx.User(t, "bob@example.com", "bob's own passphrase 2", "user")
			before := time.Now().Add(-time.Second)
			hcA, tokA := d.browser(t, siEmail, siPassword, "browser-a")
			hcB, tokB := d.browser(t, siEmail, siPassword, "browser-b")
			hcBob, _ := d.browser(t, "bob@example.com", "bob's own passphrase 2", "browser-bob")
			ann := d.bearer(t, siEmail, siPassword)
			bob := d.bearer(t, "bob@example.com", "bob's own passphrase 2")
			// An offline grant in browser A (single sign-on: no page).
			offline := d.oauth("first", d.firstSecret, oidc.ScopeOpenID, oidc.ScopeOfflineAccess)
			vo := oauth2.GenerateVerifier()
			qo := d.callback(t, siGet(t, hcA, offline.AuthCodeURL("o", oauth2.S256ChallengeOption(vo))))
			tokOffline, err := offline.Exchange(context.Background(), qo.Get("code"), oauth2.VerifierOption(vo))
			if err != nil {
				t.Fatalf("offline exchange: %v", err)
			}

			all := d.sessions(t, "/auth/sessions", ann)
			if len(all.Items) != 2 || all.NextCursor != "" {
				t.Fatalf("ann's sessions %+v", all)
			}
			for _, s := range all.Items {
				if s.SID == "" || !slices.Equal(s.ClientIDs, []string{"first"}) || !slices.Equal(s.AMR, []string{"pwd"}) ||
					s.IP == "" || s.CreatedAt.Before(before) || s.LastUsedAt.Before(s.CreatedAt) {
					t.Fatalf("session %+v", s)
				}
			}
			sidA, sidB := all.sid(t, "browser-a"), all.sid(t, "browser-b")
			bobSID := d.sessions(t, "/auth/sessions", bob).sid(t, "browser-bob")

			// Cursor pages: one at a time, the two together, then nothing more.
			p1 := d.sessions(t, "/auth/sessions?limit=1", ann)
			if len(p1.Items) != 1 || p1.NextCursor == "" {
				t.Fatalf("page 1 %+v", p1)
			}
			p2 := d.sessions(t, "/auth/sessions?limit=1&cursor="+url.QueryEscape(p1.NextCursor), ann)
			if len(p2.Items) != 1 || p2.NextCursor != "" || p2.Items[0].SID == p1.Items[0].SID {
				t.Fatalf("page 2 %+v after %+v", p2, p1)
			}

			for _, tc := range []struct {
				name, method, path string
				auth               []st.Option
				status             int
				code               string
			}{
				{"fail/no_token", http.MethodGet, "/auth/sessions", nil, 401, "unauthorized"},
				{"fail/bad_token", http.MethodGet, "/auth/sessions", []st.Option{st.Bearer("not.a.token")}, 401, "invalid_token"},
				{"fail/bad_cursor", http.MethodGet, "/auth/sessions?cursor=%21", []st.Option{ann}, 400, "invalid_request"},
				{"fail/bad_limit", http.MethodGet, "/auth/sessions?limit=0", []st.Option{ann}, 400, "invalid_request"},
				{"fail/delete_no_token", http.MethodDelete, "/auth/sessions/" + sidA, nil, 401, "unauthorized"},
				{"fail/unknown_sid", http.MethodDelete, "/auth/sessions/no-such-session", []st.Option{ann}, 404, "not_found"},
				{"fail/another_users_sid", http.MethodDelete, "/auth/sessions/" + bobSID, []st.Option{ann}, 404, "not_found"},
				{"fail/long_sid", http.MethodDelete, "/auth/sessions/" + strings.Repeat("x", 300), []st.Option{ann}, 404, "not_found"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					d.c.Do(tc.method, tc.path, nil, "", tc.auth...).ExpectError(tc.status, tc.code)
				})
			}
			// Bob's session was not touched by Ann's attempt.
			if q := d.silent(t, hcBob); q.Get("code") == "" {
				t.Fatalf("bob's session ended by another user's request: %v", q)
			}

			d.c.Delete("/auth/sessions/"+sidA, ann).ExpectStatus(http.StatusNoContent)
			if q := d.silent(t, hcA); q.Get("error") != "login_required" {
				t.Fatalf("the ended session's cookie still signs in: %v", q)
			}
			if q := d.silent(t, hcB); q.Get("code") == "" {
				t.Fatalf("the other session ended too: %v", q)
			}
			// A's grant without offline_access ended with it; its offline
			// grant and B's grant did not.
			first := d.oauth("first", d.firstSecret)
			if err := refresh(first, tokA); err == nil || !strings.Contains(err.Error(), "invalid_grant") {
				t.Fatalf("the ended session's refresh token: %v, want invalid_grant", err)
			}
			if err := refresh(first, tokB); err != nil {
				t.Fatalf("the other session's refresh token: %v", err)
			}
			if err := refresh(first, tokOffline); err != nil {
				t.Fatalf("the offline grant's refresh token: %v", err)
			}
			left := d.sessions(t, "/auth/sessions", ann)
			if len(left.Items) != 1 || left.Items[0].SID != sidB {
				t.Fatalf("after ending A: %+v", left)
			}
			d.c.Delete("/auth/sessions/"+sidA, ann).ExpectError(http.StatusNotFound, "not_found")

			ev := lastAudit(t, d.siDeployment, "session.ended")
			if ev.TargetID == "" || ev.Details["sid"] != sidA || ev.Details["reason"] != "self_service" {
				t.Fatalf("session.ended %+v", ev)
			}
		})
	}
}

// refresh redeems tok's refresh token at the token endpoint.
func refresh(conf *oauth2.Config, tok *oauth2.Token) error {
	_, err := conf.TokenSource(context.Background(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	return err
}

// lastAudit is the newest audit event of action.
func lastAudit(t *testing.T, d *siDeployment, action string) store.AuditEvent {
	t.Helper()
	page, err := d.in.App.Core.Store.ListAudit(context.Background(), store.AuditFilter{Action: action, Limit: 1})
	if err != nil || len(page.Items) == 0 {
		t.Fatalf("no %s event: %v", action, err)
	}
	return page.Items[0]
}

// TestOwnConsents: a consent given on the consent page is listed, withdrawn
// (audit consent.revoked with actor, target and client_id), and the
// client's next authorization request shows the consent page again.
func TestOwnConsents(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSessionViews(t, b)
			hc := siBrowser(t)
			third := d.oauth("third", d.thirdSecret, oidc.ScopeOpenID, "email")
			login := siGet(t, hc, third.AuthCodeURL("s", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
			consent := login.submit(t, hc, url.Values{"username": {siEmail}, "password": {siPassword}})
			d.callback(t, consent.submit(t, hc, url.Values{"decision": {"allow"}}))
			ann := d.bearer(t, siEmail, siPassword)
			annUser, err := d.in.App.Core.Store.GetUserByEmail(context.Background(), siEmail)
			if err != nil {
				t.Fatal(err)
			}

			var l svConsentList
			d.c.Get("/auth/consents", ann).ExpectStatus(http.StatusOK).JSON(&l)
			if len(l.Items) != 1 || l.Items[0].ClientID != "third" || !slices.Equal(l.Items[0].Scopes, []string{"email", "openid"}) ||
				l.Items[0].GrantedAt.IsZero() || l.NextCursor != "" {
				t.Fatalf("consents %+v", l)
			}
			// Remembered: the next request is answered at once.
			if q := d.callback(t, siGet(t, hc, third.AuthCodeURL("s2", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))); q.Get("code") == "" {
				t.Fatalf("remembered consent: %v", q)
			}

			for _, tc := range []struct {
				name, path string
				auth       []st.Option
				status     int
				code       string
			}{
				{"fail/no_token", "/auth/consents/third", nil, 401, "unauthorized"},
				{"fail/unknown_client", "/auth/consents/nope", []st.Option{ann}, 404, "not_found"},
				{"fail/client_without_consent", "/auth/consents/first", []st.Option{ann}, 404, "not_found"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					d.c.Do(http.MethodDelete, tc.path, nil, "", tc.auth...).ExpectError(tc.status, tc.code)
				})
			}

			d.c.Delete("/auth/consents/third", ann).ExpectStatus(http.StatusNoContent)
			ev := lastAudit(t, d.siDeployment, "consent.revoked")
			if ev.ActorID != annUser.ID || ev.TargetID != annUser.ID || ev.Details["client_id"] != "third" {
				t.Fatalf("consent.revoked %+v", ev)
			}
			d.c.Get("/auth/consents", ann).ExpectStatus(http.StatusOK).JSON(&l)
			if len(l.Items) != 0 {
				t.Fatalf("after withdrawal: %+v", l)
			}
			again := siGet(t, hc, third.AuthCodeURL("s3", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
			if again.StatusCode != http.StatusOK || !strings.Contains(again.body, `value="allow"`) {
				t.Fatalf("after withdrawal: %d, want the consent page", again.StatusCode)
			}
			d.c.Delete("/auth/consents/third", ann).ExpectError(http.StatusNotFound, "not_found")
		})
	}
}

// TestWithdrawingConsentEndsTheClientsGrants: withdrawing consent to a
// third-party client takes its access away, on PostgreSQL+Redis and on
// SQLite: its refresh token (offline_access, which outlives any browser
// session) is refused and its access token is refused at /userinfo, while
// the person's own first-party session goes on.
func TestWithdrawingConsentEndsTheClientsGrants(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSessionViews(t, b)
			ctx := context.Background()
			hc := siBrowser(t)
			third := d.oauth("third", d.thirdSecret, oidc.ScopeOpenID, oidc.ScopeOfflineAccess)
			verifier := oauth2.GenerateVerifier()
			login := siGet(t, hc, third.AuthCodeURL("s", oauth2.S256ChallengeOption(verifier)))
			consent := login.submit(t, hc, url.Values{"username": {siEmail}, "password": {siPassword}})
			q := d.callback(t, consent.submit(t, hc, url.Values{"decision": {"allow"}}))
			tok, err := third.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
			if err != nil || tok.RefreshToken == "" {
				t.Fatalf("code exchange: %v (refresh token %t)", err, tok != nil && tok.RefreshToken != "")
			}
			own := d.c.PostForm("/oauth2/token", st.PasswordForm(siEmail, siPassword, ""), st.Basic("web", d.webSecret)).Token()
			d.c.Get("/userinfo", st.Bearer(tok.AccessToken)).ExpectStatus(http.StatusOK)

			d.c.Delete("/auth/consents/third", st.Bearer(own.AccessToken)).ExpectStatus(http.StatusNoContent)

			if _, err := third.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); err == nil {
				t.Fatal("the third-party client refreshed after the consent was withdrawn")
			}
			d.c.Get("/userinfo", st.Bearer(tok.AccessToken)).ExpectStatus(http.StatusUnauthorized)
			// The person's own session at another client is untouched.
			d.c.Get("/auth/consents", st.Bearer(own.AccessToken)).ExpectStatus(http.StatusOK)
			d.c.PostForm("/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {own.RefreshToken}},
				st.Basic("web", d.webSecret)).ExpectStatus(http.StatusOK)
		})
	}
}

// TestWithdrawingConsentEndsTokensWithoutRefresh: a client that may not
// refresh has no session for the withdrawal to end, yet its access token is
// refused at /userinfo afterwards (the user's cut-off at the client), and
// so is a code it was given before the withdrawal and redeems after it; a
// consent given again later yields tokens that work.
func TestWithdrawingConsentEndsTokensWithoutRefresh(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSessionViews(t, b)
			ctx := context.Background()
			sec := d.fx.Client(t, clients.Spec{ID: "norefresh", Name: "No Refresh",
				Grants: []string{"authorization_code"}, RedirectURIs: []string{siCallback}})
			hc := siBrowser(t)
			app := d.oauth("norefresh", sec, oidc.ScopeOpenID)
			v := oauth2.GenerateVerifier()
			login := siGet(t, hc, app.AuthCodeURL("s", oauth2.S256ChallengeOption(v)))
			consent := login.submit(t, hc, url.Values{"username": {siEmail}, "password": {siPassword}})
			q := d.callback(t, consent.submit(t, hc, url.Values{"decision": {"allow"}}))
			tok, err := app.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(v))
			if err != nil || tok.RefreshToken != "" {
				t.Fatalf("code exchange: %v (refresh token %t)", err, tok != nil && tok.RefreshToken != "")
			}
			// A second code, issued under the consent (SSO), redeemed only
			// after the withdrawal.
			v2 := oauth2.GenerateVerifier()
			late := d.callback(t, siGet(t, hc, app.AuthCodeURL("t", oauth2.S256ChallengeOption(v2))))
			d.c.Get("/userinfo", st.Bearer(tok.AccessToken)).ExpectStatus(http.StatusOK)
			own := d.c.PostForm("/oauth2/token", st.PasswordForm(siEmail, siPassword, ""), st.Basic("web", d.webSecret)).Token()

			d.c.Delete("/auth/consents/norefresh", st.Bearer(own.AccessToken)).ExpectStatus(http.StatusNoContent)

			d.c.Get("/userinfo", st.Bearer(tok.AccessToken)).ExpectStatus(http.StatusUnauthorized)
			if _, err := app.Exchange(ctx, late.Get("code"), oauth2.VerifierOption(v2)); err == nil {
				t.Fatal("a code issued before the withdrawal was redeemed after it")
			}
			// Consent again: the new grant's token works.
			v3 := oauth2.GenerateVerifier()
			again := siGet(t, hc, app.AuthCodeURL("u", oauth2.S256ChallengeOption(v3)))
			q = d.callback(t, again.submit(t, hc, url.Values{"decision": {"allow"}}))
			tok, err = app.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(v3))
			if err != nil {
				t.Fatalf("code exchange after consenting again: %v", err)
			}
			d.c.Get("/userinfo", st.Bearer(tok.AccessToken)).ExpectStatus(http.StatusOK)
		})
	}
}

// TestAdminSessionViews: the admin routes need users:read to list and
// users:write to end or withdraw (403 insufficient_scope without), and the
// privilege ceiling for the latter (an admin cannot end a super_admin's
// session nor their own through /admin: 403 forbidden); an unknown user,
// sid or client, and another user's sid, are 404.
func TestAdminSessionViews(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSessionViews(t, b)
			ctx := context.Background()
			ann, err := d.in.App.Core.Store.GetUserByEmail(ctx, siEmail)
			if err != nil {
				t.Fatal(err)
			}
			adm := d.fx.User(t, "adm@example.com", "admin user passphrase", "admin")
			root := d.fx.User(t, "root@example.com", "root user passphrase", "super_admin")
			d.fx.User(t, "plain@example.com", "plain user passphrase", "user")
			hcAnn, _ := d.browser(t, siEmail, siPassword, "ann-a")
			d.browser(t, "adm@example.com", "admin user passphrase", "adm-a")
			d.browser(t, "root@example.com", "root user passphrase", "root-a")
			// Ann's consent to the third-party client (SSO: her session is live).
			third := d.oauth("third", d.thirdSecret, oidc.ScopeOpenID)
			consent := siGet(t, hcAnn, third.AuthCodeURL("c", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
			d.callback(t, consent.submit(t, hcAnn, url.Values{"decision": {"allow"}}))

			admTok := d.bearer(t, "adm@example.com", "admin user passphrase")
			rootTok := d.bearer(t, "root@example.com", "root user passphrase")
			plainTok := d.bearer(t, "plain@example.com", "plain user passphrase")
			// The admin's token narrowed to users:read: lists, but ends nothing.
			readTok := st.Bearer(d.c.PostForm("/oauth2/token", st.PasswordForm("adm@example.com", "admin user passphrase", "users:read"),
				st.Basic("web", d.webSecret)).Token().AccessToken)
			annSID := d.sessions(t, "/admin/users/"+ann.ID+"/sessions", admTok).sid(t, "ann-a")
			admSID := d.sessions(t, "/admin/users/"+adm.ID+"/sessions", rootTok).sid(t, "adm-a")
			rootSID := d.sessions(t, "/admin/users/"+root.ID+"/sessions", admTok).sid(t, "root-a")

			for _, tc := range []struct {
				name, method, path string
				auth               st.Option
				status             int
				code               string
			}{
				{"fail/list_without_users_read", http.MethodGet, "/admin/users/" + ann.ID + "/sessions", plainTok, 403, "insufficient_scope"},
				{"fail/end_without_users_write", http.MethodDelete, "/admin/users/" + ann.ID + "/sessions/" + annSID, plainTok, 403, "insufficient_scope"},
				{"fail/consents_without_users_read", http.MethodGet, "/admin/users/" + ann.ID + "/consents", plainTok, 403, "insufficient_scope"},
				{"fail/withdraw_without_users_write", http.MethodDelete, "/admin/users/" + ann.ID + "/consents/third", plainTok, 403, "insufficient_scope"},
				{"fail/end_with_users_read_only", http.MethodDelete, "/admin/users/" + ann.ID + "/sessions/" + annSID, readTok, 403, "insufficient_scope"},
				{"fail/withdraw_with_users_read_only", http.MethodDelete, "/admin/users/" + ann.ID + "/consents/third", readTok, 403, "insufficient_scope"},
				{"fail/end_above_the_ceiling", http.MethodDelete, "/admin/users/" + root.ID + "/sessions/" + rootSID, admTok, 403, "forbidden"},
				{"fail/end_own_through_admin", http.MethodDelete, "/admin/users/" + adm.ID + "/sessions/" + admSID, admTok, 403, "forbidden"},
				{"fail/withdraw_above_the_ceiling", http.MethodDelete, "/admin/users/" + root.ID + "/consents/third", admTok, 403, "forbidden"},
				{"fail/unknown_user_list", http.MethodGet, "/admin/users/usr_nobody/sessions", admTok, 404, "not_found"},
				{"fail/unknown_user_end", http.MethodDelete, "/admin/users/usr_nobody/sessions/" + annSID, admTok, 404, "not_found"},
				{"fail/unknown_sid", http.MethodDelete, "/admin/users/" + ann.ID + "/sessions/nope", admTok, 404, "not_found"},
				{"fail/another_users_sid", http.MethodDelete, "/admin/users/" + ann.ID + "/sessions/" + rootSID, admTok, 404, "not_found"},
				{"fail/unknown_consent", http.MethodDelete, "/admin/users/" + ann.ID + "/consents/first", admTok, 404, "not_found"},
				{"fail/bad_cursor", http.MethodGet, "/admin/users/" + ann.ID + "/consents?cursor=x", admTok, 400, "invalid_request"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					d.c.Do(tc.method, tc.path, nil, "", tc.auth).ExpectError(tc.status, tc.code)
				})
			}
			// The refused requests ended nothing.
			for who, tok := range map[string]st.Option{"root": admTok, "adm": rootTok} {
				id := map[string]string{"root": root.ID, "adm": adm.ID}[who]
				if l := d.sessions(t, "/admin/users/"+id+"/sessions", tok); len(l.Items) != 1 {
					t.Fatalf("%s's sessions after refusals: %+v", who, l)
				}
			}
			if q := d.silent(t, hcAnn); q.Get("code") == "" {
				t.Fatalf("ann's session ended by a refused request: %v", q)
			}

			if l := d.sessions(t, "/admin/users/"+ann.ID+"/sessions", readTok); len(l.Items) != 1 || l.Items[0].SID != annSID {
				t.Fatalf("ann's sessions read with users:read %+v", l)
			}
			var cl svConsentList
			d.c.Get("/admin/users/"+ann.ID+"/consents", readTok).ExpectStatus(http.StatusOK).JSON(&cl)
			if len(cl.Items) != 1 {
				t.Fatalf("ann's consents read with users:read %+v", cl)
			}
			d.c.Get("/admin/users/"+ann.ID+"/consents", admTok).ExpectStatus(http.StatusOK).JSON(&cl)
			if len(cl.Items) != 1 || cl.Items[0].ClientID != "third" {
				t.Fatalf("ann's consents %+v", cl)
			}
			d.c.Delete("/admin/users/"+ann.ID+"/consents/third", admTok).ExpectStatus(http.StatusNoContent)
			if ev := lastAudit(t, d.siDeployment, "consent.revoked"); ev.ActorID != adm.ID || ev.TargetID != ann.ID ||
				ev.Details["client_id"] != "third" || ev.Details["via"] != "admin" {
				t.Fatalf("consent.revoked %+v", ev)
			}

			d.c.Delete("/admin/users/"+ann.ID+"/sessions/"+annSID, admTok).ExpectStatus(http.StatusNoContent)
			if q := d.silent(t, hcAnn); q.Get("error") != "login_required" {
				t.Fatalf("the session an admin ended still signs in: %v", q)
			}
			if ev := lastAudit(t, d.siDeployment, "session.ended"); ev.ActorID != adm.ID || ev.TargetID != ann.ID ||
				ev.Details["sid"] != annSID || ev.Details["reason"] != "admin" {
				t.Fatalf("session.ended %+v", ev)
			}
			if l := d.sessions(t, "/admin/users/"+ann.ID+"/sessions", admTok); len(l.Items) != 0 {
				t.Fatalf("after the admin ended it: %+v", l)
			}
			// A super_admin may end an admin's session.
			d.c.Delete("/admin/users/"+adm.ID+"/sessions/"+admSID, rootTok).ExpectStatus(http.StatusNoContent)
		})
	}
}

// postAccount posts the /account/sessions form with fields in hc, from
// the page's own origin (origin "" sends none).
func (d *svDeployment) postAccount(t *testing.T, hc *http.Client, origin string, fields url.Values) siPage {
	t.Helper()
	body := []byte(fields.Encode())
	req, err := http.NewRequest(http.MethodPost, d.in.URL+"/account/sessions", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	return siDo(t, hc, req, body)
}

// TestAccountSessionsPage: /account/sessions shows the person of the
// browser session cookie their sessions (this one marked "This device",
// with the user agent and the applications' names) and consents; its
// forms refuse a POST without the CSRF token or from another site; "Sign
// out" ends another session, "Withdraw" forgets a consent, and signing out
// this device clears the cookie. Without a session: "You are not signed
// in", no form.
func TestAccountSessionsPage(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSessionViews(t, b)
			d.fx.User(t, "bob@example.com", "bob's own passphrase 2", "user")
			hcA, _ := d.browser(t, siEmail, siPassword, "browser-a")
			hcB, _ := d.browser(t, siEmail, siPassword, "browser-b")
			hcBob, _ := d.browser(t, "bob@example.com", "bob's own passphrase 2", "browser-bob")
			third := d.oauth("third", d.thirdSecret, oidc.ScopeOpenID)
			consent := siGet(t, hcA, third.AuthCodeURL("c", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
			d.callback(t, consent.submit(t, hcA, url.Values{"decision": {"allow"}}))
			ann := d.bearer(t, siEmail, siPassword)
			list := d.sessions(t, "/auth/sessions", ann)
			sidA, sidB := list.sid(t, "browser-a"), list.sid(t, "browser-b")
			bobSID := d.sessions(t, "/auth/sessions", d.bearer(t, "bob@example.com", "bob's own passphrase 2")).sid(t, "browser-bob")

			anon := siGet(t, siBrowser(t), d.in.URL+"/account/sessions")
			if anon.StatusCode != http.StatusOK || !strings.Contains(anon.body, "You are not signed in") || strings.Contains(anon.body, "<form") {
				t.Fatalf("without a session: %d\n%s", anon.StatusCode, anon.body)
			}

			page := siGet(t, hcA, d.in.URL+"/account/sessions")
			if page.StatusCode != http.StatusOK {
				t.Fatalf("page: %d\n%s", page.StatusCode, page.body)
			}
			if csp := page.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") ||
				!strings.Contains(csp, "form-action 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
				t.Fatalf("CSP %q", csp)
			}
			for _, want := range []string{"This device", "browser-a", "browser-b", "First App", "Third App",
				`name="sid" value="` + sidA + `"`, `name="sid" value="` + sidB + `"`, `name="client_id" value="third"`} {
				if !strings.Contains(page.body, want) {
					t.Fatalf("the page lacks %q:\n%s", want, page.body)
				}
			}
			if strings.Contains(page.body, bobSID) || strings.Contains(page.body, "browser-bob") {
				t.Fatal("the page shows another person's session")
			}
			csrf := page.hiddenFields().Get("csrf_token")
			self := d.in.URL

			for _, tc := range []struct {
				name   string
				origin string
				fields url.Values
				status int
			}{
				{"fail/no_csrf_token", self, url.Values{"action": {"end_session"}, "sid": {sidB}}, http.StatusForbidden},
				{"fail/wrong_csrf_token", self, url.Values{"csrf_token": {strings.Repeat("A", 43)}, "action": {"end_session"}, "sid": {sidB}}, http.StatusForbidden},
				{"fail/cross_site", "https://evil.example", url.Values{"csrf_token": {csrf}, "action": {"end_session"}, "sid": {sidB}}, http.StatusForbidden},
				{"fail/no_action", self, url.Values{"csrf_token": {csrf}, "sid": {sidB}}, http.StatusBadRequest},
				// Another person's sid ends nothing (the page answers as for an ended one).
				{"ok/another_users_sid", self, url.Values{"csrf_token": {csrf}, "action": {"end_session"}, "sid": {bobSID}}, http.StatusSeeOther},
			} {
				t.Run(tc.name, func(t *testing.T) {
					if got := d.postAccount(t, hcA, tc.origin, tc.fields); got.StatusCode != tc.status {
						t.Fatalf("status %d, want %d\n%s", got.StatusCode, tc.status, got.body)
					}
				})
			}
			for name, hc := range map[string]*http.Client{"B": hcB, "bob": hcBob} {
				if q := d.silent(t, hc); q.Get("code") == "" {
					t.Fatalf("session %s ended by a refused form: %v", name, q)
				}
			}

			if got := d.postAccount(t, hcA, self, url.Values{"csrf_token": {csrf}, "action": {"end_session"}, "sid": {sidB}}); got.StatusCode != http.StatusSeeOther ||
				got.Header.Get("Location") != "/account/sessions" {
				t.Fatalf("sign out B: %d %q", got.StatusCode, got.Header.Get("Location"))
			}
			if q := d.silent(t, hcB); q.Get("error") != "login_required" {
				t.Fatalf("B still signed in: %v", q)
			}
			if got := d.postAccount(t, hcA, self, url.Values{"csrf_token": {csrf}, "action": {"withdraw"}, "client_id": {"third"}}); got.StatusCode != http.StatusSeeOther {
				t.Fatalf("withdraw: %d\n%s", got.StatusCode, got.body)
			}
			if ev := lastAudit(t, d.siDeployment, "consent.revoked"); ev.Details["client_id"] != "third" || ev.Details["via"] != "self_service" {
				t.Fatalf("consent.revoked %+v", ev)
			}
			after := siGet(t, hcA, d.in.URL+"/account/sessions")
			if strings.Contains(after.body, sidB) || strings.Contains(after.body, `name="client_id"`) || !strings.Contains(after.body, sidA) {
				t.Fatalf("after signing out B and withdrawing:\n%s", after.body)
			}

			out := d.postAccount(t, hcA, self, url.Values{"csrf_token": {csrf}, "action": {"end_session"}, "sid": {sidA}})
			if out.StatusCode != http.StatusOK || !strings.Contains(out.body, "You are signed out") {
				t.Fatalf("sign out this device: %d\n%s", out.StatusCode, out.body)
			}
			var cleared bool
			for _, c := range out.Cookies() {
				cleared = cleared || c.Name == "portcullis-session" && c.MaxAge < 0
			}
			if !cleared {
				t.Fatalf("signing out this device kept the cookie: %v", out.Header["Set-Cookie"])
			}
			if q := d.silent(t, hcA); q.Get("error") != "login_required" {
				t.Fatalf("A still signed in: %v", q)
			}
			if l := d.sessions(t, "/auth/sessions", ann); len(l.Items) != 0 {
				t.Fatalf("sessions left %+v", l)
			}
		})
	}
}

// TestSelfServiceNeedsFirstPartyToken: a third-party application holding
// the person's access token can neither list nor end their sessions nor see
// or withdraw their consents (403 forbidden, nothing changed); the same
// person's first-party token can.
func TestSelfServiceNeedsFirstPartyToken(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSessionViews(t, b)
			hc, firstTok := d.browser(t, siEmail, siPassword, "browser-a")
			// The third-party client's token, through the consent page.
			third := d.oauth("third", d.thirdSecret, oidc.ScopeOpenID)
			v := oauth2.GenerateVerifier()
			consent := siGet(t, hc, third.AuthCodeURL("t", oauth2.S256ChallengeOption(v)))
			q := d.callback(t, consent.submit(t, hc, url.Values{"decision": {"allow"}}))
			thirdTok, err := third.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(v))
			if err != nil {
				t.Fatal(err)
			}
			own := st.Bearer(firstTok.AccessToken)
			sid := d.sessions(t, "/auth/sessions", own).sid(t, "browser-a")
			foreign := st.Bearer(thirdTok.AccessToken)
			for _, r := range []struct{ method, path string }{
				{http.MethodGet, "/auth/sessions"},
				{http.MethodDelete, "/auth/sessions/" + sid},
				{http.MethodGet, "/auth/consents"},
				{http.MethodDelete, "/auth/consents/third"},
			} {
				d.c.Do(r.method, r.path, nil, "", foreign).ExpectError(http.StatusForbidden, "forbidden")
			}
			if q := d.silent(t, hc); q.Get("code") == "" {
				t.Fatalf("the session ended after a refused request: %v", q)
			}
			var consents svConsentList
			d.c.Get("/auth/consents", own).ExpectStatus(http.StatusOK).JSON(&consents)
			if len(consents.Items) != 1 || consents.Items[0].ClientID != "third" {
				t.Fatalf("consents after the refused withdrawal: %+v", consents.Items)
			}
		})
	}
}

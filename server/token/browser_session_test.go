package token

import (
	"cmp"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/store"
)

// fakeBrowser answers KeepBrowserSession and BrowserSessionLive with err
// and records the calls of each.
type fakeBrowser struct {
	mu    sync.Mutex
	err   error
	calls []string // KeepBrowserSession's: "user lineage"
	peeks []string // BrowserSessionLive's: "user lineage"
}

func (f *fakeBrowser) BrowserSessionLive(_ context.Context, userID, lineage string, _ time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.peeks = append(f.peeks, userID+" "+lineage)
	return f.err
}

func (f *fakeBrowser) KeepBrowserSession(_ context.Context, userID, lineage string, _ time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, userID+" "+lineage)
	return f.err
}

// TestRefreshChecksBrowserSession: a family of a code without
// offline_access is bound to its browser session's lineage, its absolute
// expiry capped at the session's; each refresh keeps the session alive or,
// once it is gone, is refused and ends the family; an offline_access
// family is bound to none and never asks.
func TestRefreshChecksBrowserSession(t *testing.T) {
	storeDown := errors.New("store down")
	for _, tc := range []struct {
		name       string
		offline    bool
		keepErr    error
		wantCalls  int
		wantCode   string // "" for success
		wantStatus int
		wantEnded  bool
	}{
		{name: "ok/live_session", wantCalls: 1},
		{name: "fail/session_gone", keepErr: store.ErrNotFound, wantCalls: 1, wantCode: "invalid_grant", wantStatus: 400, wantEnded: true},
		{name: "fail/store_down", keepErr: storeDown, wantCalls: 1, wantCode: apierr.ErrTemporarilyUnavailable.Code, wantStatus: 503},
		{name: "ok/offline_grant_not_bound", offline: true, keepErr: store.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newCodeEnv(t, "RS256")
			browser := &fakeBrowser{err: tc.keepErr}
			e.svc.browser = browser
			sessionEnd := e.clock.Now().Add(time.Hour) // sooner than the refresh max age
			code, rec := e.putCode(t, func(c *AuthCode) {
				c.Offline = tc.offline
				c.BrowserSessionID, c.BrowserLineage, c.BrowserSessionExpiry = "bs-2", "bs-1", sessionEnd
			})
			resp, err := e.exchange(codeRequest("web", code))
			if err != nil {
				t.Fatal(err)
			}
			fam := e.state.fams[rec.SID].fam
			wantLineage, wantExpiry := "bs-1", sessionEnd
			if tc.offline {
				wantLineage, wantExpiry = "", e.clock.Now().Add(720*time.Hour)
			}
			if fam.BrowserSessionID != wantLineage || !fam.AbsoluteExpiry.Equal(wantExpiry) {
				t.Fatalf("family bound to %q until %v, want %q until %v", fam.BrowserSessionID, fam.AbsoluteExpiry, wantLineage, wantExpiry)
			}
			e.clock.Add(10 * time.Minute)
			_, err = e.exchange(TokenRequest{GrantType: GrantRefreshToken, Client: ClientCredentials{ID: "web", Secret: "s3cret"},
				RefreshToken: resp.RefreshToken})
			var ae *apierr.Error
			switch {
			case tc.wantCode == "" && err != nil:
				t.Fatalf("refresh: %v", err)
			case tc.wantCode != "" && (!errors.As(err, &ae) || ae.Code != tc.wantCode || ae.Status != tc.wantStatus):
				t.Fatalf("refresh: %v, want %s (%d)", err, tc.wantCode, tc.wantStatus)
			}
			if len(browser.calls) != tc.wantCalls || tc.wantCalls > 0 && browser.calls[0] != "u1 bs-1" {
				t.Fatalf("KeepBrowserSession calls %q, want %d of \"u1 bs-1\"", browser.calls, tc.wantCalls)
			}
			if ended := e.state.fams[rec.SID].revoked; ended != tc.wantEnded {
				t.Fatalf("family ended: %v, want %v", ended, tc.wantEnded)
			}
		})
	}
}

// TestIntrospectRefreshAsRefreshWould: introspection calls a refresh token
// active exactly while a refresh would honour it (RFC 7662 §2.2: active is
// "currently usable"), so every reason a refresh refuses a family the token
// state still holds answers {"active": false}: the browser session it ends
// with has ended, the user must change their password, the organisation
// session is refused, a second factor is now owed, the scope the session
// asked for is no longer one a refresh grants (invalid_scope). An active
// token's scope is the scope its refresh is answered (RFC 7662 §2.2; a
// review found it answered the login's permissions alone). Introspection
// only reads the browser session: it is no activity that keeps it alive.
func TestIntrospectRefreshAsRefreshWould(t *testing.T) {
	// login starts a session and returns its client and refresh token.
	type login func(t *testing.T, e *mfaEnv, browser *fakeBrowser) (client, refresh string)
	codeLogin := func(t *testing.T, e *mfaEnv, _ *fakeBrowser) (string, string) {
		code, _ := e.putCode(t, func(c *AuthCode) {
			c.BrowserSessionID, c.BrowserLineage, c.BrowserSessionExpiry = "bs-1", "bs-1", e.clock.Now().Add(168*time.Hour)
		})
		resp, err := e.exchange(codeRequest("web", code))
		if err != nil {
			t.Fatal(err)
		}
		return "web", resp.RefreshToken
	}
	passwordLogin := func(t *testing.T, e *mfaEnv, _ *fakeBrowser) (string, string) {
		resp, err := e.token(t, "app", map[string]string{"grant_type": GrantPassword, "username": "u3", "password": "pw"})
		if err != nil {
			t.Fatal(err)
		}
		return "app", resp.RefreshToken
	}
	for _, tc := range []struct {
		name  string
		login login
		// change makes the refresh refuse the session (nil: it still honours it).
		change func(e *mfaEnv, browser *fakeBrowser)
		// refuse is the refresh's error once changed ("": invalid_grant).
		refuse string
	}{
		{name: "ok/browser_session_live", login: codeLogin},
		{name: "ok/password_login", login: passwordLogin},
		{name: "fail/browser_session_ended", login: codeLogin,
			change: func(_ *mfaEnv, browser *fakeBrowser) { browser.err = store.ErrNotFound }},
		{name: "fail/must_change_password", login: passwordLogin, change: func(e *mfaEnv, _ *fakeBrowser) {
			u := e.dir.users["u3"]
			u.MustChangePassword = true
			e.dir.users["u3"] = u
		}},
		{name: "fail/organisation_session_refused", login: passwordLogin, change: func(e *mfaEnv, _ *fakeBrowser) {
			// The session named an organisation; organisations are off now.
			e.state.mu.Lock()
			defer e.state.mu.Unlock()
			for _, r := range e.state.fams {
				r.fam.TenantID = "t-acme"
			}
		}},
		{name: "fail/second_factor_owed", login: passwordLogin, change: func(e *mfaEnv, _ *fakeBrowser) {
			u := e.dir.users["u3"]
			u.Roles = []string{"editor"}
			e.dir.users["u3"] = u
			e.mfa.requiredFor = "editor"
		}},
		{name: "fail/session_scope_no_longer_allowed", login: passwordLogin, refuse: "invalid_scope", change: func(e *mfaEnv, _ *fakeBrowser) {
			// The session asked for a scope no refresh grants now.
			e.state.mu.Lock()
			defer e.state.mu.Unlock()
			for _, r := range e.state.fams {
				r.fam.RequestedScope = "openid legacy"
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newMFAEnv(t)
			browser := &fakeBrowser{}
			e.svc.browser = browser
			client, rt := tc.login(t, e, browser)
			if tc.change != nil {
				tc.change(e, browser)
			}
			e.clock.Add(time.Minute)
			cred := ClientCredentials{ID: client, Secret: "s3cret"}
			out, err := e.svc.Introspect(context.Background(), cred, rt)
			if err != nil {
				t.Fatalf("introspect: %v", err)
			}
			if len(browser.calls) != 0 {
				t.Fatalf("introspection kept the browser session alive: KeepBrowserSession calls %q", browser.calls)
			}
			resp, rerr := e.exchange(TokenRequest{GrantType: GrantRefreshToken, Client: cred, RefreshToken: rt})
			if tc.change == nil {
				if rerr != nil || out["active"] != true || out["sid"] == nil {
					t.Fatalf("introspection %v, refresh %v; want active and the refresh honoured", out, rerr)
				}
				if resp.Scope == nil || out["scope"] != *resp.Scope {
					t.Fatalf("introspected scope %q, the refresh granted %q", out["scope"], *cmp.Or(resp.Scope, new("(none)")))
				}
				return
			}
			wantOAuthError(t, rerr, cmp.Or(tc.refuse, "invalid_grant"))
			if len(out) != 1 || out["active"] != false {
				t.Fatalf("introspection %v of a token whose refresh is refused (%v), want exactly {\"active\": false}", out, rerr)
			}
		})
	}
}

package token

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/store"
)

// fakeBrowser answers KeepBrowserSession with err and records the calls.
type fakeBrowser struct {
	mu    sync.Mutex
	err   error
	calls []string // "user lineage"
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

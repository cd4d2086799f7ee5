package browsersession_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/browsersession"
	"github.com/portcullis-auth/portcullis/store"
)

// memStore keeps sessions by cookie hash, with the store contract's expiry
// rules (idle, absolute, ended).
type memStore struct {
	mu      sync.Mutex
	byHash  map[string]store.BrowserSession
	ended   map[string]bool
	findErr error
	finds   int
	// capEnds is what the next CreateBrowserSession answers as the grants
	// of the sessions it ended past the cap, with createErr.
	capEnds   []store.EndedBrowserSession
	createErr error
}

func newMem() *memStore {
	return &memStore{byHash: map[string]store.BrowserSession{}, ended: map[string]bool{}}
}

func (m *memStore) CreateBrowserSession(_ context.Context, s store.BrowserSession, h []byte) ([]store.EndedBrowserSession, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.createErr == nil {
		m.byHash[string(h)] = s
	}
	return m.capEnds, m.createErr
}

// audits records what Start hands Config.Audit.
type audits struct {
	mu     sync.Mutex
	events []store.AuditEvent
}

func (a *audits) Record(_ context.Context, e store.AuditEvent) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, e)
}

// endedGrants records what Start hands Config.Ended, and fails with err.
type endedGrants struct {
	mu    sync.Mutex
	users []string
	got   []store.SessionGrant
	err   error
}

func (e *endedGrants) EndDropped(_ context.Context, userID string, dropped []store.SessionGrant) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(dropped) > 0 {
		e.users = append(e.users, userID)
		e.got = append(e.got, dropped...)
	}
	return e.err
}

func (m *memStore) FindBrowserSession(_ context.Context, h []byte, now time.Time) (store.BrowserSession, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.finds++
	if m.findErr != nil {
		return store.BrowserSession{}, m.findErr
	}
	s, ok := m.byHash[string(h)]
	if !ok || m.ended[s.ID] || now.Sub(s.LastUsedAt) > s.IdleTTL || !now.Before(s.AbsoluteExpiry) {
		return store.BrowserSession{}, store.ErrNotFound
	}
	s.LastUsedAt = now
	m.byHash[string(h)] = s
	return s, nil
}

func (m *memStore) BrowserSessionGrants(_ context.Context, _, id string) ([]store.SessionGrant, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ended[id] {
		return nil, store.ErrNotFound
	}
	return nil, nil
}

func (m *memStore) EndBrowserSessionGrants(_ context.Context, id string, _ time.Time) ([]store.SessionGrant, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ended[id] = true
	return nil, nil
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newManager(t *testing.T, st browsersession.Store, c *clock) *browsersession.Manager {
	t.Helper()
	m, err := browsersession.New(st, browsersession.Config{IdleTTL: 8 * time.Hour, MaxAge: 168 * time.Hour, Now: c.now,
		Ended: &endedGrants{}, Audit: &audits{}})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// setCookie writes ck as a response header and reads it back the way a
// browser sees it.
func setCookie(t *testing.T, ck *http.Cookie) (*http.Cookie, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	http.SetCookie(rec, ck)
	line := rec.Header().Get("Set-Cookie")
	got, err := http.ParseSetCookie(line)
	if err != nil {
		t.Fatalf("parse %q: %v", line, err)
	}
	return got, line
}

// requestWith is a request carrying the cookie name=value.
func requestWith(name, value string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/oauth2/authorize", nil)
	if name != "" {
		r.AddCookie(&http.Cookie{Name: name, Value: value})
	}
	return r
}

// TestStartCookie: the cookie's name and attributes over HTTPS and plain
// HTTP, with and without "Keep me signed in"; a 256-bit base64url value of
// which only the SHA-256 is stored; a new value at every start.
func TestStartCookie(t *testing.T) {
	for _, tc := range []struct {
		name     string
		secure   bool
		remember bool
		wantName string
		wantAge  int
	}{
		{"ok/https_browser_session", true, false, "__Host-portcullis-session", 0},
		{"ok/https_remembered", true, true, "__Host-portcullis-session", int((168 * time.Hour).Seconds())},
		{"ok/http_browser_session", false, false, "portcullis-session", 0},
		{"ok/http_remembered", false, true, "portcullis-session", int((168 * time.Hour).Seconds())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, c := newMem(), &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
			m := newManager(t, st, c)
			bs, ck, err := m.Start(context.Background(), browsersession.Start{UserID: "usr_1", AMR: []string{"pwd"},
				Remember: tc.remember, IP: "192.0.2.1", UserAgent: "test"}, tc.secure)
			if err != nil {
				t.Fatal(err)
			}
			got, line := setCookie(t, ck)
			if got.Name != tc.wantName || got.Path != "/" || !got.HttpOnly || got.Secure != tc.secure ||
				got.SameSite != http.SameSiteLaxMode || got.Domain != "" || got.MaxAge != tc.wantAge {
				t.Fatalf("Set-Cookie %q", line)
			}
			if tc.remember != strings.Contains(line, "Max-Age") {
				t.Fatalf("Max-Age presence wrong for remember=%v: %q", tc.remember, line)
			}
			raw, err := base64.RawURLEncoding.DecodeString(got.Value)
			if err != nil || len(raw) != 32 {
				t.Fatalf("cookie value is not 256 bits of base64url: %d bytes, %v", len(raw), err)
			}
			sum := sha256.Sum256([]byte(got.Value))
			stored, ok := st.byHash[string(sum[:])]
			if !ok || len(st.byHash) != 1 {
				t.Fatalf("the store does not hold the session under the value's SHA-256")
			}
			for h := range st.byHash {
				if strings.Contains(h, got.Value) || bytes.Contains([]byte(h), raw) {
					t.Fatal("the store holds the cookie value itself")
				}
			}
			if stored.ID != bs.ID || stored.ID == "" || stored.ID == got.Value || stored.UserID != "usr_1" ||
				!stored.AuthTime.Equal(c.t) || !stored.AbsoluteExpiry.Equal(c.t.Add(168*time.Hour)) ||
				stored.IdleTTL != 8*time.Hour || stored.Remember != tc.remember || stored.AMR[0] != "pwd" {
				t.Fatalf("stored session %+v", stored)
			}
			_, ck2, err := m.Start(context.Background(), browsersession.Start{UserID: "usr_1"}, tc.secure)
			if err != nil {
				t.Fatal(err)
			}
			if ck2.Value == ck.Value {
				t.Fatal("a second login reused the cookie value")
			}
		})
	}
}

// TestFind: the cookie finds its live session; nothing else does, and a
// store that cannot answer is an error, never "signed out".
func TestFind(t *testing.T) {
	ctx := context.Background()
	st, c := newMem(), &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	m := newManager(t, st, c)
	bs, ck, err := m.Start(ctx, browsersession.Start{UserID: "usr_1"}, true)
	if err != nil {
		t.Fatal(err)
	}
	_, idle, err := m.Start(ctx, browsersession.Start{UserID: "usr_3"}, true)
	if err != nil {
		t.Fatal(err)
	}
	_, ended, err := m.Start(ctx, browsersession.Start{UserID: "usr_2"}, true)
	if err != nil {
		t.Fatal(err)
	}
	endedSession, err := m.Find(ctx, requestWith(ended.Name, ended.Value), true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.End(ctx, endedSession.ID); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		req     *http.Request
		secure  bool
		advance time.Duration
		wantID  string
	}{
		{"ok/live", requestWith(ck.Name, ck.Value), true, 0, bs.ID},
		{"ok/within_idle", requestWith(ck.Name, ck.Value), true, 7 * time.Hour, bs.ID},
		{"fail/no_cookie", requestWith("", ""), true, 0, ""},
		{"fail/other_name_over_https", requestWith("portcullis-session", ck.Value), true, 0, ""},
		{"fail/https_cookie_over_http", requestWith(ck.Name, ck.Value), false, 0, ""},
		{"fail/truncated", requestWith(ck.Name, ck.Value[:42]), true, 0, ""},
		{"fail/not_base64url", requestWith(ck.Name, strings.Repeat("+", 43)), true, 0, ""},
		{"fail/unknown", requestWith(ck.Name, strings.Repeat("A", 43)), true, 0, ""},
		{"fail/ended", requestWith(ended.Name, ended.Value), true, 0, ""},
		{"fail/idle", requestWith(idle.Name, idle.Value), true, 8*time.Hour + time.Second, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			saved := c.t
			c.t = c.t.Add(tc.advance)
			defer func() { c.t = saved }()
			got, err := m.Find(ctx, tc.req, tc.secure)
			if tc.wantID == "" {
				if !errors.Is(err, browsersession.ErrNoSession) {
					t.Fatalf("found %+v, %v; want ErrNoSession", got, err)
				}
				return
			}
			if err != nil || got.ID != tc.wantID {
				t.Fatalf("found %+v, %v", got, err)
			}
		})
	}
	t.Run("fail/absolute_expiry_despite_use", func(t *testing.T) {
		st, c := newMem(), &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
		m := newManager(t, st, c)
		_, ck, err := m.Start(ctx, browsersession.Start{UserID: "usr_1", Remember: true}, true)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 168/4; i++ { // used every 4 hours: never idle
			c.t = c.t.Add(4 * time.Hour)
			_, err := m.Find(ctx, requestWith(ck.Name, ck.Value), true)
			if c.t.Before(time.Date(2026, 1, 9, 3, 4, 5, 0, time.UTC)) != (err == nil) {
				t.Fatalf("at %v: %v", c.t, err)
			}
		}
	})
	t.Run("fail/malformed_never_reaches_the_store", func(t *testing.T) {
		before := st.finds
		_, _ = m.Find(ctx, requestWith(ck.Name, "short"), true)
		if st.finds != before {
			t.Fatal("a malformed cookie was looked up")
		}
	})
	t.Run("fail/store_down_is_not_signed_out", func(t *testing.T) {
		st.findErr = errors.New("connection refused")
		defer func() { st.findErr = nil }()
		_, err := m.Find(ctx, requestWith(ck.Name, ck.Value), true)
		if err == nil || errors.Is(err, browsersession.ErrNoSession) {
			t.Fatalf("a store failure answered %v; want an error that is not ErrNoSession", err)
		}
	})
}

// TestRememberedCookieEndsWithTheSession: a remembered cookie's Max-Age
// never outlives the session's absolute expiry.
func TestRememberedCookieEndsWithTheSession(t *testing.T) {
	st, c := newMem(), &clock{t: time.Unix(1_800_000_000, 0)}
	m, err := browsersession.New(st, browsersession.Config{IdleTTL: time.Hour, MaxAge: 90 * time.Second, Now: c.now,
		Ended: &endedGrants{}, Audit: &audits{}})
	if err != nil {
		t.Fatal(err)
	}
	_, ck, err := m.Start(context.Background(), browsersession.Start{UserID: "usr_1", Remember: true}, false)
	if err != nil {
		t.Fatal(err)
	}
	if ck.MaxAge != 90 {
		t.Fatalf("Max-Age %d, want 90", ck.MaxAge)
	}
}

// TestClear deletes the cookie with the same attributes.
func TestClear(t *testing.T) {
	for _, secure := range []bool{true, false} {
		got, line := setCookie(t, browsersession.Clear(secure))
		if got.Name != browsersession.Name(secure) || got.MaxAge != -1 || got.Path != "/" || got.Secure != secure || !got.HttpOnly {
			t.Fatalf("Set-Cookie %q", line)
		}
	}
}

// TestNewRefusesBadConfig: lifetimes must be positive; a store and what
// ends the grants of sessions past the cap are required.
func TestNewRefusesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   browsersession.Store
		cfg  browsersession.Config
	}{
		{"fail/no_store", nil, browsersession.Config{IdleTTL: time.Hour, MaxAge: time.Hour, Ended: &endedGrants{}, Audit: &audits{}}},
		{"fail/no_idle", newMem(), browsersession.Config{MaxAge: time.Hour, Ended: &endedGrants{}, Audit: &audits{}}},
		{"fail/no_max_age", newMem(), browsersession.Config{IdleTTL: time.Hour, Ended: &endedGrants{}, Audit: &audits{}}},
		{"fail/no_ended", newMem(), browsersession.Config{IdleTTL: time.Hour, MaxAge: time.Hour, Audit: &audits{}}},
		{"fail/no_audit", newMem(), browsersession.Config{IdleTTL: time.Hour, MaxAge: time.Hour, Ended: &endedGrants{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := browsersession.New(tc.st, tc.cfg); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// TestStartEndsGrantsPastTheCap: the grants of the sessions the store
// ended to keep the user within the cap on sessions per user go to
// Config.Ended, with the user; when they cannot be ended, or the store
// failed after ending sessions, Start hands out no cookie (and still ends
// what the store returned).
func TestStartEndsGrantsPastTheCap(t *testing.T) {
	grants := []store.SessionGrant{{SID: "sid-1", ClientID: "web"}, {SID: "sid-2", ClientID: "rp", Offline: true}}
	capped := []store.EndedBrowserSession{{ID: "bs-1", Grants: grants[:1]}, {ID: "bs-2"}, {ID: "bs-3", Grants: grants[1:]}}
	for _, tc := range []struct {
		name      string
		createErr error
		endErr    error
	}{
		{"ok/grants_ended", nil, nil},
		{"fail/grants_not_ended", nil, errors.New("queue down")},
		{"fail/store_failed_after_ending", errors.New("corrupt grant"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, c := newMem(), &clock{t: time.Unix(1_800_000_000, 0)}
			st.capEnds, st.createErr = capped, tc.createErr
			ended, audit := &endedGrants{err: tc.endErr}, &audits{}
			m, err := browsersession.New(st, browsersession.Config{IdleTTL: time.Hour, MaxAge: time.Hour, Now: c.now, Ended: ended, Audit: audit})
			if err != nil {
				t.Fatal(err)
			}
			_, ck, err := m.Start(context.Background(), browsersession.Start{UserID: "usr_1", IP: "192.0.2.1", UserAgent: "ua"}, true)
			if !reflect.DeepEqual(ended.got, grants) || !reflect.DeepEqual(ended.users, []string{"usr_1"}) {
				t.Fatalf("ended %v of %v, want %v of usr_1", ended.got, ended.users, grants)
			}
			var want []store.AuditEvent
			for _, e := range capped {
				want = append(want, store.AuditEvent{Action: "session.ended", Outcome: store.OutcomeSuccess, ActorID: "usr_1",
					TargetID: "usr_1", IP: "192.0.2.1", UserAgent: "ua",
					Details: map[string]string{"sid": e.ID, "reason": browsersession.WhyCap, "kind": "browser"}})
			}
			if !reflect.DeepEqual(audit.events, want) {
				t.Fatalf("audited %+v, want one session.ended per session the cap ended %+v", audit.events, want)
			}
			wantErr := tc.createErr != nil || tc.endErr != nil
			if (err != nil) != wantErr || (ck == nil) != wantErr {
				t.Fatalf("Start: cookie %v, err %v; want an error: %v", ck, err, wantErr)
			}
		})
	}
}

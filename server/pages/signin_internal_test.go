package pages

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/browsersession"
	"github.com/portcullis-auth/portcullis/server/passcheck"
	"github.com/portcullis-auth/portcullis/server/signout"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// These tests drive the sign-in pages over HTTP against a scripted Flow
// (the decisions are server/authorize's, tested there and end to end in
// package server); they pin what the pages themselves do: forms, cookies,
// CSRF, headers, the one password check, which Done they report.

const (
	testRedirect = "https://app.example.com/callback"
	testLogo     = "https://cdn.example.com/logo.png"
)

var testPending = Pending{ID: "req1", Client: Client{ID: "third", Name: "Third App", LogoURI: testLogo},
	Scopes: []string{"openid", "email", "projects:read"}, RedirectURI: testRedirect, LoginHint: "ann@example.com"}

// call is one Proceed call.
type call struct {
	id     string
	userID string // "" without a session
	sid    string
	done   Done
}

// scriptedFlow answers like the contract's table for one third-party client:
// no session → login; signed in without consent → consent; deny →
// access_denied; otherwise a code. "gone" is an expired request.
type scriptedFlow struct {
	mu        sync.Mutex
	calls     []call
	consented bool
	step      *Step // when set, Proceed answers it
	// notDue refuses the change-password step to every session (as a
	// request asking for a fresh login does); olderLogin says the
	// session's login came before the request.
	notDue, olderLogin bool
}

func (f *scriptedFlow) Authorize(_ context.Context, r *http.Request, _ accounts.Meta) (string, *Step, error) {
	if err := r.ParseForm(); err != nil {
		return "", nil, err
	}
	switch r.Form.Get("client_id") {
	case "unknown":
		return "", &Step{Kind: StepError, Message: "The client is not known."}, nil
	case "":
		return "", nil, apierr.ErrServer.WithCause(errors.New("boom"))
	}
	return testPending.ID, nil, nil
}

func (f *scriptedFlow) AuthorizeNow(ctx context.Context, r *http.Request, bs *store.BrowserSession, m accounts.Meta) (Step, error) {
	id, stop, err := f.Authorize(ctx, r, m)
	if err != nil || stop != nil {
		if stop != nil {
			return *stop, nil
		}
		return Step{}, err
	}
	return f.Proceed(ctx, id, bs, DoneNothing, m)
}

func (f *scriptedFlow) Proceed(_ context.Context, id string, bs *store.BrowserSession, done Done, _ accounts.Meta) (Step, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := call{id: id, done: done}
	if bs != nil {
		c.userID, c.sid = bs.UserID, bs.ID
	}
	f.calls = append(f.calls, c)
	if f.step != nil {
		return *f.step, nil
	}
	if id == "gone" {
		return Step{Kind: StepRedirect, Location: testRedirect + "?error=access_denied&state=s&iss=x"}, nil
	}
	switch {
	case done == DoneDeny:
		return Step{Kind: StepRedirect, Request: testPending, Location: testRedirect + "?error=access_denied&iss=x"}, nil
	case bs == nil:
		return Step{Kind: StepLogin, Request: testPending}, nil
	case done == DoneConsent:
		f.consented = true
	}
	if !f.consented {
		return Step{Kind: StepConsent, Request: testPending}, nil
	}
	return Step{Kind: StepRedirect, Request: testPending, Location: testRedirect + "?code=c&iss=x"}, nil
}

func (f *scriptedFlow) Lookup(_ context.Context, id string) (Pending, *Step, error) {
	if id == "gone" {
		return Pending{}, &Step{Kind: StepRedirect, Location: testRedirect + "?error=access_denied&state=s&iss=x"}, nil
	}
	return testPending, nil, nil
}

// PasswordChange: the step is due for a session of a user who must change
// the password, unless notDue.
func (f *scriptedFlow) PasswordChange(ctx context.Context, id string, bs *store.BrowserSession) (PasswordChange, *Step, error) {
	pr, stop, err := f.Lookup(ctx, id)
	if stop != nil || err != nil {
		return PasswordChange{}, stop, err
	}
	pc := PasswordChange{Request: pr}
	if bs != nil {
		pc.Due = testUsers[bs.UserID].MustChangePassword && !f.notDue
		pc.SignedInDuring = !f.olderLogin
	}
	return pc, nil, nil
}

func (f *scriptedFlow) last() call {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return call{}
	}
	return f.calls[len(f.calls)-1]
}

// fakeChecker knows ann (right password "right") and tmp (a temporary
// password "temp"); it records attempts.
type fakeChecker struct {
	mu        sync.Mutex
	attempts  []passcheck.Attempt
	refuse    error
	succeeded []string // users whose deferred success was confirmed
}

func (f *fakeChecker) Succeeded(_ context.Context, r passcheck.Result) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.succeeded = append(f.succeeded, r.User.ID)
}

func (f *fakeChecker) Check(_ context.Context, a passcheck.Attempt) (passcheck.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attempts = append(f.attempts, a)
	if f.refuse != nil {
		return passcheck.Result{}, f.refuse
	}
	switch {
	case a.Login == "ann@example.com" && a.Password == "right":
		return passcheck.Result{User: testUsers["usr_ann"]}, nil
	case a.Login == "bob@example.com" && a.Password == "right":
		return passcheck.Result{User: testUsers["usr_bob"], NeedsRehash: true}, nil
	case a.Login == "tmp@example.com" && a.Password == "temp":
		return passcheck.Result{User: testUsers["usr_tmp"]}, nil
	}
	return passcheck.Result{}, passcheck.ErrBadCredentials
}

var testUsers = map[string]store.User{
	"usr_ann": {ID: "usr_ann", Email: "ann@example.com", Name: "Ann", Active: true},
	"usr_bob": {ID: "usr_bob", Email: "bob@example.com", Active: true},
	"usr_tmp": {ID: "usr_tmp", Email: "tmp@example.com", Active: true, MustChangePassword: true},
}

type fakeUsers struct{}

func (f *fakeUsers) GetUser(_ context.Context, id string) (store.User, error) {
	if u, ok := testUsers[id]; ok {
		return u, nil
	}
	return store.User{}, store.ErrNotFound
}

// GetUserAt is GetUser: the fake keeps no copies.
func (f *fakeUsers) GetUserAt(ctx context.Context, id string, _ store.UserVersion) (store.User, error) {
	return f.GetUser(ctx, id)
}

type rehashes struct {
	mu    sync.Mutex
	calls []string
}

func (r *rehashes) Rehash(_ context.Context, res passcheck.Result, password string) {
	if !res.NeedsRehash {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, res.User.ID+":"+password)
}

type auditLog struct {
	mu     sync.Mutex
	events []store.AuditEvent
	logins []string // the users of RecordLogin's events
}

// RecordLogin records e as Record does, and its user as a login recorded.
func (a *auditLog) RecordLogin(ctx context.Context, e store.AuditEvent) {
	a.Record(ctx, e)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.logins = append(a.logins, e.TargetID)
}

func (a *auditLog) Record(_ context.Context, e store.AuditEvent) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, e)
}

func (a *auditLog) of(action string) []store.AuditEvent {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []store.AuditEvent
	for _, e := range a.events {
		if e.Action == action {
			out = append(out, e)
		}
	}
	return out
}

// memSessions is an in-memory store.BrowserSessions for the real
// browsersession.Manager.
type memSessions struct {
	mu     sync.Mutex
	byHash map[string]store.BrowserSession
	ended  map[string]bool
	down   bool
}

func (m *memSessions) CreateBrowserSession(_ context.Context, s store.BrowserSession, h []byte) ([]store.EndedBrowserSession, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.byHash[string(h)] = s
	return nil, nil
}

func (m *memSessions) FindBrowserSession(_ context.Context, h []byte, _ time.Time) (store.BrowserSession, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return store.BrowserSession{}, errors.New("connection refused")
	}
	s, ok := m.byHash[string(h)]
	if !ok || m.ended[s.ID] {
		return store.BrowserSession{}, store.ErrNotFound
	}
	return s, nil
}

func (m *memSessions) BrowserSessionGrants(_ context.Context, userID, id string) ([]store.SessionGrant, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.byHash {
		if s.ID == id && s.UserID == userID && !m.ended[id] {
			return s.Grants, nil
		}
	}
	return nil, store.ErrNotFound
}

func (m *memSessions) EndBrowserSessionGrants(_ context.Context, id string, _ time.Time) ([]store.SessionGrant, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ended[id] {
		return nil, nil
	}
	m.ended[id] = true
	for _, s := range m.byHash {
		if s.ID == id {
			return s.Grants, nil
		}
	}
	return nil, nil
}

// addGrants gives every live session of user the grants (as the flow
// records them when it issues codes).
func (m *memSessions) addGrants(userID string, gs ...store.SessionGrant) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for h, s := range m.byHash {
		if s.UserID == userID && !m.ended[s.ID] {
			s.Grants = append(s.Grants, gs...)
			m.byHash[h] = s
		}
	}
}

// grantsOf returns the grants of user's live sessions.
func (m *memSessions) grantsOf(userID string) []store.SessionGrant {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []store.SessionGrant
	for _, s := range m.byHash {
		if s.UserID == userID && !m.ended[s.ID] {
			out = append(out, s.Grants...)
		}
	}
	return out
}

// endedGrants records the sids signout.Ender ends.
type endedGrants struct {
	mu   sync.Mutex
	sids []string
}

func (e *endedGrants) EndGrants(_ context.Context, sids []string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.sids = append(e.sids, sids...)
	return nil
}

// refusedHints refuses every id_token_hint; noClients knows no client.
type refusedHints struct{}

func (refusedHints) ParseIDTokenHint(string) (token.IDClaims, error) {
	return token.IDClaims{}, errors.New("not ours")
}

type noClients struct{}

func (noClients) GetClient(context.Context, string) (store.Client, error) {
	return store.Client{}, store.ErrNotFound
}

// fakeAccounts implements the change-password step's ChangePassword.
type fakeAccounts struct {
	Accounts
	changed []accounts.Actor
}

func (f *fakeAccounts) ChangePassword(_ context.Context, a accounts.Actor, req accounts.ChangePasswordRequest) (token.Response, error) {
	if req.CurrentPassword != "temp" {
		return token.Response{}, apierr.ErrInvalidGrant
	}
	f.changed = append(f.changed, a)
	return token.Response{}, nil
}

type signinEnv struct {
	srv     *httptest.Server
	flow    *scriptedFlow
	checker *fakeChecker
	users   *fakeUsers
	audit   *auditLog
	store   *memSessions
	acc     *fakeAccounts
	rehash  *rehashes
	grants  *endedGrants
	mfa     *fakeMFA
	keys    *fakePasskeys
}

func newSigninEnv(t *testing.T) *signinEnv {
	t.Helper()
	env := &signinEnv{flow: &scriptedFlow{}, checker: &fakeChecker{}, users: &fakeUsers{}, audit: &auditLog{},
		store: &memSessions{byHash: map[string]store.BrowserSession{}, ended: map[string]bool{}}, acc: &fakeAccounts{},
		rehash: &rehashes{}, grants: &endedGrants{}, mfa: newFakeMFA(), keys: &fakePasskeys{}}
	ender := &signout.Ender{Sessions: env.store, Grants: env.grants, Audit: env.audit}
	mgr, err := browsersession.New(env.store, browsersession.Config{IdleTTL: time.Hour, MaxAge: 24 * time.Hour, Ended: ender, Audit: env.audit})
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{ProductName: "Portcullis"}, Deps{Accounts: env.acc, Sessions: noSessions{},
		SignIn: SignInDeps{Flow: env.flow, Browser: mgr, Checker: env.checker, Users: env.users, Audit: env.audit,
			Rehasher: env.rehash, Hints: refusedHints{}, Clients: noClients{},
			Ender: ender,
			MFA:   env.mfa, Passkeys: env.keys, Security: fakeSecurity{m: env.mfa, keys: env.keys},
			Once: &onceMem{recs: map[string]*onceRecord{}}}})
	if err != nil {
		t.Fatal(err)
	}
	e := echo.New()
	p.Register(e)
	env.srv = httptest.NewServer(e)
	t.Cleanup(env.srv.Close)
	return env
}

type noSessions struct{}

func (noSessions) AuthenticateBearer(context.Context, string) (token.AccessClaims, error) {
	return token.AccessClaims{}, errors.New("none")
}
func (noSessions) Logout(context.Context, token.AccessClaims, token.RequestMeta) error { return nil }

// browser is a cookie-keeping client that does not follow redirects.
func (env *signinEnv) browser(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

type answer struct {
	*http.Response
	body string
}

func (env *signinEnv) do(t *testing.T, hc *http.Client, method, path string, form url.Values) answer {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, env.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp, string(b)}
}

var csrfRe = regexp.MustCompile(`name="csrf_token" value="([A-Za-z0-9_-]{43})"`)

func csrfIn(t *testing.T, a answer) string {
	t.Helper()
	m := csrfRe.FindStringSubmatch(a.body)
	if m == nil {
		t.Fatalf("no CSRF field (%d):\n%s", a.StatusCode, a.body)
	}
	return m[1]
}

// openLogin opens the login page of the pending request and returns its CSRF token.
func (env *signinEnv) openLogin(t *testing.T, hc *http.Client) string {
	t.Helper()
	a := env.do(t, hc, http.MethodGet, "/login?request=req1", nil)
	if a.StatusCode != http.StatusOK {
		t.Fatalf("GET /login: %d\n%s", a.StatusCode, a.body)
	}
	return csrfIn(t, a)
}

func (env *signinEnv) signIn(t *testing.T, hc *http.Client, login, pw string, remember bool) answer {
	t.Helper()
	form := url.Values{"csrf_token": {env.openLogin(t, hc)}, "request": {"req1"}, "username": {login}, "password": {pw}}
	if remember {
		form.Set("remember", "1")
	}
	return env.do(t, hc, http.MethodPost, "/login", form)
}

func sessionCookie(a answer) *http.Cookie {
	for _, c := range a.Cookies() {
		if c.Name == browsersession.InsecureCookieName {
			return c
		}
	}
	return nil
}

// TestLoginPage: the form the contract's automation hooks name, its
// headers (frame-ancestors 'none', form-action 'self' and the redirect
// URI's origin), the login hint pre-filled.
func TestLoginPage(t *testing.T) {
	env := newSigninEnv(t)
	a := env.do(t, env.browser(t), http.MethodGet, "/login?request=req1", nil)
	if a.StatusCode != http.StatusOK {
		t.Fatalf("status %d", a.StatusCode)
	}
	for _, want := range []string{`<form method="post" action="/login"`, `name="username"`, `type="password"`,
		`name="password"`, `name="remember" type="checkbox" value="1"`, `<input type="hidden" name="request" value="req1">`,
		`value="ann@example.com"`, `<label for="remember">Keep me signed in</label>`, "Sign in to continue to Third App",
		`autocomplete="current-password"`, `autocomplete="username"`} {
		if !strings.Contains(a.body, want) {
			t.Errorf("the login page lacks %s", want)
		}
	}
	csp := a.Header.Get("Content-Security-Policy")
	for _, want := range []string{"frame-ancestors 'none'", "form-action 'self' https://app.example.com;",
		"default-src 'none'", "img-src 'self' https://cdn.example.com;"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "script-src") || a.Header.Get("X-Frame-Options") != "DENY" || a.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("headers %v", a.Header)
	}
	if a := env.do(t, env.browser(t), http.MethodGet, "/login", nil); a.StatusCode != http.StatusBadRequest || strings.Contains(a.body, "<form") {
		t.Fatalf("/login without a request: %d", a.StatusCode)
	}
}

// TestLogin: the login form through the one password check.
func TestLogin(t *testing.T) {
	for _, tc := range []struct {
		name       string
		csrf       bool
		login, pw  string
		remember   bool
		status     int
		wantCookie bool
		wantPage   string
	}{
		{"ok/signed_in_then_consent", true, "ann@example.com", "right", false, http.StatusOK, true, `value="allow"`},
		{"ok/remembered", true, "ann@example.com", "right", true, http.StatusOK, true, `value="deny"`},
		{"fail/wrong_password", true, "ann@example.com", "wrong", false, http.StatusBadRequest, false, badLogin},
		{"fail/unknown_account_same_answer", true, "ghost@example.com", "right", false, http.StatusBadRequest, false, badLogin},
		{"fail/empty_fields", true, "", "", false, http.StatusBadRequest, false, "Enter your email address."},
		{"fail/no_csrf", false, "ann@example.com", "right", false, http.StatusForbidden, false, "This form has expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newSigninEnv(t)
			hc := env.browser(t)
			form := url.Values{"request": {"req1"}, "username": {tc.login}, "password": {tc.pw}}
			tok := env.openLogin(t, hc)
			if tc.csrf {
				form.Set("csrf_token", tok)
			}
			if tc.remember {
				form.Set("remember", "1")
			}
			a := env.do(t, hc, http.MethodPost, "/login", form)
			if a.StatusCode != tc.status || !strings.Contains(a.body, tc.wantPage) {
				t.Fatalf("status %d, want %d with %q:\n%s", a.StatusCode, tc.status, tc.wantPage, a.body)
			}
			ck := sessionCookie(a)
			if (ck != nil) != tc.wantCookie {
				t.Fatalf("session cookie %v, want one: %v", ck, tc.wantCookie)
			}
			if strings.Contains(a.body, tc.pw) && tc.pw != "" {
				t.Fatal("the page shows the password")
			}
			switch {
			case !tc.csrf || tc.login == "":
				if len(env.checker.attempts) != 0 {
					t.Fatalf("the password was checked: %+v", env.checker.attempts)
				}
				return
			case len(env.checker.attempts) != 1:
				t.Fatalf("attempts %d, want one", len(env.checker.attempts))
			}
			at := env.checker.attempts[0]
			if at.Method != "page" || at.FailureAction != "login.failed" || at.ClientID != "third" || at.IP == "" {
				t.Fatalf("attempt %+v: not the password grant's check with method page", at)
			}
			if !tc.wantCookie {
				if len(env.audit.of("login.succeeded")) != 0 || len(env.store.byHash) != 0 {
					t.Fatal("a failed login started a session")
				}
				return
			}
			if !ck.HttpOnly || ck.Path != "/" || ck.SameSite != http.SameSiteLaxMode || (ck.MaxAge > 0) != tc.remember {
				t.Fatalf("cookie %+v", ck)
			}
			ok := env.audit.of("login.succeeded")
			started := env.audit.of("session.started")
			if len(ok) != 1 || ok[0].Details["method"] != "page" || ok[0].ClientID != "third" || ok[0].ActorID != "usr_ann" ||
				len(started) != 1 || started[0].Details["sid"] != ok[0].Details["sid"] {
				t.Fatalf("audit %+v", env.audit.events)
			}
			if last := env.flow.last(); last.done != DoneLogin || last.userID != "usr_ann" || last.sid != ok[0].Details["sid"] {
				t.Fatalf("Proceed %+v, want DoneLogin in the new session", last)
			}
			if len(env.audit.logins) != 1 || env.audit.logins[0] != "usr_ann" || ok[0].Time.IsZero() {
				t.Fatalf("logins recorded %v (login.succeeded at %v)", env.audit.logins, ok[0].Time)
			}
			// No second step follows: the correct password clears the
			// throttle's failures (checked with DeferSuccess, then Succeeded).
			if !at.DeferSuccess || len(env.checker.succeeded) != 1 || env.checker.succeeded[0] != "usr_ann" {
				t.Fatalf("attempt %+v, throttle cleared for %v", at, env.checker.succeeded)
			}
		})
	}
}

// TestLoginEndsTheOldSession: signing in again, as another user or the
// same one, ends the browser's old session first and sets a new cookie
// value (no session fixation). A login as someone else ends the old
// session's non-offline grants; a new login of the same person carries
// them into the new session.
func TestLoginEndsTheOldSession(t *testing.T) {
	grants := []store.SessionGrant{{SID: "g-online", ClientID: "web"}, {SID: "g-offline", ClientID: "web", Offline: true}}
	for _, tc := range []struct {
		name, second, reason string
		ended                []string
		carried              int
	}{
		{"ok/another_user", "bob@example.com", "another_user", []string{"g-online"}, 0},
		{"ok/same_user_again", "ann@example.com", "login", nil, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newSigninEnv(t)
			hc := env.browser(t)
			first := sessionCookie(env.signIn(t, hc, "ann@example.com", "right", false))
			env.store.addGrants("usr_ann", grants...)
			second := sessionCookie(env.signIn(t, hc, tc.second, "right", false))
			if !slices.Equal(env.grants.sids, tc.ended) {
				t.Fatalf("grants ended %v, want %v", env.grants.sids, tc.ended)
			}
			if got := env.store.grantsOf("usr_ann"); len(got) != tc.carried {
				t.Fatalf("grants in ann's live session %v, want %d", got, tc.carried)
			}
			if first == nil || second == nil || first.Value == second.Value {
				t.Fatalf("cookies %v / %v: want two different values", first, second)
			}
			sids := env.audit.of("session.started")
			ended := env.audit.of("session.ended")
			// An outdated hash (bob's) is upgraded with the password just checked, and only then.
			if want := map[string]int{"bob@example.com": 1, "ann@example.com": 0}[tc.second]; len(env.rehash.calls) != want ||
				want == 1 && env.rehash.calls[0] != "usr_bob:right" {
				t.Fatalf("rehashes %v", env.rehash.calls)
			}
			if len(sids) != 2 || len(ended) != 1 || ended[0].Details["sid"] != sids[0].Details["sid"] ||
				ended[0].Details["reason"] != tc.reason || !env.store.ended[sids[0].Details["sid"]] {
				t.Fatalf("started %+v, ended %+v", sids, ended)
			}
			// The old cookie opens nothing any more.
			old := env.browser(t)
			u, _ := url.Parse(env.srv.URL)
			old.Jar.SetCookies(u, []*http.Cookie{{Name: first.Name, Value: first.Value}})
			env.do(t, old, http.MethodGet, "/login?request=req1", nil)
			if last := env.flow.last(); last.userID != "" {
				t.Fatalf("the ended session's cookie was accepted: %+v", last)
			}
		})
	}
}

// TestTemporaryPassword: a temporary password starts the session and shows
// the change-password step; changing it there starts a new session and
// proceeds with DonePasswordChanged.
func TestTemporaryPassword(t *testing.T) {
	env := newSigninEnv(t)
	hc := env.browser(t)
	a := env.signIn(t, hc, "tmp@example.com", "temp", false)
	if a.StatusCode != http.StatusOK || !strings.Contains(a.body, "Choose a new password") ||
		!strings.Contains(a.body, `name="step" value="change_password"`) || sessionCookie(a) == nil {
		t.Fatalf("status %d:\n%s", a.StatusCode, a.body)
	}
	if last := env.flow.last(); last.userID != "" || last.done != DoneNothing {
		t.Fatalf("the request proceeded before the password was changed: %+v", env.flow.calls)
	}
	form := url.Values{"csrf_token": {csrfIn(t, a)}, "request": {"req1"}, "step": {"change_password"},
		"current_password": {"wrong"}, "password": {"a new good password"}, "confirm_password": {"a new good password"}}
	if a := env.do(t, hc, http.MethodPost, "/login", form); a.StatusCode != http.StatusBadRequest ||
		!strings.Contains(a.body, "The temporary password is incorrect.") {
		t.Fatalf("wrong temporary password: %d", a.StatusCode)
	}
	form.Set("current_password", "temp")
	a = env.do(t, hc, http.MethodPost, "/login", form)
	if a.StatusCode != http.StatusOK || !strings.Contains(a.body, `value="allow"`) {
		t.Fatalf("after the change: %d\n%s", a.StatusCode, a.body)
	}
	if len(env.acc.changed) != 1 || env.acc.changed[0].ID != "usr_tmp" {
		t.Fatalf("ChangePassword calls %+v", env.acc.changed)
	}
	if last := env.flow.last(); last.done != DonePasswordChanged || last.userID != "usr_tmp" {
		t.Fatalf("Proceed %+v", last)
	}
	if n := len(env.audit.of("session.started")); n != 2 {
		t.Fatalf("sessions started %d, want 2 (the change ends the first)", n)
	}
}

// TestChangeStepOnlyWhenDue: a post of the change-password step that the
// flow does not find due (a user without a temporary password, a request
// asking for a fresh login first) gets the login form and changes nothing:
// no ChangePassword, no new session, no Proceed. A due one starts a session
// whose auth_time is the change's and whose amr is the session's only when
// its login happened during the request, else [pwd].
func TestChangeStepOnlyWhenDue(t *testing.T) {
	for _, tc := range []struct {
		name        string
		login, pw   string
		user        string
		notDue      bool
		olderLogin  bool
		wantChanged bool
		wantAMR     []string
	}{
		{name: "fail/no_temporary_password", login: "ann@example.com", pw: "right", user: "usr_ann"},
		{name: "fail/not_due", login: "tmp@example.com", pw: "temp", user: "usr_tmp", notDue: true},
		{name: "ok/login_during_the_request", login: "tmp@example.com", pw: "temp", user: "usr_tmp", wantChanged: true,
			wantAMR: []string{"pwd", "otp", "mfa"}},
		{name: "ok/older_login", login: "tmp@example.com", pw: "temp", user: "usr_tmp", olderLogin: true, wantChanged: true,
			wantAMR: []string{"pwd"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newSigninEnv(t)
			env.flow.notDue, env.flow.olderLogin = tc.notDue, tc.olderLogin
			hc := env.browser(t)
			page := env.signIn(t, hc, tc.login, tc.pw, false)
			// The session's login proved a second factor (the fake checker
			// proves the password only).
			env.store.mu.Lock()
			for h, s := range env.store.byHash {
				if s.UserID == tc.user {
					s.AMR = []string{"pwd", "otp", "mfa"}
					env.store.byHash[h] = s
				}
			}
			env.store.mu.Unlock()
			calls := len(env.flow.calls)
			before := time.Now()
			a := env.do(t, hc, http.MethodPost, "/login", url.Values{"csrf_token": {csrfIn(t, page)}, "request": {"req1"},
				"step": {"change_password"}, "current_password": {"temp"}, "password": {"a new good password"},
				"confirm_password": {"a new good password"}})
			if !tc.wantChanged {
				if a.StatusCode != http.StatusOK || !strings.Contains(a.body, `name="username"`) ||
					strings.Contains(a.body, `value="change_password"`) || sessionCookie(a) != nil {
					t.Fatalf("status %d (cookie %v), want the login form:\n%s", a.StatusCode, sessionCookie(a), a.body)
				}
				if len(env.acc.changed) != 0 || len(env.audit.of("session.started")) != 1 || len(env.flow.calls) != calls {
					t.Fatalf("changed %+v, sessions started %d, Proceed calls %+v", env.acc.changed,
						len(env.audit.of("session.started")), env.flow.calls[calls:])
				}
				return
			}
			if a.StatusCode != http.StatusOK || len(env.acc.changed) != 1 || sessionCookie(a) == nil {
				t.Fatalf("status %d, changed %+v", a.StatusCode, env.acc.changed)
			}
			live := env.store.sessionsOf(tc.user)
			if len(live) != 1 || !slices.Equal(live[0].AMR, tc.wantAMR) || live[0].AuthTime.Before(before) {
				t.Fatalf("the new session %+v, want amr %v and the change's auth_time (after %v)", live, tc.wantAMR, before)
			}
			if last := env.flow.last(); last.done != DonePasswordChanged || last.sid != live[0].ID {
				t.Fatalf("Proceed %+v", last)
			}
		})
	}
}

// TestConsent: allow and deny report DoneConsent and DoneDeny; the page
// lists the client, its logo and the scopes with two named buttons.
func TestConsent(t *testing.T) {
	for _, tc := range []struct {
		name, decision string
		want           Done
		location       string
	}{
		{"ok/allow", "allow", DoneConsent, "?code=c"},
		{"ok/deny", "deny", DoneDeny, "?error=access_denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newSigninEnv(t)
			hc := env.browser(t)
			page := env.signIn(t, hc, "ann@example.com", "right", false)
			for _, want := range []string{`<form method="post" action="/consent"`, `<img class="client-logo" src="` + testLogo + `"`,
				`name="decision" value="allow"`, `name="decision" value="deny"`, "Use the permission projects:read",
				"your email address and whether it is confirmed, and your roles", "Third App wants to access your account"} {
				if !strings.Contains(page.body, want) {
					t.Fatalf("the consent page lacks %s:\n%s", want, page.body)
				}
			}
			a := env.do(t, hc, http.MethodPost, "/consent", url.Values{"csrf_token": {csrfIn(t, page)}, "request": {"req1"},
				"decision": {tc.decision}})
			if a.StatusCode != http.StatusSeeOther || !strings.HasPrefix(a.Header.Get("Location"), testRedirect+tc.location) {
				t.Fatalf("%d %q", a.StatusCode, a.Header.Get("Location"))
			}
			if last := env.flow.last(); last.done != tc.want || last.userID != "usr_ann" {
				t.Fatalf("Proceed %+v", last)
			}
			// Without its CSRF field the decision is refused and not reported.
			calls := len(env.flow.calls)
			if a := env.do(t, hc, http.MethodPost, "/consent", url.Values{"request": {"req1"}, "decision": {"allow"}}); a.StatusCode != http.StatusForbidden || len(env.flow.calls) != calls {
				t.Fatalf("consent without CSRF: %d", a.StatusCode)
			}
		})
	}
}

// TestConsentList: every consent says what /userinfo shows any access
// token of the person (identifier, name, email, roles), whether or not
// the application asked for openid, profile or email; offline access and
// each permission get a line of their own.
func TestConsentList(t *testing.T) {
	for _, tc := range []struct {
		name   string
		scopes []string
		want   []string
	}{
		{"openid_alone", []string{"openid"}, []string{identityText}},
		{"no_oidc_scope", []string{"projects:read"}, []string{identityText, "Use the permission projects:read"}},
		{"nothing", nil, []string{identityText}},
		{"everything", []string{"openid", "profile", "email", "offline_access", "projects:read", "projects:write"},
			[]string{identityText, "Stay connected when you are not using it", "Use the permission projects:read", "Use the permission projects:write"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := consentList(tc.scopes); !slices.Equal(got, tc.want) {
				t.Fatalf("consentList(%q) = %q, want %q", tc.scopes, got, tc.want)
			}
		})
	}
	for _, shown := range []string{"identifier", "name", "email address", "roles"} {
		if !strings.Contains(identityText, shown) {
			t.Fatalf("the consent's first line does not say the application sees the %s: %q", shown, identityText)
		}
	}
}

// TestAuthorizeAnswers: the error page never redirects; a POSTed request
// continues at the same-site GET /login (where the Lax cookie is sent); an
// SSO session gets the code at once with 303; form_post is served with a
// CSP allowing only its script hash; a store that cannot answer fails
// closed (503, no login form).
func TestAuthorizeAnswers(t *testing.T) {
	t.Run("fail/error_page_never_redirects", func(t *testing.T) {
		env := newSigninEnv(t)
		a := env.do(t, env.browser(t), http.MethodGet, "/oauth2/authorize?client_id=unknown&redirect_uri=https://evil.example/", nil)
		if a.StatusCode != http.StatusBadRequest || a.Header.Get("Location") != "" || !strings.Contains(a.body, "The client is not known.") ||
			strings.Contains(a.body, "evil.example") {
			t.Fatalf("%d %q\n%s", a.StatusCode, a.Header.Get("Location"), a.body)
		}
		if csp := a.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "form-action 'self';") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Fatalf("CSP %q", csp)
		}
	})
	t.Run("ok/post_continues_at_login", func(t *testing.T) {
		env := newSigninEnv(t)
		a := env.do(t, env.browser(t), http.MethodPost, "/oauth2/authorize", url.Values{"client_id": {"third"}})
		if a.StatusCode != http.StatusSeeOther || a.Header.Get("Location") != "/login?request=req1" {
			t.Fatalf("%d %q", a.StatusCode, a.Header.Get("Location"))
		}
	})
	t.Run("ok/sso_code_at_once", func(t *testing.T) {
		env := newSigninEnv(t)
		hc := env.browser(t)
		env.flow.consented = true
		if a := env.signIn(t, hc, "ann@example.com", "right", false); a.StatusCode != http.StatusSeeOther {
			t.Fatalf("sign in: %d", a.StatusCode)
		}
		a := env.do(t, hc, http.MethodGet, "/oauth2/authorize?client_id=third", nil)
		if a.StatusCode != http.StatusSeeOther || a.Header.Get("Location") != testRedirect+"?code=c&iss=x" {
			t.Fatalf("%d %q", a.StatusCode, a.Header.Get("Location"))
		}
		if last := env.flow.last(); last.done != DoneNothing || last.userID != "usr_ann" {
			t.Fatalf("Proceed %+v", last)
		}
	})
	t.Run("ok/form_post", func(t *testing.T) {
		env := newSigninEnv(t)
		doc := `<!doctype html><form method="post" action="` + testRedirect + `"></form><script>document.forms[0].submit()</script>`
		const policy = "default-src 'none'; script-src 'sha256-abc='; form-action https://app.example.com; frame-ancestors 'none'; base-uri 'none'"
		env.flow.step = &Step{Kind: StepFormPost, Request: testPending, FormPost: []byte(doc), CSP: policy}
		a := env.do(t, env.browser(t), http.MethodGet, "/oauth2/authorize?client_id=third", nil)
		if csp := a.Header.Get("Content-Security-Policy"); a.StatusCode != http.StatusOK || a.body != doc || csp != policy {
			t.Fatalf("%d CSP %q\n%s", a.StatusCode, csp, a.body)
		}
		// A document without its policy runs nothing and posts nowhere.
		env.flow.step.CSP = ""
		a = env.do(t, env.browser(t), http.MethodGet, "/oauth2/authorize?client_id=third", nil)
		if csp := a.Header.Get("Content-Security-Policy"); csp != noScriptCSP {
			t.Fatalf("CSP %q", csp)
		}
	})
	t.Run("ok/expired_request_answers_its_step", func(t *testing.T) {
		env := newSigninEnv(t)
		hc := env.browser(t)
		tok := env.openLogin(t, hc)
		a := env.do(t, hc, http.MethodPost, "/login", url.Values{"csrf_token": {tok}, "request": {"gone"},
			"username": {"ann@example.com"}, "password": {"right"}})
		if a.StatusCode != http.StatusSeeOther || !strings.Contains(a.Header.Get("Location"), "error=access_denied&state=s") ||
			len(env.checker.attempts) != 0 {
			t.Fatalf("%d %q, %d attempts", a.StatusCode, a.Header.Get("Location"), len(env.checker.attempts))
		}
	})
	t.Run("fail/session_store_down", func(t *testing.T) {
		env := newSigninEnv(t)
		hc := env.browser(t)
		env.signIn(t, hc, "ann@example.com", "right", false)
		env.store.down = true
		a := env.do(t, hc, http.MethodGet, "/oauth2/authorize?client_id=third", nil)
		if a.StatusCode != http.StatusServiceUnavailable || strings.Contains(a.body, "<form") {
			t.Fatalf("%d\n%s", a.StatusCode, a.body)
		}
	})
	t.Run("fail/throttled_login", func(t *testing.T) {
		env := newSigninEnv(t)
		env.checker.refuse = apierr.ErrRateLimited.WithRetryAfter(7)
		a := env.signIn(t, env.browser(t), "ann@example.com", "right", false)
		if a.StatusCode != http.StatusTooManyRequests || a.Header.Get("Retry-After") != "7" || sessionCookie(a) != nil {
			t.Fatalf("%d %v", a.StatusCode, a.Header)
		}
	})
}

// TestSelectAccount: "Continue as X" reports DoneAccountChosen in the
// session; "Use another account" shows the login form.
func TestSelectAccount(t *testing.T) {
	env := newSigninEnv(t)
	hc := env.browser(t)
	env.signIn(t, hc, "ann@example.com", "right", false)
	env.flow.step = &Step{Kind: StepSelectAccount, Request: testPending}
	a := env.do(t, hc, http.MethodGet, "/oauth2/authorize?client_id=third&prompt=select_account", nil)
	if a.StatusCode != http.StatusOK || !strings.Contains(a.body, "Continue as ann@example.com") ||
		!strings.Contains(a.body, `id="switch" name="decision" value="switch"`) {
		t.Fatalf("%d\n%s", a.StatusCode, a.body)
	}
	tok := csrfIn(t, a)
	env.flow.step = nil
	env.flow.consented = true
	b := env.do(t, hc, http.MethodPost, "/login", url.Values{"csrf_token": {tok}, "request": {"req1"},
		"step": {"select_account"}, "decision": {"switch"}})
	if b.StatusCode != http.StatusOK || !strings.Contains(b.body, `name="password"`) {
		t.Fatalf("use another account: %d", b.StatusCode)
	}
	c := env.do(t, hc, http.MethodPost, "/login", url.Values{"csrf_token": {tok}, "request": {"req1"},
		"step": {"select_account"}, "decision": {"continue"}})
	if c.StatusCode != http.StatusSeeOther {
		t.Fatalf("continue: %d", c.StatusCode)
	}
	if last := env.flow.last(); last.done != DoneAccountChosen || last.userID != "usr_ann" {
		t.Fatalf("Proceed %+v", last)
	}
}

// TestFlowCSP pins the policy's sources for the redirect URI kinds.
func TestFlowCSP(t *testing.T) {
	for _, tc := range []struct{ name, redirect, logo, want string }{
		{"ok/https", "https://app.example.com/cb?x=1", "", "form-action 'self' https://app.example.com;"},
		{"ok/loopback_port", "http://127.0.0.1:51234/cb", "", "form-action 'self' http://127.0.0.1:51234;"},
		{"ok/private_scheme", "com.example.app:/cb", "", "form-action 'self' com.example.app:;"},
		{"ok/none", "", "", "form-action 'self';"},
		{"ok/http_logo_not_allowed", "", "http://cdn.example.com/l.png", "img-src 'self';"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := flowCSP(tc.redirect, tc.logo); !strings.Contains(got, tc.want) || !strings.Contains(got, "frame-ancestors 'none'") {
				t.Fatalf("%q lacks %q", got, tc.want)
			}
		})
	}
}

// sameSiteBrowser keeps cookies as a browser does for one site, with the
// part of SameSite that matters here: a top-level navigation from another
// site (the client's) carries Lax cookies but not Strict ones.
type sameSiteBrowser struct {
	env     *signinEnv
	cookies map[string]*http.Cookie
}

func (b *sameSiteBrowser) send(t *testing.T, method, path string, form url.Values, crossSite bool) answer {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.env.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for _, c := range b.cookies {
		if crossSite && c.SameSite == http.SameSiteStrictMode {
			continue
		}
		req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	for _, c := range resp.Cookies() {
		if c.MaxAge < 0 {
			delete(b.cookies, c.Name)
		} else {
			b.cookies[c.Name] = c
		}
	}
	raw, _ := io.ReadAll(resp.Body)
	return answer{resp, string(raw)}
}

// TestTwoTabsFromTheClientSite: a person opens the sign-in twice from the
// client's site (two tabs, each a cross-site navigation) and submits the
// first tab's form: it is accepted. With a SameSite=Strict CSRF cookie the
// second navigation, which does not carry it, minted a new token over it
// and the first form was refused as expired.
func TestTwoTabsFromTheClientSite(t *testing.T) {
	env := newSigninEnv(t)
	b := &sameSiteBrowser{env: env, cookies: map[string]*http.Cookie{}}
	tabA := b.send(t, http.MethodGet, "/oauth2/authorize?client_id=third", nil, true)
	tabB := b.send(t, http.MethodGet, "/oauth2/authorize?client_id=third", nil, true)
	if tabA.StatusCode != http.StatusOK || tabB.StatusCode != http.StatusOK {
		t.Fatalf("tabs: %d %d", tabA.StatusCode, tabB.StatusCode)
	}
	for _, tab := range []answer{tabA, tabB} {
		a := b.send(t, http.MethodPost, "/login", url.Values{"csrf_token": {csrfIn(t, tab)}, "request": {"req1"},
			"username": {"ann@example.com"}, "password": {"right"}}, false)
		if a.StatusCode == http.StatusForbidden {
			t.Fatalf("a tab's login form was refused as expired (%d)", a.StatusCode)
		}
	}
	if n := len(env.checker.attempts); n != 2 {
		t.Fatalf("%d logins checked, want both tabs'", n)
	}
}

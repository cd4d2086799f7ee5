package pages

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/authorize"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// AuthorizeFlow with an injected clock and in-memory stores: what the pages'
// continuation does with time (expired and completed requests, prompt=login
// and max_age against the session's auth_time) and with the person's
// answers (deny, consent remembered all or nothing). The HTTP tests in
// package server run the same flow on the real backends.

const flowIssuer = "https://id.example.com"

// onceMem is an in-memory store.SingleUse (one mutex: TakeOnce is atomic).
type onceMem struct {
	mu   sync.Mutex
	recs map[string]*onceRecord
}

type onceRecord struct {
	kind  string
	val   []byte
	exp   time.Time
	taken bool
}

func (o *onceMem) PutOnce(_ context.Context, kind string, key, val []byte, exp time.Time) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	k := kind + "/" + string(key)
	if _, ok := o.recs[k]; ok {
		return store.ErrAlreadyExists
	}
	o.recs[k] = &onceRecord{kind: kind, val: append([]byte(nil), val...), exp: exp}
	return nil
}

func (o *onceMem) get(kind string, key []byte, now time.Time, take bool) ([]byte, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	r, ok := o.recs[kind+"/"+string(key)]
	if !ok || !now.Before(r.exp) {
		return nil, store.ErrNotFound
	}
	if r.taken {
		return r.val, store.ErrTokenUsed
	}
	r.taken = r.taken || take
	return r.val, nil
}

func (o *onceMem) TakeOnce(_ context.Context, kind string, key []byte, now time.Time) ([]byte, error) {
	return o.get(kind, key, now, true)
}

func (o *onceMem) PeekOnce(_ context.Context, kind string, key []byte, now time.Time) ([]byte, error) {
	return o.get(kind, key, now, false)
}

// codes returns the authorization code records stored.
func (o *onceMem) codes(t *testing.T) []token.AuthCode {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []token.AuthCode
	for _, r := range o.recs {
		if r.kind != store.OnceAuthCode {
			continue
		}
		c, err := token.ParseAuthCode(r.val)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

type clientMap map[string]store.Client

func (m clientMap) GetClient(_ context.Context, id string) (store.Client, error) {
	if c, ok := m[id]; ok {
		return c, nil
	}
	return store.Client{}, store.ErrNotFound
}

type noHints struct{}

func (noHints) VerifyIDTokenHint(string) (string, error) { return "", errors.New("no hints here") }

type somePerms []string

func (p somePerms) AllPermissions() []string { return slices.Clone(p) }

type consentMem struct {
	mu sync.Mutex
	m  map[string]store.Consent
}

func (c *consentMem) GetConsent(_ context.Context, u, cl string) (store.Consent, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.m[u+"/"+cl]; ok {
		return v, nil
	}
	return store.Consent{}, store.ErrNotFound
}

func (c *consentMem) PutConsent(_ context.Context, v store.Consent) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[v.UserID+"/"+v.ClientID] = v
	return nil
}

// sessionGrants records the grants added to browser sessions, storing each
// code in codes as it comes; err fails every addition (the code is
// stored first, as a store may do), drop is what the next addition drops.
type sessionGrants struct {
	codes   *onceMem
	added   []string // "<session id>/<client id>"
	grants  []store.SessionGrant
	drop    []store.SessionGrant
	err     error
	codeErr error // the code is not stored, the grant is (as a pipeline may leave them)
}

func (s *sessionGrants) AddBrowserSessionGrantWithCode(ctx context.Context, _, id string, g store.SessionGrant, code store.OnceRecord) ([]store.SessionGrant, error) {
	if s.codeErr == nil {
		if err := s.codes.PutOnce(ctx, code.Kind, code.KeyHash, code.Value, code.ExpiresAt); err != nil {
			return nil, err
		}
	}
	if s.err != nil {
		return nil, s.err
	}
	s.added = append(s.added, id+"/"+g.ClientID)
	s.grants = append(s.grants, g)
	d := s.drop
	s.drop = nil
	return d, s.codeErr
}

// droppedGrants records the grants handed over as dropped from user's
// sessions (to signout.Ender.EndDropped); failing: it answers an error
// (having ended what it could, as EndDropped does).
type droppedGrants struct {
	user    string
	ended   []store.SessionGrant
	failing bool
}

func (d *droppedGrants) EndDropped(_ context.Context, userID string, dropped []store.SessionGrant) error {
	if len(dropped) == 0 {
		return nil
	}
	d.user = userID
	d.ended = append(d.ended, dropped...)
	if d.failing {
		return errors.New("connection refused")
	}
	return nil
}

// brokenUsers cannot answer.
type brokenUsers struct{}

func (brokenUsers) GetUserAt(context.Context, string, store.UserVersion) (store.User, error) {
	return store.User{}, errors.New("connection refused")
}

type flowEnv struct {
	f        *AuthorizeFlow
	now      time.Time
	once     *onceMem
	consents *consentMem
	audit    *auditLog
	sessions *sessionGrants
	dropped  *droppedGrants
}

func newFlowEnv() *flowEnv {
	once := &onceMem{recs: map[string]*onceRecord{}}
	env := &flowEnv{now: time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC), once: once,
		consents: &consentMem{m: map[string]store.Consent{}}, audit: &auditLog{}, sessions: &sessionGrants{codes: once},
		dropped: &droppedGrants{}}
	code := []string{"authorization_code"}
	env.f = &AuthorizeFlow{Issuer: flowIssuer,
		Clients: clientMap{
			"third": {ID: "third", Name: "Third App", Grants: code, RedirectURIs: []string{testRedirect}, RequirePKCE: true},
			"first": {ID: "first", Name: "First App", Grants: code, RedirectURIs: []string{testRedirect}, FirstParty: true},
		},
		Hints: noHints{}, Permissions: somePerms{"projects:read", "projects:write"}, Once: env.once,
		Sessions: env.sessions, Dropped: env.dropped, Users: &fakeUsers{}, Consents: env.consents, Audit: env.audit,
		CodeTTL: time.Minute, RequestTTL: 30 * time.Minute, Now: func() time.Time { return env.now }}
	return env
}

var flowChallenge = strings.Repeat("A", 43)

// authorize starts a request for client with extra parameters and returns its pending id.
func (env *flowEnv) authorize(t *testing.T, client string, extra ...string) string {
	t.Helper()
	q := url.Values{"client_id": {client}, "redirect_uri": {testRedirect}, "response_type": {"code"}, "scope": {"openid"},
		"state": {"st"}, "code_challenge": {flowChallenge}, "code_challenge_method": {"S256"}}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	id, stop, err := env.f.Authorize(context.Background(), httptest.NewRequest(http.MethodGet, "/oauth2/authorize?"+q.Encode(), nil), accounts.Meta{})
	if err != nil || stop != nil || id == "" {
		t.Fatalf("Authorize: %q, %+v, %v", id, stop, err)
	}
	return id
}

func (env *flowEnv) proceed(t *testing.T, id string, bs *store.BrowserSession, done Done) Step {
	t.Helper()
	s, err := env.f.Proceed(context.Background(), id, bs, done, accounts.Meta{IP: "192.0.2.1"})
	if err != nil {
		t.Fatalf("Proceed: %v", err)
	}
	return s
}

// clientAnswer is the query of a StepRedirect to the redirect URI (with iss).
func clientAnswer(t *testing.T, s Step) url.Values {
	t.Helper()
	if s.Kind != StepRedirect || !strings.HasPrefix(s.Location, testRedirect+"?") {
		t.Fatalf("step %+v, want a redirect to the client", s)
	}
	u, err := url.Parse(s.Location)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if q.Get("iss") != flowIssuer || q.Get("state") != "st" {
		t.Fatalf("answer %v without iss or state", q)
	}
	return q
}

func session(user string, authTime time.Time) *store.BrowserSession {
	return &store.BrowserSession{ID: "bs-" + user, UserID: user, AuthTime: authTime, AMR: []string{"pwd"}}
}

// TestAuthorizeFlowTime: the pending request's lifetime, the completed
// request, and re-authentication against the session's auth_time.
func TestAuthorizeFlowTime(t *testing.T) {
	t.Run("fail/expired_request_is_access_denied_with_state", func(t *testing.T) {
		env := newFlowEnv()
		id := env.authorize(t, "first")
		env.now = env.now.Add(30*time.Minute + time.Second)
		q := clientAnswer(t, env.proceed(t, id, session("usr_ann", env.now), DoneLogin))
		if q.Get("error") != "access_denied" || q.Get("code") != "" {
			t.Fatalf("expired: %v", q)
		}
		if _, stop, err := env.f.Lookup(context.Background(), id); err != nil || stop == nil || stop.Kind != StepRedirect {
			t.Fatalf("Lookup of an expired request: %+v, %v", stop, err)
		}
	})
	t.Run("pushed_request_lives_60s_from_the_push", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			after time.Duration
			ok    bool
		}{{"ok/59s", 59 * time.Second, true}, {"fail/60s", authorize.PushedRequestTTL, false}} {
			t.Run(tc.name, func(t *testing.T) {
				env := newFlowEnv()
				third, _ := env.f.Clients.GetClient(context.Background(), "third")
				p, err := env.f.Push(context.Background(), url.Values{"redirect_uri": {testRedirect}, "response_type": {"code"},
					"scope": {"openid"}, "state": {"st"}, "code_challenge": {flowChallenge}, "code_challenge_method": {"S256"}}, third, "192.0.2.1")
				if err != nil || p.ExpiresIn != 60 {
					t.Fatalf("Push: %+v, %v", p, err)
				}
				env.now = env.now.Add(tc.after)
				q := url.Values{"client_id": {"third"}, "request_uri": {p.RequestURI}}
				id, stop, err := env.f.Authorize(context.Background(), httptest.NewRequest(http.MethodGet, "/oauth2/authorize?"+q.Encode(), nil), accounts.Meta{})
				switch {
				case err != nil:
					t.Fatalf("Authorize: %v", err)
				case tc.ok && (stop != nil || id == ""):
					t.Fatalf("a pushed request within its lifetime: %+v", stop)
				case !tc.ok && (stop == nil || stop.Kind != StepError || stop.Status != http.StatusBadRequest || stop.Location != ""):
					t.Fatalf("an expired pushed request: %+v, want the error page (400), never a redirect", stop)
				}
				if tc.ok {
					if s := env.proceed(t, id, nil, DoneNothing); s.Kind != StepLogin {
						t.Fatalf("the pushed request goes on to the login page: %+v", s)
					}
				}
			})
		}
	})
	t.Run("fail/long_gone_request_is_the_error_page", func(t *testing.T) {
		env := newFlowEnv()
		id := env.authorize(t, "first")
		env.now = env.now.Add(30*time.Minute + authorize.TombstoneTTL + time.Second)
		if s := env.proceed(t, id, nil, DoneNothing); s.Kind != StepError || s.Status != http.StatusBadRequest || s.Location != "" {
			t.Fatalf("step %+v", s)
		}
	})
	t.Run("fail/completed_request_never_answers_twice", func(t *testing.T) {
		env := newFlowEnv()
		id := env.authorize(t, "first")
		bs := session("usr_ann", env.now)
		if q := clientAnswer(t, env.proceed(t, id, bs, DoneLogin)); q.Get("code") == "" {
			t.Fatalf("first: %v", q)
		}
		for _, done := range []Done{DoneNothing, DoneLogin, DoneConsent} {
			if s := env.proceed(t, id, bs, done); s.Kind != StepError || s.Status != http.StatusOK || s.Location != "" {
				t.Fatalf("again (%d): %+v, want the 'you are signed in' page", done, s)
			}
		}
		if n := len(env.once.codes(t)); n != 1 {
			t.Fatalf("%d codes issued, want 1", n)
		}
	})
	t.Run("ok/prompt_login_until_a_fresh_login", func(t *testing.T) {
		env := newFlowEnv()
		old := session("usr_ann", env.now)
		env.now = env.now.Add(10 * time.Second)
		id := env.authorize(t, "first", "prompt", "login")
		if s := env.proceed(t, id, old, DoneNothing); s.Kind != StepLogin || s.Request.ID != id || s.Request.Client.Name != "First App" {
			t.Fatalf("prompt=login with an older session: %+v", s)
		}
		env.now = env.now.Add(2 * time.Second)
		fresh := session("usr_ann", env.now)
		if q := clientAnswer(t, env.proceed(t, id, fresh, DoneLogin)); q.Get("code") == "" {
			t.Fatalf("after a fresh login: %v", q)
		}
		codes := env.once.codes(t)
		if len(codes) != 1 || !codes[0].AuthTime.Equal(fresh.AuthTime) || codes[0].BrowserSessionID != fresh.ID ||
			!slices.Equal(codes[0].AMR, []string{"pwd"}) || codes[0].UserID != "usr_ann" {
			t.Fatalf("code records %+v", codes)
		}
		if !slices.Equal(env.sessions.added, []string{"bs-usr_ann/first"}) {
			t.Fatalf("session grants %v", env.sessions.added)
		}
	})
	t.Run("ok/max_age", func(t *testing.T) {
		env := newFlowEnv()
		bs := session("usr_ann", env.now)
		env.now = env.now.Add(10 * time.Second)
		if s := env.proceed(t, env.authorize(t, "first", "max_age", "5"), bs, DoneNothing); s.Kind != StepLogin {
			t.Fatalf("max_age exceeded: %+v", s)
		}
		if q := clientAnswer(t, env.proceed(t, env.authorize(t, "first", "max_age", "60"), bs, DoneNothing)); q.Get("code") == "" {
			t.Fatalf("max_age not exceeded: %v", q)
		}
	})
}

// TestAuthorizeFlowAnswers: deny, consent remembered all or nothing (and
// never for a first-party client), prompt=none, the account chooser, a
// user who must change the password, and failures.
func TestAuthorizeFlowAnswers(t *testing.T) {
	ctx := context.Background()
	t.Run("ok/deny", func(t *testing.T) {
		env := newFlowEnv()
		id := env.authorize(t, "third")
		if q := clientAnswer(t, env.proceed(t, id, session("usr_ann", env.now), DoneDeny)); q.Get("error") != "access_denied" {
			t.Fatalf("deny: %v", q)
		}
		if len(env.consents.m) != 0 || len(env.once.codes(t)) != 0 {
			t.Fatal("a denial remembered a consent or issued a code")
		}
	})
	t.Run("ok/consent_remembered_all_or_nothing", func(t *testing.T) {
		env := newFlowEnv()
		bs := session("usr_ann", env.now)
		env.consents.m["usr_ann/third"] = store.Consent{UserID: "usr_ann", ClientID: "third", Scopes: []string{"projects:write"}}
		id := env.authorize(t, "third", "scope", "openid projects:read")
		if s := env.proceed(t, id, bs, DoneNothing); s.Kind != StepConsent || !slices.Equal(s.Request.Scopes, []string{"openid", "projects:read"}) {
			t.Fatalf("not covered: %+v", s)
		}
		if q := clientAnswer(t, env.proceed(t, id, bs, DoneConsent)); q.Get("code") == "" {
			t.Fatalf("after consent: %v", q)
		}
		c := env.consents.m["usr_ann/third"]
		if !slices.Equal(c.Scopes, []string{"openid", "projects:read", "projects:write"}) || !c.GrantedAt.Equal(env.now) {
			t.Fatalf("remembered %+v", c)
		}
		if ev := env.audit.of("consent.granted"); len(ev) != 1 || ev[0].ClientID != "third" || ev[0].Details["scopes"] != "openid projects:read" {
			t.Fatalf("audit %+v", ev)
		}
		// The next request for those scopes needs no page.
		if q := clientAnswer(t, env.proceed(t, env.authorize(t, "third", "scope", "projects:read"), bs, DoneNothing)); q.Get("code") == "" {
			t.Fatalf("remembered consent not used: %v", q)
		}
	})
	t.Run("ok/first_party_never_remembers", func(t *testing.T) {
		env := newFlowEnv()
		if q := clientAnswer(t, env.proceed(t, env.authorize(t, "first"), session("usr_ann", env.now), DoneConsent)); q.Get("code") == "" {
			t.Fatalf("first party: %v", q)
		}
		if len(env.consents.m) != 0 {
			t.Fatal("a consent was remembered for a first-party client")
		}
	})
	t.Run("fail/prompt_none_is_answered_once", func(t *testing.T) {
		env := newFlowEnv()
		id := env.authorize(t, "first", "prompt", "none")
		if q := clientAnswer(t, env.proceed(t, id, nil, DoneNothing)); q.Get("error") != "login_required" {
			t.Fatalf("prompt=none: %v", q)
		}
		if s := env.proceed(t, id, session("usr_ann", env.now), DoneLogin); s.Kind != StepError {
			t.Fatalf("a prompt=none request went on after its answer: %+v", s)
		}
	})
	t.Run("ok/select_account_then_consent_then_code", func(t *testing.T) {
		env := newFlowEnv()
		bs := session("usr_ann", env.now)
		env.now = env.now.Add(time.Minute)
		id := env.authorize(t, "third", "prompt", "select_account")
		if s := env.proceed(t, id, bs, DoneNothing); s.Kind != StepSelectAccount {
			t.Fatalf("%+v", s)
		}
		if s := env.proceed(t, id, bs, DoneAccountChosen); s.Kind != StepConsent {
			t.Fatalf("after choosing: %+v", s)
		}
		if q := clientAnswer(t, env.proceed(t, id, bs, DoneConsent)); q.Get("code") == "" {
			t.Fatalf("after consent: %v", q)
		}
	})
	t.Run("ok/must_change_password", func(t *testing.T) {
		env := newFlowEnv()
		if s := env.proceed(t, env.authorize(t, "first"), session("usr_tmp", env.now), DoneLogin); s.Kind != StepChangePassword {
			t.Fatalf("%+v", s)
		}
	})
	t.Run("fail/deleted_user_signs_in_again", func(t *testing.T) {
		env := newFlowEnv()
		if s := env.proceed(t, env.authorize(t, "first"), session("usr_gone", env.now), DoneNothing); s.Kind != StepLogin {
			t.Fatalf("%+v", s)
		}
	})
	t.Run("fail/user_store_down_fails_closed", func(t *testing.T) {
		env := newFlowEnv()
		id := env.authorize(t, "first")
		env.f.Users = brokenUsers{}
		if _, err := env.f.Proceed(ctx, id, session("usr_ann", env.now), DoneNothing, accounts.Meta{}); err == nil {
			t.Fatal("a user store failure answered a step")
		}
	})
	t.Run("fail/authorize_stops", func(t *testing.T) {
		env := newFlowEnv()
		for _, tc := range []struct {
			name, target string
			kind         StepKind
		}{
			{"malformed_query", "/oauth2/authorize?client_id=%zz", StepError},
			{"unknown_client", "/oauth2/authorize?client_id=nobody", StepError},
			{"unregistered_redirect", "/oauth2/authorize?client_id=third&redirect_uri=https%3A%2F%2Fevil.example%2F", StepError},
			{"no_response_type", "/oauth2/authorize?client_id=third&redirect_uri=" + url.QueryEscape(testRedirect) + "&state=st", StepRedirect},
		} {
			id, stop, err := env.f.Authorize(ctx, httptest.NewRequest(http.MethodGet, tc.target, nil), accounts.Meta{})
			if err != nil || id != "" || stop == nil || stop.Kind != tc.kind {
				t.Fatalf("%s: %q %+v %v", tc.name, id, stop, err)
			}
			if tc.kind == StepError && (stop.Location != "" || stop.Status != http.StatusBadRequest) {
				t.Fatalf("%s: %+v", tc.name, stop)
			}
		}
		form := url.Values{"client_id": {"first"}, "redirect_uri": {testRedirect}, "response_type": {"code"},
			"code_challenge": {flowChallenge}, "code_challenge_method": {"S256"}}
		r := httptest.NewRequest(http.MethodPost, "/oauth2/authorize", strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if id, stop, err := env.f.Authorize(ctx, r, accounts.Meta{}); err != nil || stop != nil || id == "" {
			t.Fatalf("POST: %q %+v %v", id, stop, err)
		}
	})
}

// TestAuthorizeFlowGrants: every code's grant is recorded in its browser
// session (its sid, client, offline_access, time), the grants the session
// drops are handed to signout to be ended, and a grant that cannot be recorded or a dropped grant
// that cannot be ended answers no code (fail closed).
func TestAuthorizeFlowGrants(t *testing.T) {
	ctx := context.Background()
	t.Run("ok/every_code_records_its_grant", func(t *testing.T) {
		env := newFlowEnv()
		bs := session("usr_ann", env.now)
		bs.ClientIDs = []string{"first"} // recorded before: a new code's grant is recorded all the same
		for _, scope := range []string{"openid", "openid offline_access"} {
			if q := clientAnswer(t, env.proceed(t, env.authorize(t, "first", "scope", scope), bs, DoneNothing)); q.Get("code") == "" {
				t.Fatalf("%s: %v", scope, q)
			}
			env.now = env.now.Add(time.Second)
		}
		codes := env.once.codes(t)
		slices.SortFunc(codes, func(a, b token.AuthCode) int { return a.IssuedAt.Compare(b.IssuedAt) })
		if len(codes) != 2 || len(env.sessions.grants) != 2 {
			t.Fatalf("%d codes, %d grants recorded, want 2 and 2", len(codes), len(env.sessions.grants))
		}
		for i, g := range env.sessions.grants {
			want := store.SessionGrant{SID: codes[i].SID, ClientID: "first", Offline: i == 1, GrantedAt: codes[i].IssuedAt}
			if g != want || codes[i].SID == "" || codes[i].Offline != want.Offline {
				t.Fatalf("grant %d = %+v, want %+v (code %+v)", i, g, want, codes[i])
			}
		}
		if !slices.Equal(env.sessions.added, []string{"bs-usr_ann/first", "bs-usr_ann/first"}) {
			t.Fatalf("grants recorded in %v", env.sessions.added)
		}
		if len(env.dropped.ended) != 0 {
			t.Fatalf("ended %v as dropped, want none", env.dropped.ended)
		}
	})
	// The session's user and every dropped grant, offline_access or not,
	// go to signout (which ends them as ending the session would).
	t.Run("ok/dropped_grants_are_handed_to_signout", func(t *testing.T) {
		env := newFlowEnv()
		drop := []store.SessionGrant{{SID: "sid-old-1", ClientID: "first"}, {SID: "sid-old-2", ClientID: "third", Offline: true},
			{SID: "sid-old-3", ClientID: "third"}}
		env.sessions.drop = drop
		if q := clientAnswer(t, env.proceed(t, env.authorize(t, "first"), session("usr_ann", env.now), DoneNothing)); q.Get("code") == "" {
			t.Fatalf("%v", q)
		}
		if env.dropped.user != "usr_ann" || !slices.Equal(env.dropped.ended, drop) {
			t.Fatalf("ended %v of %q as dropped, want every dropped grant of usr_ann", env.dropped.ended, env.dropped.user)
		}
	})
	for _, tc := range []struct {
		name   string
		breaks func(env *flowEnv)
	}{
		{"fail/grant_not_recorded_answers_no_code", func(env *flowEnv) { env.sessions.err = errors.New("connection refused") }},
		{"fail/ended_session_answers_no_code", func(env *flowEnv) { env.sessions.err = store.ErrNotFound }},
		{"fail/dropped_grant_not_ended_answers_no_code", func(env *flowEnv) {
			env.sessions.drop = []store.SessionGrant{{SID: "sid-a"}, {SID: "sid-b"}}
			env.dropped.failing = true
		}},
		// The code's write failed but the grant landed and made room: the
		// grants it dropped are still ended.
		{"fail/code_not_stored_answers_no_code_and_ends_dropped_grants", func(env *flowEnv) {
			env.sessions.codeErr = errors.New("connection refused")
			env.sessions.drop = []store.SessionGrant{{SID: "sid-a"}, {SID: "sid-b"}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newFlowEnv()
			id := env.authorize(t, "first")
			tc.breaks(env)
			drop := env.sessions.drop
			s, err := env.f.Proceed(ctx, id, session("usr_ann", env.now), DoneNothing, accounts.Meta{})
			var ae *apierr.Error
			if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable || ae.Code != "temporarily_unavailable" {
				t.Fatalf("Proceed = %+v, %v; want 503 temporarily_unavailable", s, err)
			}
			if !slices.Equal(env.dropped.ended, drop) {
				t.Fatalf("ended %v as dropped, want %v: a failure must not keep the dropped grants alive", env.dropped.ended, drop)
			}
		})
	}
}

// pending counts the pending requests stored.
func (o *onceMem) pending() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, r := range o.recs {
		if r.kind == store.OnceAuthRequest {
			n++
		}
	}
	return n
}

// TestAuthorizeNow: a request the browser session answers at once (single
// sign-on, prompt=none without a session, a refusal) stores no pending
// request; one that needs a page stores exactly one (the request and its
// tombstone) and the page carries its id, which then proceeds as usual.
func TestAuthorizeNow(t *testing.T) {
	start := func(env *flowEnv, bs *store.BrowserSession, client string, extra ...string) Step {
		t.Helper()
		q := url.Values{"client_id": {client}, "redirect_uri": {testRedirect}, "response_type": {"code"}, "scope": {"openid"},
			"state": {"st"}, "code_challenge": {flowChallenge}, "code_challenge_method": {"S256"}}
		for i := 0; i+1 < len(extra); i += 2 {
			q.Set(extra[i], extra[i+1])
		}
		s, err := env.f.AuthorizeNow(context.Background(), httptest.NewRequest(http.MethodGet, "/oauth2/authorize?"+q.Encode(), nil),
			bs, accounts.Meta{})
		if err != nil {
			t.Fatalf("AuthorizeNow: %v", err)
		}
		return s
	}
	for _, tc := range []struct {
		name      string
		client    string
		signedIn  bool
		extra     []string
		kind      StepKind
		code      bool
		errorCode string
		pending   int
	}{
		{name: "ok/sso_first_party_code_nothing_stored", client: "first", signedIn: true, kind: StepRedirect, code: true},
		{name: "ok/prompt_none_without_session_nothing_stored", client: "first", extra: []string{"prompt", "none"},
			kind: StepRedirect, errorCode: "login_required"},
		{name: "ok/bad_scope_nothing_stored", client: "first", signedIn: true, extra: []string{"scope", "openid nope"},
			kind: StepRedirect, errorCode: "invalid_scope"},
		{name: "ok/login_page_stores_the_request", client: "first", kind: StepLogin, pending: 2},
		{name: "ok/consent_page_stores_the_request", client: "third", signedIn: true, kind: StepConsent, pending: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newFlowEnv()
			var bs *store.BrowserSession
			if tc.signedIn {
				bs = session("usr_ann", env.now.Add(-time.Minute))
			}
			s := start(env, bs, tc.client, tc.extra...)
			if s.Kind != tc.kind {
				t.Fatalf("step %+v, want kind %d", s, tc.kind)
			}
			if tc.kind == StepRedirect {
				q := clientAnswer(t, s)
				if (q.Get("code") != "") != tc.code || q.Get("error") != tc.errorCode {
					t.Fatalf("answer %v", q)
				}
			}
			if n := env.once.pending(); n != tc.pending {
				t.Fatalf("%d pending records stored, want %d", n, tc.pending)
			}
			if tc.pending > 0 {
				if s.Request.ID == "" {
					t.Fatal("the page carries no pending id")
				}
				if q := clientAnswer(t, env.proceed(t, s.Request.ID, session("usr_ann", env.now), DoneConsent)); q.Get("code") == "" {
					t.Fatalf("the stored request did not proceed: %v", q)
				}
			}
		})
	}
}

// TestAuthorizeFlowPasswordChange: the change-password step is due only
// where Decide shows it (a session of a user who must change the password,
// recent enough for prompt=login and max_age; the step answers
// prompt=select_account), and SignedInDuring tells the login made during
// the request from an older session's. It decides nothing: no code, and
// the request still proceeds.
func TestAuthorizeFlowPasswordChange(t *testing.T) {
	for _, tc := range []struct {
		name   string
		user   string        // "" without a session
		before time.Duration // how long before the request the session's login was
		extra  []string
		due    bool
		during bool
	}{
		{name: "ok/login_during_the_request", user: "usr_tmp", due: true, during: true},
		{name: "ok/older_session", user: "usr_tmp", before: 10 * time.Second, due: true},
		{name: "ok/older_session_max_age_not_exceeded", user: "usr_tmp", before: 10 * time.Second, extra: []string{"max_age", "60"}, due: true},
		{name: "ok/older_session_select_account", user: "usr_tmp", before: 10 * time.Second, extra: []string{"prompt", "select_account"}, due: true},
		{name: "ok/login_during_a_prompt_login_request", user: "usr_tmp", extra: []string{"prompt", "login"}, due: true, during: true},
		{name: "fail/no_session"},
		{name: "fail/no_temporary_password", user: "usr_ann", during: true},
		{name: "fail/no_temporary_password_prompt_login", user: "usr_ann", before: 10 * time.Second, extra: []string{"prompt", "login"}},
		{name: "fail/older_session_prompt_login", user: "usr_tmp", before: 10 * time.Second, extra: []string{"prompt", "login"}},
		{name: "fail/older_session_max_age_exceeded", user: "usr_tmp", before: 10 * time.Second, extra: []string{"max_age", "5"}},
		{name: "fail/unknown_user", user: "usr_gone", during: true},
		{name: "fail/prompt_none", user: "usr_tmp", before: 10 * time.Second, extra: []string{"prompt", "none"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newFlowEnv()
			login := env.now
			env.now = env.now.Add(tc.before)
			id := env.authorize(t, "first", tc.extra...)
			env.now = env.now.Add(2 * time.Second)
			var bs *store.BrowserSession
			if tc.user != "" {
				if tc.before == 0 {
					login = env.now
				}
				bs = session(tc.user, login)
			}
			pc, stop, err := env.f.PasswordChange(context.Background(), id, bs)
			if err != nil || stop != nil {
				t.Fatalf("PasswordChange: %+v, %v", stop, err)
			}
			if pc.Due != tc.due || pc.SignedInDuring != tc.during || pc.Request.ID != id || pc.Request.Client.Name != "First App" {
				t.Fatalf("PasswordChange %+v, want due %v, signed in during %v", pc, tc.due, tc.during)
			}
			if n := len(env.once.codes(t)); n != 0 {
				t.Fatalf("%d codes issued", n)
			}
			if _, stop, err := env.f.Lookup(context.Background(), id); err != nil || stop != nil {
				t.Fatalf("the request no longer pending: %+v, %v", stop, err)
			}
		})
	}
	t.Run("fail/expired_request_answers_its_step", func(t *testing.T) {
		env := newFlowEnv()
		id := env.authorize(t, "first")
		env.now = env.now.Add(30*time.Minute + time.Second)
		if _, stop, err := env.f.PasswordChange(context.Background(), id, session("usr_tmp", env.now)); err != nil ||
			stop == nil || stop.Kind != StepRedirect {
			t.Fatalf("an expired request: %+v, %v", stop, err)
		}
	})
}

// brokenClients cannot answer.
type brokenClients struct{}

func (brokenClients) GetClient(context.Context, string) (store.Client, error) {
	return store.Client{}, errors.New("connection refused")
}

// TestAuthorizeFlowClientChanged: a request that waited for the person is
// answered at its redirect URI only while the client, read again when the
// answer is sent, exists, has the authorization_code grant and registers
// the URI (loopback IP literals on any port). Otherwise every answer (the
// code after a login or consent, deny, prompt=none's error, access_denied
// for an expired request, in query or form_post mode) is the error page
// (400): no redirect, no code, no grant in the browser session, no consent
// remembered, and the request is not used up: answering it again answers nothing either.
func TestAuthorizeFlowClientChanged(t *testing.T) {
	const loopback, loopbackSent = "http://127.0.0.1/cb", "http://127.0.0.1:5555/cb"
	deleted := func(id string) func(clientMap) { return func(m clientMap) { delete(m, id) } }
	uris := func(id string, u ...string) func(clientMap) {
		return func(m clientMap) { c := m[id]; c.RedirectURIs = u; m[id] = c }
	}
	signIn := func(t *testing.T, env *flowEnv, id string) Step {
		return env.proceed(t, id, session("usr_ann", env.now), DoneLogin)
	}
	decide := func(done Done) func(*testing.T, *flowEnv, string) Step {
		return func(t *testing.T, env *flowEnv, id string) Step {
			return env.proceed(t, id, session("usr_ann", env.now), done)
		}
	}
	for _, tc := range []struct {
		name   string
		client string
		extra  []string
		before func(clientMap) // the client when the request arrives (nil: as newFlowEnv has it)
		change func(clientMap) // the change while the person signs in (nil: none)
		act    func(*testing.T, *flowEnv, string) Step
		code   bool   // a code at redirect (else the error page)
		target string // where the code goes ("": testRedirect)
		again  Done   // what the person does next, after the error page
	}{
		{name: "ok/unchanged", client: "first", act: signIn, code: true},
		{name: "ok/uri_still_registered_among_others", client: "first", change: uris("first", "https://other.example/cb", testRedirect),
			act: signIn, code: true},
		{name: "ok/loopback_port_still_registered", client: "first", extra: []string{"redirect_uri", loopbackSent},
			before: uris("first", loopback), change: uris("first", "https://other.example/cb", loopback), act: signIn, code: true,
			target: loopbackSent},
		{name: "fail/client_deleted_sign_in", client: "first", change: deleted("first"), act: signIn, again: DoneLogin},
		{name: "fail/client_deleted_form_post", client: "first", extra: []string{"response_mode", "form_post"}, change: deleted("first"),
			act: signIn},
		{name: "fail/uri_removed", client: "first", change: uris("first", "https://other.example/cb"), act: signIn},
		{name: "fail/loopback_uri_removed", client: "first", extra: []string{"redirect_uri", loopbackSent}, before: uris("first", loopback),
			change: uris("first", "http://127.0.0.1/other"), act: signIn},
		{name: "fail/code_grant_removed", client: "first", change: func(m clientMap) {
			c := m["first"]
			c.Grants = []string{"refresh_token"}
			m["first"] = c
		}, act: signIn},
		{name: "fail/client_deleted_consent", client: "third", change: deleted("third"), act: decide(DoneConsent), again: DoneConsent},
		{name: "fail/client_deleted_deny", client: "third", change: deleted("third"), act: decide(DoneDeny), again: DoneDeny},
		{name: "fail/uri_removed_deny", client: "third", change: uris("third", "https://other.example/cb"), act: decide(DoneDeny), again: DoneDeny},
		{name: "fail/client_deleted_prompt_none", client: "first", extra: []string{"prompt", "none"}, change: deleted("first"),
			act: func(t *testing.T, env *flowEnv, id string) Step { return env.proceed(t, id, nil, DoneNothing) }},
		{name: "fail/client_deleted_expired", client: "first", change: deleted("first"),
			act: func(t *testing.T, env *flowEnv, id string) Step {
				env.now = env.now.Add(30*time.Minute + time.Second)
				if _, stop, err := env.f.Lookup(context.Background(), id); err != nil || stop == nil || stop.Kind != StepError {
					t.Fatalf("Lookup of the expired request: %+v, %v; want the error page", stop, err)
				}
				return env.proceed(t, id, nil, DoneNothing)
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newFlowEnv()
			clients := env.f.Clients.(clientMap)
			if tc.before != nil {
				tc.before(clients)
			}
			id := env.authorize(t, tc.client, tc.extra...)
			if tc.change != nil {
				tc.change(clients)
			}
			s := tc.act(t, env, id)
			if tc.code {
				target := tc.target
				if target == "" {
					target = testRedirect
				}
				if s.Kind != StepRedirect || !strings.HasPrefix(s.Location, target+"?") || !strings.Contains(s.Location, "code=") {
					t.Fatalf("step %+v, want a code at %s", s, target)
				}
				return
			}
			if s.Kind != StepError || s.Status != http.StatusBadRequest || s.Location != "" || s.FormPost != nil {
				t.Fatalf("step %+v, want the error page (400)", s)
			}
			if n := len(env.once.codes(t)); n != 0 || len(env.sessions.added) != 0 || len(env.consents.m) != 0 {
				t.Fatalf("%d codes issued, grants recorded %v, consents %v; want none", n, env.sessions.added, env.consents.m)
			}
			if again := env.proceed(t, id, session("usr_ann", env.now), tc.again); again.Kind == StepRedirect ||
				again.Kind == StepFormPost || again.Location != "" || len(env.once.codes(t)) != 0 {
				t.Fatalf("again: %+v, want no answer to the client", again)
			}
		})
	}
	t.Run("fail/client_store_down_answers_no_code", func(t *testing.T) {
		env := newFlowEnv()
		id := env.authorize(t, "first")
		env.f.Clients = brokenClients{}
		s := env.proceed(t, id, session("usr_ann", env.now), DoneLogin)
		if s.Kind != StepError || s.Status != http.StatusServiceUnavailable || s.Location != "" {
			t.Fatalf("step %+v, want the error page (503)", s)
		}
		if n := len(env.once.codes(t)); n != 0 || len(env.sessions.added) != 0 {
			t.Fatalf("%d codes issued, grants recorded %v; want none", n, env.sessions.added)
		}
	})
}

// countingClients counts the client reads made through it (what a read
// of the client cache, or of the store on a miss, costs).
type countingClients struct {
	clients authorize.Clients
	reads   atomic.Int64
}

func (c *countingClients) GetClient(ctx context.Context, id string) (store.Client, error) {
	c.reads.Add(1)
	return c.clients.GetClient(ctx, id)
}

// TestAuthorizeFlowFreshnessOfARequestAnsweredAtOnce: prompt=login and
// max_age=0 are never satisfied by a login made before the request
// arrived, even in the same second (OIDC Core 3.1.2.1): a request answered
// as it arrives (AuthorizeNow) had no login during it, so it shows the
// login page (prompt=none: login_required), where before the rounding to
// the second let the session through with a code (found by a review). A
// login on the page of the kept request, in that same second, satisfies it.
func TestAuthorizeFlowFreshnessOfARequestAnsweredAtOnce(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		extra []string
		none  bool
	}{
		{name: "prompt_login", extra: []string{"prompt", "login"}},
		{name: "max_age_0", extra: []string{"max_age", "0"}},
		{name: "max_age_0_prompt_none", extra: []string{"max_age", "0", "prompt", "none"}, none: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newFlowEnv()
			env.now = env.now.Add(300 * time.Millisecond)
			q := url.Values{"client_id": {"first"}, "redirect_uri": {testRedirect}, "response_type": {"code"}, "scope": {"openid"},
				"state": {"st"}, "code_challenge": {flowChallenge}, "code_challenge_method": {"S256"}}
			for i := 0; i+1 < len(tc.extra); i += 2 {
				q.Set(tc.extra[i], tc.extra[i+1])
			}
			// The session's login was 50 ms before the request, in its second.
			bs := session("usr_ann", env.now.Add(-50*time.Millisecond))
			s, err := env.f.AuthorizeNow(ctx, httptest.NewRequest(http.MethodGet, "/oauth2/authorize?"+q.Encode(), nil), bs, accounts.Meta{})
			if err != nil {
				t.Fatalf("AuthorizeNow: %v", err)
			}
			if tc.none {
				if a := clientAnswer(t, s); a.Get("error") != "login_required" || a.Get("code") != "" {
					t.Fatalf("answer %v, want login_required", a)
				}
				return
			}
			if s.Kind != StepLogin || s.Request.ID == "" {
				t.Fatalf("step %+v, want the login page", s)
			}
			// The login on that page, in the same second as the request.
			env.now = env.now.Add(100 * time.Millisecond)
			if a := clientAnswer(t, env.proceed(t, s.Request.ID, session("usr_ann", env.now.Truncate(time.Second)), DoneLogin)); a.Get("code") == "" {
				t.Fatalf("answer %v after the login on the page, want a code", a)
			}
		})
	}
}

// TestAuthorizeFlowFreshnessOfAKeptRequest: a request kept for a page
// (its login page reloaded, or a POSTed request resumed) is not met by the
// browser's session begun a moment before it, in its second, either: the
// login page again, never a code (found by a review of the fix above:
// being kept counted every login of the request's second as during it).
func TestAuthorizeFlowFreshnessOfAKeptRequest(t *testing.T) {
	ctx := context.Background()
	for _, extra := range [][]string{{"prompt", "login"}, {"max_age", "0"}} {
		t.Run(extra[0]+"/reload", func(t *testing.T) {
			env := newFlowEnv()
			env.now = env.now.Add(300 * time.Millisecond)
			q := url.Values{"client_id": {"first"}, "redirect_uri": {testRedirect}, "response_type": {"code"}, "scope": {"openid"},
				"state": {"st"}, "code_challenge": {flowChallenge}, "code_challenge_method": {"S256"}}
			q.Set(extra[0], extra[1])
			old := session("usr_ann", env.now.Add(-50*time.Millisecond))
			s, err := env.f.AuthorizeNow(ctx, httptest.NewRequest(http.MethodGet, "/oauth2/authorize?"+q.Encode(), nil), old, accounts.Meta{})
			if err != nil || s.Kind != StepLogin {
				t.Fatalf("AuthorizeNow: %+v %v, want the login page", s, err)
			}
			env.now = env.now.Add(100 * time.Millisecond)
			if s2 := env.proceed(t, s.Request.ID, old, DoneNothing); s2.Kind != StepLogin {
				t.Fatalf("the login page reloaded with the session from before the request: %+v, want the login page", s2)
			}
		})
		t.Run(extra[0]+"/posted", func(t *testing.T) {
			env := newFlowEnv()
			env.now = env.now.Add(300 * time.Millisecond)
			old := session("usr_ann", env.now.Add(-50*time.Millisecond))
			id := env.authorize(t, "first", extra...)
			if s2 := env.proceed(t, id, old, DoneNothing); s2.Kind != StepLogin {
				t.Fatalf("a kept request resumed with the session from before it: %+v, want the login page", s2)
			}
		})
	}
}

// TestAuthorizeFlowPageStepReadsClientOnce: a page step of an
// authorization request (the login, consent, change-password and
// select-account pages) reads its client once in the request that shows
// it, and shows the name of the client that read found: the check that
// lets the page be shown is the read the page shows (the twenty-ninth
// session's note: view read it again for its name and logo). A page
// shown without a check (Lookup, PasswordChange without a session) reads
// it once too, for its name.
func TestAuthorizeFlowPageStepReadsClientOnce(t *testing.T) {
	ctx := context.Background()
	q := url.Values{"client_id": {"third"}, "redirect_uri": {testRedirect}, "response_type": {"code"}, "scope": {"openid"},
		"state": {"st"}, "code_challenge": {flowChallenge}, "code_challenge_method": {"S256"}}
	recent := func(env *flowEnv, user string) *store.BrowserSession { return session(user, env.now.Add(-time.Minute)) }
	for _, tc := range []struct {
		name   string
		client string
		page   func(*testing.T, *flowEnv, *countingClients, string) (Pending, StepKind)
		kind   StepKind
	}{
		{name: "consent_page_at_once", client: "Third App", kind: StepConsent,
			page: func(t *testing.T, env *flowEnv, cc *countingClients, _ string) (Pending, StepKind) {
				cc.reads.Store(0)
				s, err := env.f.AuthorizeNow(ctx, httptest.NewRequest(http.MethodGet, "/oauth2/authorize?"+q.Encode(), nil),
					recent(env, "usr_ann"), accounts.Meta{})
				if err != nil {
					t.Fatalf("AuthorizeNow: %v", err)
				}
				return s.Request, s.Kind
			}},
		{name: "login_page_of_a_kept_request", client: "Third App", kind: StepLogin,
			page: func(t *testing.T, env *flowEnv, _ *countingClients, id string) (Pending, StepKind) {
				s := env.proceed(t, id, nil, DoneNothing)
				return s.Request, s.Kind
			}},
		{name: "consent_page_after_the_login", client: "Third App", kind: StepConsent,
			page: func(t *testing.T, env *flowEnv, _ *countingClients, id string) (Pending, StepKind) {
				s := env.proceed(t, id, recent(env, "usr_ann"), DoneLogin)
				return s.Request, s.Kind
			}},
		{name: "change_password_page", client: "Third App", kind: StepChangePassword,
			page: func(t *testing.T, env *flowEnv, _ *countingClients, id string) (Pending, StepKind) {
				s := env.proceed(t, id, recent(env, "usr_tmp"), DoneLogin)
				return s.Request, s.Kind
			}},
		{name: "password_change_step_with_a_session", client: "Third App", kind: StepChangePassword,
			page: func(t *testing.T, env *flowEnv, _ *countingClients, id string) (Pending, StepKind) {
				pc, stop, err := env.f.PasswordChange(ctx, id, recent(env, "usr_tmp"))
				if err != nil || stop != nil || !pc.Due {
					t.Fatalf("PasswordChange: %+v, %+v, %v", pc, stop, err)
				}
				return pc.Request, StepChangePassword
			}},
		{name: "password_change_step_without_a_session", client: "Third App", kind: StepChangePassword,
			page: func(t *testing.T, env *flowEnv, _ *countingClients, id string) (Pending, StepKind) {
				pc, stop, err := env.f.PasswordChange(ctx, id, nil)
				if err != nil || stop != nil {
					t.Fatalf("PasswordChange: %+v, %v", stop, err)
				}
				return pc.Request, StepChangePassword
			}},
		{name: "lookup", client: "Third App", kind: StepLogin,
			page: func(t *testing.T, env *flowEnv, _ *countingClients, id string) (Pending, StepKind) {
				p, stop, err := env.f.Lookup(ctx, id)
				if err != nil || stop != nil {
					t.Fatalf("Lookup: %+v, %v", stop, err)
				}
				return p, StepLogin
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newFlowEnv()
			cc := &countingClients{clients: env.f.Clients}
			env.f.Clients = cc
			id := env.authorize(t, "third")
			cc.reads.Store(0)
			p, kind := tc.page(t, env, cc, id)
			if kind != tc.kind || p.Client.Name != tc.client || p.Client.ID != "third" || p.RedirectURI != testRedirect {
				t.Fatalf("page %v of %+v, want %v of %q", kind, p, tc.kind, tc.client)
			}
			if n := cc.reads.Load(); n != 1 {
				t.Errorf("%d client reads for one page, want 1", n)
			}
		})
	}
}

// TestAuthorizeFlowReadsClientOnce: an answer to an authorization request
// at its redirect URI (the code of a silent single sign-on, of a login or
// of a consent; deny; prompt=none's error) reads its client once in the
// request that sends it: the check that lets the answer be decided is the
// check that lets it be sent (found by a review: it was read twice, by
// refusedReq and again by toClient). A client deleted after the request
// was kept is still refused by that one read: the error page, no code.
func TestAuthorizeFlowReadsClientOnce(t *testing.T) {
	ctx := context.Background()
	signedIn := func(env *flowEnv) *store.BrowserSession { return session("usr_ann", env.now.Add(-time.Minute)) }
	// now answers a request at once (AuthorizeNow), with the reads of its
	// parsing counted: the request arrives and is answered in one request.
	now := func(client string, extra ...string) func(*testing.T, *flowEnv, *countingClients) Step {
		return func(t *testing.T, env *flowEnv, _ *countingClients) Step {
			q := url.Values{"client_id": {client}, "redirect_uri": {testRedirect}, "response_type": {"code"}, "scope": {"openid"},
				"state": {"st"}, "code_challenge": {flowChallenge}, "code_challenge_method": {"S256"}}
			for i := 0; i+1 < len(extra); i += 2 {
				q.Set(extra[i], extra[i+1])
			}
			s, err := env.f.AuthorizeNow(ctx, httptest.NewRequest(http.MethodGet, "/oauth2/authorize?"+q.Encode(), nil),
				signedIn(env), accounts.Meta{})
			if err != nil {
				t.Fatalf("AuthorizeNow: %v", err)
			}
			return s
		}
	}
	// later answers a request kept pending (Proceed) after what the person
	// did; only the reads of the answering request are counted.
	later := func(client string, bs func(*flowEnv) *store.BrowserSession, done Done, change func(clientMap)) func(*testing.T, *flowEnv, *countingClients) Step {
		return func(t *testing.T, env *flowEnv, cc *countingClients) Step {
			id := env.authorize(t, client)
			if change != nil {
				change(cc.clients.(clientMap))
			}
			cc.reads.Store(0)
			var s *store.BrowserSession
			if bs != nil {
				s = bs(env)
			}
			return env.proceed(t, id, s, done)
		}
	}
	deleted := func(m clientMap) { delete(m, "first") }
	for _, tc := range []struct {
		name   string
		answer func(*testing.T, *flowEnv, *countingClients) Step
		code   bool   // a code at the redirect URI
		error  string // else this error there ("": the error page, 400)
	}{
		{name: "ok/silent_sso_code", answer: now("first"), code: true},
		{name: "ok/login_code", answer: later("first", signedIn, DoneLogin, nil), code: true},
		{name: "ok/consent_approved_code", answer: later("third", signedIn, DoneConsent, nil), code: true},
		{name: "ok/silent_sso_of_a_kept_request_code", answer: later("first", signedIn, DoneNothing, nil), code: true},
		{name: "ok/deny", answer: later("third", signedIn, DoneDeny, nil), error: "access_denied"},
		{name: "ok/prompt_none_without_session", answer: func(t *testing.T, env *flowEnv, cc *countingClients) Step {
			id := env.authorize(t, "first", "prompt", "none")
			cc.reads.Store(0)
			return env.proceed(t, id, nil, DoneNothing)
		}, error: "login_required"},
		{name: "fail/client_deleted_before_the_login", answer: later("first", signedIn, DoneLogin, deleted)},
		{name: "fail/client_deleted_before_the_deny", answer: later("first", signedIn, DoneDeny, deleted)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newFlowEnv()
			cc := &countingClients{clients: env.f.Clients}
			env.f.Clients = cc
			s := tc.answer(t, env, cc)
			switch {
			case tc.code:
				if q := clientAnswer(t, s); q.Get("code") == "" {
					t.Fatalf("answer %v, want a code", q)
				}
			case tc.error != "":
				if q := clientAnswer(t, s); q.Get("error") != tc.error {
					t.Fatalf("answer %v, want error %s", q, tc.error)
				}
			default:
				if s.Kind != StepError || s.Status != http.StatusBadRequest || s.Location != "" || len(env.once.codes(t)) != 0 {
					t.Fatalf("step %+v, want the error page (400) and no code", s)
				}
			}
			if n := cc.reads.Load(); n != 1 {
				t.Errorf("%d client reads for one answer, want 1", n)
			}
		})
	}
}

package apikeys

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/keys/verify/apikey"
	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// memStore is an in-memory Store that counts every call.
type memStore struct {
	mu    sync.Mutex
	users map[string]store.User
	keys  map[string]*store.APIKey
	calls map[string]int
	seq   int
	now   func() time.Time
	down  bool
	// block, when set, holds every GetAPIKeyByHash until it is closed.
	block chan struct{}
}

func newMemStore(now func() time.Time) *memStore {
	return &memStore{users: map[string]store.User{}, keys: map[string]*store.APIKey{}, calls: map[string]int{}, now: now}
}

func (m *memStore) count(name string) error {
	m.calls[name]++
	if m.down {
		return fmt.Errorf("%s: %w", name, store.ErrUnavailable)
	}
	return nil
}

func (m *memStore) total() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, c := range m.calls {
		n += c
	}
	return n
}

func (m *memStore) calledN(name string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls[name]
}

func (m *memStore) GetUser(_ context.Context, id string) (store.User, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.count("GetUser"); err != nil {
		return store.User{}, err
	}
	u, ok := m.users[id]
	if !ok {
		return store.User{}, store.ErrNotFound
	}
	return u, nil
}

func (m *memStore) CreateAPIKey(_ context.Context, k *store.APIKey) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.count("CreateAPIKey"); err != nil {
		return err
	}
	if _, ok := m.users[k.OwnerID]; !ok {
		return store.ErrNotFound
	}
	m.seq++
	k.ID, k.CreatedAt = fmt.Sprintf("apk_%d", m.seq), m.now().UTC()
	c := *k
	m.keys[k.ID] = &c
	return nil
}

func (m *memStore) FindLiveAPIKey(_ context.Context, hash []byte) (store.APIKey, store.User, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.count("FindLiveAPIKey"); err != nil {
		return store.APIKey{}, store.User{}, err
	}
	for _, k := range m.keys {
		if bytes.Equal(k.Hash, hash) && k.RevokedAt == nil {
			owner, ok := m.users[k.OwnerID]
			if !ok {
				return store.APIKey{}, store.User{}, store.ErrNotFound
			}
			owner.PasswordHash = ""
			return *k, owner, nil
		}
	}
	return store.APIKey{}, store.User{}, store.ErrNotFound
}

func (m *memStore) GetAPIKeyByHash(_ context.Context, hash []byte) (store.APIKey, error) {
	m.mu.Lock()
	block := m.block
	m.mu.Unlock()
	if block != nil {
		<-block
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.count("GetAPIKeyByHash"); err != nil {
		return store.APIKey{}, err
	}
	for _, k := range m.keys {
		if bytes.Equal(k.Hash, hash) {
			return *k, nil
		}
	}
	return store.APIKey{}, store.ErrNotFound
}

func (m *memStore) ListAPIKeys(_ context.Context, ownerID, cursor string, limit int) (store.Page[store.APIKey], error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.count("ListAPIKeys"); err != nil {
		return store.Page[store.APIKey]{}, err
	}
	var out []store.APIKey
	for _, k := range m.keys {
		if k.OwnerID == ownerID {
			out = append(out, *k)
		}
	}
	return store.Page[store.APIKey]{Items: out}, nil
}

func (m *memStore) RevokeAPIKey(_ context.Context, ownerID, id, by string, at time.Time) (store.APIKey, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.count("RevokeAPIKey"); err != nil {
		return store.APIKey{}, false, err
	}
	k, ok := m.keys[id]
	if !ok || k.OwnerID != ownerID {
		return store.APIKey{}, false, store.ErrNotFound
	}
	if k.RevokedAt != nil {
		return *k, false, nil
	}
	k.RevokedAt, k.RevokedBy = &at, by
	return *k, true, nil
}

func (m *memStore) TouchAPIKey(_ context.Context, id string, at time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.count("TouchAPIKey"); err != nil {
		return err
	}
	if k, ok := m.keys[id]; ok && (k.LastUsedAt == nil || k.LastUsedAt.Before(at)) {
		k.LastUsedAt = &at
	}
	return nil
}

func (m *memStore) ClaimExpiringAPIKeys(context.Context, time.Time, time.Time, int) ([]store.ExpiringAPIKey, error) {
	return nil, errors.New("memStore: expiry notices are tested with their own fake")
}

func (m *memStore) ReleaseExpiringAPIKey(context.Context, string) error {
	return errors.New("memStore: expiry notices are tested with their own fake")
}

type fakeGrants struct {
	mu    sync.Mutex
	ended []string
	err   error
}

func (g *fakeGrants) EndGrants(_ context.Context, sids []string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ended = append(g.ended, sids...)
	return g.err
}

type fakeAudit struct {
	mu     sync.Mutex
	events []store.AuditEvent
}

func (a *fakeAudit) Record(_ context.Context, e store.AuditEvent) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, e)
}

func (a *fakeAudit) of(action string) []store.AuditEvent {
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

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type env struct {
	svc    *Service
	st     *memStore
	grants *fakeGrants
	audit  *fakeAudit
	clk    *clock
	ann    store.User // role admin in the default policy
}

func newEnv(t *testing.T, maxTTL time.Duration) *env {
	t.Helper()
	clk := &clock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	st := newMemStore(clk.now)
	ann := store.User{ID: "usr_ann", Kind: store.UserHuman, Email: "ann@example.com", Active: true, Roles: []string{"admin"}}
	st.users[ann.ID] = ann
	e := &env{st: st, grants: &fakeGrants{}, audit: &fakeAudit{}, clk: clk, ann: ann}
	svc, err := New(Config{Issuer: "https://id.example", MaxTTL: maxTTL}, Deps{Store: st, Permissions: policy.Default(),
		Grants: e.grants, Audit: e.audit, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	e.svc = svc
	return e
}

// anyMaker is a key's maker who may pass on every permission: the key is
// bounded by its owner's permissions alone.
var anyMaker = Token{Scope: policy.Default().AllPermissions(), ForPortcullis: true}

func (e *env) create(t *testing.T, scopes ...string) Created {
	t.Helper()
	c, err := e.svc.Create(context.Background(), e.ann, anyMaker, CreateRequest{Name: "ci", Scopes: scopes}, Meta{ActorID: e.ann.ID, Via: "self"})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return c
}

func wantAPIErr(t *testing.T, what string, err error, code string, status int) {
	t.Helper()
	var ae *apierr.Error
	if !errors.As(err, &ae) || ae.Code != code || ae.Status != status {
		t.Fatalf("%s: %v, want %d %s", what, err, status, code)
	}
}

func TestCreate(t *testing.T) {
	ptr := func(d time.Duration) *time.Time {
		t := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC).Add(d)
		return &t
	}
	tests := []struct {
		name    string
		maxTTL  time.Duration
		req     CreateRequest
		code    string // "" for success
		expires time.Duration
	}{
		{name: "ok/default_90_days", req: CreateRequest{Name: " deploy ", Scopes: []string{"users:read"}}, expires: 90 * 24 * time.Hour},
		{name: "ok/default_capped_by_the_maximum", maxTTL: 48 * time.Hour, req: CreateRequest{Name: "x", Scopes: []string{"users:read"}}, expires: 48 * time.Hour},
		{name: "ok/one_hour", req: CreateRequest{Name: "x", Scopes: []string{"users:read"}, ExpiresAt: ptr(time.Hour)}, expires: time.Hour},
		{name: "ok/the_maximum", req: CreateRequest{Name: "x", Scopes: []string{"users:read"}, ExpiresAt: ptr(8760 * time.Hour)}, expires: 8760 * time.Hour},
		{name: "fail/under_one_hour", req: CreateRequest{Name: "x", Scopes: []string{"users:read"}, ExpiresAt: ptr(59 * time.Minute)}, code: "invalid_request"},
		{name: "fail/in_the_past", req: CreateRequest{Name: "x", Scopes: []string{"users:read"}, ExpiresAt: ptr(-time.Hour)}, code: "invalid_request"},
		{name: "fail/past_the_maximum", req: CreateRequest{Name: "x", Scopes: []string{"users:read"}, ExpiresAt: ptr(8760*time.Hour + time.Second)}, code: "invalid_request"},
		{name: "fail/past_a_lower_maximum", maxTTL: 24 * time.Hour, req: CreateRequest{Name: "x", Scopes: []string{"users:read"}, ExpiresAt: ptr(25 * time.Hour)}, code: "invalid_request"},
		{name: "fail/no_name", req: CreateRequest{Name: "  ", Scopes: []string{"users:read"}}, code: "invalid_request"},
		{name: "fail/long_name", req: CreateRequest{Name: strings.Repeat("n", 101), Scopes: []string{"users:read"}}, code: "invalid_request"},
		{name: "fail/control_in_name", req: CreateRequest{Name: "a\nb", Scopes: []string{"users:read"}}, code: "invalid_request"},
		{name: "fail/no_scopes", req: CreateRequest{Name: "x"}, code: "invalid_request"},
		{name: "fail/empty_scopes", req: CreateRequest{Name: "x", Scopes: []string{}}, code: "invalid_request"},
		{name: "fail/oidc_scope", req: CreateRequest{Name: "x", Scopes: []string{"openid"}}, code: "invalid_scope"},
		{name: "fail/wildcard", req: CreateRequest{Name: "x", Scopes: []string{"users:*"}}, code: "invalid_scope"},
		{name: "fail/beyond_the_owner", req: CreateRequest{Name: "x", Scopes: []string{"users:read", "keys:rotate"}}, code: "invalid_scope"},
		{name: "fail/unknown_permission", req: CreateRequest{Name: "x", Scopes: []string{"nothing:here"}}, code: "invalid_scope"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.maxTTL)
			c, err := e.svc.Create(context.Background(), e.ann, anyMaker, tc.req, Meta{ActorID: "usr_admin", Via: "admin"})
			if tc.code != "" {
				wantAPIErr(t, "Create", err, tc.code, 400)
				if e.st.calledN("CreateAPIKey") != 0 || len(e.audit.events) != 0 {
					t.Fatal("a refused key was stored or audited")
				}
				return
			}
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			if !c.ExpiresAt.Equal(e.clk.now().Add(tc.expires)) || !c.CreatedAt.Equal(e.clk.now()) {
				t.Fatalf("expires %v created %v", c.ExpiresAt, c.CreatedAt)
			}
			parsed, err := apikey.Parse(c.Key)
			if err != nil || c.Hint != parsed.Hint() || c.Name != strings.TrimSpace(tc.req.Name) || !slices.Equal(c.Scopes, tc.req.Scopes) {
				t.Fatalf("created %+v (%v)", c, err)
			}
			// Only the hash (and the hint) of the key is kept.
			stored := e.st.keys[c.ID]
			if !bytes.Equal(stored.Hash, apikey.Hash(c.Key)) || strings.Contains(fmt.Sprintf("%+v", *stored), c.Key[8:len(c.Key)-4]) ||
				stored.CreatedBy != "usr_admin" || stored.OwnerID != e.ann.ID {
				t.Fatalf("stored %+v", *stored)
			}
			ev := e.audit.of("api_key.created")
			if len(ev) != 1 || ev[0].ActorID != "usr_admin" || ev[0].TargetID != e.ann.ID || ev[0].Details["key_id"] != c.ID ||
				ev[0].Details["via"] != "admin" || strings.Contains(fmt.Sprint(ev[0]), c.Key) {
				t.Fatalf("audit %+v", ev)
			}
		})
	}
}

// TestCreateOwnWithinTheToken: a person's own key holds only permissions
// the token creating it was granted as well as the owner's: a key asked
// beyond the token's scope is 400 invalid_scope (the answer for a
// permission the owner lacks), nothing stored or audited; a token granted
// nothing (nil) bounds the key to nothing. Fails before the maker's bound: the key
// was checked against the owner's permissions alone, so a token narrowed
// to users:read made a key with keys:rotate.
func TestCreateOwnWithinTheToken(t *testing.T) {
	for _, tc := range []struct {
		name    string
		granted []string // the token's scope claim, split
		other   bool     // the token's audience is not Portcullis's own
		scopes  []string
		code    string // "" for success
	}{
		{"ok/within_a_narrowed_token", []string{"openid", "users:read"}, false, []string{"users:read"}, ""},
		{"ok/within_a_full_token", policy.Default().Permissions([]string{"admin"}), false, []string{"users:read", "users:write"}, ""},
		{"fail/beyond_a_narrowed_token", []string{"openid", "users:read"}, false, []string{"users:read", "users:write"}, "invalid_scope"},
		{"fail/only_oidc_scopes_granted", []string{"openid", "profile"}, false, []string{"users:read"}, "invalid_scope"},
		{"fail/nothing_granted", nil, false, []string{"users:read"}, "invalid_scope"},
		{"fail/empty_grant", []string{}, false, []string{"users:read"}, "invalid_scope"},
		// The owner's permissions still bound it first, with the same answer.
		{"fail/granted_but_beyond_the_owner", []string{"users:read", "keys:rotate"}, false, []string{"keys:rotate"}, "invalid_scope"},
		{"fail/no_scopes_is_not_everything_granted", []string{"users:read"}, false, nil, "invalid_request"},
		// /admin refuses a token meant for another audience; a key it
		// makes carries no admin permission either.
		{"fail/admin_permission_from_a_token_for_another_audience", []string{"users:read"}, true, []string{"users:read"}, "invalid_scope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 0)
			c, err := e.svc.Create(context.Background(), e.ann, Token{Scope: tc.granted, ForPortcullis: !tc.other}, CreateRequest{Name: "ci", Scopes: tc.scopes},
				Meta{ActorID: e.ann.ID, Via: "self"})
			if tc.code != "" {
				wantAPIErr(t, "Create", err, tc.code, 400)
				if e.st.calledN("CreateAPIKey") != 0 || len(e.audit.events) != 0 {
					t.Fatal("a refused key was stored or audited")
				}
				return
			}
			if err != nil || !slices.Equal(c.Scopes, tc.scopes) {
				t.Fatalf("Create = %+v, %v", c, err)
			}
		})
	}
}

// TestMalformedKeyCostsNoStoreCall: a key with a wrong prefix, length,
// alphabet or checksum is refused before any store call (counted by the
// store), wherever it is presented.
func TestMalformedKeyCostsNoStoreCall(t *testing.T) {
	e := newEnv(t, 0)
	good := e.create(t, "users:read").Key
	before := e.st.total()
	badSum := good[:len(good)-1] + map[bool]string{true: "1", false: "0"}[good[len(good)-1] == '0']
	ctx := context.Background()
	for _, raw := range []string{badSum, good[:len(good)-1], good + "0", "pcak_" + strings.Repeat("!", 38), "", "pcrt_" + good[5:]} {
		if _, err := e.svc.Authenticate(ctx, raw, Meta{}); !errors.Is(err, ErrRefused) {
			t.Fatalf("Authenticate(%q) = %v", raw, err)
		}
		if out, err := e.svc.IntrospectAPIKey(ctx, store.Client{ID: "rs"}, raw); err != nil || len(out) != 1 || out["active"] != false {
			t.Fatalf("IntrospectAPIKey = %v, %v", out, err)
		}
		_, err := e.svc.ExchangeSubjectToken(ctx, store.Client{ID: "xchg"}, raw, token.RequestMeta{})
		wantAPIErr(t, "ExchangeSubjectToken", err, "invalid_request", 400)
		if err := e.svc.RevokeAPIKeyByValue(ctx, raw, token.RequestMeta{}); err != nil {
			t.Fatalf("RevokeAPIKeyByValue = %v", err)
		}
	}
	if n := e.st.total(); n != before {
		t.Fatalf("malformed keys cost %d store calls, want 0", n-before)
	}
	if len(e.audit.of("api_key.rejected")) != 0 {
		t.Fatal("a malformed key was audited as a rejected key")
	}
}

// TestAuthenticate: the effective scope follows the owner's current roles;
// a deactivated owner, an expired key and a revoked key are refused (and
// audited); an unknown key is refused without an audit event.
func TestAuthenticate(t *testing.T) {
	ctx := context.Background()
	t.Run("ok/effective_scope_follows_the_owner", func(t *testing.T) {
		e := newEnv(t, 0)
		c := e.create(t, "users:read", "users:write", "keys:read")
		a, err := e.svc.Authenticate(ctx, c.Key, Meta{})
		if err != nil || a.Owner.ID != e.ann.ID || !slices.Equal(a.Scopes, []string{"keys:read", "users:read", "users:write"}) {
			t.Fatalf("Authenticate = %+v, %v", a, err)
		}
		// Demoted to user: the key keeps only what a user may do (nothing of these).
		u := e.ann
		u.Roles = []string{"user"}
		e.st.users[u.ID] = u
		if a, err := e.svc.Authenticate(ctx, c.Key, Meta{}); err != nil || len(a.Scopes) != 0 || a.Scopes == nil {
			t.Fatalf("after demotion: %+v, %v; want an empty effective scope", a.Scopes, err)
		}
		// Promoted back: the key's own scopes, never more.
		u.Roles = []string{"super_admin"}
		e.st.users[u.ID] = u
		if a, _ := e.svc.Authenticate(ctx, c.Key, Meta{}); !slices.Equal(a.Scopes, []string{"keys:read", "users:read", "users:write"}) {
			t.Fatalf("after promotion: %v", a.Scopes)
		}
	})
	for _, tc := range []struct {
		name   string
		break_ func(e *env, c Created)
		reason string
	}{
		{"fail/owner_deactivated", func(e *env, c Created) {
			u := e.ann
			u.Active = false
			e.st.users[u.ID] = u
		}, ReasonOwnerDeactivated},
		{"fail/expired", func(e *env, c Created) { e.clk.add(90 * 24 * time.Hour) }, ReasonExpired},
		{"fail/revoked", func(e *env, c Created) {
			if err := e.svc.Revoke(ctx, e.ann.ID, c.ID, Meta{ActorID: e.ann.ID}); err != nil {
				panic(err)
			}
		}, ReasonRevoked},
	} {
		answered := tc.reason
		if tc.reason == ReasonRevoked {
			answered = ReasonNotLive // answered as an unknown key, audited after the answer
		}
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 0)
			c := e.create(t, "users:read")
			if _, err := e.svc.Authenticate(ctx, c.Key, Meta{}); err != nil {
				t.Fatal(err)
			}
			tc.break_(e, c)
			_, err := e.svc.Authenticate(ctx, c.Key, Meta{ClientID: "rs", Via: "introspection"})
			var r *Refusal
			if !errors.As(err, &r) || r.Reason != answered || !errors.Is(err, ErrRefused) {
				t.Fatalf("Authenticate = %v, want the refusal %s", err, answered)
			}
			e.svc.Wait()
			ev := e.audit.of("api_key.rejected")
			if len(ev) != 1 || ev[0].Outcome != store.OutcomeFailure || ev[0].Details["reason"] != tc.reason ||
				ev[0].Details["key_id"] != c.ID || ev[0].TargetID != e.ann.ID || ev[0].ClientID != "rs" {
				t.Fatalf("api_key.rejected = %+v", ev)
			}
			if out, _ := e.svc.IntrospectAPIKey(ctx, store.Client{ID: "rs"}, c.Key); len(out) != 1 || out["active"] != false {
				t.Fatalf("introspection = %v", out)
			}
			if _, err := e.svc.ExchangeSubjectToken(ctx, store.Client{ID: "x"}, c.Key, token.RequestMeta{}); err == nil {
				t.Fatal("exchange accepted a refused key")
			}
		})
	}
	t.Run("fail/unknown_key_not_audited", func(t *testing.T) {
		e := newEnv(t, 0)
		k, _ := apikey.Generate()
		var r *Refusal
		if _, err := e.svc.Authenticate(ctx, k.String(), Meta{}); !errors.As(err, &r) || r.Reason != ReasonNotLive {
			t.Fatalf("Authenticate(unknown) = %v", err)
		}
		e.svc.Wait()
		if e.st.calledN("FindLiveAPIKey") != 1 || e.st.calledN("GetAPIKeyByHash") != 1 || len(e.audit.events) != 0 {
			t.Fatalf("unknown key: %v lookups, events %v", e.st.calls, e.audit.events)
		}
	})
	t.Run("fail/store_down_is_503", func(t *testing.T) {
		e := newEnv(t, 0)
		c := e.create(t, "users:read")
		e.st.down = true
		_, err := e.svc.Authenticate(ctx, c.Key, Meta{})
		wantAPIErr(t, "Authenticate", err, "temporarily_unavailable", 503)
		if _, err := e.svc.IntrospectAPIKey(ctx, store.Client{}, c.Key); err == nil {
			t.Fatal("introspection answered while the store is down")
		}
	})
}

// TestUnknownAndRevokedAnsweredAlike: an unknown and a revoked key cost the
// request the same work, one search of the live keys each, and are answered
// the same; the lookup that tells a revoked key (to audit it) runs after the
// answer, which never waits for it.
func TestUnknownAndRevokedAnsweredAlike(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 0)
	c := e.create(t, "users:read")
	if err := e.svc.Revoke(ctx, e.ann.ID, c.ID, Meta{}); err != nil {
		t.Fatal(err)
	}
	unknown, _ := apikey.Generate()
	e.st.block = make(chan struct{})
	for _, raw := range []string{unknown.String(), c.Key} {
		before := e.st.calledN("FindLiveAPIKey")
		_, err := e.svc.Authenticate(ctx, raw, Meta{})
		var r *Refusal
		if !errors.As(err, &r) || r.Reason != ReasonNotLive {
			t.Fatalf("Authenticate = %v, want %s", err, ReasonNotLive)
		}
		if n := e.st.calledN("FindLiveAPIKey") - before; n != 1 {
			t.Fatalf("%d searches of the live keys, want 1", n)
		}
	}
	if e.st.calledN("GetAPIKeyByHash") != 0 || len(e.audit.of("api_key.rejected")) != 0 {
		t.Fatal("an answer waited for the background lookup")
	}
	close(e.st.block)
	e.svc.Wait()
	if ev := e.audit.of("api_key.rejected"); len(ev) != 1 || ev[0].Details["reason"] != ReasonRevoked || ev[0].Details["key_id"] != c.ID {
		t.Fatalf("after the background lookups: %+v, want one rejection of the revoked key", ev)
	}
}

// TestLastUsedOncePerMinute: N uses of a key within a minute write
// last_used_at once; the next minute writes again. Rejections are audited
// at most once a minute per key and reason.
func TestLastUsedOncePerMinute(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 0)
	c := e.create(t, "users:read")
	other := e.create(t, "users:read")
	for i := 0; i < 50; i++ {
		if _, err := e.svc.Authenticate(ctx, c.Key, Meta{}); err != nil {
			t.Fatal(err)
		}
		e.clk.add(time.Second)
	}
	if n := e.st.calledN("TouchAPIKey"); n != 1 {
		t.Fatalf("50 uses in 50 s wrote last_used_at %d times, want 1", n)
	}
	if _, err := e.svc.Authenticate(ctx, other.Key, Meta{}); err != nil {
		t.Fatal(err)
	}
	if n := e.st.calledN("TouchAPIKey"); n != 2 {
		t.Fatalf("another key's first use: %d writes, want 2", n)
	}
	e.clk.add(11 * time.Second)
	if _, err := e.svc.Authenticate(ctx, c.Key, Meta{}); err != nil {
		t.Fatal(err)
	}
	if n := e.st.calledN("TouchAPIKey"); n != 3 {
		t.Fatalf("a use a minute later: %d writes, want 3", n)
	}
	if got := e.st.keys[c.ID].LastUsedAt; got == nil || !got.Equal(e.clk.now()) {
		t.Fatalf("last_used_at = %v, want %v", got, e.clk.now())
	}
	if err := e.svc.Revoke(ctx, e.ann.ID, c.ID, Meta{}); err != nil {
		t.Fatal(err)
	}
	lookups := e.st.calledN("GetAPIKeyByHash")
	for i := 0; i < 20; i++ {
		_, _ = e.svc.Authenticate(ctx, c.Key, Meta{})
	}
	e.svc.Wait()
	if n := len(e.audit.of("api_key.rejected")); n != 1 {
		t.Fatalf("20 uses of a revoked key: %d rejection events, want 1", n)
	}
	if n := e.st.calledN("GetAPIKeyByHash") - lookups; n != 1 {
		t.Fatalf("20 uses of a revoked key: %d background lookups, want 1", n)
	}
	e.clk.add(time.Minute)
	_, _ = e.svc.Authenticate(ctx, c.Key, Meta{})
	e.svc.Wait()
	if n := len(e.audit.of("api_key.rejected")); n != 2 {
		t.Fatalf("a minute later: %d rejection events, want 2", n)
	}
}

func TestGateForgets(t *testing.T) {
	full := newGate(time.Minute, 2)
	if !full.allow("a", time.Unix(0, 0)) || !full.allow("b", time.Unix(0, 0)) || full.allow("c", time.Unix(1, 0)) {
		t.Fatal("a full gate admitted a new name")
	}
	if !full.allow("c", time.Unix(61, 0)) {
		t.Fatal("a gate whose names were forgotten refused a new one")
	}
	g := newGate(time.Minute, 1000)
	t0 := time.Unix(1000, 0)
	for i := 0; i < 100; i++ {
		g.allow(fmt.Sprint(i), t0)
	}
	if g.allow("5", t0.Add(59*time.Second)) {
		t.Fatal("allowed twice within the interval")
	}
	if !g.allow("5", t0.Add(61*time.Second)) || len(g.last) != 1 {
		t.Fatalf("after the interval: %d names remembered, want only the new one", len(g.last))
	}
	if !g.allow("5", t0) {
		t.Fatal("a clock that went back must not lock a name out")
	}
}

// TestRevoke: the owner's key is revoked (audited once), the sid of its
// exchanged tokens is ended every time, another owner's key or an unknown
// id is 404, and a failed sid revocation is reported.
func TestRevoke(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 0)
	c := e.create(t, "users:read")
	if err := e.svc.Revoke(ctx, "usr_other", c.ID, Meta{}); err == nil {
		t.Fatal("another owner revoked the key")
	}
	wantAPIErr(t, "Revoke(unknown)", e.svc.Revoke(ctx, e.ann.ID, "apk_nope", Meta{}), "not_found", 404)
	wantAPIErr(t, "Revoke(long id)", e.svc.Revoke(ctx, e.ann.ID, strings.Repeat("x", 65), Meta{}), "not_found", 404)
	for i := 0; i < 2; i++ {
		if err := e.svc.Revoke(ctx, e.ann.ID, c.ID, Meta{ActorID: "usr_admin", Via: "admin"}); err != nil {
			t.Fatalf("Revoke #%d: %v", i, err)
		}
	}
	if ev := e.audit.of("api_key.revoked"); len(ev) != 1 || ev[0].ActorID != "usr_admin" || ev[0].Details["key_id"] != c.ID {
		t.Fatalf("api_key.revoked = %+v", ev)
	}
	if want := []string{"ak_" + c.ID, "ak_" + c.ID}; !slices.Equal(e.grants.ended, want) {
		t.Fatalf("ended sids %v, want %v", e.grants.ended, want)
	}
	// Once no token exchanged before the revocation can live, revoking
	// again writes nothing more.
	e.clk.add(ExchangedTokenTTL + time.Second)
	if err := e.svc.Revoke(ctx, e.ann.ID, c.ID, Meta{}); err != nil || len(e.grants.ended) != 2 {
		t.Fatalf("a late revocation again: %v, ended %v", err, e.grants.ended)
	}
	// A failed sid revocation: the key is revoked all the same, and the caller told.
	d := e.create(t, "users:read")
	e.grants.err = apierr.ErrTemporarilyUnavailable
	wantAPIErr(t, "Revoke with the token state down", e.svc.Revoke(ctx, e.ann.ID, d.ID, Meta{}), "temporarily_unavailable", 503)
	if e.st.keys[d.ID].RevokedAt == nil {
		t.Fatal("the key is not revoked")
	}
}

// TestRevokeByValue: whoever presents a key revokes it (no actor); unknown
// and revoked keys are not errors.
func TestRevokeByValue(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 0)
	c := e.create(t, "users:read")
	if err := e.svc.RevokeAPIKeyByValue(ctx, c.Key, token.RequestMeta{IP: "192.0.2.9"}); err != nil {
		t.Fatal(err)
	}
	k := e.st.keys[c.ID]
	if k.RevokedAt == nil || k.RevokedBy != "" {
		t.Fatalf("key after revocation by value: %+v", *k)
	}
	ev := e.audit.of("api_key.revoked")
	if len(ev) != 1 || ev[0].ActorID != "" || ev[0].IP != "192.0.2.9" || ev[0].Details["via"] != "revoke_endpoint" {
		t.Fatalf("api_key.revoked = %+v", ev)
	}
	unknown, _ := apikey.Generate()
	for _, raw := range []string{c.Key, unknown.String()} {
		if err := e.svc.RevokeAPIKeyByValue(ctx, raw, token.RequestMeta{}); err != nil {
			t.Fatalf("RevokeAPIKeyByValue = %v", err)
		}
	}
	if len(e.audit.of("api_key.revoked")) != 1 {
		t.Fatal("a second revocation was audited")
	}
}

// TestIntrospectAndExchange: the shapes of an active key's introspection
// and of its exchange (no roles, sid ak_<id>, at most 15 minutes, never past
// the key's expiry).
func TestIntrospectAndExchange(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 0)
	c := e.create(t, "users:read", "keys:read")
	out, err := e.svc.IntrospectAPIKey(ctx, store.Client{ID: "rs"}, c.Key)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"active": true, "token_type": "api_key", "iss": "https://id.example", "sub": e.ann.ID,
		"scope": "keys:read users:read", "exp": c.ExpiresAt.Unix(), "iat": c.CreatedAt.Unix(), "client_id": "apikey:" + c.ID}
	for k, v := range want {
		if out[k] != v {
			t.Fatalf("introspection %s = %v, want %v (%v)", k, out[k], v, out)
		}
	}
	if roles, ok := out["roles"].([]string); !ok || len(roles) != 0 || len(out) != len(want)+1 {
		t.Fatalf("introspection %v: want exactly these members and no roles", out)
	}
	subj, err := e.svc.ExchangeSubjectToken(ctx, store.Client{ID: "xchg"}, c.Key, token.RequestMeta{})
	if err != nil {
		t.Fatal(err)
	}
	b := subj.Bound
	if subj.User.ID != e.ann.ID || b == nil || b.SID != "ak_"+c.ID || b.MaxTTL != 15*time.Minute || !b.NotAfter.Equal(c.ExpiresAt) ||
		!slices.Equal(b.Permissions, []string{"keys:read", "users:read"}) || subj.User.PasswordHash != "" {
		t.Fatalf("exchanged subject %+v bound %+v", subj, b)
	}
}

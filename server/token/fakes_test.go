package token

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// fakeClock is an injected clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// fakeOnce is an in-memory store.SingleUse: one mutex makes TakeOnce atomic.
type fakeOnce struct {
	mu   sync.Mutex
	recs map[string]*onceRec
}

type onceRec struct {
	val   []byte
	exp   time.Time
	taken bool
}

func newFakeOnce() *fakeOnce { return &fakeOnce{recs: map[string]*onceRec{}} }

func (f *fakeOnce) PutOnce(_ context.Context, kind string, key, val []byte, exp time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := kind + "/" + string(key)
	if _, ok := f.recs[k]; ok {
		return store.ErrAlreadyExists
	}
	f.recs[k] = &onceRec{val: bytes.Clone(val), exp: exp}
	return nil
}

func (f *fakeOnce) get(kind string, key []byte, now time.Time, take bool) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.recs[kind+"/"+string(key)]
	if !ok || !now.Before(r.exp) {
		return nil, store.ErrNotFound
	}
	if r.taken {
		return bytes.Clone(r.val), store.ErrTokenUsed
	}
	if take {
		r.taken = true
	}
	return bytes.Clone(r.val), nil
}

func (f *fakeOnce) TakeOnce(_ context.Context, kind string, key []byte, now time.Time) ([]byte, error) {
	return f.get(kind, key, now, true)
}

func (f *fakeOnce) PeekOnce(_ context.Context, kind string, key []byte, now time.Time) ([]byte, error) {
	return f.get(kind, key, now, false)
}

// fakeState is an in-memory store.TokenState with the parts the grants use.
type fakeState struct {
	store.TokenState // unused methods panic
	mu               sync.Mutex
	fams             map[string]*famRec
	revokedSIDs      map[string]bool
	cutoffs          map[string]time.Time
	// beforeCreate, when set, runs (once) at the start of CreateFamily.
	beforeCreate func()
	// revokeErr, when set, answers RevokeFamily of these ids.
	revokeErr map[string]error
}

type famRec struct {
	fam     store.RefreshFamily
	current []byte
	revoked bool
}

func newFakeState() *fakeState {
	return &fakeState{fams: map[string]*famRec{}, revokedSIDs: map[string]bool{}, cutoffs: map[string]time.Time{}}
}

func (f *fakeState) CreateFamily(_ context.Context, fam store.RefreshFamily, first []byte) error {
	if hook := f.beforeCreate; hook != nil {
		f.beforeCreate = nil
		hook()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	authTime := fam.AuthTime
	if authTime.IsZero() {
		authTime = fam.CreatedAt
	}
	if c, ok := f.cutoffs[fam.UserID]; ok && !authTime.After(c) {
		return store.ErrSessionsEnded
	}
	if _, ok := f.fams[fam.ID]; ok {
		return store.ErrAlreadyExists
	}
	// Like a backend that keeps no tombstone of a revoked unknown id: a
	// family created after RevokeFamily of its id starts alive.
	f.fams[fam.ID] = &famRec{fam: fam, current: first}
	return nil
}

func (f *fakeState) RotateRefresh(_ context.Context, req store.RotateRequest) (store.RotateResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.fams[req.FamilyID]
	if !ok || r.revoked || !bytes.Equal(r.current, req.PresentedHash) ||
		(req.ClientID != "" && r.fam.ClientID != req.ClientID) {
		return store.RotateResult{Outcome: store.RotateInvalid}, nil
	}
	r.current = req.NextHash
	return store.RotateResult{Outcome: store.RotateOK, Family: r.fam}, nil
}

// FindRefresh honours what RotateRefresh honours: the live family's current
// token (the fake keeps no grace-window predecessor).
func (f *fakeState) FindRefresh(_ context.Context, id string, hash []byte, _ time.Time, _ time.Duration) (store.RefreshFamily, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.fams[id]
	if !ok || r.revoked || !bytes.Equal(r.current, hash) {
		return store.RefreshFamily{}, store.ErrNotFound
	}
	return r.fam, nil
}

func (f *fakeState) RevokeFamily(_ context.Context, id string, _ time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.revokeErr[id]
	if err != nil && !errors.Is(err, store.ErrRevocationPending) {
		return err
	}
	f.revokedSIDs[id] = true
	if r, ok := f.fams[id]; ok {
		r.revoked = true
	}
	return err // nil, or "recorded durably, applied later"
}

func (f *fakeState) RevokeUserSessions(_ context.Context, user string, cutoff time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cutoffs[user] = cutoff
	for _, r := range f.fams {
		if r.fam.UserID == user {
			r.revoked = true
		}
	}
	return nil
}

func (f *fakeState) CreateFamilyAndCheck(ctx context.Context, fam store.RefreshFamily, firstHash []byte, check store.AccessTokenRef) (bool, error) {
	return store.CreateFamilyThenCheck(ctx, f, fam, firstHash, check)
}

func (f *fakeState) IsAccessTokenRevoked(_ context.Context, ref store.AccessTokenRef) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ref.SID != "" && f.revokedSIDs[ref.SID] {
		return true, nil
	}
	if c, ok := f.cutoffs[ref.UserID]; ok && ref.UserID != "" && !ref.IssuedAt.After(c) {
		return true, nil
	}
	return false, nil
}

func (f *fakeState) familyRevoked(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r, ok := f.fams[id]; ok {
		return r.revoked
	}
	return f.revokedSIDs[id]
}

// fakeSigner makes unsigned-but-shaped JWS with a chosen alg; verification
// only decodes (the keys package tests real signatures).
type fakeSigner struct{ alg string }

func (s fakeSigner) Sign(claims any, typ string) (string, error) {
	p, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	h, _ := json.Marshal(map[string]string{"alg": s.alg, "typ": typ, "kid": "k1"})
	return b64(h) + "." + b64(p) + ".sig", nil
}

func (s fakeSigner) VerifyTyped(tok, want string) ([]byte, string, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 || parts[2] != "sig" {
		return nil, "", errors.New("bad signature")
	}
	h, _ := base64.RawURLEncoding.DecodeString(parts[0])
	var hdr map[string]string
	if json.Unmarshal(h, &hdr) != nil || hdr["typ"] != want {
		return nil, "", errors.New("wrong typ")
	}
	p, err := base64.RawURLEncoding.DecodeString(parts[1])
	return p, "k1", err
}

func (fakeSigner) Usable() error { return nil }

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

type plainSealer struct{}

func (plainSealer) Seal(p, _ []byte) ([]byte, error) { return p, nil }
func (plainSealer) Open(p, _ []byte) ([]byte, error) { return p, nil }

// fakeDirectory serves clients and users.
type fakeDirectory struct {
	mu      sync.Mutex
	clients map[string]store.Client
	users   map[string]store.User
	// userReads counts GetUser calls.
	userReads int
}

func (d *fakeDirectory) GetClient(_ context.Context, id string) (store.Client, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.clients[id]
	if !ok {
		return store.Client{}, store.ErrNotFound
	}
	return c, nil
}

func (d *fakeDirectory) GetUser(_ context.Context, id string) (store.User, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.userReads++
	u, ok := d.users[id]
	if !ok {
		return store.User{}, store.ErrNotFound
	}
	return u, nil
}

// GetUserAt is GetUser: the fake keeps no copies.
func (d *fakeDirectory) GetUserAt(ctx context.Context, id string, _ store.UserVersion) (store.User, error) {
	return d.GetUser(ctx, id)
}
func (d *fakeDirectory) UpdateUser(_ context.Context, id string, fn func(*store.User) error) (store.User, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	u := d.users[id]
	if err := fn(&u); err != nil {
		return store.User{}, err // as the store: a refused change writes nothing
	}
	d.users[id] = u
	return u, nil
}

// fakePerms: role "editor" holds docs:read and docs:write; "viewer" docs:read.
type fakePerms struct{}

func (fakePerms) Permissions(roles []string) []string {
	var out []string
	for _, r := range roles {
		switch r {
		case "editor":
			out = append(out, "docs:read", "docs:write")
		case "viewer":
			out = append(out, "docs:read")
		}
	}
	return out
}
func (fakePerms) CoveredRoles(userRoles, _ []string) []string { return userRoles }

// fakeAudit records actions.
type fakeAudit struct {
	mu     sync.Mutex
	events []store.AuditEvent
}

func (a *fakeAudit) Record(_ context.Context, e store.AuditEvent) {
	a.mu.Lock()
	a.events = append(a.events, e)
	a.mu.Unlock()
}

// RecordLogin records the login's event as Record does.
func (a *fakeAudit) RecordLogin(ctx context.Context, e store.AuditEvent) { a.Record(ctx, e) }

func (a *fakeAudit) actions() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, e := range a.events {
		out = append(out, e.Action)
	}
	return out
}

type countMetrics struct {
	mu sync.Mutex
	n  map[string]int
}

func (m *countMetrics) TokenIssued(g string)  { m.mu.Lock(); m.n[g]++; m.mu.Unlock() }
func (m *countMetrics) RefreshReuseDetected() {}

func (m *countMetrics) RefreshRotationLimitReached() {}

// scopeOf is the scope r sends, "" when it sends none.
func scopeOf(r Response) string {
	if r.Scope == nil {
		return ""
	}
	return *r.Scope
}

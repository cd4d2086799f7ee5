package mfa

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/keys"
	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/ratelimit"
	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/redisstate"
	"github.com/portcullis-auth/portcullis/store/sqlstate"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
	"github.com/portcullis-auth/portcullis/store/testservers"
)

func TestMain(m *testing.M) { testservers.Main(m) }

// clock is the injected clock of a test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// auditLog records audit events.
type auditLog struct {
	mu     sync.Mutex
	events []store.AuditEvent
}

func (a *auditLog) Record(_ context.Context, e store.AuditEvent) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, e)
}

func (a *auditLog) find(action, reason string) []store.AuditEvent {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []store.AuditEvent
	for _, e := range a.events {
		if e.Action == action && (reason == "" || e.Details["reason"] == reason) {
			out = append(out, e)
		}
	}
	return out
}

// throttle is a login throttle that records its calls and refuses while
// refuse is set.
type throttle struct {
	mu        sync.Mutex
	checks    []string // "ip|login"
	successes []string
	refuse    error
}

// throttleWindow is the failure window throttle counts every attempt in.
const throttleWindow = 1000

func (th *throttle) CheckLogin(_ context.Context, ip, login string) (ratelimit.Counted, error) {
	th.mu.Lock()
	defer th.mu.Unlock()
	th.checks = append(th.checks, ip+"|"+login)
	if th.refuse != nil {
		return ratelimit.Counted{}, th.refuse
	}
	return ratelimit.Counted{Login: login, Window: throttleWindow}, nil
}

// LoginSucceeded records "ip|login@window login@window…", oldest first.
func (th *throttle) LoginSucceeded(_ context.Context, ip string, attempts ...ratelimit.Counted) {
	th.mu.Lock()
	defer th.mu.Unlock()
	each := make([]string, len(attempts))
	for i, a := range attempts {
		each[i] = fmt.Sprintf("%s@%d", a.Login, a.Window)
	}
	th.successes = append(th.successes, ip+"|"+strings.Join(each, " "))
}

func (th *throttle) counts() (checks, successes int) {
	th.mu.Lock()
	defer th.mu.Unlock()
	return len(th.checks), len(th.successes)
}

// env is a Service on a real store and token state.
type env struct {
	svc      *Service
	st       *sqlstore.Store
	clock    *clock
	audit    *auditLog
	throttle *throttle
	keks     keys.KEKRing
}

const testPolicy = `
roles:
  admin:
    level: 50
  user:
    level: 10
mfa:
  required_for_level: 50
`

// onceCounter is a token state backend: single-use records and counters.
type onceCounter interface {
	store.SingleUse
	Counter
}

var backends = []struct {
	name string
	open func(t *testing.T) (*sqlstore.Store, onceCounter)
}{
	{"sqlite", func(t *testing.T) (*sqlstore.Store, onceCounter) {
		st := openStore(t, "sqlite://"+filepath.Join(t.TempDir(), "p.db"))
		return st, sqlstate.New(st.DB())
	}},
	{"postgres_redis", func(t *testing.T) (*sqlstore.Store, onceCounter) {
		st := openStore(t, testservers.PostgresURL(t))
		url, prefix := testservers.RedisURL(t)
		client, err := redisstate.NewClient(url)
		if err != nil {
			t.Fatalf("redis: %v", err)
		}
		t.Cleanup(func() { _ = client.Close() })
		return st, redisstate.New(client, redisstate.Options{Prefix: prefix})
	}},
}

func openStore(t *testing.T, url string) *sqlstore.Store {
	t.Helper()
	st, err := sqlstore.Open(tctx(t), url)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if _, err := st.Migrate(tctx(t)); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if err := st.SyncRoles(tctx(t), []store.Role{{Name: "admin", Level: 50}, {Name: "user", Level: 10}}); err != nil {
		t.Fatalf("SyncRoles: %v", err)
	}
	return st
}

func tctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// eachBackend runs fn on a fresh env per backend, in parallel.
func eachBackend(t *testing.T, fn func(t *testing.T, e *env)) {
	t.Helper()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			st, state := b.open(t)
			fn(t, newEnv(t, st, state, state))
		})
	}
}

func newEnv(t *testing.T, factors *sqlstore.Store, once store.SingleUse, counter Counter) *env {
	t.Helper()
	pol, err := policy.Parse("test.yaml", []byte(testPolicy))
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	kek := make([]byte, keys.KEKSize)
	_, _ = rand.Read(kek)
	ring, err := keys.NewKEKRing(kek)
	if err != nil {
		t.Fatalf("KEK: %v", err)
	}
	e := &env{st: factors, clock: &clock{t: time.Now().UTC().Truncate(time.Second)}, audit: &auditLog{}, throttle: &throttle{}, keks: ring}
	e.svc, err = New(Deps{Factors: factors, Once: once, Counter: counter, KEKs: ring, Policy: pol, Throttle: e.throttle,
		Audit: e.audit, Issuer: "Example Co", Now: e.clock.Now})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

var userN struct {
	sync.Mutex
	n int
}

// user creates a user holding roles.
func (e *env) user(t *testing.T, roles ...string) store.User {
	t.Helper()
	userN.Lock()
	userN.n++
	n := userN.n
	userN.Unlock()
	u := store.User{Email: "person" + strconv.Itoa(n) + "@example.com", Name: "Person", Active: true, Roles: roles}
	if err := e.st.CreateUser(tctx(t), &u); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	return u
}

// enrolled gives u a confirmed TOTP factor, the confirming code taken ten
// minutes before the env's clock (so the steps around now are free), and
// returns the secret and the recovery codes.
func (e *env) enrolled(t *testing.T, u store.User) ([]byte, []string) {
	t.Helper()
	en, err := e.svc.StartTOTP(tctx(t), u, Meta{ActorID: u.ID})
	if err != nil {
		t.Fatalf("StartTOTP: %v", err)
	}
	secret := decodeSecret(t, en.Secret)
	e.clock.Add(-10 * time.Minute)
	codes, err := e.svc.ConfirmTOTP(tctx(t), u, e.code(t, secret, 0), Meta{ActorID: u.ID})
	e.clock.Add(10 * time.Minute)
	if err != nil {
		t.Fatalf("ConfirmTOTP: %v", err)
	}
	return secret, codes
}

func decodeSecret(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(s)
	if err != nil {
		t.Fatalf("secret %q is not unpadded base32: %v", s, err)
	}
	return b
}

// code is the TOTP code of secret at the step d steps from the clock's.
func (e *env) code(t *testing.T, secret []byte, d int64) string {
	t.Helper()
	c, err := totpCode(secret, totpStep(e.clock.Now())+d, totpDigits)
	if err != nil {
		t.Fatalf("totpCode: %v", err)
	}
	return c
}

// begin starts a second step for u at client "app".
func (e *env) begin(t *testing.T, u store.User) *Challenge {
	t.Helper()
	ch, err := e.svc.Begin(tctx(t), u, nil, ratelimit.Counted{}, "app", "openid profile", "", e.clock.Now(), []string{AMRPassword})
	if err != nil || ch == nil {
		t.Fatalf("Begin = %+v, %v; want a challenge", ch, err)
	}
	return ch
}

var meta = Meta{IP: "192.0.2.7", UserAgent: "test", ClientID: "app"}

func isStatus(err error, status int) bool {
	ae, ok := err.(*apierr.Error)
	return ok && ae.Status == status
}

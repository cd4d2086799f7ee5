package keys_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/portcullis-auth/portcullis/keys"
	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
	"github.com/portcullis-auth/portcullis/store/testservers"
)

func TestMain(m *testing.M) { testservers.Main(m) }

var algs = []string{keys.AlgRS256, keys.AlgES256, keys.AlgEdDSA}

// Settings shared by the tests (the contract's defaults).
const (
	syncInterval = 10 * time.Second
	jwksMaxAge   = 5 * time.Minute
	maxTokenTTL  = 15 * time.Minute
)

// clock is a settable clock shared by the Managers of one test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2030, 3, 4, 5, 6, 7, 0, time.UTC)} }

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }

func (c *clock) Advance(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

// backends lists the real stores the Manager is tested on.
var backends = []string{"sqlite", "postgres"}

// openStore opens a fresh, migrated sqlstore on the backend.
func openStore(t testing.TB, backend string) *sqlstore.Store {
	t.Helper()
	var url string
	switch backend {
	case "sqlite":
		url = "sqlite://" + t.TempDir() + "/keys.db"
	case "postgres":
		url = testservers.PostgresURL(t)
	default:
		t.Fatalf("unknown backend %q", backend)
	}
	ctx := context.Background()
	s, err := sqlstore.Open(ctx, url)
	if err != nil {
		t.Fatalf("open %s: %v", backend, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatalf("migrate %s: %v", backend, err)
	}
	return s
}

func kek(t testing.TB) string {
	t.Helper()
	k, err := keys.GenerateKEK()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func ring(t testing.TB, setting string) keys.KEKRing {
	t.Helper()
	r, err := keys.ParseKEKs(setting)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// newManager returns a Manager over st with the test settings; mutate may change them.
func newManager(t testing.TB, st keys.Store, kekRing keys.KEKRing, alg string, clk *clock, mutate func(*keys.Config)) *keys.Manager {
	t.Helper()
	cfg := keys.Config{
		Store:        st,
		KEKs:         kekRing,
		Alg:          alg,
		JWKSMaxAge:   jwksMaxAge,
		SyncInterval: syncInterval,
		MaxTokenTTL:  maxTokenTTL,
		Now:          clk.Now,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	m, err := keys.NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func initManager(t testing.TB, st keys.Store, kekRing keys.KEKRing, alg string, clk *clock) *keys.Manager {
	t.Helper()
	m := newManager(t, st, kekRing, alg, clk, nil)
	if err := m.Init(context.Background()); err != nil {
		t.Fatalf("Init: %v", err)
	}
	return m
}

func sign(t testing.TB, m *keys.Manager) string {
	t.Helper()
	tok, err := m.Sign(map[string]any{"sub": "user-1", "iss": "https://issuer.example"}, "at+jwt")
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return tok
}

// joseVerify verifies token as an offline verifier would: with go-jose, from
// the bytes of a JWKS it fetched, picking the key by kid.
func joseVerify(jwks []byte, token string) error {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(jwks, &set); err != nil {
		return fmt.Errorf("parse JWKS: %w", err)
	}
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA})
	if err != nil {
		return err
	}
	found := set.Key(jws.Signatures[0].Protected.KeyID)
	if len(found) == 0 {
		return fmt.Errorf("kid %s not in the JWKS", jws.Signatures[0].Protected.KeyID)
	}
	if found[0].Algorithm != jws.Signatures[0].Protected.Algorithm {
		return errors.New("alg does not match the JWK")
	}
	_, err = jws.Verify(found[0])
	return err
}

func jwksKIDs(t testing.TB, m *keys.Manager) []string {
	t.Helper()
	body, _, _ := m.JWKS()
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.KeyID)
	}
	return kids
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func statesOf(t testing.TB, m *keys.Manager) map[store.KeyState][]keys.KeyInfo {
	t.Helper()
	list, err := m.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[store.KeyState][]keys.KeyInfo{}
	for _, k := range list {
		out[k.State] = append(out[k.State], k)
	}
	return out
}

// TestRotationKeepsVerifiersWorking is the core promise: a verifier holding a
// JWKS fetched before a rotation verifies the first token signed after it,
// and tokens signed before it keep verifying until their key's publication ends.
func TestRotationKeepsVerifiersWorking(t *testing.T) {
	for _, backend := range backends {
		for _, alg := range algs {
			t.Run(backend+"/"+alg, func(t *testing.T) {
				ctx := context.Background()
				clk := newClock()
				m := initManager(t, openStore(t, backend), ring(t, kek(t)), alg, clk)

				// The first key of an empty database signs at once; a next key is published beside it.
				first := statesOf(t, m)
				if len(first[store.KeyActive]) != 1 || len(first[store.KeyNext]) != 1 || len(first) != 2 {
					t.Fatalf("after Init: %+v", first)
				}
				active, next := first[store.KeyActive][0], first[store.KeyNext][0]
				if m.ActiveKID() != active.KID || !active.InJWKS || !next.InJWKS {
					t.Fatalf("active %s (want %s); in JWKS: active %v, next %v", m.ActiveKID(), active.KID, active.InJWKS, next.InJWKS)
				}
				if kids := jwksKIDs(t, m); len(kids) != 2 || !contains(kids, active.KID) || !contains(kids, next.KID) {
					t.Fatalf("JWKS kids %v", kids)
				}
				if got := m.SigningAlgs(); len(got) != 1 || got[0] != alg {
					t.Fatalf("SigningAlgs %v", got)
				}
				oldToken := sign(t, m)

				// A verifier caches the JWKS now.
				cachedBody, cachedETag, _ := m.JWKS()
				cached := append([]byte(nil), cachedBody...)

				// Rotating before the next key has been published for sync interval + JWKS max age is refused.
				safeAt := next.CreatedAt.Add(syncInterval + jwksMaxAge)
				if !next.SigningSafeAt.Equal(safeAt) || !next.PublishedAt.Equal(next.CreatedAt.Add(syncInterval)) {
					t.Fatalf("next key timing %+v", next)
				}
				clk.Set(safeAt.Add(-time.Millisecond))
				_, err := m.Rotate(ctx, false)
				var tooEarly *keys.TooEarlyError
				if !errors.As(err, &tooEarly) || !tooEarly.SafeAt.Equal(safeAt) {
					t.Fatalf("Rotate too early: %v, want TooEarlyError at %s", err, safeAt)
				}
				if !strings.Contains(err.Error(), safeAt.UTC().Format(time.RFC3339)) {
					t.Fatalf("the refusal does not say when it is safe: %v", err)
				}
				clk.Set(safeAt)
				rot, err := m.Rotate(ctx, false)
				if err != nil {
					t.Fatalf("Rotate at SafeAt: %v", err)
				}
				if rot.Retired.KID != active.KID || rot.Activated.KID != next.KID || rot.Next.KID == "" || rot.Forced {
					t.Fatalf("rotation %+v", rot)
				}
				wantUntil := safeAt.Add(2*syncInterval + maxTokenTTL + time.Minute)
				if rot.Retired.PublishedUntil == nil || !rot.Retired.PublishedUntil.Equal(wantUntil) {
					t.Fatalf("retired key published until %v, want %s", rot.Retired.PublishedUntil, wantUntil)
				}

				// The first token after the rotation verifies against the JWKS cached before it.
				newToken := sign(t, m)
				if err := joseVerify(cached, newToken); err != nil {
					t.Fatalf("a JWKS cached before the rotation rejects the new token: %v", err)
				}
				if _, kid, err := m.Verify(newToken); err != nil || kid != next.KID {
					t.Fatalf("Verify(new) kid %s err %v", kid, err)
				}
				if body, etag, _ := m.JWKS(); etag == cachedETag || string(body) == string(cached) {
					t.Fatal("the JWKS and ETag did not change with the rotation")
				}
				if kids := jwksKIDs(t, m); len(kids) != 3 || !contains(kids, rot.Retired.KID) || !contains(kids, rot.Next.KID) {
					t.Fatalf("JWKS after rotation %v", kids)
				}

				// Tokens signed before the rotation verify until the retired key's publication ends.
				clk.Set(wantUntil.Add(-time.Second))
				if err := m.Sync(ctx); err != nil {
					t.Fatal(err)
				}
				current, _, _ := m.JWKS()
				if err := joseVerify(current, oldToken); err != nil {
					t.Fatalf("old token against the current JWKS: %v", err)
				}
				if payload, kid, err := m.Verify(oldToken); err != nil || kid != active.KID || !strings.Contains(string(payload), `"sub":"user-1"`) {
					t.Fatalf("Verify(old) = %s %s %v", payload, kid, err)
				}
				clk.Set(wantUntil)
				if _, _, err := m.Verify(oldToken); !errors.Is(err, keys.ErrUnknownKey) {
					t.Fatalf("Verify(old) after publication ended: %v, want ErrUnknownKey", err)
				}
				if err := m.Sync(ctx); err != nil {
					t.Fatal(err)
				}
				if kids := jwksKIDs(t, m); contains(kids, active.KID) || len(kids) != 2 {
					t.Fatalf("JWKS after publication ended %v", kids)
				}
				if st := statesOf(t, m); len(st[store.KeyRetired]) != 1 || st[store.KeyRetired][0].InJWKS {
					t.Fatalf("states %+v", st)
				}
			})
		}
	}
}

func TestRotateForce(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			clk := newClock()
			m := initManager(t, openStore(t, backend), ring(t, kek(t)), keys.AlgES256, clk)
			before := m.ActiveKID()
			rot, err := m.Rotate(context.Background(), true)
			if err != nil {
				t.Fatal(err)
			}
			if !rot.Forced || rot.Retired.KID != before || m.ActiveKID() != rot.Activated.KID {
				t.Fatalf("forced rotation %+v, active %s", rot, m.ActiveKID())
			}
			// The new next key must wait again.
			var tooEarly *keys.TooEarlyError
			if _, err := m.Rotate(context.Background(), false); !errors.As(err, &tooEarly) {
				t.Fatalf("Rotate right after a forced rotation: %v", err)
			}
		})
	}
}

func TestRevoke(t *testing.T) {
	for _, backend := range backends {
		for _, alg := range algs {
			t.Run(backend+"/"+alg, func(t *testing.T) {
				ctx := context.Background()
				clk := newClock()
				st := openStore(t, backend)
				kr := ring(t, kek(t))
				m := initManager(t, st, kr, alg, clk)
				other := initManager(t, st, kr, alg, clk) // a second instance on the same database
				first := statesOf(t, m)
				active, next := first[store.KeyActive][0], first[store.KeyNext][0]
				tok := sign(t, m)

				rev, err := m.Revoke(ctx, active.KID)
				if err != nil {
					t.Fatal(err)
				}
				if rev.PreviousState != store.KeyActive || rev.Revoked.State != store.KeyRevoked || rev.Revoked.RevokedAt == nil ||
					rev.Activated == nil || rev.Activated.KID != next.KID || rev.Next == nil || rev.AlreadyRevoked {
					t.Fatalf("revocation %+v", rev)
				}
				// At once on this instance: tokens refused, kid gone from the JWKS, next key signing.
				if _, _, err := m.Verify(tok); !errors.Is(err, keys.ErrRevokedKey) {
					t.Fatalf("Verify after revoke: %v, want ErrRevokedKey", err)
				}
				if kids := jwksKIDs(t, m); contains(kids, active.KID) || !contains(kids, next.KID) || !contains(kids, rev.Next.KID) {
					t.Fatalf("JWKS after revoke %v", kids)
				}
				if m.ActiveKID() != next.KID {
					t.Fatalf("active %s after emergency rotation, want %s", m.ActiveKID(), next.KID)
				}
				if _, _, err := m.Verify(sign(t, m)); err != nil {
					t.Fatalf("token of the promoted key: %v", err)
				}
				// The other instance refuses the token once it has synced.
				if _, _, err := other.Verify(tok); err != nil {
					t.Fatalf("other instance before sync: %v", err)
				}
				if err := other.Sync(ctx); err != nil {
					t.Fatal(err)
				}
				if _, _, err := other.Verify(tok); !errors.Is(err, keys.ErrRevokedKey) {
					t.Fatalf("other instance after sync: %v, want ErrRevokedKey", err)
				}
				if other.ActiveKID() != next.KID {
					t.Fatalf("other instance signs with %s", other.ActiveKID())
				}

				again, err := m.Revoke(ctx, active.KID)
				if err != nil || !again.AlreadyRevoked || again.PreviousState != store.KeyRevoked {
					t.Fatalf("revoking twice: %+v %v", again, err)
				}

				// Revoking the next key replaces it; the replacement must wait before it signs.
				revNext, err := m.Revoke(ctx, rev.Next.KID)
				if err != nil || revNext.Next == nil || revNext.Activated != nil || revNext.PreviousState != store.KeyNext {
					t.Fatalf("revoking the next key: %+v %v", revNext, err)
				}
				clk.Advance(time.Minute)
				var tooEarly *keys.TooEarlyError
				if _, err := m.Rotate(ctx, false); !errors.As(err, &tooEarly) || !tooEarly.SafeAt.Equal(revNext.Next.SigningSafeAt) {
					t.Fatalf("Rotate after the next key was replaced: %v", err)
				}
				if err := m.Sync(ctx); err != nil { // as Run does every interval: keys read a minute ago are stale
					t.Fatal(err)
				}

				// Revoking a retired key refuses its tokens.
				tok2 := sign(t, m)
				clk.Set(revNext.Next.SigningSafeAt)
				rot, err := m.Rotate(ctx, false)
				if err != nil {
					t.Fatal(err)
				}
				if _, _, err := m.Verify(tok2); err != nil {
					t.Fatalf("retired key's token: %v", err)
				}
				revRetired, err := m.Revoke(ctx, rot.Retired.KID)
				if err != nil || revRetired.PreviousState != store.KeyRetired || revRetired.Next != nil || revRetired.Activated != nil {
					t.Fatalf("revoking a retired key: %+v %v", revRetired, err)
				}
				if _, _, err := m.Verify(tok2); !errors.Is(err, keys.ErrRevokedKey) {
					t.Fatalf("Verify after revoking the retired key: %v", err)
				}
				states := statesOf(t, m)
				if len(states[store.KeyRevoked]) != 3 || len(states[store.KeyActive]) != 1 || len(states[store.KeyNext]) != 1 {
					t.Fatalf("states %+v", states)
				}
			})
		}
	}
}

func TestRevokeUnknownKID(t *testing.T) {
	clk := newClock()
	m := initManager(t, openStore(t, "sqlite"), ring(t, kek(t)), keys.AlgEdDSA, clk)
	for _, kid := range []string{"", "../../etc/passwd", strings.Repeat("A", 43), "x' OR '1'='1"} {
		t.Run(fmt.Sprintf("fail/%q", kid), func(t *testing.T) {
			if _, err := m.Revoke(context.Background(), kid); !errors.Is(err, keys.ErrKeyNotFound) {
				t.Fatalf("Revoke(%q) = %v, want ErrKeyNotFound", kid, err)
			}
		})
	}
}

// barrierStore delegates to the real store but holds every caller after its
// first ListSigningKeys until n callers have listed, so they all decide from
// the same state and then race to write.
type barrierStore struct {
	keys.Store
	wg   sync.WaitGroup
	once sync.Map
}

func newBarrierStore(st keys.Store, n int) *barrierStore {
	b := &barrierStore{Store: st}
	b.wg.Add(n)
	return b
}

type callerKey struct{}

func (b *barrierStore) ListSigningKeys(ctx context.Context) ([]store.SigningKey, error) {
	recs, err := b.Store.ListSigningKeys(ctx)
	if id := ctx.Value(callerKey{}); id != nil {
		if _, seen := b.once.LoadOrStore(id, true); !seen {
			b.wg.Done()
			b.wg.Wait()
		}
	}
	return recs, err
}

func TestConcurrentRotateOneWins(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			const n = 3
			clk := newClock()
			st := openStore(t, backend)
			kr := ring(t, kek(t))
			seed := initManager(t, st, kr, keys.AlgES256, clk)
			before := statesOf(t, seed)
			clk.Set(before[store.KeyNext][0].SigningSafeAt)

			b := newBarrierStore(st, n)
			managers := make([]*keys.Manager, n)
			for i := range managers {
				managers[i] = initManager(t, b, kr, keys.AlgES256, clk)
			}
			var wg sync.WaitGroup
			results := make([]error, n)
			rotations := make([]keys.Rotation, n)
			for i, m := range managers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx := context.WithValue(context.Background(), callerKey{}, i)
					rotations[i], results[i] = m.Rotate(ctx, false)
				}()
			}
			wg.Wait()
			wins := 0
			var winner keys.Rotation
			for i, err := range results {
				switch {
				case err == nil:
					wins++
					winner = rotations[i]
				case errors.Is(err, store.ErrConflict):
				default:
					t.Fatalf("Rotate %d: %v", i, err)
				}
			}
			if wins != 1 {
				t.Fatalf("%d rotations won, want exactly 1 (%v)", wins, results)
			}
			after := statesOf(t, seed)
			if len(after[store.KeyRetired]) != 1 || len(after[store.KeyActive]) != 1 || len(after[store.KeyNext]) != 1 {
				t.Fatalf("states after the race %+v", after)
			}
			// Losers re-synced: every instance signs with the winner's key.
			for i, m := range managers {
				if m.ActiveKID() != winner.Activated.KID {
					t.Fatalf("instance %d signs with %s, want %s", i, m.ActiveKID(), winner.Activated.KID)
				}
			}
		})
	}
}

func TestConcurrentInitAgreesOnFirstKey(t *testing.T) {
	for _, backend := range backends {
		for _, alg := range []string{keys.AlgRS256, keys.AlgEdDSA} {
			t.Run(backend+"/"+alg, func(t *testing.T) {
				const n = 4
				clk := newClock()
				st := openStore(t, backend)
				kr := ring(t, kek(t))
				b := newBarrierStore(st, n)
				managers := make([]*keys.Manager, n)
				errs := make([]error, n)
				var wg sync.WaitGroup
				for i := range managers {
					managers[i] = newManager(t, b, kr, alg, clk, nil)
					wg.Add(1)
					go func() {
						defer wg.Done()
						errs[i] = managers[i].Init(context.WithValue(context.Background(), callerKey{}, i))
					}()
				}
				wg.Wait()
				for i, err := range errs {
					if err != nil {
						t.Fatalf("Init %d: %v", i, err)
					}
				}
				kid := managers[0].ActiveKID()
				tok := sign(t, managers[0])
				for i, m := range managers {
					if m.ActiveKID() != kid {
						t.Fatalf("instance %d signs with %s, instance 0 with %s", i, m.ActiveKID(), kid)
					}
					if _, _, err := m.Verify(tok); err != nil {
						t.Fatalf("instance %d rejects instance 0's token: %v", i, err)
					}
					if body, _, _ := m.JWKS(); string(body) != string(func() []byte { b, _, _ := managers[0].JWKS(); return b }()) {
						t.Fatalf("instance %d serves another JWKS", i)
					}
				}
				if st := statesOf(t, managers[0]); len(st[store.KeyActive]) != 1 || len(st[store.KeyNext]) != 1 || len(st) != 2 {
					t.Fatalf("keys after concurrent Init: %+v", st)
				}
			})
		}
	}
}

// TestAutoRotation runs two instances with automatic rotation on one store:
// the rotation happens once, both instances pick it up, and it waits until
// the next key is safe.
func TestAutoRotation(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			const (
				// The real sync period of Run, the shortest PORTCULLIS_KEY_SYNC_INTERVAL:
				// Run gives each sync and rotation that long, new connections included.
				tick   = 100 * time.Millisecond
				maxAge = time.Second
			)
			interval := 2 * keys.PublicationDelay(tick, maxAge)
			clk := newClock()
			st := openStore(t, backend)
			kr := ring(t, kek(t))
			var rotations atomic.Int32
			var last atomic.Value
			mk := func() *keys.Manager {
				m := newManager(t, st, kr, keys.AlgEdDSA, clk, func(c *keys.Config) {
					c.SyncInterval = tick
					c.JWKSMaxAge = maxAge
					c.RotationInterval = interval
					c.OnAutoRotate = func(r keys.Rotation) { rotations.Add(1); last.Store(r) }
				})
				if err := m.Init(context.Background()); err != nil {
					t.Fatal(err)
				}
				return m
			}
			m1, m2 := mk(), mk()
			first := m1.ActiveKID()
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			for _, m := range []*keys.Manager{m1, m2} {
				wg.Add(1)
				go func() { defer wg.Done(); m.Run(ctx) }()
			}
			defer func() { cancel(); wg.Wait() }()

			// Not due yet: several sync periods pass without a rotation.
			clk.Advance(interval - time.Millisecond)
			time.Sleep(10 * tick)
			if rotations.Load() != 0 || m1.ActiveKID() != first {
				t.Fatalf("rotated before the interval (%d rotations)", rotations.Load())
			}
			if age := m1.ActiveKeyAge(); age != interval-time.Millisecond {
				t.Fatalf("ActiveKeyAge %s", age)
			}

			clk.Advance(time.Millisecond)
			deadline := time.Now().Add(10 * time.Second)
			for rotations.Load() == 0 || m1.ActiveKID() == first || m2.ActiveKID() == first {
				if time.Now().After(deadline) {
					t.Fatalf("no rotation seen by both instances (%d rotations, active %s / %s)", rotations.Load(), m1.ActiveKID(), m2.ActiveKID())
				}
				time.Sleep(tick)
			}
			time.Sleep(10 * tick) // more sync periods: nobody rotates again
			if n := rotations.Load(); n != 1 {
				t.Fatalf("%d automatic rotations, want 1", n)
			}
			rot := last.Load().(keys.Rotation)
			if rot.Retired.KID != first || m1.ActiveKID() != rot.Activated.KID || m2.ActiveKID() != rot.Activated.KID || rot.Forced {
				t.Fatalf("rotation %+v; active %s / %s", rot, m1.ActiveKID(), m2.ActiveKID())
			}
			if st := statesOf(t, m1); len(st[store.KeyRetired]) != 1 {
				t.Fatalf("states %+v", st)
			}

			// A next key revoked late in the period is replaced; when the active key is
			// due, the rotation waits until the replacement is safe to sign.
			activated := *rot.Activated.ActivatedAt
			clk.Set(activated.Add(interval * 3 / 4))
			rev, err := m1.Revoke(context.Background(), rot.Next.KID)
			if err != nil {
				t.Fatal(err)
			}
			clk.Set(activated.Add(interval))
			if !rev.Next.SigningSafeAt.After(clk.Now()) {
				t.Fatalf("test setup: the replacement is already safe at %s", rev.Next.SigningSafeAt)
			}
			time.Sleep(10 * tick)
			if n := rotations.Load(); n != 1 {
				t.Fatalf("rotated to a next key not yet safe (%d rotations)", n)
			}
			clk.Set(rev.Next.SigningSafeAt)
			deadline = time.Now().Add(10 * time.Second)
			for rotations.Load() < 2 || m2.ActiveKID() != rev.Next.KID {
				if time.Now().After(deadline) {
					t.Fatalf("the replacement next key was never promoted (%d rotations)", rotations.Load())
				}
				time.Sleep(tick)
			}
		})
	}
}

func TestRotateIfDueManual(t *testing.T) {
	clk := newClock()
	m := initManager(t, openStore(t, "sqlite"), ring(t, kek(t)), keys.AlgES256, clk)
	clk.Advance(1000 * time.Hour)
	if _, done, err := m.RotateIfDue(context.Background()); done || err != nil {
		t.Fatalf("RotateIfDue with manual rotation: done %v err %v", done, err)
	}
}

func TestReencrypt(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			clk := newClock()
			st := openStore(t, backend)
			oldKEK, newKEK := kek(t), kek(t)
			m1 := initManager(t, st, ring(t, oldKEK), keys.AlgRS256, clk)
			tok := sign(t, m1)

			// The operator lists the new KEK first: everything still decrypts (with the second key).
			m2 := initManager(t, st, ring(t, newKEK+","+oldKEK), keys.AlgRS256, clk)
			if _, _, err := m2.Verify(tok); err != nil {
				t.Fatal(err)
			}
			if _, err := m2.Rotate(ctx, true); err != nil { // a retired key must be re-encrypted too
				t.Fatal(err)
			}
			n, err := m2.Reencrypt(ctx)
			if err != nil || n != 2 {
				// active and retired were sealed under the old KEK; the new next key under the new one.
				t.Fatalf("Reencrypt = %d, %v; want 2", n, err)
			}
			if n, err := m2.Reencrypt(ctx); err != nil || n != 0 {
				t.Fatalf("second Reencrypt = %d, %v; want 0", n, err)
			}
			// The old KEK can now be dropped.
			m3 := initManager(t, st, ring(t, newKEK), keys.AlgRS256, clk)
			if _, _, err := m3.Verify(sign(t, m3)); err != nil {
				t.Fatal(err)
			}
			recs, err := st.ListSigningKeys(ctx)
			if err != nil {
				t.Fatal(err)
			}
			only := ring(t, newKEK)
			for _, r := range recs {
				if r.State == store.KeyActive || r.State == store.KeyNext {
					continue
				}
				// Every stored key, not only the ones a Manager loads, opens with the new KEK alone.
				if _, err := only.Open(r.PrivateEncrypted, []byte("portcullis signing key\x00"+r.KID)); err != nil {
					t.Fatalf("%s key %s after reencrypt: %v", r.State, r.KID, err)
				}
			}

			// A wrong KEK fails cleanly, says what to do, and never shows key material.
			m4 := newManager(t, st, ring(t, oldKEK), keys.AlgRS256, clk, nil)
			err = m4.Init(ctx)
			if !errors.Is(err, keys.ErrDecrypt) || !strings.Contains(err.Error(), "not configured") {
				t.Fatalf("Init with the old KEK only: %v", err)
			}
			if strings.Contains(err.Error(), oldKEK) || strings.Contains(err.Error(), newKEK) {
				t.Fatalf("error shows key material: %v", err)
			}
			if _, err := m4.Sign(map[string]any{}, "JWT"); !errors.Is(err, keys.ErrNotReady) {
				t.Fatalf("Sign after a failed Init: %v", err)
			}
			if _, err := m4.Reencrypt(ctx); !errors.Is(err, keys.ErrDecrypt) {
				t.Fatalf("Reencrypt with the wrong KEK: %v", err)
			}
		})
	}
}

func TestAlgorithmChange(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	st := openStore(t, "sqlite")
	kr := ring(t, kek(t))
	rsa := initManager(t, st, kr, keys.AlgRS256, clk)
	oldTok := sign(t, rsa)
	// The operator switches to EdDSA: existing keys keep their algorithm, the new next key is EdDSA.
	ed := initManager(t, st, kr, keys.AlgEdDSA, clk)
	if _, err := ed.Rotate(ctx, true); err != nil {
		t.Fatal(err)
	}
	if got := ed.SigningAlgs(); strings.Join(got, ",") != "RS256,EdDSA" {
		t.Fatalf("SigningAlgs %v", got)
	}
	if _, err := ed.Rotate(ctx, true); err != nil {
		t.Fatal(err)
	}
	tok := sign(t, ed)
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		t.Fatalf("signed with %v", err)
	}
	_ = jws
	if _, _, err := ed.Verify(oldTok); err != nil {
		t.Fatalf("RS256 token after switching: %v", err)
	}
}

func TestNewManagerRefusesBadSettings(t *testing.T) {
	st := openStore(t, "sqlite")
	kr := ring(t, kek(t))
	tests := []struct {
		name    string
		mutate  func(*keys.Config)
		wantErr string
	}{
		{name: "ok/defaults", mutate: func(*keys.Config) {}},
		{name: "ok/rotation-twice-the-delay", mutate: func(c *keys.Config) { c.RotationInterval = 2 * (syncInterval + jwksMaxAge) }},
		{name: "fail/rotation-too-short", mutate: func(c *keys.Config) { c.RotationInterval = 2*(syncInterval+jwksMaxAge) - time.Second }, wantErr: "shorter than twice the publication delay"},
		{name: "fail/negative-rotation", mutate: func(c *keys.Config) { c.RotationInterval = -time.Hour }, wantErr: "negative"},
		{name: "fail/no-kek", mutate: func(c *keys.Config) { c.KEKs = keys.KEKRing{} }, wantErr: "no key-encryption key"},
		{name: "fail/no-store", mutate: func(c *keys.Config) { c.Store = nil }, wantErr: "no key store"},
		{name: "fail/alg", mutate: func(c *keys.Config) { c.Alg = "HS256" }, wantErr: `"HS256" not supported`},
		{name: "fail/rsa-bits", mutate: func(c *keys.Config) { c.RSABits = 1024 }, wantErr: "1024 not supported"},
		{name: "fail/sync-interval", mutate: func(c *keys.Config) { c.SyncInterval = 0 }, wantErr: "sync interval"},
		{name: "fail/max-token-ttl", mutate: func(c *keys.Config) { c.MaxTokenTTL = 0 }, wantErr: "longest token lifetime"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := keys.Config{Store: st, KEKs: kr, Alg: keys.AlgRS256, JWKSMaxAge: jwksMaxAge, SyncInterval: syncInterval, MaxTokenTTL: maxTokenTTL}
			tt.mutate(&cfg)
			_, err := keys.NewManager(cfg)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("NewManager error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestManagerBeforeInit(t *testing.T) {
	m := newManager(t, openStore(t, "sqlite"), ring(t, kek(t)), keys.AlgES256, newClock(), nil)
	if body, etag, _ := m.JWKS(); string(body) != `{"keys":[]}` || etag == "" {
		t.Fatalf("JWKS before Init: %s %s", body, etag)
	}
	if _, err := m.Sign(map[string]any{}, "JWT"); !errors.Is(err, keys.ErrNotReady) {
		t.Fatal(err)
	}
	if _, _, err := m.Verify("a.b.c"); !errors.Is(err, keys.ErrNotReady) {
		t.Fatal(err)
	}
	if m.ActiveKeyAge() != 0 || m.SigningAlgs() != nil || m.ActiveKID() != "" {
		t.Fatal("metrics before Init")
	}
}

func TestVerifyTyped(t *testing.T) {
	m := initManager(t, openStore(t, "sqlite"), ring(t, kek(t)), keys.AlgEdDSA, newClock())
	at := sign(t, m)
	idt, err := m.Sign(map[string]any{"sub": "u"}, "JWT")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, token, want string
		wantErr           error
	}{
		{name: "ok/access-token", token: at, want: "at+jwt"},
		{name: "ok/media-type-form", token: at, want: "application/at+jwt"},
		{name: "ok/id-token", token: idt, want: "JWT"},
		{name: "fail/id-token-as-access-token", token: idt, want: "at+jwt", wantErr: keys.ErrWrongType},
		{name: "fail/access-token-as-id-token", token: at, want: "JWT", wantErr: keys.ErrWrongType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			payload, _, err := m.VerifyTyped(tt.token, tt.want)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (payload != nil) {
				t.Fatalf("VerifyTyped = %s, %v; want %v", payload, err, tt.wantErr)
			}
		})
	}
}

func TestJWKSDoesNotAllocate(t *testing.T) {
	m := initManager(t, openStore(t, "sqlite"), ring(t, kek(t)), keys.AlgES256, newClock())
	var n int
	if allocs := testing.AllocsPerRun(1000, func() { b, e, _ := m.JWKS(); n += len(b) + len(e) }); allocs != 0 {
		t.Fatalf("JWKS allocates %.1f times per call", allocs)
	}
}

func BenchmarkJWKS(b *testing.B) {
	m := initManager(b, openStore(b, "sqlite"), ring(b, kek(b)), keys.AlgES256, newClock())
	b.ReportAllocs()
	var n int
	for b.Loop() {
		body, etag, _ := m.JWKS()
		n += len(body) + len(etag)
	}
}

func BenchmarkSign(b *testing.B) {
	for _, alg := range algs {
		b.Run(alg, func(b *testing.B) {
			m := initManager(b, openStore(b, "sqlite"), ring(b, kek(b)), alg, newClock())
			claims := map[string]any{"iss": "https://issuer.example", "sub": "user-1", "aud": "api", "exp": 1900000000, "iat": 1899999100, "jti": "abc", "scope": "projects:read projects:write"}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Sign(claims, "at+jwt"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	for _, alg := range algs {
		b.Run(alg, func(b *testing.B) {
			m := initManager(b, openStore(b, "sqlite"), ring(b, kek(b)), alg, newClock())
			tok := sign(b, m)
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := m.Verify(tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// failingStore is a key store whose reads fail while down is set (a
// database this instance cannot reach).
type failingStore struct {
	keys.Store
	down atomic.Bool
}

func (f *failingStore) ListSigningKeys(ctx context.Context) ([]store.SigningKey, error) {
	if f.down.Load() {
		return nil, errors.New("connection refused")
	}
	return f.Store.ListSigningKeys(ctx)
}

// TestStaleKeysAreNotUsed: an instance that cannot reload the keys rides
// out one failed sync, then stops signing, verifying and publishing with
// what it holds (ErrStale), so that a key another instance revoked
// meanwhile is neither accepted nor handed to downstream verifiers; a
// sync that succeeds again brings the keys back, without the revoked one.
func TestStaleKeysAreNotUsed(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	sqlite := openStore(t, "sqlite")
	kr := ring(t, kek(t))
	st := &failingStore{Store: sqlite}
	m := initManager(t, st, kr, "EdDSA", clk)
	other := initManager(t, sqlite, kr, "EdDSA", clk) // another instance, which can reach the database
	tok := sign(t, m)
	revoked := m.ActiveKID()

	st.down.Store(true)
	if _, err := other.Revoke(ctx, revoked); err != nil {
		t.Fatal(err)
	}
	clk.Advance(syncInterval)
	if err := m.Refresh(ctx); err == nil {
		t.Fatal("Refresh succeeded against a store that is down")
	}
	// One failed sync: the keys read an interval ago are still used.
	if _, _, err := m.Verify(tok); err != nil {
		t.Fatalf("Verify after one failed sync: %v", err)
	}
	clk.Advance(syncInterval)
	if err := m.Refresh(ctx); err == nil {
		t.Fatal("Refresh succeeded against a store that is down")
	}
	if _, _, err := m.Verify(tok); !errors.Is(err, keys.ErrStale) {
		t.Fatalf("Verify with keys not reloaded for two intervals: %v, want ErrStale", err)
	}
	if _, _, err := m.VerifyTyped(tok, "at+jwt"); !errors.Is(err, keys.ErrStale) {
		t.Fatalf("VerifyTyped: %v, want ErrStale", err)
	}
	if _, err := m.Sign(map[string]any{"sub": "u"}, "at+jwt"); !errors.Is(err, keys.ErrStale) {
		t.Fatalf("Sign: %v, want ErrStale", err)
	}
	if err := m.Usable(); !errors.Is(err, keys.ErrStale) {
		t.Fatalf("Usable: %v, want ErrStale", err)
	}
	if body, _, err := m.JWKS(); !errors.Is(err, keys.ErrStale) || body != nil {
		t.Fatalf("JWKS: %d bytes, %v; want ErrStale", len(body), err)
	}

	st.down.Store(false)
	clk.Advance(syncInterval)
	if err := m.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Verify(tok); !errors.Is(err, keys.ErrRevokedKey) {
		t.Fatalf("Verify after the store came back: %v, want ErrRevokedKey", err)
	}
	if kids := jwksKIDs(t, m); contains(kids, revoked) {
		t.Fatalf("JWKS after the store came back still has the revoked key: %v", kids)
	}
	if err := m.Usable(); err != nil {
		t.Fatalf("Usable after the store came back: %v", err)
	}
	sign(t, m)
}

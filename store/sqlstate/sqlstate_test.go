package sqlstate

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
	"github.com/portcullis-auth/portcullis/store/storetest"
	"github.com/portcullis-auth/portcullis/store/testservers"
)

func TestMain(m *testing.M) { testservers.Main(m) }

// backends names each database the state runs on and gives a fresh,
// migrated sqlstore for a test.
var backends = []struct {
	name string
	url  func(t *testing.T) string
}{
	{"postgres", func(t *testing.T) string { return testservers.PostgresURL(t) }},
	{"sqlite", func(t *testing.T) string { return "sqlite://" + filepath.Join(t.TempDir(), "state.db") }},
}

func openStore(t *testing.T, url string) *sqlstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := sqlstore.Open(ctx, url)
	if err != nil {
		t.Fatalf("sqlstore.Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return s
}

func TestTokenStateConformance(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			storetest.RunTokenStateTests(t, func(t *testing.T, cfg storetest.Config) storetest.Backend {
				url := b.url(t)
				db := openStore(t, url).DB()
				opts := []Option{WithMaxSessionsPerUser(cfg.MaxSessionsPerUser), WithMaxAccessTokenTTL(cfg.Horizon)}
				st := withRotationLimit(New(db, opts...), cfg)
				// A second process: its own connection pool on the same database.
				again := func(t *testing.T) store.TokenState {
					return withRotationLimit(New(openStore(t, url).DB(), opts...), cfg)
				}
				forget := func(t *testing.T, sid string) {
					t.Helper()
					if err := db.Model(&familyRow{}).Where("id = ?", sid).Update("revoked_at", nil).Error; err != nil {
						t.Fatalf("unmark family: %v", err)
					}
					if err := db.Exec("DELETE FROM token_revocations WHERE kind = ? AND value = ?", string(store.RevokedSession), sid).Error; err != nil {
						t.Fatalf("forget the session's revocation: %v", err)
					}
				}
				purge := func(t *testing.T, now time.Time) {
					t.Helper()
					if _, err := st.Purge(testCtx(t), now); err != nil {
						t.Fatalf("purge: %v", err)
					}
				}
				return storetest.Backend{State: st, Again: again, Forget: forget, Purge: purge, Stored: func(t *testing.T, sid string) []byte {
					t.Helper()
					var f familyRow
					if err := db.Where("id = ?", sid).Take(&f).Error; err != nil {
						t.Fatalf("read family: %v", err)
					}
					out := fmt.Appendf(nil, "%+v", f)
					var used []usedTokenRow
					if err := db.Where("family_id = ?", sid).Find(&used).Error; err != nil {
						t.Fatalf("read used tokens: %v", err)
					}
					for _, u := range used {
						out = append(out, u.TokenHash...)
					}
					return append(append(out, f.SuccessorSealed...), f.CurrentHash...)
				}}
			})
		})
	}
}

// withRotationLimit sets the state's bound on a family's used hashes to
// the suite's, when it asks for one.
func withRotationLimit(st *State, cfg storetest.Config) *State {
	if cfg.MaxFamilyRotations > 0 {
		st.maxRotations = cfg.MaxFamilyRotations
	}
	return st
}

func TestRevocationLogConformance(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			storetest.RunRevocationLogTests(t, func(t *testing.T) store.RevocationLog {
				return New(openStore(t, b.url(t)).DB())
			})
		})
	}
}

func testCtx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func hashOf(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func testFamily(id string, now time.Time) store.RefreshFamily {
	return store.RefreshFamily{
		ID: id, UserID: "usr_" + id, ClientID: "web", Scope: "openid", CreatedAt: now,
		AbsoluteExpiry: now.Add(24 * time.Hour), IdleTTL: time.Hour,
	}
}

// TestRotateRaceAcrossInstances races rotations of one refresh token from
// several states with their own connection pools on one database, as server
// instances would: exactly one rotates; with grace 0 the others see reuse,
// with grace they all get the winner's successor.
func TestRotateRaceAcrossInstances(t *testing.T) {
	const instances, perInstance, rounds = 4, 5, 5
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			url := b.url(t)
			states := make([]*State, instances)
			for i := range states {
				s := openStore(t, url)
				storetest.WarmPool(t, s, perInstance)
				states[i] = New(s.DB())
			}
			now := time.Now().UTC()
			for round := 0; round < rounds; round++ {
				for _, grace := range []time.Duration{0, 30 * time.Second} {
					famID := fmt.Sprintf("sid-%d-%v", round, grace)
					if err := states[0].CreateFamily(testCtx(t), testFamily(famID, now), hashOf(famID+"/0")); err != nil {
						t.Fatalf("CreateFamily: %v", err)
					}
					n := instances * perInstance
					results := make([]store.RotateResult, n)
					errs := make([]error, n)
					var start, done sync.WaitGroup
					start.Add(1)
					for i := 0; i < n; i++ {
						done.Add(1)
						go func(i int) {
							defer done.Done()
							start.Wait()
							results[i], errs[i] = states[i%instances].RotateRefresh(testCtx(t), store.RotateRequest{
								FamilyID: famID, PresentedHash: hashOf(famID + "/0"),
								NextHash: hashOf(fmt.Sprintf("%s/next/%d", famID, i)), NextSealed: []byte(fmt.Sprint("sealed-", i)),
								Now: now.Add(time.Second), Grace: grace,
							})
						}(i)
					}
					start.Done()
					done.Wait()
					winner := -1
					for i, r := range results {
						if errs[i] != nil {
							t.Fatalf("racer %d: %v", i, errs[i])
						}
						switch {
						case r.Outcome == store.RotateOK:
							if winner >= 0 {
								t.Fatalf("round %d grace %v: racers %d and %d both rotated", round, grace, winner, i)
							}
							winner = i
						case grace == 0 && (r.Outcome == store.RotateReuseDetected || r.Outcome == store.RotateInvalid):
						case grace > 0 && r.Outcome == store.RotateGraceReplay:
						default:
							t.Fatalf("round %d grace %v: racer %d got %v", round, grace, i, r.Outcome)
						}
					}
					if winner < 0 {
						t.Fatalf("round %d grace %v: nobody rotated", round, grace)
					}
					for i, r := range results {
						if r.Outcome == store.RotateGraceReplay && string(r.SuccessorSealed) != fmt.Sprint("sealed-", winner) {
							t.Fatalf("racer %d replayed successor %q, winner stored sealed-%d", i, r.SuccessorSealed, winner)
						}
					}
				}
			}
		})
	}
}

func TestPurge(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			st := New(openStore(t, b.url(t)).DB(), WithMaxAccessTokenTTL(time.Hour))
			c := testCtx(t)
			now := time.Now().UTC().Truncate(time.Millisecond)
			mk := func(id string, fam store.RefreshFamily) {
				t.Helper()
				if err := st.CreateFamily(c, fam, hashOf(id+"/0")); err != nil {
					t.Fatalf("CreateFamily: %v", err)
				}
			}
			live := testFamily("live", now)
			mk("live", live)
			expired := testFamily("expired", now.Add(-48*time.Hour))
			mk("expired", expired)
			idle := testFamily("idle", now.Add(-2*time.Hour))
			mk("idle", idle)
			mk("revoked", testFamily("revoked", now))
			if err := st.RevokeFamily(c, "revoked", now); err != nil {
				t.Fatalf("RevokeFamily: %v", err)
			}
			// The live family rotated with a grace window that has passed by purge time.
			res, err := st.RotateRefresh(c, store.RotateRequest{FamilyID: "live", PresentedHash: hashOf("live/0"),
				NextHash: hashOf("live/1"), NextSealed: []byte("sealed"), Now: now, Grace: 10 * time.Second})
			if err != nil || res.Outcome != store.RotateOK {
				t.Fatalf("rotate live: %v %v", res.Outcome, err)
			}
			if err := st.RevokeAccessToken(c, "gone-jti", now.Add(-time.Minute)); err != nil {
				t.Fatalf("RevokeAccessToken: %v", err)
			}
			if err := st.RevokeAccessToken(c, "live-jti", now.Add(time.Hour)); err != nil {
				t.Fatalf("RevokeAccessToken: %v", err)
			}
			if _, _, err := st.Hit(c, "old-window", time.Minute, now.Add(-time.Hour)); err != nil {
				t.Fatalf("Hit: %v", err)
			}
			if _, _, err := st.Hit(c, "current-window", time.Minute, now); err != nil {
				t.Fatalf("Hit: %v", err)
			}

			at := now.Add(30 * time.Second)
			pr, err := st.Purge(c, at)
			if err != nil {
				t.Fatalf("Purge: %v", err)
			}
			want := PurgeResult{Revocations: 1, Counters: 1, Families: 3, Successors: 1}
			if pr != want {
				t.Fatalf("Purge = %+v, want %+v", pr, want)
			}
			// What was kept still works.
			revoked, err := st.IsAccessTokenRevoked(c, store.AccessTokenRef{JTI: "live-jti"})
			if err != nil || !revoked {
				t.Fatalf("live jti after purge: %v %v", revoked, err)
			}
			revoked, err = st.IsAccessTokenRevoked(c, store.AccessTokenRef{JTI: "x", SID: "revoked"})
			if err != nil || !revoked {
				t.Fatalf("purged revoked family's session not revoked: %v %v", revoked, err)
			}
			if n, _, err := st.Hit(c, "current-window", time.Minute, now.Add(time.Second)); err != nil || n != 2 {
				t.Fatalf("current window after purge: %d %v", n, err)
			}
			// The grace successor is gone: the old token is now plain reuse.
			res, err = st.RotateRefresh(c, store.RotateRequest{FamilyID: "live", PresentedHash: hashOf("live/0"),
				NextHash: hashOf("live/x"), Now: now.Add(time.Second), Grace: 10 * time.Second})
			if err != nil || res.Outcome != store.RotateReuseDetected || res.SuccessorSealed != nil {
				t.Fatalf("old token after purge: %v %q %v", res.Outcome, res.SuccessorSealed, err)
			}
			pr, err = st.Purge(c, at)
			if err != nil || pr.Revocations != 0 || pr.Counters != 0 || pr.Successors != 0 || pr.Families != 1 {
				t.Fatalf("second Purge = %+v, %v; want only the family just revoked", pr, err)
			}
		})
	}
}

func TestRevocationExpiry(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ttl := 90 * time.Minute
			now := time.Now().UTC().Truncate(time.Millisecond)
			st := New(openStore(t, b.url(t)).DB(), WithMaxAccessTokenTTL(ttl), WithClock(func() time.Time { return now }))
			c := testCtx(t)
			if err := st.CreateFamily(c, testFamily("s1", now), hashOf("s1")); err != nil {
				t.Fatalf("CreateFamily: %v", err)
			}
			if err := st.RevokeFamily(c, "s1", now); err != nil {
				t.Fatalf("RevokeFamily: %v", err)
			}
			cutoff := now.Add(time.Minute)
			if err := st.RevokeUserSessions(c, "usr_u", cutoff); err != nil {
				t.Fatalf("RevokeUserSessions: %v", err)
			}
			for _, tc := range []struct {
				name  string
				at    time.Time
				kinds []store.RevocationKind
			}{
				{"ok/all_active_before_expiry", now.Add(ttl - time.Millisecond), []store.RevocationKind{store.RevokedSession, store.RevokedUser}},
				{"ok/session_kept_for_the_clock_skew_after_ttl", store.RevocationKeptUntil(now.Add(ttl)).Add(-time.Millisecond), []store.RevocationKind{store.RevokedSession, store.RevokedUser}},
				{"ok/session_expires_after_ttl_and_skew", store.RevocationKeptUntil(now.Add(ttl)), []store.RevocationKind{store.RevokedUser}},
				{"ok/user_kept_until_its_lifetime_and_skew", store.RevocationKeptUntil(cutoff.Add(store.UserCutoffLifetime(ttl))).Add(-time.Millisecond), []store.RevocationKind{store.RevokedUser}},
				{"ok/user_expires_its_lifetime_and_skew_after_cutoff", store.RevocationKeptUntil(cutoff.Add(store.UserCutoffLifetime(ttl))), nil},
			} {
				t.Run(tc.name, func(t *testing.T) {
					revs, err := st.ActiveRevocations(testCtx(t), tc.at)
					if err != nil {
						t.Fatalf("ActiveRevocations: %v", err)
					}
					var kinds []store.RevocationKind
					for _, r := range revs {
						kinds = append(kinds, r.Kind)
					}
					if fmt.Sprint(kinds) != fmt.Sprint(tc.kinds) {
						t.Fatalf("active kinds %v, want %v (%+v)", kinds, tc.kinds, revs)
					}
				})
			}
		})
	}
}

func TestInvalidInput(t *testing.T) {
	st := New(openStore(t, backends[1].url(t)).DB())
	c := testCtx(t)
	now := time.Now()
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"fail/family_without_id", st.CreateFamily(c, store.RefreshFamily{AbsoluteExpiry: now}, hashOf("x"))},
		{"fail/family_without_hash", st.CreateFamily(c, testFamily("f", now), nil)},
		{"fail/hit_zero_window", func() error { _, _, err := st.Hit(c, "k", 0, now); return err }()},
		{"fail/hit_empty_key", func() error { _, _, err := st.Hit(c, "", time.Minute, now); return err }()},
		{"fail/revoke_empty_jti", st.RevokeAccessToken(c, "", now)},
		{"fail/revoke_empty_user", st.RevokeUserSessions(c, "", now)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.err == nil {
				t.Fatalf("no error")
			}
		})
	}
	if err := st.CreateFamily(c, testFamily("dup", now), hashOf("a")); err != nil {
		t.Fatalf("CreateFamily: %v", err)
	}
	if err := st.CreateFamily(c, testFamily("dup", now), hashOf("b")); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("duplicate family: %v, want store.ErrAlreadyExists", err)
	}
}

// TestPostgresDown: with the database gone every call fails closed with
// store.ErrUnavailable, and works again when it is back.
func TestPostgresDown(t *testing.T) {
	pg := testservers.NewPostgres(t)
	url, err := testservers.CreateDatabase(pg.URL())
	if err != nil {
		t.Fatalf("CreateDatabase: %v", err)
	}
	st := New(openStore(t, url).DB())
	c := testCtx(t)
	if err := st.RevokeAccessToken(c, "j1", time.Now().Add(time.Hour)); err != nil {
		t.Fatalf("RevokeAccessToken: %v", err)
	}
	if err := pg.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	short, cancel := context.WithTimeout(c, 5*time.Second)
	defer cancel()
	if err := st.Ping(short); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Ping: %v, want store.ErrUnavailable", err)
	}
	if _, err := st.IsAccessTokenRevoked(short, store.AccessTokenRef{JTI: "j1"}); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("IsAccessTokenRevoked: %v, want store.ErrUnavailable", err)
	}
	if _, err := st.RotateRefresh(short, store.RotateRequest{FamilyID: "f", PresentedHash: hashOf("a"), NextHash: hashOf("b"), Now: time.Now()}); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("RotateRefresh: %v, want store.ErrUnavailable", err)
	}
	if err := pg.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for st.Ping(c) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("did not recover")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r, err := st.IsAccessTokenRevoked(c, store.AccessTokenRef{JTI: "j1"}); err != nil || !r {
		t.Fatalf("after recovery: %v %v", r, err)
	}
}

// TestPurgeBrowserSignIn: Purge deletes expired single-use records and
// ended, idle or expired browser sessions, and keeps the live ones working;
// a taken code stays past its expiry until its tombstone ends
// (store.TakenKeptFor).
func TestPurgeBrowserSignIn(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			now := time.Now().UTC().Truncate(time.Millisecond)
			st := New(openStore(t, b.url(t)).DB(), WithClock(func() time.Time { return now.Add(-time.Hour) }))
			c := testCtx(t)
			if err := st.PutOnce(c, store.OnceAuthCode, hashOf("live"), []byte("v"), now.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			if err := st.PutOnce(c, store.OnceAuthCode, hashOf("expired"), []byte("v"), now.Add(-time.Minute)); err != nil {
				t.Fatal(err)
			}
			mk := func(id string, created time.Time, idle time.Duration, abs time.Time) {
				t.Helper()
				bs := store.BrowserSession{ID: id, UserID: "u", AuthTime: created, CreatedAt: created, LastUsedAt: created,
					IdleTTL: idle, AbsoluteExpiry: abs}
				if _, err := st.CreateBrowserSession(c, bs, hashOf("cookie-"+id)); err != nil {
					t.Fatalf("CreateBrowserSession(%s): %v", id, err)
				}
			}
			mk("live", now, time.Hour, now.Add(time.Hour))
			mk("ended", now, time.Hour, now.Add(time.Hour))
			mk("idle", now.Add(-2*time.Hour), time.Hour, now.Add(time.Hour))
			mk("expired", now.Add(-2*time.Hour), 0, now.Add(-time.Minute))
			if _, err := st.EndBrowserSessionGrants(c, "ended", now); err != nil {
				t.Fatal(err)
			}
			pr, err := st.Purge(c, now)
			if err != nil {
				t.Fatalf("Purge: %v", err)
			}
			if pr.Once != 1 || pr.Browser != 3 {
				t.Fatalf("Purge = %+v, want Once 1, Browser 3", pr)
			}
			if _, err := st.TakeOnce(c, store.OnceAuthCode, hashOf("live"), now); err != nil {
				t.Fatalf("live record after purge: %v", err)
			}
			if _, err := st.FindBrowserSession(c, hashOf("cookie-live"), now); err != nil {
				t.Fatalf("live session after purge: %v", err)
			}
			tombstoneEnd := now.Add(store.TakenKeptFor(store.OnceAuthCode))
			for _, p := range []struct {
				name string
				at   time.Time
				want int64
			}{
				{"past the code's expiry", now.Add(2 * time.Minute), 0},
				{"1 ms before its tombstone ends", tombstoneEnd.Add(-time.Millisecond), 0},
				{"when its tombstone ends", tombstoneEnd, 1},
			} {
				if pr, err := st.Purge(c, p.at); err != nil || pr.Once != p.want {
					t.Fatalf("Purge %s = %+v, %v; want Once %d", p.name, pr, err, p.want)
				}
			}
		})
	}
}

// TestPurgeLeavesTheWriteLock: on SQLite, where one connection at a time
// may write, a purge of a large backlog lets other writers and readers
// through while it runs (found by a review: one transaction deleted the
// whole backlog, so other writers waited for all of it, past the busy
// timeout failing with SQLITE_BUSY, and reads stalled behind them). A
// second process (its own pool) counts a hit and checks a revocation again
// and again until it has done so a few times while the purge was visibly
// under way (part of the backlog gone, part left), or the purge ended.
// Before the change it never saw the purge under way: the backlog went in
// one commit, and its calls waited for it.
// PostgreSQL's row locks never made the other writer wait: TestPurge and
// TestPurgeInBatches check the batched purge there.
func TestPurgeLeavesTheWriteLock(t *testing.T) {
	const (
		n       = 50000
		during  = 5               // rounds of calls made while the purge is under way
		maxWait = 2 * time.Second // a round may wait for a batch, never for the backlog
		seedSQL = `WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < ?)
			INSERT INTO once_records (kind, key_hash, value, expires_at)
			SELECT 'auth_request', randomblob(32), randomblob(64), ? FROM c`
	)
	url := backends[1].url(t)
	st := New(openStore(t, url).DB())
	other := New(openStore(t, url).DB())
	c := testCtx(t)
	if err := st.db.WithContext(c).Exec(seedSQL, n, ms(time.Now().Add(-time.Hour))).Error; err != nil {
		t.Fatalf("seed expired records: %v", err)
	}
	purgeCtx, stopPurge := context.WithCancel(c)
	defer stopPurge()
	purged, done := make(chan struct{}), make(chan struct{})
	var (
		worst time.Duration
		errs  []error
		seen  int
	)
	go func() {
		defer close(done)
		defer stopPurge() // seen enough: the rest of the backlog does not matter here
		for seen < during {
			select {
			case <-purged:
				return
			default:
			}
			start := time.Now()
			if _, _, err := other.Hit(c, "login_ip:192.0.2.1", time.Minute, time.Now()); err != nil {
				errs = append(errs, err)
			}
			if _, err := other.IsAccessTokenRevoked(c, store.AccessTokenRef{JTI: "j"}); err != nil {
				errs = append(errs, err)
			}
			worst = max(worst, time.Since(start))
			var left int64
			if err := other.db.WithContext(c).Raw("SELECT count(*) FROM once_records").Scan(&left).Error; err != nil {
				errs = append(errs, err)
			}
			if left > 0 && left < n {
				seen++
			}
		}
	}()
	start := time.Now()
	pr, err := st.Purge(purgeCtx, time.Now())
	close(purged)
	<-done
	t.Logf("purge for %v: %+v, %v; %d rounds of calls while it was under way, the slowest %v", time.Since(start), pr, err, seen, worst)
	if err != nil && purgeCtx.Err() == nil { // stopped by the test: fine
		t.Fatalf("Purge: %v", err)
	}
	if len(errs) > 0 || worst > maxWait || seen < during {
		t.Fatalf("the purge stalled the other process: %d of %d rounds made while it was under way, %d calls failed (%v), the slowest round waited %v (at most %v)",
			seen, during, len(errs), errors.Join(errs...), worst, maxWait)
	}
}

// TestPurgeInBatches: a purge in batches smaller than what it deletes
// (one row, two, exactly the number, the default) deletes what it should,
// however the dead rows and the live ones interleave, keeps the live ones,
// and takes a family's used hashes with it.
func TestPurgeInBatches(t *testing.T) {
	const each = 5 // dead rows, and live ones, of every kind
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			db := openStore(t, b.url(t)).DB()
			for _, batch := range []int{1, 2, each, defaultPurgeBatch} {
				t.Run(fmt.Sprintf("ok/batch_%d", batch), func(t *testing.T) {
					st := New(db, WithMaxAccessTokenTTL(time.Hour))
					st.purgeBatch = batch
					c := testCtx(t)
					now := time.Now().UTC().Truncate(time.Millisecond)
					at := now.Add(30 * time.Second) // past the grace windows, before the live rows end
					id := func(kind string, i int) string { return fmt.Sprintf("b%d-%s-%02d", batch, kind, i) }
					var dead, live []string // families
					for i := range 2 * each {
						f := id("fam", i)
						if err := st.CreateFamily(c, testFamily(f, now), hashOf(f+"/0")); err != nil {
							t.Fatalf("CreateFamily: %v", err)
						}
						res, err := st.RotateRefresh(c, store.RotateRequest{FamilyID: f, PresentedHash: hashOf(f + "/0"),
							NextHash: hashOf(f + "/1"), NextSealed: []byte("sealed"), Now: now, Grace: 10 * time.Second})
						if err != nil || res.Outcome != store.RotateOK {
							t.Fatalf("rotate %s: %v %v", f, res.Outcome, err)
						}
						if i%2 == 1 {
							live = append(live, f)
							continue
						}
						dead = append(dead, f)
						if err := st.RevokeFamily(c, f, now); err != nil {
							t.Fatalf("RevokeFamily: %v", err)
						}
					}
					for i := range 2 * each {
						ends := at.Add(time.Hour)
						if i%2 == 0 {
							ends = at.Add(-time.Millisecond)
						}
						revEnds := ends // a revocation is kept store.ClockSkew past its expiry
						if i%2 == 0 {
							revEnds = store.RevocationExpiryKeptAfter(at).Add(-time.Millisecond)
						}
						if err := st.RevokeAccessToken(c, id("jti", i), revEnds); err != nil {
							t.Fatalf("RevokeAccessToken: %v", err)
						}
						if err := st.PutOnce(c, store.OnceAuthCode, hashOf(id("code", i)), []byte("v"), ends); err != nil {
							t.Fatalf("PutOnce: %v", err)
						}
						hitAt := now
						if i%2 == 0 {
							hitAt = now.Add(-time.Hour)
						}
						if _, _, err := st.Hit(c, id("counter", i), time.Minute, hitAt); err != nil {
							t.Fatalf("Hit: %v", err)
						}
						created := now
						if i%2 == 0 {
							created = now.Add(-2 * time.Hour) // idle for longer than its hour
						}
						bs := store.BrowserSession{ID: id("bs", i), UserID: "u", AuthTime: created, CreatedAt: created,
							LastUsedAt: created, IdleTTL: time.Hour, AbsoluteExpiry: now.Add(2 * time.Hour)}
						if _, err := st.CreateBrowserSession(c, bs, hashOf(id("cookie", i))); err != nil {
							t.Fatalf("CreateBrowserSession: %v", err)
						}
					}

					pr, err := st.Purge(c, at)
					want := PurgeResult{Revocations: each, Counters: each, Families: each, Successors: each, Once: each, Browser: each}
					if err != nil || pr != want {
						t.Fatalf("Purge = %+v, %v; want %+v", pr, err, want)
					}
					var gone, kept int64
					if err := db.Model(&usedTokenRow{}).Where("family_id IN ?", dead).Count(&gone).Error; err != nil {
						t.Fatal(err)
					}
					if err := db.Model(&usedTokenRow{}).Where("family_id IN ?", live).Count(&kept).Error; err != nil {
						t.Fatal(err)
					}
					if gone != 0 || kept != each {
						t.Fatalf("used hashes: %d of the purged families left (want 0), %d of the live ones (want %d)", gone, kept, each)
					}
					for i := 1; i < 2*each; i += 2 {
						if _, err := st.FindRefresh(c, id("fam", i), hashOf(id("fam", i)+"/1"), at, 0); err != nil {
							t.Fatalf("live family %d after purge: %v", i, err)
						}
						if r, err := st.IsAccessTokenRevoked(c, store.AccessTokenRef{JTI: id("jti", i)}); err != nil || !r {
							t.Fatalf("live revocation %d after purge: %v %v", i, r, err)
						}
						if _, err := st.PeekOnce(c, store.OnceAuthCode, hashOf(id("code", i)), at); err != nil {
							t.Fatalf("live record %d after purge: %v", i, err)
						}
						if _, err := st.FindBrowserSession(c, hashOf(id("cookie", i)), at); err != nil {
							t.Fatalf("live browser session %d after purge: %v", i, err)
						}
					}
					if pr, err := st.Purge(c, at); err != nil || pr != (PurgeResult{}) {
						t.Fatalf("second Purge = %+v, %v; want nothing", pr, err)
					}
				})
			}
		})
	}
}

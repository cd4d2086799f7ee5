package redisstate

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/sqlstate"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
	"github.com/portcullis-auth/portcullis/store/storetest"
	"github.com/portcullis-auth/portcullis/store/testservers"
)

// revocationLog is the product's durable log: sqlstate on a fresh,
// migrated PostgreSQL database.
func revocationLog(t *testing.T) (*sqlstate.State, *sqlstore.Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := sqlstore.Open(ctx, testservers.PostgresURL(t))
	if err != nil {
		t.Fatalf("sqlstore.Open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if _, err := db.Migrate(ctx); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return sqlstate.New(db.DB()), db
}

// TestTokenStateConformanceWithLog runs the suite with the durable log
// written through, as in production.
func TestTokenStateConformanceWithLog(t *testing.T) {
	log, _ := revocationLog(t)
	t.Run("redis+postgres-log", func(t *testing.T) {
		storetest.RunTokenStateTests(t, func(t *testing.T, cfg storetest.Config) storetest.Backend {
			u, prefix := testservers.RedisURL(t)
			return conformanceBackend(openClient(t, u), prefix, log, cfg)
		})
	})
}

// durableFixture is a state on a private Redis with every kind of
// revocation made, plus a live family.
type durableFixture struct {
	rd         *testservers.Redis
	st         *State
	log        store.RevocationLog
	now        time.Time
	cutoff     time.Time
	revokedJTI string
	liveTok    []byte // current token of the family that was alive
	reusedTok  []byte // a rotated token of the family revoked by reuse
}

const (
	fxUser       = "user-1"
	fxOtherUser  = "user-2"
	fxRevokedSID = "sid-revoked"
	fxReusedSID  = "sid-reused"
	fxLiveSID    = "sid-live"
	fxUserSID    = "sid-of-user"
)

func newDurableFixture(t *testing.T) *durableFixture {
	t.Helper()
	ctx := testCtx(t)
	log, _ := revocationLog(t)
	rd := testservers.NewRedis(t)
	now := time.UnixMilli(time.Now().UnixMilli())
	f := &durableFixture{
		rd: rd, log: log, now: now, cutoff: now.Add(-time.Minute), revokedJTI: "jti-revoked",
		st: New(openClient(t, rd.URL()), Options{Log: log, MaxAccessTokenTTL: time.Hour}),
	}
	st := f.st
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	rotate := func(sid string, presented, next []byte) store.RotateOutcome {
		t.Helper()
		res, err := st.RotateRefresh(ctx, store.RotateRequest{FamilyID: sid, PresentedHash: presented, NextHash: next, Now: now})
		must(err)
		return res.Outcome
	}
	must(st.RevokeAccessToken(ctx, f.revokedJTI, now.Add(30*time.Minute)))
	must(st.CreateFamily(ctx, family(fxRevokedSID, fxOtherUser, now.Add(-time.Minute)), hashOf("r1")))
	must(st.RevokeFamily(ctx, fxRevokedSID, now))
	must(st.CreateFamily(ctx, family(fxReusedSID, fxOtherUser, now.Add(-time.Minute)), hashOf("u1")))
	if o := rotate(fxReusedSID, hashOf("u1"), hashOf("u2")); o != store.RotateOK {
		t.Fatalf("rotate: %v", o)
	}
	if o := rotate(fxReusedSID, hashOf("u1"), hashOf("u3")); o != store.RotateReuseDetected {
		t.Fatalf("reuse: %v", o)
	}
	f.reusedTok = hashOf("u1")
	must(st.CreateFamily(ctx, family(fxUserSID, fxUser, now.Add(-time.Minute)), hashOf("s1")))
	must(st.RevokeUserSessions(ctx, fxUser, f.cutoff))
	must(st.CreateFamily(ctx, family(fxLiveSID, fxOtherUser, now.Add(-time.Minute)), hashOf("l1")))
	if o := rotate(fxLiveSID, hashOf("l1"), hashOf("l2")); o != store.RotateOK {
		t.Fatalf("rotate live: %v", o)
	}
	f.liveTok = hashOf("l2")
	f.checkRevocations(t, st)
	return f
}

// checkRevocations asserts every revocation of the fixture holds on st, and
// that nothing else is revoked.
func (f *durableFixture) checkRevocations(t *testing.T, st store.TokenState) {
	t.Helper()
	ctx := testCtx(t)
	for _, tc := range []struct {
		name    string
		ref     store.AccessTokenRef
		revoked bool
	}{
		{"fail/revoked_jti", store.AccessTokenRef{JTI: f.revokedJTI, SID: fxLiveSID, UserID: fxOtherUser, IssuedAt: f.now}, true},
		{"fail/revoked_session", store.AccessTokenRef{JTI: "j1", SID: fxRevokedSID, UserID: fxOtherUser, IssuedAt: f.now}, true},
		{"fail/session_revoked_by_reuse", store.AccessTokenRef{JTI: "j2", SID: fxReusedSID, UserID: fxOtherUser, IssuedAt: f.now}, true},
		{"fail/before_user_cutoff", store.AccessTokenRef{JTI: "j3", SID: fxUserSID, UserID: fxUser, IssuedAt: f.cutoff}, true},
		{"ok/after_user_cutoff", store.AccessTokenRef{JTI: "j4", UserID: fxUser, IssuedAt: f.cutoff.Add(time.Millisecond)}, false},
		{"ok/live_session", store.AccessTokenRef{JTI: "j5", SID: fxLiveSID, UserID: fxOtherUser, IssuedAt: f.now}, false},
	} {
		got, err := st.IsAccessTokenRevoked(ctx, tc.ref)
		if err != nil {
			t.Fatalf("%s: IsAccessTokenRevoked: %v", tc.name, err)
		}
		if got != tc.revoked {
			t.Fatalf("%s: revoked = %v, want %v", tc.name, got, tc.revoked)
		}
	}
}

// checkRefreshDead asserts that refresh state lost with Redis's data fails
// closed and rotated tokens stay dead.
func (f *durableFixture) checkRefreshDead(t *testing.T) {
	t.Helper()
	ctx := testCtx(t)
	for _, tc := range []struct {
		name string
		sid  string
		tok  []byte
	}{
		{"fail/live_family_lost", fxLiveSID, f.liveTok},
		{"fail/rotated_token", fxReusedSID, f.reusedTok},
		{"fail/revoked_family_current", fxRevokedSID, hashOf("r1")},
		{"fail/user_family", fxUserSID, hashOf("s1")},
	} {
		res, err := f.st.RotateRefresh(ctx, store.RotateRequest{FamilyID: tc.sid, PresentedHash: tc.tok, NextHash: hashOf("next"), Now: f.now.Add(time.Second)})
		if err != nil || res.Outcome != store.RotateInvalid {
			t.Fatalf("%s: %v, %v; want RotateInvalid", tc.name, res.Outcome, err)
		}
	}
}

func flushAll(t *testing.T, rd *testservers.Redis) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	defer c.Close()
	if err := c.FlushAll(context.Background()).Err(); err != nil {
		t.Fatalf("FLUSHALL: %v", err)
	}
}

func TestRevocationsSurviveDataLoss(t *testing.T) {
	for _, tc := range []struct {
		name string
		lose func(t *testing.T, rd *testservers.Redis)
	}{
		{"flushall", flushAll},
		{"restart_without_persistence", func(t *testing.T, rd *testservers.Redis) {
			if err := rd.Stop(); err != nil {
				t.Fatal(err)
			}
			if err := rd.Start(); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newDurableFixture(t)
			tc.lose(t, f.rd)
			ctx := testCtx(t)
			deadline := time.Now().Add(10 * time.Second)
			for f.st.Ping(ctx) != nil {
				if time.Now().After(deadline) {
					t.Fatal("Redis did not come back")
				}
				time.Sleep(20 * time.Millisecond)
			}
			f.checkRevocations(t, f.st)
			f.checkRefreshDead(t)
			// A second loss is rebuilt just the same.
			flushAll(t, f.rd)
			f.checkRevocations(t, f.st)
		})
	}
}

// TestRebuildRace flushes Redis under two instances and checks a revoked
// token from many goroutines at once: no check may answer "not revoked"
// while the set is being rebuilt.
func TestRebuildRace(t *testing.T) {
	f := newDurableFixture(t)
	other := New(openClient(t, f.rd.URL()), Options{Log: f.log, MaxAccessTokenTTL: time.Hour})
	ctx := testCtx(t)
	for round := 0; round < 5; round++ {
		flushAll(t, f.rd)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var failures []string
		for i := 0; i < 40; i++ {
			st := f.st
			if i%2 == 1 {
				st = other
			}
			ref := store.AccessTokenRef{JTI: f.revokedJTI}
			if i%4 >= 2 {
				ref = store.AccessTokenRef{JTI: "jx", UserID: fxUser, IssuedAt: f.cutoff.Add(-time.Second)}
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				revoked, err := st.IsAccessTokenRevoked(ctx, ref)
				if err != nil || !revoked {
					mu.Lock()
					failures = append(failures, "revoked="+boolStr(revoked)+" err="+errStr(err))
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if len(failures) > 0 {
			t.Fatalf("round %d: checks after FLUSHALL: %v", round, failures)
		}
	}
}

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func errStr(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}

// TestRebuildInterruptedByDataLoss: a rebuild whose Redis loses its data
// meanwhile writes nothing and never marks the set ready.
func TestRebuildInterruptedByDataLoss(t *testing.T) {
	st, c, _ := sharedState(t, nil)
	ctx := testCtx(t)
	gen, err := generationScript.Run(ctx, c, []string{st.genKey()}, "g1").Text()
	if err != nil || gen != "g1" {
		t.Fatalf("generation: %q, %v", gen, err)
	}
	// A concurrent rebuild sees the same generation.
	if g, err := generationScript.Run(ctx, c, []string{st.genKey()}, "g2").Text(); err != nil || g != "g1" {
		t.Fatalf("second generation: %q, %v; want g1", g, err)
	}
	if err := c.Del(ctx, st.genKey()).Err(); err != nil { // what FLUSHALL does to it
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).UnixMilli()
	n, err := rebuildScript.Run(ctx, c, []string{st.genKey(), st.readyKey(), st.jtiKey("j")}, "g1", "1", "k", "", exp).Int64()
	if err != nil || n != 0 {
		t.Fatalf("stale rebuild: %d, %v; want 0", n, err)
	}
	for _, k := range []string{st.readyKey(), st.jtiKey("j")} {
		if e, err := c.Exists(ctx, k).Result(); err != nil || e != 0 {
			t.Fatalf("stale rebuild wrote %s (%v)", k, err)
		}
	}
}

// TestLogDown: with the durable log unreachable, revocations still take
// effect in Redis but report store.ErrUnavailable, and a rebuild that cannot
// read the log fails closed.
func TestLogDown(t *testing.T) {
	log, db := revocationLog(t)
	rd := testservers.NewRedis(t)
	st := New(openClient(t, rd.URL()), Options{Log: log, MaxAccessTokenTTL: time.Hour})
	ctx := testCtx(t)
	if _, err := st.IsAccessTokenRevoked(ctx, store.AccessTokenRef{JTI: "warm-up"}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	err := st.RevokeAccessToken(ctx, "j", time.Now().Add(time.Hour))
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("RevokeAccessToken with the log down: %v, want store.ErrUnavailable", err)
	}
	if revoked, err := st.IsAccessTokenRevoked(ctx, store.AccessTokenRef{JTI: "j"}); err != nil || !revoked {
		t.Fatalf("jti not revoked in Redis when the log failed: %v, %v", revoked, err)
	}
	flushAll(t, rd)
	revoked, err := st.IsAccessTokenRevoked(ctx, store.AccessTokenRef{JTI: "other"})
	if !errors.Is(err, store.ErrUnavailable) || !revoked {
		t.Fatalf("check needing a rebuild with the log down: %v, %v; want revoked and store.ErrUnavailable", revoked, err)
	}
}

// TestRevocationSurvivesRedisWriteFailure: Redis refuses writes (here:
// min-replicas-to-write with no replica) after the durable record of a
// revocation was written. The caller is told the revocation is pending, not
// lost; checks fail closed meanwhile; and once Redis takes writes again the
// revocation holds on every instance — this one before its next answer,
// another one once the background retry has written it.
func TestRevocationSurvivesRedisWriteFailure(t *testing.T) {
	ctx := testCtx(t)
	log, _ := revocationLog(t)
	rd := testservers.NewRedis(t)
	admin := openClient(t, rd.URL())
	a := New(openClient(t, rd.URL()), Options{Log: log, MaxAccessTokenTTL: time.Hour})
	b := New(openClient(t, rd.URL()), Options{Log: log, MaxAccessTokenTTL: time.Hour})
	now := time.UnixMilli(time.Now().UnixMilli())
	for _, f := range []store.RefreshFamily{family("sid-u", "user-cut", now.Add(-time.Minute)), family("sid-s", "user-2", now.Add(-time.Minute))} {
		if err := a.CreateFamily(ctx, f, hashOf(f.ID)); err != nil {
			t.Fatal(err)
		}
	}
	refs := []store.AccessTokenRef{
		{JTI: "j-user", SID: "sid-u", UserID: "user-cut", IssuedAt: now},
		{JTI: "j-sid", SID: "sid-s", UserID: "user-2", IssuedAt: now},
		{JTI: "j-jti", UserID: "user-3", IssuedAt: now},
	}
	for _, ref := range refs {
		if r, err := b.IsAccessTokenRevoked(ctx, ref); err != nil || r {
			t.Fatalf("before: %+v revoked=%v, %v", ref, r, err)
		}
	}

	if err := admin.ConfigSet(ctx, "min-replicas-to-write", "1").Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.Set(ctx, "probe", "1", 0).Err(); err == nil {
		t.Fatal("Redis still takes writes: the test proves nothing")
	}
	cutoff := now.Add(time.Millisecond)
	for name, call := range map[string]func() error{
		"revoke user sessions": func() error { return a.RevokeUserSessions(ctx, "user-cut", cutoff) },
		"revoke family":        func() error { return a.RevokeFamily(ctx, "sid-s", cutoff) },
		"revoke access token":  func() error { return a.RevokeAccessToken(ctx, "j-jti", now.Add(30*time.Minute)) },
	} {
		if err := call(); !errors.Is(err, store.ErrRevocationPending) {
			t.Fatalf("%s while Redis refuses writes: %v, want store.ErrRevocationPending", name, err)
		}
	}
	// The instance holding the queued revocations fails closed. (Another
	// instance reading a Redis that answers reads cannot know yet.)
	if r, err := a.IsAccessTokenRevoked(ctx, refs[0]); err == nil || !r {
		t.Fatalf("check while Redis refuses writes: revoked=%v, %v; want fail closed", r, err)
	}
	if err := admin.ConfigSet(ctx, "min-replicas-to-write", "0").Err(); err != nil {
		t.Fatal(err)
	}

	// Another instance: the background retry writes the queued revocations.
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := b.IsAccessTokenRevoked(ctx, refs[2])
		if err == nil && r {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("other instance after Redis recovered: revoked=%v, %v; want the queued revocation applied", r, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, st := range []*State{a, b} {
		for _, ref := range refs {
			if r, err := st.IsAccessTokenRevoked(ctx, ref); err != nil || !r {
				t.Fatalf("after recovery: %+v revoked=%v, %v; want revoked", ref, r, err)
			}
		}
		for _, sid := range []string{"sid-u", "sid-s"} {
			if _, err := st.FindRefresh(ctx, sid, hashOf(sid), now, 0); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("refresh of %s after recovery: %v, want ErrNotFound", sid, err)
			}
		}
	}
}

// TestFindRefreshWhileRedisRefusesWrites: while Redis refuses writes, the
// instance holding queued revocations still looks refresh tokens up (RFC
// 7009 revocation of a refresh token needs the lookup): a family its queue
// ends is not found, and a live family is found, not refused, on one node
// and on Cluster alike.
func TestFindRefreshWhileRedisRefusesWrites(t *testing.T) {
	t.Run("redis", func(t *testing.T) { testFindRefreshWhileRedisRefusesWrites(t, testservers.NewRedis(t).URL()) })
	t.Run("redis-cluster", func(t *testing.T) {
		testFindRefreshWhileRedisRefusesWrites(t, "redis-cluster://"+startClusterNode(t))
	})
}

func testFindRefreshWhileRedisRefusesWrites(t *testing.T, redisURL string) {
	ctx := testCtx(t)
	log, _ := revocationLog(t)
	admin := openClient(t, redisURL)
	a := New(openClient(t, redisURL), Options{Log: log, MaxAccessTokenTTL: time.Hour})
	a.retryPeriod = time.Hour // no background retry during the test
	now := time.UnixMilli(time.Now().UnixMilli())
	ended, endedUser, live := family("sid-ended", "user-1", now.Add(-time.Minute)),
		family("sid-user-cut", "user-cut", now.Add(-time.Minute)), family("sid-live", "user-2", now.Add(-time.Minute))
	for _, f := range []store.RefreshFamily{ended, endedUser, live} {
		if err := a.CreateFamily(ctx, f, hashOf(f.ID)); err != nil {
			t.Fatal(err)
		}
	}
	// The set is built before Redis refuses writes (a rebuild is a write).
	if _, err := a.IsAccessTokenRevoked(ctx, store.AccessTokenRef{JTI: "warm"}); err != nil {
		t.Fatal(err)
	}
	if err := admin.ConfigSet(ctx, "min-replicas-to-write", "1").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.ConfigSet(context.Background(), "min-replicas-to-write", "0").Err() })
	if err := admin.Set(ctx, "{probe}", "1", 0).Err(); err == nil {
		t.Fatal("Redis still takes writes: the test proves nothing")
	}
	if err := a.RevokeFamily(ctx, ended.ID, now); !errors.Is(err, store.ErrRevocationPending) {
		t.Fatalf("RevokeFamily while Redis refuses writes: %v, want store.ErrRevocationPending", err)
	}
	if err := a.RevokeUserSessions(ctx, endedUser.UserID, now); !errors.Is(err, store.ErrRevocationPending) {
		t.Fatalf("RevokeUserSessions while Redis refuses writes: %v, want store.ErrRevocationPending", err)
	}
	for _, f := range []store.RefreshFamily{ended, endedUser} {
		if _, err := a.FindRefresh(ctx, f.ID, hashOf(f.ID), now, 0); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("FindRefresh of %s, ended by a queued revocation: %v, want store.ErrNotFound", f.ID, err)
		}
	}
	found, err := a.FindRefresh(ctx, live.ID, hashOf(live.ID), now, 0)
	if err != nil || found.ID != live.ID {
		t.Fatalf("FindRefresh of a live family while Redis refuses writes: %+v, %v; want it found", found, err)
	}
}

// TestOwnChecksApplyQueuedRevocationsFirst: the instance that queued a
// revocation writes it before its own next check answers, with no wait.
func TestOwnChecksApplyQueuedRevocationsFirst(t *testing.T) {
	ctx := testCtx(t)
	log, _ := revocationLog(t)
	rd := testservers.NewRedis(t)
	admin := openClient(t, rd.URL())
	a := New(openClient(t, rd.URL()), Options{Log: log, MaxAccessTokenTTL: time.Hour})
	a.retryPeriod = time.Hour // no background retry during the test
	b := New(openClient(t, rd.URL()), Options{Log: log, MaxAccessTokenTTL: time.Hour})
	now := time.UnixMilli(time.Now().UnixMilli())
	ref := store.AccessTokenRef{JTI: "j", UserID: "user-cut", IssuedAt: now}
	if r, err := b.IsAccessTokenRevoked(ctx, ref); err != nil || r {
		t.Fatalf("before: revoked=%v, %v", r, err)
	}
	if err := admin.ConfigSet(ctx, "min-replicas-to-write", "1").Err(); err != nil {
		t.Fatal(err)
	}
	if err := a.RevokeUserSessions(ctx, "user-cut", now); !errors.Is(err, store.ErrRevocationPending) {
		t.Fatalf("RevokeUserSessions: %v, want store.ErrRevocationPending", err)
	}
	if err := admin.ConfigSet(ctx, "min-replicas-to-write", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if r, err := a.IsAccessTokenRevoked(ctx, ref); err != nil || !r {
		t.Fatalf("own check after recovery: revoked=%v, %v; want revoked", r, err)
	}
	if r, err := b.IsAccessTokenRevoked(ctx, ref); err != nil || !r {
		t.Fatalf("other instance after the first instance wrote it: revoked=%v, %v; want revoked", r, err)
	}
}

// TestRebuildRestoresRefreshRevocations: revocations that reached only the
// durable log (Redis refused their writes and the instance that queued
// them stopped) are restored whole by the rebuild the operator starts
// (docs/operations.md: DEL <prefix>{rv}:ready), not only their access-token
// part: the revoked sessions' families are marked, their refresh tokens
// no longer rotate nor are found, and the cut-off user's logins from
// before the cut-off start no session; the user's session from a login
// after the cut-off, made before the rebuild, goes on.
func TestRebuildRestoresRefreshRevocations(t *testing.T) {
	t.Run("redis", func(t *testing.T) { testRebuildRestoresRefreshRevocations(t, testservers.NewRedis(t).URL()) })
	t.Run("redis-cluster", func(t *testing.T) { testRebuildRestoresRefreshRevocations(t, "redis-cluster://"+startClusterNode(t)) })
}

func testRebuildRestoresRefreshRevocations(t *testing.T, redisURL string) {
	ctx := testCtx(t)
	log, _ := revocationLog(t)
	admin := openClient(t, redisURL)
	aClient, err := NewClient(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	a := New(aClient, Options{Log: log, MaxAccessTokenTTL: time.Hour})
	a.retryPeriod = time.Hour // a stops before its background retry
	b := New(openClient(t, redisURL), Options{Log: log, MaxAccessTokenTTL: time.Hour})
	now := time.UnixMilli(time.Now().UnixMilli())
	type fam struct{ sid, user string }
	logout, reset, live := fam{"sid-logout", "user-a"}, fam{"sid-reset", "user-reset"}, fam{"sid-live", "user-a"}
	for _, f := range []fam{logout, reset, live} {
		if err := a.CreateFamily(ctx, family(f.sid, f.user, now.Add(-time.Minute)), hashOf(f.sid)); err != nil {
			t.Fatal(err)
		}
	}
	if err := admin.ConfigSet(ctx, "min-replicas-to-write", "1").Err(); err != nil {
		t.Fatal(err)
	}
	cutoff := now.Add(time.Millisecond)
	if err := a.RevokeFamily(ctx, logout.sid, cutoff); !errors.Is(err, store.ErrRevocationPending) {
		t.Fatalf("RevokeFamily while Redis refuses writes: %v, want store.ErrRevocationPending", err)
	}
	if err := a.RevokeUserSessions(ctx, reset.user, cutoff); !errors.Is(err, store.ErrRevocationPending) {
		t.Fatalf("RevokeUserSessions while Redis refuses writes: %v, want store.ErrRevocationPending", err)
	}
	_ = aClient.Close() // a stops: its queue is lost
	if err := admin.ConfigSet(ctx, "min-replicas-to-write", "0").Err(); err != nil {
		t.Fatal(err)
	}
	// The user signs in again after the cut-off (Redis knows no cut-off).
	afterCut := fam{"sid-reset-after", reset.user}
	if err := b.CreateFamily(ctx, family(afterCut.sid, afterCut.user, cutoff.Add(time.Second)), hashOf(afterCut.sid)); err != nil {
		t.Fatal(err)
	}
	if err := admin.Del(ctx, b.readyKey()).Err(); err != nil { // the operator's step
		t.Fatal(err)
	}

	for _, f := range []fam{logout, reset} {
		ref := store.AccessTokenRef{JTI: "j-" + f.sid, SID: f.sid, UserID: f.user, IssuedAt: now}
		if r, err := b.IsAccessTokenRevoked(ctx, ref); err != nil || !r {
			t.Fatalf("%s: access token revoked=%v, %v; want revoked", f.sid, r, err)
		}
		// The rebuild itself marked the family, before any refresh.
		if rv, err := admin.HGet(ctx, b.famKey(f.sid), "rv").Result(); err != nil || rv != "1" {
			t.Fatalf("%s: family mark after the rebuild: %q, %v; want revoked", f.sid, rv, err)
		}
	}
	// The cut-off user's family escaped the cut-off: its session's tokens
	// issued after the cut-off (by refreshes) are revoked too.
	ref := store.AccessTokenRef{JTI: "j-late", SID: reset.sid, UserID: reset.user, IssuedAt: cutoff.Add(time.Second)}
	if r, err := b.IsAccessTokenRevoked(ctx, ref); err != nil || !r {
		t.Fatalf("%s: access token issued after the cut-off: revoked=%v, %v; want revoked", reset.sid, r, err)
	}
	for _, f := range []fam{logout, reset} {
		if _, err := b.FindRefresh(ctx, f.sid, hashOf(f.sid), now.Add(time.Second), 0); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("%s: FindRefresh after the rebuild: %v, want store.ErrNotFound", f.sid, err)
		}
		res, err := b.RotateRefresh(ctx, store.RotateRequest{FamilyID: f.sid, PresentedHash: hashOf(f.sid),
			NextHash: hashOf(f.sid + "-next"), Now: now.Add(time.Second)})
		if err != nil || res.Outcome != store.RotateInvalid {
			t.Fatalf("%s: rotation after the rebuild: %v, %v; want RotateInvalid", f.sid, res.Outcome, err)
		}
	}
	err = b.CreateFamily(ctx, family("sid-reset-late", reset.user, now.Add(-time.Second)), hashOf("late"))
	if !errors.Is(err, store.ErrSessionsEnded) {
		t.Fatalf("CreateFamily of the cut-off user from before the cut-off: %v, want store.ErrSessionsEnded", err)
	}
	if err := b.CreateFamily(ctx, family("sid-reset-new", reset.user, cutoff.Add(time.Millisecond)), hashOf("new")); err != nil {
		t.Fatalf("CreateFamily of the cut-off user after the cut-off: %v", err)
	}
	for _, f := range []fam{live, afterCut} {
		res, err := b.RotateRefresh(ctx, store.RotateRequest{FamilyID: f.sid, PresentedHash: hashOf(f.sid),
			NextHash: hashOf(f.sid + "-next"), Now: cutoff.Add(2 * time.Second)})
		if err != nil || res.Outcome != store.RotateOK {
			t.Fatalf("%s: rotation of a session nobody revoked: %v, %v; want RotateOK", f.sid, res.Outcome, err)
		}
	}
}

// flakyLog is a durable log that refuses writes while down is set (its
// database unreachable).
type flakyLog struct {
	store.RevocationLog
	down atomic.Bool
}

func (l *flakyLog) RecordRevocations(ctx context.Context, revs []store.Revocation) error {
	if l.down.Load() {
		return errors.New("connection refused")
	}
	return l.RevocationLog.RecordRevocations(ctx, revs)
}

// TestRevocationRecordedOnceTheLogIsBack: a revocation made while the
// durable log refuses writes takes effect in Redis and is answered as
// failed; once the log takes writes again the background retry records
// it, so Redis losing its data afterwards (a rebuild from the log) does
// not bring the revoked token back. Before, nothing wrote it: the caller's
// retry found it revoked already and recorded nothing.
func TestRevocationRecordedOnceTheLogIsBack(t *testing.T) {
	ctx := testCtx(t)
	sqlLog, _ := revocationLog(t)
	log := &flakyLog{RevocationLog: sqlLog}
	rd := testservers.NewRedis(t)
	st := New(openClient(t, rd.URL()), Options{Log: log, MaxAccessTokenTTL: time.Hour})
	st.retryPeriod = 10 * time.Millisecond
	if _, err := st.IsAccessTokenRevoked(ctx, store.AccessTokenRef{JTI: "warm-up"}); err != nil {
		t.Fatal(err)
	}
	log.down.Store(true)
	if err := st.RevokeAccessToken(ctx, "jti-while-log-down", time.Now().Add(30*time.Minute)); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("RevokeAccessToken with the log down: %v, want store.ErrUnavailable", err)
	}
	if err := st.RevokeUserSessions(ctx, "user-while-log-down", time.Now()); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("RevokeUserSessions with the log down: %v, want store.ErrUnavailable", err)
	}
	st.unloggedMu.Lock()
	drained := st.unloggedDrained
	st.unloggedMu.Unlock()
	if drained == nil {
		t.Fatal("nothing queued the durable write of the revocations for a retry")
	}
	log.down.Store(false)
	select {
	case <-drained:
	case <-ctx.Done():
		t.Fatal("the revocations were never recorded once the log was back")
	}
	flushAll(t, rd)
	for name, ref := range map[string]store.AccessTokenRef{
		"jti":         {JTI: "jti-while-log-down"},
		"user_cutoff": {JTI: "j", UserID: "user-while-log-down", IssuedAt: time.Now().Add(-time.Minute)},
	} {
		revoked, err := st.IsAccessTokenRevoked(ctx, ref)
		if err != nil || !revoked {
			t.Fatalf("%s after Redis lost its data: revoked %v, %v; want revoked (rebuilt from the log)", name, revoked, err)
		}
	}
}

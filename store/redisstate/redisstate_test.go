package redisstate

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/storetest"
	"github.com/portcullis-auth/portcullis/store/testservers"
)

func TestMain(m *testing.M) { testservers.Main(m) }

func testCtx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func openClient(t *testing.T, rawURL string) redis.UniversalClient {
	t.Helper()
	c, err := NewClient(rawURL)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// sharedState is a state on the shared Redis with a key prefix of its own.
func sharedState(t *testing.T, log store.RevocationLog) (*State, redis.UniversalClient, string) {
	t.Helper()
	u, prefix := testservers.RedisURL(t)
	c := openClient(t, u)
	return New(c, Options{Prefix: prefix, Log: log}), c, prefix
}

func TestTokenStateConformance(t *testing.T) {
	t.Run("redis", func(t *testing.T) {
		storetest.RunTokenStateTests(t, func(t *testing.T, cfg storetest.Config) storetest.Backend {
			u, prefix := testservers.RedisURL(t)
			return conformanceBackend(openClient(t, u), prefix, nil, cfg)
		})
	})
}

// withRotationLimit sets the state's bound on a family's used hashes to
// the suite's, when it asks for one.
func withRotationLimit(st *State, cfg storetest.Config) *State {
	if cfg.MaxFamilyRotations > 0 {
		st.maxRotations = cfg.MaxFamilyRotations
	}
	return st
}

// conformanceBackend is a state for the conformance suite, with a view of
// the family's keys.
func conformanceBackend(c redis.UniversalClient, prefix string, log store.RevocationLog, cfg storetest.Config) storetest.Backend {
	opts := Options{Prefix: prefix, Log: log, MaxSessionsPerUser: cfg.MaxSessionsPerUser, MaxAccessTokenTTL: cfg.Horizon}
	st := withRotationLimit(New(c, opts), cfg)
	again := func(t *testing.T) store.TokenState { return withRotationLimit(New(c, opts), cfg) }
	forget := func(t *testing.T, sid string) {
		t.Helper()
		ctx := testCtx(t)
		if err := c.HSet(ctx, st.famKey(sid), "rv", "0").Err(); err != nil {
			t.Fatalf("unmark family: %v", err)
		}
		if err := c.Del(ctx, st.sidKey(sid)).Err(); err != nil {
			t.Fatalf("forget the session's revocation: %v", err)
		}
	}
	var lose func(t *testing.T)
	if log != nil {
		lose = func(t *testing.T) {
			t.Helper()
			if err := dropPrefix(testCtx(t), c, st.prefix); err != nil {
				t.Fatalf("drop the state's keys: %v", err)
			}
		}
	}
	return storetest.Backend{State: st, Again: again, Forget: forget, Lose: lose, Stored: func(t *testing.T, sid string) []byte {
		t.Helper()
		ctx := testCtx(t)
		var out []byte
		fields, err := c.HGetAll(ctx, st.famKey(sid)).Result()
		if err != nil {
			t.Fatalf("read family: %v", err)
		}
		for k, v := range fields {
			out = append(append(out, k...), v...)
		}
		used, err := c.SMembers(ctx, st.usedKey(sid)).Result()
		if err != nil {
			t.Fatalf("read used tokens: %v", err)
		}
		for _, v := range used {
			out = append(out, v...)
		}
		return out
	}}
}

// dropPrefix deletes every key that starts with prefix, on every master of
// a Cluster, as a restart without persistence loses them.
func dropPrefix(ctx context.Context, c redis.UniversalClient, prefix string) error {
	drop := func(ctx context.Context, n redis.Cmdable) error {
		iter := n.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			if err := n.Del(ctx, iter.Val()).Err(); err != nil {
				return err
			}
		}
		return iter.Err()
	}
	if cc, ok := c.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error { return drop(ctx, n) })
	}
	return drop(ctx, c)
}

func hashOf(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func family(id, user string, now time.Time) store.RefreshFamily {
	return store.RefreshFamily{
		ID: id, UserID: user, ClientID: "c", Scope: "openid", CreatedAt: now,
		AbsoluteExpiry: now.Add(24 * time.Hour), IdleTTL: time.Hour,
	}
}

func TestCreateFamily(t *testing.T) {
	st, c, prefix := sharedState(t, nil)
	now := time.UnixMilli(time.Now().UnixMilli())
	ctx := testCtx(t)
	tests := []struct {
		name    string
		fam     store.RefreshFamily
		hash    []byte
		wantErr error // nil: any error
		ok      bool
	}{
		{name: "ok/new", fam: family("s1", "u1", now), hash: hashOf("a"), ok: true},
		{name: "fail/duplicate_id", fam: family("s1", "u2", now), hash: hashOf("b"), wantErr: store.ErrAlreadyExists},
		{name: "fail/empty_id", fam: family("", "u1", now), hash: hashOf("c")},
		{name: "fail/braces_in_id", fam: family("a}b", "u1", now), hash: hashOf("d")},
		{name: "fail/empty_hash", fam: family("s2", "u1", now), hash: nil},
		{name: "fail/already_expired", fam: func() store.RefreshFamily {
			f := family("s3", "u1", now)
			f.AbsoluteExpiry = now
			return f
		}(), hash: hashOf("e")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := st.CreateFamily(ctx, tc.fam, tc.hash)
			if tc.ok {
				if err != nil {
					t.Fatalf("CreateFamily: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("CreateFamily succeeded, want an error")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("CreateFamily: %v, want %v", err, tc.wantErr)
			}
			if errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("a refused family is not an outage: %v", err)
			}
		})
	}
	// The duplicate did not overwrite the first family.
	res, err := st.RotateRefresh(ctx, store.RotateRequest{FamilyID: "s1", PresentedHash: hashOf("a"), NextHash: hashOf("a2"), Now: now})
	if err != nil || res.Outcome != store.RotateOK || res.Family.UserID != "u1" {
		t.Fatalf("rotate first family: %+v, %v", res, err)
	}
	// The family key lives no longer than the session can (idle TTL 1h).
	ttl, err := c.PTTL(ctx, prefix+"{s1}:fam").Result()
	if err != nil || ttl <= 0 || ttl > time.Hour {
		t.Fatalf("family key TTL %v (%v), want in (0, 1h]", ttl, err)
	}
	ttl, err = c.PTTL(ctx, prefix+"{u:u1}:fams").Result()
	if err != nil || ttl < 23*time.Hour || ttl > 24*time.Hour {
		t.Fatalf("user index TTL %v (%v), want about 24h", ttl, err)
	}
}

func TestReuseRevocationLifetime(t *testing.T) {
	st, c, prefix := sharedState(t, nil)
	st.maxAT = 15 * time.Minute
	ctx := testCtx(t)
	now := time.UnixMilli(time.Now().UnixMilli())
	if err := st.CreateFamily(ctx, family("fam", "u", now), hashOf("t1")); err != nil {
		t.Fatal(err)
	}
	rot := func(presented, next string) store.RotateOutcome {
		res, err := st.RotateRefresh(ctx, store.RotateRequest{FamilyID: "fam", PresentedHash: hashOf(presented), NextHash: hashOf(next), Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return res.Outcome
	}
	if o := rot("t1", "t2"); o != store.RotateOK {
		t.Fatalf("rotate: %v", o)
	}
	if o := rot("t1", "t3"); o != store.RotateReuseDetected {
		t.Fatalf("reuse: %v", o)
	}
	// The session's revocation lasts as long as its last access token can,
	// plus the clock skew (keyExpiry).
	ttl, err := c.PTTL(ctx, prefix+"{rv}:sid:fam").Result()
	if want := 15*time.Minute + store.ClockSkew; err != nil || ttl <= want-time.Minute || ttl > want {
		t.Fatalf("session revocation TTL %v (%v), want about %v", ttl, err, want)
	}
	// The sealed successor is not kept after revocation.
	if n, err := c.HExists(ctx, prefix+"{fam}:fam", "sealed").Result(); err != nil || n {
		t.Fatalf("sealed successor kept after revocation (%v)", err)
	}
}

func TestHitRejectsTinyWindow(t *testing.T) {
	st, _, _ := sharedState(t, nil)
	if _, _, err := st.Hit(testCtx(t), "k", time.Microsecond, time.Now()); err == nil {
		t.Fatal("Hit with a window under 1ms succeeded")
	}
}

// TestRedisDown stops a private Redis: every call fails with
// store.ErrUnavailable within 2 s, and the same client works again once
// Redis is back.
func TestRedisDown(t *testing.T) {
	rd := testservers.NewRedis(t)
	c := openClient(t, rd.URL())
	st := New(c, Options{Prefix: "pc:"})
	ctx := testCtx(t)
	now := time.UnixMilli(time.Now().UnixMilli())
	if err := st.CreateFamily(ctx, family("f1", "u", now), hashOf("t1")); err != nil {
		t.Fatal(err)
	}
	if _, err := st.IsAccessTokenRevoked(ctx, store.AccessTokenRef{JTI: "j"}); err != nil {
		t.Fatal(err)
	}
	if err := rd.Stop(); err != nil {
		t.Fatal(err)
	}
	calls := []struct {
		name string
		call func() error
	}{
		{"fail/ping", func() error { return st.Ping(ctx) }},
		{"fail/create_family", func() error { return st.CreateFamily(ctx, family("f2", "u", now), hashOf("x")) }},
		{"fail/rotate", func() error {
			res, err := st.RotateRefresh(ctx, store.RotateRequest{FamilyID: "f1", PresentedHash: hashOf("t1"), NextHash: hashOf("t2"), Now: now})
			if err == nil && res.Outcome == store.RotateOK {
				t.Errorf("rotation succeeded with Redis down")
			}
			return err
		}},
		{"fail/is_revoked", func() error {
			revoked, err := st.IsAccessTokenRevoked(ctx, store.AccessTokenRef{JTI: "j"})
			if err != nil && !revoked {
				t.Errorf("failed check does not fail closed")
			}
			return err
		}},
		{"fail/revoke_access_token", func() error { return st.RevokeAccessToken(ctx, "j", now.Add(time.Hour)) }},
		{"fail/revoke_family", func() error { return st.RevokeFamily(ctx, "f1", now) }},
		{"fail/revoke_user", func() error { return st.RevokeUserSessions(ctx, "u", now) }},
		{"fail/hit", func() error { _, _, err := st.Hit(ctx, "k", time.Minute, now); return err }},
		{"fail/reset_counters", func() error { return st.ResetCounters(ctx, "k", "l") }},
	}
	for _, tc := range calls {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			err := tc.call()
			if took := time.Since(start); took > 2*time.Second {
				t.Fatalf("took %v with Redis down, want under 2s", took)
			}
			if !errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("error %v, want one wrapping store.ErrUnavailable", err)
			}
		})
	}
	if err := rd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for st.Ping(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatal("client did not recover after Redis restarted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The restarted Redis is empty: the lost family fails closed, new state works.
	res, err := st.RotateRefresh(ctx, store.RotateRequest{FamilyID: "f1", PresentedHash: hashOf("t1"), NextHash: hashOf("t2"), Now: now})
	if err != nil || res.Outcome != store.RotateInvalid {
		t.Fatalf("lost family after restart: %+v, %v; want RotateInvalid", res, err)
	}
	// After the cut-off of u queued while Redis was down (the rotation
	// above wrote it first).
	if err := st.CreateFamily(ctx, family("f3", "u", now.Add(time.Millisecond)), hashOf("n1")); err != nil {
		t.Fatalf("CreateFamily after restart: %v", err)
	}
	if n, _, err := st.Hit(ctx, "k", time.Minute, now); err != nil || n != 1 {
		t.Fatalf("Hit after restart: %d, %v", n, err)
	}
	// The jti revoked while Redis was down was queued and is written before
	// the first check answers.
	if revoked, err := st.IsAccessTokenRevoked(ctx, store.AccessTokenRef{JTI: "j"}); err != nil || !revoked {
		t.Fatalf("check after restart: %v, %v; want the queued revocation applied", revoked, err)
	}
	if revoked, err := st.IsAccessTokenRevoked(ctx, store.AccessTokenRef{JTI: "other"}); err != nil || revoked {
		t.Fatalf("check of an unrevoked jti after restart: %v, %v", revoked, err)
	}
}

// TestRedisHung points the state at a server that accepts connections and
// never answers: calls fail with store.ErrUnavailable within 2 s, never hang.
func TestRedisHung(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	st := New(openClient(t, "redis://"+l.Addr().String()+"/0"), Options{})
	ctx := context.Background() // no deadline: the client's timeouts must bound the calls
	now := time.Now()
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"fail/ping", func() error { return st.Ping(ctx) }},
		{"fail/rotate", func() error {
			_, err := st.RotateRefresh(ctx, store.RotateRequest{FamilyID: "f", PresentedHash: hashOf("a"), NextHash: hashOf("b"), Now: now})
			return err
		}},
		{"fail/is_revoked", func() error { _, err := st.IsAccessTokenRevoked(ctx, store.AccessTokenRef{JTI: "j"}); return err }},
		{"fail/hit", func() error { _, _, err := st.Hit(ctx, "k", time.Minute, now); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			err := tc.call()
			if took := time.Since(start); took > 2*time.Second {
				t.Fatalf("took %v against a hung Redis, want under 2s", took)
			}
			if !errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("error %v, want one wrapping store.ErrUnavailable", err)
			}
		})
	}
}

// TestFamilyWithoutAMR: a family written before the amr was kept (no amr
// field in its hash) still rotates and is found, answering no amr.
func TestFamilyWithoutAMR(t *testing.T) {
	st, c, _ := sharedState(t, nil)
	ctx := testCtx(t)
	now := time.UnixMilli(time.Now().UnixMilli())
	fam := family("old-amr", "u-old", now)
	fam.AMR = []string{"pwd"}
	if err := st.CreateFamily(ctx, fam, hashOf("first")); err != nil {
		t.Fatalf("CreateFamily: %v", err)
	}
	if err := c.HDel(ctx, st.famKey(fam.ID), "amr").Err(); err != nil {
		t.Fatalf("drop the amr field: %v", err)
	}
	res, err := st.RotateRefresh(ctx, store.RotateRequest{FamilyID: fam.ID, PresentedHash: hashOf("first"), NextHash: hashOf("second"), Now: now})
	if err != nil || res.Outcome != store.RotateOK || res.Family.AMR != nil || res.Family.UserID != "u-old" {
		t.Fatalf("rotate a family without amr: %+v, %v; want ok with no amr", res, err)
	}
	found, err := st.FindRefresh(ctx, fam.ID, hashOf("second"), now, 0)
	if err != nil || found.AMR != nil {
		t.Fatalf("FindRefresh of a family without amr: %+v, %v; want no amr", found, err)
	}
}

// countingHook counts the commands and pipelines a client sends.
type countingHook struct{ n *atomic.Int64 }

func (h countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.n.Add(1); return next(ctx, cmds) }
}

// TestCreateFamilyOneRoundTrip: without Cluster, creating a user's family
// and indexing it under the user are one script, so a family the user's
// cut-off refuses never exists, not even revoked; with the index full,
// pruning first still works.
func TestCreateFamilyOneRoundTrip(t *testing.T) {
	u, prefix := testservers.RedisURL(t)
	c := openClient(t, u)
	st := New(c, Options{Prefix: prefix, MaxSessionsPerUser: 2})
	var calls atomic.Int64
	c.AddHook(countingHook{&calls})
	ctx := testCtx(t)
	now := time.UnixMilli(time.Now().UnixMilli())
	if err := st.CreateFamily(ctx, family("rt-warm", "u-rt", now.Add(-time.Millisecond)), hashOf("w")); err != nil { // loads the script
		t.Fatal(err)
	}
	calls.Store(0)
	if err := st.CreateFamily(ctx, family("rt-1", "u-rt", now), hashOf("1")); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("creating and indexing a family took %d round trips, want 1", n)
	}
	if score, err := c.ZScore(ctx, st.userFamsKey("u-rt"), "rt-1").Result(); err != nil || score != float64(now.UnixMilli()) {
		t.Errorf("family not indexed under its user: %v, %v", score, err)
	}

	// The index is full (cap 2) of live families: the oldest is pushed out
	// and revoked; of dead ones, a prune makes room first.
	if err := st.CreateFamily(ctx, family("rt-2", "u-rt", now.Add(time.Millisecond)), hashOf("2")); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.ZCard(ctx, st.userFamsKey("u-rt")).Result(); n != 2 {
		t.Errorf("index holds %d families, want the cap, 2", n)
	}
	if res, err := st.RotateRefresh(ctx, store.RotateRequest{FamilyID: "rt-warm", PresentedHash: hashOf("w"), NextHash: hashOf("w2"), Now: now}); err != nil ||
		res.Outcome == store.RotateOK {
		t.Errorf("the oldest family, pushed out by the cap, still rotates: %+v, %v", res, err)
	}
	if res, err := st.RotateRefresh(ctx, store.RotateRequest{FamilyID: "rt-1", PresentedHash: hashOf("1"), NextHash: hashOf("1b"), Now: now}); err != nil ||
		res.Outcome != store.RotateOK {
		t.Errorf("a family within the cap does not rotate: %+v, %v", res, err)
	}

	// A family the user's cut-off refuses leaves nothing behind.
	if err := c.Set(ctx, st.userCutKey("u-cut"), now.UnixMilli(), 0).Err(); err != nil {
		t.Fatal(err)
	}
	calls.Store(0)
	if err := st.CreateFamily(ctx, family("rt-cut", "u-cut", now), hashOf("c")); !errors.Is(err, store.ErrSessionsEnded) {
		t.Fatalf("CreateFamily before the cut-off: %v, want ErrSessionsEnded", err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("a refused family took %d round trips, want 1", n)
	}
	if n, _ := c.Exists(ctx, st.famKey("rt-cut")).Result(); n != 0 {
		t.Error("the refused family's hash exists")
	}
	if _, err := c.ZScore(ctx, st.userFamsKey("u-cut"), "rt-cut").Result(); !errors.Is(err, redis.Nil) {
		t.Errorf("the refused family is indexed: %v", err)
	}
}

// revokeBeforeRerunHook revokes a session (through another client) just
// before the family's script runs on its own, as a concurrent replay of the
// code could between the pipeline and that run.
type revokeBeforeRerunHook struct {
	other redis.UniversalClient
	st    *State
	sid   string
	fired *atomic.Bool
}

func (h revokeBeforeRerunHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h revokeBeforeRerunHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if name := cmd.Name(); (name == "evalsha" || name == "eval") && !h.fired.Load() {
			for _, a := range cmd.Args() {
				if a == h.st.famKey(h.sid) {
					h.fired.Store(true)
					if err := h.other.Set(ctx, h.st.sidKey(h.sid), "1", time.Hour).Err(); err != nil {
						return err
					}
				}
			}
		}
		return next(ctx, cmd)
	}
}
func (h revokeBeforeRerunHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestCreateFamilyAndCheckOneRoundTrip: without Cluster, creating a family
// and reading its session's revocation are one pipeline, the check after
// the family. When Redis lacks the family's script but has the check's
// (after a restart or SCRIPT FLUSH), the family's script runs again on its
// own after the pipeline: the check runs again too, so a revocation landing
// in between is seen.
func TestCreateFamilyAndCheckOneRoundTrip(t *testing.T) {
	u, prefix := testservers.RedisURL(t)
	c := openClient(t, u)
	st := New(c, Options{Prefix: prefix, MaxAccessTokenTTL: time.Hour})
	var calls atomic.Int64
	c.AddHook(countingHook{&calls})
	ctx := testCtx(t)
	now := time.UnixMilli(time.Now().UnixMilli())
	ref := func(sid string) store.AccessTokenRef {
		return store.AccessTokenRef{JTI: "jti-" + sid, SID: sid, UserID: "u-cc", IssuedAt: now}
	}
	if _, err := st.CreateFamilyAndCheck(ctx, family("cc-warm", "u-cc", now), hashOf("w"), ref("cc-warm")); err != nil { // loads the scripts
		t.Fatal(err)
	}
	calls.Store(0)
	revoked, err := st.CreateFamilyAndCheck(ctx, family("cc-1", "u-cc", now), hashOf("1"), ref("cc-1"))
	if err != nil || revoked {
		t.Fatalf("CreateFamilyAndCheck: %v, %v; want not revoked", revoked, err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("creating a family and checking its session took %d round trips, want 1", n)
	}

	// The family's script is gone, the check's is loaded again.
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.IsAccessTokenRevoked(ctx, ref("cc-warm")); err != nil {
		t.Fatal(err)
	}
	other := openClient(t, u)
	var fired atomic.Bool
	c.AddHook(revokeBeforeRerunHook{other: other, st: st, sid: "cc-2", fired: &fired})
	revoked, err = st.CreateFamilyAndCheck(ctx, family("cc-2", "u-cc", now), hashOf("2"), ref("cc-2"))
	if err != nil {
		t.Fatal(err)
	}
	if !fired.Load() {
		t.Fatal("the family's script did not run on its own")
	}
	if !revoked {
		t.Fatal("a session revoked before its family was created answered not revoked: the check ran before the family")
	}
}

// TestFamilyWithoutOptionalFieldsChecksItsSession: a family written before
// the optional fields were kept (no at, amr, tn, bs or ga in its hash) is
// still found with its defaults, and its session's revocation is still
// read. Redis ends a script's array reply at its first nil; HMGET gives a
// missing field as false, not nil, so the reply keeps its length and the
// session check after it (a review feared the opposite: this pins it).
func TestFamilyWithoutOptionalFieldsChecksItsSession(t *testing.T) {
	st, c, _ := sharedState(t, nil)
	ctx := testCtx(t)
	now := time.UnixMilli(time.Now().UnixMilli())
	for _, revoked := range []bool{false, true} {
		fam := family(fmt.Sprintf("old-%v", revoked), "u-old", now)
		if err := st.CreateFamily(ctx, fam, hashOf("first")); err != nil {
			t.Fatalf("CreateFamily: %v", err)
		}
		if err := c.HDel(ctx, st.famKey(fam.ID), "at", "amr", "tn", "bs", "ga").Err(); err != nil {
			t.Fatalf("drop the optional fields: %v", err)
		}
		if revoked {
			// The session is revoked in the revocation set, and its
			// family's own mark is lost.
			if err := st.RevokeFamily(ctx, fam.ID, now); err != nil {
				t.Fatalf("RevokeFamily: %v", err)
			}
			if err := c.HSet(ctx, st.famKey(fam.ID), "rv", "0").Err(); err != nil {
				t.Fatalf("unmark family: %v", err)
			}
		}
		found, err := st.FindRefresh(ctx, fam.ID, hashOf("first"), now, 0)
		switch {
		case revoked && !errors.Is(err, store.ErrNotFound):
			t.Fatalf("FindRefresh of an old family whose session is revoked: %+v, %v; want not found", found, err)
		case !revoked && (err != nil || !found.AuthTime.Equal(found.CreatedAt) || found.BrowserSessionID != "" || !found.GrantedAt.Equal(found.CreatedAt)):
			t.Fatalf("FindRefresh of an old family: %+v, %v; want it with its creation as auth and grant time", found, err)
		}
	}
}

package redisstate

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/testservers"
)

// TestBrowserSessionsAfterDataLoss: when Redis loses its data, the user's
// cut-off that lived beside the sessions is gone too, but a browser session
// authenticated at or before the durable cut-off is still never found (the
// revocation set is rebuilt from the log first); sessions Redis lost are
// simply gone (people sign in again); with Redis down, finding fails closed.
func TestBrowserSessionsAfterDataLoss(t *testing.T) {
	ctx := testCtx(t)
	log, _ := revocationLog(t)
	rd := testservers.NewRedis(t)
	st := New(openClient(t, rd.URL()), Options{Log: log, MaxAccessTokenTTL: time.Hour})
	now := time.UnixMilli(time.Now().UnixMilli()).UTC()
	cutoff := now.Add(-time.Minute)
	session := func(id, user string, auth time.Time) store.BrowserSession {
		return store.BrowserSession{ID: id, UserID: user, AuthTime: auth, CreatedAt: now, LastUsedAt: now,
			IdleTTL: time.Hour, AbsoluteExpiry: now.Add(24 * time.Hour)}
	}
	create := func(bs store.BrowserSession) []byte {
		t.Helper()
		cookie := hashOf("cookie-" + bs.ID)
		if _, err := st.CreateBrowserSession(ctx, bs, cookie); err != nil {
			t.Fatalf("CreateBrowserSession(%s): %v", bs.ID, err)
		}
		return cookie
	}
	find := func(what string, cookie []byte, want error) {
		t.Helper()
		_, err := st.FindBrowserSession(ctx, cookie, now)
		if want == nil && err != nil || want != nil && !errors.Is(err, want) {
			t.Fatalf("%s: FindBrowserSession: %v, want %v", what, err, want)
		}
	}
	other := create(session("bs-other", "user-2", now))
	if err := st.RevokeUserSessions(ctx, "user-1", cutoff); err != nil {
		t.Fatalf("RevokeUserSessions: %v", err)
	}
	flushAll(t, rd)

	// A sign-in authenticated before the cut-off that finishes after the
	// flush: Redis no longer holds the cut-off, so the create goes through,
	// but the session is never found nor listed.
	stale := create(session("bs-stale", "user-1", cutoff.Add(-time.Second)))
	find("session authenticated before the durable cut-off", stale, store.ErrNotFound)
	fresh := create(session("bs-fresh", "user-1", cutoff.Add(time.Millisecond)))
	find("session authenticated after the cut-off", fresh, nil)
	// Once the set is rebuilt the cut-off is read beside the session (one
	// round trip) and compared here: at or before it, never found.
	find("session authenticated before the durable cut-off, set rebuilt", stale, store.ErrNotFound)
	// The rebuild restored the user's cut-off for new sessions too: one
	// authenticated at it is refused outright.
	if _, err := st.CreateBrowserSession(ctx, session("bs-at-cut", "user-1", cutoff), hashOf("cookie-bs-at-cut")); !errors.Is(err, store.ErrSessionsEnded) {
		t.Fatalf("CreateBrowserSession at the durable cut-off, set rebuilt: %v, want store.ErrSessionsEnded", err)
	}
	find("session authenticated at the durable cut-off", hashOf("cookie-bs-at-cut"), store.ErrNotFound)
	// Scripts flushed (a restarted Redis keeps data but not scripts): the
	// pipelined lookup loads them and still decides the same.
	c := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatalf("SCRIPT FLUSH: %v", err)
	}
	_ = c.Close()
	find("after SCRIPT FLUSH, a live session", fresh, nil)
	c = redis.NewClient(&redis.Options{Addr: rd.Addr()})
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatalf("SCRIPT FLUSH: %v", err)
	}
	_ = c.Close()
	find("after SCRIPT FLUSH, a session before the cut-off", stale, store.ErrNotFound)
	list, err := st.ListBrowserSessions(ctx, "user-1", now)
	if err != nil || len(list) != 1 || list[0].ID != "bs-fresh" {
		t.Fatalf("ListBrowserSessions = %+v, %v; want only bs-fresh", list, err)
	}
	find("a session Redis lost", other, store.ErrNotFound)

	if err := rd.Stop(); err != nil {
		t.Fatal(err)
	}
	find("Redis down", fresh, store.ErrUnavailable)
}

// TestGrantWithCodeOneRoundTrip: a code and its grant are one round trip,
// and still both land after Redis lost its scripts (SCRIPT FLUSH, as after
// a restart), each script loaded again.
func TestGrantWithCodeOneRoundTrip(t *testing.T) {
	ctx := testCtx(t)
	rd := testservers.NewRedis(t)
	c := openClient(t, rd.URL())
	st := New(c, Options{MaxAccessTokenTTL: time.Hour})
	var calls atomic.Int64
	c.AddHook(countingHook{&calls})
	now := time.UnixMilli(time.Now().UnixMilli()).UTC()
	bs := store.BrowserSession{ID: "bs-code", UserID: "user-code", AuthTime: now, CreatedAt: now, LastUsedAt: now,
		IdleTTL: time.Hour, AbsoluteExpiry: now.Add(24 * time.Hour)}
	if _, err := st.CreateBrowserSession(ctx, bs, hashOf("cookie-code")); err != nil {
		t.Fatal(err)
	}
	for i, flush := range []bool{false, false, true} {
		if flush {
			if err := c.ScriptFlush(ctx).Err(); err != nil {
				t.Fatalf("SCRIPT FLUSH: %v", err)
			}
		}
		code := store.OnceRecord{Kind: store.OnceAuthCode, KeyHash: hashOf(fmt.Sprint("code-", i)), Value: []byte("rec"), ExpiresAt: now.Add(time.Minute)}
		g := store.SessionGrant{SID: fmt.Sprint("sid-", i), ClientID: "app", GrantedAt: now}
		calls.Store(0)
		if _, err := st.AddBrowserSessionGrantWithCode(ctx, bs.UserID, bs.ID, g, code); err != nil {
			t.Fatalf("grant %d (scripts flushed: %v): %v", i, flush, err)
		}
		// The first call finds this new Redis without the scripts and the
		// one after the flush finds them gone: each then runs the two
		// scripts again on their own, loading them. In between, one
		// pipeline.
		switch n := calls.Load(); {
		case i == 1 && n != 1:
			t.Errorf("a code and its grant took %d round trips, want 1", n)
		case i != 1 && n == 1:
			t.Errorf("grant %d: no script was loaded again", i)
		}
		if v, err := st.TakeOnce(ctx, store.OnceAuthCode, code.KeyHash, now); err != nil || string(v) != "rec" {
			t.Fatalf("grant %d: the code was not stored: %q, %v", i, v, err)
		}
	}
	gs, err := st.BrowserSessionGrants(ctx, bs.UserID, bs.ID)
	if err != nil || len(gs) != 3 {
		t.Fatalf("grants %+v, %v; want 3", gs, err)
	}
}

// TestFindBrowserSessionOneRoundTrip: without Cluster, finding a session by
// its cookie (the cookie, the user's sessions and the durable cut-off) is
// one script, one round trip, and it answers as the three steps would: the
// session live and touched, an unknown cookie, a session the durable
// cut-off ends, a session ended in the user's hash.
func TestFindBrowserSessionOneRoundTrip(t *testing.T) {
	ctx := testCtx(t)
	rd := testservers.NewRedis(t)
	c := openClient(t, rd.URL())
	// A newline in the prefix is dropped (the script puts the user id where
	// the key name's newline is): the session is found all the same.
	st := New(c, Options{MaxAccessTokenTTL: time.Hour, Prefix: "p\n:"})
	var calls atomic.Int64
	c.AddHook(countingHook{&calls})
	now := time.UnixMilli(time.Now().UnixMilli()).UTC()
	newSession := func(id, user string, auth time.Time) store.BrowserSession {
		bs := store.BrowserSession{ID: id, UserID: user, AuthTime: auth, CreatedAt: auth, LastUsedAt: auth,
			IdleTTL: time.Hour, AbsoluteExpiry: auth.Add(24 * time.Hour), AMR: []string{"pwd"}}
		if _, err := st.CreateBrowserSession(ctx, bs, hashOf("cookie-"+id)); err != nil {
			t.Fatal(err)
		}
		return bs
	}
	bs := newSession("bs-1", "user-1", now)
	if _, err := st.FindBrowserSession(ctx, hashOf("cookie-bs-1"), now); err != nil { // loads the script
		t.Fatal(err)
	}
	calls.Store(0)
	later := now.Add(time.Minute)
	got, err := st.FindBrowserSession(ctx, hashOf("cookie-bs-1"), later)
	if err != nil || got.ID != bs.ID || got.UserID != bs.UserID || !got.LastUsedAt.Equal(later) || len(got.AMR) != 1 {
		t.Fatalf("FindBrowserSession: %+v, %v", got, err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("finding a session took %d round trips, want 1", n)
	}
	if again, err := st.FindBrowserSession(ctx, hashOf("cookie-bs-1"), now); err != nil || !again.LastUsedAt.Equal(later) {
		t.Fatalf("the find did not move the last use forward for good: %+v, %v", again, err)
	}
	if _, err := st.FindBrowserSession(ctx, hashOf("unknown"), later); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("an unknown cookie: %v, want ErrNotFound", err)
	}

	// A durable cut-off the session predates: recorded in the revocation
	// set only (as after Redis lost the user's own cut-off key).
	ended := newSession("bs-2", "user-2", now)
	if err := c.Set(ctx, st.readyKey(), "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, st.userKey("user-2"), now.UnixMilli(), 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.FindBrowserSession(ctx, hashOf("cookie-bs-2"), later); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a session the durable cut-off ends: %v, want ErrNotFound", err)
	}
	// The revocation set not built: the full check runs (and finds it
	// ended), never "no cut-off".
	if err := c.Del(ctx, st.readyKey()).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.FindBrowserSession(ctx, hashOf("cookie-bs-2"), later); err == nil {
		t.Fatalf("session %s found while the revocation set is not built", ended.ID)
	}
	if _, err := st.EndBrowserSessionGrants(ctx, bs.ID, later); err != nil {
		t.Fatal(err)
	}
	if _, err := st.FindBrowserSession(ctx, hashOf("cookie-bs-1"), later); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("an ended session: %v, want ErrNotFound", err)
	}
}

// TestTakenCodeKeyOutlivesItsExpiry: taking a code moves its key's TTL to
// the end of its tombstone (store.TakenKeptFor), so Redis keeps it for the
// replay to be detected and drops it after; a taken record of another kind
// keeps its own expiry.
func TestTakenCodeKeyOutlivesItsExpiry(t *testing.T) {
	ctx := testCtx(t)
	u, prefix := testservers.RedisURL(t)
	c := openClient(t, u)
	const horizon = 2 * time.Hour
	st := New(c, Options{Prefix: prefix, MaxAccessTokenTTL: horizon})
	now := time.UnixMilli(time.Now().UnixMilli()).UTC()
	for _, tc := range []struct {
		kind    string
		wantTTL time.Duration // at most; at least this less 10 s
	}{
		{store.OnceAuthCode, store.TakenKeptFor(store.OnceAuthCode)},
		{store.OnceMFAToken, time.Minute},
	} {
		key := hashOf("ttl-" + tc.kind)
		if err := st.PutOnce(ctx, tc.kind, key, []byte("v"), now.Add(time.Minute)); err != nil {
			t.Fatalf("PutOnce(%s): %v", tc.kind, err)
		}
		if _, err := st.TakeOnce(ctx, tc.kind, key, now); err != nil {
			t.Fatalf("TakeOnce(%s): %v", tc.kind, err)
		}
		ttl, err := c.PTTL(ctx, st.onceKey(tc.kind, key)).Result()
		if err != nil {
			t.Fatalf("PTTL(%s): %v", tc.kind, err)
		}
		if ttl > tc.wantTTL || ttl < tc.wantTTL-10*time.Second {
			t.Errorf("%s: taken key's TTL %v, want about %v", tc.kind, ttl, tc.wantTTL)
		}
	}
}

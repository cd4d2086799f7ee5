package redisstate

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/testservers"
)

// familyReadsHook counts the reads of family hashes (HMGET of a :fam key),
// alone or in a pipeline: what a prune of a user's index costs per family.
type familyReadsHook struct{ n *atomic.Int64 }

func (h familyReadsHook) count(cmd redis.Cmder) {
	if args := cmd.Args(); cmd.Name() == "hmget" && len(args) > 1 && strings.HasSuffix(fmt.Sprint(args[1]), "}:fam") {
		h.n.Add(1)
	}
}
func (h familyReadsHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h familyReadsHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.count(cmd); return next(ctx, cmd) }
}
func (h familyReadsHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			h.count(cmd)
		}
		return next(ctx, cmds)
	}
}

// TestSessionCapPrune: a login at the session cap reads only the user's
// families that may have ended, never the whole index. A revoked family
// leaves the index as it is revoked; an expired one is found by its
// earliest end (the second index), read once, and dropped; a family used
// since (its idle expiry moved) is read once and not again before its new
// end. An index written by an earlier version (no expiry scores) is read
// whole once, then scored. On one node and on Cluster (where the indexes
// are written after the family).
func TestSessionCapPrune(t *testing.T) { onNodeAndCluster(t, testSessionCapPrune) }

// onNodeAndCluster runs test in parallel on the shared Redis (under a
// prefix of its own) and on a one-node Redis Cluster of its own.
func onNodeAndCluster(t *testing.T, test func(t *testing.T, c redis.UniversalClient, prefix string)) {
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		u, prefix := testservers.RedisURL(t)
		test(t, openClient(t, u), prefix)
	})
	t.Run("redis-cluster", func(t *testing.T) {
		t.Parallel()
		test(t, openClient(t, "redis-cluster://"+startClusterNode(t)), "c:")
	})
}

func testSessionCapPrune(t *testing.T, c redis.UniversalClient, prefix string) {
	const limit = 40
	ctx := testCtx(t)
	base := time.UnixMilli(time.Now().UnixMilli())
	var clock atomic.Int64
	clock.Store(base.UnixMilli())
	now := func() time.Time { return time.UnixMilli(clock.Load()) }
	st := New(c, Options{Prefix: prefix, MaxSessionsPerUser: limit, Now: now})
	var reads atomic.Int64
	c.AddHook(familyReadsHook{&reads})

	user := "u-prune"
	n := 0
	login := func(idle time.Duration) string {
		t.Helper()
		n++
		fam := store.RefreshFamily{ID: fmt.Sprintf("prune-%03d", n), UserID: user, ClientID: "c", Scope: "openid",
			CreatedAt: base.Add(time.Duration(n) * time.Millisecond), AbsoluteExpiry: base.Add(24 * time.Hour), IdleTTL: idle}
		if err := st.CreateFamily(ctx, fam, hashOf(fam.ID)); err != nil {
			t.Fatalf("login %d: %v", n, err)
		}
		return fam.ID
	}
	indexed := func(sid string) bool {
		t.Helper()
		_, err := c.ZScore(ctx, st.userFamsKey(user), sid).Result()
		if err != nil && err != redis.Nil {
			t.Fatal(err)
		}
		return err == nil
	}
	wantIndexes := func(what string, want int64) {
		t.Helper()
		fams, err1 := c.ZCard(ctx, st.userFamsKey(user)).Result()
		ends, err2 := c.ZCard(ctx, st.userEndsKey(user)).Result()
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if fams != want || ends != want {
			t.Fatalf("%s: the indexes hold %d families and %d expiry scores, want %d each", what, fams, ends, want)
		}
	}
	// countedLogin is a login that reads want families.
	countedLogin := func(what string, want int64) string {
		t.Helper()
		reads.Store(0)
		id := login(time.Hour)
		if got := reads.Load(); got != want {
			t.Errorf("%s read %d families, want %d", what, got, want)
		}
		return id
	}
	live := func(sid string) bool {
		t.Helper()
		_, err := st.FindRefresh(ctx, sid, hashOf(sid), now(), 0)
		return err == nil
	}

	// Three short-lived families (idle 1 min) first, then the rest (1 h):
	// the cap is full of live families.
	var ids []string
	for i := range limit {
		idle := time.Hour
		if i < 3 {
			idle = time.Minute
		}
		ids = append(ids, login(idle))
	}
	wantIndexes("at the cap", limit)

	// A login at the cap with every family live reads none of them and
	// ends the oldest.
	ids = append(ids, countedLogin("a login at the cap of live families", 0))
	if live(ids[0]) || indexed(ids[0]) {
		t.Fatal("the oldest family survived a login past the cap")
	}
	wantIndexes("after the cap ended the oldest", limit)

	// A revoked family leaves the index at once: the next login takes its
	// place without a prune reading anything, and ends no one.
	if err := st.RevokeFamily(ctx, ids[10], now()); err != nil {
		t.Fatal(err)
	}
	if indexed(ids[10]) {
		t.Fatal("a revoked family is still indexed")
	}
	wantIndexes("after a revocation", limit-1)
	ids = append(ids, countedLogin("a login after a revocation", 0))
	if !live(ids[1]) {
		t.Fatal("a login with a free place ended the oldest live family")
	}

	// At 1:40, ids[1] and ids[2] (idle 1 min) may have ended. One expired
	// (its keys are gone, as Redis expires them); the other was used at
	// 0:50, so its idle expiry moved to 1:50.
	clock.Store(base.Add(50 * time.Second).UnixMilli())
	next := hashOf("rotated")
	if res, err := st.RotateRefresh(ctx, store.RotateRequest{FamilyID: ids[2], PresentedHash: hashOf(ids[2]), NextHash: next, Now: now()}); err != nil ||
		res.Outcome != store.RotateOK {
		t.Fatalf("rotate: %+v, %v", res, err)
	}
	if err := c.Del(ctx, st.famKey(ids[1]), st.usedKey(ids[1])).Err(); err != nil {
		t.Fatal(err)
	}
	clock.Store(base.Add(100 * time.Second).UnixMilli())
	ids = append(ids, countedLogin("a login at the cap with two families due", 2))
	if indexed(ids[1]) {
		t.Error("the expired family is still indexed")
	}
	if !indexed(ids[2]) {
		t.Fatal("the family used since was dropped from the index")
	}
	if _, err := st.FindRefresh(ctx, ids[2], next, now(), 0); err != nil {
		t.Errorf("the family used since ended: %v", err)
	}
	if !live(ids[3]) {
		t.Error("a login that pruned an expired family ended the oldest live one")
	}
	wantIndexes("after the prune", limit)
	ids = append(ids, countedLogin("the next login at the cap (the used family's new end is 1:50)", 0))
	if live(ids[2]) {
		t.Error("the oldest live family survived a login past the cap")
	}

	// An index from an earlier version has no expiry scores, and its
	// revocations left the index: it is read whole once.
	if err := c.Del(ctx, st.userEndsKey(user)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.HSet(ctx, st.famKey(ids[20]), "rv", "1").Err(); err != nil {
		t.Fatal(err)
	}
	ids = append(ids, countedLogin("a login at the cap of an earlier version's index (the whole index)", limit))
	if indexed(ids[20]) || !live(ids[3]) {
		t.Error("the earlier version's revoked family was not pruned, or the oldest live family ended")
	}
	wantIndexes("after the earlier version's index was read", limit)
	countedLogin("the login after that", 0)
}

// TestSessionCapPruneRace: logins at the cap (each pruning, and
// re-scoring families that are due but live) race revocations of the
// user's families. Afterwards every live family is still in the user's
// index, so "end every session" finds it; no revoked family is left in it;
// no expiry score outlives its family's place in the index; at most the
// cap are live; and ending every session leaves none. On one node and on
// Cluster.
func TestSessionCapPruneRace(t *testing.T) { onNodeAndCluster(t, testSessionCapPruneRace) }

func testSessionCapPruneRace(t *testing.T, c redis.UniversalClient, prefix string) {
	const limit, logins = 6, 60
	ctx := testCtx(t)
	base := time.UnixMilli(time.Now().UnixMilli())
	// Two minutes on, every family of idle 1 min is due: each prune reads
	// and re-scores those still live while revocations drop them.
	now := func() time.Time { return base.Add(2 * time.Minute) }
	st := New(c, Options{Prefix: prefix, MaxSessionsPerUser: limit, Now: now})
	user := "u-race"
	ids := make([]string, logins)
	for i := range ids {
		ids[i] = fmt.Sprintf("race-%03d", i)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*logins)
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			idle := time.Hour
			if i%2 == 0 {
				idle = time.Minute
			}
			fam := store.RefreshFamily{ID: id, UserID: user, ClientID: "c", Scope: "openid",
				CreatedAt: base.Add(time.Duration(i) * time.Millisecond), AbsoluteExpiry: base.Add(24 * time.Hour), IdleTTL: idle}
			if err := st.CreateFamily(ctx, fam, hashOf(id)); err != nil {
				errs <- fmt.Errorf("login %s: %w", id, err)
			}
		}()
		if i%3 == 0 && i > 0 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := st.RevokeFamily(ctx, ids[i-1], now()); err != nil {
					errs <- fmt.Errorf("revoke %s: %w", ids[i-1], err)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	indexed := map[string]bool{}
	fams, err := c.ZRange(ctx, st.userFamsKey(user), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range fams {
		indexed[id] = true
	}
	ends, err := c.ZRange(ctx, st.userEndsKey(user), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ends {
		if !indexed[id] {
			t.Errorf("%s has an expiry score but no place in the index", id)
		}
	}
	live := 0
	for _, id := range ids {
		_, err := st.FindRefresh(ctx, id, hashOf(id), base.Add(time.Second), 0)
		if err == nil {
			live++
			if !indexed[id] {
				t.Errorf("live family %s is not in its user's index: ending every session would miss it", id)
			}
			continue
		}
		if rv, _ := c.HGet(ctx, st.famKey(id), "rv").Result(); rv == "1" && indexed[id] {
			t.Errorf("revoked family %s is still indexed", id)
		}
	}
	if live == 0 || live > limit {
		t.Fatalf("%d live families after %d logins at a cap of %d", live, logins, limit)
	}
	if err := st.RevokeUserSessions(ctx, user, base.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if _, err := st.FindRefresh(ctx, id, hashOf(id), base.Add(time.Second), 0); err == nil {
			t.Errorf("family %s outlived ending every session", id)
		}
	}
}

// BenchmarkLoginAtCap is a login of a user whose index is full of live
// families (each login ends the oldest), at a small and a large cap: the
// prune reads no family, so the cost does not grow with the cap.
func BenchmarkLoginAtCap(b *testing.B) {
	for _, limit := range []int{100, 10000} {
		b.Run(fmt.Sprint("cap=", limit), func(b *testing.B) {
			u, prefix := testservers.RedisURL(b)
			c, err := NewClient(u)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			ctx := context.Background()
			st := New(c, Options{Prefix: prefix, MaxSessionsPerUser: limit})
			base := time.UnixMilli(time.Now().UnixMilli())
			n := 0
			login := func() {
				n++
				fam := store.RefreshFamily{ID: fmt.Sprint("cap-", n), UserID: "u-cap", ClientID: "c", Scope: "openid",
					CreatedAt: base.Add(time.Duration(n) * time.Microsecond), AbsoluteExpiry: base.Add(24 * time.Hour), IdleTTL: time.Hour}
				if err := st.CreateFamily(ctx, fam, hashOf(fam.ID)); err != nil {
					b.Fatal(err)
				}
			}
			for range limit {
				login()
			}
			b.ResetTimer()
			for range b.N {
				login()
			}
		})
	}
}

package redisstate

import (
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// TestUserVersion walks the version protocol of userversion.go on a real
// Redis: a version is stable between writes, hidden ("") while any write
// is in flight, new after every write's end, redrawn when Redis lost it,
// and the key's expiry is short while a write is in flight (an end that
// never arrives is outlived by UserWriteTTL, not kept for ever).
func TestUserVersion(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, c, _ := sharedState(t, nil)
	version := func() string {
		t.Helper()
		v, err := s.UserVersion(ctx, "u1")
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	ttl := func() time.Duration {
		t.Helper()
		d, err := c.PTTL(ctx, s.userVerKey("u1")).Result()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	v1 := version()
	if v1 == "" || version() != v1 {
		t.Fatalf("a user never written: version %q, then %q; want one stable non-empty version", v1, version())
	}
	if d := ttl(); d <= UserWriteTTL || d > UserVersionTTL {
		t.Fatalf("idle version expires in %v, want (%v, %v]", d, UserWriteTTL, UserVersionTTL)
	}

	must(s.BeginUserWrite(ctx, "u1"))
	if v := version(); v != "" {
		t.Fatalf("during a write: version %q, want \"\" (no copy used or kept)", v)
	}
	if d := ttl(); d > UserWriteTTL {
		t.Fatalf("during a write the key expires in %v, want at most %v", d, UserWriteTTL)
	}
	must(s.BeginUserWrite(ctx, "u1")) // a second writer
	must(s.EndUserWrite(ctx, "u1"))
	if v := version(); v != "" {
		t.Fatalf("one of two writes ended: version %q, want \"\"", v)
	}
	must(s.EndUserWrite(ctx, "u1"))
	v2 := version()
	if v2 == "" || v2 == v1 {
		t.Fatalf("after the writes: version %q (before them %q), want a new one", v2, v1)
	}
	if d := ttl(); d <= UserWriteTTL {
		t.Fatalf("after the writes the key expires in %v, want more than %v", d, UserWriteTTL)
	}
	if other, err := s.UserVersion(ctx, "u2"); err != nil || other == v2 {
		t.Fatalf("another user's version %q (%v) equals u1's", other, err)
	}

	// A write whose end never arrives: the key expires with the write's
	// TTL (simulated by deleting it), and the version drawn next matches
	// no copy from before.
	must(s.BeginUserWrite(ctx, "u1"))
	must(c.Del(ctx, s.userVerKey("u1")).Err())
	v3 := version()
	if v3 == "" || v3 == v2 || v3 == v1 {
		t.Fatalf("after the key was lost: version %q, want a new one (had %q, %q)", v3, v1, v2)
	}
	// The lost write's end arriving late counts as no write in flight.
	must(s.EndUserWrite(ctx, "u1"))
	if v := version(); v == "" || v == v3 {
		t.Fatalf("after a late end: version %q, want a new non-empty one", v)
	}
}

// TestFindBrowserSessionReadsUserVersion: the session's lookup carries the
// user's version (no round trip of its own), on one node and on Cluster's
// path, and it is "" while a write of the user is in flight.
func TestFindBrowserSessionReadsUserVersion(t *testing.T) {
	t.Parallel()
	for _, cluster := range []bool{false, true} {
		ctx := testCtx(t)
		s, _, _ := sharedState(t, nil)
		s.cluster = cluster // the Cluster path also works on one node
		now := time.Now()
		cookie := []byte("cookie-hash-of-the-session-00000")
		bs := store.BrowserSession{ID: "bs1", UserID: "u1", AuthTime: now, AMR: []string{"pwd"}, CreatedAt: now,
			LastUsedAt: now, IdleTTL: time.Hour, AbsoluteExpiry: now.Add(24 * time.Hour)}
		if _, err := s.CreateBrowserSession(ctx, bs, cookie); err != nil {
			t.Fatal(err)
		}
		want, err := s.UserVersion(ctx, "u1")
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.FindBrowserSession(ctx, cookie, now)
		if err != nil {
			t.Fatal(err)
		}
		if got.UserVersion != (store.UserVersion{Read: true, Value: want}) {
			t.Fatalf("cluster %v: session's user version %+v, want %q read", cluster, got.UserVersion, want)
		}
		if err := s.BeginUserWrite(ctx, "u1"); err != nil {
			t.Fatal(err)
		}
		got, err = s.FindBrowserSession(ctx, cookie, now)
		if err != nil {
			t.Fatal(err)
		}
		if got.UserVersion != (store.UserVersion{Read: true}) {
			t.Fatalf("cluster %v: during a write the session's user version is %+v, want read and empty", cluster, got.UserVersion)
		}
	}
}

// TestRotateReadsUserVersion: on one node the rotation carries the family's
// user's version (no round trip of its own); on Cluster, where the version
// is in another slot, it carries none and the caller reads it.
func TestRotateReadsUserVersion(t *testing.T) {
	t.Parallel()
	for _, cluster := range []bool{false, true} {
		ctx := testCtx(t)
		s, _, _ := sharedState(t, nil)
		s.cluster = cluster
		now := time.Now()
		fam := store.RefreshFamily{ID: "s1", UserID: "u1", ClientID: "web", CreatedAt: now, AuthTime: now,
			AbsoluteExpiry: now.Add(time.Hour)}
		if err := s.CreateFamily(ctx, fam, []byte("h0")); err != nil {
			t.Fatal(err)
		}
		want, err := s.UserVersion(ctx, "u1")
		if err != nil {
			t.Fatal(err)
		}
		rotate := func(from, to string) store.RotateResult {
			t.Helper()
			res, err := s.RotateRefresh(ctx, store.RotateRequest{FamilyID: "s1", PresentedHash: []byte(from),
				NextHash: []byte(to), Now: now})
			if err != nil || res.Outcome != store.RotateOK {
				t.Fatalf("cluster %v: rotate: %+v, %v", cluster, res, err)
			}
			return res
		}
		wantRead := store.UserVersion{Read: true, Value: want}
		if cluster {
			wantRead = store.UserVersion{}
		}
		if got := rotate("h0", "h1").UserVersion; got != wantRead {
			t.Fatalf("cluster %v: rotation's user version %+v, want %+v", cluster, got, wantRead)
		}
		if err := s.BeginUserWrite(ctx, "u1"); err != nil {
			t.Fatal(err)
		}
		if got := rotate("h1", "h2").UserVersion; !cluster && got != (store.UserVersion{Read: true}) {
			t.Fatalf("during a write the rotation's user version is %+v, want read and empty", got)
		}
		if res, err := s.RotateRefresh(ctx, store.RotateRequest{FamilyID: "s1", PresentedHash: []byte("nope"),
			NextHash: []byte("h3"), Now: now}); err != nil || res.Outcome != store.RotateInvalid || res.UserVersion.Read {
			t.Fatalf("cluster %v: an invalid rotation: %+v, %v", cluster, res, err)
		}
	}
}

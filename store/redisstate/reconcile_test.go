package redisstate

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/testservers"
)

// TestOtherInstanceAppliesUnappliedRevocations: instance a records
// revocations durably while Redis refuses writes (the caller is told they
// are pending, that is, made) and never writes them to Redis: it stops
// (its in-memory queue is lost), or it stays up and never retries. Once
// Redis takes writes again, instance b's reconciliation, called directly or
// run by its ticker, applies them from the durable log: the access tokens
// are revoked (a user's at a client whose consent was withdrawn too,
// without a session), the families neither rotate nor are found (the
// consent user's too when it was granted before the cut-off and created
// after it, where the withdrawal was not yet seen), the cut-off
// user's logins from before the cut-off start no session, and the records
// are marked applied. A record younger than the grace is left to its
// instance; the cut-off user's session from a login after the cut-off
// goes on. Before, b answered "not revoked" until an operator rebuilt
// Redis's revocation set.
func TestOtherInstanceAppliesUnappliedRevocations(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stop   bool // a stops; else it stays up and never retries
		ticker bool // b's RunReconciler applies them; else a direct Reconcile
	}{
		{"ok/instance_stopped", true, false},
		{"ok/instance_alive_never_retries", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) { testOtherInstanceApplies(t, tc.stop, tc.ticker) })
	}
}

func testOtherInstanceApplies(t *testing.T, stop, ticker bool) {
	ctx := testCtx(t)
	log, _ := revocationLog(t)
	rd := testservers.NewRedis(t)
	admin := openClient(t, rd.URL())
	aClient, err := NewClient(rd.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = aClient.Close() })
	a := New(aClient, Options{Log: log, MaxAccessTokenTTL: time.Hour})
	a.retryPeriod = time.Hour // a never writes its queue to Redis during the test
	var ahead atomic.Int64    // b's clock runs this far ahead (ns): past the grace
	b := New(openClient(t, rd.URL()), Options{Log: log, MaxAccessTokenTTL: time.Hour, ReconcilePeriod: 10 * time.Millisecond,
		Now: func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }})
	now := time.UnixMilli(time.Now().UnixMilli())
	type fam struct{ sid, user string }
	logout, reset, live := fam{"sid-logout", "user-a"}, fam{"sid-reset", "user-reset"}, fam{"sid-live", "user-a"}
	consent := fam{"sid-consent", "user-consent"} // of client "c", whose consent is withdrawn
	for _, f := range []fam{logout, reset, live, consent} {
		if err := a.CreateFamily(ctx, family(f.sid, f.user, now.Add(-time.Minute)), hashOf(f.sid)); err != nil {
			t.Fatal(err)
		}
	}
	// A session of the consent user at "c" granted before the cut-off and
	// created just after it (a code redeemed as the consent was withdrawn).
	consentGranted := fam{"sid-consent-granted", consent.user}
	granted := family(consentGranted.sid, consentGranted.user, now.Add(time.Second))
	granted.GrantedAt = now.Add(-time.Minute)
	if err := a.CreateFamily(ctx, granted, hashOf(consentGranted.sid)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.IsAccessTokenRevoked(ctx, store.AccessTokenRef{JTI: "warm-up"}); err != nil { // the set is built
		t.Fatal(err)
	}
	if err := admin.ConfigSet(ctx, "min-replicas-to-write", "1").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.ConfigSet(context.Background(), "min-replicas-to-write", "0").Err() })
	cutoff := now.Add(time.Millisecond)
	for name, call := range map[string]func() error{
		"revoke family":        func() error { return a.RevokeFamily(ctx, logout.sid, cutoff) },
		"revoke user sessions": func() error { return a.RevokeUserSessions(ctx, reset.user, cutoff) },
		"revoke access token":  func() error { return a.RevokeAccessToken(ctx, "j-revoked", now.Add(30*time.Minute)) },
		"revoke client grants": func() error { return a.RevokeClientGrants(ctx, consent.user, "c", cutoff) },
	} {
		if err := call(); !errors.Is(err, store.ErrRevocationPending) {
			t.Fatalf("%s while Redis refuses writes: %v, want store.ErrRevocationPending", name, err)
		}
	}
	// While Redis refuses writes, a's own lookups count its queue: the
	// session granted before the cut-off is not found.
	if _, err := a.FindRefresh(ctx, consentGranted.sid, hashOf(consentGranted.sid), now.Add(2*time.Second), 0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a's FindRefresh of a session granted before its queued cut-off: %v, want store.ErrNotFound", err)
	}
	if stop {
		_ = aClient.Close() // a stops: its queue is lost
	}
	if err := admin.ConfigSet(ctx, "min-replicas-to-write", "0").Err(); err != nil {
		t.Fatal(err)
	}
	// The cut-off user signs in again after the cut-off, through b.
	afterCut := fam{"sid-reset-after", reset.user}
	if err := b.CreateFamily(ctx, family(afterCut.sid, afterCut.user, cutoff.Add(time.Second)), hashOf(afterCut.sid)); err != nil {
		t.Fatal(err)
	}
	// A code the consent user was issued for "c" before the withdrawal is
	// redeemed through b after the cut-off, before b has seen it.
	consentLate := fam{"sid-consent-late", consent.user}
	late := family(consentLate.sid, consentLate.user, cutoff.Add(time.Second))
	late.GrantedAt = now.Add(-time.Minute)
	if err := b.CreateFamily(ctx, late, hashOf(consentLate.sid)); err != nil {
		t.Fatal(err)
	}
	refs := map[string]store.AccessTokenRef{
		"jti":     {JTI: "j-revoked", UserID: "user-x", IssuedAt: now},
		"session": {JTI: "j-logout", SID: logout.sid, UserID: logout.user, IssuedAt: now},
		"user":    {JTI: "j-reset", SID: reset.sid, UserID: reset.user, IssuedAt: now},
		"client":  {JTI: "j-consent", UserID: consent.user, ClientID: "c", IssuedAt: now}, // no session
	}

	// Within the grace the records are left to a, which may be writing
	// them right now.
	if err := b.Reconcile(ctx); err != nil {
		t.Fatalf("Reconcile within the grace: %v", err)
	}
	if r, err := b.IsAccessTokenRevoked(ctx, refs["jti"]); err != nil || r {
		t.Fatalf("b within the grace: revoked=%v, %v; want the record left to its instance", r, err)
	}

	ahead.Store(int64(time.Minute))
	if ticker {
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); b.RunReconciler(rctx, func(err error) { t.Errorf("reconcile: %v", err) }) }()
		deadline := time.Now().Add(10 * time.Second)
		for r, _ := b.IsAccessTokenRevoked(ctx, refs["user"]); !r; r, _ = b.IsAccessTokenRevoked(ctx, refs["user"]) {
			if time.Now().After(deadline) {
				t.Fatal("b's reconciler never applied the recorded revocations")
			}
			time.Sleep(10 * time.Millisecond)
		}
		// The pass that wrote the cut-off may still be marking the records.
		for left := unapplied(t, log); len(left) > 0; left = unapplied(t, log) {
			if time.Now().After(deadline) {
				t.Fatalf("records still unapplied after b's reconciler applied them: %+v", left)
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		<-done
	} else if err := b.Reconcile(ctx); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}

	for name, ref := range refs {
		if r, err := b.IsAccessTokenRevoked(ctx, ref); err != nil || !r {
			t.Fatalf("%s: b's check after reconciling: revoked=%v, %v; want revoked", name, r, err)
		}
	}
	for _, f := range []fam{logout, reset, consent, consentLate, consentGranted} {
		if _, err := b.FindRefresh(ctx, f.sid, hashOf(f.sid), now.Add(time.Second), 0); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("%s: FindRefresh after reconciling: %v, want store.ErrNotFound", f.sid, err)
		}
		res, err := b.RotateRefresh(ctx, store.RotateRequest{FamilyID: f.sid, PresentedHash: hashOf(f.sid),
			NextHash: hashOf(f.sid + "-next"), Now: now.Add(time.Second)})
		if err != nil || res.Outcome != store.RotateInvalid {
			t.Fatalf("%s: rotation after reconciling: %v, %v; want RotateInvalid", f.sid, res.Outcome, err)
		}
	}
	err = b.CreateFamily(ctx, family("sid-reset-late", reset.user, now.Add(-time.Second)), hashOf("late"))
	if !errors.Is(err, store.ErrSessionsEnded) {
		t.Fatalf("CreateFamily of the cut-off user from before the cut-off: %v, want store.ErrSessionsEnded", err)
	}
	for _, f := range []fam{live, afterCut} {
		res, err := b.RotateRefresh(ctx, store.RotateRequest{FamilyID: f.sid, PresentedHash: hashOf(f.sid),
			NextHash: hashOf(f.sid + "-next"), Now: cutoff.Add(2 * time.Second)})
		if err != nil || res.Outcome != store.RotateOK {
			t.Fatalf("%s: rotation of a session nobody revoked: %v, %v; want RotateOK", f.sid, res.Outcome, err)
		}
	}
	if left := unapplied(t, log); len(left) > 0 {
		t.Fatalf("records still unapplied after reconciling: %+v", left)
	}
}

// unapplied lists every unexpired record of log not marked applied.
func unapplied(t *testing.T, log store.RevocationLog) []store.Revocation {
	t.Helper()
	now := time.Now()
	revs, err := log.UnappliedRevocations(testCtx(t), now, now.Add(time.Hour), 1000)
	if err != nil {
		t.Fatalf("UnappliedRevocations: %v", err)
	}
	return revs
}

// TestAppliedRevocationsMarked: a revocation Redis takes at once is marked
// applied in the durable log, so no reconciliation applies it again; one
// Redis refused stays unapplied until the instance's retry writes it.
func TestAppliedRevocationsMarked(t *testing.T) {
	ctx := testCtx(t)
	log, _ := revocationLog(t)
	rd := testservers.NewRedis(t)
	admin := openClient(t, rd.URL())
	st := New(openClient(t, rd.URL()), Options{Log: log, MaxAccessTokenTTL: time.Hour})
	st.retryPeriod = time.Hour
	now := time.UnixMilli(time.Now().UnixMilli())
	if err := st.CreateFamily(ctx, family("sid-1", "user-1", now.Add(-time.Minute)), hashOf("sid-1")); err != nil {
		t.Fatal(err)
	}
	if err := st.RevokeUserSessions(ctx, "user-1", now); err != nil { // the user's and the family's session's records
		t.Fatal(err)
	}
	if left := unapplied(t, log); len(left) > 0 {
		t.Fatalf("records Redis took are unapplied: %+v", left)
	}
	if err := admin.ConfigSet(ctx, "min-replicas-to-write", "1").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.ConfigSet(context.Background(), "min-replicas-to-write", "0").Err() })
	if err := st.RevokeAccessToken(ctx, "j-1", now.Add(time.Hour)); !errors.Is(err, store.ErrRevocationPending) {
		t.Fatalf("RevokeAccessToken while Redis refuses writes: %v, want store.ErrRevocationPending", err)
	}
	if left := unapplied(t, log); len(left) != 1 || left[0].Value != "j-1" {
		t.Fatalf("unapplied records while Redis refuses writes: %+v, want the jti's", left)
	}
	if err := admin.ConfigSet(ctx, "min-replicas-to-write", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if left, err := st.Drain(ctx); err != nil || left != 0 {
		t.Fatalf("Drain once Redis takes writes: %d left, %v; want none", left, err)
	}
	if left := unapplied(t, log); len(left) > 0 {
		t.Fatalf("records the drain wrote are unapplied: %+v", left)
	}
}

// TestDrainWhileRedisRefusesWrites: a stopping instance's drain gives up
// at its deadline and reports what it could not write.
func TestDrainWhileRedisRefusesWrites(t *testing.T) {
	ctx := testCtx(t)
	log, _ := revocationLog(t)
	rd := testservers.NewRedis(t)
	admin := openClient(t, rd.URL())
	st := New(openClient(t, rd.URL()), Options{Log: log, MaxAccessTokenTTL: time.Hour})
	st.retryPeriod = time.Hour
	if err := admin.ConfigSet(ctx, "min-replicas-to-write", "1").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.ConfigSet(context.Background(), "min-replicas-to-write", "0").Err() })
	if err := st.RevokeAccessToken(ctx, "j-1", time.Now().Add(time.Hour)); !errors.Is(err, store.ErrRevocationPending) {
		t.Fatalf("RevokeAccessToken while Redis refuses writes: %v, want store.ErrRevocationPending", err)
	}
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	start := time.Now()
	left, err := st.Drain(dctx)
	if err == nil || left != 1 {
		t.Fatalf("Drain while Redis refuses writes: %d left, %v; want 1 left and an error", left, err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Drain took %v past its deadline", d)
	}
}

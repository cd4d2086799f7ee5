package redisstate

import (
	"context"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/testservers"
)

// TestRevocationKeysOutliveRedisClockAhead: an instance whose clock is
// behind Redis's (by less than store.ClockSkew) still sees every kind of
// revocation until the revoked thing expires by its own clock. The keys
// are written with PXAT (Redis's clock), so without the skew margin a
// revoked token with a few seconds left by the instance's clock was
// accepted (found by a review). A cut-off's own expiry is far away
// (store.UserCutoffLifetime), so an access token's is what is tested.
func TestRevocationKeysOutliveRedisClockAhead(t *testing.T) {
	ctx := testCtx(t)
	u, prefix := testservers.RedisURL(t)
	c := openClient(t, u)
	behind := func() time.Time { return time.Now().Add(-10 * time.Second) }
	for _, tc := range []struct {
		name   string
		revoke func(st *State, exp time.Time) error
		ref    func(exp time.Time) store.AccessTokenRef
	}{
		{"access token", func(st *State, exp time.Time) error { return st.RevokeAccessToken(ctx, "jti-skew", exp) },
			func(time.Time) store.AccessTokenRef { return store.AccessTokenRef{JTI: "jti-skew", IssuedAt: behind()} }},
		{"session", func(st *State, exp time.Time) error {
			return st.revoke(ctx, []store.Revocation{{Kind: store.RevokedSession, Value: "sid-skew", At: behind(), ExpiresAt: exp}})
		}, func(time.Time) store.AccessTokenRef {
			return store.AccessTokenRef{JTI: "jti-2", SID: "sid-skew", IssuedAt: behind()}
		}},
		{"user cut-off (rebuilt)", func(st *State, exp time.Time) error {
			return st.applyRecorded(ctx, []store.Revocation{{Kind: store.RevokedUser, Value: "usr_skew", At: behind(), ExpiresAt: exp}})
		}, func(time.Time) store.AccessTokenRef {
			return store.AccessTokenRef{JTI: "jti-3", UserID: "usr_skew", IssuedAt: behind().Add(-time.Second)}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := New(c, Options{Prefix: prefix + tc.name[:4] + ":", Now: behind})
			exp := behind().Add(5 * time.Second).Truncate(time.Second) // 4-5 s ahead by the instance's clock
			if err := tc.revoke(st, exp); err != nil {
				t.Fatalf("revoke: %v", err)
			}
			revoked, err := st.IsAccessTokenRevoked(ctx, tc.ref(exp))
			if err != nil {
				t.Fatalf("check: %v", err)
			}
			if !behind().Before(exp) {
				t.Fatalf("test setup: the revocation expired by the instance's clock")
			}
			if !revoked {
				t.Errorf("revoked with %s left by the instance's clock, and not revoked: its key expired by Redis's clock",
					exp.Sub(behind()).Round(time.Millisecond))
			}
		})
	}
}

// TestRebuildByInstanceAheadKeepsRevocations: Redis came back empty and the
// instance that rebuilds its revocations from the durable log, or applies
// the log's unapplied records, runs 30 s ahead (less than store.ClockSkew).
// An instance whose clock is right still accepts the revoked tokens for
// 10 s, so the records must be rebuilt: the log listed, and the rebuild
// kept, only records unexpired by the rebuilder's clock (found by a
// review; this test failed before the change).
func TestRebuildByInstanceAheadKeepsRevocations(t *testing.T) {
	const skew = 30 * time.Second
	for _, tc := range []struct {
		name  string
		built bool // the set was rebuilt (empty) before the records were written
		run   func(ctx context.Context, ahead *State) error
	}{
		{"rebuild", false, func(ctx context.Context, ahead *State) error { return ahead.rebuild(ctx) }},
		{"reconciliation of unapplied records", true, func(ctx context.Context, ahead *State) error { return ahead.applyUnapplied(ctx) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			log, _ := revocationLog(t)
			u, prefix := testservers.RedisURL(t)
			c := openClient(t, u)
			real := time.UnixMilli(time.Now().UnixMilli())
			exp := real.Add(10 * time.Second)
			revs := []store.Revocation{
				{Kind: store.RevokedJTI, Value: "jti-skew", At: real, ExpiresAt: exp},
				{Kind: store.RevokedSession, Value: "sid-skew", At: real, ExpiresAt: exp},
			}
			ahead := New(c, Options{Prefix: prefix, Log: log, ReconcileGrace: time.Millisecond,
				Now: func() time.Time { return real.Add(skew) }})
			if tc.built {
				if err := ahead.rebuild(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if err := log.RecordRevocations(ctx, revs); err != nil {
				t.Fatal(err)
			}
			if err := tc.run(ctx, ahead); err != nil {
				t.Fatal(err)
			}
			right := New(c, Options{Prefix: prefix, Log: log, Now: func() time.Time { return real }})
			for _, ref := range []store.AccessTokenRef{{JTI: "jti-skew", IssuedAt: real}, {JTI: "jti-2", SID: "sid-skew", IssuedAt: real}} {
				revoked, err := right.inRevocationSet(ctx, ref)
				if err != nil {
					t.Fatal(err)
				}
				if !revoked {
					t.Errorf("%+v: not revoked with %s left by the checking instance's clock, after a %s by an instance %s ahead",
						ref, exp.Sub(real), tc.name, skew)
				}
			}
		})
	}
}

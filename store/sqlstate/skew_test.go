package sqlstate

import (
	"fmt"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// TestRevocationsOutlivePurgeByInstanceAhead: two instances share the
// database (SQL token state, no Redis). The one whose clock is 30 s ahead
// (less than store.ClockSkew) runs the periodic purge; the other, whose
// clock is right, still accepts the revoked tokens for 10 s by its own
// clock, so every kind of revocation record must survive that purge. The
// purge deleted them at their bare expiry (found by a review; this test
// failed before the change). A purge at the expiry plus store.ClockSkew
// deletes them.
func TestRevocationsOutlivePurgeByInstanceAhead(t *testing.T) {
	const horizon, skew = 10 * time.Second, 30 * time.Second
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := testCtx(t)
			db := openStore(t, b.url(t)).DB()
			real := time.Now().UTC().Truncate(time.Millisecond)
			right := New(db, WithMaxAccessTokenTTL(horizon), WithClock(func() time.Time { return real }))
			ahead := New(db, WithMaxAccessTokenTTL(horizon), WithClock(func() time.Time { return real.Add(skew) }))
			exp := real.Add(horizon) // when the revoked tokens expire
			userCutoff := exp.Add(-store.UserCutoffLifetime(horizon))
			cases := []struct {
				name   string
				revoke func() error
				ref    store.AccessTokenRef
			}{
				{"access token", func() error { return right.RevokeAccessToken(ctx, "jti-skew", exp) },
					store.AccessTokenRef{JTI: "jti-skew", IssuedAt: real.Add(-time.Minute)}},
				{"session", func() error { return right.RevokeFamily(ctx, "sid-skew", real) },
					store.AccessTokenRef{JTI: "jti-2", SID: "sid-skew", IssuedAt: real.Add(-time.Minute)}},
				{"user at a client", func() error { return right.RevokeClientGrants(ctx, "usr_client", "web", real) },
					store.AccessTokenRef{JTI: "jti-3", UserID: "usr_client", ClientID: "web", IssuedAt: real.Add(-time.Minute)}},
				{"user", func() error { return right.RevokeUserSessions(ctx, "usr_all", userCutoff) },
					store.AccessTokenRef{JTI: "jti-4", UserID: "usr_all", IssuedAt: userCutoff.Add(-time.Second)}},
			}
			for _, tc := range cases {
				if err := tc.revoke(); err != nil {
					t.Fatalf("%s: revoke: %v", tc.name, err)
				}
			}
			check := func(when string, want bool) {
				t.Helper()
				for _, tc := range cases {
					revoked, err := right.IsAccessTokenRevoked(ctx, tc.ref)
					if err != nil {
						t.Fatalf("%s: check: %v", tc.name, err)
					}
					if revoked != want {
						t.Errorf("%s, %s: revoked = %v, want %v", tc.name, when, revoked, want)
					}
				}
			}
			// The ahead instance's purge loop (app.Purge with its time.Now()).
			if _, err := ahead.Purge(ctx, real.Add(skew)); err != nil {
				t.Fatal(err)
			}
			check(fmt.Sprintf("with %s left by the verifying instance's clock, after a purge by an instance %s ahead", exp.Sub(real), skew), true)
			if _, err := ahead.Purge(ctx, exp.Add(store.ClockSkew)); err != nil {
				t.Fatal(err)
			}
			check("after a purge at the expiry plus store.ClockSkew", false)
		})
	}
}

package keys_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/keys"
)

// TestRetiredKeyOutlivesItsLastToken: after a rotation, an instance that
// cannot reload the keys may sign with the retired key for as long as it
// may use keys it cannot reload (two sync intervals); the key stays in the
// JWKS until such a token has expired, plus the clock skew margin, and no
// longer. Found by a review: the window allowed one sync interval, so
// with a sync interval above one minute the key left the JWKS while tokens
// it had legitimately signed were still valid.
func TestRetiredKeyOutlivesItsLastToken(t *testing.T) {
	const ttl = 15 * time.Minute
	for _, backend := range backends {
		for _, sync := range []time.Duration{10 * time.Second, 5 * time.Minute} {
			t.Run(fmt.Sprintf("%s/sync-%s", backend, sync), func(t *testing.T) {
				ctx := context.Background()
				clk := newClock()
				db := openStore(t, backend)
				kr := ring(t, kek(t))
				cfg := func(c *keys.Config) { c.SyncInterval, c.MaxTokenTTL = sync, ttl }
				a := newManager(t, db, kr, keys.AlgEdDSA, clk, cfg)
				if err := a.Init(ctx); err != nil {
					t.Fatal(err)
				}
				down := &failingStore{Store: db}
				b := newManager(t, down, kr, keys.AlgEdDSA, clk, cfg)
				if err := b.Init(ctx); err != nil {
					t.Fatal(err)
				}
				clk.Advance(keys.PublicationDelay(sync, jwksMaxAge))
				if err := b.Refresh(ctx); err != nil {
					t.Fatal(err)
				}
				retiredAt := clk.Now()
				rot, err := a.Rotate(ctx, false)
				if err != nil {
					t.Fatal(err)
				}
				old := rot.Retired.KID

				// b read the keys just before the rotation and cannot reload them:
				// it signs with the retired key for as long as it may use them.
				down.down.Store(true)
				clk.Advance(sync)
				if err := b.Refresh(ctx); err == nil {
					t.Fatal("Refresh succeeded against a store that is down")
				}
				clk.Set(retiredAt.Add(2*sync - time.Second))
				issued := clk.Now()
				tok, err := b.Sign(map[string]any{"sub": "u", "iat": issued.Unix(), "exp": issued.Add(ttl).Unix()}, "at+jwt")
				if err != nil {
					t.Fatalf("b does not sign: %v", err)
				}
				if _, kid, _ := a.VerifyTyped(tok, "at+jwt"); kid != old {
					t.Fatalf("b signed with %s, want the retired %s", kid, old)
				}
				clk.Set(retiredAt.Add(2 * sync))
				if _, err := b.Sign(map[string]any{"sub": "u"}, "at+jwt"); !errors.Is(err, keys.ErrStale) {
					t.Fatalf("b signs with keys read two sync intervals ago: %v, want ErrStale", err)
				}

				// The token lives until issued+ttl on the signer's clock; a
				// verifier's clock may be up to the skew margin behind.
				lastValid := issued.Add(ttl + keys.RetirementSkew - time.Second)
				clk.Set(lastValid)
				if err := a.Sync(ctx); err != nil {
					t.Fatal(err)
				}
				if _, _, err := a.VerifyTyped(tok, "at+jwt"); err != nil {
					t.Errorf("%s before its expiry plus the skew margin, a token the retired key signed is refused: %v",
						issued.Add(ttl+keys.RetirementSkew).Sub(clk.Now()), err)
				}
				if kids := jwksKIDs(t, a); !contains(kids, old) {
					t.Errorf("the retired key left the JWKS %s before its last token expires (plus skew)",
						issued.Add(ttl+keys.RetirementSkew).Sub(clk.Now()))
				}
				wantUntil := retiredAt.Add(2*sync + ttl + keys.RetirementSkew)
				if until := rot.Retired.PublishedUntil; until == nil || !until.Equal(wantUntil) {
					t.Errorf("published until %v, want %s (retired + 2 sync intervals + token TTL + skew)", until, wantUntil)
				}
				clk.Set(wantUntil)
				if err := a.Sync(ctx); err != nil {
					t.Fatal(err)
				}
				if kids := jwksKIDs(t, a); contains(kids, old) {
					t.Errorf("the retired key is still published at %s", wantUntil)
				}
			})
		}
	}
}

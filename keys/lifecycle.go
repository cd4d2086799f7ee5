package keys

import (
	"fmt"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// RetirementSkew is the clock skew added to a retired key's publication
// (store.ClockSkew, the margin every expiry judged by another clock has).
const RetirementSkew = store.ClockSkew

// PublicationDelay is how long after its creation a key may start signing:
// it counts as published once every instance has synced (syncInterval), and
// verifiers may have cached the JWKS from just before that for jwksMaxAge.
func PublicationDelay(syncInterval, jwksMaxAge time.Duration) time.Duration {
	return syncInterval + jwksMaxAge
}

// ValidateRotationInterval refuses an automatic rotation interval shorter
// than twice the publication delay (0 means manual rotation and is valid).
func ValidateRotationInterval(interval, syncInterval, jwksMaxAge time.Duration) error {
	if interval < 0 {
		return fmt.Errorf("key rotation interval %s is negative: use 0 for manual rotation", interval)
	}
	if interval == 0 {
		return nil
	}
	minimum := 2 * PublicationDelay(syncInterval, jwksMaxAge)
	if interval < minimum {
		return fmt.Errorf("key rotation interval %s is shorter than twice the publication delay (key sync interval %s + JWKS max age %s): use at least %s, or 0 for manual rotation",
			interval, syncInterval, jwksMaxAge, minimum)
	}
	return nil
}

// timing holds the settings the lifecycle rules depend on.
type timing struct {
	sync, maxAge, maxTokenTTL time.Duration
}

// staleAfter is how long an instance goes on using keys it cannot reload
// (Manager.current): one failed sync is ridden out, the second in a row
// ends it. A key revoked elsewhere is then refused by this instance within
// two sync intervals even while the store is unreachable or a store call
// hangs (within one, as the contract says, while it is reachable).
func (t timing) staleAfter() time.Duration { return 2 * t.sync }

// publishedAt is when every instance serves a key created at created.
func (t timing) publishedAt(created time.Time) time.Time { return created.Add(t.sync) }

// safeToSignAt is when a key created at created may sign without breaking a
// verifier that cached the JWKS.
func (t timing) safeToSignAt(created time.Time) time.Time {
	return created.Add(PublicationDelay(t.sync, t.maxAge))
}

// publishedUntil is when a key retired at retired leaves the JWKS: another
// instance may keep signing with it for as long as it may use keys read
// before the retirement (staleAfter, when it cannot reload them), a token
// signed then lives for at most maxTokenTTL, plus the clock skew margin.
func (t timing) publishedUntil(retired time.Time) time.Time {
	return retired.Add(t.staleAfter() + t.maxTokenTTL + RetirementSkew)
}

// inJWKS reports whether a key belongs in the JWKS at now.
func inJWKS(k store.SigningKey, now time.Time) bool {
	switch k.State {
	case store.KeyNext, store.KeyActive:
		return true
	case store.KeyRetired:
		return k.PublishedUntil != nil && now.Before(*k.PublishedUntil)
	}
	return false
}

package verify_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/portcullis-auth/portcullis/keys/verify"
)

func TestNewRemoteKeySetRefusesBadOptions(t *testing.T) {
	tests := []struct {
		name string
		opts verify.RemoteKeySetOptions
	}{
		{"fail/neither issuer nor URL", verify.RemoteKeySetOptions{}},
		{"fail/relative issuer", verify.RemoteKeySetOptions{Issuer: "issuer.example"}},
		{"fail/ftp JWKS URL", verify.RemoteKeySetOptions{JWKSURL: "ftp://issuer.example/jwks"}},
		{"fail/min refresh above max", verify.RemoteKeySetOptions{Issuer: "https://issuer.example", MinRefresh: time.Hour, MaxRefresh: time.Minute}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if ks, err := verify.NewRemoteKeySet(tc.opts); err == nil {
				ks.Close()
				t.Fatal("accepted")
			}
		})
	}
}

// TestRemoteKeySetDiscovery: the JWKS is found through discovery (once), or
// taken from JWKSURL without discovery; a discovery document naming another
// issuer is refused.
func TestRemoteKeySetDiscovery(t *testing.T) {
	s := newSigner(t, jose.ES256, "ec-1")
	tok := s.sign(t, accessClaims(time.Now()), nil)
	t.Run("ok/discovery", func(t *testing.T) {
		srv := newJWKSServer(t, "public, max-age=300", s)
		ks := srv.remoteKeySet(t, verify.RemoteKeySetOptions{})
		if _, err := mustVerifier(t, ks, nil).Verify(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
		if err := ks.Refresh(context.Background()); err != nil {
			t.Fatal(err)
		}
		if d := srv.discovery.Load(); d != 1 {
			t.Fatalf("discovery fetched %d times, want once", d)
		}
	})
	t.Run("ok/explicit JWKS URL", func(t *testing.T) {
		srv := newJWKSServer(t, "public, max-age=300", s)
		ks := srv.remoteKeySet(t, verify.RemoteKeySetOptions{JWKSURL: srv.URL() + "/jwks"})
		if _, err := mustVerifier(t, ks, nil).Verify(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
		if d := srv.discovery.Load(); d != 0 {
			t.Fatalf("discovery fetched %d times with an explicit JWKS URL", d)
		}
	})
	t.Run("fail/issuer mismatch", func(t *testing.T) {
		srv := newJWKSServer(t, "public, max-age=300", s)
		srv.issuer = "https://impostor.example"
		ks := srv.remoteKeySet(t, verify.RemoteKeySetOptions{})
		if err := ks.Refresh(context.Background()); err == nil || !strings.Contains(err.Error(), "issuer") {
			t.Fatalf("Refresh: %v", err)
		}
		if _, err := mustVerifier(t, ks, nil).Verify(context.Background(), tok); !errors.Is(err, verify.ErrKeySetUnavailable) {
			t.Fatalf("Verify: %v", err)
		}
		if srv.fetches() != 0 {
			t.Fatal("the JWKS of an impostor's discovery document was fetched")
		}
	})
}

// TestRemoteKeySetHonoursCacheControlAndETag: the set is refreshed in the
// background before max-age runs out, with If-None-Match, so an unchanged
// set costs a 304; a changed set is picked up without any token asking.
func TestRemoteKeySetHonoursCacheControlAndETag(t *testing.T) {
	a := newSigner(t, jose.ES256, "a")
	b := newSigner(t, jose.ES256, "b")
	srv := newJWKSServer(t, "public, max-age=1", a)
	ks := srv.remoteKeySet(t, verify.RemoteKeySetOptions{MinRefresh: 100 * time.Millisecond})
	if err := ks.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, 3*time.Second, "a conditional refresh answered 304", func() bool { return srv.jwks304.Load() >= 1 })
	// max-age=1: the refresh comes at 3/4 of it, before expiry.
	if took := time.Since(start); took > 1200*time.Millisecond {
		t.Fatalf("first background refresh after %s, later than max-age", took)
	}
	if n := srv.jwks200.Load(); n != 1 {
		t.Fatalf("%d full downloads of an unchanged set", n)
	}
	srv.setKeys(a, b)
	waitFor(t, 3*time.Second, "the new key picked up in the background", func() bool { return slices.Contains(ks.KIDs(), "b") })
	before := srv.fetches()
	v := mustVerifier(t, ks, nil)
	for i := 0; i < 50; i++ {
		if _, err := v.Verify(context.Background(), b.sign(t, accessClaims(time.Now()), nil)); err != nil {
			t.Fatal(err)
		}
	}
	if after := srv.fetches(); after > before+1 { // at most the background's own refresh
		t.Fatalf("verifying known kids fetched the JWKS: %d → %d", before, after)
	}
}

// TestKnownKIDsNeverFetch: with a fresh set, verification makes no request.
func TestKnownKIDsNeverFetch(t *testing.T) {
	s := newSigner(t, jose.EdDSA, "ed-1")
	srv := newJWKSServer(t, "public, max-age=300", s)
	ks := srv.remoteKeySet(t, verify.RemoteKeySetOptions{})
	if err := ks.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := srv.fetches()
	v := mustVerifier(t, ks, nil)
	tok := s.sign(t, accessClaims(time.Now()), nil)
	for i := 0; i < 1000; i++ {
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	}
	if after := srv.fetches(); after != before {
		t.Fatalf("%d JWKS requests for known kids", after-before)
	}
}

// TestUnknownKIDRefetchIsRateLimited: a flood of tokens with forged kids
// causes at most one refetch per UnknownKIDInterval; a genuinely new key is
// found by the first refetch the interval allows.
func TestUnknownKIDRefetchIsRateLimited(t *testing.T) {
	a := newSigner(t, jose.ES256, "a")
	b := newSigner(t, jose.ES256, "b")
	forger := newSigner(t, jose.ES256, "forger")
	srv := newJWKSServer(t, "public, max-age=300", a)
	clk := newClock()
	ks := srv.remoteKeySet(t, verify.RemoteKeySetOptions{UnknownKIDInterval: 30 * time.Second, Now: clk.Now})
	if err := ks.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	v := mustVerifier(t, ks, clk.Now)
	base := srv.fetches()

	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for g := 0; g < 50; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				tok := forger.sign(t, accessClaims(clk.Now()), map[string]any{"kid": fmt.Sprintf("forged-%d-%d", g, i)})
				_, err := v.Verify(context.Background(), tok)
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, verify.ErrUnknownKey) {
			t.Fatalf("forged kid: %v", err)
		}
	}
	if n := srv.fetches() - base; n != 1 {
		t.Fatalf("1000 forged kids caused %d JWKS requests, want 1", n)
	}

	// The issuer publishes and at once signs with a new key (a forced rotation).
	srv.setKeys(a, b)
	tokB := b.sign(t, accessClaims(clk.Now()), nil)
	if _, err := v.Verify(context.Background(), tokB); !errors.Is(err, verify.ErrUnknownKey) {
		t.Fatalf("within the interval: %v", err)
	}
	if n := srv.fetches() - base; n != 1 {
		t.Fatalf("refetched within the interval: %d requests", n)
	}
	clk.Advance(30 * time.Second)
	if _, err := v.Verify(context.Background(), tokB); err != nil {
		t.Fatalf("after the interval the new key must be found: %v", err)
	}
	if n := srv.fetches() - base; n != 2 {
		t.Fatalf("%d requests, want 2", n)
	}
	// Known kids still cost nothing, and forged ones are limited again.
	for i := 0; i < 100; i++ {
		_, _ = v.Verify(context.Background(), forger.sign(t, accessClaims(clk.Now()), map[string]any{"kid": fmt.Sprint("again-", i)}))
		if _, err := v.Verify(context.Background(), tokB); err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.fetches() - base; n != 2 {
		t.Fatalf("%d requests after the second flood, want 2", n)
	}
}

// TestRemoteKeySetServesLastGoodSet: while the issuer is unreachable the
// last good set keeps verifying, past its max-age; when it is back, changes
// are picked up; after MaxStale without a successful fetch the set is no
// longer trusted.
func TestRemoteKeySetServesLastGoodSet(t *testing.T) {
	a := newSigner(t, jose.RS256, "a")
	b := newSigner(t, jose.RS256, "b")
	srv := newJWKSServer(t, "public, max-age=1", a)
	clk := newClock()
	ks := srv.remoteKeySet(t, verify.RemoteKeySetOptions{MinRefresh: 50 * time.Millisecond, UnknownKIDInterval: time.Millisecond, MaxStale: 10 * time.Minute, Now: clk.Now})
	if err := ks.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	v := mustVerifier(t, ks, clk.Now)
	tokA := a.sign(t, accessClaims(clk.Now()), nil)

	srv.stop()
	if err := ks.Refresh(context.Background()); err == nil {
		t.Fatal("Refresh of a stopped server succeeded")
	}
	clk.Advance(5 * time.Second) // well past max-age=1
	time.Sleep(300 * time.Millisecond)
	if _, err := v.Verify(context.Background(), tokA); err != nil {
		t.Fatalf("last good set not served while the issuer is down: %v", err)
	}
	// An unknown kid while down: the refetch fails, the answer is still "unknown key".
	tokB := b.sign(t, accessClaims(clk.Now()), nil)
	clk.Advance(time.Second)
	if _, err := v.Verify(context.Background(), tokB); !errors.Is(err, verify.ErrUnknownKey) {
		t.Fatalf("unknown kid while down: %v", err)
	}

	srv.setKeys(a, b)
	srv.restart()
	waitFor(t, 5*time.Second, "recovery after the issuer is back", func() bool { return slices.Contains(ks.KIDs(), "b") })
	for _, tok := range []string{tokA, tokB} {
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatalf("after recovery: %v", err)
		}
	}

	srv.stop()
	clk.Advance(10*time.Minute + 2*time.Second)
	tokA = a.sign(t, accessClaims(clk.Now()), nil)
	if _, err := v.Verify(context.Background(), tokA); !errors.Is(err, verify.ErrKeySetUnavailable) {
		t.Fatalf("a set stale beyond MaxStale: %v", err)
	}
}

// TestRemoteKeySetStartsWithIssuerDown: with no set yet, verification fails
// with ErrKeySetUnavailable (not "bad token") until the issuer answers.
func TestRemoteKeySetStartsWithIssuerDown(t *testing.T) {
	s := newSigner(t, jose.EdDSA, "ed-1")
	srv := newJWKSServer(t, "public, max-age=300", s)
	srv.stop()
	ks := srv.remoteKeySet(t, verify.RemoteKeySetOptions{MinRefresh: 50 * time.Millisecond, UnknownKIDInterval: 50 * time.Millisecond})
	v := mustVerifier(t, ks, nil)
	tok := s.sign(t, accessClaims(time.Now()), nil)
	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, verify.ErrKeySetUnavailable) {
		t.Fatalf("Verify with the issuer down: %v", err)
	}
	srv.restart()
	waitFor(t, 5*time.Second, "the first set", func() bool { _, err := v.Verify(context.Background(), tok); return err == nil })
}

// TestRemoteKeySetKeepsLastGoodOnBadDocument: a JWKS without a usable key
// (or an error status) does not replace the set in use.
func TestRemoteKeySetKeepsLastGoodOnBadDocument(t *testing.T) {
	s := newSigner(t, jose.ES256, "ec-1")
	srv := newJWKSServer(t, "no-store", s)
	ks := srv.remoteKeySet(t, verify.RemoteKeySetOptions{MinRefresh: time.Hour, MaxRefresh: time.Hour})
	if err := ks.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv.setKeys() // {"keys":[]}
	if err := ks.Refresh(context.Background()); err == nil || !strings.Contains(err.Error(), "no usable") {
		t.Fatalf("Refresh of an empty set: %v", err)
	}
	if _, err := mustVerifier(t, ks, nil).Verify(context.Background(), s.sign(t, accessClaims(time.Now()), nil)); err != nil {
		t.Fatalf("last good set dropped: %v", err)
	}
}

// TestRemoteKeySetCloseStopsFetching: after Close nothing is fetched.
func TestRemoteKeySetCloseStopsFetching(t *testing.T) {
	s := newSigner(t, jose.ES256, "ec-1")
	srv := newJWKSServer(t, "public, max-age=1", s)
	ks := srv.remoteKeySet(t, verify.RemoteKeySetOptions{MinRefresh: 50 * time.Millisecond, UnknownKIDInterval: time.Millisecond})
	if err := ks.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	ks.Close()
	n := srv.fetches()
	v := mustVerifier(t, ks, nil)
	other := newSigner(t, jose.ES256, "other")
	time.Sleep(1200 * time.Millisecond)
	_, _ = v.Verify(context.Background(), other.sign(t, accessClaims(time.Now()), nil))
	if _, err := v.Verify(context.Background(), s.sign(t, accessClaims(time.Now()), nil)); err != nil {
		t.Fatalf("the last set is no longer used after Close: %v", err)
	}
	if after := srv.fetches(); after != n {
		t.Fatalf("%d fetches after Close", after-n)
	}
}

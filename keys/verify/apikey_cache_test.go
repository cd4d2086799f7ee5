package verify_test

import (
	"net/http"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/portcullis-auth/portcullis/keys/verify"
)

// TestAPIKeyCacheKeepsRealKeysThroughAFlood: the checksum of an API key is
// public, so anyone mints well-formed keys, and each new one costs the
// issuer one introspection request. A flood of them must not also evict
// the real keys' answers: when the cache is full, expired answers go
// first, then negative ones, and a negative answer that finds the cache
// full of live positive ones is not cached. Found by a review: 300 forged
// keys (MaxCacheEntries 100) cleared the cache, so the real key, cached a
// moment before, was asked again.
func TestAPIKeyCacheKeepsRealKeysThroughAFlood(t *testing.T) {
	const max = 100
	cases := []struct {
		name      string
		real      int // real keys asked first (cached)
		forged    int // then forged keys
		newReal   bool
		wantAsked int64 // requests for the real keys asked again (and a new one, twice)
	}{
		{name: "ok/forged_flood_keeps_the_real_keys_answer", real: 1, forged: 3 * max},
		{name: "ok/cache_full_of_real_keys_keeps_them_all", real: max, forged: 10},
		{name: "ok/new_real_key_cached_in_a_cache_full_of_negatives", real: 1, forged: 3 * max, newReal: true, wantAsked: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			iss := newKeyIssuer(t)
			in := iss.introspector(t, verify.IntrospectorOptions{MaxCacheEntries: max})
			g := verify.NewGuard(mustVerifier(t, staticKeys(t, newSigner(t, jose.ES256, "k1")), time.Now), verify.GuardOptions{APIKeys: in})
			mw := g.RequireScope("projects:read")
			serve := func(key string, want int) {
				t.Helper()
				if w, _ := serveHeaders(mw, "X-API-Key", key); w.Code != want {
					t.Fatalf("status %d, want %d", w.Code, want)
				}
			}
			real := make([]string, tc.real)
			for i := range real {
				real[i] = newAPIKey(t)
				iss.issue(real[i], "usr_1", "projects:read", time.Now().Add(time.Hour), nil)
				serve(real[i], http.StatusNoContent)
			}
			before := iss.requests.Load()
			for range tc.forged {
				serve(newAPIKey(t), http.StatusUnauthorized)
			}
			if n := iss.requests.Load() - before; n != int64(tc.forged) {
				t.Errorf("%d forged keys made %d introspection requests, want one each", tc.forged, n)
			}
			before = iss.requests.Load()
			if tc.newReal {
				k := newAPIKey(t)
				iss.issue(k, "usr_2", "projects:read", time.Now().Add(time.Hour), nil)
				serve(k, http.StatusNoContent)
				serve(k, http.StatusNoContent)
			}
			for _, k := range real { // within their 5 s cache
				serve(k, http.StatusNoContent)
			}
			if n := iss.requests.Load() - before; n != tc.wantAsked {
				t.Errorf("after %d forged keys, %d requests for real keys cached a moment ago (or a new one asked twice), want %d",
					tc.forged, n, tc.wantAsked)
			}
		})
	}
}

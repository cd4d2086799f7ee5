package verify_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/keys/verify"
)

// BenchmarkAPIKeyCached is the verification of an API key whose
// introspection answer is cached (the clock stands still, so the answer
// never ages out during the run): VerifyAPIKey alone (format, checksum,
// SHA-256 cache lookup, a copy of the claims), and one request through the
// net/http guard with a scope requirement, with the key in X-API-Key and
// as a Bearer token. It fails if the issuer is asked during the run.
func BenchmarkAPIKeyCached(b *testing.B) {
	iss := newKeyIssuer(b)
	now := time.Now()
	in := iss.introspector(b, verify.IntrospectorOptions{Now: func() time.Time { return now }})
	key := newAPIKey(b)
	iss.issue(key, "usr_b624pjodbjbqazpbsktbb3qx54", "projects:read projects:write users:read", now.Add(90*24*time.Hour), nil)
	ctx := context.Background()
	if _, err := in.VerifyAPIKey(ctx, key); err != nil {
		b.Fatal(err)
	}
	asked := iss.requests.Load()
	b.Run("VerifyAPIKey", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := in.VerifyAPIKey(ctx, key); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The guard's verifier is never used: every request carries a key.
	g := verify.NewGuard(mustVerifier(b, staticKeys(b, newSigner(b, "ES256", "ec-1")), nil), verify.GuardOptions{APIKeys: in})
	h := g.RequireScope("projects:read")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, ok := verify.ClaimsFromContext(r.Context()); !ok || !c.IsAPIKey() {
			b.Fatal("no key claims")
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	for _, form := range []struct{ name, header, value string }{
		{"Guard/X-API-Key", "X-API-Key", key},
		{"Guard/Bearer", "Authorization", "Bearer " + key},
	} {
		b.Run(form.name, func(b *testing.B) {
			r := httptest.NewRequest(http.MethodGet, "/projects", nil)
			r.Header.Set(form.header, form.value)
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(w, r)
			}
		})
	}
	if n := iss.requests.Load(); n != asked {
		b.Fatalf("the issuer was asked %d times during the benchmark", n-asked)
	}
}

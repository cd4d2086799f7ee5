package verify_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/portcullis-auth/portcullis/keys/verify"
)

// benchAlgs are the algorithms Portcullis signs with.
var benchAlgs = []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA}

// benchCase is one token of a Portcullis-like issuer, a verifier holding
// the issuer's key set (fetched over HTTP once, fresh for the whole run), and
// the bare signature check of the same token with the standard library.
type benchCase struct {
	srv   *jwksServer
	v     *verify.Verifier
	token string
	bare  func() bool
}

func newBenchCase(tb testing.TB, alg jose.SignatureAlgorithm) *benchCase {
	tb.Helper()
	s := newSigner(tb, alg, "active-"+string(alg))
	next := newSigner(tb, alg, "next-"+string(alg))
	// A realistic JWKS: the active and the next key.
	srv := newJWKSServer(tb, "public, max-age=300", s, next)
	ks := srv.remoteKeySet(tb, verify.RemoteKeySetOptions{})
	if err := ks.Refresh(context.Background()); err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	claims := map[string]any{
		"iss": testIssuer, "sub": "usr_b624pjodbjbqazpbsktbb3qx54", "aud": testAudience, "exp": now.Add(time.Hour).Unix(),
		"iat": now.Unix(), "nbf": now.Unix(), "jti": "AaIBX91zMBVUc81M8_qtZA", "client_id": "web",
		"scope": "projects:read projects:write users:read users:write roles:read", "roles": []string{"admin"},
		"sid": "uQisb01qfOT9WfL6O6cQJQ", "auth_time": now.Unix(),
	}
	tok := s.sign(tb, claims, nil)
	dot := strings.LastIndexByte(tok, '.')
	input := []byte(tok[:dot])
	sig, err := base64.RawURLEncoding.DecodeString(tok[dot+1:])
	if err != nil {
		tb.Fatal(err)
	}
	var bare func() bool
	switch pub := s.priv.Public().(type) {
	case *rsa.PublicKey:
		bare = func() bool {
			h := sha256.Sum256(input)
			return rsa.VerifyPKCS1v15(pub, crypto.SHA256, h[:], sig) == nil
		}
	case *ecdsa.PublicKey:
		r, ss := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		bare = func() bool {
			h := sha256.Sum256(input)
			return ecdsa.Verify(pub, h[:], r, ss)
		}
	case ed25519.PublicKey:
		bare = func() bool { return ed25519.Verify(pub, input, sig) }
	}
	if !bare() {
		tb.Fatal("the bare signature check refuses the token")
	}
	v := mustVerifier(tb, ks, nil)
	if _, err := v.Verify(context.Background(), tok); err != nil {
		tb.Fatal(err)
	}
	return &benchCase{srv: srv, v: v, token: tok, bare: bare}
}

// BenchmarkVerify is the verifier's whole check: parse, key lookup,
// signature, claims.
func BenchmarkVerify(b *testing.B) {
	for _, alg := range benchAlgs {
		b.Run(string(alg), func(b *testing.B) {
			bc := newBenchCase(b, alg)
			fetches := bc.srv.fetches()
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.v.Verify(ctx, bc.token); err != nil {
					b.Fatal(err)
				}
			}
			if bc.srv.fetches() != fetches {
				b.Fatal("the JWKS was fetched during the benchmark")
			}
		})
	}
}

// BenchmarkBareSignature is only the signature check of the same token,
// with crypto/rsa, crypto/ecdsa or crypto/ed25519 directly.
func BenchmarkBareSignature(b *testing.B) {
	for _, alg := range benchAlgs {
		b.Run(string(alg), func(b *testing.B) {
			bc := newBenchCase(b, alg)
			b.ReportAllocs()
			for b.Loop() {
				if !bc.bare() {
					b.Fatal("refused")
				}
			}
		})
	}
}

// discardWriter is a reusable http.ResponseWriter.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

// BenchmarkGuard is one request through the net/http guard with a scope
// requirement, to the handler reading the claims from the context.
func BenchmarkGuard(b *testing.B) {
	for _, alg := range benchAlgs {
		b.Run(string(alg), func(b *testing.B) {
			bc := newBenchCase(b, alg)
			g := verify.NewGuard(bc.v, verify.GuardOptions{})
			h := g.RequireScope("projects:read")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if _, ok := verify.ClaimsFromContext(r.Context()); !ok {
					b.Fatal("no claims")
				}
				w.WriteHeader(http.StatusNoContent)
			}))
			r := httptest.NewRequest(http.MethodGet, "/projects", nil)
			r.Header.Set("Authorization", "Bearer "+bc.token)
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(w, r)
			}
		})
	}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

package server

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/portcullis-auth/portcullis/keys"
	"github.com/portcullis-auth/portcullis/server/apierr"
)

// staticKeys is a fixed published key set (the handler only reads cached bytes).
type staticKeys struct{ body []byte }

func (k staticKeys) JWKS() ([]byte, string, error) { return k.body, `"abc123"`, nil }
func (k staticKeys) SigningAlgs() []string         { return []string{"EdDSA"} }

// discardWriter is a ResponseWriter that keeps nothing, so only the
// handler's own allocations are measured.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}

func newDiscoveryForBench() (*discovery, echo.Context, *discardWriter, *http.Request) {
	d := &discovery{keys: staticKeys{body: []byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"abc","kid":"k","alg":"EdDSA","use":"sig"}]}`)},
		opts: DiscoveryOptions{Issuer: "http://127.0.0.1:8080", JWKSMaxAge: 5 * time.Minute}, cacheCtl: []string{"public, max-age=300"}}
	e := echo.New()
	w := &discardWriter{h: http.Header{}}
	req := httptest.NewRequest(http.MethodGet, "/.well-known/jwks.json", nil)
	c := e.NewContext(req, w)
	return d, c, w, req
}

// TestDiscoveryHandlersAllocateNothing: serving the JWKS and the metadata
// writes cached bytes and allocates nothing per request.
func TestDiscoveryHandlersAllocateNothing(t *testing.T) {
	d, c, w, req := newDiscoveryForBench()
	for name, h := range map[string]echo.HandlerFunc{"jwks": d.serveJWKS, "metadata": d.serveMetadata} {
		_ = h(c) // build the cache once
		allocs := testing.AllocsPerRun(1000, func() {
			c.Reset(req, w)
			if err := h(c); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s handler allocates %.1f times per request, want 0", name, allocs)
		}
	}
}

func BenchmarkJWKSHandler(b *testing.B) {
	d, c, w, req := newDiscoveryForBench()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		c.Reset(req, w)
		_ = d.serveJWKS(c)
	}
}

func BenchmarkDiscoveryHandler(b *testing.B) {
	d, c, w, req := newDiscoveryForBench()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		c.Reset(req, w)
		_ = d.serveMetadata(c)
	}
}

// unusableKeys is a key set this instance must not use (keys.ErrStale).
type unusableKeys struct{}

func (unusableKeys) JWKS() ([]byte, string, error) { return nil, "", keys.ErrStale }
func (unusableKeys) SigningAlgs() []string         { return nil }

// TestDiscoveryRefusesUnusableKeys: while the instance's keys may miss a
// revocation made elsewhere, neither the JWKS (which would hand downstream
// verifiers the revoked key) nor the metadata is served: 503.
func TestDiscoveryRefusesUnusableKeys(t *testing.T) {
	d := &discovery{keys: unusableKeys{}, opts: DiscoveryOptions{Issuer: "http://127.0.0.1:8080"}}
	for name, h := range map[string]echo.HandlerFunc{"jwks": d.serveJWKS, "metadata": d.serveMetadata} {
		c := echo.New().NewContext(httptest.NewRequest(http.MethodGet, "/", nil), httptest.NewRecorder())
		var ae *apierr.Error
		if err := h(c); !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable {
			t.Errorf("%s with unusable keys: %v, want 503", name, err)
		}
	}
}

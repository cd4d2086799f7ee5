package server

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
)

// staticKeys is a fixed published key set (the handler only reads cached bytes).
type staticKeys struct{ body []byte }

func (k staticKeys) JWKS() ([]byte, string) { return k.body, `"abc123"` }
func (k staticKeys) SigningAlgs() []string  { return []string{"EdDSA"} }

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

package verify_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/portcullis-auth/portcullis/keys/verify"
)

const (
	testIssuer   = "https://issuer.example"
	testAudience = "api"
)

// testSigner is an issuer's signing key, used through go-jose as any issuer would.
type testSigner struct {
	alg  jose.SignatureAlgorithm
	kid  string
	priv crypto.Signer
}

var (
	keyCacheMu sync.Mutex
	keyCache   = map[string]crypto.Signer{}
)

// newSigner returns a signer for alg. Keys are generated once per alg and
// name, so suites stay fast (RSA generation is slow).
func newSigner(t testing.TB, alg jose.SignatureAlgorithm, kid string) *testSigner {
	t.Helper()
	keyCacheMu.Lock()
	defer keyCacheMu.Unlock()
	priv := keyCache[string(alg)+"/"+kid]
	if priv == nil {
		var err error
		switch alg {
		case jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512:
			priv, err = rsa.GenerateKey(rand.Reader, 2048)
		case jose.ES256:
			priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		case jose.ES384:
			priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		case jose.ES512:
			priv, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
		case jose.EdDSA:
			_, priv, err = ed25519.GenerateKey(rand.Reader)
		default:
			t.Fatalf("no key for %s", alg)
		}
		if err != nil {
			t.Fatal(err)
		}
		keyCache[string(alg)+"/"+kid] = priv
	}
	return &testSigner{alg: alg, kid: kid, priv: priv}
}

// jwk is the published public key.
func (s *testSigner) jwk() jose.JSONWebKey {
	return jose.JSONWebKey{Key: s.priv.Public(), KeyID: s.kid, Algorithm: string(s.alg), Use: "sig"}
}

// sign signs claims with typ at+jwt unless headers say otherwise ("typ": ""
// leaves typ out).
func (s *testSigner) sign(t testing.TB, claims map[string]any, headers map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return s.signPayload(t, payload, headers)
}

func (s *testSigner) signPayload(t testing.TB, payload []byte, headers map[string]any) string {
	t.Helper()
	opts := &jose.SignerOptions{}
	typ, set := headers["typ"]
	if !set {
		opts = opts.WithType("at+jwt")
	} else if typ != "" {
		opts = opts.WithType(jose.ContentType(typ.(string)))
	}
	opts = opts.WithHeader("kid", s.kid)
	for k, v := range headers {
		if k != "typ" {
			opts = opts.WithHeader(jose.HeaderKey(k), v)
		}
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: s.alg, Key: s.priv}, opts)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// jwksOf is the JWKS document of the signers' public keys.
func jwksOf(t testing.TB, signers ...*testSigner) []byte {
	t.Helper()
	set := jose.JSONWebKeySet{}
	for _, s := range signers {
		set.Keys = append(set.Keys, s.jwk())
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// accessClaims are valid RFC 9068 claims at now.
func accessClaims(now time.Time) map[string]any {
	return map[string]any{
		"iss": testIssuer, "sub": "usr_1", "aud": []string{testAudience}, "exp": now.Add(5 * time.Minute).Unix(),
		"iat": now.Unix(), "jti": "jti-1", "client_id": "web", "scope": "projects:read projects:write",
		"roles": []string{"editor"}, "sid": "ses_1",
	}
}

// with returns a copy of m with changes (a nil value deletes the key).
func with(m map[string]any, changes map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	for k, v := range changes {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

// rawJWS assembles a compact JWS from a header, a payload and a signature.
func rawJWS(header map[string]any, payload []byte, sig []byte) string {
	h, _ := json.Marshal(header)
	return b64(h) + "." + b64(payload) + "." + b64(sig)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// hmacJWS signs header.payload with HMAC-SHA256 under secret (alg confusion).
func hmacJWS(header map[string]any, payload, secret []byte) string {
	h, _ := json.Marshal(header)
	input := b64(h) + "." + b64(payload)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(input))
	return input + "." + b64(mac.Sum(nil))
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) Advance(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

// jwksServer is an issuer's discovery and JWKS endpoints over real HTTP,
// counting requests.
type jwksServer struct {
	t            testing.TB
	srv          *httptest.Server
	addr         string
	mu           sync.Mutex
	keys         []jose.JSONWebKey
	cacheControl string
	issuer       string // "" means the server's own URL

	jwks200, jwks304, discovery atomic.Int64
}

func newJWKSServer(t testing.TB, cacheControl string, signers ...*testSigner) *jwksServer {
	t.Helper()
	s := &jwksServer{t: t, cacheControl: cacheControl}
	for _, sg := range signers {
		s.keys = append(s.keys, sg.jwk())
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.addr = s.srv.Listener.Addr().String()
	t.Cleanup(func() { s.srv.Close() })
	return s
}

func (s *jwksServer) URL() string { return "http://" + s.addr }

func (s *jwksServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	keys := append([]jose.JSONWebKey(nil), s.keys...)
	cc, iss := s.cacheControl, s.issuer
	s.mu.Unlock()
	switch r.URL.Path {
	case "/.well-known/openid-configuration":
		s.discovery.Add(1)
		if iss == "" {
			iss = s.URL()
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": iss, "jwks_uri": s.URL() + "/jwks"})
	case "/jwks":
		body, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
		if err != nil {
			s.t.Error(err)
		}
		sum := sha256.Sum256(body)
		etag := `"` + hex.EncodeToString(sum[:8]) + `"`
		w.Header().Set("ETag", etag)
		if cc != "" {
			w.Header().Set("Cache-Control", cc)
		}
		if r.Header.Get("If-None-Match") == etag {
			s.jwks304.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		s.jwks200.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	default:
		http.NotFound(w, r)
	}
}

// setKeys replaces the published keys.
func (s *jwksServer) setKeys(signers ...*testSigner) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = nil
	for _, sg := range signers {
		s.keys = append(s.keys, sg.jwk())
	}
}

// fetches is the number of JWKS requests answered.
func (s *jwksServer) fetches() int64 { return s.jwks200.Load() + s.jwks304.Load() }

// stop closes the server: connections are refused.
func (s *jwksServer) stop() {
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// restart serves again on the same address.
func (s *jwksServer) restart() {
	s.t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", s.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("listen again on %s: %v", s.addr, err)
	}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.Listener.Close()
	s.srv.Listener = ln
	s.srv.Start()
	s.t.Cleanup(func() { s.srv.Close() })
}

// remoteKeySet returns a key set on the server's discovery, closed at the end.
func (s *jwksServer) remoteKeySet(t testing.TB, opts verify.RemoteKeySetOptions) *verify.RemoteKeySet {
	t.Helper()
	if opts.Issuer == "" && opts.JWKSURL == "" {
		opts.Issuer = s.URL()
	}
	ks, err := verify.NewRemoteKeySet(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ks.Close)
	return ks
}

// waitFor polls cond every 10 ms until it holds or within passes.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// mustVerifier returns a verifier over keys for the test issuer and audience.
func mustVerifier(t testing.TB, keys verify.KeySet, now func() time.Time) *verify.Verifier {
	t.Helper()
	v, err := verify.New(keys, verify.Config{Issuer: testIssuer, Audience: testAudience, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func staticKeys(t testing.TB, signers ...*testSigner) *verify.StaticKeySet {
	t.Helper()
	ks, err := verify.NewStaticKeySet(jwksOf(t, signers...))
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

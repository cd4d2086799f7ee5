package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server"
	st "github.com/portcullis-auth/portcullis/server/servertest"
)

func TestCORSAllowlist(t *testing.T) {
	env := st.NewEnv(t, st.SQLite)
	env["PORTCULLIS_CORS_ORIGINS"] = "https://app.example.com"
	c := st.Start(t, env).Client(t)
	ok := c.Do(http.MethodOptions, "/oauth2/token", nil, "", st.WithHeader("Origin", "https://app.example.com"),
		st.WithHeader("Access-Control-Request-Method", "POST"))
	if ok.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
		t.Fatalf("allowed origin refused: %v", ok.Header)
	}
	bad := c.Do(http.MethodOptions, "/oauth2/token", nil, "", st.WithHeader("Origin", "https://evil.example"),
		st.WithHeader("Access-Control-Request-Method", "POST"))
	if v := bad.Header.Get("Access-Control-Allow-Origin"); v != "" {
		t.Fatalf("origin outside the allowlist allowed: %q", v)
	}
	r := c.Get("/healthz")
	for k, want := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"} {
		if r.Header.Get(k) != want {
			t.Fatalf("%s = %q, want %q", k, r.Header.Get(k), want)
		}
	}
	if r.Header.Get("Strict-Transport-Security") != "" {
		t.Fatal("HSTS sent over plain HTTP")
	}
}

// TestHSTSWithTLS: serving TLS from cert/key files sends HSTS.
func TestHSTSWithTLS(t *testing.T) {
	certFile, keyFile := selfSignedCert(t)
	env := st.NewEnv(t, st.SQLite)
	env["PORTCULLIS_TLS_CERT"], env["PORTCULLIS_TLS_KEY"] = certFile, keyFile
	cfg := env.Config(t, "127.0.0.1:0")
	srv := server.New(server.Options{Config: cfg})
	ready := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, func(a net.Addr) { ready <- a.String() }) }()
	defer func() { cancel(); <-done }()
	addr := <-ready
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := hc.Get("https://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !strings.HasPrefix(resp.Header.Get("Strict-Transport-Security"), "max-age=") {
		t.Fatalf("no HSTS over TLS: %v", resp.Header)
	}
}

func selfSignedCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestEveryRouteSendsSecurityHeaders sweeps every route, asked with a
// super_admin's bearer token and with a console session, and holds every
// answer, refusals included, to the headers the OpenAPI description
// promises: X-Content-Type-Options nosniff, X-Frame-Options DENY, a
// Content-Security-Policy (on an HTML page: nothing by default and no
// framing), an X-Request-Id, and Cache-Control no-store on the admin,
// account and console answers.
func TestEveryRouteSendsSecurityHeaders(t *testing.T) {
	in := st.Start(t, st.NewEnv(t, st.PostgresRedis))
	who := newSweepActors(t, in)
	c, api, bearer, session := in.Client(t), who.api, who.bearer, who.session
	for _, r := range in.App.Server.Echo().Routes() {
		path := routeFor(r.Path, api.ID)
		private := strings.HasPrefix(path, "/admin/") || strings.HasPrefix(path, "/auth/") || strings.HasPrefix(path, "/console")
		for _, auth := range []st.Option{bearer, session} {
			resp := c.Do(r.Method, path, nil, "", auth)
			h, what := resp.Header, r.Method+" "+path+" ("+http.StatusText(resp.StatusCode)+")"
			csp := h.Get("Content-Security-Policy")
			switch {
			case h.Get("X-Content-Type-Options") != "nosniff", h.Get("X-Frame-Options") != "DENY":
				t.Errorf("%s: X-Content-Type-Options %q, X-Frame-Options %q", what, h.Get("X-Content-Type-Options"), h.Get("X-Frame-Options"))
			case csp == "",
				strings.HasPrefix(h.Get("Content-Type"), "text/html") &&
					(!strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'")):
				t.Errorf("%s: Content-Security-Policy %q", what, csp)
			case h.Get("X-Request-Id") == "":
				t.Errorf("%s: no X-Request-Id", what)
			case private && !strings.Contains(h.Get("Cache-Control"), "no-store"):
				t.Errorf("%s: Cache-Control %q", what, h.Get("Cache-Control"))
			}
		}
	}
}

// TestHeadAnswersLikeGet: HEAD on a GET route (an API document, the key
// set, a page, a refusal, an unknown path) answers the GET's status and
// header fields, with the Content-Length of the GET's content and none of
// it (RFC 9110 §9.3.2). Fails on the code before this change: every HEAD
// was 405.
func TestHeadAnswersLikeGet(t *testing.T) {
	t.Parallel()
	in := st.Start(t, st.NewEnv(t, st.SQLite))
	c := in.Client(t)
	for _, path := range []string{"/.well-known/openid-configuration", "/.well-known/jwks.json", "/forgot-password", "/admin/users", "/auth/sessions", "/nope"} {
		get := c.Get(path)
		head := c.Do(http.MethodHead, path, nil, "")
		if head.StatusCode != get.StatusCode || len(head.Body) != 0 {
			t.Errorf("HEAD %s: %d with %d bytes, want GET's %d with none", path, head.StatusCode, len(head.Body), get.StatusCode)
			continue
		}
		for _, h := range []string{"Content-Type", "Cache-Control", "Content-Security-Policy", "X-Content-Type-Options", "WWW-Authenticate"} {
			if get.StatusCode < 400 && head.Header.Get(h) != get.Header.Get(h) {
				t.Errorf("HEAD %s: %s %q, GET's %q", path, h, head.Header.Get(h), get.Header.Get(h))
			}
		}
		if get.StatusCode == http.StatusOK && head.ContentLength != int64(len(get.Body)) {
			t.Errorf("HEAD %s: Content-Length %d, the GET's content is %d bytes", path, head.ContentLength, len(get.Body))
		}
		if get.StatusCode == http.StatusUnauthorized && !strings.Contains(head.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("HEAD %s: 401 without its challenge (%q)", path, head.Header.Get("WWW-Authenticate"))
		}
	}
}

package verify_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/portcullis-auth/portcullis/keys/verify"
)

// fakeNet is a network in a RoundTripper: redirects maps a URL to the
// Location it redirects to (with status), bodies maps a URL to what it
// serves with 200; anything else is 404. It records every URL asked and
// what was sent to it.
type fakeNet struct {
	redirects map[string]redirect
	bodies    map[string][]byte

	mu       sync.Mutex
	asked    []string
	authSent map[string]string
	bodySent map[string]string
}

type redirect struct {
	status   int
	location string
}

func (f *fakeNet) RoundTrip(r *http.Request) (*http.Response, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u := r.URL.String()
	f.asked = append(f.asked, u)
	if f.authSent == nil {
		f.authSent, f.bodySent = map[string]string{}, map[string]string{}
	}
	f.authSent[u] = r.Header.Get("Authorization")
	if r.Body != nil {
		b, _ := io.ReadAll(r.Body)
		_ = r.Body.Close()
		f.bodySent[u] = string(b)
	}
	resp := &http.Response{Request: r, Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(nil)), StatusCode: http.StatusNotFound}
	if rd, ok := f.redirects[u]; ok {
		resp.StatusCode = rd.status
		resp.Header.Set("Location", rd.location)
	} else if b, ok := f.bodies[u]; ok {
		resp.StatusCode = http.StatusOK
		resp.Body = io.NopCloser(bytes.NewReader(b))
	}
	return resp, nil
}

func (f *fakeNet) wasAsked(u string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range f.asked {
		if a == u {
			return true
		}
	}
	return false
}

var errCallerRefuses = errors.New("the caller's CheckRedirect refuses")

// TestCustomHTTPClientKeepsTheHTTPSRule: every URL the package fetches,
// redirects included, is https:// or loopback http://, also through a
// client the service passes in (HTTPClient of both options, and Discover's
// client); the caller's own CheckRedirect still runs after the package's,
// and the caller's client is never changed. Found by a review: a client
// given as {Timeout: 5s} followed an https JWKS URL's redirect to
// http://attacker (whose key then verified tokens), and the introspection
// POST was re-sent in clear after a 307.
func TestCustomHTTPClientKeepsTheHTTPSRule(t *testing.T) {
	attacker := newSigner(t, jose.ES256, "attacker-kid")
	issuer := newSigner(t, jose.ES256, "issuer-kid")
	const (
		jwks       = "https://issuer.example/jwks"
		plainJWKS  = "http://attacker.example/jwks"
		otherJWKS  = "https://other.example/jwks"
		loopJWKS   = "http://127.0.0.1:8080/jwks"
		introspect = "https://issuer.example/introspect"
		plainIntro = "http://issuer.example/introspect"
		wellKnown  = "https://issuer.example/.well-known/openid-configuration"
		plainWK    = "http://attacker.example/.well-known/openid-configuration"
	)
	newNet := func() *fakeNet {
		return &fakeNet{bodies: map[string][]byte{
			plainJWKS:  jwksOf(t, attacker),
			otherJWKS:  jwksOf(t, attacker),
			loopJWKS:   jwksOf(t, issuer),
			plainIntro: []byte(`{"active":false}`),
			plainWK:    []byte(`{"issuer":"https://issuer.example","jwks_uri":"https://issuer.example/jwks"}`),
		}}
	}
	refuseOther := func(req *http.Request, _ []*http.Request) error {
		if req.URL.Host == "other.example" {
			return errCallerRefuses
		}
		return nil
	}
	cases := []struct {
		name          string
		redirects     map[string]redirect
		checkRedirect func(*http.Request, []*http.Request) error
		run           func(t *testing.T, c *http.Client) error
		wantErr       error  // nil: success
		neverAsked    string // a URL that must not be asked
	}{
		{
			name:      "fail/jwks_redirect_to_remote_plain_http",
			redirects: map[string]redirect{jwks: {http.StatusFound, plainJWKS}},
			run: func(t *testing.T, c *http.Client) error {
				ks := remoteKeySet(t, verify.RemoteKeySetOptions{JWKSURL: jwks, HTTPClient: c})
				err := ks.Refresh(context.Background())
				tok := attacker.sign(t, accessClaims(time.Now()), nil)
				if _, verr := mustVerifier(t, ks, time.Now).Verify(context.Background(), tok); verr == nil {
					t.Error("the attacker's token verified")
				}
				return err
			},
			wantErr: verify.ErrInsecureURL, neverAsked: plainJWKS,
		},
		{
			name:      "fail/introspection_307_to_plain_http",
			redirects: map[string]redirect{introspect: {http.StatusTemporaryRedirect, plainIntro}},
			run: func(t *testing.T, c *http.Client) error {
				in, err := verify.NewIntrospector(verify.IntrospectorOptions{Endpoint: introspect,
					ClientID: "rs", ClientSecret: "s3cret", HTTPClient: c, CacheTTL: verify.NoCache})
				if err != nil {
					t.Fatal(err)
				}
				_, err = in.Active(context.Background(), "eyJhbGciOi.secret-token.sig")
				return err
			},
			wantErr: verify.ErrInsecureURL, neverAsked: plainIntro,
		},
		{
			name:      "fail/discovery_redirect_to_plain_http",
			redirects: map[string]redirect{wellKnown: {http.StatusMovedPermanently, plainWK}},
			run: func(t *testing.T, c *http.Client) error {
				_, err := verify.Discover(context.Background(), c, "https://issuer.example")
				return err
			},
			wantErr: verify.ErrInsecureURL, neverAsked: plainWK,
		},
		{
			name:          "fail/callers_check_redirect_still_runs",
			redirects:     map[string]redirect{jwks: {http.StatusFound, otherJWKS}},
			checkRedirect: refuseOther,
			run: func(t *testing.T, c *http.Client) error {
				return remoteKeySet(t, verify.RemoteKeySetOptions{JWKSURL: jwks, HTTPClient: c}).Refresh(context.Background())
			},
			wantErr: errCallerRefuses, neverAsked: otherJWKS,
		},
		{
			name:          "fail/plain_http_refused_before_callers_check_redirect",
			redirects:     map[string]redirect{jwks: {http.StatusFound, plainJWKS}},
			checkRedirect: refuseOther,
			run: func(t *testing.T, c *http.Client) error {
				return remoteKeySet(t, verify.RemoteKeySetOptions{JWKSURL: jwks, HTTPClient: c}).Refresh(context.Background())
			},
			wantErr: verify.ErrInsecureURL, neverAsked: plainJWKS,
		},
		{
			name:          "ok/redirect_to_loopback_http",
			redirects:     map[string]redirect{jwks: {http.StatusFound, loopJWKS}},
			checkRedirect: refuseOther,
			run: func(t *testing.T, c *http.Client) error {
				return remoteKeySet(t, verify.RemoteKeySetOptions{JWKSURL: jwks, HTTPClient: c}).Refresh(context.Background())
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			net := newNet()
			net.redirects = tc.redirects
			client := &http.Client{Timeout: 5 * time.Second, Transport: net, CheckRedirect: tc.checkRedirect}
			err := tc.run(t, client)
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("err = %v, want %v; URLs asked: %v", err, tc.wantErr, net.asked)
			}
			if tc.neverAsked != "" && net.wasAsked(tc.neverAsked) {
				t.Errorf("%s was asked (Authorization %q, body %q); URLs asked: %v", tc.neverAsked,
					net.authSent[tc.neverAsked], net.bodySent[tc.neverAsked], net.asked)
			}
			// The caller's client is the caller's: never changed.
			if client.Transport != net || client.Timeout != 5*time.Second || (client.CheckRedirect == nil) != (tc.checkRedirect == nil) || client.Jar != nil {
				t.Errorf("the caller's client was changed: %+v", client)
			}
		})
	}
}

func remoteKeySet(t *testing.T, opts verify.RemoteKeySetOptions) *verify.RemoteKeySet {
	t.Helper()
	ks, err := verify.NewRemoteKeySet(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ks.Close)
	return ks
}

package upstream

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/portcullis-auth/portcullis/keys/verify"
)

// maxResponseBody bounds every answer read from a provider (discovery,
// JWKS, token, userinfo): the bound keys/verify puts on the same documents.
// go-oidc reads these whole, so without it a hostile provider (or whoever
// tampers with its answers) made Portcullis allocate hundreds of megabytes
// for one padded document.
const maxResponseBody = verify.MaxJWKSSize

// keySetRefetchInterval is how often a provider's key set may be fetched
// again because a token's signature was not verified by the keys in hand
// (an unknown kid, or a forged signature): keys/verify's default for the
// same purpose.
const keySetRefetchInterval = verify.DefaultUnknownKIDInterval

// errResponseTooLarge is the error of a provider's answer longer than
// maxResponseBody.
var errResponseTooLarge = fmt.Errorf("the answer is larger than %d bytes", maxResponseBody)

// errRefetchTooSoon is the error of a key set fetch refused by keySetGate.
var errRefetchTooSoon = errors.New("the key set was fetched again too soon")

// limitedClient returns a copy of c whose every answer body is cut at
// maxResponseBody (an error past it). The one place upstream responses are
// bounded: discovery, JWKS, token and userinfo requests all go through the
// Verifier's client.
func limitedClient(c *http.Client) *http.Client {
	lc := *c
	lc.Transport = limitTransport{next: transportOf(c)}
	return &lc
}

func transportOf(c *http.Client) http.RoundTripper {
	if c.Transport != nil {
		return c.Transport
	}
	return http.DefaultTransport
}

// limitTransport refuses an answer that declares a length over
// maxResponseBody and cuts one that turns out longer while it is read.
type limitTransport struct{ next http.RoundTripper }

// RoundTrip implements http.RoundTripper.
func (t limitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > maxResponseBody {
		resp.Body.Close()
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Redacted(), errResponseTooLarge)
	}
	resp.Body = &limitedBody{ReadCloser: resp.Body, left: maxResponseBody}
	return resp, nil
}

// limitedBody returns at most left bytes and then errResponseTooLarge if
// the body goes on. It says so on the read that reaches the bound, so that
// a reader that stops there itself (x/oauth2's io.LimitReader of 1 MiB)
// does not take a cut document, which may still parse, for the whole.
type limitedBody struct {
	io.ReadCloser
	left int64 // -1 once the body has proved longer
}

func (b *limitedBody) Read(p []byte) (int, error) {
	switch {
	case b.left < 0:
		return 0, errResponseTooLarge
	case b.left == 0:
		return 0, b.atBound()
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	if b.left == 0 && err == nil {
		err = b.atBound()
	}
	return n, err
}

// atBound reads one byte past the bound: io.EOF when the body ends there,
// errResponseTooLarge when it goes on.
func (b *limitedBody) atBound() error {
	var one [1]byte
	if _, err := io.ReadFull(b.ReadCloser, one[:]); err != nil {
		return err
	}
	b.left = -1
	return errResponseTooLarge
}

// keySetGate is the transport of a provider's go-oidc key set: it lets a
// fetch of the JWKS through at most once per keySetRefetchInterval.
// go-oidc's RemoteKeySet fetches the JWKS again after every signature its
// cached keys do not verify, with no interval, and keeps those keys private,
// so a KeySet wrapper could not tell whether a call will fetch; refusing
// here leaves go-oidc's cached keys in place (it keeps them when a fetch
// fails) and the token is refused as invalid. Without it every forged token
// at the token exchange (public clients may send them) cost one request to
// the provider.
type keySetGate struct {
	next http.RoundTripper
	now  func() time.Time

	mu   sync.Mutex
	last time.Time // when the last fetch was let through
}

// RoundTrip implements http.RoundTripper.
func (g *keySetGate) RoundTrip(req *http.Request) (*http.Response, error) {
	// A redirect of a fetch let through is part of that fetch.
	if req.Response == nil {
		g.mu.Lock()
		now := g.now()
		if !g.last.IsZero() && now.Sub(g.last) < keySetRefetchInterval {
			g.mu.Unlock()
			if req.Body != nil {
				req.Body.Close()
			}
			return nil, errRefetchTooSoon
		}
		g.last = now
		g.mu.Unlock()
	}
	return g.next.RoundTrip(req)
}

// keySetClient returns the HTTP client for one provider's key set: the
// Verifier's client behind a keySetGate of its own.
func (v *Verifier) keySetClient() *http.Client {
	c := *v.client
	c.Transport = &keySetGate{next: transportOf(v.client), now: v.now}
	return &c
}

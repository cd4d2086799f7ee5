package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// KeySet is where a Verifier finds the key named by a token's kid: a
// *RemoteKeySet (the issuer's JWKS over HTTP) or a *StaticKeySet.
type KeySet interface {
	// lookup returns the key for kid. It may fetch the key set only when kid
	// is unknown (and only as often as the key set allows).
	lookup(ctx context.Context, kid string) (*Key, error)
}

// Defaults of RemoteKeySetOptions.
const (
	DefaultUnknownKIDInterval = 10 * time.Second
	DefaultMinRefresh         = time.Second
	DefaultMaxRefresh         = time.Hour
	DefaultNoCacheRefresh     = 5 * time.Minute
	DefaultMaxStale           = time.Hour
	DefaultFetchTimeout       = 10 * time.Second
	// MaxJWKSSize bounds a JWKS or discovery document read from the network.
	MaxJWKSSize = 1 << 20
)

// RemoteKeySetOptions configure a RemoteKeySet. Give Issuer (the JWKS is
// found through {Issuer}/.well-known/openid-configuration) or JWKSURL. Every
// URL (these, the discovered jwks_uri, any redirect) must be https://, or
// http:// on a loopback host (127.0.0.0/8, ::1, localhost); NewRemoteKeySet
// refuses others with an error wrapping ErrInsecureURL.
type RemoteKeySetOptions struct {
	// Issuer is the issuer URL, exactly as in tokens' iss; discovery's
	// issuer must equal it character for character.
	Issuer string
	// JWKSURL, when set, is used instead of discovery.
	JWKSURL string
	// HTTPClient fetches documents; nil: a client with DefaultFetchTimeout.
	// A client given is copied, never changed: the copy refuses every URL
	// and redirect the rule above refuses, then runs the client's own
	// CheckRedirect (at most 10 redirects).
	HTTPClient *http.Client
	// UnknownKIDInterval: a token with an unknown kid causes a refetch at
	// most once per this interval (default DefaultUnknownKIDInterval), so a
	// flood of forged kids costs the issuer one request per interval.
	UnknownKIDInterval time.Duration
	// MinRefresh and MaxRefresh bound the background refresh period derived
	// from the JWKS Cache-Control max-age (refresh at 3/4 of max-age).
	// Defaults DefaultMinRefresh and DefaultMaxRefresh.
	MinRefresh, MaxRefresh time.Duration
	// NoCacheRefresh is the period used when the JWKS response has no
	// max-age (default DefaultNoCacheRefresh).
	NoCacheRefresh time.Duration
	// MaxStale is how long past its max-age the last good set keeps being
	// used while the JWKS cannot be fetched (default DefaultMaxStale).
	// After that, Verify fails with ErrKeySetUnavailable.
	MaxStale time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// RemoteKeySet is the issuer's JWKS kept in memory. Lookups of known kids
// read an immutable snapshot and never touch the network; a background
// goroutine refreshes the set before it expires. Close stops it.
type RemoteKeySet struct {
	opts   RemoteKeySetOptions
	client *http.Client
	now    func() time.Time

	snap atomic.Pointer[keySnapshot]

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{}

	mu          sync.Mutex
	closed      bool
	jwksURL     string // discovered or configured
	inflight    *fetchCall
	lastCallID  uint64
	lastUnknown time.Time // last refetch caused by an unknown kid
	failures    int       // consecutive failed fetches
	due         time.Time // next background fetch (real clock)
	lastErr     error

	fetches atomic.Int64 // HTTP requests for the JWKS (200 or 304 or failure)
}

// keySnapshot is one fetched key set; never modified after publication.
type keySnapshot struct {
	keys      map[string]*Key
	etag      string
	fetchedAt time.Time     // last successful fetch or 304
	maxAge    time.Duration // from Cache-Control, or NoCacheRefresh when absent
	hasMaxAge bool
}

type fetchCall struct {
	id   uint64
	done chan struct{}
	err  error
}

// NewRemoteKeySet returns a key set for the issuer's JWKS and starts its
// background refresh, which fetches the set at once. It makes no network
// call itself; use Refresh to wait for the first set. Call Close when done.
func NewRemoteKeySet(opts RemoteKeySetOptions) (*RemoteKeySet, error) {
	if opts.JWKSURL == "" && opts.Issuer == "" {
		return nil, errors.New("remote key set: set Issuer (discovery) or JWKSURL")
	}
	for name, u := range map[string]string{"Issuer": opts.Issuer, "JWKSURL": opts.JWKSURL} {
		if u == "" {
			continue
		}
		if err := checkURL(u); err != nil {
			return nil, fmt.Errorf("remote key set: %s: %w", name, err)
		}
	}
	setDefault(&opts.UnknownKIDInterval, DefaultUnknownKIDInterval)
	setDefault(&opts.MinRefresh, DefaultMinRefresh)
	setDefault(&opts.MaxRefresh, DefaultMaxRefresh)
	setDefault(&opts.NoCacheRefresh, DefaultNoCacheRefresh)
	setDefault(&opts.MaxStale, DefaultMaxStale)
	if opts.MinRefresh > opts.MaxRefresh {
		return nil, errors.New("remote key set: MinRefresh is longer than MaxRefresh")
	}
	ks := &RemoteKeySet{opts: opts, client: guardedClient(opts.HTTPClient, DefaultFetchTimeout), now: opts.Now,
		jwksURL: opts.JWKSURL, kick: make(chan struct{}, 1)}
	if ks.now == nil {
		ks.now = time.Now
	}
	ks.ctx, ks.cancel = context.WithCancel(context.Background())
	ks.wg.Add(1)
	go ks.run()
	return ks, nil
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}

// ErrInsecureURL is wrapped by the error of a constructor (or of discovery)
// given a plain http:// URL for a host that is not loopback: keys or
// introspection answers fetched in clear could be replaced on the way.
var ErrInsecureURL = errors.New("plain http:// is allowed only for loopback hosts (127.0.0.0/8, ::1, localhost); use https://")

// checkURL is the one rule for every URL this package fetches (issuer,
// JWKS, introspection, discovered endpoints, redirects): an absolute https://
// URL, or http:// on a loopback host.
func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("not a URL: %w", err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	if u.Scheme == "http" && !isLoopbackHost(u.Hostname()) {
		return fmt.Errorf("%q: %w", s, ErrInsecureURL)
	}
	return nil
}

// isLoopbackHost reports whether host (as url.URL.Hostname returns it) is
// localhost or an IP literal in 127.0.0.0/8 or ::1. Other names are not
// resolved: a name that resolves to loopback today may not tomorrow.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Zone() == "" && ip.Unmap().IsLoopback()
}

// refuseInsecureRedirect is the first CheckRedirect of every HTTP client
// this package uses: a redirect to a URL checkURL refuses is not followed.
func refuseInsecureRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	return checkURL(req.URL.String())
}

// guardedClient is the one place where every HTTP client this package
// fetches with (RemoteKeySet, Introspector, Discover) gets the checkURL
// rule: nil gives a new client with timeout; a caller's client is copied
// (never changed), and the copy refuses a redirect checkURL refuses before
// running the caller's own CheckRedirect. Both also check every request's
// URL at the transport, whatever the client's other settings.
func guardedClient(c *http.Client, timeout time.Duration) *http.Client {
	if c == nil {
		return &http.Client{Timeout: timeout, CheckRedirect: refuseInsecureRedirect, Transport: guardedTransport{}}
	}
	if _, done := c.Transport.(guardedTransport); done {
		return c
	}
	g := *c
	g.Transport = guardedTransport{next: c.Transport}
	own := c.CheckRedirect
	g.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if err := refuseInsecureRedirect(req, via); err != nil {
			return err
		}
		if own != nil {
			return own(req, via)
		}
		return nil
	}
	return &g
}

// guardedTransport refuses a request whose URL checkURL refuses, then
// hands it to next (nil: http.DefaultTransport).
type guardedTransport struct {
	next http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (t guardedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := checkURL(req.URL.String()); err != nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, fmt.Errorf("request refused: %w", err)
	}
	next := t.next
	if next == nil {
		next = http.DefaultTransport
	}
	return next.RoundTrip(req)
}

// CloseIdleConnections passes http.Client.CloseIdleConnections on to the
// wrapped transport.
func (t guardedTransport) CloseIdleConnections() {
	next := t.next
	if next == nil {
		next = http.DefaultTransport
	}
	if c, ok := next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// Close stops the background refresh, cancels a fetch under way and waits
// for the refresh loop. Lookups keep using the last set but fetch no more.
func (ks *RemoteKeySet) Close() {
	ks.mu.Lock()
	ks.closed = true
	ks.mu.Unlock()
	ks.cancel()
	ks.wg.Wait()
}

// errClosed is returned by fetches asked for after Close.
var errClosed = errors.New("key set closed")

// Refresh fetches the key set now (joining a fetch already under way only if
// it started after this call) and returns its error. Use it to wait for the
// first set at start-up; Verify never needs it.
func (ks *RemoteKeySet) Refresh(ctx context.Context) error {
	ks.mu.Lock()
	want := ks.lastCallID + 1
	ks.mu.Unlock()
	return ks.refresh(ctx, want)
}

// KIDs lists the kids of the current set (for diagnostics and tests).
func (ks *RemoteKeySet) KIDs() []string {
	s := ks.snap.Load()
	if s == nil {
		return nil
	}
	out := make([]string, 0, len(s.keys))
	for kid := range s.keys {
		out = append(out, kid)
	}
	return out
}

// Fetches returns how many JWKS requests this key set has made.
func (ks *RemoteKeySet) Fetches() int64 { return ks.fetches.Load() }

// lookup implements KeySet.
func (ks *RemoteKeySet) lookup(ctx context.Context, kid string) (*Key, error) {
	now := ks.now()
	s := ks.snap.Load()
	if s != nil && ks.usable(s, now) {
		if k := s.keys[kid]; k != nil {
			return k, nil
		}
	}
	if kid == "" || len(kid) > maxKIDLen {
		return nil, ks.missErr(s, now)
	}
	// Unknown kid (or no usable set): refetch, at most once per interval.
	ks.mu.Lock()
	if !ks.lastUnknown.IsZero() && now.Sub(ks.lastUnknown) < ks.opts.UnknownKIDInterval {
		ks.mu.Unlock()
		return nil, ks.missErr(s, now)
	}
	ks.lastUnknown = now
	// With a set in hand the key may be newer than a fetch already under way:
	// wait for one that starts now. Without a set, any fetch will do.
	want := ks.lastCallID + 1
	if s == nil && ks.inflight != nil {
		want = ks.inflight.id
	}
	ks.mu.Unlock()
	fetchErr := ks.refresh(ctx, want)
	s = ks.snap.Load()
	now = ks.now()
	if s != nil && ks.usable(s, now) {
		if k := s.keys[kid]; k != nil {
			return k, nil
		}
		return nil, ErrUnknownKey
	}
	if fetchErr != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeySetUnavailable, fetchErr)
	}
	return nil, ks.missErr(s, now)
}

// missErr is the error for a kid not found without fetching.
func (ks *RemoteKeySet) missErr(s *keySnapshot, now time.Time) error {
	if s == nil || !ks.usable(s, now) {
		ks.mu.Lock()
		last := ks.lastErr
		ks.mu.Unlock()
		if last != nil {
			return fmt.Errorf("%w: %w", ErrKeySetUnavailable, last)
		}
		return ErrKeySetUnavailable
	}
	return ErrUnknownKey
}

// usable reports whether s may still be used at now: until its max-age plus MaxStale.
func (ks *RemoteKeySet) usable(s *keySnapshot, now time.Time) bool {
	return now.Before(s.fetchedAt.Add(s.maxAge + ks.opts.MaxStale))
}

// refresh waits for a fetch whose call id is at least want, starting one if
// none is under way. The fetch itself runs under the key set's own context,
// so a caller giving up does not abort it for others.
func (ks *RemoteKeySet) refresh(ctx context.Context, want uint64) error {
	for {
		ks.mu.Lock()
		if ks.closed {
			ks.mu.Unlock()
			return errClosed
		}
		c := ks.inflight
		if c == nil {
			ks.lastCallID++
			c = &fetchCall{id: ks.lastCallID, done: make(chan struct{})}
			ks.inflight = c
			ks.wg.Add(1)
			go ks.doFetch(c)
		}
		ks.mu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if c.id >= want {
			return c.err
		}
	}
}

func (ks *RemoteKeySet) doFetch(c *fetchCall) {
	defer ks.wg.Done()
	ctx, cancel := context.WithTimeout(ks.ctx, DefaultFetchTimeout)
	err := ks.fetch(ctx)
	cancel()
	ks.mu.Lock()
	if err != nil {
		ks.failures++
	} else {
		ks.failures = 0
	}
	ks.lastErr = err
	ks.schedule(ks.snap.Load())
	c.err = err
	ks.inflight = nil
	ks.mu.Unlock()
	close(c.done)
	select { // let the background loop reschedule after this fetch
	case ks.kick <- struct{}{}:
	default:
	}
}

// run is the background refresh loop. Scheduling uses the real clock
// (timers); the injected clock only judges how fresh a set is.
func (ks *RemoteKeySet) run() {
	defer ks.wg.Done()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ks.ctx.Done():
			return
		case <-ks.kick:
			// A fetch finished (perhaps one caused by an unknown kid): reschedule.
		case <-timer.C:
			if ks.untilDue() <= 0 {
				_ = ks.refresh(ks.ctx, 0)
			}
		}
		timer.Reset(max(ks.untilDue(), 0))
	}
}

// untilDue is the time left before the next background fetch.
func (ks *RemoteKeySet) untilDue() time.Duration {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return time.Until(ks.due)
}

// schedule sets when the background loop fetches next, after a fetch that
// ended now: at 3/4 of the set's max-age (bounded by MinRefresh and
// MaxRefresh), or, while fetches fail, after a backoff from MinRefresh
// doubling up to a minute. Called with ks.mu held.
func (ks *RemoteKeySet) schedule(s *keySnapshot) {
	if ks.failures > 0 {
		d := ks.opts.MinRefresh << min(ks.failures-1, 6)
		d = min(d, max(time.Minute, ks.opts.MinRefresh))
		d = d/2 + rand.N(d/2+1) // jitter, so many verifiers do not retry in step
		ks.due = time.Now().Add(d)
		return
	}
	period := ks.opts.MinRefresh
	if s != nil {
		period = max(ks.opts.MinRefresh, min(s.maxAge*3/4, ks.opts.MaxRefresh))
	}
	ks.due = time.Now().Add(period)
}

// fetch makes one conditional request for the JWKS and publishes the result.
func (ks *RemoteKeySet) fetch(ctx context.Context) error {
	u, err := ks.jwksLocation(ctx)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("fetch JWKS: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	prev := ks.snap.Load()
	if prev != nil && prev.etag != "" {
		req.Header.Set("If-None-Match", prev.etag)
	}
	ks.fetches.Add(1)
	resp, err := ks.client.Do(req)
	if err != nil {
		return fmt.Errorf("fetch JWKS: %w", err)
	}
	defer resp.Body.Close()
	now := ks.now()
	maxAge, hasMaxAge := cacheMaxAge(resp.Header)
	if !hasMaxAge {
		maxAge = ks.opts.NoCacheRefresh
	}
	switch {
	case resp.StatusCode == http.StatusNotModified && prev != nil:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, MaxJWKSSize))
		next := *prev
		next.fetchedAt, next.maxAge, next.hasMaxAge = now, maxAge, hasMaxAge
		if et := resp.Header.Get("ETag"); et != "" {
			next.etag = et
		}
		ks.snap.Store(&next)
		return nil
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("fetch JWKS: status %d", resp.StatusCode)
	}
	body, err := readLimited(resp.Body)
	if err != nil {
		return fmt.Errorf("fetch JWKS: %w", err)
	}
	keys, err := parseKeySet(body)
	if err != nil {
		return fmt.Errorf("fetch JWKS: %w", err)
	}
	ks.snap.Store(&keySnapshot{keys: keys, etag: resp.Header.Get("ETag"), fetchedAt: now, maxAge: maxAge, hasMaxAge: hasMaxAge})
	return nil
}

// jwksLocation returns the JWKS URL, discovering it once when not configured.
func (ks *RemoteKeySet) jwksLocation(ctx context.Context) (string, error) {
	ks.mu.Lock()
	u := ks.jwksURL
	ks.mu.Unlock()
	if u != "" {
		return u, nil
	}
	md, err := Discover(ctx, ks.client, ks.opts.Issuer)
	if err != nil {
		return "", err
	}
	if md.JWKSURI == "" {
		return "", errors.New("discovery: the metadata has no jwks_uri")
	}
	ks.mu.Lock()
	ks.jwksURL = md.JWKSURI
	ks.mu.Unlock()
	return md.JWKSURI, nil
}

// cacheMaxAge reads max-age from Cache-Control (less Age, as a cache would).
// no-store and no-cache count as max-age 0.
func cacheMaxAge(h http.Header) (time.Duration, bool) {
	var (
		maxAge time.Duration
		found  bool
	)
	for _, v := range h.Values("Cache-Control") {
		for _, dir := range strings.Split(v, ",") {
			name, val, _ := strings.Cut(strings.TrimSpace(dir), "=")
			switch strings.ToLower(name) {
			case "no-store", "no-cache":
				return 0, true
			case "max-age":
				n, err := strconv.ParseInt(strings.Trim(val, `"`), 10, 64)
				if err != nil || n < 0 {
					continue
				}
				maxAge, found = time.Duration(min(n, int64(365*24*3600)))*time.Second, true
			}
		}
	}
	if !found {
		return 0, false
	}
	if age, err := strconv.ParseInt(h.Get("Age"), 10, 64); err == nil && age > 0 {
		maxAge = max(0, maxAge-time.Duration(age)*time.Second)
	}
	return maxAge, true
}

func readLimited(r io.Reader) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r, MaxJWKSSize+1))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	if len(body) > MaxJWKSSize {
		return nil, fmt.Errorf("document larger than %d bytes", MaxJWKSSize)
	}
	return body, nil
}

// parseKeySet parses a JWKS document into keys by kid. Keys that cannot be
// used for verification (see parseKey) are left out; a kid that appears
// twice is left out entirely, since a token could not say which key it
// means. A set without a single usable key is an error, so the last good
// set stays in use.
func parseKeySet(body []byte) (map[string]*Key, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("JWKS is not a JSON object: %w", err)
	}
	keys := make(map[string]*Key, len(doc.Keys))
	dup := map[string]bool{}
	for _, raw := range doc.Keys {
		k, err := parseKey(raw)
		if err != nil {
			continue
		}
		if _, seen := keys[k.kid]; seen || dup[k.kid] {
			dup[k.kid] = true
			delete(keys, k.kid)
			continue
		}
		keys[k.kid] = k
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("JWKS has no usable signature key (of %d keys)", len(doc.Keys))
	}
	return keys, nil
}

// StaticKeySet is a fixed key set, for tests and for services that ship the
// issuer's public keys with their configuration.
type StaticKeySet struct {
	keys map[string]*Key
}

// NewStaticKeySet parses a JWKS document (the same rules as RemoteKeySet).
func NewStaticKeySet(jwks []byte) (*StaticKeySet, error) {
	keys, err := parseKeySet(jwks)
	if err != nil {
		return nil, fmt.Errorf("static key set: %w", err)
	}
	return &StaticKeySet{keys: keys}, nil
}

// lookup implements KeySet.
func (s *StaticKeySet) lookup(_ context.Context, kid string) (*Key, error) {
	if k := s.keys[kid]; k != nil {
		return k, nil
	}
	return nil, ErrUnknownKey
}

// Metadata is the part of the issuer's discovery document this package uses.
type Metadata struct {
	Issuer                string `json:"issuer"`
	JWKSURI               string `json:"jwks_uri"`
	TokenEndpoint         string `json:"token_endpoint"`
	IntrospectionEndpoint string `json:"introspection_endpoint"`
}

// Discover fetches {issuer}/.well-known/openid-configuration and checks that
// its issuer is exactly issuer. client nil: a client with DefaultFetchTimeout;
// a client given is used through a copy that keeps the https-only rule of
// RemoteKeySetOptions (redirects included) and is never changed.
func Discover(ctx context.Context, client *http.Client, issuer string) (*Metadata, error) {
	if err := checkURL(issuer); err != nil {
		return nil, fmt.Errorf("discovery: issuer: %w", err)
	}
	client = guardedClient(client, DefaultFetchTimeout)
	u := strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("discovery: %s answered status %d", u, resp.StatusCode)
	}
	body, err := readLimited(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	var md Metadata
	if err := json.Unmarshal(body, &md); err != nil {
		return nil, fmt.Errorf("discovery: metadata is not JSON: %w", err)
	}
	if md.Issuer != issuer {
		return nil, fmt.Errorf("discovery: metadata issuer %q is not the configured issuer %q", md.Issuer, issuer)
	}
	for name, v := range map[string]string{"jwks_uri": md.JWKSURI, "introspection_endpoint": md.IntrospectionEndpoint, "token_endpoint": md.TokenEndpoint} {
		if v != "" {
			if err := checkURL(v); err != nil {
				return nil, fmt.Errorf("discovery: %s: %w", name, err)
			}
		}
	}
	return &md, nil
}

package verify

import (
	"container/heap"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// Defaults of IntrospectorOptions.
const (
	DefaultIntrospectionCacheTTL = 5 * time.Second
	DefaultIntrospectionCacheMax = 10000
	DefaultIntrospectionTimeout  = 5 * time.Second
	// NoCache, as IntrospectorOptions.CacheTTL, asks the endpoint every time.
	NoCache time.Duration = -1
)

// IntrospectorOptions configure an Introspector. The client must be a
// confidential client of the issuer; it authenticates with HTTP Basic
// (client_secret_basic). Endpoint and Issuer (and the discovered endpoint)
// must be https://, or http:// on a loopback host (127.0.0.0/8, ::1,
// localhost): the client secret and the tokens never cross a network in clear.
type IntrospectorOptions struct {
	// Endpoint is the RFC 7662 introspection endpoint; empty: discovered
	// from Issuer (introspection_endpoint) at the first use.
	Endpoint string
	// Issuer is used for discovery when Endpoint is empty.
	Issuer string
	// ClientID and ClientSecret authenticate this service to the issuer.
	ClientID, ClientSecret string
	// HTTPClient asks the endpoint; nil: a client with DefaultIntrospectionTimeout.
	// A client given is copied, never changed: the copy refuses every URL
	// and redirect the rule above refuses (so the secret and the token are
	// never re-sent in clear), then runs the client's own CheckRedirect.
	HTTPClient *http.Client
	// CacheTTL is how long an answer is reused, keyed by the token's
	// SHA-256 (default DefaultIntrospectionCacheTTL; NoCache to disable).
	// A revocation takes effect within it. VerifyAPIKey reuses an answer
	// for at most MaxAPIKeyCacheTTL even when CacheTTL is longer.
	CacheTTL time.Duration
	// MaxCacheEntries bounds the cache (default DefaultIntrospectionCacheMax).
	MaxCacheEntries int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Introspector asks the issuer whether tokens are still active (RFC 7662),
// and checks API keys (VerifyAPIKey). Concurrent checks of one token that
// is not cached share one request. It is safe for concurrent use.
type Introspector struct {
	opts   IntrospectorOptions
	client *http.Client
	now    func() time.Time

	mu       sync.Mutex
	endpoint string
	cache    map[[sha256.Size]byte]*cacheEntry
	inflight map[[sha256.Size]byte]*introspectionCall
	// positive and negative hold the cached answers of each kind, the
	// soonest to expire first, so that makeRoom never scans the cache.
	positive, negative expiryHeap

	// waitHook, set by tests only, runs when a lookup starts waiting for
	// another's request.
	waitHook func()
}

// cacheEntry is a cached answer: from at, good until until; index is its
// place in its kind's expiryHeap.
type cacheEntry struct {
	key   [sha256.Size]byte
	res   *introspection
	at    time.Time
	until time.Time
	index int
}

// expiryHeap orders cached answers by until, the soonest first
// (container/heap); steps counts its comparisons, for tests.
type expiryHeap struct {
	es    []*cacheEntry
	steps int
}

func (h *expiryHeap) Len() int { return len(h.es) }

func (h *expiryHeap) Less(i, j int) bool {
	h.steps++
	return h.es[i].until.Before(h.es[j].until)
}

func (h *expiryHeap) Swap(i, j int) {
	h.es[i], h.es[j] = h.es[j], h.es[i]
	h.es[i].index, h.es[j].index = i, j
}

func (h *expiryHeap) Push(x any) {
	e := x.(*cacheEntry)
	e.index = len(h.es)
	h.es = append(h.es, e)
}

func (h *expiryHeap) Pop() any {
	last := len(h.es) - 1
	e := h.es[last]
	h.es[last] = nil
	h.es = h.es[:last]
	return e
}

// introspection is one answer of the endpoint, read once.
type introspection struct {
	active bool
	// claims are those of an active api_key answer, built once per answer
	// (shared: VerifyAPIKey hands out copies); keyErr says why an active
	// answer gives none.
	claims *Claims
	keyErr error
}

// introspectionCall is a request in flight that concurrent checks of the
// same token wait for.
type introspectionCall struct {
	done chan struct{}
	res  *introspection
	err  error
	// cancelled: the asking request's own context ended, so the error says
	// nothing about the endpoint and a waiter still alive asks again.
	cancelled bool
}

// NewIntrospector checks the options; it makes no network call.
func NewIntrospector(opts IntrospectorOptions) (*Introspector, error) {
	var errs []error
	if opts.ClientID == "" || opts.ClientSecret == "" {
		errs = append(errs, errors.New("ClientID and ClientSecret are required"))
	}
	switch {
	case opts.Endpoint != "":
		if err := checkURL(opts.Endpoint); err != nil {
			errs = append(errs, fmt.Errorf("Endpoint: %w", err))
		}
	case opts.Issuer == "":
		errs = append(errs, errors.New("set Endpoint or Issuer"))
	default:
		if err := checkURL(opts.Issuer); err != nil {
			errs = append(errs, fmt.Errorf("Issuer: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("introspector: %w", err)
	}
	if opts.CacheTTL == 0 {
		opts.CacheTTL = DefaultIntrospectionCacheTTL
	}
	if opts.MaxCacheEntries <= 0 {
		opts.MaxCacheEntries = DefaultIntrospectionCacheMax
	}
	in := &Introspector{opts: opts, client: guardedClient(opts.HTTPClient, DefaultIntrospectionTimeout), now: opts.Now,
		endpoint: opts.Endpoint, cache: map[[sha256.Size]byte]*cacheEntry{}, inflight: map[[sha256.Size]byte]*introspectionCall{}}
	if in.now == nil {
		in.now = time.Now
	}
	return in, nil
}

// Active reports whether the issuer considers token active. Any failure to
// get an answer is an error wrapping ErrIntrospectionUnavailable, and the
// caller must then refuse the request (fail closed).
func (in *Introspector) Active(ctx context.Context, token string) (bool, error) {
	res, err := in.lookup(ctx, token, in.opts.CacheTTL, "access_token")
	if err != nil {
		return false, err
	}
	return res.active, nil
}

// MaxAPIKeyCacheTTL bounds how long VerifyAPIKey reuses an answer, whatever
// IntrospectorOptions.CacheTTL says: a revoked key, or one whose owner was
// deactivated or demoted, takes effect within it.
const MaxAPIKeyCacheTTL = 5 * time.Second

// VerifyAPIKey checks a Portcullis API key and returns its claims: the same
// Claims as an access token's, with Subject (the owner's user id), Scope and
// Scopes (the key's effective permissions), ExpiresAt, ClientID
// ("apikey:<key id>"), APIKeyID, Issuer (the answer's iss, else
// IntrospectorOptions.Issuer) and IssuedAt (when the issuer confirmed the
// key), and never any Roles, AMR or ACR: a key meets no Role or MFA
// requirement, whoever owns it.
//
// The format is checked first (CheckAPIKey): a malformed key costs no
// request and gets an error wrapping ErrMalformedAPIKey. Then the issuer is
// asked, and its answer reused for at most MaxAPIKeyCacheTTL (and
// IntrospectorOptions.CacheTTL, and never past the key's exp), keyed by the
// key's SHA-256; the key itself is never kept. Errors wrap ErrInactive (the
// issuer says revoked, expired or unknown), ErrExpired, ErrWrongType (the
// issuer knows the string, but not as an API key) or
// ErrIntrospectionUnavailable (no usable answer: the caller must refuse the
// request). None contains the key.
func (in *Introspector) VerifyAPIKey(ctx context.Context, key string) (*Claims, error) {
	if err := CheckAPIKey(key); err != nil {
		return nil, err
	}
	ttl := min(in.opts.CacheTTL, MaxAPIKeyCacheTTL)
	res, err := in.lookup(ctx, key, ttl, "")
	if err != nil {
		return nil, err
	}
	switch {
	case !res.active:
		return nil, errKeyInactive
	case res.keyErr != nil:
		return nil, res.keyErr
	}
	// The issuer decides; this only keeps an answer that outlived the
	// key's exp (a slow request, a skewed clock) from being trusted.
	if in.now().After(res.claims.ExpiresAt.Add(DefaultLeeway)) {
		return nil, fmt.Errorf("API key: %w", ErrExpired)
	}
	c := *res.claims
	return &c, nil
}

// lookup returns the answer for token: cached when younger than ttl (and
// not past its own end), else asked, one request for all concurrent
// lookups of the token. hint is the token_type_hint ("" for none).
func (in *Introspector) lookup(ctx context.Context, token string, ttl time.Duration, hint string) (*introspection, error) {
	key := sha256.Sum256([]byte(token))
	if ttl <= 0 {
		// Not cached: every check asks, and is not merged with others.
		res, err := in.ask(ctx, token, hint)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrIntrospectionUnavailable, err)
		}
		return res, nil
	}
	for retried := false; ; retried = true {
		in.mu.Lock()
		if e, ok := in.cache[key]; ok {
			now := in.now()
			if now.Before(e.until) && now.Before(e.at.Add(ttl)) {
				in.mu.Unlock()
				return e.res, nil
			}
		}
		call, waiting := in.inflight[key]
		if !waiting {
			call = &introspectionCall{done: make(chan struct{})}
			in.inflight[key] = call
		}
		in.mu.Unlock()
		if !waiting {
			return in.askAndCache(ctx, key, token, hint, ttl, call)
		}
		if in.waitHook != nil {
			in.waitHook()
		}
		select {
		case <-call.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ErrIntrospectionUnavailable, ctx.Err())
		}
		// The request waited for was abandoned by its own caller: ask again
		// (once), as this caller is still waiting for an answer.
		if call.err != nil && call.cancelled && !retried && ctx.Err() == nil {
			continue
		}
		if call.err != nil {
			return nil, call.err
		}
		return call.res, nil
	}
}

// askAndCache makes the request of call, caches its answer for ttl (when
// makeRoom allows) and wakes the lookups waiting for it.
func (in *Introspector) askAndCache(ctx context.Context, key [sha256.Size]byte, token, hint string, ttl time.Duration, call *introspectionCall) (*introspection, error) {
	res, err := in.ask(ctx, token, hint)
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrIntrospectionUnavailable, err)
	}
	now := in.now()
	in.mu.Lock()
	defer in.mu.Unlock()
	delete(in.inflight, key)
	call.res, call.err, call.cancelled = res, err, err != nil && ctx.Err() != nil
	close(call.done)
	if err != nil {
		return nil, err
	}
	until := now.Add(ttl)
	if res.claims != nil && res.claims.ExpiresAt.Before(until) {
		until = res.claims.ExpiresAt
	}
	in.keep(key, res, now, until)
	return res, nil
}

// keep caches res for key, from now until until, when makeRoom allows; it
// replaces the key's earlier answer. It is the one writer of the cache
// (with drop, which it calls). Called with in.mu held.
func (in *Introspector) keep(key [sha256.Size]byte, res *introspection, now, until time.Time) {
	if old, ok := in.cache[key]; ok {
		in.drop(old)
	}
	if !in.makeRoom(now, res.active) {
		return
	}
	e := &cacheEntry{key: key, res: res, at: now, until: until}
	in.cache[key] = e
	heap.Push(in.kind(res.active), e)
}

// kind returns the heap of the positive or the negative answers.
func (in *Introspector) kind(positive bool) *expiryHeap {
	if positive {
		return &in.positive
	}
	return &in.negative
}

// drop takes e out of the cache. Called with in.mu held.
func (in *Introspector) drop(e *cacheEntry) {
	heap.Remove(in.kind(e.res.active), e.index)
	delete(in.cache, e.key)
}

// makeRoom keeps the cache within MaxCacheEntries before an answer is added
// at now, and reports whether it may be added. When the cache is full it
// drops every expired answer, then, if it is still full, the negative
// answer that expires first; a negative answer that still finds it full
// (of live positive answers) is not cached, and a positive one replaces
// the positive answer that expires first. Anyone can mint well-formed API
// keys (the checksum is public), so a flood of forged keys never evicts a
// real key's live answer. Each step takes the top of a heap, so an answer
// costs O(log n) whatever the cache holds, and a full cache of live
// answers refuses a negative one at once: a flood never scans the cache
// under in.mu. Called with in.mu held.
func (in *Introspector) makeRoom(now time.Time, positive bool) bool {
	full := func() bool { return len(in.cache) >= in.opts.MaxCacheEntries }
	if !full() {
		return true
	}
	for _, h := range []*expiryHeap{&in.negative, &in.positive} {
		for h.Len() > 0 && !now.Before(h.es[0].until) {
			in.drop(h.es[0])
		}
	}
	for full() && in.negative.Len() > 0 {
		in.drop(in.negative.es[0])
	}
	if !full() {
		return true
	}
	if !positive {
		return false
	}
	for full() && in.positive.Len() > 0 {
		in.drop(in.positive.es[0])
	}
	return true
}

// introspectionAnswer is the members of an RFC 7662 answer that are read.
type introspectionAnswer struct {
	Active    *bool           `json:"active"`
	TokenType string          `json:"token_type"`
	Iss       string          `json:"iss"`
	Sub       string          `json:"sub"`
	Scope     string          `json:"scope"`
	ClientID  string          `json:"client_id"`
	Exp       json.RawMessage `json:"exp"`
}

// ask makes one introspection request.
func (in *Introspector) ask(ctx context.Context, token, hint string) (*introspection, error) {
	endpoint, err := in.location(ctx)
	if err != nil {
		return nil, err
	}
	form := url.Values{"token": {token}}
	if hint != "" {
		form.Set("token_type_hint", hint)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("introspect: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	// RFC 6749 §2.3.1: id and secret are form-encoded before Basic.
	req.SetBasicAuth(url.QueryEscape(in.opts.ClientID), url.QueryEscape(in.opts.ClientSecret))
	resp, err := in.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("introspect: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("introspect: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		return nil, fmt.Errorf("introspect: status %d %s", resp.StatusCode, quote(e.Error))
	}
	var out introspectionAnswer
	if err := json.Unmarshal(body, &out); err != nil || out.Active == nil {
		return nil, errors.New("introspect: the answer has no boolean active member")
	}
	res := &introspection{active: *out.Active}
	if res.active {
		res.claims, res.keyErr = in.keyClaims(&out)
	}
	return res, nil
}

// keyClaims reads an active answer as an API key's claims.
func (in *Introspector) keyClaims(out *introspectionAnswer) (*Claims, error) {
	if out.TokenType != "api_key" {
		return nil, errNotAPIKeyAnswer
	}
	var exp numericDate
	if len(out.Exp) == 0 || exp.UnmarshalJSON(out.Exp) != nil || !exp.set {
		return nil, errUnusableKeyAnswer("exp")
	}
	id, ok := strings.CutPrefix(out.ClientID, apiKeyClientPrefix)
	if !ok || id == "" {
		return nil, errUnusableKeyAnswer("client_id")
	}
	if out.Sub == "" {
		return nil, errUnusableKeyAnswer("sub")
	}
	iss := out.Iss
	if iss == "" {
		iss = in.opts.Issuer
	}
	c := &Claims{Issuer: iss, Subject: out.Sub, ExpiresAt: exp.t, IssuedAt: in.now(), ClientID: out.ClientID,
		APIKeyID: id, Scope: out.Scope}
	if out.Scope != "" {
		// Clipped, so that a handler appending to a copy's Scopes never
		// writes into the cached slice.
		c.Scopes = slices.Clip(strings.Fields(out.Scope))
	}
	return c, nil
}

// location returns the endpoint, discovering it once when not configured.
func (in *Introspector) location(ctx context.Context) (string, error) {
	in.mu.Lock()
	u := in.endpoint
	in.mu.Unlock()
	if u != "" {
		return u, nil
	}
	md, err := Discover(ctx, in.client, in.opts.Issuer)
	if err != nil {
		return "", err
	}
	if md.IntrospectionEndpoint == "" {
		return "", errors.New("discovery: the issuer advertises no introspection_endpoint")
	}
	in.mu.Lock()
	in.endpoint = md.IntrospectionEndpoint
	in.mu.Unlock()
	return md.IntrospectionEndpoint, nil
}

package verify

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
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
	HTTPClient *http.Client
	// CacheTTL is how long an answer is reused, keyed by the token's
	// SHA-256 (default DefaultIntrospectionCacheTTL; NoCache to disable).
	// A revocation takes effect within it.
	CacheTTL time.Duration
	// MaxCacheEntries bounds the cache (default DefaultIntrospectionCacheMax).
	MaxCacheEntries int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Introspector asks the issuer whether tokens are still active (RFC 7662).
// It is safe for concurrent use.
type Introspector struct {
	opts   IntrospectorOptions
	client *http.Client
	now    func() time.Time

	mu       sync.Mutex
	endpoint string
	cache    map[[sha256.Size]byte]cacheEntry
}

type cacheEntry struct {
	active bool
	until  time.Time
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
	in := &Introspector{opts: opts, client: opts.HTTPClient, now: opts.Now, endpoint: opts.Endpoint,
		cache: map[[sha256.Size]byte]cacheEntry{}}
	if in.client == nil {
		in.client = &http.Client{Timeout: DefaultIntrospectionTimeout, CheckRedirect: refuseInsecureRedirect}
	}
	if in.now == nil {
		in.now = time.Now
	}
	return in, nil
}

// Active reports whether the issuer considers token active. Any failure to
// get an answer is an error wrapping ErrIntrospectionUnavailable, and the
// caller must then refuse the request (fail closed).
func (in *Introspector) Active(ctx context.Context, token string) (bool, error) {
	key := sha256.Sum256([]byte(token))
	if in.opts.CacheTTL > 0 {
		in.mu.Lock()
		e, ok := in.cache[key]
		in.mu.Unlock()
		if ok && in.now().Before(e.until) {
			return e.active, nil
		}
	}
	active, err := in.ask(ctx, token)
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrIntrospectionUnavailable, err)
	}
	if in.opts.CacheTTL > 0 {
		now := in.now()
		in.mu.Lock()
		if len(in.cache) >= in.opts.MaxCacheEntries {
			for k, e := range in.cache {
				if !now.Before(e.until) {
					delete(in.cache, k)
				}
			}
			if len(in.cache) >= in.opts.MaxCacheEntries {
				clear(in.cache)
			}
		}
		in.cache[key] = cacheEntry{active: active, until: now.Add(in.opts.CacheTTL)}
		in.mu.Unlock()
	}
	return active, nil
}

// ask makes one introspection request.
func (in *Introspector) ask(ctx context.Context, token string) (bool, error) {
	endpoint, err := in.location(ctx)
	if err != nil {
		return false, err
	}
	form := url.Values{"token": {token}, "token_type_hint": {"access_token"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return false, fmt.Errorf("introspect: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	// RFC 6749 §2.3.1: id and secret are form-encoded before Basic.
	req.SetBasicAuth(url.QueryEscape(in.opts.ClientID), url.QueryEscape(in.opts.ClientSecret))
	resp, err := in.client.Do(req)
	if err != nil {
		return false, fmt.Errorf("introspect: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return false, fmt.Errorf("introspect: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		return false, fmt.Errorf("introspect: status %d %s", resp.StatusCode, quote(e.Error))
	}
	var out struct {
		Active *bool `json:"active"`
	}
	if err := json.Unmarshal(body, &out); err != nil || out.Active == nil {
		return false, errors.New("introspect: the answer has no boolean active member")
	}
	return *out.Active, nil
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

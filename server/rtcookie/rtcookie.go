// Package rtcookie is the refresh-token cookie of browser clients created
// with refresh_token_delivery "cookie" (contract, "Browser apps without
// tokens in storage"): its name and exact attributes, and Guard, the one
// check of the CSRF defences that every request reading or setting it
// passes first.
//
// The cookie is HttpOnly, so script on the page never sees the refresh
// token; SameSite=Strict, so no other site's request carries it; __Host-
// over HTTPS, so a sibling subdomain cannot plant one. Because the token
// endpoint takes CORS-simple form posts, Guard also demands an allowed
// Origin and the custom header X-Portcullis-CSRF (which forces a preflight
// only allowed origins pass) and refuses Sec-Fetch-Site: cross-site.
package rtcookie

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"golang.org/x/net/publicsuffix"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/store"
)

// Cookie names and the header of the CSRF defence.
const (
	// CookieName is the cookie over HTTPS: the __Host- prefix makes the
	// browser accept it only from this host, Secure, for Path=/.
	CookieName = "__Host-portcullis-rt"
	// InsecureCookieName is the cookie over plain HTTP (development).
	InsecureCookieName = "portcullis-rt"
	// CSRFHeader must be sent as "1" on every request of a cookie client.
	CSRFHeader = "X-Portcullis-CSRF"
)

// Name is the cookie's name over HTTPS (secure) or plain HTTP.
func Name(secure bool) string {
	if secure {
		return CookieName
	}
	return InsecureCookieName
}

// Set returns the cookie carrying the refresh token rt for lifetime (what
// remains of its family's absolute lifetime, rounded up to a second).
func Set(rt string, lifetime time.Duration, secure bool) *http.Cookie {
	return &http.Cookie{Name: Name(secure), Value: rt, Path: "/", MaxAge: max(int(math.Ceil(lifetime.Seconds())), 1),
		HttpOnly: true, Secure: secure, SameSite: http.SameSiteStrictMode}
}

// Clear returns the cookie that removes the refresh-token cookie.
func Clear(secure bool) *http.Cookie {
	return &http.Cookie{Name: Name(secure), Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: secure, SameSite: http.SameSiteStrictMode}
}

// Read returns the refresh token the request's cookie carries, "" when none.
func Read(r *http.Request, secure bool) string {
	c, err := r.Cookie(Name(secure))
	if err != nil {
		return ""
	}
	return c.Value
}

// Guard is the one check of the CSRF defences, for every request of a
// cookie client that reads or sets the cookie (the token, revocation and
// logout endpoints, password change and invite acceptance): the Origin must be one of the client's allowed
// origins, X-Portcullis-CSRF must be 1, and Sec-Fetch-Site, when sent, must
// not be cross-site. Anything else is 403 invalid_request, before anything
// is read, rotated or set.
func Guard(r *http.Request, c store.Client) error {
	refuse := func(why string) error {
		return apierr.ErrInvalidRequest.WithStatus(http.StatusForbidden).WithDescription("%s", why)
	}
	origin := r.Header.Values("Origin")
	switch {
	case len(origin) == 0 || origin[0] == "":
		return refuse("The Origin header is missing; this client's requests must come from one of its allowed origins.")
	case len(origin) > 1 || !slices.Contains(c.AllowedOrigins, origin[0]):
		return refuse("The request's Origin is not an allowed origin of this client.")
	case r.Header.Get(CSRFHeader) != "1":
		return refuse("The header " + CSRFHeader + ": 1 is required.")
	case r.Header.Get("Sec-Fetch-Site") == "cross-site":
		return refuse("Cross-site requests are refused.")
	}
	return nil
}

// Lister lists the registered clients.
type Lister interface {
	ListClients(ctx context.Context) ([]store.Client, error)
}

// Origins knows the allowed origins of every cookie client, the only
// origins credentialed CORS answers. It keeps them in memory: the set is
// read again when older than its TTL, and an origin it does not hold reads
// it again at most once per MissReload, so a new client's origin works
// within that time on every instance while a flood of foreign origins costs
// at most one read of the clients per MissReload.
type Origins struct {
	list       Lister
	ttl        time.Duration
	missReload time.Duration
	now        func() time.Time

	mu     sync.Mutex
	set    map[string]bool
	loaded time.Time
}

// MissReload is how often at most an unknown origin reads the clients again.
const MissReload = time.Second

// NewOrigins returns the allowed origins of the cookie clients l lists,
// kept for ttl; now is the clock (nil: time.Now).
func NewOrigins(l Lister, ttl time.Duration, now func() time.Time) *Origins {
	if now == nil {
		now = time.Now
	}
	return &Origins{list: l, ttl: ttl, missReload: min(MissReload, ttl), now: now}
}

// Allowed reports whether origin is an allowed origin of some cookie client.
func (o *Origins) Allowed(ctx context.Context, origin string) (bool, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	age := o.now().Sub(o.loaded)
	if o.set != nil && age < o.ttl && (o.set[origin] || age < o.missReload) {
		return o.set[origin], nil
	}
	list, err := o.list.ListClients(ctx)
	if err != nil {
		return false, fmt.Errorf("list clients for CORS: %w", err)
	}
	set := map[string]bool{}
	for _, c := range list {
		if c.RefreshByCookie() {
			for _, a := range c.AllowedOrigins {
				set[a] = true
			}
		}
	}
	o.set, o.loaded = set, o.now()
	return set[origin], nil
}

// SameSite reports whether a browser counts origin and the issuer URL as
// the same site (the same scheme and registrable domain, by the public
// suffix list): only then does it send the SameSite=Strict cookie on the
// app's requests, and third-party cookie blocking (Safari's ITP) leave it
// alone. Loopback hosts count as one site (development).
func SameSite(origin, issuer string) bool {
	o, err1 := url.Parse(origin)
	i, err2 := url.Parse(issuer)
	if err1 != nil || err2 != nil || o.Scheme != i.Scheme {
		return false
	}
	site := func(host string) string {
		if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
			return "loopback"
		}
		if s, err := publicsuffix.EffectiveTLDPlusOne(host); err == nil {
			return s
		}
		return host
	}
	return site(o.Hostname()) == site(i.Hostname())
}

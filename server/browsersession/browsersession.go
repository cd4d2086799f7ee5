package browsersession

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// Cookie names.
const (
	// CookieName is the cookie over HTTPS: the __Host- prefix makes the
	// browser accept it only from this host, Secure, for Path=/.
	CookieName = "__Host-portcullis-session"
	// InsecureCookieName is the cookie over plain HTTP (development).
	InsecureCookieName = "portcullis-session"
)

// valueBytes is the entropy of a cookie value: 256 bits.
const valueBytes = 32

// valueLen is the length of a cookie value: base64url without padding.
var valueLen = base64.RawURLEncoding.EncodedLen(valueBytes)

// ErrNoSession means the request holds no live session: no cookie, a
// malformed one, or one whose session is unknown, ended or expired.
var ErrNoSession = errors.New("browsersession: no live session")

// Store keeps the sessions (the token state: *redisstate.State or *sqlstate.State).
type Store interface {
	CreateBrowserSession(ctx context.Context, s store.BrowserSession, cookieHash []byte) (ended []store.EndedBrowserSession, err error)
	FindBrowserSession(ctx context.Context, cookieHash []byte, now time.Time) (store.BrowserSession, error)
	BrowserSessionGrants(ctx context.Context, userID, id string) ([]store.SessionGrant, error)
	EndBrowserSessionGrants(ctx context.Context, id string, now time.Time) ([]store.SessionGrant, error)
}

// Ended ends the grants of the sessions a new one pushed past the user's
// cap (*signout.Ender.EndDropped, the routine that ends the grants a
// session drops past store.MaxSessionGrants): their refresh families and
// back-channel logout, as ending those sessions would.
type Ended interface {
	EndDropped(ctx context.Context, userID string, dropped []store.SessionGrant) error
}

// Auditor records security-relevant events (*app.Auditor).
type Auditor interface {
	Record(ctx context.Context, e store.AuditEvent)
}

// WhyCap is the reason (details.reason of session.ended, beside
// signout's reasons) of a session Start ended past the user's cap on
// sessions (PORTCULLIS_MAX_SESSIONS_PER_USER).
const WhyCap = "session_cap"

// Config holds the lifetimes (PORTCULLIS_SESSION_IDLE_TTL,
// PORTCULLIS_SESSION_MAX_AGE) and what ends the grants of the sessions the
// cap on sessions per user ends.
type Config struct {
	IdleTTL time.Duration
	MaxAge  time.Duration
	// Ended is required: Start hands it the grants of the sessions the
	// store ended to keep the user within the cap.
	Ended Ended
	// Audit is required: Start records each session it ended past the
	// cap (session.ended, reason WhyCap).
	Audit Auditor
	// Now and Rand replace the clock and the random source in tests.
	Now  func() time.Time
	Rand func(b []byte) error
	// Cookie names the cookie and its SameSite; zero: the browser session
	// cookie (CookieName, InsecureCookieName, Lax). The admin console keeps
	// its own sessions in the same store under its own cookie.
	Cookie Cookie
}

// Cookie is the name of a session cookie over HTTPS (with the __Host-
// prefix) and over plain HTTP, and its SameSite attribute.
type Cookie struct {
	Secure, Insecure string
	SameSite         http.SameSite
}

// Manager starts, finds and ends browser sessions. It is safe for concurrent use.
type Manager struct {
	st   Store
	cfg  Config
	now  func() time.Time
	rand func([]byte) error
}

// New returns a Manager over st; both lifetimes must be positive.
func New(st Store, cfg Config) (*Manager, error) {
	if st == nil {
		return nil, errors.New("browsersession: a store is required")
	}
	if cfg.IdleTTL <= 0 || cfg.MaxAge <= 0 {
		return nil, fmt.Errorf("browsersession: idle TTL %v and max age %v must be positive", cfg.IdleTTL, cfg.MaxAge)
	}
	if cfg.Ended == nil {
		return nil, errors.New("browsersession: Config.Ended is required")
	}
	if cfg.Audit == nil {
		return nil, errors.New("browsersession: Config.Audit is required")
	}
	if cfg.Cookie.Secure == "" || cfg.Cookie.Insecure == "" {
		cfg.Cookie = Cookie{Secure: CookieName, Insecure: InsecureCookieName, SameSite: http.SameSiteLaxMode}
	}
	if cfg.Cookie.SameSite == 0 {
		cfg.Cookie.SameSite = http.SameSiteLaxMode
	}
	m := &Manager{st: st, cfg: cfg, now: cfg.Now, rand: cfg.Rand}
	if m.now == nil {
		m.now = time.Now
	}
	if m.rand == nil {
		m.rand = func(b []byte) error { _, err := rand.Read(b); return err }
	}
	return m, nil
}

// Name is the cookie's name over HTTPS (secure) or plain HTTP.
func Name(secure bool) string {
	if secure {
		return CookieName
	}
	return InsecureCookieName
}

// HTTPS decides whether the browser talks HTTPS to Portcullis, which sets
// every cookie's Secure flag and its __Host- prefix (the session cookie, the
// pages' cookies, the refresh-token cookie): the one rule for all of them.
type HTTPS struct {
	// ServerTLS: Portcullis terminates TLS itself (PORTCULLIS_TLS_CERT).
	ServerTLS bool
	// PublicURL: PORTCULLIS_PUBLIC_URL is https.
	PublicURL bool
}

// HTTPSFor is HTTPS for a server that terminates TLS itself (serverTLS) or
// not, and its public URL (PORTCULLIS_PUBLIC_URL, may be "").
func HTTPSFor(serverTLS bool, publicURL string) HTTPS {
	u, err := url.Parse(publicURL)
	return HTTPS{ServerTLS: serverTLS, PublicURL: err == nil && u.Scheme == "https" && u.Host != ""}
}

// Secure reports whether the browser talks HTTPS to us: the server
// terminates TLS, the public URL is https, the request came over TLS
// (requestTLS), or a proxy says so (scheme, as Echo's Context.Scheme reads
// it).
func (h HTTPS) Secure(requestTLS bool, scheme string) bool {
	return h.ServerTLS || h.PublicURL || requestTLS || scheme == "https"
}

// Start is what a new session records.
type Start struct {
	UserID   string
	AuthTime time.Time // when the person authenticated; zero: now
	AMR      []string  // e.g. ["pwd"]
	Remember bool      // "Keep me signed in"
	// Who asked, shown in the list of the person's sessions.
	IP        string
	UserAgent string
	// ClientIDs and Grants a re-login of the same person carries over from
	// the session it replaces (signout.CarryGrants), so that ending the new
	// session still ends them.
	ClientIDs []string
	Grants    []store.SessionGrant
	// Lineage is the lineage of the session a re-login of the same person
	// replaces (store.BrowserSession.Lineage), which the new session
	// continues, so that the refresh families bound to it go on; "": the
	// new session starts its own.
	Lineage string
}

// Start stores a new session under a fresh random cookie value and returns
// it with the cookie to set. secure says the browser talks HTTPS to us.
// When the user already held as many live sessions as the cap on sessions
// per user, the store ended the oldest (store.BrowserSessions's
// CreateBrowserSession): Start audits each as a logout's end is audited
// (session.ended with its sid, the reason WhyCap, the kind browser) and
// ends their grants (Config.Ended); it fails closed: when they cannot be
// ended, no cookie is handed out.
func (m *Manager) Start(ctx context.Context, s Start, secure bool) (store.BrowserSession, *http.Cookie, error) {
	if s.UserID == "" {
		return store.BrowserSession{}, nil, errors.New("browsersession: start: a user is required")
	}
	raw := make([]byte, valueBytes)
	if err := m.rand(raw); err != nil {
		return store.BrowserSession{}, nil, fmt.Errorf("browsersession: random cookie value: %w", err)
	}
	value := base64.RawURLEncoding.EncodeToString(raw)
	idRaw := make([]byte, 16)
	if err := m.rand(idRaw); err != nil {
		return store.BrowserSession{}, nil, fmt.Errorf("browsersession: random session id: %w", err)
	}
	now := m.now()
	auth := s.AuthTime
	if auth.IsZero() {
		auth = now
	}
	bs := store.BrowserSession{
		ID: base64.RawURLEncoding.EncodeToString(idRaw), Lineage: s.Lineage, UserID: s.UserID, AuthTime: auth, AMR: slices.Clone(s.AMR),
		Remember: s.Remember, CreatedAt: now, LastUsedAt: now, IdleTTL: m.cfg.IdleTTL, AbsoluteExpiry: now.Add(m.cfg.MaxAge),
		IP: s.IP, UserAgent: s.UserAgent, ClientIDs: slices.Clone(s.ClientIDs), Grants: slices.Clone(s.Grants),
	}
	if bs.Lineage == "" {
		bs.Lineage = bs.ID
	}
	ended, err := m.st.CreateBrowserSession(ctx, bs, Hash(value))
	if err != nil {
		err = fmt.Errorf("browsersession: store the session: %w", err)
	}
	// What the store ended stays ended, even when it failed: each is
	// audited, and their grants, which could no longer be ended with them,
	// end now.
	for _, e := range ended {
		m.cfg.Audit.Record(ctx, store.AuditEvent{Action: "session.ended", Outcome: store.OutcomeSuccess, ActorID: s.UserID,
			TargetID: s.UserID, IP: s.IP, UserAgent: s.UserAgent,
			Details: map[string]string{"sid": e.ID, "reason": WhyCap, "kind": "browser"}})
	}
	if eerr := m.cfg.Ended.EndDropped(ctx, s.UserID, store.EndedGrants(ended)); eerr != nil && err == nil {
		err = fmt.Errorf("browsersession: end the grants of the sessions past the cap: %w", eerr)
	}
	if err != nil {
		return store.BrowserSession{}, nil, err
	}
	return bs, m.cookie(value, bs, secure), nil
}

// cookie is the Set-Cookie of a session: a browser-session cookie unless
// the person asked to be remembered, then one that lasts until the
// session's absolute expiry.
func (m *Manager) cookie(value string, bs store.BrowserSession, secure bool) *http.Cookie {
	ck := &http.Cookie{Name: m.Name(secure), Value: value, Path: "/", HttpOnly: true, Secure: secure,
		SameSite: m.cfg.Cookie.SameSite}
	if bs.Remember {
		left := bs.AbsoluteExpiry.Sub(m.now())
		ck.MaxAge = max(int(left/time.Second), 1)
	}
	return ck
}

// Find returns the live session the request's cookie names, extending its
// idle expiry. ErrNoSession when there is none; another error when the
// store cannot answer (the caller must fail closed, not treat it as a
// signed-out browser it could sign in again).
func (m *Manager) Find(ctx context.Context, r *http.Request, secure bool) (store.BrowserSession, error) {
	value := m.value(r, secure)
	if value == "" {
		return store.BrowserSession{}, ErrNoSession
	}
	bs, err := m.st.FindBrowserSession(ctx, Hash(value), m.now())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.BrowserSession{}, ErrNoSession
	case err != nil:
		return store.BrowserSession{}, fmt.Errorf("browsersession: find the session: %w", err)
	}
	return bs, nil
}

// value returns the request's well-formed cookie value, or "".
func (m *Manager) value(r *http.Request, secure bool) string {
	ck, err := r.Cookie(m.Name(secure))
	if err != nil || len(ck.Value) != valueLen {
		return ""
	}
	if _, err := base64.RawURLEncoding.DecodeString(ck.Value); err != nil {
		return ""
	}
	return ck.Value
}

// End ends the session id and returns the grants it held when it ended
// (atomically with their recording); ending an unknown one is not an error.
func (m *Manager) End(ctx context.Context, id string) ([]store.SessionGrant, error) {
	if id == "" {
		return nil, nil
	}
	held, err := m.st.EndBrowserSessionGrants(ctx, id, m.now())
	if err != nil {
		return nil, fmt.Errorf("browsersession: end the session: %w", err)
	}
	return held, nil
}

// Grants returns the grants made in session bs (Find returns none: most
// requests need none).
func (m *Manager) Grants(ctx context.Context, bs store.BrowserSession) ([]store.SessionGrant, error) {
	gs, err := m.st.BrowserSessionGrants(ctx, bs.UserID, bs.ID)
	if err != nil {
		return nil, fmt.Errorf("browsersession: read the session's grants: %w", err)
	}
	return gs, nil
}

// Name is the manager's cookie name over HTTPS (secure) or plain HTTP.
func (m *Manager) Name(secure bool) string {
	if secure {
		return m.cfg.Cookie.Secure
	}
	return m.cfg.Cookie.Insecure
}

// Clear is the Set-Cookie that deletes the manager's cookie.
func (m *Manager) Clear(secure bool) *http.Cookie {
	return &http.Cookie{Name: m.Name(secure), Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: secure,
		SameSite: m.cfg.Cookie.SameSite}
}

// Clear is the Set-Cookie that deletes the browser session cookie.
func Clear(secure bool) *http.Cookie {
	return &http.Cookie{Name: Name(secure), Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: secure,
		SameSite: http.SameSiteLaxMode}
}

// Hash is how a cookie value is stored: SHA-256. A slow hash adds nothing
// for a random 256-bit value.
func Hash(value string) []byte {
	h := sha256.Sum256([]byte(value))
	return h[:]
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/portcullis-auth/portcullis/keys/verify"
)

// config holds the settings.
type config struct {
	Addr     string
	Issuer   string
	Audience string
	// ClientID is the demo's client id at the issuer: the aud of the
	// back-channel logout tokens it accepts and, with ClientSecret, the
	// confidential client it introspects API keys with.
	ClientID string
	// ClientSecret is ClientID's secret. Set, the demo accepts API keys
	// (X-API-Key or Authorization: Bearer pcak_…) through introspection;
	// empty, it accepts access tokens only (a request with only an
	// X-API-Key has no credential: 401).
	ClientSecret string
	// MaxTokenTTL is the longest access token lifetime of the issuer: how
	// long a back-channel logout is remembered.
	MaxTokenTTL time.Duration
	// IntrospectionClient, when set, asks the introspection endpoint (tests
	// count its requests); nil: keys/verify's default client.
	IntrospectionClient *http.Client
}

// apiKeys reports whether the demo accepts API keys.
func (c config) apiKeys() bool { return c.ClientSecret != "" }

// loadConfig reads DEMO_API_… settings through lookup, reporting every bad one at once.
func loadConfig(lookup func(string) (string, bool)) (config, error) {
	get := func(name, def string) string {
		if v, ok := lookup(name); ok && v != "" {
			return v
		}
		return def
	}
	cfg := config{
		Addr:     get("DEMO_API_ADDR", "127.0.0.1:8081"),
		Issuer:   get("DEMO_API_ISSUER", "http://127.0.0.1:8080"),
		Audience: get("DEMO_API_AUDIENCE", "api"),
		ClientID: get("DEMO_API_CLIENT_ID", "demo-api"),
		// No default: without a secret, API keys are not accepted.
		ClientSecret: get("DEMO_API_CLIENT_SECRET", ""),
	}
	var errs []error
	ttl := get("DEMO_API_MAX_TOKEN_TTL", "24h")
	if d, err := time.ParseDuration(ttl); err != nil || d <= 0 {
		errs = append(errs, fmt.Errorf("DEMO_API_MAX_TOKEN_TTL %q is not a positive duration", ttl))
	} else {
		cfg.MaxTokenTTL = d
	}
	if _, port, err := net.SplitHostPort(cfg.Addr); err != nil || port == "" {
		errs = append(errs, fmt.Errorf("DEMO_API_ADDR %q is not host:port", cfg.Addr))
	}
	if u, err := url.Parse(cfg.Issuer); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("DEMO_API_ISSUER %q is not an http(s) URL", cfg.Issuer))
	}
	return cfg, errors.Join(errs...)
}

// roleLevels are the levels of docs/examples/demo-policy.yaml, so that
// "admin or higher" admits super_admin (a test keeps them in step with the file).
var roleLevels = verify.RoleLevels{"super_admin": 100, "admin": 80, "editor": 20, "viewer": 10}

// project is the demo's one resource.
type project struct {
	ID        int       `json:"id"`
	Name      string    `json:"name"`
	Owner     string    `json:"owner"`
	CreatedAt time.Time `json:"created_at"`
	// Tenant is the organisation of the token that created it (absent
	// for none): GET /tenants/{tenant}/projects lists these.
	Tenant string `json:"tenant,omitempty"`
}

// api is the demo resource server: its handler and the key set it owns.
type api struct {
	handler http.Handler
	keys    *verify.RemoteKeySet
	log     *slog.Logger
	now     func() time.Time
	started time.Time

	mu       sync.Mutex
	projects []project

	requests atomic.Int64
	denied   sync.Map // status → *atomic.Int64

	// loggedOut holds the sessions ended by back-channel logout; the Guard
	// refuses their access tokens.
	loggedOut *verify.LoggedOut
	logouts   atomic.Int64
}

// newAPI builds the demo for cfg. now is the clock of token checks (tests
// move it to expire tokens without waiting). Close releases the key set.
func newAPI(cfg config, now func() time.Time, log *slog.Logger) (*api, error) {
	keys, err := verify.NewRemoteKeySet(verify.RemoteKeySetOptions{Issuer: cfg.Issuer, Now: now})
	if err != nil {
		return nil, fmt.Errorf("key set: %w", err)
	}
	v, err := verify.New(keys, verify.Config{Issuer: cfg.Issuer, Audience: cfg.Audience, Now: now})
	if err != nil {
		keys.Close()
		return nil, fmt.Errorf("verifier: %w", err)
	}
	lv, err := verify.NewLogoutVerifier(keys, verify.LogoutConfig{Issuer: cfg.Issuer, ClientID: cfg.ClientID, Now: now})
	if err != nil {
		keys.Close()
		return nil, fmt.Errorf("logout verifier: %w", err)
	}
	// API keys are checked through introspection, with the demo's own
	// confidential client; without its secret, keys are not accepted.
	var introspector *verify.Introspector
	if cfg.apiKeys() {
		introspector, err = verify.NewIntrospector(verify.IntrospectorOptions{Issuer: cfg.Issuer, ClientID: cfg.ClientID,
			ClientSecret: cfg.ClientSecret, HTTPClient: cfg.IntrospectionClient, Now: now})
		if err != nil {
			keys.Close()
			return nil, fmt.Errorf("API keys: %w", err)
		}
	}
	a := &api{keys: keys, log: log, now: now, started: now(),
		loggedOut: verify.NewLoggedOut(verify.LoggedOutOptions{MaxAccessTokenLifetime: cfg.MaxTokenTTL, Now: now})}
	// The one place requests are authenticated: the Guard, which also
	// refuses the tokens of sessions ended by back-channel logout, and
	// accepts API keys with the same scope requirements (never a role).
	g := verify.NewGuard(v, verify.GuardOptions{Roles: roleLevels, OnDenied: a.onDenied, Revocations: a.loggedOut,
		APIKeys: introspector})

	mux := http.NewServeMux()
	mux.Handle("GET /me", g.Authenticate(http.HandlerFunc(a.me)))
	// The projects of the token's own organisation (the platform's for a
	// platform token): the handlers keep to Claims.Tenant, so OwnTenant lets
	// an organisation's permissions count here.
	mux.Handle("GET /projects", g.Require(verify.Scope("projects:read"), verify.OwnTenant())(http.HandlerFunc(a.listProjects)))
	mux.Handle("POST /projects", g.Require(verify.Scope("projects:write"), verify.OwnTenant())(http.HandlerFunc(a.createProject)))
	// An organisation's projects: its token only, checked against the
	// route by the guard, never by the handler.
	mux.Handle("GET /tenants/{tenant}/projects", g.Require(verify.Scope("projects:read"),
		verify.Tenant(func(r *http.Request) string { return r.PathValue("tenant") }))(http.HandlerFunc(a.listTenantProjects)))
	// The whole instance's figures: a platform admin only. Without a Tenant,
	// an organisation's admin is refused (its roles are its organisation's).
	mux.Handle("GET /admin/metrics", g.Require(verify.Role("admin"), verify.MFA())(http.HandlerFunc(a.metrics)))
	mux.Handle("POST /backchannel-logout", verify.LogoutHandler(lv, a.backchannelLogout))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "No such route.")
	})
	a.handler = mux
	return a, nil
}

// Close stops the key set's background refresh.
func (a *api) Close() { a.keys.Close() }

// ServeHTTP counts the request and routes it.
func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.requests.Add(1)
	a.handler.ServeHTTP(w, r)
}

// onDenied counts and logs refusals: why, never the token or key (a
// Denial holds neither).
func (a *api) onDenied(r *http.Request, d *verify.Denial) {
	n, _ := a.denied.LoadOrStore(d.Status, new(atomic.Int64))
	n.(*atomic.Int64).Add(1)
	level := slog.LevelInfo
	if d.Status == http.StatusServiceUnavailable {
		level = slog.LevelWarn
	}
	a.log.Log(r.Context(), level, "request refused", "method", r.Method, "path", r.URL.Path, "status", d.Status, "error", d.Code, "reason", d.Err)
}

// backchannelLogout ends what the demo keeps of the logged-out session: it
// holds nothing per session but the tokens' validity, so the session joins
// the logged-out set the Guard consults.
func (a *api) backchannelLogout(ctx context.Context, c *verify.LogoutClaims) error {
	if err := a.loggedOut.Add(c); err != nil {
		a.log.WarnContext(ctx, "back-channel logout not recorded", "sid", c.SessionID, "sub", c.Subject, "error", err)
		return err
	}
	a.logouts.Add(1)
	a.log.InfoContext(ctx, "back-channel logout", "sid", c.SessionID, "sub", c.Subject)
	return nil
}

func claimsOf(r *http.Request) *verify.Claims {
	c, _ := verify.ClaimsFromContext(r.Context())
	return c
}

func (a *api) me(w http.ResponseWriter, r *http.Request) {
	c := claimsOf(r)
	roles := c.Roles
	if roles == nil {
		roles = []string{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"sub": c.Subject, "client_id": c.ClientID, "roles": roles, "scope": c.Scope})
}

// listProjects lists the projects of the token's organisation: those a
// platform token (no tenant claim) created for a platform token, those of
// its tenant for a tenant token. Another organisation's projects never
// show, whichever route lists them.
func (a *api) listProjects(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"items": a.projectsOf(claimsOf(r).Tenant)})
}

// listTenantProjects lists the projects created with tokens of the
// route's organisation (which the guard has matched to the token's).
func (a *api) listTenantProjects(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"items": a.projectsOf(claimsOf(r).Tenant)})
}

// projectsOf is the projects created with tokens of tenant ("" for
// platform tokens), never nil.
func (a *api) projectsOf(tenant string) []project {
	a.mu.Lock()
	defer a.mu.Unlock()
	items := []project{}
	for _, p := range a.projects {
		if p.Tenant == tenant {
			items = append(items, p)
		}
	}
	return items
}

// maxProjectName bounds a project name (characters).
const maxProjectName = 100

func (a *api) createProject(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Name string `json:"name"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil || dec.More() {
		writeError(w, http.StatusBadRequest, "invalid_request", `Send a JSON object {"name": "..."}.`)
		return
	}
	if n := utf8.RuneCountInString(in.Name); n == 0 || n > maxProjectName {
		writeError(w, http.StatusBadRequest, "invalid_request", "A project name has 1 to "+strconv.Itoa(maxProjectName)+" characters.")
		return
	}
	a.mu.Lock()
	p := project{ID: len(a.projects) + 1, Name: in.Name, Owner: claimsOf(r).Subject, CreatedAt: a.now().UTC(), Tenant: claimsOf(r).Tenant}
	a.projects = append(a.projects, p)
	a.mu.Unlock()
	writeJSON(w, http.StatusCreated, p)
}

func (a *api) metrics(w http.ResponseWriter, r *http.Request) {
	denied := map[string]int64{}
	a.denied.Range(func(k, v any) bool {
		denied[strconv.Itoa(k.(int))] = v.(*atomic.Int64).Load()
		return true
	})
	a.mu.Lock()
	projects := len(a.projects)
	a.mu.Unlock()
	kids := a.keys.KIDs()
	slices.Sort(kids)
	writeJSON(w, http.StatusOK, map[string]any{
		"requests":       a.requests.Load(),
		"logouts":        a.logouts.Load(),
		"denied":         denied,
		"projects":       projects,
		"jwks_fetches":   a.keys.Fetches(),
		"signing_keys":   kids,
		"uptime_seconds": int64(a.now().Sub(a.started).Seconds()),
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"error":"server_error","error_description":"Internal error."}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

func writeError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

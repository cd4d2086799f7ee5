package verify_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/portcullis-auth/portcullis/keys/verify"
)

// tenantFixture is a guard and tokens of organisations acme and globex, a
// token of none, and a handler that serves /tenants/{tenant}/projects
// behind RequireTenant.
type tenantFixture struct {
	f      *guardFixture
	tokens map[string]string
	h      http.Handler
}

func newTenantFixture(t *testing.T) *tenantFixture {
	f := newGuardFixture(t)
	base := accessClaims(f.now)
	tf := &tenantFixture{f: f, tokens: map[string]string{
		"acme":         f.signer.sign(t, with(base, map[string]any{"scope": "projects:read", "tenant": "acme"}), nil),
		"globex":       f.signer.sign(t, with(base, map[string]any{"scope": "projects:read", "tenant": "globex"}), nil),
		"none":         f.signer.sign(t, with(base, map[string]any{"scope": "projects:read"}), nil),
		"empty":        f.signer.sign(t, with(base, map[string]any{"scope": "projects:read", "tenant": ""}), nil),
		"ACME":         f.signer.sign(t, with(base, map[string]any{"scope": "projects:read", "tenant": "ACME"}), nil),
		"acme no read": f.signer.sign(t, with(base, map[string]any{"scope": "projects:write", "tenant": "acme"}), nil),
	}}
	g := f.guard(t, verify.GuardOptions{})
	mux := http.NewServeMux()
	mux.Handle("GET /tenants/{tenant}/projects", g.Require(verify.Scope("projects:read"),
		verify.Tenant(func(r *http.Request) string { return r.PathValue("tenant") }))(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })))
	tf.h = mux
	return tf
}

func (tf *tenantFixture) get(path, token string) int {
	r := httptest.NewRequest(http.MethodGet, "http://api.example"+path, nil)
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+tf.tokens[token])
	}
	w := httptest.NewRecorder()
	tf.h.ServeHTTP(w, r)
	return w.Code
}

func TestRequireTenant(t *testing.T) {
	tf := newTenantFixture(t)
	tests := []struct {
		name   string
		path   string
		token  string
		status int
	}{
		{"ok/same tenant", "/tenants/acme/projects", "acme", 204},
		{"ok/other tenant's own route", "/tenants/globex/projects", "globex", 204},
		{"fail/token A on route B", "/tenants/globex/projects", "acme", 403},
		{"fail/token B on route A", "/tenants/acme/projects", "globex", 403},
		{"fail/no tenant claim", "/tenants/acme/projects", "none", 403},
		{"fail/empty tenant claim", "/tenants/acme/projects", "empty", 403},
		{"fail/case differs", "/tenants/acme/projects", "ACME", 403},
		{"fail/case differs in the route", "/tenants/ACME/projects", "acme", 403},
		{"fail/escaped slash", "/tenants/acme%2Fx/projects", "acme", 403},
		{"fail/percent-encoded same value is not decoded twice", "/tenants/%2561cme/projects", "acme", 403},
		{"fail/scope checked too", "/tenants/acme/projects", "acme no read", 403},
		{"fail/no token", "/tenants/acme/projects", "", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tf.get(tt.path, tt.token); got != tt.status {
				t.Fatalf("GET %s with %q: %d, want %d", tt.path, tt.token, got, tt.status)
			}
		})
	}
}

func TestRequireTenantMiddleware(t *testing.T) {
	tf := newTenantFixture(t)
	for _, tt := range []struct {
		name   string
		from   func(*http.Request) string
		token  string
		status int
	}{
		{"ok/header value", func(r *http.Request) string { return r.Header.Get("X-Tenant") }, "acme", 204},
		{"fail/nil extractor", nil, "acme", 403},
		{"fail/empty value", func(*http.Request) string { return "" }, "acme", 403},
		{"fail/empty value and empty claim", func(*http.Request) string { return "" }, "empty", 403},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var denied *verify.Denial
			g := tf.f.guard(t, verify.GuardOptions{OnDenied: func(_ *http.Request, d *verify.Denial) { denied = d }})
			h := g.RequireTenant(tt.from)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
			r := httptest.NewRequest(http.MethodGet, "/x", nil)
			r.Header.Set("X-Tenant", "acme")
			r.Header.Set("Authorization", "Bearer "+tf.tokens[tt.token])
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d", w.Code, tt.status)
			}
			if tt.status == 403 && (denied == nil || !errors.Is(denied.Err, verify.ErrInsufficientScope)) {
				t.Fatalf("denial %+v, want an insufficient_scope 403", denied)
			}
		})
	}
}

// FuzzRequireTenant: for any route value, a token of acme passes the guard
// only when the value is exactly "acme", and a token without a tenant
// never does. Its seed corpus runs in make test.
func FuzzRequireTenant(f *testing.F) {
	for _, s := range []string{"acme", "ACME", "acme ", " acme", "acme\x00", "globex", "", "acm", "acmee", "a", "%61cme",
		"acme/", "../acme", "acme\u200b", "аcme", "acme%00"} {
		f.Add(s)
	}
	tf := newTenantFixture(&testing.T{})
	g := tf.f.guard(&testing.T{}, verify.GuardOptions{})
	f.Fuzz(func(t *testing.T, value string) {
		from := func(*http.Request) string { return value }
		for _, tok := range []string{"acme", "none", "empty"} {
			r := httptest.NewRequest(http.MethodGet, "/x", nil)
			r.Header.Set("Authorization", "Bearer "+tf.tokens[tok])
			_, d := g.Check(r, verify.Tenant(from))
			pass := d == nil
			want := tok == "acme" && value == "acme"
			if pass != want {
				t.Fatalf("token %s, route value %q: passed %v, want %v (denial %+v)", tok, value, pass, want, d)
			}
			if d != nil && d.Status != http.StatusForbidden {
				t.Fatalf("token %s, route value %q: status %d, want 403", tok, value, d.Status)
			}
		}
	})
}

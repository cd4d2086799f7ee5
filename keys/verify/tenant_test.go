package verify_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

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

// TestTenantTokenPrivilege: a token of an organisation (a tenant claim)
// meets Role, AnyRole, Scope and AnyScope only where the same guard
// verified its organisation for the request (a Tenant met, in any order or
// nesting that must hold with the privilege, or OwnTenant); elsewhere it
// is 403, so an organisation's admin is no platform admin. A platform
// token and an API key are judged as before.
func TestTenantTokenPrivilege(t *testing.T) {
	f := newGuardFixture(t)
	base := accessClaims(f.now)
	all := "projects:read projects:write users:read"
	mfa := map[string]any{"amr": []string{"pwd", "otp", "mfa"}, "acr": "mfa"}
	tokens := map[string]string{
		"platform admin": f.signer.sign(t, with(with(base, mfa), map[string]any{"scope": all, "roles": []string{"admin"}}), nil),
		"acme admin":     f.signer.sign(t, with(with(base, mfa), map[string]any{"scope": all, "roles": []string{"admin"}, "tenant": "acme"}), nil),
		"acme viewer":    f.signer.sign(t, with(base, map[string]any{"scope": "projects:read", "roles": []string{"viewer"}, "tenant": "acme"}), nil),
		"globex admin":   f.signer.sign(t, with(with(base, mfa), map[string]any{"scope": all, "roles": []string{"admin"}, "tenant": "globex"}), nil),
	}
	iss := newKeyIssuer(t)
	keys := map[string]string{"key": newAPIKey(t), "key naming acme": newAPIKey(t)}
	iss.issue(keys["key"], "usr_k", "projects:read", f.now.Add(time.Hour), nil)
	// An issuer never sends tenant for a key; were it to, it is ignored.
	iss.issue(keys["key naming acme"], "usr_k", "projects:read", f.now.Add(time.Hour), map[string]any{"tenant": "acme"})
	in := iss.introspector(t, verify.IntrospectorOptions{Issuer: testIssuer, Now: func() time.Time { return f.now }})
	g := f.guard(t, verify.GuardOptions{APIKeys: in})

	tenant := func(slug string) verify.Requirement {
		return verify.Tenant(func(*http.Request) string { return slug })
	}
	type reqs = []verify.Requirement
	const outside = "on the platform; a token of an organisation has its roles and permissions only within that organisation"
	tests := []struct {
		name   string
		reqs   reqs
		token  string
		status int    // 0: admitted
		desc   string // part of the denial's description
	}{
		{"ok/platform token, Role", reqs{verify.Role("admin")}, "platform admin", 0, ""},
		{"ok/platform token, AnyRole", reqs{verify.AnyRole("editor", "admin")}, "platform admin", 0, ""},
		{"ok/platform token, Scope", reqs{verify.Scope("users:read")}, "platform admin", 0, ""},
		{"ok/platform token, AnyScope", reqs{verify.AnyScope("nope", "users:read")}, "platform admin", 0, ""},
		{"ok/platform token, Role and MFA", reqs{verify.Role("admin"), verify.MFA()}, "platform admin", 0, ""},
		{"ok/platform token, OwnTenant", reqs{verify.Scope("users:read"), verify.OwnTenant()}, "platform admin", 0, ""},
		{"fail/platform token on a route of an organisation", reqs{verify.Role("admin"), tenant("acme")}, "platform admin", 403, "belongs to none"},

		{"fail/tenant token, Role without Tenant", reqs{verify.Role("admin")}, "acme admin", 403, outside},
		{"fail/tenant token, Role and MFA without Tenant (the demo's /admin/metrics)", reqs{verify.Role("admin"), verify.MFA()}, "acme admin", 403, outside},
		{"fail/tenant token, AnyRole without Tenant", reqs{verify.AnyRole("editor", "admin")}, "acme admin", 403, outside},
		{"fail/tenant token, Scope without Tenant", reqs{verify.Scope("users:read")}, "acme admin", 403, outside},
		{"fail/tenant token, AnyScope without Tenant", reqs{verify.AnyScope("nope", "users:read")}, "acme admin", 403, outside},
		{"fail/tenant token, Any of Role or Scope without Tenant", reqs{verify.Any(verify.Role("admin"), verify.Scope("users:read"))}, "acme admin", 403, ""},
		{"ok/tenant token, no privilege asked", nil, "acme admin", 0, ""},
		{"ok/tenant token, MFA alone", reqs{verify.MFA()}, "acme admin", 0, ""},

		{"ok/tenant token, Tenant then Role", reqs{tenant("acme"), verify.Role("admin")}, "acme admin", 0, ""},
		{"ok/tenant token, Role then Tenant", reqs{verify.Role("admin"), verify.MFA(), tenant("acme")}, "acme admin", 0, ""},
		{"ok/tenant token, Scope then Tenant", reqs{verify.Scope("projects:read"), tenant("acme")}, "acme viewer", 0, ""},
		{"ok/tenant token, AnyScope and AnyRole then Tenant", reqs{verify.AnyScope("nope", "projects:read"), verify.AnyRole("viewer"), tenant("acme")}, "acme viewer", 0, ""},
		{"ok/tenant token, Any of Role or Scope beside Tenant", reqs{verify.Any(verify.Role("admin"), verify.Scope("users:read")), tenant("acme")}, "acme admin", 0, ""},
		{"ok/tenant token, Role inside All with Tenant", reqs{verify.All(verify.Role("admin"), tenant("acme"))}, "acme admin", 0, ""},
		{"ok/tenant token, Tenant in a nested All beside Role", reqs{verify.All(tenant("acme"), verify.Scope("projects:read")), verify.Role("admin")}, "acme admin", 0, ""},
		{"ok/tenant token, Any of Tenants beside Role", reqs{verify.Role("admin"), verify.Any(tenant("globex"), tenant("acme"))}, "acme admin", 0, ""},
		{"ok/tenant token, OwnTenant", reqs{verify.Scope("projects:read"), verify.OwnTenant()}, "acme viewer", 0, ""},
		{"ok/tenant token, OwnTenant after Role", reqs{verify.Role("admin"), verify.OwnTenant()}, "acme admin", 0, ""},
		{"fail/tenant token, Tenant met but the role not held", reqs{verify.Role("admin"), tenant("acme")}, "acme viewer", 403, "the role admin"},
		{"fail/tenant token, Tenant met but the permission not held", reqs{tenant("acme"), verify.Scope("users:read")}, "acme viewer", 403, "the permission users:read"},

		{"fail/tenant mismatch, Role first", reqs{verify.Role("admin"), tenant("acme")}, "globex admin", 403, "the organisation it names"},
		{"fail/tenant mismatch, Scope", reqs{tenant("acme"), verify.Scope("projects:read")}, "globex admin", 403, "the organisation it names"},
		{"fail/tenant mismatch, Any of Tenants", reqs{verify.Role("admin"), verify.Any(tenant("acme"), tenant("initech"))}, "globex admin", 403, ""},
		{"fail/a Tenant as an alternative verifies nothing", reqs{verify.Any(tenant("acme"), verify.Role("admin"))}, "globex admin", 403, ""},
		{"fail/a branch's verified tenant stays in its branch", reqs{verify.Any(verify.All(tenant("globex"), verify.Scope("nope")), verify.Role("admin"))}, "globex admin", 403, ""},
		{"ok/a branch's verified tenant serves its branch", reqs{verify.Any(verify.All(tenant("globex"), verify.Role("admin")), verify.Role("super_admin"))}, "globex admin", 0, ""},

		{"ok/API key, Scope", reqs{verify.Scope("projects:read")}, "key", 0, ""},
		{"ok/API key, Scope and OwnTenant", reqs{verify.Scope("projects:read"), verify.OwnTenant()}, "key", 0, ""},
		{"ok/API key naming a tenant, Scope", reqs{verify.Scope("projects:read")}, "key naming acme", 0, ""},
		{"fail/API key, Role", reqs{verify.Role("viewer")}, "key", 403, "an API key carries no roles"},
		{"fail/API key, Tenant", reqs{verify.Scope("projects:read"), tenant("acme")}, "key naming acme", 403, "belongs to none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/x", nil)
			if k, ok := keys[tt.token]; ok {
				r.Header.Set("X-API-Key", k)
			} else {
				r.Header.Set("Authorization", "Bearer "+tokens[tt.token])
			}
			claims, d := g.Check(r, tt.reqs...)
			switch {
			case tt.status == 0 && d != nil:
				t.Fatalf("refused: %d %s (%v)", d.Status, d.Description, d.Err)
			case tt.status == 0 && claims == nil:
				t.Fatal("admitted without claims")
			case tt.status != 0 && d == nil:
				t.Fatalf("admitted, want %d", tt.status)
			case tt.status != 0 && (d.Status != tt.status || !errors.Is(d, verify.ErrInsufficientScope) || !strings.Contains(d.Description, tt.desc)):
				t.Fatalf("denial %d %q (%v), want %d insufficient_scope with %q", d.Status, d.Description, d.Err, tt.status, tt.desc)
			}
		})
	}
}

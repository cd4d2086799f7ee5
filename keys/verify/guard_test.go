package verify_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/portcullis-auth/portcullis/keys/verify"
	"github.com/portcullis-auth/portcullis/policy"
)

const demoPolicy = "../../docs/examples/demo-policy.yaml"

// guardFixture is a guard with the demo policy's role levels and tokens of each role.
type guardFixture struct {
	signer *testSigner
	levels verify.RoleLevels
	tokens map[string]string
	now    time.Time
}

func newGuardFixture(t *testing.T) *guardFixture {
	t.Helper()
	levels, err := verify.LoadRoleLevels(demoPolicy)
	if err != nil {
		t.Fatal(err)
	}
	f := &guardFixture{signer: newSigner(t, jose.ES256, "ec-1"), levels: levels, now: time.Now()}
	base := accessClaims(f.now)
	f.tokens = map[string]string{
		"viewer":      f.signer.sign(t, with(base, map[string]any{"scope": "projects:read", "roles": []string{"viewer"}}), nil),
		"editor":      f.signer.sign(t, with(base, map[string]any{"scope": "projects:read projects:write", "roles": []string{"editor"}}), nil),
		"admin":       f.signer.sign(t, with(base, map[string]any{"scope": "projects:read projects:write users:read", "roles": []string{"admin"}}), nil),
		"super_admin": f.signer.sign(t, with(base, map[string]any{"scope": "projects:read projects:write users:read", "roles": []string{"super_admin"}}), nil),
		"admin mfa": f.signer.sign(t, with(base, map[string]any{"scope": "projects:read projects:write users:read", "roles": []string{"admin"},
			"amr": []string{"pwd", "otp", "mfa"}, "acr": "mfa"}), nil),
		"admin pwd": f.signer.sign(t, with(base, map[string]any{"scope": "projects:read projects:write users:read", "roles": []string{"admin"},
			"amr": []string{"pwd"}, "acr": "pwd"}), nil),
		"acr without amr": f.signer.sign(t, with(base, map[string]any{"amr": []string{"pwd"}, "acr": "mfa"}), nil),
		"amr without acr": f.signer.sign(t, with(base, map[string]any{"amr": []string{"pwd", "mfa"}, "acr": "pwd"}), nil),
		"service":         f.signer.sign(t, with(base, map[string]any{"sub": "svc", "client_id": "svc", "scope": "projects:read", "roles": nil, "sid": nil}), nil),
		"expired":         f.signer.sign(t, with(base, map[string]any{"exp": f.now.Add(-time.Hour).Unix()}), nil),
		"id token":        f.signer.sign(t, base, map[string]any{"typ": "JWT"}),
		"other aud":       f.signer.sign(t, with(base, map[string]any{"aud": "billing"}), nil),
		"forged kid":      newSigner(t, jose.ES256, "forged").sign(t, base, nil),
	}
	// The viewer's header and signature around a payload that claims super_admin.
	viewer := strings.Split(f.tokens["viewer"], ".")
	forged := strings.Split(f.signer.sign(t, with(base, map[string]any{"roles": []string{"super_admin"}}), nil), ".")
	f.tokens["tampered"] = viewer[0] + "." + forged[1] + "." + viewer[2]
	return f
}

func (f *guardFixture) guard(t *testing.T, opts verify.GuardOptions) *verify.Guard {
	t.Helper()
	if opts.Roles == nil {
		opts.Roles = f.levels
	}
	return verify.NewGuard(mustVerifier(t, staticKeys(t, f.signer), func() time.Time { return f.now }), opts)
}

// serve runs one request through mw and returns the recorder and the
// claims the handler saw (nil if it was not reached).
func serve(mw func(http.Handler) http.Handler, headers ...string) (*httptest.ResponseRecorder, *verify.Claims) {
	var seen *verify.Claims
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ok := verify.ClaimsFromContext(r.Context())
		if !ok {
			panic("no claims in the context of a guarded handler")
		}
		seen = c
		w.WriteHeader(http.StatusNoContent)
	}))
	r := httptest.NewRequest(http.MethodGet, "/x", nil)
	for _, v := range headers {
		r.Header.Add("Authorization", v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w, seen
}

func TestGuard(t *testing.T) {
	f := newGuardFixture(t)
	var denials []*verify.Denial
	g := f.guard(t, verify.GuardOptions{OnDenied: func(_ *http.Request, d *verify.Denial) { denials = append(denials, d) }})
	bearer := func(name string) string { return "Bearer " + f.tokens[name] }
	const (
		invalid = `Bearer error="invalid_token", error_description=`
		// RFC 9470 §3.
		mfaChallenge = `Bearer error="insufficient_user_authentication", error_description="This request needs a sign-in with a second factor (multi-factor authentication).", acr_values="mfa"`
	)
	tests := []struct {
		name      string
		mw        func(http.Handler) http.Handler
		headers   []string
		status    int
		challenge string // exact WWW-Authenticate
		code      string
		cause     error
	}{
		{"ok/authenticate", g.Authenticate, []string{bearer("viewer")}, 204, "", "", nil},
		{"ok/scheme is case-insensitive", g.Authenticate, []string{"bearer " + f.tokens["viewer"]}, 204, "", "", nil},
		{"ok/scope", g.RequireScope("projects:read"), []string{bearer("viewer")}, 204, "", "", nil},
		{"ok/every scope", g.RequireScope("projects:read", "projects:write"), []string{bearer("editor")}, 204, "", "", nil},
		{"ok/any scope", g.RequireAnyScope("projects:write", "projects:read"), []string{bearer("viewer")}, 204, "", "", nil},
		{"ok/role exactly", g.RequireRole("editor"), []string{bearer("editor")}, 204, "", "", nil},
		{"ok/role higher", g.RequireRole("admin"), []string{bearer("super_admin")}, 204, "", "", nil},
		{"ok/role much higher", g.RequireRole("viewer"), []string{bearer("admin")}, 204, "", "", nil},
		{"ok/client_credentials scope", g.RequireScope("projects:read"), []string{bearer("service")}, 204, "", "", nil},

		{"ok/mfa", g.RequireMFA(), []string{bearer("admin mfa")}, 204, "", "", nil},
		{"ok/mfa and role", g.Require(verify.Role("admin"), verify.MFA()), []string{bearer("admin mfa")}, 204, "", "", nil},

		{"fail/mfa: password only", g.RequireMFA(), []string{bearer("admin pwd")}, 401, mfaChallenge, "insufficient_user_authentication", verify.ErrInsufficientUserAuthentication},
		{"fail/mfa: no amr or acr", g.RequireMFA(), []string{bearer("admin")}, 401, mfaChallenge, "insufficient_user_authentication", verify.ErrInsufficientUserAuthentication},
		{"fail/mfa: acr mfa without amr mfa", g.RequireMFA(), []string{bearer("acr without amr")}, 401, mfaChallenge, "insufficient_user_authentication", verify.ErrInsufficientUserAuthentication},
		{"fail/mfa: amr mfa with acr pwd", g.RequireMFA(), []string{bearer("amr without acr")}, 401, mfaChallenge, "insufficient_user_authentication", verify.ErrInsufficientUserAuthentication},
		{"fail/mfa: client_credentials", g.RequireMFA(), []string{bearer("service")}, 401, mfaChallenge, "insufficient_user_authentication", verify.ErrInsufficientUserAuthentication},
		{"fail/mfa: invalid token first", g.RequireMFA(), []string{bearer("expired")}, 401, invalid + `"The access token expired."`, "invalid_token", verify.ErrExpired},
		{"fail/mfa: role checked first", g.Require(verify.Role("admin"), verify.MFA()), []string{bearer("editor")}, 403,
			`Bearer error="insufficient_scope", error_description="This request needs the role admin or higher."`, "insufficient_scope", verify.ErrInsufficientScope},
		{"fail/mfa after the role", g.Require(verify.Role("admin"), verify.MFA()), []string{bearer("admin pwd")}, 401, mfaChallenge, "insufficient_user_authentication", verify.ErrInsufficientUserAuthentication},

		{"fail/no Authorization", g.Authenticate, nil, 401, "Bearer", "unauthorized", nil},
		{"fail/Basic instead of Bearer", g.Authenticate, []string{"Basic dXNlcjpwYXNz"}, 401, "Bearer", "unauthorized", nil},
		{"fail/two Authorization headers", g.Authenticate, []string{bearer("viewer"), bearer("viewer")}, 400,
			`Bearer error="invalid_request", error_description="Send one Authorization header."`, "invalid_request", nil},
		{"fail/Bearer without token", g.Authenticate, []string{"Bearer "}, 400,
			`Bearer error="invalid_request", error_description="The Bearer authorization has no token."`, "invalid_request", nil},
		{"fail/garbage token", g.Authenticate, []string{"Bearer abc"}, 401, invalid + `"The access token is malformed."`, "invalid_token", verify.ErrMalformed},
		{"fail/expired", g.Authenticate, []string{bearer("expired")}, 401, invalid + `"The access token expired."`, "invalid_token", verify.ErrExpired},
		{"fail/tampered", g.Authenticate, []string{bearer("tampered")}, 401, invalid + `"The access token's signature is invalid."`, "invalid_token", verify.ErrBadSignature},
		{"fail/id token", g.Authenticate, []string{bearer("id token")}, 401, invalid + `"The token is not an access token."`, "invalid_token", verify.ErrWrongType},
		{"fail/other audience", g.Authenticate, []string{bearer("other aud")}, 401, invalid + `"The access token is not meant for this service."`, "invalid_token", verify.ErrWrongAudience},
		{"fail/forged kid", g.Authenticate, []string{bearer("forged kid")}, 401, invalid + `"The access token was signed by an unknown key."`, "invalid_token", verify.ErrUnknownKey},
		{"fail/invalid token before scope", g.RequireScope("projects:write"), []string{bearer("expired")}, 401, invalid + `"The access token expired."`, "invalid_token", verify.ErrExpired},
		{"fail/missing scope", g.RequireScope("projects:write"), []string{bearer("viewer")}, 403,
			`Bearer error="insufficient_scope", scope="projects:write", error_description="This request needs the permission projects:write."`, "insufficient_scope", verify.ErrInsufficientScope},
		{"fail/one of every scope missing", g.RequireScope("projects:read", "projects:write"), []string{bearer("viewer")}, 403,
			`Bearer error="insufficient_scope", scope="projects:read projects:write", error_description="This request needs the permissions projects:read, projects:write."`, "insufficient_scope", verify.ErrInsufficientScope},
		{"fail/none of any scope", g.RequireAnyScope("users:read", "users:write"), []string{bearer("editor")}, 403,
			`Bearer error="insufficient_scope", scope="users:read users:write", error_description="This request needs one of the permissions users:read, users:write."`, "insufficient_scope", verify.ErrInsufficientScope},
		{"fail/role lower", g.RequireRole("admin"), []string{bearer("editor")}, 403,
			`Bearer error="insufficient_scope", error_description="This request needs the role admin or higher."`, "insufficient_scope", verify.ErrInsufficientScope},
		{"fail/role of a client_credentials token", g.RequireRole("viewer"), []string{bearer("service")}, 403,
			`Bearer error="insufficient_scope", error_description="This request needs the role viewer or higher."`, "insufficient_scope", verify.ErrInsufficientScope},
		{"fail/role unknown to the hierarchy matches only exactly", g.RequireRole("auditor"), []string{bearer("super_admin")}, 403,
			`Bearer error="insufficient_scope", error_description="This request needs the role auditor."`, "insufficient_scope", verify.ErrInsufficientScope},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			denials = nil
			w, claims := serve(tc.mw, tc.headers...)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d; body %s", w.Code, tc.status, w.Body)
			}
			if got := w.Header().Get("WWW-Authenticate"); got != tc.challenge {
				t.Fatalf("WWW-Authenticate\n got %s\nwant %s", got, tc.challenge)
			}
			if tc.status == 204 {
				if claims == nil || len(denials) != 0 {
					t.Fatalf("claims %v, denials %v", claims, denials)
				}
				return
			}
			if claims != nil {
				t.Fatal("the handler ran for a refused request")
			}
			var body map[string]string
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body["error"] != tc.code || body["error_description"] == "" || len(body) != 2 {
				t.Fatalf("body %s (%v)", w.Body, err)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
			if len(denials) != 1 || denials[0].Status != tc.status || (tc.cause != nil && !errors.Is(denials[0], tc.cause)) {
				t.Fatalf("OnDenied saw %v", denials)
			}
			for _, tok := range f.tokens {
				if strings.Contains(denials[0].Error(), tok) || strings.Contains(w.Body.String(), tok) {
					t.Fatal("a token leaked into the denial")
				}
			}
		})
	}
}

func TestGuardCombinations(t *testing.T) {
	f := newGuardFixture(t)
	g := f.guard(t, verify.GuardOptions{})
	writeOrAdmin := verify.Any(verify.Role("admin"), verify.Scope("projects:write"))
	tests := []struct {
		name   string
		reqs   []verify.Requirement
		token  string
		status int
		scope  string // the scope parameter of a 403
	}{
		{"ok/any: scope", []verify.Requirement{writeOrAdmin}, "editor", 204, ""},
		{"ok/any: role", []verify.Requirement{writeOrAdmin}, "super_admin", 204, ""},
		{"fail/any: neither", []verify.Requirement{writeOrAdmin}, "viewer", 403, "projects:write"},
		{"ok/all", []verify.Requirement{verify.Role("editor"), verify.Scope("projects:read")}, "admin", 204, ""},
		{"fail/all: role missing", []verify.Requirement{verify.Scope("projects:read"), verify.Role("editor")}, "viewer", 403, ""},
		{"fail/all: scope missing", []verify.Requirement{verify.Role("viewer"), verify.Scope("projects:write")}, "viewer", 403, "projects:write"},
		{"ok/nested", []verify.Requirement{verify.All(verify.Scope("projects:read"), verify.Any(verify.AnyRole("editor", "admin"), verify.AnyScope("users:read")))}, "editor", 204, ""},
		{"fail/nested", []verify.Requirement{verify.All(verify.Scope("projects:read"), verify.Any(verify.AnyRole("editor", "admin"), verify.AnyScope("users:read", "users:write")))}, "viewer", 403, "users:read users:write"},
		{"ok/any role", []verify.Requirement{verify.AnyRole("auditor", "editor")}, "admin", 204, ""},
		{"fail/any with nothing", []verify.Requirement{verify.Any()}, "super_admin", 403, ""},
		{"ok/all with nothing", []verify.Requirement{verify.All()}, "viewer", 204, ""},
		{"ok/any: mfa", []verify.Requirement{verify.Any(verify.MFA(), verify.Role("super_admin"))}, "admin mfa", 204, ""},
		{"ok/any: role without mfa", []verify.Requirement{verify.Any(verify.MFA(), verify.Role("admin"))}, "admin pwd", 204, ""},
		{"fail/any: neither mfa nor scope", []verify.Requirement{verify.Any(verify.MFA(), verify.Scope("users:write"))}, "admin pwd", 403, "users:write"},
		{"fail/any: mfa only", []verify.Requirement{verify.Any(verify.MFA())}, "admin pwd", 401, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, _ := serve(g.Require(tc.reqs...), "Bearer "+f.tokens[tc.token])
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d; %s", w.Code, tc.status, w.Body)
			}
			if tc.status == 403 {
				ch := w.Header().Get("WWW-Authenticate")
				if !strings.HasPrefix(ch, `Bearer error="insufficient_scope"`) {
					t.Fatalf("challenge %s", ch)
				}
				if got := scopeParam(ch); got != tc.scope {
					t.Fatalf("scope %q, want %q (%s)", got, tc.scope, ch)
				}
			}
		})
	}
}

func scopeParam(challenge string) string {
	_, rest, ok := strings.Cut(challenge, `scope="`)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

func TestGuardRealmAndRolesWithoutHierarchy(t *testing.T) {
	f := newGuardFixture(t)
	g := verify.NewGuard(mustVerifier(t, staticKeys(t, f.signer), func() time.Time { return f.now }), verify.GuardOptions{Realm: "projects"})
	w, _ := serve(g.Authenticate)
	if got := w.Header().Get("WWW-Authenticate"); got != `Bearer realm="projects"` {
		t.Fatalf("challenge %q", got)
	}
	w, _ = serve(g.RequireRole("admin"), "Bearer "+f.tokens["super_admin"])
	if w.Code != 403 || w.Header().Get("WWW-Authenticate") != `Bearer realm="projects", error="insufficient_scope", error_description="This request needs the role admin."` {
		t.Fatalf("without levels a higher role must not count: %d %q", w.Code, w.Header().Get("WWW-Authenticate"))
	}
	if w, _ = serve(g.RequireRole("admin"), "Bearer "+f.tokens["admin"]); w.Code != 204 {
		t.Fatalf("exact role: %d", w.Code)
	}
}

// TestGuardKeySetUnavailable: when no key set can be had the guard answers
// 503 with Retry-After, not 401: the token is not known to be bad.
func TestGuardKeySetUnavailable(t *testing.T) {
	s := newSigner(t, jose.ES256, "ec-1")
	srv := newJWKSServer(t, "public, max-age=300", s)
	srv.stop()
	ks := srv.remoteKeySet(t, verify.RemoteKeySetOptions{})
	g := verify.NewGuard(mustVerifier(t, ks, nil), verify.GuardOptions{})
	w, _ := serve(g.Authenticate, "Bearer "+s.sign(t, accessClaims(time.Now()), nil))
	if w.Code != 503 || w.Header().Get("Retry-After") == "" || w.Header().Get("WWW-Authenticate") != "" || !strings.Contains(w.Body.String(), `"temporarily_unavailable"`) {
		t.Fatalf("%d %v %s", w.Code, w.Header(), w.Body)
	}
}

// TestGuardOnlineWithoutIntrospector fails closed.
func TestGuardOnlineWithoutIntrospector(t *testing.T) {
	f := newGuardFixture(t)
	g := f.guard(t, verify.GuardOptions{})
	if w, _ := serve(g.Require(verify.Online()), "Bearer "+f.tokens["admin"]); w.Code != 503 {
		t.Fatalf("Online without an introspector: %d", w.Code)
	}
}

func TestGuardCheck(t *testing.T) {
	f := newGuardFixture(t)
	g := f.guard(t, verify.GuardOptions{})
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Authorization", "Bearer "+f.tokens["editor"])
	c, d := g.Check(r, verify.Scope("projects:write"))
	if d != nil || c == nil || c.Subject != "usr_1" {
		t.Fatalf("Check: %v %v", c, d)
	}
	c, d = g.Check(r, verify.Role("admin"))
	if c != nil || d == nil || d.Status != 403 || !errors.Is(d, verify.ErrInsufficientScope) {
		t.Fatalf("Check: %v %v", c, d)
	}
	if _, ok := verify.ClaimsFromContext(context.Background()); ok {
		t.Fatal("claims in an empty context")
	}
	ctx := verify.ContextWithClaims(context.Background(), &verify.Claims{Subject: "s"})
	if c, ok := verify.ClaimsFromContext(ctx); !ok || c.Subject != "s" {
		t.Fatal("ContextWithClaims")
	}
}

func TestRoleLevels(t *testing.T) {
	levels, err := verify.LoadRoleLevels(demoPolicy)
	if err != nil {
		t.Fatal(err)
	}
	// The same levels as Portcullis's own policy parser reads.
	p, err := policy.Load(demoPolicy)
	if err != nil {
		t.Fatal(err)
	}
	if len(levels) != len(p.RoleNames()) {
		t.Fatalf("levels %v, policy roles %v", levels, p.RoleNames())
	}
	for _, name := range p.RoleNames() {
		want, _ := p.Level(name)
		if levels[name] != want {
			t.Fatalf("%s: level %d, policy says %d", name, levels[name], want)
		}
	}
	tests := []struct {
		name string
		held []string
		role string
		want bool
	}{
		{"ok/exact", []string{"editor"}, "editor", true},
		{"ok/higher", []string{"admin"}, "editor", true},
		{"ok/one of several", []string{"viewer", "super_admin"}, "admin", true},
		{"ok/unknown role held exactly", []string{"auditor"}, "auditor", true},
		{"fail/lower", []string{"editor"}, "admin", false},
		{"fail/none", nil, "viewer", false},
		{"fail/unknown required role", []string{"super_admin"}, "auditor", false},
		{"fail/unknown held role", []string{"auditor"}, "viewer", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := levels.AtLeast(tc.held, tc.role); got != tc.want {
				t.Fatalf("AtLeast(%v, %s) = %v", tc.held, tc.role, got)
			}
		})
	}
	var none verify.RoleLevels
	if none.AtLeast([]string{"super_admin"}, "admin") || !none.AtLeast([]string{"admin"}, "admin") {
		t.Fatal("nil RoleLevels must match exactly")
	}
}

func TestParseRoleLevels(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want verify.RoleLevels
	}{
		{"ok/levels only", "roles:\n  a: {level: 2}\n  b: {level: 0, permissions: [x:y]}\nother: 1\n", verify.RoleLevels{"a": 2, "b": 0}},
		{"fail/no roles", "version: 1\n", nil},
		{"fail/missing level", "roles:\n  a: {permissions: []}\n", nil},
		{"fail/negative level", "roles:\n  a: {level: -1}\n", nil},
		{"fail/not YAML", "roles: [\n", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := verify.ParseRoleLevels([]byte(tc.yaml))
			if (err == nil) != (tc.want != nil) {
				t.Fatalf("err %v", err)
			}
			if tc.want != nil && (len(got) != len(tc.want) || !slices.Equal(sortedKeys(got), sortedKeys(tc.want))) {
				t.Fatalf("got %v", got)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Fatalf("%s: %d", k, got[k])
				}
			}
		})
	}
	if _, err := verify.LoadRoleLevels("no/such/file.yaml"); err == nil {
		t.Fatal("missing file accepted")
	}
}

func sortedKeys(m verify.RoleLevels) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

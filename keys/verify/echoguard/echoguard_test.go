package echoguard_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/labstack/echo/v4"

	"github.com/portcullis-auth/portcullis/keys/verify"
	"github.com/portcullis-auth/portcullis/keys/verify/echoguard"
)

func sign(t *testing.T, key *ecdsa.PrivateKey, kid string, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key},
		(&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestEchoGuard(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	keys, err := verify.NewStaticKeySet(jwks)
	if err != nil {
		t.Fatal(err)
	}
	v, err := verify.New(keys, verify.Config{Issuer: "https://issuer.example", Audience: "api"})
	if err != nil {
		t.Fatal(err)
	}
	g := echoguard.New(verify.NewGuard(v, verify.GuardOptions{Roles: verify.RoleLevels{"admin": 80, "editor": 20, "viewer": 10}}))

	e := echo.New()
	// An application error handler must not get to rewrite the guard's answers.
	e.HTTPErrorHandler = func(err error, c echo.Context) { _ = c.String(http.StatusTeapot, "rewritten") }
	me := func(c echo.Context) error {
		claims := echoguard.Claims(c)
		fromCtx, ok := verify.ClaimsFromContext(c.Request().Context())
		if claims == nil || !ok || fromCtx != claims {
			return c.String(http.StatusInternalServerError, "claims missing")
		}
		return c.JSON(http.StatusOK, map[string]any{"sub": claims.Subject})
	}
	e.GET("/me", me, g.Authenticate())
	e.GET("/projects", me, g.RequireScope("projects:read"))
	e.GET("/search", me, g.RequireAnyScope("projects:read", "users:read"))
	e.POST("/projects", me, g.RequireScope("projects:write"))
	e.GET("/admin", me, g.RequireRole("admin"))
	e.GET("/either", me, g.Require(verify.Any(verify.Role("admin"), verify.Scope("projects:write"))))
	e.GET("/tenants/:tenant/projects", me, g.RequireTenant("tenant", verify.Scope("projects:read")))
	e.GET("/tenants/:tenant/admin", me, g.RequireTenant("tenant", verify.Role("admin")))

	now := time.Now()
	claims := func(scope string, roles ...string) map[string]any {
		return map[string]any{"iss": "https://issuer.example", "sub": "usr_1", "aud": "api", "exp": now.Add(time.Minute).Unix(),
			"iat": now.Unix(), "jti": "j", "client_id": "web", "scope": scope, "roles": roles}
	}
	viewer := sign(t, key, "k1", claims("projects:read", "viewer"))
	admin := sign(t, key, "k1", claims("projects:read projects:write users:read", "admin"))
	expired := sign(t, key, "k1", func() map[string]any { c := claims("projects:read"); c["exp"] = now.Add(-time.Hour).Unix(); return c }())
	ofTenant := func(tenant, scope string) string {
		c := claims(scope, "viewer")
		c["tenant"] = tenant
		return sign(t, key, "k1", c)
	}
	acme, acmeWrite := ofTenant("acme", "projects:read"), ofTenant("acme", "projects:write")
	acmeAdmin := func() string {
		c := claims("projects:read projects:write users:read", "admin")
		c["tenant"] = "acme"
		return sign(t, key, "k1", c)
	}()
	const tenantRefused = `Bearer error="insufficient_scope", error_description="This request needs a token of the organisation it names."`

	tests := []struct {
		name, method, path, token string
		status                    int
		challenge                 string
	}{
		{"ok/me", "GET", "/me", viewer, 200, ""},
		{"ok/scope", "GET", "/projects", viewer, 200, ""},
		{"ok/any scope", "GET", "/search", viewer, 200, ""},
		{"ok/role", "GET", "/admin", admin, 200, ""},
		{"ok/any of role or scope", "GET", "/either", admin, 200, ""},
		{"fail/no token", "GET", "/me", "", 401, "Bearer"},
		{"fail/expired", "GET", "/me", expired, 401, `Bearer error="invalid_token", error_description="The access token expired."`},
		{"fail/scope", "POST", "/projects", viewer, 403, `Bearer error="insufficient_scope", scope="projects:write", error_description="This request needs the permission projects:write."`},
		{"fail/role", "GET", "/admin", viewer, 403, `Bearer error="insufficient_scope", error_description="This request needs the role admin or higher."`},
		{"ok/tenant", "GET", "/tenants/acme/projects", acme, 200, ""},
		{"fail/tenant A on route B", "GET", "/tenants/globex/projects", acme, 403, tenantRefused},
		{"fail/tenant missing", "GET", "/tenants/acme/projects", viewer, 403,
			`Bearer error="insufficient_scope", error_description="This request needs a token of the organisation it names; this token belongs to none."`},
		{"fail/tenant scope checked first", "GET", "/tenants/acme/projects", acmeWrite, 403,
			`Bearer error="insufficient_scope", scope="projects:read", error_description="This request needs the permission projects:read."`},
		{"fail/an organisation's admin on a platform role route", "GET", "/admin", acmeAdmin, 403,
			`Bearer error="insufficient_scope", error_description="This request needs the role admin or higher on the platform; a token of an organisation has its roles and permissions only within that organisation."`},
		{"fail/an organisation's token on a platform scope route", "GET", "/projects", acme, 403,
			`Bearer error="insufficient_scope", error_description="This request needs the permission projects:read on the platform; a token of an organisation has its roles and permissions only within that organisation."`},
		{"ok/an organisation's admin on its role route", "GET", "/tenants/acme/admin", acmeAdmin, 200, ""},
		{"fail/an organisation's admin on another's role route", "GET", "/tenants/globex/admin", acmeAdmin, 403, tenantRefused},
		{"fail/neither role nor scope", "GET", "/either", viewer, 403, `Bearer error="insufficient_scope", scope="projects:write", error_description="This request needs either the role admin or higher, or the permission projects:write."`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.path, nil)
			if tc.token != "" {
				r.Header.Set("Authorization", "Bearer "+tc.token)
			}
			w := httptest.NewRecorder()
			e.ServeHTTP(w, r)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if got := w.Header().Get("WWW-Authenticate"); got != tc.challenge {
				t.Fatalf("WWW-Authenticate\n got %s\nwant %s", got, tc.challenge)
			}
			var body map[string]string
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %s: %v", w.Body, err)
			}
			if tc.status == 200 && body["sub"] != "usr_1" || tc.status != 200 && (body["error"] == "" || body["error_description"] == "") {
				t.Fatalf("body %s", w.Body)
			}
			if strings.Contains(w.Body.String(), "rewritten") {
				t.Fatal("the error handler rewrote the answer")
			}
		})
	}
}

// TestEchoGuardAPIKeys: through the Echo adapter, an API key in X-API-Key
// meets a scope requirement and is refused by a role one, and a malformed
// key is refused without asking the issuer.
func TestEchoGuardAPIKeys(t *testing.T) {
	const key = "pcak_0123456789ABCDEFGHIJKLMNOPQRSTUV3bzNgN"
	var asked atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		w.Header().Set("Content-Type", "application/json")
		if r.FormValue("token") != key {
			_, _ = w.Write([]byte(`{"active":false}`))
			return
		}
		_, _ = w.Write([]byte(`{"active":true,"token_type":"api_key","sub":"usr_1","scope":"projects:read","exp":4102444800,"client_id":"apikey:ak_1"}`))
	}))
	t.Cleanup(srv.Close)
	in, err := verify.NewIntrospector(verify.IntrospectorOptions{Endpoint: srv.URL, ClientID: "rs", ClientSecret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	sk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: sk.Public(), KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	keys, err := verify.NewStaticKeySet(jwks)
	if err != nil {
		t.Fatal(err)
	}
	v, err := verify.New(keys, verify.Config{Issuer: "https://issuer.example", Audience: "api"})
	if err != nil {
		t.Fatal(err)
	}
	g := echoguard.New(verify.NewGuard(v, verify.GuardOptions{APIKeys: in}))
	e := echo.New()
	me := func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]any{"sub": echoguard.Claims(c).Subject, "key": echoguard.Claims(c).APIKeyID})
	}
	e.GET("/projects", me, g.RequireScope("projects:read"))
	e.GET("/admin", me, g.RequireRole("admin"))
	for _, tc := range []struct {
		name, path, key string
		status          int
		asked           int64
	}{
		{"ok/scope", "/projects", key, 200, 1},
		{"fail/role", "/admin", key, 403, 1},
		{"fail/malformed", "/projects", key[:42] + "x", 401, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, tc.path, nil)
			r.Header.Set("X-API-Key", tc.key)
			w := httptest.NewRecorder()
			e.ServeHTTP(w, r)
			if w.Code != tc.status || asked.Load() != tc.asked {
				t.Fatalf("%d %s, %d introspection requests", w.Code, w.Body, asked.Load())
			}
			if tc.status == 200 && !strings.Contains(w.Body.String(), `"key":"ak_1"`) {
				t.Fatalf("body %s", w.Body)
			}
		})
	}
}

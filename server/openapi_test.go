package server_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"gopkg.in/yaml.v3"

	"github.com/portcullis-auth/portcullis/server"
	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// TestOpenAPIDocsCopyIsIdentical: server/openapi.yaml (embedded and served)
// is the one source; docs/openapi.yaml must be a byte-for-byte copy.
func TestOpenAPIDocsCopyIsIdentical(t *testing.T) {
	docs, err := os.ReadFile("../docs/openapi.yaml")
	if err != nil {
		t.Fatalf("read docs/openapi.yaml: %v", err)
	}
	if !bytes.Equal(docs, server.OpenAPISpec()) {
		t.Fatal("docs/openapi.yaml differs from server/openapi.yaml (the source): run `cp server/openapi.yaml docs/openapi.yaml`")
	}
}

// TestOpenAPIDocumentIsValid: the description loads as OpenAPI 3.1 and
// validates (refs resolve, examples match their schemas).
func TestOpenAPIDocumentIsValid(t *testing.T) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(server.OpenAPISpec())
	if err != nil {
		t.Fatal(err)
	}
	if !doc.IsOpenAPI31OrLater() || doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi: %q, want 3.1.0", doc.OpenAPI)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"Error", "TokenResponse", "User", "Invite", "Client", "Key", "AuditEvent", "Role"} {
		if doc.Components.Schemas[name] == nil {
			t.Errorf("reusable schema %s is missing", name)
		}
	}
	for name, typ := range map[string]string{"clientBasic": "basic", "bearer": "bearer"} {
		s := doc.Components.SecuritySchemes[name]
		if s == nil || s.Value.Type != "http" || s.Value.Scheme != typ {
			t.Errorf("security scheme %s: want http %s", name, typ)
		}
	}
}

var echoParam = regexp.MustCompile(`:([A-Za-z_]+)`)

// TestOpenAPIDescribesEveryRoute: every route the real server serves has an
// operation in the description, and every operation is served: no
// undocumented endpoint, no documented ghost.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	in := st.Start(t, st.NewEnv(t, st.SQLite))
	var served []string
	gets, heads := map[string]bool{}, map[string]bool{}
	for _, r := range in.App.Server.Echo().Routes() {
		if strings.HasSuffix(r.Path, "/*") || r.Method == "echo_route_any" {
			t.Errorf("catch-all route %s %s cannot be described", r.Method, r.Path)
			continue
		}
		if r.Method == http.MethodHead {
			heads[r.Path] = true // described by its GET (the description's conventions)
			continue
		}
		gets[r.Path] = gets[r.Path] || r.Method == http.MethodGet
		served = append(served, r.Method+" "+echoParam.ReplaceAllString(r.Path, "{$1}"))
	}
	for path, get := range gets {
		if get && !heads[path] {
			t.Errorf("GET %s does not answer HEAD", path)
		}
	}
	for path := range heads {
		if !gets[path] {
			t.Errorf("HEAD %s has no GET", path)
		}
	}
	var root struct {
		Paths map[string]map[string]yaml.Node `yaml:"paths"`
	}
	if err := yaml.Unmarshal(server.OpenAPISpec(), &root); err != nil {
		t.Fatal(err)
	}
	var described []string
	for path, item := range root.Paths {
		for method := range item {
			if method == "parameters" || method == "summary" || method == "description" {
				continue
			}
			described = append(described, strings.ToUpper(method)+" "+path)
		}
	}
	slices.Sort(served)
	served = slices.Compact(served)
	slices.Sort(described)
	for _, r := range served {
		if !slices.Contains(described, r) {
			t.Errorf("%s is served but not in server/openapi.yaml", r)
		}
	}
	for _, r := range described {
		if !slices.Contains(served, r) {
			t.Errorf("%s is in server/openapi.yaml but not served", r)
		}
	}
}

// TestOpenAPIServedAndReferencePage: /openapi.yaml serves the embedded
// document with a working ETag; /docs lists every operation, needs no
// script or external resource, and allows only its own stylesheet.
func TestOpenAPIServedAndReferencePage(t *testing.T) {
	in := st.Start(t, st.NewEnv(t, st.SQLite))
	c := in.Client(t)

	y := c.Get("/openapi.yaml").ExpectStatus(http.StatusOK)
	if !bytes.Equal(y.Body, server.OpenAPISpec()) {
		t.Fatal("/openapi.yaml is not the embedded document")
	}
	if ct := y.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/yaml") {
		t.Fatalf("Content-Type %q", ct)
	}
	c.Get("/openapi.yaml", st.WithHeader("If-None-Match", y.Header.Get("ETag"))).ExpectStatus(http.StatusNotModified)

	d := c.Get("/docs").ExpectStatus(http.StatusOK)
	page := string(d.Body)
	if ct := d.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Fatalf("Content-Type %q", ct)
	}
	var root struct {
		Paths map[string]map[string]yaml.Node `yaml:"paths"`
	}
	if err := yaml.Unmarshal(server.OpenAPISpec(), &root); err != nil {
		t.Fatal(err)
	}
	for path, item := range root.Paths {
		for method, node := range item {
			if method == "parameters" {
				continue
			}
			var op struct {
				Summary string `yaml:"summary"`
			}
			if err := node.Decode(&op); err != nil {
				t.Fatal(err)
			}
			want := strings.ToUpper(method) + `</span><code>` + path + `</code>`
			if !strings.Contains(page, want) {
				t.Errorf("/docs does not list %s %s", strings.ToUpper(method), path)
			}
			if !strings.Contains(page, op.Summary) && !strings.Contains(page, htmlEscape(op.Summary)) {
				t.Errorf("/docs lacks the summary of %s %s", method, path)
			}
		}
	}
	for _, bad := range []string{"<script", "<link", "@import", "<iframe", "<img"} {
		if strings.Contains(strings.ToLower(page), bad) {
			t.Errorf("/docs contains %q", bad)
		}
	}
	if regexp.MustCompile(`(src|href)="(https?:)?//`).MatchString(page) {
		t.Error("/docs loads or links an external resource")
	}
	csp := d.Header.Get("Content-Security-Policy")
	styles := regexp.MustCompile(`(?s)<style>(.*?)</style>`).FindAllStringSubmatch(page, -1)
	if len(styles) != 1 {
		t.Fatalf("want one inline stylesheet, got %d", len(styles))
	}
	sum := sha256.Sum256([]byte(styles[0][1]))
	hash := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "style-src "+hash) || strings.Contains(csp, "unsafe-inline") {
		t.Fatalf("CSP %q does not allow exactly the page's stylesheet (%s)", csp, hash)
	}
	for _, s := range []string{"TokenResponse", "AuditEvent", `id="schema-Error"`} {
		if !strings.Contains(page, s) {
			t.Errorf("/docs lacks %s", s)
		}
	}
}

func htmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&#34;", "'", "&#39;").Replace(s)
}

// TestRenderAPIReferenceEscapes: text from the description is escaped, and
// a broken description is an error, not a half page.
func TestRenderAPIReferenceEscapes(t *testing.T) {
	doc := []byte(`openapi: 3.1.0
info: {title: "T<script>", version: "1", description: "a <b>bold</b> ` + "`x<y`" + `"}
tags: [{name: t}]
paths:
  /p:
    get:
      tags: [t]
      operationId: p
      summary: "s <img src=x>"
      responses: {"200": {description: ok}}
`)
	page, err := server.RenderAPIReference(doc)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"<script>", "<img", "<b>bold"} {
		if bytes.Contains(page, []byte(bad)) {
			t.Errorf("unescaped %q in the page", bad)
		}
	}
	if !bytes.Contains(page, []byte("<code>x&lt;y</code>")) {
		t.Error("code span not rendered")
	}
	for name, bad := range map[string]string{
		"fail/not_yaml":        "{",
		"fail/no_paths":        "openapi: 3.1.0\ninfo: {title: t, version: '1'}\n",
		"fail/undeclared_tag":  "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths: {/p: {get: {operationId: p, tags: [x], responses: {}}}}\n",
		"fail/no_operation_id": "openapi: 3.1.0\ninfo: {title: t, version: '1'}\ntags: [{name: x}]\npaths: {/p: {get: {tags: [x], responses: {}}}}\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := server.RenderAPIReference([]byte(bad)); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

// TestOpenAPICheck: the response check that every test client runs catches
// drift in both directions and lets deliberate junk-path requests through.
func TestOpenAPICheck(t *testing.T) {
	tokenHdr := http.Header{"Content-Type": {"application/json"}, "Cache-Control": {"no-store"}, "Pragma": {"no-cache"}}
	jsonHdr := http.Header{"Content-Type": {"application/json"}}
	notFound := `{"error":"not_found","error_description":"Not found."}`
	for _, tc := range []struct {
		name, method, path string
		reqHeader          http.Header
		status             int
		header             http.Header
		body               string
		ok                 bool
	}{
		{"ok/token", "POST", "/oauth2/token", nil, 200, tokenHdr, `{"access_token":"a","token_type":"Bearer","expires_in":900,"refresh_token":"r","scope":"openid"}`, true},
		{"fail/token_undocumented_field", "POST", "/oauth2/token", nil, 200, tokenHdr, `{"access_token":"a","token_type":"Bearer","expires_in":900,"password":"x"}`, false},
		{"fail/token_wrong_type", "POST", "/oauth2/token", nil, 200, tokenHdr, `{"access_token":"a","token_type":"bearer","expires_in":900}`, false},
		{"fail/token_cacheable", "POST", "/oauth2/token", nil, 200, jsonHdr, `{"access_token":"a","token_type":"Bearer","expires_in":900}`, false},
		{"fail/token_undocumented_status", "POST", "/oauth2/token", nil, 418, jsonHdr, `{"error":"teapot"}`, false},
		{"ok/token_error", "POST", "/oauth2/token", nil, 400, tokenHdr, `{"error":"invalid_grant","error_description":"x"}`, true},
		{"fail/error_without_code", "POST", "/oauth2/token", nil, 400, tokenHdr, `{"error_description":"x"}`, false},
		{"fail/rate_limited_without_retry_after", "POST", "/oauth2/token", nil, 429, tokenHdr, `{"error":"rate_limited"}`, false},
		{"ok/rate_limited", "POST", "/oauth2/token", nil, 429, http.Header{"Content-Type": {"application/json"}, "Retry-After": {"3"}}, `{"error":"rate_limited"}`, true},
		{"fail/bearer_401_without_challenge", "GET", "/userinfo", nil, 401, jsonHdr, `{"error":"invalid_token"}`, false},
		{"ok/revoke_empty", "POST", "/oauth2/revoke", nil, 200, http.Header{}, ``, true},
		{"fail/revoke_with_body", "POST", "/oauth2/revoke", nil, 200, jsonHdr, `{}`, false},
		{"fail/jwks_private_member", "GET", "/.well-known/jwks.json", nil, 200,
			http.Header{"Content-Type": {"application/json"}, "Etag": {`"x"`}, "Cache-Control": {"public, max-age=300"}},
			`{"keys":[{"kty":"RSA","kid":"k","alg":"RS256","use":"sig","n":"x","e":"AQAB","d":"private"}]}`, false},
		{"ok/user_never_logged_in", "GET", "/admin/users/usr_1", nil, 200, jsonHdr,
			`{"id":"usr_1","kind":"human","email":"a@example.com","name":"","roles":[],"active":true,"email_verified":false,"must_change_password":false,"created_at":"2024-05-01T12:00:00Z","updated_at":"2024-05-01T12:00:00Z","last_login_at":null}`, true},
		{"fail/user_missing_field", "GET", "/admin/users/usr_1", nil, 200, jsonHdr,
			`{"id":"usr_1","kind":"human","email":"a@example.com","name":"","roles":[],"active":true,"email_verified":false,"created_at":"2024-05-01T12:00:00Z","updated_at":"2024-05-01T12:00:00Z","last_login_at":null}`, false},
		{"ok/junk_path_404", "GET", "/../../etc/passwd%00", nil, 404, jsonHdr, notFound, true},
		{"ok/wrong_method_405", "GET", "/oauth2/token", nil, 405, jsonHdr, `{"error":"method_not_allowed","error_description":"Method not allowed."}`, true},
		{"fail/undocumented_endpoint", "GET", "/admin/secrets", nil, 200, jsonHdr, `{"items":[]}`, false},
		{"fail/undocumented_endpoint_401", "GET", "/admin/secrets", nil, 401, jsonHdr, `{"error":"unauthorized"}`, false},
		{"fail/junk_path_html_404", "GET", "/nowhere", nil, 404, http.Header{"Content-Type": {"text/html"}}, `<h1>404</h1>`, false},
		{"fail/junk_path_wrong_code", "GET", "/nowhere", nil, 404, jsonHdr, `{"error":"invalid_request"}`, false},
		{"ok/cors_preflight", "OPTIONS", "/oauth2/token", http.Header{"Origin": {"https://app.example.com"}, "Access-Control-Request-Method": {"POST"}}, 204, http.Header{}, ``, true},
		{"fail/options_with_body", "OPTIONS", "/admin/users/usr_1", nil, 204, jsonHdr, `{}`, false},
		{"ok/options_known_path", "OPTIONS", "/admin/users/usr_1", nil, 204, http.Header{"Allow": {"GET, PATCH, DELETE"}}, ``, true},
		{"ok/headers_too_large_any_path", "GET", "/userinfo", nil, 431, http.Header{"Content-Type": {"text/plain; charset=utf-8"}}, "431 Request Header Fields Too Large", true},
		{"fail/headers_too_large_other_body", "GET", "/userinfo", nil, 431, http.Header{"Content-Type": {"text/plain; charset=utf-8"}}, "nope", false},
		{"ok/not_modified", "GET", "/.well-known/jwks.json", http.Header{"If-None-Match": {`"x"`}}, 304, http.Header{"Etag": {`"x"`}}, ``, true},
		{"fail/not_modified_undocumented", "GET", "/healthz", http.Header{"If-None-Match": {`"x"`}}, 304, http.Header{}, ``, false},
		{"ok/escaped_slash_in_id", "GET", "/admin/users/a%2Fb", nil, 401, http.Header{"Content-Type": {"application/json"}, "Www-Authenticate": {`Bearer realm="portcullis"`}}, `{"error":"unauthorized"}`, true},
		{"ok/malformed_query_any_api_path", "GET", "/healthz?x=a%00b", nil, 400, jsonHdr, `{"error":"invalid_request","error_description":"x"}`, true},
		{"ok/malformed_query_unknown_path", "GET", "/nowhere?%zz", nil, 400, jsonHdr, `{"error":"invalid_request"}`, true},
		{"fail/malformed_query_page_as_json", "GET", "/reset-password?token=%ff", nil, 400, jsonHdr, `{"error":"invalid_request"}`, false},
		{"fail/well_formed_query_undocumented_400", "GET", "/healthz?x=y", nil, 400, jsonHdr, `{"error":"invalid_request"}`, false},
		{"fail/malformed_query_without_code", "GET", "/healthz?x=%ff", nil, 400, jsonHdr, `{"error_description":"x"}`, false},
		{"fail/metrics_as_json", "GET", "/metrics", nil, 200, jsonHdr, `{}`, false},
		{"ok/metrics", "GET", "/metrics", nil, 200, http.Header{"Content-Type": {"text/plain; version=0.0.4; charset=utf-8"}}, "# HELP x y\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, "http://127.0.0.1:1"+tc.path, nil)
			for k, v := range tc.reqHeader {
				req.Header[k] = v
			}
			resp := &http.Response{StatusCode: tc.status, Header: tc.header, Body: io.NopCloser(strings.NewReader(tc.body)), Request: req}
			err := st.CheckOpenAPI(req, nil, resp, []byte(tc.body))
			if tc.ok && err != nil {
				t.Fatalf("valid exchange refused: %v", err)
			}
			if !tc.ok && err == nil {
				t.Fatal("invalid exchange accepted")
			}
		})
	}
}

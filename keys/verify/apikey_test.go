package verify_test

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"hash/crc32"
	"math/big"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/keys/verify"
)

// apiKeyVectors are keys whose checksum was computed outside Go (Python's
// zlib.crc32 and a base62 encoder), so the format is pinned independently
// of this package's code; an issuer minting keys must produce the same.
var apiKeyVectors = []string{
	"pcak_0000000000000000000000000000000013JsSS",
	"pcak_0123456789ABCDEFGHIJKLMNOPQRSTUV3bzNgN",
	"pcak_zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz22wGcg",
	"pcak_WkHq3Jb9xT2mZpR7aL5cN8vY1dF4gS6e0YaogJ", // a checksum with a leading 0
}

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// newAPIKey is a fresh well-formed key, as an issuer mints one.
func newAPIKey(t testing.TB) string {
	t.Helper()
	b := []byte(verify.APIKeyPrefix)
	for range verify.APIKeyRandomLength {
		n, err := rand.Int(rand.Reader, big.NewInt(62))
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, base62[n.Int64()])
	}
	sum, err := verify.APIKeyChecksum(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + sum
}

// referenceChecksum is the checksum written the obvious way, with
// hash/crc32 and big-number division.
func referenceChecksum(body string) string {
	v := big.NewInt(int64(crc32.ChecksumIEEE([]byte(body))))
	out := make([]byte, 6)
	for i := 5; i >= 0; i-- {
		m := new(big.Int)
		v.DivMod(v, big.NewInt(62), m)
		out[i] = base62[m.Int64()]
	}
	return string(out)
}

var apiKeyRE = regexp.MustCompile(`^` + verify.APIKeyPattern + `$`)

func TestCheckAPIKey(t *testing.T) {
	key := newAPIKey(t)
	flip := func(s string, i int) string {
		c := byte('a')
		if s[i] == 'a' {
			c = 'b'
		}
		return s[:i] + string(c) + s[i+1:]
	}
	tests := []struct {
		name string
		key  string
		ok   bool
	}{
		{"ok/generated", key, true},
		{"ok/vector 0", apiKeyVectors[0], true},
		{"ok/vector 1", apiKeyVectors[1], true},
		{"ok/vector 2", apiKeyVectors[2], true},
		{"ok/vector with a leading zero checksum", apiKeyVectors[3], true},
		{"fail/empty", "", false},
		{"fail/prefix only", "pcak_", false},
		{"fail/no prefix", key[5:], false},
		{"fail/upper-case prefix", "PCAK_" + key[5:], false},
		{"fail/another prefix", "pcrt_" + key[5:], false},
		{"fail/one short", key[:42], false},
		{"fail/one long", key + "0", false},
		{"fail/random character changed", flip(key, 10), false},
		{"fail/first random character changed", flip(key, 5), false},
		{"fail/checksum changed", flip(key, 42), false},
		{"fail/characters swapped", key[:6] + key[7:8] + key[6:7] + key[8:], key[6] == key[7]},
		{"fail/dash", key[:10] + "-" + key[11:], false},
		{"fail/underscore", key[:10] + "_" + key[11:], false},
		{"fail/space", key[:10] + " " + key[11:], false},
		{"fail/non-ASCII", key[:10] + "é" + key[12:], false},
		{"fail/NUL", key[:10] + "\x00" + key[11:], false},
		{"fail/a JWT", "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", false},
		{"fail/checksum of the random part only (GitHub's way)", key[:37] + referenceChecksum(key[5:37]), referenceChecksum(key[5:37]) == key[37:]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := verify.CheckAPIKey(tc.key)
			if tc.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if !apiKeyRE.MatchString(tc.key) || len(tc.key) != verify.APIKeyLength {
					t.Fatal("a valid key does not match APIKeyPattern")
				}
				return
			}
			if !errors.Is(err, verify.ErrMalformedAPIKey) || !errors.Is(err, verify.ErrMalformed) {
				t.Fatalf("err %v, want ErrMalformedAPIKey", err)
			}
			if len(tc.key) > len(verify.APIKeyPrefix) && strings.Contains(err.Error(), tc.key) {
				t.Fatal("the key is in the error")
			}
		})
	}
}

// TestAPIKeyChecksum: the checksum equals the reference computation for
// random bodies and the fixed vectors, and APIKeyChecksum refuses bodies
// that are not of the format.
func TestAPIKeyChecksum(t *testing.T) {
	for _, v := range apiKeyVectors {
		if got, err := verify.APIKeyChecksum(v[:37]); err != nil || got != v[37:] || referenceChecksum(v[:37]) != v[37:] {
			t.Fatalf("%s: checksum %q %v, reference %q", v[:37], got, err, referenceChecksum(v[:37]))
		}
	}
	for range 2000 {
		key := newAPIKey(t)
		if want := referenceChecksum(key[:37]); key[37:] != want {
			t.Fatalf("checksum %q, reference %q", key[37:], want)
		}
	}
	for _, body := range []string{"", "pcak_", "pcak_" + strings.Repeat("0", 31), "pcak_" + strings.Repeat("0", 33),
		"pcak_" + strings.Repeat("0", 31) + "-", "xxxx_" + strings.Repeat("0", 32)} {
		if _, err := verify.APIKeyChecksum(body); !errors.Is(err, verify.ErrMalformedAPIKey) {
			t.Fatalf("APIKeyChecksum(%q): %v", body, err)
		}
	}
}

// FuzzCheckAPIKey: CheckAPIKey accepts exactly the strings of the pattern
// whose last six characters are the reference checksum of the rest, never
// panics, and never puts the string in its error.
func FuzzCheckAPIKey(f *testing.F) {
	for _, v := range apiKeyVectors {
		f.Add(v)
		f.Add(v[:42])
		f.Add(v + "0")
		f.Add(strings.ToUpper(v))
		f.Add(v[:20] + "-" + v[21:])
	}
	for _, s := range []string{"", "pcak_", "pcak_\x00", "pcak_é", "eyJhbGciOiJub25lIn0.e30.", "pcrt_abc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := verify.CheckAPIKey(s)
		want := apiKeyRE.MatchString(s) && referenceChecksum(s[:37]) == s[37:]
		if (err == nil) != want {
			t.Fatalf("CheckAPIKey(%q) = %v, want valid=%v", s, err, want)
		}
		if err != nil {
			if !errors.Is(err, verify.ErrMalformedAPIKey) {
				t.Fatalf("error %v does not wrap ErrMalformedAPIKey", err)
			}
			if len(s) > 8 && strings.Contains(err.Error(), s) {
				t.Fatalf("the string is in the error %v", err)
			}
			return
		}
		if sum, err := verify.APIKeyChecksum(s[:37]); err != nil || sum != s[37:] {
			t.Fatalf("APIKeyChecksum disagrees: %q %v", sum, err)
		}
	})
}

// keyIssuer is an issuer's introspection endpoint for API keys over real
// HTTP: it authenticates the client, answers from a table, counts requests
// and can be made to fail.
type keyIssuer struct {
	t   testing.TB
	srv *httptest.Server

	mu      sync.Mutex
	answers map[string]map[string]any // key → answer; absent: {"active": false}
	status  int                       // when not 0, every request gets it
	seen    []string                  // every token asked about
	hints   []string                  // their token_type_hint

	requests atomic.Int64
}

const (
	rsClientID     = "projects-api"
	rsClientSecret = "a-resource-server-secret"
)

func newKeyIssuer(t testing.TB) *keyIssuer {
	t.Helper()
	k := &keyIssuer{t: t, answers: map[string]map[string]any{}}
	k.srv = httptest.NewServer(http.HandlerFunc(k.serve))
	t.Cleanup(k.srv.Close)
	return k
}

func (k *keyIssuer) serve(w http.ResponseWriter, r *http.Request) {
	k.requests.Add(1)
	w.Header().Set("Content-Type", "application/json")
	if r.URL.Path != "/oauth2/introspect" || r.Method != http.MethodPost {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	id, secret, ok := r.BasicAuth()
	if !ok || id != rsClientID || secret != rsClientSecret {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
		return
	}
	if err := r.ParseForm(); err != nil {
		k.t.Error(err)
	}
	tok := r.PostForm.Get("token")
	k.mu.Lock()
	status, ans := k.status, k.answers[tok]
	k.seen = append(k.seen, tok)
	k.hints = append(k.hints, r.PostForm.Get("token_type_hint"))
	k.mu.Unlock()
	if status != 0 {
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{"error":"temporarily_unavailable"}`))
		return
	}
	if ans == nil {
		ans = map[string]any{"active": false}
	}
	_ = json.NewEncoder(w).Encode(ans)
}

// issue makes key active for the user with scope until exp, as Portcullis
// answers; extra members are added (nil removes one).
func (k *keyIssuer) issue(key, sub, scope string, exp time.Time, extra map[string]any) {
	ans := map[string]any{"active": true, "token_type": "api_key", "sub": sub, "scope": scope, "exp": exp.Unix(),
		"client_id": "apikey:ak_" + key[5:13]}
	for m, v := range extra {
		if v == nil {
			delete(ans, m)
		} else {
			ans[m] = v
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.answers[key] = ans
}

func (k *keyIssuer) revoke(key string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.answers, key)
}

func (k *keyIssuer) fail(status int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.status = status
}

func (k *keyIssuer) introspector(t testing.TB, opts verify.IntrospectorOptions) *verify.Introspector {
	t.Helper()
	if opts.Endpoint == "" {
		opts.Endpoint = k.srv.URL + "/oauth2/introspect"
	}
	if opts.ClientID == "" {
		opts.ClientID, opts.ClientSecret = rsClientID, rsClientSecret
	}
	in, err := verify.NewIntrospector(opts)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// serveHeaders runs one request with the headers (name, value pairs)
// through mw, returning the recorder and the claims the handler saw.
func serveHeaders(mw func(http.Handler) http.Handler, headers ...string) (*httptest.ResponseRecorder, *verify.Claims) {
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
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Add(headers[i], headers[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w, seen
}

// TestGuardAPIKeys: keys in either header form yield claims that meet
// scope requirements like a token's and never a role or MFA; malformed keys
// are refused without a request to the issuer; inactive, expired and
// foreign answers get RFC 6750 401s; a request with two credentials is a
// 400; access tokens work as before beside keys.
func TestGuardAPIKeys(t *testing.T) {
	f := newGuardFixture(t)
	iss := newKeyIssuer(t)
	in := iss.introspector(t, verify.IntrospectorOptions{Issuer: testIssuer, Now: func() time.Time { return f.now }})
	var denials []*verify.Denial
	g := f.guard(t, verify.GuardOptions{APIKeys: in, OnDenied: func(_ *http.Request, d *verify.Denial) { denials = append(denials, d) }})

	keys := map[string]string{}
	mint := func(name, scope string, extra map[string]any) {
		keys[name] = newAPIKey(t)
		iss.issue(keys[name], "usr_"+strings.ReplaceAll(name, " ", "_"), scope, f.now.Add(24*time.Hour), extra)
	}
	mint("reader", "projects:read", nil)
	mint("writer", "projects:read projects:write", nil)
	// The issuer never sends roles for a key; were it to, they are ignored.
	mint("root's key", "projects:read projects:write users:read", map[string]any{"roles": []string{"super_admin"},
		"amr": []string{"pwd", "mfa"}, "acr": "mfa"})
	mint("no scope", "", nil)
	mint("expired", "projects:read", map[string]any{"exp": f.now.Add(-time.Hour).Unix()})
	mint("access token answer", "projects:read", map[string]any{"token_type": "Bearer"})
	mint("no sub", "projects:read", map[string]any{"sub": nil})
	mint("no exp", "projects:read", map[string]any{"exp": nil})
	mint("bad client_id", "projects:read", map[string]any{"client_id": "web"})
	keys["unknown"] = newAPIKey(t)
	good := keys["reader"]
	// The last checksum character changed: the format is right, the sum not.
	badSum := good[:42] + "0"
	if good[42] == '0' {
		badSum = good[:42] + "1"
	}

	const (
		invalid      = `Bearer error="invalid_token", error_description=`
		mfaChallenge = `Bearer error="insufficient_user_authentication", error_description="This request needs a sign-in with a second factor (multi-factor authentication).", acr_values="mfa"`
	)
	xkey := func(name string) []string { return []string{"X-API-Key", keys[name]} }
	bearerKey := func(name string) []string { return []string{"Authorization", "Bearer " + keys[name]} }
	jwt := []string{"Authorization", "Bearer " + f.tokens["editor"]}
	cat := func(hs ...[]string) []string {
		var out []string
		for _, h := range hs {
			out = append(out, h...)
		}
		return out
	}
	tests := []struct {
		name      string
		mw        func(http.Handler) http.Handler
		headers   []string
		status    int
		challenge string // exact WWW-Authenticate
		code      string
		cause     error
		asks      int64 // introspection requests the request costs
	}{
		{"ok/X-API-Key", g.RequireScope("projects:read"), xkey("reader"), 204, "", "", nil, 1},
		{"ok/X-API-Key, cached", g.RequireScope("projects:read"), xkey("reader"), 204, "", "", nil, 0},
		{"ok/Bearer key, the same cache", g.RequireScope("projects:read"), bearerKey("reader"), 204, "", "", nil, 0},
		{"ok/bearer scheme in lower case", g.Authenticate, []string{"Authorization", "bearer " + keys["writer"]}, 204, "", "", nil, 1},
		{"ok/header name in any case", g.Authenticate, []string{"x-api-key", keys["writer"]}, 204, "", "", nil, 0},
		{"ok/every scope", g.RequireScope("projects:read", "projects:write"), xkey("writer"), 204, "", "", nil, 0},
		{"ok/any scope", g.RequireAnyScope("users:write", "projects:write"), xkey("writer"), 204, "", "", nil, 0},
		{"ok/a key without scope authenticates", g.Authenticate, xkey("no scope"), 204, "", "", nil, 1},
		{"ok/Online is met by the key's own introspection", g.Require(verify.Online()), xkey("reader"), 204, "", "", nil, 0},
		{"ok/role or scope: the scope", g.Require(verify.Any(verify.Role("admin"), verify.Scope("projects:write"))), xkey("writer"), 204, "", "", nil, 0},
		{"ok/an access token beside keys", g.RequireScope("projects:write"), jwt, 204, "", "", nil, 0},

		{"fail/insufficient scope", g.RequireScope("projects:write"), xkey("reader"), 403,
			`Bearer error="insufficient_scope", scope="projects:write", error_description="This request needs the permission projects:write."`, "insufficient_scope", verify.ErrInsufficientScope, 0},
		{"fail/insufficient scope, Bearer", g.RequireScope("users:read"), bearerKey("writer"), 403,
			`Bearer error="insufficient_scope", scope="users:read", error_description="This request needs the permission users:read."`, "insufficient_scope", verify.ErrInsufficientScope, 0},
		{"fail/a key meets no role, whatever the answer says", g.RequireRole("viewer"), xkey("root's key"), 403,
			`Bearer error="insufficient_scope", error_description="This request needs the role viewer or higher; an API key carries no roles."`, "insufficient_scope", verify.ErrInsufficientScope, 1},
		{"fail/nor any role", g.Require(verify.AnyRole("admin", "super_admin")), bearerKey("root's key"), 403,
			`Bearer error="insufficient_scope", error_description="This request needs one of the roles admin or higher, super_admin or higher; an API key carries no roles."`, "insufficient_scope", verify.ErrInsufficientScope, 0},
		{"fail/role or scope: neither", g.Require(verify.Any(verify.Role("admin"), verify.Scope("users:write"))), xkey("root's key"), 403,
			`Bearer error="insufficient_scope", scope="users:write", error_description="This request needs either the role admin or higher, or the permission users:write."`, "insufficient_scope", verify.ErrInsufficientScope, 0},
		{"fail/a key meets no MFA", g.RequireMFA(), xkey("root's key"), 401, mfaChallenge, "insufficient_user_authentication", verify.ErrInsufficientUserAuthentication, 0},

		{"fail/inactive", g.Authenticate, xkey("unknown"), 401, invalid + `"The API key is not active."`, "invalid_token", verify.ErrInactive, 1},
		{"fail/inactive, cached too", g.Authenticate, bearerKey("unknown"), 401, invalid + `"The API key is not active."`, "invalid_token", verify.ErrInactive, 0},
		{"fail/expired", g.Authenticate, xkey("expired"), 401, invalid + `"The API key expired."`, "invalid_token", verify.ErrExpired, 1},
		{"fail/the issuer knows it as an access token", g.Authenticate, xkey("access token answer"), 401, invalid + `"The credential is not an API key."`, "invalid_token", verify.ErrWrongType, 1},
		{"fail/bad checksum, X-API-Key", g.Authenticate, []string{"X-API-Key", badSum}, 401, invalid + `"The API key is malformed."`, "invalid_token", verify.ErrMalformedAPIKey, 0},
		{"fail/bad checksum, Bearer", g.Authenticate, []string{"Authorization", "Bearer " + badSum}, 401, invalid + `"The API key is malformed."`, "invalid_token", verify.ErrMalformedAPIKey, 0},
		{"fail/short key", g.Authenticate, []string{"X-API-Key", good[:30]}, 401, invalid + `"The API key is malformed."`, "invalid_token", verify.ErrMalformedAPIKey, 0},
		{"fail/bad alphabet", g.Authenticate, []string{"X-API-Key", good[:20] + "+" + good[21:]}, 401, invalid + `"The API key is malformed."`, "invalid_token", verify.ErrMalformedAPIKey, 0},
		{"fail/an access token in X-API-Key", g.Authenticate, []string{"X-API-Key", f.tokens["editor"]}, 401, invalid + `"The API key is malformed."`, "invalid_token", verify.ErrMalformedAPIKey, 0},

		{"fail/both an access token and a key", g.Authenticate, cat(jwt, xkey("reader")), 400,
			`Bearer error="invalid_request", error_description="Send one credential: an Authorization header or an X-API-Key header, not both."`, "invalid_request", nil, 0},
		{"fail/a key in both headers", g.Authenticate, cat(bearerKey("reader"), xkey("reader")), 400,
			`Bearer error="invalid_request", error_description="Send one credential: an Authorization header or an X-API-Key header, not both."`, "invalid_request", nil, 0},
		{"fail/Basic beside a key", g.Authenticate, cat([]string{"Authorization", "Basic dXNlcjpwYXNz"}, xkey("reader")), 400,
			`Bearer error="invalid_request", error_description="Send one credential: an Authorization header or an X-API-Key header, not both."`, "invalid_request", nil, 0},
		{"fail/two X-API-Key headers", g.Authenticate, cat(xkey("reader"), xkey("writer")), 400,
			`Bearer error="invalid_request", error_description="Send one X-API-Key header."`, "invalid_request", nil, 0},
		{"fail/empty X-API-Key", g.Authenticate, []string{"X-API-Key", " "}, 400,
			`Bearer error="invalid_request", error_description="The X-API-Key header is empty."`, "invalid_request", nil, 0},
		{"fail/no credential", g.Authenticate, nil, 401, "Bearer", "unauthorized", nil, 0},

		{"fail/an answer without sub fails closed", g.Authenticate, xkey("no sub"), 503, "", "temporarily_unavailable", verify.ErrIntrospectionUnavailable, 1},
		{"fail/an answer without exp fails closed", g.Authenticate, xkey("no exp"), 503, "", "temporarily_unavailable", verify.ErrIntrospectionUnavailable, 1},
		{"fail/an answer with another client_id fails closed", g.Authenticate, xkey("bad client_id"), 503, "", "temporarily_unavailable", verify.ErrIntrospectionUnavailable, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			denials = nil
			before := iss.requests.Load()
			w, claims := serveHeaders(tc.mw, tc.headers...)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d; body %s", w.Code, tc.status, w.Body)
			}
			if got := w.Header().Get("WWW-Authenticate"); got != tc.challenge {
				t.Fatalf("WWW-Authenticate\n got %s\nwant %s", got, tc.challenge)
			}
			if asked := iss.requests.Load() - before; asked != tc.asks {
				t.Fatalf("%d introspection requests, want %d", asked, tc.asks)
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
			if tc.status == 503 && w.Header().Get("Retry-After") == "" {
				t.Fatal("503 without Retry-After")
			}
			if len(denials) != 1 || denials[0].Status != tc.status || (tc.cause != nil && !errors.Is(denials[0], tc.cause)) {
				t.Fatalf("OnDenied saw %v", denials)
			}
			for _, k := range append([]string{badSum}, mapValues(keys)...) {
				if strings.Contains(denials[0].Error(), k) || strings.Contains(w.Body.String(), k) || strings.Contains(w.Header().Get("WWW-Authenticate"), k) {
					t.Fatal("a key leaked into the denial")
				}
			}
		})
	}

	t.Run("ok/the claims of a key", func(t *testing.T) {
		w, c := serveHeaders(g.Authenticate, xkey("root's key")...)
		if w.Code != 204 {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
		key := keys["root's key"]
		if c.Subject != "usr_root's_key" || c.Scope != "projects:read projects:write users:read" || len(c.Scopes) != 3 ||
			c.ClientID != "apikey:ak_"+key[5:13] || c.APIKeyID != "ak_"+key[5:13] || !c.IsAPIKey() || c.Issuer != testIssuer ||
			!c.ExpiresAt.Equal(time.Unix(f.now.Add(24*time.Hour).Unix(), 0)) || !c.IssuedAt.Equal(f.now) ||
			len(c.Roles) != 0 || len(c.AMR) != 0 || c.ACR != "" || c.HasMFA() || c.SessionID != "" || len(c.Audience) != 0 || c.Raw() != nil {
			t.Fatalf("claims %+v", c)
		}
		// A handler's append cannot reach another request's claims.
		_ = append(c.Scopes, "users:write")
		_, c2 := serveHeaders(g.Authenticate, xkey("root's key")...)
		if c2 == c || c2.HasScope("users:write") || len(c2.Scopes) != 3 {
			t.Fatalf("claims shared between requests: %+v", c2)
		}
		_, jc := serveHeaders(g.Authenticate, jwt...)
		if jc.IsAPIKey() || jc.APIKeyID != "" {
			t.Fatalf("an access token's claims say API key: %+v", jc)
		}
	})
	t.Run("ok/keys are sent without token_type_hint, tokens with access_token", func(t *testing.T) {
		iss.mu.Lock()
		defer iss.mu.Unlock()
		for i, tok := range iss.seen {
			if verify.IsAPIKeyLike(tok) && iss.hints[i] != "" {
				t.Fatalf("hint %q for a key", iss.hints[i])
			}
		}
	})
}

func mapValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// TestGuardWithoutAPIKeys: without GuardOptions.APIKeys the guard reads no
// X-API-Key (a request with only that header has no credential) and a
// Bearer key is just a malformed access token; nothing is asked.
func TestGuardWithoutAPIKeys(t *testing.T) {
	f := newGuardFixture(t)
	iss := newKeyIssuer(t)
	key := newAPIKey(t)
	iss.issue(key, "usr_1", "projects:read", f.now.Add(time.Hour), nil)
	// An Introspector for Online, but none for keys.
	g := f.guard(t, verify.GuardOptions{Introspector: iss.introspector(t, verify.IntrospectorOptions{})})
	tests := []struct {
		name      string
		headers   []string
		status    int
		challenge string
	}{
		{"fail/X-API-Key is not read", []string{"X-API-Key", key}, 401, "Bearer"},
		{"fail/a Bearer key is a malformed access token", []string{"Authorization", "Bearer " + key}, 401,
			`Bearer error="invalid_token", error_description="The access token is malformed."`},
		{"ok/an access token beside an ignored X-API-Key", []string{"Authorization", "Bearer " + f.tokens["viewer"], "X-API-Key", key}, 204, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, _ := serveHeaders(g.RequireScope("projects:read"), tc.headers...)
			if w.Code != tc.status || w.Header().Get("WWW-Authenticate") != tc.challenge {
				t.Fatalf("%d %q; %s", w.Code, w.Header().Get("WWW-Authenticate"), w.Body)
			}
			if strings.Contains(w.Body.String(), "API key") {
				t.Fatalf("body %s", w.Body)
			}
		})
	}
	if n := iss.requests.Load(); n != 0 {
		t.Fatalf("%d introspection requests", n)
	}
}

// TestAPIKeyCache: an answer is reused for at most MaxAPIKeyCacheTTL
// (whatever CacheTTL says) and never past the key's exp, on an injected
// clock: a revoked key works until the cached answer ages out, then is
// refused; NoCache asks every time.
func TestAPIKeyCache(t *testing.T) {
	iss := newKeyIssuer(t)
	clk := newClock()
	ctx := t.Context()
	check := func(t *testing.T, in *verify.Introspector, key string, wantOK bool, wantAsks int64) {
		t.Helper()
		before := iss.requests.Load()
		c, err := in.VerifyAPIKey(ctx, key)
		if (err == nil) != wantOK || (err == nil && c.Subject != "usr_1") || (err != nil && !errors.Is(err, verify.ErrInactive)) {
			t.Fatalf("VerifyAPIKey: %v %v, want ok=%v", c, err, wantOK)
		}
		if asked := iss.requests.Load() - before; asked != wantAsks {
			t.Fatalf("%d introspection requests, want %d", asked, wantAsks)
		}
	}
	t.Run("ok/revocation takes effect after the cache time", func(t *testing.T) {
		// CacheTTL is longer, but keys are cached for at most 5 s.
		in := iss.introspector(t, verify.IntrospectorOptions{Now: clk.Now, CacheTTL: time.Minute})
		key := newAPIKey(t)
		iss.issue(key, "usr_1", "projects:read", clk.Now().Add(time.Hour), nil)
		check(t, in, key, true, 1)
		clk.Advance(verify.MaxAPIKeyCacheTTL - time.Millisecond)
		check(t, in, key, true, 0)
		iss.revoke(key)
		check(t, in, key, true, 0) // the cached answer
		clk.Advance(time.Millisecond)
		check(t, in, key, false, 1)
		check(t, in, key, false, 0) // inactive answers are cached too
		clk.Advance(verify.MaxAPIKeyCacheTTL)
		check(t, in, key, false, 1)
	})
	t.Run("ok/a shorter CacheTTL is honoured", func(t *testing.T) {
		in := iss.introspector(t, verify.IntrospectorOptions{Now: clk.Now, CacheTTL: time.Second})
		key := newAPIKey(t)
		iss.issue(key, "usr_1", "projects:read", clk.Now().Add(time.Hour), nil)
		check(t, in, key, true, 1)
		clk.Advance(999 * time.Millisecond)
		check(t, in, key, true, 0)
		clk.Advance(time.Millisecond)
		check(t, in, key, true, 1)
	})
	t.Run("ok/never cached past exp", func(t *testing.T) {
		in := iss.introspector(t, verify.IntrospectorOptions{Now: clk.Now})
		key := newAPIKey(t)
		iss.issue(key, "usr_1", "projects:read", clk.Now().Add(2*time.Second), nil)
		check(t, in, key, true, 1)
		clk.Advance(2 * time.Second)
		iss.revoke(key) // the issuer now calls it expired
		check(t, in, key, false, 1)
	})
	t.Run("ok/NoCache asks every time", func(t *testing.T) {
		in := iss.introspector(t, verify.IntrospectorOptions{Now: clk.Now, CacheTTL: verify.NoCache})
		key := newAPIKey(t)
		iss.issue(key, "usr_1", "projects:read", clk.Now().Add(time.Hour), nil)
		for range 3 {
			check(t, in, key, true, 1)
		}
	})
	t.Run("ok/the cache is keyed by hash: the key is not kept", func(t *testing.T) {
		in := iss.introspector(t, verify.IntrospectorOptions{Now: clk.Now})
		key := newAPIKey(t)
		iss.issue(key, "usr_1", "projects:read", clk.Now().Add(time.Hour), nil)
		c, err := in.VerifyAPIKey(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := json.Marshal(c); strings.Contains(string(b), key[5:]) {
			t.Fatal("the claims hold the key")
		}
	})
}

// TestGuardAPIKeyIntrospectionDown: when the issuer cannot answer (an
// error status, a refused client, a closed port) a key is refused with 503
// temporarily_unavailable, never admitted, and no stale answer is used; the
// failure is not cached, so keys work again as soon as the issuer answers.
func TestGuardAPIKeyIntrospectionDown(t *testing.T) {
	f := newGuardFixture(t)
	iss := newKeyIssuer(t)
	clk := newClock()
	in := iss.introspector(t, verify.IntrospectorOptions{Now: clk.Now})
	g := f.guard(t, verify.GuardOptions{APIKeys: in})
	key := newAPIKey(t)
	iss.issue(key, "usr_1", "projects:read", clk.Now().Add(time.Hour), nil)
	h := g.RequireScope("projects:read")
	expect := func(t *testing.T, status int) {
		t.Helper()
		w, _ := serveHeaders(h, "X-API-Key", key)
		if w.Code != status {
			t.Fatalf("status %d, want %d; %s", w.Code, status, w.Body)
		}
		if status == 503 && (w.Header().Get("Retry-After") == "" || w.Header().Get("WWW-Authenticate") != "" ||
			!strings.Contains(w.Body.String(), `"temporarily_unavailable"`) || !strings.Contains(w.Body.String(), "API key")) {
			t.Fatalf("503 answer %v %s", w.Header(), w.Body)
		}
	}
	expect(t, 204)
	// An error status: after the cached answer ages out, no stale answer.
	iss.fail(http.StatusInternalServerError)
	expect(t, 204) // still cached
	clk.Advance(verify.MaxAPIKeyCacheTTL)
	expect(t, 503)
	expect(t, 503)
	iss.fail(0)
	expect(t, 204) // failures are not cached

	t.Run("fail/a refused client", func(t *testing.T) {
		bad := iss.introspector(t, verify.IntrospectorOptions{ClientID: rsClientID, ClientSecret: "wrong"})
		c, err := bad.VerifyAPIKey(t.Context(), key)
		if c != nil || !errors.Is(err, verify.ErrIntrospectionUnavailable) || strings.Contains(err.Error(), "wrong") || strings.Contains(err.Error(), key) {
			t.Fatalf("%v %v", c, err)
		}
		w, _ := serveHeaders(f.guard(t, verify.GuardOptions{APIKeys: bad}).Authenticate, "X-API-Key", key)
		if w.Code != 503 {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
	})
	t.Run("fail/the issuer is gone", func(t *testing.T) {
		clk.Advance(verify.MaxAPIKeyCacheTTL)
		iss.srv.Close()
		expect(t, 503)
		w, _ := serveHeaders(h, "Authorization", "Bearer "+key)
		if w.Code != 503 {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
		// Access tokens are checked offline and keep working.
		if w, _ := serveHeaders(h, "Authorization", "Bearer "+f.tokens["viewer"]); w.Code != 204 {
			t.Fatalf("access token with the issuer down: %d %s", w.Code, w.Body)
		}
	})
}

// TestGuardAPIKeysConcurrent: many requests at once, with several keys in
// both header forms and bad ones among them, each get their own answer;
// concurrent checks of a key that is not cached share one introspection
// request (the clock stands still, so each key is asked about once).
func TestGuardAPIKeysConcurrent(t *testing.T) {
	f := newGuardFixture(t)
	iss := newKeyIssuer(t)
	in := iss.introspector(t, verify.IntrospectorOptions{Now: func() time.Time { return f.now }})
	g := f.guard(t, verify.GuardOptions{APIKeys: in})
	h := g.RequireScope("projects:write")
	type kind struct {
		key    string
		status int
		sub    string
	}
	var kinds []kind
	for i := range 4 {
		k := newAPIKey(t)
		sub := "usr_w" + string(rune('0'+i))
		iss.issue(k, sub, "projects:read projects:write", f.now.Add(time.Hour), nil)
		kinds = append(kinds, kind{k, 204, sub})
		r := newAPIKey(t)
		iss.issue(r, "usr_r", "projects:read", f.now.Add(time.Hour), nil)
		kinds = append(kinds, kind{r, 403, ""})
		kinds = append(kinds, kind{newAPIKey(t), 401, ""}) // unknown
	}
	bad := kinds[0].key[:42] + "!"
	kinds = append(kinds, kind{bad, 401, ""}, kind{f.tokens["editor"], 204, "usr_1"})
	asksWanted := int64(len(kinds) - 2)

	const workers, rounds = 16, 40
	var wg sync.WaitGroup
	errs := make(chan string, workers*rounds)
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				k := kinds[(w*7+i)%len(kinds)]
				var hdr []string
				switch {
				case !verify.IsAPIKeyLike(k.key) || i%2 == 0:
					hdr = []string{"Authorization", "Bearer " + k.key}
				default:
					hdr = []string{"X-API-Key", k.key}
				}
				rec, c := serveHeaders(h, hdr...)
				if rec.Code != k.status || (k.status == 204 && c.Subject != k.sub) {
					errs <- rec.Result().Status + " " + rec.Body.String()
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if n := iss.requests.Load(); n != asksWanted {
		t.Fatalf("%d introspection requests for %d distinct well-formed keys", n, asksWanted)
	}
}

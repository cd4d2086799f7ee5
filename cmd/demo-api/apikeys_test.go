package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/keys/verify"
	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// countingTransport counts the requests it carries.
type countingTransport struct{ n atomic.Int64 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultTransport.RoundTrip(r)
}

// wellFormedKey is a key of the right format (its checksum right) that no
// issuer has minted.
func wellFormedKey(t *testing.T) string {
	t.Helper()
	const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
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

// demo is one more demo API in front of the stack's Portcullis, with its
// own settings, its introspection requests counted and its logs kept.
type demo struct {
	url   string
	asked *countingTransport
	logs  *st.SyncBuffer
}

func (s *stack) startDemo(t *testing.T, clientID, secret string) *demo {
	t.Helper()
	d := &demo{asked: &countingTransport{}, logs: &st.SyncBuffer{}}
	a, err := newAPI(config{Addr: "127.0.0.1:0", Issuer: s.in.Config.Issuer, Audience: "api", ClientID: clientID, ClientSecret: secret,
		MaxTokenTTL: time.Hour, IntrospectionClient: &http.Client{Transport: d.asked, Timeout: 5 * time.Second}},
		s.clock.Now, slog.New(slog.NewJSONHandler(d.logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a)
	t.Cleanup(func() { srv.Close(); a.Close() })
	d.url = srv.URL
	return d
}

// send makes a request to the demo with the headers (name, value pairs).
func (d *demo) send(t *testing.T, method, path string, headers ...string) answer {
	t.Helper()
	req, err := http.NewRequest(method, d.url+path, strings.NewReader(`{"name":"Mercury"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, challenge: resp.Header.Get("WWW-Authenticate"), raw: raw}
	if err := json.Unmarshal(raw, &a.body); err != nil {
		t.Fatalf("%s %s: %d, body is not JSON: %q", method, path, resp.StatusCode, raw)
	}
	return a
}

// TestDemoAPIKeys runs the demo's API-key settings against a real
// Portcullis on PostgreSQL and Redis, as far as that goes before Portcullis
// mints keys: without DEMO_API_CLIENT_SECRET an X-API-Key answers 401 and
// nothing is introspected; with it, a key of the right format is checked
// through Portcullis's real introspection endpoint (an unminted key is
// inactive: 401 invalid_token, then cached), a malformed key is refused
// without a request, a request with a token and a key is a 400, access
// tokens work as before, a wrong secret and a stopped Portcullis fail
// closed (503), and no key reaches the logs.
func TestDemoAPIKeys(t *testing.T) {
	s := startStack(t, nil)
	fx := st.NewFixtures(t, s.in.App.Core)
	secret := fx.Client(t, clients.Spec{ID: "demo-api", Name: "Demo API", Grants: []string{"client_credentials"}, Scopes: []string{}})
	viewer := s.login(t, "web", "viewer", "").AccessToken
	key, other := wellFormedKey(t), wellFormedKey(t)
	malformed := key[:42] + "0"
	if key[42] == '0' {
		malformed = key[:42] + "1"
	}
	invalid := func(desc string) string { return `Bearer error="invalid_token", error_description="` + desc + `"` }

	t.Run("without the settings", func(t *testing.T) {
		d := s.startDemo(t, "demo-api", "")
		tests := []struct {
			name      string
			headers   []string
			status    int
			challenge string
		}{
			{"fail/X-API-Key is not accepted", []string{"X-API-Key", key}, 401, "Bearer"},
			{"fail/a Bearer key is not an access token", []string{"Authorization", "Bearer " + key}, 401, invalid("The access token is malformed.")},
			{"ok/an access token", []string{"Authorization", "Bearer " + viewer}, 200, ""},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				if a := d.send(t, "GET", "/projects", tc.headers...); a.status != tc.status || a.challenge != tc.challenge {
					t.Fatalf("%d %q; %s", a.status, a.challenge, a.raw)
				}
			})
		}
		if n := d.asked.n.Load(); n != 0 {
			t.Fatalf("%d introspection requests without the settings", n)
		}
	})

	t.Run("with the settings", func(t *testing.T) {
		d := s.startDemo(t, "demo-api", secret)
		tests := []struct {
			name, method, path string
			headers            []string
			status             int
			challenge          string
			asks               int64 // introspection requests, discovery included
		}{
			{"fail/an unminted key is inactive", "GET", "/projects", []string{"X-API-Key", key}, 401, invalid("The API key is not active."), 2},
			{"fail/the answer is cached, whichever header", "GET", "/projects", []string{"Authorization", "Bearer " + key}, 401, invalid("The API key is not active."), 0},
			{"fail/on every guarded route", "POST", "/projects", []string{"X-API-Key", other}, 401, invalid("The API key is not active."), 1},
			{"fail/a bad checksum costs no request", "GET", "/projects", []string{"X-API-Key", malformed}, 401, invalid("The API key is malformed."), 0},
			{"fail/nor as a Bearer key", "GET", "/me", []string{"Authorization", "Bearer " + malformed}, 401, invalid("The API key is malformed."), 0},
			{"fail/an access token in X-API-Key", "GET", "/projects", []string{"X-API-Key", viewer}, 401, invalid("The API key is malformed."), 0},
			{"fail/a token and a key", "GET", "/projects", []string{"Authorization", "Bearer " + viewer, "X-API-Key", key}, 400,
				`Bearer error="invalid_request", error_description="Send one credential: an Authorization header or an X-API-Key header, not both."`, 0},
			{"fail/no credential", "GET", "/projects", nil, 401, "Bearer", 0},
			{"ok/an access token as before", "GET", "/projects", []string{"Authorization", "Bearer " + viewer}, 200, "", 0},
			{"fail/an access token's scope as before", "POST", "/projects", []string{"Authorization", "Bearer " + viewer}, 403,
				`Bearer error="insufficient_scope", scope="projects:write", error_description="This request needs the permission projects:write."`, 0},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				before := d.asked.n.Load()
				a := d.send(t, tc.method, tc.path, tc.headers...)
				if a.status != tc.status || a.challenge != tc.challenge {
					t.Fatalf("%d %q; %s", a.status, a.challenge, a.raw)
				}
				if asked := d.asked.n.Load() - before; asked != tc.asks {
					t.Fatalf("%d requests to Portcullis, want %d", asked, tc.asks)
				}
			})
		}
		t.Run("fail/the cached answer ages out and is asked again", func(t *testing.T) {
			s.clock.Set(verify.MaxAPIKeyCacheTTL)
			defer s.clock.Set(0)
			before := d.asked.n.Load()
			if a := d.send(t, "GET", "/projects", "X-API-Key", key); a.status != 401 || d.asked.n.Load()-before != 1 {
				t.Fatalf("%d, %d requests", a.status, d.asked.n.Load()-before)
			}
		})
		t.Run("fail/a wrong secret fails closed", func(t *testing.T) {
			bad := s.startDemo(t, "demo-api", "not-the-secret")
			a := bad.send(t, "GET", "/projects", "X-API-Key", key)
			if a.status != 503 || a.challenge != "" || a.body["error"] != "temporarily_unavailable" {
				t.Fatalf("%d %q; %s", a.status, a.challenge, a.raw)
			}
			if strings.Contains(bad.logs.String(), "not-the-secret") {
				t.Fatal("the secret reached the log")
			}
		})
		t.Run("fail/Portcullis stopped: keys fail closed, tokens still verify offline", func(t *testing.T) {
			s.in.Stop()
			fresh := wellFormedKey(t)
			if a := d.send(t, "GET", "/projects", "X-API-Key", fresh); a.status != 503 || a.body["error"] != "temporarily_unavailable" {
				t.Fatalf("%d %s", a.status, a.raw)
			}
			if a := d.send(t, "GET", "/projects", "Authorization", "Bearer "+viewer); a.status != 200 {
				t.Fatalf("an access token with Portcullis stopped: %d %s", a.status, a.raw)
			}
		})
		logs := d.logs.String()
		if !strings.Contains(logs, "request refused") {
			t.Fatalf("no refusal logged: %s", logs)
		}
		for _, k := range []string{key, other, malformed, key[5:], secret} {
			if strings.Contains(logs, k) {
				t.Fatal("a key or the secret reached the demo's log")
			}
		}
	})
}

// TestDemoAPIKeysFromPortcullis runs keys minted by a running Portcullis
// (POST /auth/api-keys and, for a machine user, /admin/users/{id}/api-keys)
// through the demo API: a key passes the scope requirements a token of the
// same scope passes and no role requirement; /me shows the key's client
// and no roles; a revoked key (DELETE and /oauth2/revoke by value), a
// deactivated owner and a demoted owner take effect once the demo's
// cached answer ages out (at most 5 s), not before; a token exchanged from
// a key (RFC 8693) verifies offline in the demo.
func TestDemoAPIKeysFromPortcullis(t *testing.T) {
	s := startStack(t, nil)
	fx := st.NewFixtures(t, s.in.App.Core)
	secret := fx.Client(t, clients.Spec{ID: "demo-api", Name: "Demo API", Grants: []string{"client_credentials"}, Scopes: []string{}})
	d := s.startDemo(t, "demo-api", secret)
	mint := func(t *testing.T, path, bearer string, scopes ...string) (id, key string) {
		t.Helper()
		var created struct{ ID, Key string }
		s.pc.PostJSON(path, map[string]any{"name": "demo " + strings.Join(scopes, " "), "scopes": scopes}, st.Bearer(bearer)).
			ExpectStatus(http.StatusCreated).JSON(&created)
		if verify.CheckAPIKey(created.Key) != nil {
			t.Fatalf("a minted key fails keys/verify's format check: %q", created.Key)
		}
		return created.ID, created.Key
	}
	afterCache := func(t *testing.T) {
		t.Helper()
		s.clock.Set(time.Duration(s.clock.offset.Load()) + verify.MaxAPIKeyCacheTTL + time.Second)
	}
	t.Cleanup(func() { s.clock.Set(0) })
	// Keys are made with tokens of Portcullis's own audience (the hosted
	// pages' and console's): a token minted for the demo API gives a key no
	// admin permission.
	s.secrets["account"] = fx.AdminClient(t, "account")
	viewerTok := s.login(t, "account", "viewer", "").AccessToken
	editorTok := s.login(t, "account", "editor", "").AccessToken
	rootTok := s.login(t, "account", "super_admin", "").AccessToken
	viewerID, viewerKey := mint(t, "/auth/api-keys", viewerTok, "projects:read")
	_, editorKey := mint(t, "/auth/api-keys", editorTok, "projects:read", "projects:write")
	_, rootKey := mint(t, "/auth/api-keys", rootTok, "projects:read", "projects:write", "users:read")

	scopeErr := `Bearer error="insufficient_scope", scope="projects:write", error_description="This request needs the permission projects:write."`
	for _, tc := range []struct {
		name, method, path string
		headers            []string
		status             int
		challenge          string
	}{
		{"ok/a viewer's key reads, in X-API-Key", "GET", "/projects", []string{"X-API-Key", viewerKey}, 200, ""},
		{"ok/and as a Bearer key", "GET", "/projects", []string{"Authorization", "Bearer " + viewerKey}, 200, ""},
		{"fail/a viewer's key does not write", "POST", "/projects", []string{"X-API-Key", viewerKey}, 403, scopeErr},
		{"ok/an editor's key writes", "POST", "/projects", []string{"X-API-Key", editorKey}, 201, ""},
		{"fail/a super_admin's key names no role", "GET", "/admin/metrics", []string{"X-API-Key", rootKey}, 403, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := d.send(t, tc.method, tc.path, tc.headers...)
			if a.status != tc.status || (tc.challenge != "" && a.challenge != tc.challenge) {
				t.Fatalf("%d %q; %s", a.status, a.challenge, a.raw)
			}
		})
	}
	t.Run("ok/me shows the key's client and no roles", func(t *testing.T) {
		a := d.send(t, "GET", "/me", "X-API-Key", viewerKey)
		roles, _ := a.body["roles"].([]any)
		if a.status != 200 || a.body["client_id"] != "apikey:"+viewerID || a.body["sub"] != s.users["viewer"].ID || roles == nil || len(roles) != 0 ||
			a.body["scope"] != "projects:read" {
			t.Fatalf("%d %s", a.status, a.raw)
		}
	})
	t.Run("ok/a token exchanged from a key verifies offline", func(t *testing.T) {
		exchange := "urn:ietf:params:oauth:grant-type:token-exchange"
		gwSecret := fx.Client(t, clients.Spec{ID: "gateway", Name: "Gateway", Grants: []string{exchange}})
		tok := s.pc.PostForm("/oauth2/token", url.Values{"grant_type": {exchange},
			"subject_token": {editorKey}, "subject_token_type": {"urn:portcullis:params:oauth:token-type:api_key"}},
			st.Basic("gateway", gwSecret)).Map()
		at, _ := tok["access_token"].(string)
		if at == "" || tok["refresh_token"] != nil {
			t.Fatalf("token exchange: %v", tok)
		}
		if a := s.call(t, "GET", "/projects", at, nil); a.status != 200 {
			t.Fatalf("%d %s", a.status, a.raw)
		}
		if a := s.call(t, "GET", "/me", at, nil); a.status != 200 || a.body["client_id"] != "gateway" || len(a.body["roles"].([]any)) != 0 {
			t.Fatalf("/me with the exchanged token: %d %s", a.status, a.raw)
		}
	})
	t.Run("fail/revoked by value: refused once the cached answer ages out", func(t *testing.T) {
		_, key := mint(t, "/auth/api-keys", viewerTok, "projects:read")
		if a := d.send(t, "GET", "/projects", "X-API-Key", key); a.status != 200 {
			t.Fatalf("before revoking: %d %s", a.status, a.raw)
		}
		s.pc.PostForm("/oauth2/revoke", url.Values{"token": {key}}).ExpectStatus(http.StatusOK)
		if a := d.send(t, "GET", "/projects", "X-API-Key", key); a.status != 200 {
			t.Fatalf("within the cache: %d (the demo caches for at most 5 s)", a.status)
		}
		afterCache(t)
		if a := d.send(t, "GET", "/projects", "X-API-Key", key); a.status != 401 {
			t.Fatalf("after the cache: %d %s", a.status, a.raw)
		}
	})
	t.Run("fail/revoked by its owner", func(t *testing.T) {
		id, key := mint(t, "/auth/api-keys", viewerTok, "projects:read")
		s.pc.Delete("/auth/api-keys/"+id, st.Bearer(viewerTok)).ExpectStatus(http.StatusNoContent)
		afterCache(t)
		if a := d.send(t, "GET", "/projects", "X-API-Key", key); a.status != 401 {
			t.Fatalf("%d %s", a.status, a.raw)
		}
	})
	t.Run("fail/a demoted owner's key narrows", func(t *testing.T) {
		ed := fx.User(t, "ed2@example.com", password, "editor")
		tok := s.pc.PostForm("/oauth2/token", st.PasswordForm("ed2@example.com", password, ""), st.Basic("account", s.secrets["account"])).Token().AccessToken
		_, key := mint(t, "/auth/api-keys", tok, "projects:read", "projects:write")
		if a := d.send(t, "POST", "/projects", "X-API-Key", key); a.status != 201 {
			t.Fatalf("before the demotion: %d %s", a.status, a.raw)
		}
		if _, err := s.in.App.Core.Store.RevokeRole(context.Background(), ed.ID, "editor"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.in.App.Core.Store.GrantRole(context.Background(), ed.ID, "viewer"); err != nil {
			t.Fatal(err)
		}
		afterCache(t)
		if a := d.send(t, "POST", "/projects", "X-API-Key", key); a.status != 403 || a.challenge != scopeErr {
			t.Fatalf("after the demotion: %d %q", a.status, a.challenge)
		}
		if a := d.send(t, "GET", "/projects", "X-API-Key", key); a.status != 200 {
			t.Fatalf("reading after the demotion: %d", a.status)
		}
	})
	t.Run("fail/a deactivated owner's key", func(t *testing.T) {
		v2 := fx.User(t, "v2@example.com", password, "viewer")
		tok := s.pc.PostForm("/oauth2/token", st.PasswordForm("v2@example.com", password, ""), st.Basic("account", s.secrets["account"])).Token().AccessToken
		_, key := mint(t, "/auth/api-keys", tok, "projects:read")
		if _, err := s.in.App.Core.Store.UpdateUser(context.Background(), v2.ID, func(u *store.User) error { u.Active = false; return nil }); err != nil {
			t.Fatal(err)
		}
		afterCache(t)
		if a := d.send(t, "GET", "/projects", "X-API-Key", key); a.status != 401 {
			t.Fatalf("%d %s", a.status, a.raw)
		}
	})
	t.Run("ok/a machine user's key", func(t *testing.T) {
		admin := st.Bearer(s.pc.PostForm("/oauth2/token", st.PasswordForm("super_admin@example.com", password, ""),
			st.Basic("admin-tools", fx.AdminClient(t, "admin-tools"))).Token().AccessToken)
		var m struct{ ID string }
		s.pc.PostJSON("/admin/users", map[string]any{"kind": "machine", "name": "ci", "roles": []string{"editor"}}, admin).
			ExpectStatus(http.StatusCreated).JSON(&m)
		var created struct{ Key string }
		s.pc.PostJSON("/admin/users/"+m.ID+"/api-keys", map[string]any{"name": "deploy", "scopes": []string{"projects:write"}}, admin).
			ExpectStatus(http.StatusCreated).JSON(&created)
		if a := d.send(t, "POST", "/projects", "X-API-Key", created.Key); a.status != 201 || a.body["owner"] != m.ID {
			t.Fatalf("%d %s", a.status, a.raw)
		}
	})
}

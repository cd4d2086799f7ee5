package main

import (
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/keys/verify"
	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
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

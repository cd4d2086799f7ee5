package verify_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/keys/verify"
	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// portcullis is a running Portcullis with a user, a password client "web"
// and a confidential client_credentials client "resource-server" (the resource server).
type portcullis struct {
	in        *st.Instance
	c         *st.Client
	webSecret string
	rsSecret  string
}

const (
	aliceEmail = "alice@example.com"
	alicePass  = "correct horse battery staple"
)

func startPortcullis(t *testing.T, backend st.Backend, env map[string]string) *portcullis {
	t.Helper()
	e := st.NewEnv(t, backend)
	for k, v := range env {
		e[k] = v
	}
	in := st.Start(t, e)
	fx := st.NewFixtures(t, in.App.Core)
	fx.User(t, aliceEmail, alicePass, "admin")
	return &portcullis{in: in, c: in.Client(t),
		webSecret: fx.Client(t, clients.Spec{ID: "web", Name: "Web"}),
		rsSecret:  fx.Client(t, clients.Spec{ID: "resource-server", Name: "Resource server", Grants: []string{"client_credentials"}, Scopes: []string{}}),
	}
}

func (p *portcullis) login(t *testing.T, scope string) st.TokenResponse {
	t.Helper()
	return p.c.PostForm("/oauth2/token", st.PasswordForm(aliceEmail, alicePass, scope), st.Basic("web", p.webSecret)).Token()
}

func (p *portcullis) verifier(t *testing.T, now func() time.Time) (*verify.Verifier, *verify.RemoteKeySet) {
	t.Helper()
	ks, err := verify.NewRemoteKeySet(verify.RemoteKeySetOptions{Issuer: p.in.Config.Issuer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ks.Close)
	v, err := verify.New(ks, verify.Config{Issuer: p.in.Config.Issuer, Audience: "api", Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return v, ks
}

// TestPortcullisTokens: access tokens of a real Portcullis verify for every
// signing algorithm it offers, with every RFC 9068 claim; its id tokens do not.
func TestPortcullisTokens(t *testing.T) {
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			p := startPortcullis(t, st.SQLite, map[string]string{"PORTCULLIS_SIGNING_ALG": alg})
			v, _ := p.verifier(t, nil)
			tok := p.login(t, "openid users:read")
			c, err := v.Verify(context.Background(), tok.AccessToken)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if c.Subject == "" || c.ClientID != "web" || c.SessionID == "" || c.ID == "" || !c.HasScope("users:read") || c.HasScope("users:write") ||
				len(c.Roles) != 0 || c.ExpiresAt.Before(time.Now()) {
				// Roles follow the grant: users:read does not cover admin.
				t.Fatalf("claims %s", c.Raw())
			}
			full, err := v.Verify(context.Background(), p.login(t, "").AccessToken)
			if err != nil || len(full.Roles) != 1 || full.Roles[0] != "admin" {
				t.Fatalf("full login: roles %v, %v", full.Roles, err)
			}
			if tok.IDToken == "" {
				t.Fatal("no id token for scope openid")
			}
			if _, err := v.Verify(context.Background(), tok.IDToken); !errors.Is(err, verify.ErrWrongType) {
				t.Fatalf("id token as access token: %v", err)
			}
		})
	}
}

// countingTransport counts requests; it changes nothing.
type countingTransport struct{ n atomic.Int64 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultTransport.RoundTrip(r)
}

// TestIntrospector: against a real Portcullis, a revoked token is seen as
// inactive once the short cache expires; answers within the cache cost no
// request; a wrong secret and an unreachable issuer fail closed.
func TestIntrospector(t *testing.T) {
	p := startPortcullis(t, st.SQLite, nil)
	clk := newClock()
	counter := &countingTransport{}
	in, err := verify.NewIntrospector(verify.IntrospectorOptions{Issuer: p.in.Config.Issuer, ClientID: "resource-server", ClientSecret: p.rsSecret,
		HTTPClient: &http.Client{Transport: counter, Timeout: 5 * time.Second}, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	v, _ := p.verifier(t, nil)
	g := verify.NewGuard(v, verify.GuardOptions{Introspector: in})
	sensitive := g.Require(verify.Scope("users:write"), verify.Online())
	ctx := context.Background()

	tok := p.login(t, "").AccessToken
	if ok, err := in.Active(ctx, tok); err != nil || !ok {
		t.Fatalf("fresh token: %v %v", ok, err)
	}
	asked := counter.n.Load() // discovery + one introspection
	if ok, err := in.Active(ctx, tok); err != nil || !ok || counter.n.Load() != asked {
		t.Fatalf("cached answer: %v %v, %d requests", ok, err, counter.n.Load()-asked)
	}
	if w, _ := serve(sensitive, "Bearer "+tok); w.Code != 204 {
		t.Fatalf("guard with an active token: %d %s", w.Code, w.Body)
	}

	p.c.PostForm("/oauth2/revoke", url.Values{"token": {tok}}, st.Basic("web", p.webSecret)).ExpectStatus(200)
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatalf("offline verification cannot see a revocation, and should still pass: %v", err)
	}
	if ok, _ := in.Active(ctx, tok); !ok {
		t.Fatal("the cached answer expired early")
	}
	clk.Advance(verify.DefaultIntrospectionCacheTTL)
	if ok, err := in.Active(ctx, tok); err != nil || ok {
		t.Fatalf("revoked token after the cache TTL: %v %v", ok, err)
	}
	w, _ := serve(sensitive, "Bearer "+tok)
	if w.Code != 401 || w.Header().Get("WWW-Authenticate") != `Bearer error="invalid_token", error_description="The access token is no longer active."` {
		t.Fatalf("guard with a revoked token: %d %q", w.Code, w.Header().Get("WWW-Authenticate"))
	}

	t.Run("fail/wrong secret", func(t *testing.T) {
		bad, err := verify.NewIntrospector(verify.IntrospectorOptions{Endpoint: p.in.Config.Issuer + "/oauth2/introspect", ClientID: "resource-server", ClientSecret: "wrong"})
		if err != nil {
			t.Fatal(err)
		}
		ok, err := bad.Active(ctx, p.login(t, "").AccessToken)
		if ok || !errors.Is(err, verify.ErrIntrospectionUnavailable) || !strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), "wrong") {
			t.Fatalf("Active with a wrong secret: %v %v", ok, err)
		}
	})
	t.Run("fail/no cache asks every time", func(t *testing.T) {
		c := &countingTransport{}
		nc, err := verify.NewIntrospector(verify.IntrospectorOptions{Endpoint: p.in.Config.Issuer + "/oauth2/introspect", ClientID: "resource-server",
			ClientSecret: p.rsSecret, CacheTTL: verify.NoCache, HTTPClient: &http.Client{Transport: c}})
		if err != nil {
			t.Fatal(err)
		}
		fresh := p.login(t, "").AccessToken
		for i := 0; i < 3; i++ {
			if ok, err := nc.Active(ctx, fresh); !ok || err != nil {
				t.Fatal(ok, err)
			}
		}
		if c.n.Load() != 3 {
			t.Fatalf("%d requests for 3 uncached checks", c.n.Load())
		}
	})

	// The issuer goes away: a token not in the cache cannot be confirmed, so
	// the sensitive route refuses it (503), while routes without Online keep
	// working offline.
	fresh := p.login(t, "").AccessToken
	p.in.Stop()
	ok, err := in.Active(ctx, fresh)
	if ok || !errors.Is(err, verify.ErrIntrospectionUnavailable) {
		t.Fatalf("Active with the issuer down: %v %v", ok, err)
	}
	if w, _ := serve(sensitive, "Bearer "+fresh); w.Code != 503 || !strings.Contains(w.Body.String(), "temporarily_unavailable") {
		t.Fatalf("sensitive route with the issuer down: %d %s", w.Code, w.Body)
	}
	if w, _ := serve(g.RequireScope("users:write"), "Bearer "+fresh); w.Code != 204 {
		t.Fatalf("offline route with the issuer down: %d %s", w.Code, w.Body)
	}
}

func TestNewIntrospectorRefusesBadOptions(t *testing.T) {
	tests := []struct {
		name string
		opts verify.IntrospectorOptions
	}{
		{"fail/no client", verify.IntrospectorOptions{Endpoint: "https://issuer.example/introspect"}},
		{"fail/no secret", verify.IntrospectorOptions{Endpoint: "https://issuer.example/introspect", ClientID: "resource-server"}},
		{"fail/no endpoint or issuer", verify.IntrospectorOptions{ClientID: "resource-server", ClientSecret: "s"}},
		{"fail/relative endpoint", verify.IntrospectorOptions{Endpoint: "/introspect", ClientID: "resource-server", ClientSecret: "s"}},
		{"fail/bad issuer", verify.IntrospectorOptions{Issuer: "issuer", ClientID: "resource-server", ClientSecret: "s"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := verify.NewIntrospector(tc.opts); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

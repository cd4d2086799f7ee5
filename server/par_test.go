package server_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/authorize"
	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// Pushed authorization requests (RFC 9126) over HTTP on both backends: a
// relying party pushes its request to /oauth2/par (authenticated as at the
// token endpoint), sends the browser to /oauth2/authorize with client_id and
// the request_uri alone, and redeems the code with golang.org/x/oauth2.

// parRequest is an authorization request as a client pushes it.
func parRequest(state, verifier string) url.Values {
	return url.Values{"response_type": {"code"}, "redirect_uri": {siCallback}, "scope": {"openid"}, "state": {state},
		"nonce": {"n-" + state}, "code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)},
		"code_challenge_method": {"S256"}}
}

// push posts form to /oauth2/par (the answer is checked against the OpenAPI description).
func (d *siDeployment) push(t *testing.T, form url.Values, opts ...st.Option) *st.Response {
	t.Helper()
	return d.in.Client(t).PostForm("/oauth2/par", form, opts...)
}

// pushed pushes form and returns the request_uri of the 201.
func (d *siDeployment) pushed(t *testing.T, form url.Values, opts ...st.Option) string {
	t.Helper()
	r := d.push(t, form, opts...).ExpectStatus(http.StatusCreated)
	if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control %q, want no-store", cc)
	}
	var out struct {
		RequestURI string `json:"request_uri"`
		ExpiresIn  int    `json:"expires_in"`
	}
	r.JSON(&out)
	if !strings.HasPrefix(out.RequestURI, "urn:ietf:params:oauth:request_uri:") || out.ExpiresIn != 60 {
		t.Fatalf("PAR answer %s", r.Body)
	}
	return out.RequestURI
}

// authorizeURI is the authorization request of a pushed one.
func (d *siDeployment) authorizeURI(clientID, requestURI string, extra ...string) string {
	q := url.Values{"client_id": {clientID}, "request_uri": {requestURI}}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	return d.in.URL + "/oauth2/authorize?" + q.Encode()
}

// expectErrorPage: the HTML error page with status, never a redirect.
func expectErrorPage(t *testing.T, p siPage, status int, what string) {
	t.Helper()
	if p.StatusCode != status || p.Header.Get("Location") != "" || !strings.HasPrefix(p.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("%s: %d %s (Location %q), want the HTML error page %d\n%s", what, p.StatusCode, p.Header.Get("Content-Type"),
			p.Header.Get("Location"), status, p.body)
	}
}

// TestPushedAuthorizationRequests: PAR → authorize → login → consent →
// code → token with x/oauth2, the request proceeding from the pushed
// parameters alone; the request_uri is single-use, expires, and is refused
// to another client; PAR authenticates the client as the token endpoint does
// (401 invalid_client with the Basic challenge) and answers every refusal in
// JSON; a client registered with require_pushed_authorization_requests is
// refused a plain request at its redirect URI and served a pushed one.
// Fails before this change: /oauth2/par was 404 and every request_uri was
// request_uri_not_supported.
func TestPushedAuthorizationRequests(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSignIn(t, b)
			ctx := context.Background()
			fx := st.NewFixtures(t, d.in.App.Core)
			parSecret := fx.Client(t, clients.Spec{ID: "paronly", Name: "PAR App", Grants: []string{"authorization_code"},
				RedirectURIs: []string{siCallback}, RequirePushedAuthorizationRequests: true})
			hc := siBrowser(t)

			// End to end: a confidential client pushes with HTTP Basic.
			conf := d.oauth("third", d.thirdSecret, oidc.ScopeOpenID)
			verifier := oauth2.GenerateVerifier()
			uri := d.pushed(t, parRequest("s1", verifier), st.Basic("third", d.thirdSecret))
			// Query parameters beside request_uri are ignored (RFC 9126 §4).
			login := siGet(t, hc, d.authorizeURI("third", uri, "state", "evil", "redirect_uri", "https://evil.example/cb",
				"scope", "openid offline_access"))
			if login.StatusCode != http.StatusOK || !strings.Contains(login.body, `name="username"`) {
				t.Fatalf("authorize with the request_uri: %d, want the login page\n%s", login.StatusCode, login.body)
			}
			consent := login.submit(t, hc, url.Values{"username": {siEmail}, "password": {siPassword}})
			if consent.StatusCode != http.StatusOK || !strings.Contains(consent.body, `value="allow"`) {
				t.Fatalf("after login: %d, want the consent page\n%s", consent.StatusCode, consent.body)
			}
			q := d.callback(t, consent.submit(t, hc, url.Values{"decision": {"allow"}}))
			if q.Get("state") != "s1" || q.Get("code") == "" {
				t.Fatalf("callback %v: want the pushed state", q)
			}
			tok, err := conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatalf("x/oauth2 exchange: %v", err)
			}
			idt, err := d.provider.Verifier(&oidc.Config{ClientID: "third"}).Verify(ctx, tok.Extra("id_token").(string))
			if err != nil || idt.Nonce != "n-s1" {
				t.Fatalf("id token %v (nonce %q), want the pushed nonce", err, idt.Nonce)
			}
			if sc, _ := tok.Extra("scope").(string); sc != "openid" {
				t.Fatalf("scope %q: the query's scope must be ignored", sc)
			}
			// Single use.
			expectErrorPage(t, siGet(t, hc, d.authorizeURI("third", uri)), http.StatusBadRequest, "the request_uri a second time")

			// A public client pushes with client_id alone; its request_uri is
			// refused to another client (and spent).
			spaURI := d.pushed(t, url.Values{"client_id": {"spa"}, "response_type": {"code"}, "redirect_uri": {siCallback},
				"scope": {"openid"}, "state": {"s2"}, "code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)},
				"code_challenge_method": {"S256"}})
			expectErrorPage(t, siGet(t, hc, d.authorizeURI("third", spaURI)), http.StatusBadRequest, "another client's request_uri")
			expectErrorPage(t, siGet(t, hc, d.authorizeURI("spa", spaURI)), http.StatusBadRequest, "a request_uri refused to another client")
			// Without client_id, and unknown.
			noID := d.pushed(t, parRequest("s3", verifier), st.Basic("third", d.thirdSecret))
			expectErrorPage(t, siGet(t, hc, d.in.URL+"/oauth2/authorize?request_uri="+url.QueryEscape(noID)), http.StatusBadRequest, "no client_id")
			expectErrorPage(t, siGet(t, hc, d.authorizeURI("third", authorize.RequestURIPrefix+strings.Repeat("A", 43))),
				http.StatusBadRequest, "an unknown request_uri")
			// A request_uri that is not ours is still request_uri_not_supported at the redirect URI.
			other := d.callback(t, siGet(t, hc, conf.AuthCodeURL("s4", oauth2.S256ChallengeOption(verifier),
				oauth2.SetAuthURLParam("request_uri", "https://rp.example/request.jwt"))))
			if other.Get("error") != "request_uri_not_supported" || other.Get("state") != "s4" {
				t.Fatalf("a foreign request_uri: %v", other)
			}

			// Expiry: a request kept with a 1 s lifetime (the server has no
			// injectable clock; authorize's tests inject one) is refused once it
			// has passed.
			third, err := d.in.App.Core.Store.GetClient(ctx, "third")
			if err != nil {
				t.Fatal(err)
			}
			env := authorize.Env{Issuer: d.in.Config.Issuer, Clients: d.in.App.Core.Store, Hints: d.in.App.Tokens,
				Permissions: d.in.App.Core.Policy, Pushed: d.in.App.Once}
			short, err := authorize.Push(ctx, parRequest("s5", verifier), third, env, time.Second, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(1100 * time.Millisecond) // the lifetime itself is the behaviour under test
			expectErrorPage(t, siGet(t, hc, d.authorizeURI("third", short.RequestURI)), http.StatusBadRequest, "an expired request_uri")

			// A client that must push: a plain request is refused at its redirect URI ...
			parConf := d.oauth("paronly", parSecret, oidc.ScopeOpenID)
			refused := d.callback(t, siGet(t, hc, parConf.AuthCodeURL("s6", oauth2.S256ChallengeOption(verifier))))
			if refused.Get("error") != "invalid_request" || refused.Get("state") != "s6" ||
				refused.Get("error_description") != "This client must use pushed authorization requests." {
				t.Fatalf("a plain request of a client that must push: %v", refused)
			}
			// ... and a pushed one (client_secret_post) is served (SSO: the
			// session is live; a third-party client asks consent).
			form := parRequest("s7", verifier)
			form.Set("client_id", "paronly")
			form.Set("client_secret", parSecret)
			asked := siGet(t, hc, d.authorizeURI("paronly", d.pushed(t, form)))
			if asked.StatusCode != http.StatusOK || !strings.Contains(asked.body, "PAR App") {
				t.Fatalf("a pushed request of a client that must push: %d\n%s", asked.StatusCode, asked.body)
			}
			q7 := d.callback(t, asked.submit(t, hc, url.Values{"decision": {"allow"}}))
			if q7.Get("state") != "s7" {
				t.Fatalf("callback %v", q7)
			}
			if _, err := parConf.Exchange(ctx, q7.Get("code"), oauth2.VerifierOption(verifier)); err != nil {
				t.Fatalf("x/oauth2 exchange for the client that must push: %v", err)
			}

			// PAR refusals, in JSON.
			with := func(kv ...string) url.Values {
				v := parRequest("sx", verifier)
				for i := 0; i+1 < len(kv); i += 2 {
					if kv[i+1] == "<del>" {
						v.Del(kv[i])
					} else {
						v.Set(kv[i], kv[i+1])
					}
				}
				return v
			}
			basic := st.Basic("third", d.thirdSecret)
			for _, tc := range []struct {
				name   string
				form   url.Values
				opts   []st.Option
				status int
				code   string
			}{
				{"fail/no client authentication", with(), nil, 401, "invalid_client"},
				{"fail/confidential client without its secret", with("client_id", "third"), nil, 401, "invalid_client"},
				{"fail/wrong secret (post)", with("client_id", "third", "client_secret", "wrong"), nil, 401, "invalid_client"},
				{"fail/wrong secret (Basic)", with(), []st.Option{st.Basic("third", "wrong")}, 401, "invalid_client"},
				{"fail/unknown client", with(), []st.Option{st.Basic("nobody", "x")}, 401, "invalid_client"},
				{"fail/public client with a secret", with("client_id", "spa", "client_secret", "x"), nil, 401, "invalid_client"},
				{"fail/client_id of another client", with("client_id", "first"), []st.Option{basic}, 400, "invalid_request"},
				{"fail/unregistered redirect_uri", with("redirect_uri", "https://evil.example/cb"), []st.Option{basic}, 400, "invalid_request"},
				{"fail/PKCE plain", with("code_challenge_method", "plain"), []st.Option{basic}, 400, "invalid_request"},
				{"fail/PKCE short challenge", with("code_challenge", "abc"), []st.Option{basic}, 400, "invalid_request"},
				{"fail/PKCE missing", with("code_challenge", "<del>", "code_challenge_method", "<del>"), []st.Option{basic}, 400, "invalid_request"},
				{"fail/request_uri inside PAR", with("request_uri", "urn:ietf:params:oauth:request_uri:abc"), []st.Option{basic}, 400, "invalid_request"},
				{"fail/unknown scope", with("scope", "openid phone"), []st.Option{basic}, 400, "invalid_scope"},
				{"fail/response_type token", with("response_type", "token"), []st.Option{basic}, 400, "unsupported_response_type"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					r := d.push(t, tc.form, tc.opts...).ExpectError(tc.status, tc.code)
					if r.Header.Get("Cache-Control") != "no-store" {
						t.Fatalf("Cache-Control %q", r.Header.Get("Cache-Control"))
					}
					if tc.status == 401 && r.Header.Get("WWW-Authenticate") != `Basic realm="portcullis"` {
						t.Fatalf("WWW-Authenticate %q, want the Basic challenge", r.Header.Get("WWW-Authenticate"))
					}
				})
			}
			t.Run("fail/JSON body", func(t *testing.T) {
				d.in.Client(t).PostJSON("/oauth2/par", map[string]string{"client_id": "spa"}).ExpectError(400, "invalid_request")
			})
			t.Run("fail/repeated parameter", func(t *testing.T) {
				f := with()
				f.Add("scope", "openid")
				d.push(t, f, basic).ExpectError(400, "invalid_request")
			})

			// Nothing of a pushed request reached the log.
			logs := d.in.Logs.String()
			ref := strings.TrimPrefix(uri, authorize.RequestURIPrefix)
			if !strings.Contains(logs, "/oauth2/authorize") || strings.Contains(logs, ref) || strings.Contains(logs, parSecret) {
				t.Fatal("the server log holds a request_uri or a client secret (or logged no request at all)")
			}
		})
	}
}

// TestPushedRequestUsedOnce: many browsers bring one request_uri to
// /oauth2/authorize at once; exactly one gets the login page, every other
// the error page.
func TestPushedRequestUsedOnce(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSignIn(t, b)
			uri := d.pushed(t, parRequest("s", oauth2.GenerateVerifier()), st.Basic("third", d.thirdSecret))
			target := d.authorizeURI("third", uri)
			const n = 8
			status := make([]int, n)
			errs := make([]error, n)
			var start, done sync.WaitGroup
			start.Add(1)
			for i := range n {
				done.Add(1)
				go func() {
					defer done.Done()
					hc := &http.Client{Timeout: 30 * time.Second,
						CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
					start.Wait()
					resp, err := hc.Get(target)
					if err != nil {
						errs[i] = err
						return
					}
					resp.Body.Close()
					status[i] = resp.StatusCode
				}()
			}
			start.Done()
			done.Wait()
			served := 0
			for i := range n {
				switch {
				case errs[i] != nil:
					t.Fatalf("request %d: %v", i, errs[i])
				case status[i] == http.StatusOK:
					served++
				case status[i] != http.StatusBadRequest:
					t.Fatalf("request %d: status %d, want 200 once and 400 otherwise", i, status[i])
				}
			}
			if served != 1 {
				t.Fatalf("%d of %d concurrent uses of one request_uri were served, want exactly 1", served, n)
			}
		})
	}
}

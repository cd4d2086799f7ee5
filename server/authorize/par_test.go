package authorize

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// parEnv is testEnv with a pushed-request store and a client that must push.
func parEnv(once PendingStore) Env {
	env := testEnv()
	cl := env.Clients.(fakeClients)
	cl["paronly"] = store.Client{ID: "paronly", Grants: []string{"authorization_code"}, RequirePKCE: true,
		RequirePushedAuthorizationRequests: true, RedirectURIs: []string{"https://par.example/cb"}}
	env.Pushed = once
	return env
}

// pushBody is a pushed request of "web" as a client sends it (client_id
// and client_secret in the body: client_secret_post).
func pushBody() url.Values {
	v := baseParams()
	v.Set("client_secret", "the secret")
	v.Set("nonce", "n-1")
	return v
}

func mustPush(t *testing.T, env Env, client string, form url.Values) string {
	t.Helper()
	c, err := env.Clients.GetClient(context.Background(), client)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Push(context.Background(), form, c, env, PushedRequestTTL, testNow)
	if err != nil {
		t.Fatalf("Push: %v", err)
	}
	return p.RequestURI
}

func wantPage(t *testing.T, err error, status int) {
	t.Helper()
	var pe *PageError
	if !errors.As(err, &pe) || pe.Status != status {
		t.Fatalf("error %v, want the HTML error page %d (never a redirect)", err, status)
	}
}

// TestPush: /oauth2/par's validation, without HTTP. A valid request is kept
// once under the hash of a 256-bit reference for 60 s and never with the
// client's secret; every failure is a JSON error (RFC 9126 §2.3) with the
// code /authorize would deliver, invalid_request for what it would show on
// its page, and a request_uri in the body is invalid_request.
func TestPush(t *testing.T) {
	once := newFakeOnce()
	env := parEnv(once)
	web, _ := env.Clients.GetClient(context.Background(), "web")
	p, err := Push(context.Background(), pushBody(), web, env, PushedRequestTTL, testNow)
	if err != nil {
		t.Fatalf("Push: %v", err)
	}
	ref, ok := strings.CutPrefix(p.RequestURI, "urn:ietf:params:oauth:request_uri:")
	if !ok || len(ref) != 43 || p.ExpiresIn != 60 {
		t.Fatalf("answer %+v: want urn:ietf:params:oauth:request_uri: and 43 characters (256 bits), expires_in 60", p)
	}
	val, err := once.PeekOnce(context.Background(), store.OncePushedRequest, token.HashSecret(ref), testNow.Add(59*time.Second))
	if err != nil || strings.Contains(string(val), "the secret") || !strings.Contains(string(val), `"client_id":"web"`) {
		t.Fatalf("stored %s, %v: want the request without the client secret", val, err)
	}
	if _, err := once.PeekOnce(context.Background(), store.OncePushedRequest, token.HashSecret(ref), testNow.Add(PushedRequestTTL)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("at 60 s the record is %v, want gone", err)
	}
	if p2 := mustPush(t, env, "web", pushBody()); p2 == p.RequestURI {
		t.Fatal("two pushes got the same request_uri")
	}
	// Basic authentication: no client_id in the body; the authenticated client's is used.
	basic := pushBody()
	basic.Del("client_id")
	basic.Del("client_secret")
	if mustPush(t, env, "web", basic) == "" {
		t.Fatal("no request_uri")
	}

	set := func(kv ...string) url.Values {
		v := pushBody()
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "<del>" {
				v.Del(kv[i])
			} else {
				v.Set(kv[i], kv[i+1])
			}
		}
		return v
	}
	for _, tc := range []struct {
		name   string
		client string
		form   url.Values
		status int
		code   string
	}{
		{"fail/request_uri in the body", "web", set("request_uri", "urn:ietf:params:oauth:request_uri:abc"), 400, "invalid_request"},
		{"fail/any request_uri in the body", "web", set("request_uri", "https://rp.example/req.jwt"), 400, "invalid_request"},
		{"fail/unregistered redirect_uri", "web", set("redirect_uri", "https://evil.example/cb"), 400, "invalid_request"},
		{"fail/no redirect_uri with two registered", "web", set("redirect_uri", "<del>"), 400, "invalid_request"},
		{"fail/repeated parameter", "web", func() url.Values { v := pushBody(); v.Add("scope", "openid"); return v }(), 400, "invalid_request"},
		{"fail/over 16 KiB", "web", set("extra", strings.Repeat("a", 16<<10)), 400, "invalid_request"},
		{"fail/state not VSCHAR", "web", set("state", "st\x01"), 400, "invalid_request"},
		{"fail/PKCE missing for a require_pkce client", "web", set("code_challenge", "<del>", "code_challenge_method", "<del>"), 400, "invalid_request"},
		{"fail/PKCE plain", "web", set("code_challenge_method", "plain"), 400, "invalid_request"},
		{"fail/PKCE short challenge", "web", set("code_challenge", "abc"), 400, "invalid_request"},
		{"fail/response_type token", "web", set("response_type", "token"), 400, "unsupported_response_type"},
		{"fail/response_type missing", "web", set("response_type", "<del>"), 400, "invalid_request"},
		{"fail/unknown scope", "web", set("scope", "openid phone"), 400, "invalid_scope"},
		{"fail/request object", "web", set("request", "eyJ.x.y"), 400, "request_not_supported"},
		{"fail/client without the code grant", "pwonly", set("redirect_uri", "https://pw.example/cb"), 400, "unauthorized_client"},
		{"fail/store down reading the client", "broken", set("redirect_uri", "https://pw.example/cb"), 503, "temporarily_unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := env.Clients.GetClient(context.Background(), tc.client)
			if tc.client == "broken" {
				c, err = store.Client{ID: "broken"}, nil
			}
			if err != nil {
				t.Fatal(err)
			}
			_, err = Push(context.Background(), tc.form, c, env, PushedRequestTTL, testNow)
			var ae *apierr.Error
			if !errors.As(err, &ae) || ae.Status != tc.status || ae.Code != tc.code {
				t.Fatalf("Push = %v, want %d %s", err, tc.status, tc.code)
			}
			if strings.ContainsAny(ae.Description, "\"\\") {
				t.Fatalf("description %q is not safe for error_description", ae.Description)
			}
		})
	}
	t.Run("fail/no store", func(t *testing.T) {
		env := testEnv()
		if _, err := Push(context.Background(), pushBody(), web, env, PushedRequestTTL, testNow); apierr.From(err).Status != http.StatusInternalServerError {
			t.Fatalf("Push without a store = %v", err)
		}
	})
	t.Run("fail/store down keeping the request", func(t *testing.T) {
		env := parEnv(downOnce{})
		if _, err := Push(context.Background(), pushBody(), web, env, PushedRequestTTL, testNow); apierr.From(err).Code != "temporarily_unavailable" {
			t.Fatalf("Push with the store down = %v", err)
		}
	})
}

// TestParseRequestPushed: /authorize with a PAR request_uri proceeds from
// the pushed parameters alone, once; unknown, used, expired (injected
// clock) or another client's request_uris, or one without client_id, are
// the HTML error page and never a redirect.
func TestParseRequestPushed(t *testing.T) {
	ctx := context.Background()
	once := newFakeOnce()
	env := parEnv(once)
	uri := mustPush(t, env, "web", pushBody())
	later := testNow.Add(10 * time.Second)
	// Other query parameters are ignored (RFC 9126 §4).
	q := url.Values{"client_id": {"web"}, "request_uri": {uri}, "redirect_uri": {"https://evil.example/cb"},
		"state": {"other"}, "scope": {"openid docs:write"}, "response_mode": {"form_post"}}
	req, err := ParseRequest(ctx, q, env, later)
	if err != nil {
		t.Fatalf("ParseRequest: %v", err)
	}
	if req.ClientID != "web" || req.RedirectURI != "https://app.example/cb" || req.State != "xyz" || req.Nonce != "n-1" ||
		req.CodeChallenge != challenge || req.ResponseMode != ModeQuery || strings.Join(req.Scopes, " ") != "openid" ||
		req.Issuer != issuer || !req.ReceivedAt.Equal(later) || !req.MadeAt().Equal(testNow) {
		t.Fatalf("pushed request %+v: want the pushed parameters, received at the authorize time, made at the push", req)
	}
	// Single use.
	_, err = ParseRequest(ctx, url.Values{"client_id": {"web"}, "request_uri": {uri}}, env, later)
	wantPage(t, err, http.StatusBadRequest)

	for _, tc := range []struct {
		name  string
		query func(uri string) url.Values
		at    time.Time
	}{
		{"fail/expired", func(u string) url.Values { return url.Values{"client_id": {"web"}, "request_uri": {u}} }, testNow.Add(PushedRequestTTL)},
		{"fail/another client's", func(u string) url.Values { return url.Values{"client_id": {"one"}, "request_uri": {u}} }, later},
		{"fail/no client_id", func(u string) url.Values { return url.Values{"request_uri": {u}} }, later},
		{"fail/unknown client", func(u string) url.Values { return url.Values{"client_id": {"nobody"}, "request_uri": {u}} }, later},
		{"fail/unknown reference", func(string) url.Values {
			return url.Values{"client_id": {"web"}, "request_uri": {RequestURIPrefix + strings.Repeat("A", 43)}}
		}, later},
		{"fail/empty reference", func(string) url.Values { return url.Values{"client_id": {"web"}, "request_uri": {RequestURIPrefix}} }, later},
		{"fail/overlong reference", func(string) url.Values {
			return url.Values{"client_id": {"web"}, "request_uri": {RequestURIPrefix + strings.Repeat("A", 65)}}
		}, later},
		{"fail/repeated request_uri", func(u string) url.Values { return url.Values{"client_id": {"web"}, "request_uri": {u, u}} }, later},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := mustPush(t, env, "web", pushBody())
			_, err := ParseRequest(ctx, tc.query(u), env, tc.at)
			wantPage(t, err, http.StatusBadRequest)
		})
	}
	t.Run("fail/another client's is spent", func(t *testing.T) {
		u := mustPush(t, env, "web", pushBody())
		_, err := ParseRequest(ctx, url.Values{"client_id": {"one"}, "request_uri": {u}}, env, later)
		wantPage(t, err, http.StatusBadRequest)
		_, err = ParseRequest(ctx, url.Values{"client_id": {"web"}, "request_uri": {u}}, env, later)
		wantPage(t, err, http.StatusBadRequest)
	})
	t.Run("fail/store down", func(t *testing.T) {
		_, err := ParseRequest(ctx, url.Values{"client_id": {"web"}, "request_uri": {uri}}, parEnv(downOnce{}), later)
		wantPage(t, err, http.StatusServiceUnavailable)
	})
	t.Run("fail/not a PAR urn", func(t *testing.T) {
		v := baseParams()
		v.Set("request_uri", "https://rp.example/request.jwt")
		_, err := ParseRequest(ctx, v, env, later)
		var re *RedirectError
		if !errors.As(err, &re) || re.Code != ErrRequestURINotSupported {
			t.Fatalf("ParseRequest = %v, want request_uri_not_supported", err)
		}
	})
	t.Run("fail/PAR urn where PAR is not served", func(t *testing.T) {
		v := baseParams()
		v.Set("request_uri", mustPush(t, env, "web", pushBody()))
		_, err := ParseRequest(ctx, v, testEnv(), later)
		var re *RedirectError
		if !errors.As(err, &re) || re.Code != ErrRequestURINotSupported {
			t.Fatalf("ParseRequest = %v, want request_uri_not_supported", err)
		}
	})
}

// TestRequirePushedAuthorizationRequests: a client that must push is
// refused a plain request with invalid_request at its (validated) redirect
// URI, and served a pushed one; a plain request with an unregistered
// redirect URI is still the page.
func TestRequirePushedAuthorizationRequests(t *testing.T) {
	ctx := context.Background()
	env := parEnv(newFakeOnce())
	plain := baseParams()
	plain.Set("client_id", "paronly")
	plain.Set("redirect_uri", "https://par.example/cb")
	_, err := ParseRequest(ctx, plain, env, testNow)
	var re *RedirectError
	if !errors.As(err, &re) || re.Code != ErrInvalidRequest || re.RedirectURI != "https://par.example/cb" || re.State != "xyz" ||
		re.Description != "This client must use pushed authorization requests." {
		t.Fatalf("plain request = %v, want invalid_request at the redirect URI", err)
	}
	plain.Set("redirect_uri", "https://evil.example/cb")
	_, err = ParseRequest(ctx, plain, env, testNow)
	wantPage(t, err, http.StatusBadRequest)

	body := pushBody()
	body.Set("client_id", "paronly")
	body.Set("redirect_uri", "https://par.example/cb")
	uri := mustPush(t, env, "paronly", body)
	req, err := ParseRequest(ctx, url.Values{"client_id": {"paronly"}, "request_uri": {uri}}, env, testNow)
	if err != nil || req.ClientID != "paronly" {
		t.Fatalf("pushed request = %+v, %v", req, err)
	}
}

// TestPushedRequestTakenOnce: of many concurrent uses of one request_uri
// exactly one gets the request.
func TestPushedRequestTakenOnce(t *testing.T) {
	env := parEnv(newFakeOnce())
	uri := mustPush(t, env, "web", pushBody())
	const n = 16
	var start, done sync.WaitGroup
	start.Add(1)
	errs := make([]error, n)
	for i := range n {
		done.Add(1)
		go func() {
			defer done.Done()
			start.Wait()
			_, errs[i] = ParseRequest(context.Background(), url.Values{"client_id": {"web"}, "request_uri": {uri}}, env, testNow)
		}()
	}
	start.Done()
	done.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
		} else {
			wantPage(t, err, http.StatusBadRequest)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of %d concurrent uses got the request, want exactly 1", ok, n)
	}
}

// downOnce is a store.SingleUse that is down.
type downOnce struct{}

func (downOnce) PutOnce(context.Context, string, []byte, []byte, time.Time) error {
	return store.ErrUnavailable
}

func (downOnce) PeekOnce(context.Context, string, []byte, time.Time) ([]byte, error) {
	return nil, store.ErrUnavailable
}

func (downOnce) TakeOnce(context.Context, string, []byte, time.Time) ([]byte, error) {
	return nil, store.ErrUnavailable
}

// TestParseRequestClient: ParseRequestClient returns the request's client
// as step 2 read it, the client that pushed a pushed request, and no client
// with an error; CheckClient then checks that client as CheckRedirect does
// (a pushed request against its push time and pushed redirect URI).
func TestParseRequestClient(t *testing.T) {
	ctx := context.Background()
	env := parEnv(newFakeOnce())
	uri := mustPush(t, env, "web", pushBody())
	bad := baseParams()
	bad.Set("response_type", "token")
	for _, tc := range []struct {
		name   string
		query  url.Values
		client string // "": an error
	}{
		{"ok/plain", baseParams(), "web"},
		{"ok/pushed", url.Values{"client_id": {"web"}, "request_uri": {uri}}, "web"},
		{"fail/unknown_client", url.Values{"client_id": {"nobody"}}, ""},
		{"fail/redirect_error", bad, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, c, err := ParseRequestClient(ctx, tc.query, env, testNow.Add(time.Second))
			if tc.client == "" {
				if err == nil || req != nil || c.ID != "" {
					t.Fatalf("ParseRequestClient = %+v, %+v, %v; want an error and no client", req, c, err)
				}
				return
			}
			if err != nil || c.ID != tc.client {
				t.Fatalf("ParseRequestClient = %+v, %v; want client %q", c, err, tc.client)
			}
			if err := CheckClient(c, req.ClientID, req.RedirectURI, req.MadeAt()); err != nil {
				t.Fatalf("CheckClient of the client read: %v", err)
			}
			if err := CheckClient(c, req.ClientID, "https://evil.example/cb", req.MadeAt()); err == nil {
				t.Fatal("CheckClient let an unregistered redirect URI through")
			}
		})
	}
}

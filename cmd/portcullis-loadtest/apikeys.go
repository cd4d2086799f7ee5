package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"

	"github.com/portcullis-auth/portcullis/keys/verify"
)

// The API key scenarios (issue 18). Before the clock starts each worker
// gets its own key, created by the bench user (POST /auth/api-keys with
// the scope users:read), so that no two workers share a row.
//
//   - apikey_introspection: one POST /oauth2/introspect per iteration with
//     the worker's key, authenticated as the bench service client; 200 with
//     "active":true and token_type api_key. Nothing is cached: each call
//     checks the key's format, finds it by hash, and computes its effective
//     scope from its owner's current roles.
//   - apikey_verify: one GET per iteration to a resource server in this
//     process guarded by keys/verify with GuardOptions.APIKeys (the key in
//     X-API-Key, RequireScope("users:read")): what a downstream service pays
//     per request, with the introspection answer cached for at most 5 s as
//     the library does.

// apiKeyScope is the scope of the bench keys: a permission the bench user
// (super_admin) holds.
const apiKeyScope = "users:read"

// createAPIKey signs the bench user in through the key client (a key with
// an admin permission, users:read, is made only with a token of
// Portcullis's own audience) and creates a key for it.
func createAPIKey(ctx context.Context, c *http.Client, o Options, name string) (string, error) {
	if o.KeyClient != "" {
		o.UserClient, o.UserSecret = o.KeyClient, o.KeySecret
	}
	tok, err := login(ctx, c, o)
	if err != nil {
		return "", err
	}
	body, _ := json.Marshal(map[string]any{"name": name, "scopes": []string{apiKeyScope}})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.URL+"/auth/api-keys", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	resp, err := c.Do(req)
	if err != nil {
		return "", fmt.Errorf("create an API key: %w", err)
	}
	defer resp.Body.Close()
	var out struct {
		Key string `json:"key"`
	}
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("create an API key: status %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Key == "" {
		return "", fmt.Errorf("create an API key: no key in the answer (%v)", err)
	}
	return out.Key, nil
}

func apiKeyIntrospectionWorker(ctx context.Context, c *http.Client, o Options) (func() (worker, error), error) {
	n := 0
	return func() (worker, error) {
		n++
		key, err := createAPIKey(ctx, c, o, "bench-introspection-"+strconv.Itoa(n))
		if err != nil {
			return nil, err
		}
		form := url.Values{"token": {key}}.Encode()
		return func(ctx context.Context) bool {
			code, body := post(ctx, c, o.URL+"/oauth2/introspect", form, o.CCClient, o.CCSecret)
			return code == 200 && bytes.Contains(body, []byte(`"active":true`)) && bytes.Contains(body, []byte(`"api_key"`))
		}, nil
	}, nil
}

func apiKeyVerifyWorker(ctx context.Context, c *http.Client, o Options) (func() (worker, error), error) {
	keys, err := verify.NewRemoteKeySet(verify.RemoteKeySetOptions{Issuer: o.URL})
	if err != nil {
		return nil, fmt.Errorf("the resource server's key set: %w", err)
	}
	v, err := verify.New(keys, verify.Config{Issuer: o.URL, Audience: "bench-api"})
	if err != nil {
		return nil, fmt.Errorf("the resource server's verifier: %w", err)
	}
	in, err := verify.NewIntrospector(verify.IntrospectorOptions{Issuer: o.URL, ClientID: o.CCClient, ClientSecret: o.CCSecret})
	if err != nil {
		return nil, fmt.Errorf("the resource server's introspector: %w", err)
	}
	// The guard's reason for a denial (its Err never holds the key), so
	// that a failure the report counts says why in the run's log.
	denials := newFailureLog("apikey_verify (the guard's reason)", 3)
	g := verify.NewGuard(v, verify.GuardOptions{APIKeys: in, OnDenied: func(_ *http.Request, d *verify.Denial) {
		denials.fail(ctx, "%d %s: %v", d.Status, d.Code, d.Err)
	}})
	api := httptest.NewServer(g.RequireScope(apiKeyScope)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})))
	go func() {
		<-ctx.Done()
		api.Close()
		keys.Close()
	}()
	n := 0
	failures := newFailureLog("apikey_verify", 3)
	return func() (worker, error) {
		n++
		key, err := createAPIKey(ctx, c, o, "bench-verify-"+strconv.Itoa(n))
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context) bool {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, api.URL+"/projects", nil)
			if err != nil {
				return failures.fail(ctx, "%v", err)
			}
			req.Header.Set("X-API-Key", key)
			resp, err := c.Do(req)
			if err != nil {
				return failures.fail(ctx, "%v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNoContent {
				return failures.fail(ctx, "status %d, WWW-Authenticate %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
			}
			return true
		}, nil
	}, nil
}

package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/portcullis-auth/portcullis/keys"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

func TestJWKSCachingHeaders(t *testing.T) {
	d := newDeployment(t, st.SQLite)
	r := d.c.Get("/.well-known/jwks.json").ExpectStatus(200)
	if cc := r.Header.Get("Cache-Control"); cc != "public, max-age=2" {
		t.Fatalf("Cache-Control %q", cc)
	}
	etag := r.Header.Get("ETag")
	if etag == "" || strings.HasPrefix(etag, "W/") || !strings.HasPrefix(etag, `"`) {
		t.Fatalf("want a strong ETag, got %q", etag)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(r.Body, &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 2 {
		t.Fatalf("want the active and the next key published, got %d", len(set.Keys))
	}
	for _, k := range set.Keys {
		if !k.IsPublic() || k.Use != "sig" || k.Algorithm == "" || k.KeyID == "" {
			t.Fatalf("bad published key %+v", k)
		}
	}
	for _, member := range []string{`"d"`, `"p"`, `"q"`, `"dp"`, `"dq"`, `"qi"`} {
		if strings.Contains(string(r.Body), member+":") {
			t.Fatalf("JWKS leaks private member %s", member)
		}
	}
	d.c.Get("/.well-known/jwks.json", st.WithHeader("If-None-Match", etag)).ExpectStatus(304)
	d.c.Get("/.well-known/jwks.json", st.WithHeader("If-None-Match", `"other", `+etag)).ExpectStatus(304)
	d.c.Get("/.well-known/jwks.json", st.WithHeader("If-None-Match", `"other"`)).ExpectStatus(200)
}

func TestDiscoveryMetadata(t *testing.T) {
	d := newDeployment(t, st.SQLite, map[string]string{"PORTCULLIS_SIGNING_ALG": "EdDSA"})
	for _, path := range []string{"/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"} {
		m := d.c.Get(path).ExpectStatus(200).Map()
		iss := d.in.Config.Issuer
		if m["issuer"] != iss || m["token_endpoint"] != iss+"/oauth2/token" || m["jwks_uri"] != iss+"/.well-known/jwks.json" ||
			m["revocation_endpoint"] != iss+"/oauth2/revoke" || m["introspection_endpoint"] != iss+"/oauth2/introspect" ||
			m["userinfo_endpoint"] != iss+"/userinfo" {
			t.Fatalf("%s endpoints: %v", path, m)
		}
		if _, ok := m["response_types_supported"].([]any); !ok {
			t.Fatalf("response_types_supported missing: %v", m)
		}
		if algs := m["id_token_signing_alg_values_supported"].([]any); len(algs) != 1 || algs[0] != "EdDSA" {
			t.Fatalf("algs %v", algs)
		}
		// Only grants that work end to end are advertised; /oauth2/authorize
		// is served, so authorization_code is one of them, and so are the
		// password grant's MFA grants, and token exchange (of API keys).
		if grants := fmt.Sprint(m["grant_types_supported"]); grants != "[password refresh_token client_credentials authorization_code "+
			"urn:portcullis:params:oauth:grant-type:mfa-otp urn:portcullis:params:oauth:grant-type:mfa-recovery-code "+
			"urn:ietf:params:oauth:grant-type:token-exchange]" {
			t.Fatalf("grants %v", grants)
		}
		if m["authorization_endpoint"] != iss+"/oauth2/authorize" || fmt.Sprint(m["response_types_supported"]) != "[code]" {
			t.Fatalf("%s: authorization endpoint %v, response types %v", path, m["authorization_endpoint"], m["response_types_supported"])
		}
	}
}

// TestRotationNeverBreaksVerifiers: for each algorithm, a verifier holding the
// JWKS fetched before `keys rotate` verifies a token signed after it; tokens
// signed before keep verifying; `keys revoke` makes them fail at once.
func TestRotationNeverBreaksVerifiers(t *testing.T) {
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			env := st.NewEnv(t, st.Postgres)
			env["PORTCULLIS_SIGNING_ALG"] = alg
			d := deploy(t, st.Start(t, env))
			ctx := context.Background()
			svc := st.Basic("svc", d.svcSecret)

			cachedJWKS := d.c.Get("/.well-known/jwks.json").ExpectStatus(200).Body
			before := d.login(t, "")
			waitUntilRotationSafe(t, d.in)
			stdout, stderr, code := st.RunCLI(t, env, "", "keys", "rotate")
			if code != 0 {
				t.Fatalf("keys rotate: %d %s %s", code, stdout, stderr)
			}
			after := waitForNewSigningKey(t, d, before.AccessToken)

			// The stale cache verifies the new token, and the old one.
			for name, tok := range map[string]string{"after rotation": after.AccessToken, "before rotation": before.AccessToken} {
				if err := verifyWithJWKS(cachedJWKS, tok); err != nil {
					t.Fatalf("stale JWKS cannot verify the token signed %s: %v", name, err)
				}
			}
			// A real client library refetching the JWKS agrees.
			provider, err := oidc.NewProvider(ctx, d.in.Config.Issuer)
			if err != nil {
				t.Fatal(err)
			}
			v := provider.VerifierContext(ctx, &oidc.Config{ClientID: "api", SupportedSigningAlgs: []string{alg}})
			for _, tok := range []string{before.AccessToken, after.AccessToken} {
				if _, err := v.Verify(ctx, tok); err != nil {
					t.Fatalf("go-oidc: %v", err)
				}
			}
			oldKID := decodeHeader(t, before.AccessToken)["kid"].(string)
			if m := d.c.PostForm("/oauth2/introspect", url.Values{"token": {before.AccessToken}}, svc).Map(); m["active"] != true {
				t.Fatalf("token of the retired key inactive: %v", m)
			}
			// Emergency: revoke the old key.
			if stdout, stderr, code := st.RunCLI(t, env, "", "keys", "revoke", oldKID); code != 0 {
				t.Fatalf("keys revoke: %d %s %s", code, stdout, stderr)
			}
			// A kid no key has (well-formed, or not) is named, not a stack of wrapped errors.
			for _, kid := range []string{strings.Repeat("A", 43), "not-a-kid"} {
				if _, stderr, code := st.RunCLI(t, env, "", "keys", "revoke", kid); code != 1 || !strings.Contains(stderr, fmt.Sprintf("no key %q", kid)) {
					t.Fatalf("keys revoke %s: exit %d, stderr %q", kid, code, stderr)
				}
			}
			deadline := time.Now().Add(d.in.Config.KeySyncInterval + 2*time.Second)
			for {
				m := d.c.PostForm("/oauth2/introspect", url.Values{"token": {before.AccessToken}}, svc).Map()
				jwks := string(d.c.Get("/.well-known/jwks.json").Body)
				if m["active"] == false && !strings.Contains(jwks, oldKID) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("revoked key still accepted or published after the sync interval: %v", m)
				}
				time.Sleep(100 * time.Millisecond)
			}
			d.c.Get("/userinfo", st.Bearer(before.AccessToken)).ExpectError(401, "invalid_token")
			d.c.Get("/userinfo", st.Bearer(after.AccessToken)).ExpectStatus(200)
		})
	}
}

// TestRotateRefusesTooEarly: the CLI refuses while the next key is too fresh, saying when it will be safe.
func TestRotateRefusesTooEarly(t *testing.T) {
	env := st.NewEnv(t, st.SQLite)
	env["PORTCULLIS_JWKS_MAX_AGE"] = "1h"
	_, stderr, code := st.RunCLI(t, env, "", "keys", "rotate")
	if code == 0 || !strings.Contains(stderr, "safe from") {
		t.Fatalf("rotate of a fresh next key: code %d, %s", code, stderr)
	}
	if _, stderr, code := st.RunCLI(t, env, "", "keys", "rotate", "--force"); code != 0 {
		t.Fatalf("forced rotate: %s", stderr)
	}
}

func waitUntilRotationSafe(t *testing.T, in *st.Instance) {
	t.Helper()
	deadline := time.Now().Add(in.Config.PublicationDelay() + 5*time.Second)
	for time.Now().Before(deadline) {
		list, err := in.App.Keys.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range list {
			if k.State == store.KeyNext && time.Since(k.CreatedAt) > in.Config.PublicationDelay()+100*time.Millisecond {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("next key never became old enough to sign")
}

// waitForNewSigningKey logs in until the instance signs with a key other
// than the one of old (it picks up the rotation within the sync interval).
func waitForNewSigningKey(t *testing.T, d *deployment, old string) st.TokenResponse {
	t.Helper()
	oldKID := decodeHeader(t, old)["kid"]
	deadline := time.Now().Add(d.in.Config.KeySyncInterval + 3*time.Second)
	for time.Now().Before(deadline) {
		tok := d.login(t, "")
		if decodeHeader(t, tok.AccessToken)["kid"] != oldKID {
			return tok
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("the instance never signed with the rotated key")
	return st.TokenResponse{}
}

// verifyWithJWKS verifies a compact JWS against a JWKS document with go-jose,
// the way an offline verifier with a cached key set would.
func verifyWithJWKS(jwks []byte, token string) error {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(jwks, &set); err != nil {
		return err
	}
	sig, err := jose.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA})
	if err != nil {
		return err
	}
	ks := set.Key(sig.Signatures[0].Header.KeyID)
	if len(ks) == 0 {
		return errors.New("kid not in the cached JWKS")
	}
	_, err = sig.Verify(ks[0])
	return err
}

var _ = keys.ErrUnknownKey

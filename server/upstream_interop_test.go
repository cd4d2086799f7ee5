package server_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/server/upstream"
)

// upstreamBrowse walks a browser through an OpenID provider's pages from u
// (following its redirects, signing in on a page with a password field)
// until the provider redirects to siCallback, and returns that query.
func upstreamBrowse(t *testing.T, hc *http.Client, u, login, password string) url.Values {
	t.Helper()
	return upstreamBrowseTo(t, hc, u, siCallback, login, password)
}

// upstreamBrowseTo is upstreamBrowse up to a redirect to target.
func upstreamBrowseTo(t *testing.T, hc *http.Client, u, target, login, password string) url.Values {
	t.Helper()
	p := siGet(t, hc, u)
	for range 10 {
		loc := p.Header.Get("Location")
		switch {
		case (p.StatusCode == http.StatusSeeOther || p.StatusCode == http.StatusFound) && strings.HasPrefix(loc, target):
			back, err := url.Parse(loc)
			if err != nil {
				t.Fatal(err)
			}
			return back.Query()
		case p.StatusCode == http.StatusSeeOther || p.StatusCode == http.StatusFound:
			next, err := p.Request.URL.Parse(loc)
			if err != nil {
				t.Fatal(err)
			}
			p = siGet(t, hc, next.String())
		case p.StatusCode == http.StatusOK && strings.Contains(p.body, `name="password"`):
			p = p.submit(t, hc, url.Values{"username": {login}, "password": {password}})
		default:
			t.Fatalf("unexpected answer %d (Location %q):\n%s", p.StatusCode, loc, p.body)
		}
	}
	t.Fatal("the provider never redirected back")
	return nil
}

// TestUpstreamSecondPortcullis uses a second Portcullis instance as the
// upstream OpenID provider (an implementation the upstream package did not
// write), on PostgreSQL+Redis and SQLite downstream: the browser path's
// Begin and Callback run the upstream's own authorization code flow (its
// login page, PKCE, nonce) and the core creates the account just in time;
// the replayed callback is refused; then an id token the upstream issued
// to its client through the code flow is exchanged (RFC 8693) and signs in
// the same account by sub.
func TestUpstreamSecondPortcullis(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			up := newSignIn(t, st.SQLite)
			file := filepath.Join(t.TempDir(), "providers.yaml")
			yaml := "providers:\n  - id: up\n    name: Upstream Portcullis\n    issuer: " + up.in.Config.Issuer +
				"\n    client_id: first\n    client_secret_env: UP_SECRET\n    jit: {enabled: true, default_role: user}\n"
			if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			env := st.NewEnv(t, b)
			env["PORTCULLIS_IDENTITY_PROVIDERS_FILE"] = file
			env["UP_SECRET"] = up.firstSecret
			down := st.Start(t, env)
			svc := down.App.Upstream
			ctx := context.Background()
			m := upstream.Meta{IP: "192.0.2.9", ClientID: "portcullis"}

			authURL, err := svc.Begin(ctx, "up", siCallback, upstream.Freshness{}, []byte("pending-request"))
			if err != nil {
				t.Fatalf("Begin: %v", err)
			}
			q := upstreamBrowse(t, siBrowser(t), authURL, siEmail, siPassword)
			if q.Get("iss") != up.in.Config.Issuer {
				t.Fatalf("the upstream's answer lacks its iss: %v", q)
			}
			v, err := svc.Callback(ctx, "up", q, m)
			if err != nil {
				t.Fatalf("Callback: %v", err)
			}
			if v.Claims.Email != siEmail || !v.Claims.EmailVerified || string(v.Return) != "pending-request" {
				t.Fatalf("verified claims %+v", v.Claims)
			}
			d, err := svc.Decide(ctx, upstream.Input{Provider: v.Provider, Claims: v.Claims})
			if err != nil || d.Outcome != upstream.OutcomeCreate {
				t.Fatalf("Decide = %+v, %v; want create", d, err)
			}
			u, err := svc.Apply(ctx, d, m)
			if err != nil || u.Email != siEmail {
				t.Fatalf("Apply = %+v, %v", u, err)
			}
			if _, err := svc.Callback(ctx, "up", q, m); err == nil {
				t.Fatal("a replayed callback was accepted")
			} else if r := (*upstream.Refusal)(nil); !errors.As(err, &r) || r.Reason != upstream.ReasonReplayedCallback {
				t.Fatalf("replayed callback: %v", err)
			}

			// The upstream's id token through its own code flow, exchanged.
			conf := up.oauth("first", up.firstSecret, "openid", "email")
			verifier, nonce := oauth2.GenerateVerifier(), "n-"+oauth2.GenerateVerifier()[:16]
			q = upstreamBrowse(t, siBrowser(t), conf.AuthCodeURL("s-1", oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce)), siEmail, siPassword)
			tok, err := conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatalf("upstream code exchange: %v", err)
			}
			rawID, _ := tok.Extra("id_token").(string)
			tr := down.Client(t).PostForm("/oauth2/token", exchangeForm(rawID)).Token()
			if decodeClaims(t, tr.AccessToken)["sub"] != u.ID {
				t.Fatalf("the exchanged token is not the linked user's: %v", decodeClaims(t, tr.AccessToken))
			}
			// The upstream's access token is not an id token: refused.
			down.Client(t).PostForm("/oauth2/token", exchangeForm(tok.AccessToken)).ExpectError(http.StatusBadRequest, "invalid_request")
		})
	}
}

package server_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/oauth2"

	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/server/upstream"
)

// zitadelOP runs the example OpenID provider of github.com/zitadel/oidc/v3
// in the test process on a loopback address, with a confidential web
// client "portcullis" whose redirect URI is siCallback, and returns its
// issuer.
func zitadelOP(t *testing.T) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	issuer := "http://" + srv.Listener.Addr().String() + "/"
	storage.RegisterClients(storage.WebClient("portcullis", "zitadel-client-secret", siCallback))
	srv.Config.Handler = exampleop.SetupServer(issuer, storage.NewStorage(storage.NewUserStore(issuer)), nil, false, op.WithAllowInsecure())
	srv.Start()
	t.Cleanup(srv.Close)
	return issuer
}

var zitadelAuthRequestID = regexp.MustCompile(`name="id" value="([^"]+)"`)

// zitadelBrowse signs test-user2 in on the example provider's login page
// and returns the query of its redirect to siCallback.
func zitadelBrowse(t *testing.T, u string) url.Values {
	t.Helper()
	return zitadelBrowseTo(t, u, siCallback)
}

// zitadelBrowseTo is zitadelBrowse up to a redirect to target.
func zitadelBrowseTo(t *testing.T, u, target string) url.Values {
	t.Helper()
	hc := siBrowser(t)
	for range 10 {
		resp, err := hc.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		switch {
		case resp.StatusCode/100 == 3 && strings.HasPrefix(loc, target):
			back, _ := url.Parse(loc)
			return back.Query()
		case resp.StatusCode/100 == 3:
			next, err := resp.Request.URL.Parse(loc)
			if err != nil {
				t.Fatal(err)
			}
			u = next.String()
		case resp.StatusCode == http.StatusOK && zitadelAuthRequestID.Match(body):
			id := zitadelAuthRequestID.FindSubmatch(body)[1]
			post, err := hc.PostForm(resp.Request.URL.Scheme+"://"+resp.Request.URL.Host+"/login/username",
				url.Values{"id": {string(id)}, "username": {"test-user2"}, "password": {"verysecure"}})
			if err != nil {
				t.Fatal(err)
			}
			post.Body.Close()
			next, err := post.Request.URL.Parse(post.Header.Get("Location"))
			if err != nil || post.StatusCode/100 != 3 {
				t.Fatalf("login at the example provider: %d %q", post.StatusCode, post.Header.Get("Location"))
			}
			u = next.String()
		default:
			t.Fatalf("unexpected answer %d (Location %q):\n%s", resp.StatusCode, loc, body)
		}
	}
	t.Fatal("the example provider never redirected back")
	return nil
}

// TestUpstreamZitadelExampleOP signs in through the example OpenID
// provider of github.com/zitadel/oidc/v3, run in the test process: the
// browser path's Begin and Callback (its id token carries no email, so the
// email comes from its userinfo for the same sub), JIT creation, then one of
// its id tokens exchanged (RFC 8693) for the same account.
func TestUpstreamZitadelExampleOP(t *testing.T) {
	issuer := zitadelOP(t)
	file := filepath.Join(t.TempDir(), "providers.yaml")
	yaml := "providers:\n  - id: zitadel\n    name: Zitadel example\n    issuer: " + issuer +
		"\n    client_id: portcullis\n    client_secret: zitadel-client-secret\n    scopes: [openid, email, profile]\n    jit: {enabled: true, default_role: user}\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := st.NewEnv(t, st.SQLite)
	env["PORTCULLIS_IDENTITY_PROVIDERS_FILE"] = file
	down := st.Start(t, env)
	svc := down.App.Upstream
	ctx := context.Background()
	m := upstream.Meta{IP: "192.0.2.10", ClientID: "portcullis"}

	authURL, err := svc.Begin(ctx, "zitadel", siCallback, upstream.Freshness{}, nil)
	if err != nil {
		t.Fatalf("Begin: %v", err)
	}
	v, err := svc.Callback(ctx, "zitadel", zitadelBrowse(t, authURL), m)
	if err != nil {
		t.Fatalf("Callback: %v", err)
	}
	if v.Claims.Subject != "id2" || v.Claims.Email != "test-user2@zitadel.ch" || !v.Claims.EmailVerified {
		t.Fatalf("claims = %+v", v.Claims)
	}
	d, err := svc.Decide(ctx, upstream.Input{Provider: v.Provider, Claims: v.Claims})
	if err != nil || d.Outcome != upstream.OutcomeCreate {
		t.Fatalf("Decide = %+v, %v", d, err)
	}
	u, err := svc.Apply(ctx, d, m)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}

	// An id token of the example provider's own code flow, exchanged.
	p, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		t.Fatal(err)
	}
	conf := &oauth2.Config{ClientID: "portcullis", ClientSecret: "zitadel-client-secret", Endpoint: p.Endpoint(),
		RedirectURL: siCallback, Scopes: []string{"openid"}}
	verifier := oauth2.GenerateVerifier()
	q := zitadelBrowse(t, conf.AuthCodeURL("s-z", oauth2.S256ChallengeOption(verifier), oidc.Nonce("n-z")))
	tok, err := conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("code exchange at the example provider: %v", err)
	}
	rawID, _ := tok.Extra("id_token").(string)
	tr := down.Client(t).PostForm("/oauth2/token", exchangeForm(rawID)).Token()
	if decodeClaims(t, tr.AccessToken)["sub"] != u.ID {
		t.Fatal("the exchanged example-provider token did not sign in the linked account")
	}
}

package server_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// TestNativeClientLoopbackRedirectNeedsConsentEachTime: a third-party
// public native client's loopback redirect cannot assure the client's
// identity (any local program may listen on a loopback port), so, like a
// private-use scheme, it never reuses a remembered consent (RFC 8252 §8.6):
// prompt=none answers consent_required and an interactive request shows the
// consent page. A redirect_uri with a fragment, even a bare #, or with the
// scheme in upper case matches no registered loopback URI (RFC 6749
// §3.1.2). Found by a review: both failed before the change.
func TestNativeClientLoopbackRedirectNeedsConsentEachTime(t *testing.T) {
	for _, backend := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(backend.String(), func(t *testing.T) {
			d := newSignIn(t, backend)
			fx := st.NewFixtures(t, d.in.App.Core)
			fx.Client(t, clients.Spec{ID: "desk", Name: "Desk", Public: true, ApplicationType: store.ApplicationNative,
				Grants: []string{"authorization_code", "refresh_token"}, RedirectURIs: []string{"http://127.0.0.1/cb", "com.example.desk:/cb"}})
			hc := siBrowser(t)
			v := oauth2.GenerateVerifier()
			authz := func(redirect, prompt string) siPage {
				t.Helper()
				conf := &oauth2.Config{ClientID: "desk", Endpoint: d.provider.Endpoint(), RedirectURL: redirect, Scopes: []string{"openid"}}
				opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(v)}
				if prompt != "" {
					opts = append(opts, oauth2.SetAuthURLParam("prompt", prompt))
				}
				return siGet(t, hc, conf.AuthCodeURL("st", opts...))
			}
			answer := func(p siPage, redirect string) url.Values {
				t.Helper()
				if p.StatusCode != http.StatusSeeOther {
					t.Fatalf("status %d, want 303 to %s\n%s", p.StatusCode, redirect, p.body)
				}
				loc := p.Header.Get("Location")
				if !strings.HasPrefix(loc, redirect+"?") {
					t.Fatalf("Location %q, want %s?…", loc, redirect)
				}
				u, err := url.Parse(loc)
				if err != nil {
					t.Fatal(err)
				}
				return u.Query()
			}
			consentPage := func(p siPage, what string) bool {
				t.Helper()
				if p.StatusCode != http.StatusOK || !strings.Contains(p.body, `value="allow"`) {
					t.Errorf("%s: want the consent page, got %d (%s)", what, p.StatusCode, p.Header.Get("Location"))
					return false
				}
				return true
			}

			first := authz("http://127.0.0.1:50000/cb", "").submit(t, hc, url.Values{"username": {siEmail}, "password": {siPassword}})
			if !consentPage(first, "first sign-in") {
				t.FailNow()
			}
			if q := answer(first.submit(t, hc, url.Values{"decision": {"allow"}}), "http://127.0.0.1:50000/cb"); q.Get("code") == "" {
				t.Fatalf("first code: %v", q)
			}

			// The consent is remembered, yet neither redirect assures the
			// client's identity: no code without the person's say.
			for _, redirect := range []string{"com.example.desk:/cb", "http://127.0.0.1:6666/cb", "http://127.0.0.1:50000/cb", "http://127.0.0.1/cb"} {
				if q := answer(authz(redirect, "none"), redirect); q.Get("error") != "consent_required" || q.Get("code") != "" {
					t.Errorf("prompt=none at %s: %v, want consent_required and no code (RFC 8252 §8.6)", redirect, q)
				}
				consentPage(authz(redirect, ""), "interactive at "+redirect)
			}

			for _, redirect := range []string{"http://127.0.0.1:50000/cb#", "http://127.0.0.1:50000/cb#x", "http://127.0.0.1/cb#",
				"HTTP://127.0.0.1:5/cb", "com.example.desk:/cb#"} {
				p := authz(redirect, "")
				if p.StatusCode != http.StatusBadRequest || p.Header.Get("Location") != "" {
					t.Errorf("redirect_uri %q: %d to %q, want the 400 page and no redirect", redirect, p.StatusCode, p.Header.Get("Location"))
				}
			}
		})
	}
}

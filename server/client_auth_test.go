package server_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// jwtBearerAssertion is RFC 7523's client_assertion_type.
const jwtBearerAssertion = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// TestInvalidClientAlwaysChallenges: every 401 invalid_client carries
// WWW-Authenticate: Basic realm="portcullis" (RFC 9110 §15.5.2: a 401 MUST
// carry a challenge; RFC 6749 §5.2), on every endpoint that authenticates
// clients, whether the client sent its credentials in HTTP Basic, in the
// form body (client_secret_post) or not at all; a request carrying a client
// assertion, a method Portcullis does not advertise, is such a 401 too.
func TestInvalidClientAlwaysChallenges(t *testing.T) {
	d := newDeployment(t, st.SQLite)
	const want = `Basic realm="portcullis"`
	endpoints := []struct {
		path string
		form func() url.Values // the endpoint's own parameters
	}{
		{"/oauth2/token", func() url.Values { return st.PasswordForm(userEmail, userPass, "") }},
		{"/oauth2/revoke", func() url.Values { return url.Values{"token": {"pcrt_x.y"}} }},
		{"/oauth2/introspect", func() url.Values { return url.Values{"token": {"pcrt_x.y"}} }},
		{"/oauth2/par", func() url.Values { return parRequest("s1", "v-0123456789012345678901234567890123456789") }},
	}
	creds := []struct {
		name string
		set  func(url.Values) []st.Option
	}{
		{"fail/wrong_secret_in_the_body", func(f url.Values) []st.Option {
			f.Set("client_id", "web")
			f.Set("client_secret", "wrong")
			return nil
		}},
		{"fail/unknown_client_in_the_body", func(f url.Values) []st.Option {
			f.Set("client_id", "ghost")
			f.Set("client_secret", "wrong")
			return nil
		}},
		{"fail/confidential_client_without_its_secret", func(f url.Values) []st.Option { f.Set("client_id", "web"); return nil }},
		{"fail/no_credentials", func(url.Values) []st.Option { return nil }},
		{"fail/wrong_secret_in_basic", func(url.Values) []st.Option { return []st.Option{st.Basic("web", "wrong")} }},
		// Discovery advertises client_secret_basic, client_secret_post and
		// none: a client assertion (RFC 7521 §4.2, RFC 7523) is a method
		// Portcullis does not support, refused even beside a right secret
		// (RFC 6749 §2.3: one method per request) and never taken for none.
		{"fail/client_assertion_beside_the_right_secret_in_the_body", func(f url.Values) []st.Option {
			f.Set("client_id", "web")
			f.Set("client_secret", d.webSecret)
			f.Set("client_assertion_type", jwtBearerAssertion)
			f.Set("client_assertion", "a.b.c")
			return nil
		}},
		{"fail/client_assertion_of_a_public_client", func(f url.Values) []st.Option {
			f.Set("client_id", "spa")
			f.Set("client_assertion_type", jwtBearerAssertion)
			f.Set("client_assertion", "a.b.c")
			return nil
		}},
		{"fail/client_assertion_type_beside_the_right_basic", func(f url.Values) []st.Option {
			f.Set("client_assertion_type", jwtBearerAssertion)
			return []st.Option{st.Basic("web", d.webSecret)}
		}},
		{"fail/client_assertion_alone", func(f url.Values) []st.Option {
			f.Set("client_assertion", "a.b.c")
			return nil
		}},
	}
	for _, ep := range endpoints {
		for _, cr := range creds {
			t.Run(strings.TrimPrefix(ep.path, "/")+"/"+cr.name, func(t *testing.T) {
				f := ep.form()
				opts := cr.set(f)
				r := d.in.Client(t).PostForm(ep.path, f, opts...).ExpectError(http.StatusUnauthorized, "invalid_client")
				if got := r.Header.Get("WWW-Authenticate"); got != want {
					t.Fatalf("401 invalid_client with WWW-Authenticate %q, want %q", got, want)
				}
			})
		}
	}
	t.Run("oauth2/introspect/fail/public_client", func(t *testing.T) {
		r := d.c.PostForm("/oauth2/introspect", url.Values{"token": {"pcrt_x.y"}, "client_id": {"spa"}}).
			ExpectError(http.StatusUnauthorized, "invalid_client")
		if got := r.Header.Get("WWW-Authenticate"); got != want {
			t.Fatalf("401 invalid_client with WWW-Authenticate %q, want %q", got, want)
		}
	})
}

// TestEmptyParameterIsOmitted: "Parameters sent without a value MUST be
// treated as if they were omitted from the request" (RFC 6749 §3.2). An
// empty client_assertion or client_assertion_type (a client library that
// builds its form from a struct sends them so) beside the right client
// credentials answers as the same request without it, on every endpoint
// that authenticates clients; a repeated parameter stays refused even when
// empty (§3.1). Found by a review: the presence of the empty parameter made
// the request 401 invalid_client.
func TestEmptyParameterIsOmitted(t *testing.T) {
	d := newDeployment(t, st.SQLite)
	secret := d.fx.Client(t, clients.Spec{ID: "app", Name: "App", Grants: []string{"authorization_code", "password", "refresh_token"},
		RedirectURIs: []string{siCallback}, Audiences: []string{"api"}})
	endpoints := []struct {
		path string
		form func() url.Values
		ok   int
	}{
		{"/oauth2/token", func() url.Values { return st.PasswordForm(userEmail, userPass, "") }, http.StatusOK},
		{"/oauth2/revoke", func() url.Values { return url.Values{"token": {"pcrt_x.y"}} }, http.StatusOK},
		{"/oauth2/introspect", func() url.Values { return url.Values{"token": {"pcrt_x.y"}} }, http.StatusOK},
		{"/oauth2/par", func() url.Values { return parRequest("s1", "v-0123456789012345678901234567890123456789") }, http.StatusCreated},
	}
	for _, ep := range endpoints {
		for _, empty := range []string{"client_assertion", "client_assertion_type", "token_type_hint", "tenant"} {
			t.Run(strings.TrimPrefix(ep.path, "/")+"/ok/empty_"+empty+"_beside_basic", func(t *testing.T) {
				f := ep.form()
				f.Set(empty, "")
				r := d.in.Client(t).PostForm(ep.path, f, st.Basic("app", secret))
				if r.StatusCode != ep.ok {
					t.Fatalf("with an empty %s: %d %s, want %d as without it", empty, r.StatusCode, r.Body, ep.ok)
				}
			})
		}
		t.Run(strings.TrimPrefix(ep.path, "/")+"/ok/empty_client_secret_in_the_body_beside_basic", func(t *testing.T) {
			f := ep.form()
			f.Set("client_secret", "")
			r := d.in.Client(t).PostForm(ep.path, f, st.Basic("app", secret))
			if r.StatusCode != ep.ok {
				t.Fatalf("with an empty client_secret: %d %s, want %d", r.StatusCode, r.Body, ep.ok)
			}
		})
		t.Run(strings.TrimPrefix(ep.path, "/")+"/fail/empty_parameter_repeated", func(t *testing.T) {
			f := ep.form()
			f["client_assertion"] = []string{"", ""}
			d.in.Client(t).PostForm(ep.path, f, st.Basic("app", secret)).ExpectError(http.StatusBadRequest, "invalid_request")
		})
	}
}

package clients_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/store"
)

func ptr[T any](v T) *T { return &v }

// codeSpec is a valid confidential web client of the code flow; each case
// changes one thing.
func codeSpec(change func(s *clients.Spec)) clients.Spec {
	s := clients.Spec{ID: "web-app", Grants: []string{"authorization_code", "refresh_token"},
		RedirectURIs: []string{"https://app.example.com/callback"}}
	if change != nil {
		change(&s)
	}
	return s
}

func TestValidateCodeFlow(t *testing.T) {
	tests := []struct {
		name string
		spec clients.Spec
		want string // "" when valid; else a fragment of the refusal
	}{
		{"ok/confidential_web", codeSpec(nil), ""},
		{"ok/public_spa", codeSpec(func(s *clients.Spec) { s.Public = true }), ""},
		{"ok/every_field", codeSpec(func(s *clients.Spec) {
			s.PostLogoutRedirectURIs = []string{"https://app.example.com/bye"}
			s.FirstParty = true
			s.BackchannelLogoutURI = "https://app.example.com/bcl"
			s.LogoURI = "https://cdn.example.com/logo.png"
			s.ClientURI = "https://app.example.com/"
			s.RequirePKCE = ptr(false)
			s.RequirePushedAuthorizationRequests = true
		}), ""},
		{"ok/loopback_http", codeSpec(func(s *clients.Spec) {
			s.RedirectURIs = []string{"http://127.0.0.1/cb", "http://[::1]:8080/cb"}
		}), ""},
		{"ok/native_private_use_scheme", codeSpec(func(s *clients.Spec) {
			s.Public, s.ApplicationType = true, store.ApplicationNative
			s.RedirectURIs = []string{"com.example.app:/oauth2redirect", "http://127.0.0.1/cb"}
			s.PostLogoutRedirectURIs = []string{"com.example.app:/signed-out"}
		}), ""},
		{"ok/no_code_flow_no_uris", clients.Spec{ID: "svc", Grants: []string{"client_credentials"}}, ""},
		{"fail/wildcard", codeSpec(func(s *clients.Spec) { s.RedirectURIs = []string{"https://*.example.com/cb"} }), "wildcard"},
		{"fail/fragment", codeSpec(func(s *clients.Spec) { s.RedirectURIs = []string{"https://app.example.com/cb#x"} }), "fragment"},
		{"fail/relative", codeSpec(func(s *clients.Spec) { s.RedirectURIs = []string{"/callback"} }), "absolute"},
		{"fail/javascript", codeSpec(func(s *clients.Spec) { s.RedirectURIs = []string{"javascript:alert(1)"} }), "javascript"},
		{"fail/data", codeSpec(func(s *clients.Spec) { s.RedirectURIs = []string{"data:text/html,hi"} }), "data"},
		{"fail/file", codeSpec(func(s *clients.Spec) { s.RedirectURIs = []string{"file:///etc/passwd"} }), "file"},
		{"fail/http_not_loopback", codeSpec(func(s *clients.Spec) { s.RedirectURIs = []string{"http://app.example.com/cb"} }), "plain http"},
		{"fail/http_localhost_name", codeSpec(func(s *clients.Spec) { s.RedirectURIs = []string{"http://localhost/cb"} }), "plain http"},
		{"fail/custom_scheme_on_web_client", codeSpec(func(s *clients.Spec) { s.RedirectURIs = []string{"com.example.app:/cb"} }), "use https"},
		{"fail/native_scheme_without_period", codeSpec(func(s *clients.Spec) {
			s.ApplicationType = store.ApplicationNative
			s.RedirectURIs = []string{"myapp:/cb"}
		}), "period"},
		{"fail/redirect_uris_without_grant", clients.Spec{ID: "pw-app", RedirectURIs: []string{"https://app.example.com/cb"}}, "authorization_code grant"},
		{"fail/code_grant_without_redirect_uris", codeSpec(func(s *clients.Spec) { s.RedirectURIs = nil }), "at least one redirect URI"},
		{"fail/require_par_without_code_grant", clients.Spec{ID: "svc", Grants: []string{"client_credentials"},
			RequirePushedAuthorizationRequests: true}, "--require-par"},
		{"fail/no_pkce_on_public", codeSpec(func(s *clients.Spec) { s.Public, s.RequirePKCE = true, ptr(false) }), "always needs PKCE"},
		{"fail/application_type", codeSpec(func(s *clients.Spec) { s.ApplicationType = "browser" }), "web or native"},
		{"fail/post_logout_http", codeSpec(func(s *clients.Spec) { s.PostLogoutRedirectURIs = []string{"http://app.example.com/bye"} }), "post-logout"},
		{"fail/post_logout_fragment", codeSpec(func(s *clients.Spec) { s.PostLogoutRedirectURIs = []string{"https://app.example.com/bye#x"} }), "fragment"},
		{"fail/backchannel_custom_scheme", codeSpec(func(s *clients.Spec) {
			s.ApplicationType = store.ApplicationNative
			s.BackchannelLogoutURI = "com.example.app:/bcl"
		}), "back-channel"},
		{"fail/logo_http", codeSpec(func(s *clients.Spec) { s.LogoURI = "http://cdn.example.com/logo.png" }), "logo URI"},
		{"fail/logo_javascript", codeSpec(func(s *clients.Spec) { s.LogoURI = "javascript:alert(1)" }), "logo URI"},
		{"fail/client_uri_relative", codeSpec(func(s *clients.Spec) { s.ClientURI = "/home" }), "client URI"},
		{"fail/client_uri_userinfo", codeSpec(func(s *clients.Spec) { s.ClientURI = "https://u:p@app.example.com/" }), "client URI"},
		{"fail/too_many_uris", codeSpec(func(s *clients.Spec) {
			s.RedirectURIs = nil
			for i := range 33 {
				s.RedirectURIs = append(s.RedirectURIs, "https://app.example.com/cb"+strings.Repeat("x", i))
			}
		}), "at most"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := tc.spec
			err := spec.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var ve *clients.ValidationError
			if !errors.As(err, &ve) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want a ValidationError mentioning %q", err, tc.want)
			}
		})
	}
}

// TestValidateRefusesControlCharacters: every free-text and URI field of a
// spec refuses NUL (which PostgreSQL refuses to store: the insert failed
// with a 500), the other C0 and C1 control characters and invalid UTF-8
// (which the CLI can pass), with a ValidationError (400 invalid_request
// through the API and the console). Plain non-ASCII text stays allowed in
// the name. Fails before this change for the name and the audiences (NUL
// included) and for C1 controls and invalid UTF-8 in the URIs.
func TestValidateRefusesControlCharacters(t *testing.T) {
	for _, bad := range []struct{ name, text string }{
		{"nul", "\x00"}, {"bell", "\a"}, {"newline", "\n"}, {"del", "\x7f"}, {"c1_nel", "\u0085"}, {"invalid_utf8", "\xff"},
	} {
		for _, field := range []struct {
			name   string
			change func(s *clients.Spec, text string)
			want   string
		}{
			{"name", func(s *clients.Spec, x string) { s.Name = "Web" + x + "App" }, "client name"},
			{"scope", func(s *clients.Spec, x string) { s.Scopes = []string{"users:read" + x} }, "invalid scope"},
			{"audience", func(s *clients.Spec, x string) { s.Audiences = []string{"api", "bill" + x + "ing"} }, "invalid audience"},
			{"redirect_uri", func(s *clients.Spec, x string) { s.RedirectURIs = []string{"https://app.example.com/c" + x + "b"} }, "redirect URI"},
			{"post_logout_redirect_uri", func(s *clients.Spec, x string) {
				s.PostLogoutRedirectURIs = []string{"https://app.example.com/by" + x + "e"}
			}, "post-logout redirect URI"},
			{"backchannel_logout_uri", func(s *clients.Spec, x string) { s.BackchannelLogoutURI = "https://app.example.com/bc" + x + "l" }, "back-channel"},
			{"logo_uri", func(s *clients.Spec, x string) { s.LogoURI = "https://cdn.example.com/lo" + x + "go.png" }, "logo URI"},
			{"client_uri", func(s *clients.Spec, x string) { s.ClientURI = "https://app.example.com/" + x }, "client URI"},
			{"allowed_origin", func(s *clients.Spec, x string) {
				s.RefreshTokenDelivery, s.RefreshReuseGrace = store.RefreshDeliveryCookie, clients.MinCookieReuseGrace
				s.AllowedOrigins = []string{"https://app.example.com" + x}
			}, "allowed origin"},
		} {
			t.Run("fail/"+field.name+"_"+bad.name, func(t *testing.T) {
				spec := codeSpec(func(s *clients.Spec) { field.change(s, bad.text) })
				err := spec.Validate()
				var ve *clients.ValidationError
				if !errors.As(err, &ve) || !strings.Contains(err.Error(), field.want) {
					t.Fatalf("Validate = %v, want a ValidationError mentioning %q", err, field.want)
				}
			})
		}
	}
	ok := codeSpec(func(s *clients.Spec) {
		s.Name, s.Audiences = "Café Zürich ☕", []string{"api", "https://billing.example.com"}
	})
	if err := ok.Validate(); err != nil || ok.Name != "Café Zürich ☕" {
		t.Fatalf("ok/non_ascii_text: %v, name %q", err, ok.Name)
	}
}

// TestValidateCodeFlowDefaults: web and PKCE by default, repeats dropped,
// order kept.
func TestValidateCodeFlowDefaults(t *testing.T) {
	s := codeSpec(func(s *clients.Spec) {
		s.RedirectURIs = []string{"https://b.example.com/cb", "https://a.example.com/cb", "https://b.example.com/cb"}
	})
	if err := s.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if s.ApplicationType != store.ApplicationWeb || s.RequirePKCE == nil || !*s.RequirePKCE {
		t.Fatalf("defaults: application type %q, require PKCE %v", s.ApplicationType, s.RequirePKCE)
	}
	if !slices.Equal(s.RedirectURIs, []string{"https://b.example.com/cb", "https://a.example.com/cb"}) {
		t.Fatalf("redirect URIs %v", s.RedirectURIs)
	}
	public := codeSpec(func(s *clients.Spec) { s.Public = true })
	if err := public.Validate(); err != nil || !*public.RequirePKCE {
		t.Fatalf("public client: %v, require PKCE %v", err, public.RequirePKCE)
	}
}

// TestViewCodeFlowFields: the view shows every field, lists as arrays, and
// a public client as requiring PKCE.
func TestViewCodeFlowFields(t *testing.T) {
	v := clients.View(store.Client{ID: "spa", Public: true, FirstParty: true, LogoURI: "https://x.example/l.png"})
	if v.RedirectURIs == nil || v.PostLogoutRedirectURIs == nil || !v.RequirePKCE || !v.FirstParty ||
		v.ApplicationType != store.ApplicationWeb || v.LogoURI != "https://x.example/l.png" {
		t.Fatalf("view %+v", v)
	}
}

// TestClashes: the one rule that keeps access-token audiences and client
// ids apart (RFC 8725 section 3.12), each clash once, in the order of the
// list: a client id that a client lists among its audiences (its own
// included), or that is a reserved audience (the default audience, the
// issuer), or that is an audience a deleted client listed, retired while
// its access tokens live; and a deleted client's id, retired while its id
// tokens live, that a client lists (the latest retirement of a name).
func TestClashes(t *testing.T) {
	reserved := []string{"api", "https://auth.example.com"}
	until := time.Date(2026, 12, 8, 10, 0, 0, 0, time.UTC)
	later := until.Add(time.Hour)
	retired := []store.RetiredClientName{
		{Name: "victim", Kind: store.RetiredAudience, ClientID: "evil", Until: until},
		{Name: "evil", Kind: store.RetiredClientID, ClientID: "evil", Until: until},
		{Name: "relying", Kind: store.RetiredClientID, ClientID: "relying", Until: until},
		{Name: "relying", Kind: store.RetiredClientID, ClientID: "relying", Until: later},
	}
	for _, tc := range []struct {
		name string
		list []store.Client
		want []clients.Clash
	}{
		{"ok/none", []store.Client{{ID: "web", Audiences: []string{"orders"}}, {ID: "cli", Audiences: []string{"orders", "api"}}}, nil},
		{"fail/audience is another client's id", []store.Client{{ID: "victim2"}, {ID: "evil2", Audiences: []string{"x", "victim2"}}},
			[]clients.Clash{{ClientID: "victim2", ListedBy: "evil2"}}},
		{"fail/audience is its own id", []store.Client{{ID: "selfie", Audiences: []string{"selfie"}}},
			[]clients.Clash{{ClientID: "selfie", ListedBy: "selfie"}}},
		{"fail/id is the default audience", []store.Client{{ID: "api"}}, []clients.Clash{{ClientID: "api", Reserved: "api"}}},
		{"fail/two clients list one id", []store.Client{{ID: "a", Audiences: []string{"v"}}, {ID: "b", Audiences: []string{"v"}}, {ID: "v"}},
			[]clients.Clash{{ClientID: "v", ListedBy: "a"}, {ClientID: "v", ListedBy: "b"}}},
		{"fail/id is a retired audience", []store.Client{{ID: "victim"}},
			[]clients.Clash{{ClientID: "victim", Reserved: "victim", Deleted: "evil", RetiredUntil: until}}},
		{"fail/audience is a retired client id, its latest retirement", []store.Client{{ID: "evil3", Audiences: []string{"relying", "x", "relying"}}},
			[]clients.Clash{{ClientID: "relying", ListedBy: "evil3", Deleted: "relying", RetiredUntil: later}}},
		{"ok/a retired id taken again", []store.Client{{ID: "evil"}, {ID: "relying"}}, nil},
		{"ok/a retired audience listed again", []store.Client{{ID: "web2", Audiences: []string{"victim"}}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := clients.Clashes(tc.list, reserved, retired); !slices.Equal(got, tc.want) {
				t.Fatalf("Clashes: %+v, want %+v", got, tc.want)
			}
		})
	}
	if got := clients.Clashes([]store.Client{{ID: "web"}}, []string{""}, nil); got != nil {
		t.Fatalf("an empty reserved audience clashes: %+v", got)
	}
}

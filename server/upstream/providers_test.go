package upstream_test

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/server/upstream"
)

const secretValue = "s3cr3t-VALUE-never-shown"

func env(k string) (string, bool) {
	switch k {
	case "GOOGLE_SECRET":
		return secretValue, true
	case "EMPTY_SECRET":
		return "", true
	}
	return "", false
}

func TestParseProviders(t *testing.T) {
	pol := policy.Default()
	ok := `providers:
  - id: google
    name: Google
    issuer: https://accounts.google.com
    client_id: 123.apps.googleusercontent.com
    client_secret_env: GOOGLE_SECRET
    allowed_domains: [example.com]
    jit: {enabled: true, default_role: user}
    link: verified_email_auto
    trust_mfa: true
  - id: local-dev
    name: Dev
    issuer: http://127.0.0.1:5556/dex
    client_id: portcullis
    client_secret: ` + secretValue + `
    scopes: [openid, email]
`
	ps, err := upstream.Parse("idp.yaml", []byte(ok), pol, env)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	g, found := ps.Get("google")
	if !found || g.ClientSecret.Reveal() != secretValue || g.Link != upstream.LinkVerifiedEmailAuto || !g.TrustMFA ||
		!g.JIT.Enabled || g.JIT.DefaultRole != "user" || strings.Join(g.Scopes, " ") != "openid email profile" ||
		!g.DomainAllowed("Ann@EXAMPLE.com") || g.DomainAllowed("ann@example.org") {
		t.Fatalf("google = %+v", g)
	}
	d, _ := ps.Get("local-dev")
	if d.Link != upstream.LinkConfirm || d.JIT.Enabled || strings.Join(d.Scopes, " ") != "openid email" {
		t.Fatalf("local-dev = %+v", d)
	}
	if p, ok := ps.ForToken("https://accounts.google.com", []string{"other", "123.apps.googleusercontent.com"}); !ok || p.ID != "google" {
		t.Fatalf("ForToken = %v, %v", p, ok)
	}
	if _, ok := ps.ForToken("https://accounts.google.com", []string{"portcullis"}); ok {
		t.Fatal("ForToken matched another provider's client_id")
	}
	// The secret never prints.
	for _, s := range []string{fmt.Sprint(g), fmt.Sprintf("%+v", *g), fmt.Sprintf("%#v", *g)} {
		if strings.Contains(s, secretValue) {
			t.Fatalf("formatting a provider shows its secret: %s", s)
		}
	}
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("provider", "p", g, "secret", g.ClientSecret)
	if strings.Contains(logged.String(), secretValue) {
		t.Fatalf("logging a provider shows its secret: %s", logged.String())
	}
}

func TestParseProvidersRefuses(t *testing.T) {
	pol := policy.Default()
	base := "  - id: google\n    name: Google\n    issuer: https://accounts.google.com\n    client_id: abc\n"
	for _, tc := range []struct {
		name, yaml string
		want       []string // each a located message part
	}{
		{"fail/empty", "", []string{"empty file"}},
		{"fail/unknown_top_field", "provider: []\n", []string{`1:1: unknown field "provider"`}},
		{"fail/providers_not_list", "providers: {}\n", []string{"1:12: providers must be a list"}},
		{"fail/unknown_field", "providers:\n" + base + "    clientid: x\n", []string{`6:5: provider "google": unknown field "clientid"`}},
		{"fail/missing_fields", "providers:\n  - name: X\n", []string{"2:5: provider: id is required", "issuer is required", "client_id is required"}},
		{"fail/id_not_url_safe", "providers:\n  - id: Goo/gle\n    name: G\n    issuer: https://a.example\n    client_id: c\n", []string{"2:9:", "id must be 1 to 32"}},
		{"fail/duplicate_id", "providers:\n" + base + base, []string{`6:9: provider id "google" is used twice (first on line 2)`}},
		{"fail/same_issuer_and_client", "providers:\n" + base + strings.Replace(base, "id: google", "id: google2", 1), []string{"the same issuer and client_id"}},
		{"fail/http_issuer", "providers:\n  - id: x\n    name: X\n    issuer: http://idp.example.com\n    client_id: c\n", []string{"4:13:", "must use https"}},
		{"fail/http_localhost_name", "providers:\n  - id: x\n    name: X\n    issuer: http://localhost:8080\n    client_id: c\n", []string{"must use https"}},
		{"fail/issuer_query", "providers:\n  - id: x\n    name: X\n    issuer: https://idp.example.com/?a=b\n    client_id: c\n", []string{"no query or fragment"}},
		{"fail/issuer_not_url", "providers:\n  - id: x\n    name: X\n    issuer: accounts.google.com\n    client_id: c\n", []string{"absolute URL"}},
		{"fail/both_secrets", "providers:\n" + base + "    client_secret: " + secretValue + "\n    client_secret_env: GOOGLE_SECRET\n", []string{"7:24:", "not both"}},
		{"fail/secret_env_unset", "providers:\n" + base + "    client_secret_env: NOPE_SECRET\n", []string{"6:24:", "NOPE_SECRET is not set"}},
		{"fail/secret_env_empty", "providers:\n" + base + "    client_secret_env: EMPTY_SECRET\n", []string{"EMPTY_SECRET is not set"}},
		{"fail/secret_not_string", "providers:\n" + base + "    client_secret: [" + secretValue + "]\n", []string{"6:20:", "client_secret must be a non-empty string"}},
		{"fail/scopes_without_openid", "providers:\n" + base + "    scopes: [email]\n", []string{"6:13:", "must include openid"}},
		{"fail/bad_domain", "providers:\n" + base + "    allowed_domains: [\"@example.com\", Example.COM]\n", []string{"6:23:", "6:39:", "lower-case domain"}},
		{"fail/jit_unknown_role", "providers:\n" + base + "    jit: {enabled: true, default_role: wizard}\n", []string{"6:40:", `"wizard" is not a role of the policy`}},
		{"fail/jit_unknown_field", "providers:\n" + base + "    jit: {enable: true}\n", []string{`jit: unknown field "enable"`}},
		{"fail/jit_enabled_not_bool", "providers:\n" + base + "    jit: {enabled: yes please}\n", []string{"jit.enabled must be true or false"}},
		{"fail/link_mode", "providers:\n" + base + "    link: auto\n", []string{"6:11:", "link must be confirm or verified_email_auto"}},
		{"fail/trust_mfa_string", "providers:\n" + base + "    trust_mfa: \"yes\"\n", []string{"trust_mfa must be true or false"}},
		{"fail/syntax", "providers:\n  - id: [\n", []string{"invalid YAML"}},
		{"fail/two_documents", "providers: []\n---\nproviders: []\n", []string{"more than one YAML document"}},
		{"fail/alias", "providers:\n  - &a {id: x}\n  - *a\n", []string{"aliases"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := upstream.Parse("idp.yaml", []byte(tc.yaml), pol, env)
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			var pe *policy.ParseError
			if !errors.As(err, &pe) || pe.File != "idp.yaml" {
				t.Fatalf("error %v is not a located *policy.ParseError", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), secretValue) {
				t.Fatalf("error %q shows the client secret", err)
			}
		})
	}
	t.Run("fail/jit_role_above_the_top_roles_ceiling", func(t *testing.T) {
		// The top role may not grant itself here (no assignable_by).
		strict, err := policy.Parse("strict.yaml", []byte("version: 1\nroles:\n  owner: {level: 100, permissions: [\"*\"]}\n  member: {level: 1}\n"))
		if err != nil {
			t.Fatalf("policy: %v", err)
		}
		_, err = upstream.Parse("idp.yaml", []byte("providers:\n"+base+"    jit: {enabled: true, default_role: owner}\n"), strict, env)
		if err == nil || !strings.Contains(err.Error(), "6:40:") || !strings.Contains(err.Error(), `top role "owner" could not grant it`) {
			t.Fatalf("Parse = %v, want the ceiling's refusal at 6:40", err)
		}
		if _, err := upstream.Parse("idp.yaml", []byte("providers:\n"+base+"    jit: {enabled: true, default_role: member}\n"), strict, env); err != nil {
			t.Fatalf("member: %v", err)
		}
	})
	t.Run("fail/every_problem_at_once", func(t *testing.T) {
		_, err := upstream.Parse("idp.yaml", []byte("providers:\n  - id: A\n    name: X\n    issuer: http://x.example\n    client_id: c\n    link: auto\n"), pol, env)
		if err == nil || strings.Count(err.Error(), "idp.yaml:") != 3 {
			t.Fatalf("want three located problems, got %v", err)
		}
	})
	t.Run("ok/jit_falls_back_to_the_policy_default_role", func(t *testing.T) {
		ps, err := upstream.Parse("idp.yaml", []byte("providers:\n"+base+"    jit: {enabled: true}\n"), pol, env)
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		p, _ := ps.Get("google")
		if want, _ := pol.DefaultRole(); p.JIT.DefaultRole != want {
			t.Fatalf("default role %q, want the policy's %q", p.JIT.DefaultRole, want)
		}
	})
}

// TestDomainAllowedFoldsOnlyASCII (found by a review): a domain is compared
// as accounts compare addresses (store.EmailKey), so a domain spelled with a
// Kelvin sign or a dotted capital I, which strings.ToLower turned into an
// allowed ASCII name, is another domain.
func TestDomainAllowedFoldsOnlyASCII(t *testing.T) {
	p := &upstream.Provider{AllowedDomains: []string{"kit.example"}}
	for _, tc := range []struct {
		email string
		want  bool
	}{
		{"ann@kit.example", true},
		{"ann@KIT.Example", true},
		{"ann@\u212Ait.example", false},
		{"ann@k\u0130t.example", false},
		{"ann@kit.example.org", false},
		{"ann@", false},
		{"kit.example", false},
	} {
		if got := p.DomainAllowed(tc.email); got != tc.want {
			t.Errorf("DomainAllowed(%q) = %v, want %v", tc.email, got, tc.want)
		}
	}
}

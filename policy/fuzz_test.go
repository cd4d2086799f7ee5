package policy

import (
	"slices"
	"strings"
	"testing"
)

func FuzzMatches(f *testing.F) {
	seeds := []struct{ granted, required string }{
		{"projects:read", "projects:read"},
		{"projects:*", "projects:write"},
		{"*", "users:read"},
		{"proj:*", "projects:read"},
		{"projects:read", "projects:*"},
		{"", ""},
		{"*:read", "a:read"},
		{"a:b:c", "a:b"},
		{"users:*", "users:"},
		{"x", "*"},
	}
	for _, s := range seeds {
		f.Add(s.granted, s.required)
	}
	f.Fuzz(func(t *testing.T, granted, required string) {
		got := Matches([]string{granted}, required)
		valid := ValidPermission(required)
		if got && !valid {
			t.Fatalf("Matches([%q], %q) = true for a malformed required permission", granted, required)
		}
		// Every concrete permission matches itself, "*" and its resource wildcard, and nothing
		// matches without a grant.
		if valid {
			resource, _, _ := strings.Cut(required, ":")
			if !Matches([]string{required}, required) || !Matches([]string{"*"}, required) || !Matches([]string{resource + ":*"}, required) {
				t.Fatalf("%q does not match itself or its wildcards", required)
			}
			if Matches(nil, required) {
				t.Fatalf("%q matched with nothing granted", required)
			}
		}
		// A match needs the grant to be the permission itself or a wildcard covering it.
		if got && granted != required && granted != "*" && granted != strings.SplitN(required, ":", 2)[0]+":*" {
			t.Fatalf("Matches([%q], %q) = true", granted, required)
		}
	})
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		inheritancePolicy,
		peersPolicy,
		string(DefaultYAML()),
		"roles:\n  a:\n    level: 1\n    inherits: [a]\n",
		"roles: {a: {level: 1, permissions: [\"*\"]}}\n",
		"x: &a [1]\ny: *a\n",
		"roles:\n  a:\n    <<: {level: 1}\n",
		"---\n---\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("fuzz.yaml", data)
		if err != nil {
			if p != nil {
				t.Fatal("policy returned with an error")
			}
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		// Every accepted policy expands to concrete permissions and orders its roles by level.
		last := MaxLevel + 1
		for _, r := range p.Roles() {
			if r.Level > last {
				t.Fatalf("roles out of order: %v", p.RoleNames())
			}
			last = r.Level
			for _, perm := range r.Permissions {
				if !ValidPermission(perm) {
					t.Fatalf("role %s expanded to %q", r.Name, perm)
				}
			}
			if err := p.CanAssign([]string{r.Name}, r.Name); err == nil && !slices.Contains(r.AssignableBy, r.Name) {
				t.Fatalf("role %s may assign itself without assignable_by", r.Name)
			}
		}
	})
}

func FuzzParseScope(f *testing.F) {
	for _, s := range []string{"", "openid", " openid  projects:read ", "a\tb", `"`, "projects:*", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		toks, err := ParseScope(s)
		if err != nil {
			return
		}
		for _, tok := range toks {
			if tok == "" || strings.ContainsAny(tok, " \t\n\"\\") {
				t.Fatalf("ParseScope(%q) accepted token %q", s, tok)
			}
		}
		g, err := ResolveScope(toks, []string{"projects:read", "*"}, nil)
		if err == nil {
			for _, p := range g.Permissions {
				if !ValidPermission(p) {
					t.Fatalf("ResolveScope(%q) granted %q", s, p)
				}
			}
		}
	})
}

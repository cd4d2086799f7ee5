package policy

import (
	"errors"
	"strings"
	"testing"
)

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		line int    // line of the first error; 0 for whole-file problems
		want string // substring of that error's message
	}{
		{"fail/empty file", "", 0, "empty policy"},
		{"fail/only a comment", "# nothing\n", 0, "empty policy"},
		{"fail/null document", "~\n", 0, "empty policy"},
		{"fail/not a mapping", "- a\n- b\n", 1, "policy must be a mapping"},
		{"fail/no roles", "default_role: user\n", 0, "defines no roles"},
		{"fail/empty roles", "roles: {}\n", 1, "defines no roles"},
		{"fail/invalid yaml", "roles:\n  a:\n    level: 1\n    bad: x: y\n", 4, "invalid YAML: mapping values are not allowed"},
		{"fail/tab indentation", "roles:\n  a:\n\tlevel: 1\n", 3, "invalid YAML"},
		{"fail/two documents", "roles:\n  a: {level: 1}\n---\nroles:\n  b: {level: 1}\n", 3, "more than one YAML document"},
		{"fail/unknown top-level field", "roles:\n  a: {level: 1}\nrole: x\n", 3, `unknown field "role"`},
		{"fail/unknown role field", "roles:\n  a:\n    level: 1\n    permission: [x:y]\n", 4, `role "a": unknown field "permission"`},
		{"fail/bad version", "version: 2\nroles:\n  a: {level: 1}\n", 1, "version must be 1"},
		{"fail/duplicate role", "roles:\n  a:\n    level: 1\n  b:\n    level: 2\n  a:\n    level: 3\n", 6, `"a" is defined twice (first on line 2)`},
		{"fail/duplicate field", "roles:\n  a:\n    level: 1\n    level: 2\n", 4, `"level" is defined twice`},
		{"fail/missing level", "roles:\n  a:\n    description: x\n", 2, "level is required"},
		{"fail/string level", "roles:\n  a:\n    level: \"1\"\n", 3, "level must be an integer"},
		{"fail/float level", "roles:\n  a:\n    level: 1.5\n", 3, "level must be an integer"},
		{"fail/negative level", "roles:\n  a:\n    level: -1\n", 3, "level must be between 0"},
		{"fail/huge level", "roles:\n  a:\n    level: 99999999999999999999\n", 3, "level must be"},
		{"fail/role not a mapping", "roles:\n  a: 5\n", 2, `role "a" must be a mapping`},
		{"fail/bad role name", "roles:\n  Admin:\n    level: 1\n", 2, `role name "Admin"`},
		{"fail/numeric role name", "roles:\n  1:\n    level: 1\n", 2, "keys must be plain names"},
		{"fail/malformed permission", "roles:\n  a:\n    level: 1\n    permissions:\n      - users:read\n      - users\n", 6, `permission "users" is not of the form resource:action`},
		{"fail/bad wildcard", "roles:\n  a:\n    level: 1\n    permissions: [\"*:read\"]\n", 4, "resource"},
		{"fail/permissions not a list", "roles:\n  a:\n    level: 1\n    permissions: users:read\n", 4, "must be a list"},
		{"fail/permission not a string", "roles:\n  a:\n    level: 1\n    permissions: [1]\n", 4, "must be a string"},
		{"fail/duplicate permission", "roles:\n  a:\n    level: 1\n    permissions: [x:y, x:y]\n", 4, `"x:y" is listed twice`},
		{"fail/wildcard matching nothing", "roles:\n  a:\n    level: 1\n    permissions: [\"projects:*\"]\n", 4, `"projects:*" matches no known permission`},
		{"fail/permission missing from catalogue", "permissions: [docs:read]\nroles:\n  a:\n    level: 1\n    permissions: [docs:read, docs:wrte]\n", 5, `"docs:wrte" is not listed in the top-level permissions`},
		{"fail/wildcard in catalogue", "permissions: [\"docs:*\"]\nroles:\n  a: {level: 1}\n", 1, "no wildcards"},
		{"fail/unknown role in inherits", "roles:\n  a:\n    level: 1\n    inherits:\n      - b\n", 5, `role "a" inherits unknown role "b"`},
		{"fail/self inheritance", "roles:\n  a:\n    level: 1\n    inherits: [a]\n", 4, "inherits itself"},
		{"fail/inheritance cycle", "roles:\n  a:\n    level: 1\n    inherits: [b]\n  b:\n    level: 1\n    inherits: [c]\n  c:\n    level: 1\n    inherits: [a]\n", 10, "inheritance cycle: a -> b -> c -> a"},
		{"fail/inheriting a higher role", "roles:\n  boss:\n    level: 9\n  intern:\n    level: 1\n    inherits: [boss]\n", 6, `inherits "boss" of higher level 9`},
		{"fail/unknown role in assignable_by", "roles:\n  a:\n    level: 1\n    assignable_by: [root]\n", 4, `assignable_by names unknown role "root"`},
		{"fail/unknown default_role", "default_role: member\nroles:\n  a: {level: 1}\n", 1, `default_role "member" is not a role`},
		{"fail/default_role with admin permission", "default_role: a\nroles:\n  a:\n    level: 1\n    permissions: [users:read]\n", 1, `admin permission "users:read"`},
		{"fail/default_role inheriting admin permission", "default_role: a\nroles:\n  a:\n    level: 1\n    inherits: [b]\n  b:\n    level: 1\n    permissions: [\"audit:*\"]\n", 1, `admin permission "audit:read"`},
		{"fail/default_role not a string", "default_role: [a]\nroles:\n  a: {level: 1}\n", 1, "default_role must be a string"},
		{"fail/alias", "permissions: &p [a:b]\nroles:\n  a:\n    level: 1\n    permissions: *p\n", 5, "aliases are not supported"},
		{"fail/merge key", "roles:\n  a:\n    level: 1\n  b:\n    <<: {level: 1}\n", 5, "merge keys (<<) are not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse("roles.yaml", []byte(tt.src))
			if err == nil {
				t.Fatalf("Parse succeeded with roles %v", p.RoleNames())
			}
			if p != nil {
				t.Fatal("Parse returned a policy with an error")
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v (%T) is not a *ParseError", err, err)
			}
			if pe.File != "roles.yaml" || pe.Line != tt.line {
				t.Fatalf("first error at %s:%d, want roles.yaml:%d: %v", pe.File, pe.Line, tt.line, err)
			}
			if !strings.Contains(pe.Msg, tt.want) {
				t.Fatalf("first error %q does not contain %q", pe.Msg, tt.want)
			}
			prefix := "roles.yaml:"
			if !strings.HasPrefix(err.Error(), prefix) {
				t.Fatalf("error %q does not name the file", err)
			}
		})
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	src := `roles:
  a:
    level: 1
    inherits: [nope]
  b:
    level: x
    assignable_by: [ghost]
bogus: 1
`
	_, err := Parse("p.yaml", []byte(src))
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	msg := err.Error()
	for _, want := range []string{
		`p.yaml:4:16: role "a" inherits unknown role "nope"`,
		`p.yaml:6:12: role "b": level must be an integer`,
		`p.yaml:7:21: role "b": assignable_by names unknown role "ghost"`,
		`p.yaml:8:1: unknown field "bogus"`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not report %q:\n%s", want, msg)
		}
	}
	if strings.Count(msg, "\n") != 3 {
		t.Errorf("want exactly four problems, one per line:\n%s", msg)
	}
}

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		check func(t *testing.T, p *Policy)
	}{
		{"ok/minimal", "roles:\n  only:\n    level: 0\n", func(t *testing.T, p *Policy) {
			if !p.HasRole("only") || len(p.Permissions([]string{"only"})) != 0 {
				t.Fatal("minimal policy wrong")
			}
		}},
		{"ok/null lists", "roles:\n  a:\n    level: 1\n    permissions:\n    inherits: ~\n", func(t *testing.T, p *Policy) {
			if len(p.Permissions([]string{"a"})) != 0 {
				t.Fatal("null permissions granted something")
			}
		}},
		{"ok/peers share a level", "roles:\n  billing:\n    level: 5\n  support:\n    level: 5\n", func(t *testing.T, p *Policy) {
			if p.CanAssign([]string{"billing"}, "support") == nil {
				t.Fatal("a peer may assign a role of the same level")
			}
		}},
		{"ok/inherit a peer", "roles:\n  a:\n    level: 5\n    inherits: [b]\n  b:\n    level: 5\n    permissions: [x:y]\n", func(t *testing.T, p *Policy) {
			if got := p.Permissions([]string{"a"}); len(got) != 1 || got[0] != "x:y" {
				t.Fatalf("Permissions(a) = %v", got)
			}
		}},
		{"ok/diamond inheritance", "roles:\n  top:\n    level: 3\n    inherits: [l, r]\n  l:\n    level: 2\n    inherits: [base]\n  r:\n    level: 2\n    inherits: [base]\n  base:\n    level: 1\n    permissions: [x:y]\n", func(t *testing.T, p *Policy) {
			if got := p.Permissions([]string{"top"}); len(got) != 1 {
				t.Fatalf("Permissions(top) = %v", got)
			}
		}},
		{"ok/level as hex and underscores", "roles:\n  a:\n    level: 0x10\n", func(t *testing.T, p *Policy) {
			if l, _ := p.Level("a"); l != 16 {
				t.Fatalf("level = %d", l)
			}
		}},
		{"ok/flow style and resource wildcard unquoted", "permissions: [p:read, p:write]\nroles: {a: {level: 1, permissions: [p:*]}}\n", func(t *testing.T, p *Policy) {
			if got := p.Permissions([]string{"a"}); len(got) != 2 {
				t.Fatalf("Permissions(a) = %v", got)
			}
		}},
		{"ok/empty catalogue allows admin permissions", "permissions: []\nroles:\n  a:\n    level: 1\n    permissions: [users:read]\n", func(t *testing.T, p *Policy) {
			if got := p.Permissions([]string{"a"}); len(got) != 1 {
				t.Fatalf("Permissions(a) = %v", got)
			}
		}},
		{"ok/catalogue permissions are known without a role", "permissions: [reports:read]\nroles:\n  a:\n    level: 1\n    permissions: [\"*\"]\n", func(t *testing.T, p *Policy) {
			if !Matches(p.Permissions([]string{"a"}), "reports:read") {
				t.Fatal("* did not expand to the catalogue")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse("ok.yaml", []byte(tt.src))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			tt.check(t, p)
		})
	}
}

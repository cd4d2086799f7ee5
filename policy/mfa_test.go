package policy

import (
	"errors"
	"strings"
	"testing"
)

const mfaRoles = "roles:\n  admin:\n    level: 50\n  user:\n    level: 10\n"

func TestParseMFAErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		line int
		col  int
		want string
	}{
		{"fail/negative level", mfaRoles + "mfa:\n  required_for_level: -1\n", 7, 23, "required_for_level must be between 0"},
		{"fail/huge level", mfaRoles + "mfa:\n  required_for_level: 1000001\n", 7, 23, "required_for_level must be between 0"},
		{"fail/float level", mfaRoles + "mfa:\n  required_for_level: 1.5\n", 7, 23, "required_for_level must be an integer"},
		{"fail/string level", mfaRoles + "mfa:\n  required_for_level: \"50\"\n", 7, 23, "required_for_level must be an integer"},
		{"fail/null level", mfaRoles + "mfa:\n  required_for_level:\n", 7, 22, "required_for_level must be an integer"},
		{"fail/list level", mfaRoles + "mfa:\n  required_for_level: [50]\n", 7, 23, "required_for_level must be an integer"},
		{"fail/unknown field", mfaRoles + "mfa:\n  required_level: 50\n", 7, 3, `mfa: unknown field "required_level"`},
		{"fail/not a mapping", mfaRoles + "mfa: 50\n", 6, 6, "mfa must be a mapping"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse("p.yaml", []byte(tt.src))
			if err == nil {
				t.Fatalf("Parse accepted the policy: %+v", p)
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *ParseError", err)
			}
			if pe.Line != tt.line || pe.Column != tt.col || !strings.Contains(pe.Msg, tt.want) {
				t.Fatalf("error %v; want p.yaml:%d:%d: …%s…", err, tt.line, tt.col, tt.want)
			}
		})
	}
}

func TestMFARequired(t *testing.T) {
	tests := []struct {
		name  string
		mfa   string
		roles []string
		want  bool
	}{
		{"ok/no mfa section requires nobody", "", []string{"admin"}, false},
		{"ok/at the level", "mfa:\n  required_for_level: 50\n", []string{"admin"}, true},
		{"ok/above the level", "mfa:\n  required_for_level: 40\n", []string{"admin"}, true},
		{"ok/below the level", "mfa:\n  required_for_level: 50\n", []string{"user"}, false},
		{"ok/highest role counts", "mfa:\n  required_for_level: 50\n", []string{"user", "admin"}, true},
		{"ok/unknown roles count for nothing", "mfa:\n  required_for_level: 0\n", []string{"ghost"}, false},
		{"ok/no roles", "mfa:\n  required_for_level: 0\n", nil, false},
		{"ok/level 0 requires every role", "mfa:\n  required_for_level: 0\n", []string{"user"}, true},
		{"ok/a level no role has", "mfa: {required_for_level: 75}\n", []string{"admin"}, false},
		{"ok/empty section requires nobody", "mfa: {}\n", []string{"admin"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse("p.yaml", []byte(mfaRoles+tt.mfa))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := p.MFARequired(tt.roles); got != tt.want {
				t.Fatalf("MFARequired(%v) = %v, want %v", tt.roles, got, tt.want)
			}
		})
	}
	if _, ok := Default().MFARequiredLevel(); ok {
		t.Fatal("the built-in policy requires MFA")
	}
	if level, ok := (&Policy{}).MFARequiredLevel(); ok || level != NoLevel {
		t.Fatalf("the zero Policy requires MFA from level %d", level)
	}
}

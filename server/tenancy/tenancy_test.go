package tenancy

import (
	"strings"
	"testing"
)

func TestValidSlug(t *testing.T) {
	for _, tc := range []struct {
		name string
		slug string
		want bool
	}{
		{"ok/word", "acme", true},
		{"ok/one character", "a", true},
		{"ok/digits and hyphens", "acme-2", true},
		{"ok/longest", strings.Repeat("a", MaxSlugLen), true},
		{"fail/too long", strings.Repeat("a", MaxSlugLen+1), false},
		{"fail/empty", "", false},
		{"fail/upper case", "Acme", false},
		{"fail/leading hyphen", "-acme", false},
		{"fail/trailing hyphen", "acme-", false},
		{"fail/slash", "acme/x", false},
		{"fail/dot", "acme.x", false},
		{"fail/space", "ac me", false},
		{"fail/newline", "acme\n", false},
		{"fail/non-ASCII", "аcme", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ValidSlug(tc.slug); got != tc.want {
				t.Fatalf("ValidSlug(%q) = %v, want %v", tc.slug, got, tc.want)
			}
		})
	}
}

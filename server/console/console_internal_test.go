package console

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestSafeNext: the page a sign-in returns to is a console path; anything
// else (another site, a scheme-relative URL, the sign-in itself, a header
// injection, more than 512 bytes) is the users screen.
func TestSafeNext(t *testing.T) {
	for _, tc := range []struct{ name, next, want string }{
		{"ok/screen", "/console/keys", "/console/keys"},
		{"ok/with_query", "/console/audit?action=key.rotated", "/console/audit?action=key.rotated"},
		{"ok/root", "/console", "/console"},
		{"fail/empty", "", "/console/users"},
		{"fail/other_site", "https://evil.example/console/keys", "/console/users"},
		{"fail/scheme_relative", "//evil.example/console", "/console/users"},
		{"fail/prefix_only", "/consolex", "/console/users"},
		{"fail/outside", "/admin/users", "/console/users"},
		{"fail/login_loop", "/console/login?next=/console", "/console/users"},
		{"fail/callback", "/console/callback?code=x", "/console/users"},
		{"fail/backslash", "/console/\\evil.example", "/console/users"},
		{"fail/newline", "/console/users\r\nSet-Cookie: x=y", "/console/users"},
		// Kept with the pending sign-in: at most 512 bytes (no limit before).
		{"ok/512 bytes", "/console/users?q=" + strings.Repeat("a", 512-len("/console/users?q=")),
			"/console/users?q=" + strings.Repeat("a", 512-len("/console/users?q="))},
		{"fail/513 bytes", "/console/users?q=" + strings.Repeat("a", 513-len("/console/users?q=")), "/console/users"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := safeNext(tc.next); got != tc.want {
				t.Fatalf("safeNext(%q) = %q, want %q", tc.next, got, tc.want)
			}
		})
	}
}

// TestCursorPage: whole lists are shown in pages of PageSize after the
// cursor (the last key of the page before), each item once.
func TestCursorPage(t *testing.T) {
	var list []string
	for i := range 2*PageSize + 3 {
		list = append(list, fmt.Sprintf("c%03d", i))
	}
	id := func(s string) string { return s }
	for _, tc := range []struct {
		name     string
		list     []string
		pages    int
		lastSize int
	}{
		{"ok/empty", nil, 1, 0},
		{"ok/one_page", list[:PageSize], 1, PageSize},
		{"ok/three_pages", list, 3, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			shuffled := slices.Clone(tc.list)
			slices.Reverse(shuffled)
			var seen []string
			cursor, pages := "", 0
			for {
				page, next := cursorPage(shuffled, id, cursor)
				pages++
				seen = append(seen, page...)
				if next == "" {
					if len(page) != tc.lastSize {
						t.Fatalf("last page has %d items, want %d", len(page), tc.lastSize)
					}
					break
				}
				cursor = next
			}
			if pages != tc.pages || !slices.Equal(seen, tc.list) && len(tc.list) > 0 {
				t.Fatalf("%d pages, items %v", pages, seen)
			}
		})
	}
}

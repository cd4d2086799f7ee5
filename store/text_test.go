package store_test

import (
	"maps"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/portcullis-auth/portcullis/store"
)

func TestCleanText(t *testing.T) {
	long := strings.Repeat("a", store.MaxUserAgent-1)
	for _, tc := range []struct {
		name  string
		in    string
		limit int
		want  string
	}{
		{"ok/plain", "Mozilla/5.0 (X11; Linux x86_64)", 256, "Mozilla/5.0 (X11; Linux x86_64)"},
		{"ok/non_ascii_kept", "Navigateur é 日本 🙂", 256, "Navigateur é 日本 🙂"},
		{"ok/empty", "", 256, ""},
		{"ok/cut_at_limit", "abcdef", 4, "abcd"},
		{"ok/cut_through_a_character", long + "é", store.MaxUserAgent, long},
		{"ok/cut_through_a_four_byte_character", "ab🙂", 5, "ab"},
		{"ok/cut_after_a_character", "aé", 3, "aé"},
		{"fail/invalid_byte", "\xff", 256, "\uFFFD"},
		{"fail/invalid_run_is_one_replacement", "a\xff\xfe\xfdb", 256, "a\uFFFDb"},
		{"fail/truncated_character", "a\xc3", 256, "a\uFFFD"},
		{"fail/invalid_byte_at_the_limit", long + "\xff", store.MaxUserAgent, long},
		{"fail/nul", "a\x00b", 256, "ab"},
		{"fail/c0_controls", "a\tb\r\nc\x1bd\x7fe", 256, "abcde"},
		{"fail/c1_control", "a\u0085b", 256, "ab"},
		{"fail/controls_do_not_count_toward_the_limit", "\x00\x00\x00abc", 3, "abc"},
		{"fail/zero_limit", "abc", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := store.CleanText(tc.in, tc.limit)
			if got != tc.want {
				t.Fatalf("CleanText(%q, %d) = %q, want %q", tc.in, tc.limit, got, tc.want)
			}
			if !utf8.ValidString(got) || len(got) > tc.limit || strings.ContainsFunc(got, unicode.IsControl) {
				t.Fatalf("CleanText(%q, %d) = %q: not storable text within the limit", tc.in, tc.limit, got)
			}
		})
	}
}

func TestCleanRequestMeta(t *testing.T) {
	for _, tc := range []struct {
		name           string
		ip, ua         string
		wantIP, wantUA string
	}{
		{"ok/plain", "2001:db8::1", "curl/8.0", "2001:db8::1", "curl/8.0"},
		{"ok/user_agent_cut", "192.0.2.1", strings.Repeat("x", 300), "192.0.2.1", strings.Repeat("x", store.MaxUserAgent)},
		{"fail/ip_not_text", "\xff\x00" + strings.Repeat("1", 100), "", "\uFFFD" + strings.Repeat("1", store.MaxIP-3), ""},
		{"fail/user_agent_not_utf8", "192.0.2.1", "\xff", "192.0.2.1", "\uFFFD"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ip, ua := store.CleanRequestMeta(tc.ip, tc.ua)
			if ip != tc.wantIP || ua != tc.wantUA {
				t.Fatalf("CleanRequestMeta(%q, %q) = %q, %q; want %q, %q", tc.ip, tc.ua, ip, ua, tc.wantIP, tc.wantUA)
			}
		})
	}
}

// TestCleanDetails: every value of an audit event's details is cut to
// MaxAuditDetail bytes of clean text; keys and short values are kept, and
// the map given is not changed.
func TestCleanDetails(t *testing.T) {
	long := strings.Repeat("a", 16<<10)
	for _, tc := range []struct {
		name string
		in   map[string]string
		want map[string]string
	}{
		{"ok/nil", nil, nil},
		{"ok/short_kept", map[string]string{"provider": "corp", "reason": "invalid_state"}, map[string]string{"provider": "corp", "reason": "invalid_state"}},
		{"ok/at_the_limit", map[string]string{"scope": long[:store.MaxAuditDetail]}, map[string]string{"scope": long[:store.MaxAuditDetail]}},
		{"fail/long_cut", map[string]string{"provider": long}, map[string]string{"provider": long[:store.MaxAuditDetail]}},
		{"fail/controls_dropped", map[string]string{"x": "a\x00b\r\nc"}, map[string]string{"x": "abc"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := maps.Clone(tc.in)
			got := store.CleanDetails(tc.in)
			if !maps.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
				t.Fatalf("CleanDetails = %d values, want %d", len(got), len(tc.want))
			}
			if !maps.Equal(tc.in, before) {
				t.Fatal("CleanDetails changed the map it was given")
			}
		})
	}
}

// TestEmailKey: only ASCII A-Z fold; no other character (non-ASCII
// capitals, the Kelvin sign, the dotted capital I) changes, so two
// mailboxes never share a key (found by a review).
func TestEmailKey(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"ok/ascii_lower", "bill@example.com", "bill@example.com"},
		{"ok/ascii_upper", "BILL@Example.COM", "bill@example.com"},
		{"ok/empty", "", ""},
		{"ok/digits_and_symbols", "A.B+1_Z-@X9.Y", "a.b+1_z-@x9.y"},
		{"fail/dotted_capital_i_kept", "b\u0130ll@example.com", "b\u0130ll@example.com"},
		{"fail/dotted_capital_i_with_ascii_upper", "B\u0130LL@EXAMPLE.com", "b\u0130ll@example.com"},
		{"fail/kelvin_sign_kept", "\u212Aate@example.com", "\u212Aate@example.com"},
		{"fail/non_ascii_capital_kept", "\u00C9lise@\u00C9xample.com", "\u00C9lise@\u00C9xample.com"},
		{"fail/kelvin_in_domain_kept", "x@\u212Ab.com", "x@\u212Ab.com"},
		{"fail/invalid_utf8_kept", "A\xffB", "a\xffb"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := store.EmailKey(tc.in); got != tc.want {
				t.Errorf("EmailKey(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
	if store.EmailKey("b\u0130ll@example.com") == store.EmailKey("bill@example.com") {
		t.Error("two mailboxes share a key")
	}
}

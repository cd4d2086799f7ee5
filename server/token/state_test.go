package token

import (
	"strings"
	"testing"
)

// TestValidState: a state is 1 to MaxStateBytes characters of VSCHAR
// (%x20-7E, RFC 6749 Appendix A.5), spaces and quotes included; control
// characters, DEL, non-ASCII and anything longer are not.
func TestValidState(t *testing.T) {
	for _, tc := range []struct {
		name  string
		state string
		ok    bool
	}{
		{"ok/plain", "xyz", true},
		{"ok/every VSCHAR", func() string {
			var b strings.Builder
			for c := byte(0x20); c <= 0x7e; c++ {
				b.WriteByte(c)
			}
			return b.String()
		}(), true},
		{"ok/4 KiB of <", strings.Repeat("<", MaxStateBytes), true},
		{"fail/empty", "", false},
		{"fail/over 4 KiB", strings.Repeat("s", MaxStateBytes+1), false},
		{"fail/tab", "a\tb", false},
		{"fail/newline", "a\nb", false},
		{"fail/NUL", "a\x00", false},
		{"fail/DEL", "a\x7f", false},
		{"fail/non-ASCII", "café", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ValidState(tc.state); got != tc.ok {
				t.Fatalf("ValidState(%.40q) = %v, want %v", tc.state, got, tc.ok)
			}
		})
	}
}

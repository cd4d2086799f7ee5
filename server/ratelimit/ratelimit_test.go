package ratelimit

import (
	"strings"
	"testing"
	"time"
)

func TestLockoutDelay(t *testing.T) {
	cases := []struct {
		over int64
		want time.Duration
	}{
		{0, time.Second}, {1, 2 * time.Second}, {2, 4 * time.Second}, {8, 256 * time.Second},
		{9, 5 * time.Minute}, {30, 5 * time.Minute}, {31, 5 * time.Minute}, {1 << 40, 5 * time.Minute},
	}
	for _, c := range cases {
		if got := LockoutDelay(c.over, 5*time.Minute); got != c.want {
			t.Errorf("LockoutDelay(%d) = %s, want %s", c.over, got, c.want)
		}
	}
}

func TestHashHidesSubjectAndFoldsCase(t *testing.T) {
	if Hash("Alice@Example.com ") != Hash("alice@example.com") {
		t.Fatal("logins must compare case-insensitively")
	}
	if h := Hash("alice@example.com"); len(h) != 32 || h == "alice@example.com" {
		t.Fatalf("hash %q", h)
	}
	// Found by a review: only ASCII letters fold (store.EmailKey), so
	// another mailbox is another counter, as it is another account.
	for _, other := range []string{"al\u0130ce@example.com", "alice@\u212Axample.com"} {
		if Hash(other) == Hash(strings.Replace(strings.Replace(other, "\u0130", "i", 1), "\u212A", "k", 1)) {
			t.Errorf("Hash(%q) is the counter of another mailbox", other)
		}
	}
}

func TestAddressKey(t *testing.T) {
	cases := []struct{ name, ip, want string }{
		{"ok/ipv4_as_is", "203.0.113.7", "203.0.113.7"},
		{"ok/ipv4_mapped_is_ipv4", "::ffff:203.0.113.7", "203.0.113.7"},
		{"ok/ipv6_by_64", "2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"ok/ipv6_same_64", "2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"},
		{"ok/ipv6_other_64", "2001:db8:1:3::1", "2001:db8:1:3::/64"},
		{"ok/ipv6_zone_dropped", "fe80::1%eth0", "fe80::/64"},
		{"ok/ipv6_loopback", "::1", "::/64"},
		{"fail/not_an_address", "unknown", "unknown"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := AddressKey(c.ip); got != c.want {
				t.Fatalf("AddressKey(%q) = %q, want %q", c.ip, got, c.want)
			}
		})
	}
}

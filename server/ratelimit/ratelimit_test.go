package ratelimit

import (
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
}

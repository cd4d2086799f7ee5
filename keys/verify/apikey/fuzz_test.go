package apikey

import (
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary strings (and mutations of a real key) to Parse:
// it must never panic, and it accepts exactly the strings of the key shape
// whose checksum matches.
func FuzzParse(f *testing.F) {
	k, err := Generate()
	if err != nil {
		f.Fatal(err)
	}
	good := k.String()
	f.Add(good)
	f.Add(good[:Len-1])
	f.Add(good + "x")
	f.Add(strings.ToUpper(good))
	f.Add("pcak_" + strings.Repeat("0", 38))
	f.Add("pcrt_" + good[5:])
	f.Add("")
	f.Add("pcak_")
	f.Add(good[:20] + "\x00" + good[21:])
	f.Fuzz(func(t *testing.T, s string) {
		k, err := Parse(s)
		if err != nil {
			if k.String() != "" {
				t.Fatalf("Parse(%q) refused it but returned a key", s)
			}
			return
		}
		if k.String() != s || len(s) != Len || !Pattern.MatchString(s) {
			t.Fatalf("Parse accepted %q", s)
		}
		if s[Len-ChecksumLen:] != Checksum(s[:Len-ChecksumLen]) {
			t.Fatalf("Parse accepted %q with a wrong checksum", s)
		}
		if len(k.Hint()) != 15 || len(k.Hash()) != 32 {
			t.Fatalf("hint %q hash %d bytes", k.Hint(), len(k.Hash()))
		}
	})
}

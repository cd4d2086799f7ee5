package apikey

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"testing/iotest"
)

// known is a key made from a fixed random part; its checksum is computed
// independently of the package in TestChecksumIndependent.
func known(t *testing.T) string {
	t.Helper()
	k, err := generate(bytes.NewReader(bytes.Repeat([]byte{0, 1, 2, 61, 62, 123}, 20)))
	if err != nil {
		t.Fatal(err)
	}
	return k.String()
}

func TestGenerate(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		k, err := Generate()
		if err != nil {
			t.Fatal(err)
		}
		s := k.String()
		if len(s) != Len || Len != 43 || !Pattern.MatchString(s) || Pattern.FindString(s) != s {
			t.Fatalf("generated key %q does not match pcak_[0-9A-Za-z]{38}", s)
		}
		if _, err := Parse(s); err != nil {
			t.Fatalf("Parse(generated) = %v", err)
		}
		if seen[s] {
			t.Fatal("Generate repeated a key")
		}
		seen[s] = true
	}
}

// TestGenerateUnbiased: every base62 character can be drawn, and bytes
// from 248 up (which would bias a modulo) are skipped rather than folded.
func TestGenerateUnbiased(t *testing.T) {
	var all []byte
	for c := 0; c < 256; c++ {
		all = append(all, byte(c))
	}
	k, err := generate(bytes.NewReader(bytes.Repeat(all, 2)))
	if err != nil {
		t.Fatal(err)
	}
	if got := k.String()[len(Prefix) : len(Prefix)+RandomLen]; got != alphabet[:RandomLen] {
		t.Fatalf("random part %q, want %q", got, alphabet[:RandomLen])
	}
	// Only bytes ≥ 248: nothing usable, so the reader runs dry.
	if _, err := generate(bytes.NewReader(bytes.Repeat([]byte{248, 255}, 100))); err == nil {
		t.Fatal("generate accepted biased bytes")
	}
	if _, err := generate(iotest.ErrReader(errors.New("no entropy"))); err == nil {
		t.Fatal("generate ignored a failing random source")
	}
}

// TestChecksumIndependent recomputes the CRC32 (IEEE, reflected polynomial
// 0xEDB88320) bit by bit and encodes it in base62 by hand.
func TestChecksumIndependent(t *testing.T) {
	s := known(t)
	body := s[:Len-ChecksumLen]
	crc := ^uint32(0)
	for _, c := range []byte(body) {
		crc ^= uint32(c)
		for i := 0; i < 8; i++ {
			if crc&1 == 1 {
				crc = crc>>1 ^ 0xEDB88320
			} else {
				crc >>= 1
			}
		}
	}
	crc = ^crc
	digits := "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	want := ""
	for i := 0; i < 6; i++ {
		want = string(digits[crc%62]) + want
		crc /= 62
	}
	if got := s[Len-ChecksumLen:]; got != want {
		t.Fatalf("checksum %q, want %q", got, want)
	}
}

func TestParse(t *testing.T) {
	good := known(t)
	body := good[:Len-ChecksumLen]
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"ok/known", good, nil},
		{"fail/empty", "", ErrMalformed},
		{"fail/prefix_only", Prefix, ErrMalformed},
		{"fail/wrong_prefix", "pcrt_" + good[5:], ErrMalformed},
		{"fail/upper_prefix", "PCAK_" + good[5:], ErrMalformed},
		{"fail/too_short", good[:Len-1], ErrMalformed},
		{"fail/too_long", good + "0", ErrMalformed},
		{"fail/space_inside", body[:10] + " " + body[11:] + good[Len-ChecksumLen:], ErrMalformed},
		{"fail/underscore_inside", body[:10] + "_" + body[11:] + good[Len-ChecksumLen:], ErrMalformed},
		{"fail/dash_inside", body[:10] + "-" + body[11:] + good[Len-ChecksumLen:], ErrMalformed},
		{"fail/non_ascii", good[:Len-2] + "é", ErrMalformed},
		{"fail/trailing_newline", good[:Len-1] + "\n", ErrMalformed},
		{"fail/nul", good[:Len-1] + "\x00", ErrMalformed},
		{"fail/typo_in_random", flip(good, 10), ErrChecksum},
		{"fail/typo_in_checksum", flip(good, Len-1), ErrChecksum},
		{"fail/swapped_checksum", body + strings.Repeat("0", ChecksumLen), ErrChecksum},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := Parse(tc.in)
			if !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
				t.Fatalf("Parse(%q) = %v, want %v", tc.in, err, tc.want)
			}
			if err != nil {
				if k.String() != "" {
					t.Fatalf("a refused key came back: %q", k.String())
				}
				if strings.Contains(err.Error(), tc.in) && tc.in != "" {
					t.Fatalf("the error %q repeats the key", err)
				}
				return
			}
			if k.String() != tc.in {
				t.Fatalf("String() = %q", k.String())
			}
		})
	}
}

func TestHashAndHint(t *testing.T) {
	s := known(t)
	k, err := Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	if h := k.Hash(); len(h) != 32 || !bytes.Equal(h, Hash(s)) || bytes.Contains(h, []byte(s[5:12])) {
		t.Fatalf("Hash = %x", h)
	}
	if hint := k.Hint(); hint != s[:8]+"..."+s[Len-4:] || strings.Contains(hint, s[8:Len-4]) {
		t.Fatalf("Hint = %q", hint)
	}
	other, _ := Generate()
	if bytes.Equal(other.Hash(), k.Hash()) {
		t.Fatal("two keys hash alike")
	}
}

func TestSessionAndClientID(t *testing.T) {
	if SessionID("apk_x") != "ak_apk_x" || ClientID("apk_x") != "apikey:apk_x" {
		t.Fatalf("SessionID %q ClientID %q", SessionID("apk_x"), ClientID("apk_x"))
	}
	for _, tc := range []struct {
		name string
		sid  string
		id   string
		ok   bool
	}{
		{"ok/key_session", "ak_apk_abcdefghijklmnopqrstuvwxyz", "apk_abcdefghijklmnopqrstuvwxyz", true},
		{"ok/digits", "ak_apk_234567abcdefghijklmnopqrst", "apk_234567abcdefghijklmnopqrst", true},
		// A login's sid (newSID: 22 base64url characters) that happens to
		// start with ak_ (one in 64³) is no key's session.
		{"fail/login_sid_starting_ak_", "ak__LjLrWspkGobsRqD-3A", "", false},
		{"fail/login_sid_ak_apk", "ak_apk_LjLrWspkGobsRqD", "", false},
		{"fail/short_id", "ak_apk_x", "", false},
		{"fail/long_id", "ak_apk_abcdefghijklmnopqrstuvwxyza", "", false},
		{"fail/upper_case", "ak_apk_ABCDEFGHIJKLMNOPQRSTUVWXYZ", "", false},
		{"fail/base32_has_no_1", "ak_apk_1bcdefghijklmnopqrstuvwxyz", "", false},
		{"fail/no_id_prefix", "ak_abcdefghijklmnopqrstuvwxyz", "", false},
		{"fail/prefix_only", "ak_", "", false},
		{"fail/login_sid", "AbCdEf0123456789_-abcd", "", false},
		{"fail/empty", "", "", false},
	} {
		id, ok := KeyIDOfSession(tc.sid)
		if id != tc.id || ok != tc.ok {
			t.Fatalf("%s: KeyIDOfSession(%q) = %q, %v", tc.name, tc.sid, id, ok)
		}
	}
	if !HasPrefix("pcak_x") || HasPrefix("pcrt_x") {
		t.Fatal("HasPrefix")
	}
}

package password

import (
	"errors"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		name  string
		pw    string
		email string
		code  string // "" when accepted
	}{
		{"ok/passphrase", "correct horse battery staple", "ann@example.com", ""},
		{"ok/eight characters", "tx7#kq2m", "ann@example.com", ""},
		{"ok/lowercase only is fine (no composition rules)", "purple monkey dishwasher", "", ""},
		{"ok/spaces allowed", "  my own words  ", "", ""},
		{"ok/unicode counts characters", "日本語のパスワード", "", ""},
		{"ok/256 characters", strings.Repeat("ab1", 85) + "x", "", ""},
		{"ok/emoji", "🔒🔑🐉🌋🏰🦄🎲🧩", "", ""},
		{"ok/email domain is not the password", "example.com rules", "ann@example.com", ""},
		{"ok/long random digits after a word", "monkey8273645192", "", ""},
		{"fail/too short", "a1b2c3", "", CodeTooShort},
		{"fail/seven characters", "xk3#pq9", "", CodeTooShort},
		{"fail/multi-byte but short in characters", "日本語パス", "", CodeTooShort},
		{"fail/too long", strings.Repeat("ab1", 86), "", CodeTooLong},
		{"fail/invalid utf-8", "abcdefgh\xff", "", CodeInvalidChars},
		{"fail/newline", "abcd\nefgh1234", "", CodeInvalidChars},
		{"fail/tab", "abcd\tefgh1234", "", CodeInvalidChars},
		{"fail/nul", "abcd\x00efgh1234", "", CodeInvalidChars},
		{"fail/common", "password", "", CodeCommon},
		{"fail/common case-insensitive", "PassWord", "", CodeCommon},
		{"fail/common long", "iloveyou", "", CodeCommon},
		{"fail/common keyboard walk", "1qaz2wsx", "", CodeCommon},
		{"fail/common with suffix", "sunshine2024!", "", CodeCommon},
		{"fail/common with prefix", "2024dragon", "", CodeCommon},
		{"fail/common base word with digits", "monkey123", "", CodeCommon},
		{"fail/leet", "p@ssw0rd", "", CodeCommon},
		{"fail/leet with suffix", "P@$$w0rd123!", "", CodeCommon},
		{"fail/leet with one as l", "l1verpool", "", CodeCommon},
		{"fail/email", "Ann.Smith@Example.com", "ann.smith@example.com", CodeEmail},
		{"fail/email local part", "Ann.Smith", "ann.smith@example.com", CodeEmail},
		{"fail/email local part with digits", "ann.smith1990", "ann.smith@example.com", CodeEmail},
		{"fail/service name", "Portcullis2024", "", CodeContext},
		{"fail/service name leet", "p0rtcull1s!", "", CodeContext},
		{"fail/one character repeated", "zzzzzzzzzz", "", CodeRepetitive},
		{"fail/spaces only", "          ", "", CodeRepetitive},
		{"fail/short pattern repeated", "xq7xq7xq7xq7", "", CodeRepetitive},
		{"fail/pattern with partial repeat", "ab9zab9zab", "", CodeRepetitive},
		{"fail/ascending letters", "lmnopqrstu", "", CodeSequential},
		{"fail/descending digits", "98765432", "", CodeSequential},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(tt.pw, tt.email)
			if tt.code == "" {
				if err != nil {
					t.Fatalf("Check refused: %v", err)
				}
				return
			}
			var we *WeakPasswordError
			if !errors.As(err, &we) || !errors.Is(err, ErrWeakPassword) {
				t.Fatalf("Check = %v, want a *WeakPasswordError %s", err, tt.code)
			}
			if we.Code != tt.code {
				t.Fatalf("code %s (%s), want %s", we.Code, we.Reason, tt.code)
			}
			if we.Reason == "" || we.Error() != we.Reason {
				t.Fatal("no reason")
			}
			if len(tt.pw) >= 4 && tt.pw != "password" && strings.Contains(we.Reason, tt.pw) {
				t.Fatalf("reason %q contains the password", we.Reason)
			}
		})
	}
}

func TestRules(t *testing.T) {
	r := Rules{MinLength: 12, MaxLength: 64}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := r.Check("tx7#kq2m9", ""); err == nil || !strings.Contains(err.Error(), "at least 12") {
		t.Fatalf("min 12: %v", err)
	}
	if err := r.Check(strings.Repeat("tx7#", 16)+"x", ""); err == nil || !strings.Contains(err.Error(), "at most 64") {
		t.Fatalf("max 64: %v", err)
	}
	if err := (Rules{}).Check("tx7#kq2m", ""); err != nil {
		t.Fatalf("zero Rules use the defaults: %v", err)
	}
	if err := (Rules{ContextWords: []string{"Acme"}}).Check("acme2024!", ""); err == nil {
		t.Fatal("context word accepted")
	}
	if err := (Rules{}).Check("portcullis9", ""); err != nil {
		t.Fatalf("without context words the service name is allowed: %v", err)
	}
	tests := []struct {
		name string
		r    Rules
		ok   bool
	}{
		{"ok/default", DefaultRules(), true},
		{"ok/zero is default", Rules{}, true},
		{"ok/long", Rules{MinLength: 15, MaxLength: MaxMaxLength}, true},
		{"fail/min below 8", Rules{MinLength: 6}, false},
		{"fail/max below 64", Rules{MaxLength: 32}, false},
		{"fail/max too big", Rules{MaxLength: MaxMaxLength + 1}, false},
		{"fail/min above max", Rules{MinLength: 100, MaxLength: 64}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.r.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate(%+v) = %v", tt.r, err)
			}
		})
	}
}

func TestCommonList(t *testing.T) {
	if n := CommonPasswordCount(); n < 5000 {
		t.Fatalf("common-password list has %d entries, want at least 5000", n)
	}
	for _, pw := range []string{"123456", "password", "qwerty", "iloveyou", "dragon", "monkey", "letmein", "trustno1", "baseball", "football", "superman", "qwertyuiop", "1q2w3e4r", "zaq12wsx", "starwars", "P@ssw0rd", "Password1"} {
		if !IsCommon(pw) {
			t.Errorf("%q is not in the common-password list", pw)
		}
	}
	if IsCommon("correct horse battery staple") || IsCommon("") {
		t.Error("IsCommon is too eager")
	}
	for line := range strings.Lines(commonPasswordsFile) {
		line = strings.TrimRight(line, "\n")
		if strings.HasPrefix(line, "#") {
			continue
		}
		if line != strings.ToLower(line) || strings.TrimSpace(line) != line || line == "" {
			t.Fatalf("list entry %q is not a trimmed lower-case line", line)
		}
	}
}

func FuzzCheck(f *testing.F) {
	for _, s := range []string{"password", "p@ssw0rd1", "correct horse", "aaaaaaaa", "12345678", "\xff\xfe", "日本語のパスワード", "1!2@3#4$"} {
		f.Add(s, "ann@example.com")
	}
	f.Fuzz(func(t *testing.T, pw, email string) {
		err := Check(pw, email)
		if err == nil {
			return
		}
		var we *WeakPasswordError
		if !errors.As(err, &we) || we.Code == "" || we.Reason == "" {
			t.Fatalf("Check(%q) = %v", pw, err)
		}
	})
}

package accounts_test

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
)

func TestInviteTokenShape(t *testing.T) {
	secret, err := accounts.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	if !accounts.ValidSecret(secret) || len(secret) != 43 {
		t.Fatalf("secret %q", secret)
	}
	other, _ := accounts.NewSecret()
	if other == secret {
		t.Fatal("two secrets are equal")
	}
	const id = "inv_abcdefghijklmnopqrstuvwxyz"
	tok := accounts.InviteToken(id, secret)
	for _, tc := range []struct {
		name, tok string
		ok        bool
	}{
		{"ok/roundtrip", tok, true},
		{"fail/empty", "", false},
		{"fail/no_dot", id + secret, false},
		{"fail/short_secret", id + "." + secret[:42], false},
		{"fail/long_secret", id + "." + secret + "A", false},
		{"fail/bad_secret_char", id + "." + secret[:42] + "*", false},
		{"fail/wrong_prefix", "usr_abcdefghijklmnopqrstuvwxyz." + secret, false},
		{"fail/bad_id_char", "inv_abcdefghijklmnopqrstuvwxy1." + secret, false},
		{"fail/short_id", "inv_abc." + secret, false},
		{"fail/huge", strings.Repeat("a", 10000), false},
		{"fail/two_dots", id + "." + secret + "." + secret, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gotID, gotSecret, ok := accounts.ParseInviteToken(tc.tok)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if ok && (gotID != id || gotSecret != secret) {
				t.Fatalf("parsed %q %q", gotID, gotSecret)
			}
		})
	}
	for _, s := range []string{"", "abc", strings.Repeat("A", 44), strings.Repeat("=", 43)} {
		if accounts.ValidSecret(s) {
			t.Fatalf("ValidSecret(%q) = true", s)
		}
	}
}

// TestInviteRefText: an InviteRef's text (what a server-side record keeps
// of an invite link) holds the invite id and the SHA-256 of the secret,
// never the token or its secret, and reads back to the same reference;
// text of any other form is refused, and a token of another shape gives
// the zero InviteRef (text "").
func TestInviteRefText(t *testing.T) {
	secret, err := accounts.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	const id = "inv_abcdefghijklmnopqrstuvwxyz"
	tok := accounts.InviteToken(id, secret)
	h := sha256.Sum256([]byte(secret))
	want := id + ":" + base64.RawURLEncoding.EncodeToString(h[:])
	ref := accounts.InviteRefOf(tok)
	text, err := ref.MarshalText()
	if err != nil || string(text) != want {
		t.Fatalf("text %q, %v; want %q", text, err, want)
	}
	if strings.Contains(string(text), secret) {
		t.Fatal("the reference holds the secret")
	}
	for _, tc := range []struct {
		name, text string
		ok         bool
	}{
		{"ok/roundtrip", want, true},
		{"ok/empty_is_zero", "", true},
		{"fail/the_token", tok, false},
		{"fail/no_colon", id + base64.RawURLEncoding.EncodeToString(h[:]), false},
		{"fail/short_hash", id + ":" + base64.RawURLEncoding.EncodeToString(h[:31]), false},
		{"fail/bad_base64", id + ":" + strings.Repeat("*", 43), false},
		{"fail/bad_id", "usr_abcdefghijklmnopqrstuvwxyz:" + base64.RawURLEncoding.EncodeToString(h[:]), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got accounts.InviteRef
			err := got.UnmarshalText([]byte(tc.text))
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok %v", err, tc.ok)
			}
			if back, _ := got.MarshalText(); tc.ok && string(back) != tc.text {
				t.Fatalf("read back as %q", back)
			}
		})
	}
	for _, bad := range []string{"", "inv_abc." + secret, strings.Repeat("a", 10000)} {
		if text, _ := accounts.InviteRefOf(bad).MarshalText(); len(text) != 0 {
			t.Fatalf("InviteRefOf(%q) = %q, want the zero InviteRef", bad, text)
		}
	}
}

func TestNormaliseEmailAndName(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		ok             bool
	}{
		{"ok/plain", "alice@example.com", "alice@example.com", true},
		{"ok/trimmed", "  alice@example.com\t", "alice@example.com", true},
		{"ok/case_kept", "Alice@Example.com", "Alice@Example.com", true},
		{"fail/empty", "   ", "", false},
		{"fail/no_at", "alice", "", false},
		{"fail/display_name", "Alice <alice@example.com>", "", false},
		{"fail/two", "a@example.com, b@example.com", "", false},
		{"fail/crlf", "a@example.com\r\nBcc: x@example.com", "", false},
		{"fail/too_long", strings.Repeat("a", 250) + "@example.com", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := accounts.NormaliseEmail(tc.in)
			if tc.ok != (err == nil) || got != tc.want {
				t.Fatalf("NormaliseEmail(%q) = %q, %v", tc.in, got, err)
			}
			if err != nil && !errors.Is(err, apierr.ErrInvalidRequest) {
				t.Fatalf("error %v is not invalid_request", err)
			}
		})
	}
	for _, tc := range []struct {
		name, in, want string
		ok             bool
	}{
		{"ok/plain", " Ada Lovelace ", "Ada Lovelace", true},
		{"ok/empty", "", "", true},
		{"ok/unicode", "Zoë Ångström", "Zoë Ångström", true},
		{"fail/control", "Ada\nLovelace", "", false},
		{"fail/nul", "Ada\x00Lovelace", "", false},
		{"fail/not_utf8", "Ada \xff", "", false},
		{"fail/long", strings.Repeat("x", 201), "", false},
	} {
		t.Run("name/"+tc.name, func(t *testing.T) {
			got, err := accounts.NormaliseName(tc.in)
			if tc.ok != (err == nil) || got != tc.want {
				t.Fatalf("NormaliseName(%q) = %q, %v", tc.in, got, err)
			}
		})
	}
}

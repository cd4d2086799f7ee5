package password

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Default and permitted length bounds, in Unicode characters (runes) after NFKC normalization.
const (
	DefaultMinLength = 8   // NIST SP 800-63B: at least 8
	DefaultMaxLength = 256 // NIST SP 800-63B: permit at least 64
	// MaxMaxLength is the largest MaxLength Rules accept.
	MaxMaxLength = 4096
)

// Codes of WeakPasswordError, stable for programs (the Reason is for people).
const (
	CodeTooShort     = "too_short"
	CodeTooLong      = "too_long"
	CodeInvalidChars = "invalid_characters"
	CodeCommon       = "common"
	CodeEmail        = "matches_email"
	CodeContext      = "context_word"
	CodeRepetitive   = "repetitive"
	CodeSequential   = "sequential"
)

// ErrWeakPassword is matched (errors.Is) by every *WeakPasswordError.
var ErrWeakPassword = errors.New("weak password")

// WeakPasswordError refuses a new password. Reason is a sentence for the person choosing it (shown
// on pages and as error_description); it never contains the password.
type WeakPasswordError struct {
	Code   string
	Reason string
}

// Error returns the reason.
func (e *WeakPasswordError) Error() string { return e.Reason }

// Is makes errors.Is(err, ErrWeakPassword) true.
func (e *WeakPasswordError) Is(target error) bool { return target == ErrWeakPassword }

// Rules is a password policy after NIST SP 800-63B: length bounds, no composition rules, and a
// blocklist of common, repetitive, sequential and context-specific passwords.
type Rules struct {
	MinLength int // runes; 0 means DefaultMinLength; at least 8
	MaxLength int // runes; 0 means DefaultMaxLength; at least 64 and MinLength, at most MaxMaxLength
	// ContextWords are words specific to this service (its name, brand) that a password must not be
	// based on; compared case-insensitively.
	ContextWords []string
}

// DefaultRules returns 8–256 characters with "portcullis" as the context word.
func DefaultRules() Rules {
	return Rules{MinLength: DefaultMinLength, MaxLength: DefaultMaxLength, ContextWords: []string{"portcullis"}}
}

func (r Rules) withDefaults() Rules {
	if r.MinLength == 0 {
		r.MinLength = DefaultMinLength
	}
	if r.MaxLength == 0 {
		r.MaxLength = DefaultMaxLength
	}
	return r
}

// Validate checks the bounds: 8 <= MinLength <= MaxLength, 64 <= MaxLength <= MaxMaxLength.
func (r Rules) Validate() error {
	r = r.withDefaults()
	switch {
	case r.MinLength < DefaultMinLength:
		return fmt.Errorf("password rules: minimum length must be at least %d, got %d", DefaultMinLength, r.MinLength)
	case r.MaxLength < 64 || r.MaxLength > MaxMaxLength:
		return fmt.Errorf("password rules: maximum length must be between 64 and %d, got %d", MaxMaxLength, r.MaxLength)
	case r.MinLength > r.MaxLength:
		return fmt.Errorf("password rules: minimum length %d is above the maximum %d", r.MinLength, r.MaxLength)
	}
	return nil
}

// Check applies DefaultRules.
func Check(password, email string) error { return DefaultRules().Check(password, email) }

// Check returns nil when password is acceptable for the account with this email address, else a
// *WeakPasswordError saying why not. Refused: invalid UTF-8 or control characters; a length (in
// characters, after NFKC normalization) outside the bounds; the email address or its local part
// (case-insensitively), or a password based on them; a common password or a simple variant of one
// (up to six digits or symbols added before or after, look-alike substitutions such as p@ssw0rd); a
// context word; one character or a short pattern repeated; an ascending or descending sequence.
func (r Rules) Check(password, email string) error {
	r = r.withDefaults()
	if !utf8.ValidString(password) {
		return weak(CodeInvalidChars, "password must be valid text (UTF-8)")
	}
	pw := norm.NFKC.String(password)
	if strings.ContainsFunc(pw, unicode.IsControl) {
		return weak(CodeInvalidChars, "password must not contain control characters such as tabs or line breaks")
	}
	n := utf8.RuneCountInString(pw)
	if n < r.MinLength {
		return weak(CodeTooShort, fmt.Sprintf("password must be at least %d characters long", r.MinLength))
	}
	if n > r.MaxLength {
		return weak(CodeTooLong, fmt.Sprintf("password must be at most %d characters long", r.MaxLength))
	}
	lower := strings.ToLower(pw)

	email = strings.ToLower(strings.TrimSpace(norm.NFKC.String(email)))
	local := ""
	if at := strings.LastIndexByte(email, '@'); at > 0 {
		local = email[:at]
	}
	if email != "" && lower == email {
		return weak(CodeEmail, "password must not be your email address")
	}
	if local != "" && lower == local {
		return weak(CodeEmail, "password must not be the part of your email address before the @")
	}

	if repetitive(lower) {
		return weak(CodeRepetitive, "password must not be one character or a short pattern repeated, such as aaaaaaaa or abcabcabc")
	}
	if sequential(lower) {
		return weak(CodeSequential, "password must not be a simple sequence such as 12345678 or abcdefgh")
	}
	if IsCommon(lower) {
		return weak(CodeCommon, "this password is one of the most commonly used passwords; choose a less predictable one, for example a few unrelated words")
	}
	common := commonSet()
	for _, form := range variants(lower) {
		if local != "" && len(local) >= 4 && (form == local || form == email) {
			return weak(CodeEmail, "password must not be based on your email address")
		}
		for _, w := range r.ContextWords {
			if w != "" && form == strings.ToLower(w) {
				return weak(CodeContext, "password must not be based on the name of this service")
			}
		}
		if _, ok := common[form]; ok {
			return weak(CodeCommon, "this password is a commonly used password with a few characters added or swapped; choose a less predictable one, for example a few unrelated words")
		}
	}
	return nil
}

func weak(code, reason string) error { return &WeakPasswordError{Code: code, Reason: reason} }

// maxAffix is how many digits or symbols may be stripped from either end of a password when looking
// for the common password it is based on.
const maxAffix = 6

// variants returns the forms of a lower-cased password to look up in the blocklist: itself, with a
// short run of digits and symbols removed from either end, and with look-alike characters replaced
// by letters. Forms shorter than 4 characters are left out.
func variants(lower string) []string {
	stripped := stripAffixes(lower)
	candidates := []string{lower, stripped, deleet(lower, 'i'), deleet(lower, 'l'), deleet(stripped, 'i'), deleet(stripped, 'l')}
	out := candidates[:0]
	for _, c := range candidates {
		if utf8.RuneCountInString(c) >= 4 {
			out = append(out, c)
		}
	}
	return out
}

func isAffix(c byte) bool {
	return c >= '0' && c <= '9' || (c < 0x80 && unicode.IsPunct(rune(c))) || (c < 0x80 && unicode.IsSymbol(rune(c))) || c == ' '
}

// stripAffixes removes a leading and a trailing run of at most maxAffix digits, symbols or spaces.
func stripAffixes(s string) string {
	end := len(s)
	for end > 0 && isAffix(s[end-1]) {
		end--
	}
	if len(s)-end > maxAffix || end == 0 {
		end = len(s)
	}
	start := 0
	for start < end && isAffix(s[start]) {
		start++
	}
	if start > maxAffix || start == end {
		start = 0
	}
	return s[start:end]
}

// deleet replaces look-alike digits and symbols by letters; one is read as i or l as given.
func deleet(s string, one rune) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '0':
			return 'o'
		case '1', '!', '|':
			return one
		case '3':
			return 'e'
		case '4', '@':
			return 'a'
		case '5', '$':
			return 's'
		case '7', '+':
			return 't'
		case '8':
			return 'b'
		case '9':
			return 'g'
		}
		return r
	}, s)
}

// repetitive reports whether s is a pattern of at most 4 characters repeated (aaaaaaaa, abababab,
// abcabcab).
func repetitive(s string) bool {
	rs := []rune(s)
	for period := 1; period <= 4 && 2*period <= len(rs); period++ {
		ok := true
		for i := period; i < len(rs); i++ {
			if rs[i] != rs[i-period] {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// sequential reports whether s is letters or digits each one above (or each one below) the
// previous: abcdefgh, 23456789, 87654321.
func sequential(s string) bool {
	rs := []rune(s)
	if len(rs) < 3 {
		return false
	}
	step := rs[1] - rs[0]
	if step != 1 && step != -1 {
		return false
	}
	for i, r := range rs {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return false
		}
		if i > 0 && r-rs[i-1] != step {
			return false
		}
	}
	return true
}

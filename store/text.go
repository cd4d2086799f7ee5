package store

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxUserAgent is the most bytes of a request's User-Agent that an audit
// event or a browser session keeps: enough to tell browsers apart, and a
// bound on what one request makes the store hold.
const MaxUserAgent = 256

// MaxIP is the most bytes of a request's IP address that an audit event or
// a browser session keeps; the longest address text (an IPv4-mapped IPv6
// address) is 45.
const MaxIP = 64

// MaxAuditDetail is the most bytes of one value of an audit event's
// details that the event keeps (CleanDetails): room for a scope list or a
// passkey's credential id, and a bound on what a request makes one row
// hold, whatever text it carries into a detail.
const MaxAuditDetail = 2048

// CleanText returns v as free text every backend can store and every page,
// log line and JSON answer can show as it is: each run of invalid UTF-8
// becomes U+FFFD, control characters (NUL, tab, newlines, the other C0 and
// the C1 controls) are dropped, and the result is cut at a character
// boundary to at most limit bytes. PostgreSQL refuses invalid UTF-8 and NUL
// in text (SQLSTATE 22021), so a request header carrying them, or a cut in
// the middle of a character, would otherwise fail the write of the record
// that quotes it.
func CleanText(v string, limit int) string {
	v = strings.ToValidUTF8(v, string(utf8.RuneError))
	v = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, v)
	if len(v) <= limit {
		return v
	}
	cut := max(limit, 0)
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut-- // v is valid UTF-8 by now: back up to the start of the character cut through
	}
	return v[:cut]
}

// CleanRequestMeta returns a request's IP address and User-Agent as audit
// events and browser sessions keep them (CleanText, to MaxIP and
// MaxUserAgent bytes). The server reads a request's metadata through it,
// and the backends apply it again to what they store, so that no header
// ever costs an audit event or a sign-in.
func CleanRequestMeta(ip, userAgent string) (string, string) {
	return CleanText(ip, MaxIP), CleanText(userAgent, MaxUserAgent)
}

// CleanDetails returns details as audit events keep them: each value as
// CleanText makes it, to MaxAuditDetail bytes; keys are the code's own. The
// audit writer applies it before an event is stored and logged, and the
// backends again to what they store. details is not changed; nil stays nil.
func CleanDetails(details map[string]string) map[string]string {
	if details == nil {
		return nil
	}
	out := make(map[string]string, len(details))
	for k, v := range details {
		out[k] = CleanText(v, MaxAuditDetail)
	}
	return out
}

// EmailKey is the key by which an email address names one account, one
// invite and one rate-limit subject: the address with its ASCII letters
// A-Z lower-cased and every other character (any non-ASCII letter included)
// left as it is. Mail is delivered to the stored form, and mail servers
// treat "b\u0130ll@example.com" and bill@example.com as two mailboxes, so a
// key that folded more (strings.ToLower maps U+0130 to "i" and the Kelvin
// sign U+212A to "k") let another mailbox hold an address's account. Only
// this fold may compare email addresses: the stores' email_lower columns,
// every lookup by email, the invite checks, the providers' domain lists
// and the rate limits of logins and emails all use it. It applies no IDNA
// (a punycode and a Unicode domain are two keys).
func EmailKey(addr string) string {
	for i := 0; i < len(addr); i++ {
		if c := addr[i]; 'A' <= c && c <= 'Z' {
			b := []byte(addr)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return addr
}

// SameEmail reports whether a and b, trimmed of surrounding space, are one
// address by EmailKey.
func SameEmail(a, b string) bool {
	return EmailKey(strings.TrimSpace(a)) == EmailKey(strings.TrimSpace(b))
}

// Package redirecturi holds the rules for the URIs a browser is sent back
// to: which ones a client may register (redirect, post-logout and
// back-channel logout URIs) and how a presented redirect_uri is matched
// against the registered ones (exact string match, RFC 6749 §3.1.2.3 and
// RFC 9700 §4.1.3, except that the port of a loopback IP literal is ignored,
// RFC 8252 §7.3). It is the one place these rules live: client registration,
// the authorization endpoint and logout all call it.
package redirecturi

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Kind says what a URI is registered for; it only changes the wording of errors.
type Kind string

// Kinds of registered URIs.
const (
	Redirect          Kind = "redirect URI"
	PostLogout        Kind = "post-logout redirect URI"
	BackchannelLogout Kind = "back-channel logout URI"
)

// MaxLen bounds a registered URI (so no longer URI can match one).
const MaxLen = 2000

// Validate checks a URI a client registers. It refuses relative URIs,
// fragments, wildcards, user information, the javascript:, data:, file: (and
// other script-capable) schemes, and plain http except on the loopback IP
// literals 127.0.0.1 and [::1] (RFC 8252 §8.3). A native client may use a
// private-use scheme, which must contain a period (RFC 8252 §7.1); a web
// client may use only https (or loopback http). A back-channel logout URI is
// always https or loopback http.
func Validate(raw string, kind Kind, native bool) error {
	if raw == "" || len(raw) > MaxLen {
		return fmt.Errorf("%s must be 1-%d characters", kind, MaxLen)
	}
	if strings.ContainsAny(raw, "* \\") || strings.ContainsFunc(raw, unicode.IsControl) || !utf8.ValidString(raw) {
		return fmt.Errorf("%s %q may not contain wildcards, spaces or control characters", kind, raw)
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() {
		return fmt.Errorf("%s %q must be an absolute URI", kind, raw)
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return fmt.Errorf("%s %q must not contain a fragment", kind, raw)
	}
	if u.User != nil {
		return fmt.Errorf("%s %q must not contain user information", kind, raw)
	}
	scheme := u.Scheme // url.Parse lowers it; the registered string must already be lower case
	if !strings.HasPrefix(raw, scheme+":") {
		return fmt.Errorf("%s %q: write the scheme in lower case", kind, raw)
	}
	switch scheme {
	case "https":
		if u.Host == "" {
			return fmt.Errorf("%s %q has no host", kind, raw)
		}
		return nil
	case "http":
		if !IsLoopbackIP(u.Hostname()) {
			return fmt.Errorf("%s %q: plain http is allowed only on the loopback IP literals 127.0.0.1 and [::1] (RFC 8252 §8.3)", kind, raw)
		}
		return nil
	case "javascript", "data", "file", "vbscript", "blob", "about", "filesystem":
		return fmt.Errorf("%s %q: the %s scheme is not allowed", kind, raw, scheme)
	}
	if kind == BackchannelLogout || !native {
		return fmt.Errorf("%s %q: use https (or http on 127.0.0.1 or [::1])", kind, raw)
	}
	if !strings.Contains(scheme, ".") {
		return fmt.Errorf("%s %q: a private-use scheme must contain a period, such as com.example.app (RFC 8252 §7.1)", kind, raw)
	}
	return nil
}

// IsLoopbackIP reports whether host (without port or brackets) is one of
// the loopback IP literals 127.0.0.1 or ::1. Host names such as localhost
// are not: they can be resolved elsewhere (RFC 8252 §8.3).
func IsLoopbackIP(host string) bool {
	return host == "127.0.0.1" || host == "::1"
}

// ValidateOrganisationBackchannel checks, besides Validate, the
// back-channel logout URI of an organisation's client, which Portcullis will
// POST to on the organisation admin's word: its host must be a DNS name,
// never an IP literal (127.0.0.1, 10.0.0.5, 169.254.169.254, …) nor a
// loopback name (localhost and the names under it, RFC 6761 §6.3), so only
// https to a named host remains. It is the early, clear answer; the
// delivery itself refuses to connect to a non-public address whatever a
// name resolves to (backchannel.PublicAddress).
func ValidateOrganisationBackchannel(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%s %q must be an absolute URI", BackchannelLogout, raw)
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if _, err := netip.ParseAddr(host); err == nil || host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return fmt.Errorf("%s %q: an organisation's client must name its host over https (not an IP address or localhost)",
			BackchannelLogout, raw)
	}
	return nil
}

// ErrNoMatch means the presented URI matches none of the registered ones.
var ErrNoMatch = errors.New("redirect_uri does not match a registered redirect URI")

// Match returns the registered URI that presented matches: the same string,
// or for a registered loopback IP literal over http the same string with
// only the port added, removed or changed (RFC 8252 §7.3). Nothing else is
// normalised: case (the scheme's too), trailing slashes, percent-encoding,
// default ports and added query parameters all fail. A presented URI with
// a fragment, even an empty one (a bare #), never matches (RFC 6749
// §3.1.2: the redirection endpoint URI must not include one).
func Match(registered []string, presented string) (string, error) {
	if strings.Contains(presented, "#") {
		return "", ErrNoMatch
	}
	for _, r := range registered {
		if r == presented {
			return r, nil
		}
	}
	p, ok := loopbackWithoutPort(presented)
	if !ok {
		return "", ErrNoMatch
	}
	for _, r := range registered {
		if ru, ok := loopbackWithoutPort(r); ok && ru == p {
			return r, nil
		}
	}
	return "", ErrNoMatch
}

// loopbackWithoutPort is the raw string of a valid http URI on a loopback
// IP literal (http://127.0.0.1[:port]… or http://[::1][:port]…, the port
// 1-65535) without its ":port"; ok is false for any other URI, user
// information included. The result is the string as written, never parsed
// and printed again, so nothing the parser would normalise can pass.
func loopbackWithoutPort(raw string) (uri string, ok bool) {
	const scheme = "http://"
	if !strings.HasPrefix(raw, scheme) {
		return "", false
	}
	if _, err := url.Parse(raw); err != nil {
		return "", false
	}
	rest := raw[len(scheme):]
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	var host string
	switch {
	case strings.HasPrefix(authority, "[::1]"):
		host = "[::1]"
	case strings.HasPrefix(authority, "127.0.0.1"):
		host = "127.0.0.1"
	default:
		return "", false
	}
	if port := authority[len(host):]; port != "" && (port[0] != ':' || port == ":" || !validPort(port[1:])) {
		return "", false
	}
	return scheme + host + tail, true
}

func validPort(p string) bool {
	if p == "" {
		return true
	}
	if len(p) > 5 || p[0] == '0' {
		return false
	}
	n := 0
	for _, r := range p {
		if r < '0' || r > '9' {
			return false
		}
		n = n*10 + int(r-'0')
	}
	return n >= 1 && n <= 65535
}

// Origin is the origin (scheme://host[:port]) of an absolute URI, for a
// Content-Security-Policy form-action source; "" when it has none.
func Origin(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// WithQuery returns uri with q added to its query. The URI's own query is
// kept byte for byte (RFC 6749 §3.1.2: a registered redirect URI's query
// must be retained), and no parameter of q is added when q is empty.
func WithQuery(uri string, q url.Values) string {
	if len(q) == 0 {
		return uri
	}
	sep := "?"
	if strings.Contains(uri, "?") {
		sep = "&"
	}
	return uri + sep + q.Encode()
}

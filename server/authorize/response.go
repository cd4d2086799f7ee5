package authorize

import (
	"crypto/sha256"
	"encoding/base64"
	"html"
	"net/http"
	"net/url"
	"strings"

	"github.com/portcullis-auth/portcullis/server/redirecturi"
)

// Response is an authorization response for the HTTP layer to write as is.
// Query mode: Status 303 and Location. form_post: Status 200 and an HTML
// Body whose only script is allowed by the Content-Security-Policy in CSP
// (ScriptHash is its hash source). Both are sent with Cache-Control:
// no-store and Referrer-Policy: no-referrer.
type Response struct {
	Status      int
	Location    string
	ContentType string
	Body        []byte
	CSP         string
	ScriptHash  string
}

// Success is the answer carrying code to the client: code, state (when
// sent, byte for byte) and iss (RFC 9207).
func (r *Request) Success(code string) Response {
	return respond(r.RedirectURI, r.ResponseMode, r.State, r.Issuer, [][2]string{{"code", code}})
}

// formPostScript submits the form; its hash is the only script source the
// form_post document's CSP allows.
const formPostScript = `document.forms[0].submit();`

// FormPostScriptHash is the CSP hash source of the form_post script.
var FormPostScriptHash = func() string {
	h := sha256.Sum256([]byte(formPostScript))
	return "'sha256-" + base64.StdEncoding.EncodeToString(h[:]) + "'"
}()

// respond builds the response with params plus state and iss, in mode.
func respond(redirectURI, mode, state, issuer string, params [][2]string) Response {
	if state != "" {
		params = append(params, [2]string{"state", state})
	}
	params = append(params, [2]string{"iss", issuer})
	if mode == ModeFormPost {
		return formPost(redirectURI, params)
	}
	q := url.Values{}
	for _, kv := range params {
		q.Set(kv[0], kv[1])
	}
	return Response{Status: http.StatusSeeOther, Location: redirecturi.WithQuery(redirectURI, q)}
}

// formPost is the Form Post Response Mode document: a form posting params to
// redirectURI, submitted by a hashed script, with a <noscript> button.
func formPost(redirectURI string, params [][2]string) Response {
	var b strings.Builder
	b.WriteString(`<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="referrer" content="no-referrer">` +
		`<title>Continuing…</title></head><body><form method="post" action="`)
	b.WriteString(html.EscapeString(redirectURI))
	b.WriteString(`">`)
	for _, kv := range params {
		b.WriteString(`<input type="hidden" name="`)
		b.WriteString(html.EscapeString(kv[0]))
		b.WriteString(`" value="`)
		b.WriteString(html.EscapeString(kv[1]))
		b.WriteString(`">`)
	}
	b.WriteString(`<noscript><p>JavaScript is off. Press the button to continue.</p><button type="submit">Continue</button></noscript></form><script>`)
	b.WriteString(formPostScript)
	b.WriteString(`</script></body></html>`)
	csp := "default-src 'none'; script-src " + FormPostScriptHash + "; form-action " + FormAction(redirectURI) +
		"; frame-ancestors 'none'; base-uri 'none'"
	return Response{Status: http.StatusOK, ContentType: "text/html; charset=utf-8", Body: []byte(b.String()),
		CSP: csp, ScriptHash: FormPostScriptHash}
}

// FormAction is the CSP form-action source that allows posting or
// redirecting to redirectURI: its origin, or "scheme:" for a private-use
// scheme (RFC 8252 §7.1). Pages of the flow add it after 'self'. A CSP
// host-source cannot name an IPv6 literal (CSP3 §2.3.1: host-char is
// ALPHA / DIGIT / "-"; Chromium ignores "http://[::1]:port" as invalid and
// then refuses the redirect), so the loopback http://[::1] redirect URI of
// RFC 8252 §7.3 gets the narrowest source CSP can express, "http:".
func FormAction(redirectURI string) string {
	if o := redirecturi.Origin(redirectURI); o != "" {
		if u, err := url.Parse(o); err == nil && strings.Contains(u.Host, "[") {
			return u.Scheme + ":"
		}
		return o
	}
	if scheme, _, ok := strings.Cut(redirectURI, ":"); ok && scheme != "" {
		return strings.ToLower(scheme) + ":"
	}
	return "'none'"
}

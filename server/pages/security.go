package pages

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

// Cookies.
const (
	// csrfCookie holds the CSRF token every form repeats. Over HTTPS it is
	// "__Host-"-prefixed: the browser then only accepts it from this host,
	// Secure, for Path=/, so a sibling subdomain cannot plant one.
	csrfCookie    = "portcullis-csrf"
	csrfField     = "csrf_token"
	csrfTTL       = 2 * time.Hour
	csrfTokenLen  = 43 // 32 random bytes, base64url without padding
	flowCookieTTL = time.Hour
	// maxTokenLen bounds a one-time token carried in a cookie; longer ones
	// are no token Portcullis issued.
	maxTokenLen = 512
	// malformedToken replaces a token that cannot travel in a cookie: the
	// service answers it as an unknown link.
	malformedToken = "malformed"
)

// flow is a page opened from an emailed link: its path and the cookie that
// carries the link's one-time token after the first load.
type flow struct {
	path   string
	cookie string
	// kind names the link for people ("invitation", "password reset", …).
	kind string
}

var (
	inviteFlow = flow{path: InvitePath, cookie: "portcullis-invite", kind: "invitation"}
	resetFlow  = flow{path: ResetPasswordPath, cookie: "portcullis-reset", kind: "password reset"}
	verifyFlow = flow{path: VerifyEmailPath, cookie: "portcullis-verify", kind: "email confirmation"}
)

// secure reports whether the browser talks HTTPS to us: the server
// terminates TLS, a proxy says so, or the public URL is https.
func (p *Pages) secure(c echo.Context) bool {
	return p.https.Secure(c.IsTLS(), c.Scheme())
}

func (p *Pages) csrfCookieName(c echo.Context) string {
	if p.secure(c) {
		return "__Host-" + csrfCookie
	}
	return csrfCookie
}

func (p *Pages) flowCookieName(c echo.Context, f flow) string {
	if p.secure(c) {
		return "__Secure-" + f.cookie
	}
	return f.cookie
}

// carryToken moves the token of an emailed link out of the URL: a GET with
// ?token= answers 303 to the same path without any query and sets the flow
// cookie (HttpOnly, Path-scoped, Secure over HTTPS, one hour). SameSite is
// Lax, not Strict: the link is opened from a mail client on another site,
// and a browser withholds Strict cookies on the redirect that follows such a
// navigation, so the page could not see its own token. Lax cookies still
// never accompany a cross-site POST, and every form also carries a CSRF
// token. It reports false when the request has no token parameter.
func (p *Pages) carryToken(c echo.Context, f flow) (bool, error) {
	q := c.Request().URL.Query()
	toks, ok := q["token"]
	if !ok {
		return false, nil
	}
	ck := &http.Cookie{Name: p.flowCookieName(c, f), Path: p.base + f.path, HttpOnly: true,
		Secure: p.secure(c), SameSite: http.SameSiteLaxMode}
	switch {
	case len(toks) != 1 || toks[0] == "":
		ck.MaxAge = -1 // an incomplete link must not fall back on an older one
	case !cookieSafe(toks[0]):
		ck.Value, ck.MaxAge = malformedToken, int(flowCookieTTL/time.Second)
	default:
		ck.Value, ck.MaxAge = toks[0], int(flowCookieTTL/time.Second)
	}
	c.SetCookie(ck)
	c.Response().Header().Set(echo.HeaderLocation, p.base+f.path)
	return true, c.NoContent(http.StatusSeeOther)
}

// flowToken returns the one-time token carried for f, or "".
func (p *Pages) flowToken(c echo.Context, f flow) string {
	ck, err := c.Cookie(p.flowCookieName(c, f))
	if err != nil || !cookieSafe(ck.Value) {
		return ""
	}
	return ck.Value
}

// dropFlow deletes the flow cookie once its token is used or unusable.
func (p *Pages) dropFlow(c echo.Context, f flow) {
	c.SetCookie(&http.Cookie{Name: p.flowCookieName(c, f), Path: p.base + f.path, MaxAge: -1, HttpOnly: true,
		Secure: p.secure(c), SameSite: http.SameSiteLaxMode})
}

// cookieSafe reports whether s can be a cookie value as is: the URL-safe
// characters of every token Portcullis issues.
func cookieSafe(s string) bool {
	if s == "" || len(s) > maxTokenLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_' || b == '.' || b == '~') {
			return false
		}
	}
	return true
}

// csrfToken returns the CSRF token for a form: the one in the request's
// cookie when there is a well-formed one, else a new random one set in the
// cookie (HttpOnly, SameSite=Lax, Path=/). The form repeats it in a hidden
// field; checkCSRF compares the two.
//
// Lax, not Strict: pages are opened by navigations from other sites (the
// client sending the browser to /oauth2/authorize, a link in an email), and
// a browser withholds Strict cookies on those, so each such navigation
// would mint a new token over the cookie and refuse, as expired, a form
// already open in another tab (two tabs signing in at once). Lax cookies
// are still never sent with a cross-site POST.
func (p *Pages) csrfToken(c echo.Context) (string, error) {
	if ck, err := c.Cookie(p.csrfCookieName(c)); err == nil && validCSRF(ck.Value) {
		return ck.Value, nil
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	tok := base64.RawURLEncoding.EncodeToString(b[:])
	c.SetCookie(&http.Cookie{Name: p.csrfCookieName(c), Value: tok, Path: "/", MaxAge: int(csrfTTL / time.Second),
		HttpOnly: true, Secure: p.secure(c), SameSite: http.SameSiteLaxMode})
	return tok, nil
}

func validCSRF(s string) bool {
	if len(s) != csrfTokenLen {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil
}

// checkCSRF accepts a form POST only when it comes from this site's own page:
// the browser does not call it cross-site or same-site (Sec-Fetch-Site),
// names no foreign Origin ("null" is what a same-origin POST from a
// no-referrer page sends), and the form's csrf_token equals the cookie's
// (constant-time). The cookie is SameSite=Lax, so a cross-site POST never
// carries it.
func (p *Pages) checkCSRF(c echo.Context) bool {
	r := c.Request()
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return false
	}
	if o := r.Header.Get("Origin"); o != "" && o != "null" && o != c.Scheme()+"://"+r.Host && o != p.publicOrigin {
		return false
	}
	ck, err := c.Cookie(p.csrfCookieName(c))
	if err != nil || !validCSRF(ck.Value) {
		return false
	}
	form := r.PostFormValue(csrfField)
	if !validCSRF(form) {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(ck.Value), []byte(form)) == 1
}

// refuseCSRF answers a form that failed checkCSRF.
func (p *Pages) refuseCSRF(c echo.Context, path string) error {
	return p.render(c, http.StatusForbidden, view{Kind: "error", Heading: "This form has expired",
		Intro: []string{"For your security, the form was not accepted: it was open too long, or it was not sent from this page. Nothing was changed.",
			"Open the form again and send it from there."},
		Primary: &link{Href: p.base + path, Text: "Open the form again"}})
}

package pages

import "github.com/labstack/echo/v4"

// What the admin console (server/console) reuses of the hosted pages, so
// that each rule stays in one place: the security headers and their
// Content-Security-Policy, the CSRF double submit, the HTTPS decision and
// the stylesheet (whose console rules the contrast tests cover too).

// Headers is the middleware that sets the pages' security headers
// (Content-Security-Policy with frame-ancestors 'none', X-Frame-Options
// DENY, no-store, no referrer).
func (p *Pages) Headers(next echo.HandlerFunc) echo.HandlerFunc { return p.headers(next) }

// CSRFToken returns the CSRF token a form repeats in its csrf_token field,
// setting its cookie when the request has none.
func (p *Pages) CSRFToken(c echo.Context) (string, error) { return p.csrfToken(c) }

// CheckCSRF reports whether a form POST comes from this site's own page
// (Sec-Fetch-Site, Origin, and the csrf_token field equal to the cookie in
// constant time).
func (p *Pages) CheckCSRF(c echo.Context) bool { return p.checkCSRF(c) }

// CSRFField is the name of the form field that carries the CSRF token.
const CSRFField = csrfField

// Secure reports whether the browser talks HTTPS to Portcullis (cookies
// are then Secure and __Host- prefixed).
func (p *Pages) Secure(c echo.Context) bool { return p.secure(c) }

// Base is the path prefix taken from PORTCULLIS_PUBLIC_URL ("" or "/…").
func (p *Pages) Base() string { return p.base }

// ProductName is the product name the pages show.
func (p *Pages) ProductName() string { return p.cfg.ProductName }

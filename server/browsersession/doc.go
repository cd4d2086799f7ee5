// Package browsersession is the browser's single sign-on session at
// Portcullis: the cookie that names it and the rules of its lifetime.
//
// The cookie is `__Host-portcullis-session` over HTTPS (`portcullis-session`
// over plain HTTP, where the __Host- prefix cannot be used): an opaque
// 256-bit random value, HttpOnly, Secure over HTTPS, SameSite=Lax (it must
// accompany the top-level navigation from a client's site to
// /oauth2/authorize, and never a cross-site POST), Path=/. Only the value's
// SHA-256 is stored (store.BrowserSessions), so a copy of the token state
// opens no session. Every login gets a new value (no session fixation).
// Without "Keep me signed in" the cookie has no Max-Age and ends with the
// browser; with it, it lasts until the session's absolute expiry. The server
// ends a session after PORTCULLIS_SESSION_IDLE_TTL without use and at
// PORTCULLIS_SESSION_MAX_AGE in any case, whatever the cookie says.
//
// It must never log or return a cookie value except in the Set-Cookie it
// builds, and never look a session up by anything but the value's hash.
package browsersession

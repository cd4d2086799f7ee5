// Package pages serves the pages a person completes in a browser after
// following an emailed link: accept an invitation (/invite), reset a
// password (/reset-password), confirm an email address (/verify-email),
// plus change a required (temporary) password (/change-password) and ask
// for a reset link (/forgot-password).
//
// It also serves the HTTP face of browser sign-in (signin.go): the
// authorization endpoint (GET and POST /oauth2/authorize) and the login,
// account-selection, change-password and consent pages it leads to (/login,
// /consent). Those handlers are thin: the request's validation, the
// decision of what comes next and the responses are server/authorize's,
// reached through the small Flow interface; the pages render its steps,
// keep the browser session cookie (server/browsersession) and check the
// password with the password grant's one check (server/passcheck, audit
// details.method "page"). Signing in always ends the browser's old session
// and sets a new cookie value. Pages of the flow send frame-ancestors
// 'none' and a form-action allowing 'self' and the validated redirect URI's
// origin (Chrome applies form-action to the 303 that follows a form POST);
// the form_post document's CSP allows only its own script, by hash. An
// authorization request that cannot be answered at a redirect URI gets the
// HTML error page (400) and is never redirected. A token state that cannot
// answer fails closed (503), never "signed out".
//
// /account/sessions (account.go) shows the person of the browser session
// cookie their sessions and remembered consents, through the same account
// service methods as GET/DELETE /auth/sessions and /auth/consents; its
// "Sign out" and "Withdraw" forms carry the CSRF token, and signing out
// this browser's session clears its cookie.
//
// Multi-factor authentication (mfa.go, account_security.go): after a
// correct password the login form asks mfa.Service.Begin whether a second
// factor is needed. If so, no browser session starts yet: the second step
// is shown, its CSRF-protected form carrying the mfa_token (single use,
// short-lived, bound to the user and to this pending request's client:
// every use passes that client, so another client's request cannot spend
// it) with the remember flag. A hidden field rather than server-side state
// keyed by a cookie: the token is already all that state, two tabs keep
// their own, and the page is no-store with no referrer. It offers a TOTP
// code, a recovery code (a button switches, using nothing up) and, when
// the user has a passkey, "Use your passkey", driven by the one script.
// mfa.Service.Complete decides each attempt (counting, replays, the
// throttle); a wrong factor shows the step again, a token that cannot be
// used any more sends the person back to the login form, and success
// starts the session with the login's amr and the password step's auth
// time, then proceeds like a password login. A user the policy requires
// to enrol is shown the TOTP enrolment instead (QR code as a data: PNG, the
// only page allowing data: images), then the recovery codes once, then
// signs in again from the password. /account/security shows and changes
// the person's factors through the account service's second-factor
// operations (the rules of the JSON endpoints under /auth/mfa).
//
// The pages are server-rendered with html/template from templates and a
// stylesheet embedded in the binary, no CDN. The one script
// (assets/webauthn.js, no build) runs the WebAuthn prompt; only the pages
// with a passkey button allow it (script-src 'self'), and every other
// page works without JavaScript. They call the
// same account service methods as the JSON endpoints under /auth and hold no
// account logic of their own beyond what a form needs (required fields, the
// two copies of a new password matching).
//
// Security rules it keeps:
//   - A one-time token never stays in a URL: GET ?token=… answers 303 to the
//     same path without the query and carries the token in a one-hour,
//     HttpOnly, path-scoped cookie (Secure over HTTPS), so it leaves the
//     address bar, history and any Referer at once. That cookie is
//     SameSite=Lax: the link is opened from a mail client on another site,
//     and browsers withhold Strict cookies on the redirect that follows such
//     a navigation (TestBrowserInvite opens the link from another site).
//   - Every form carries a CSRF token checked against a cookie in constant
//     time (double submit, no per-process key, so any instance can check it),
//     and cross-site submissions are refused on Sec-Fetch-Site and Origin.
//     The CSRF cookie is SameSite=Lax (never sent with a cross-site POST):
//     a Strict one is withheld from the cross-site navigations that open
//     pages, so each would mint a new token and break forms open in other
//     tabs (TestTwoTabsFromTheClientSite).
//   - Every page answers with a strict Content-Security-Policy (its own
//     stylesheet only), X-Frame-Options DENY, Referrer-Policy no-referrer and
//     Cache-Control no-store.
//
// The change-password page has no bearer token to offer: it hands the email
// address and current password to the same ChangePassword as
// POST /auth/password/change, whose one password check (server/passcheck) is
// the password grant's: same login throttle, a dummy verification for an
// unknown or deactivated account, one answer and the same limits spent for
// all three. The page never checks a password itself. Sessions that accepting an invite or changing
// a password start are ended at once: a page has no application to hand
// their tokens to, so the person signs in afresh (at PORTCULLIS_APP_URL).
//
// The admin console (server/console) reuses the pages' security headers,
// CSRF double submit, HTTPS decision and stylesheet through shared.go, so
// each of those rules has one place.
//
// It must never log, render or put in an error a one-time token or a
// password, and must never redeem a one-time token on GET (link scanners
// prefetch links): redemption happens only on a POST of its form.
package pages

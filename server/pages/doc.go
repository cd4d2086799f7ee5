// Package pages serves the pages a person completes in a browser after
// following an emailed link: accept an invitation (/invite), reset a
// password (/reset-password), confirm an email address (/verify-email),
// plus change a required (temporary) password (/change-password) and ask
// for a reset link (/forgot-password).
//
// The pages are server-rendered with html/template from templates and a
// stylesheet embedded in the binary: no JavaScript, no CDN. They call the
// same account service methods as the JSON endpoints under /auth and hold no
// account logic of their own beyond what a form needs (required fields, the
// two copies of a new password matching).
//
// Security rules it keeps:
//   - A one-time token never stays in a URL: GET ?token=… answers 303 to the
//     same path without the query and carries the token in a short-lived,
//     HttpOnly, path-scoped cookie (Secure over HTTPS), so it leaves the
//     address bar, history and any Referer at once.
//   - Every form carries a CSRF token checked against a cookie in constant
//     time (double submit, no per-process key, so any instance can check it),
//     and cross-site submissions are refused on Sec-Fetch-Site and Origin.
//   - Every page answers with a strict Content-Security-Policy (its own
//     stylesheet only), X-Frame-Options DENY, Referrer-Policy no-referrer and
//     Cache-Control no-store.
//
// It must never log, render or put in an error a one-time token or a
// password, and must never redeem a one-time token on GET (link scanners
// prefetch links): redemption happens only on a POST of its form.
package pages

// Package console serves the admin console at /console: server-rendered
// pages (html/template, embedded, no script) in which operators manage
// users, invites, sessions, clients, roles, signing keys and read the
// audit log.
//
// Sign-in is a backend-for-frontend: /console/login runs the authorization
// code flow with PKCE, server-side, against Portcullis's own
// /oauth2/authorize with the built-in first-party client, so the person
// signs in on the hosted login page (with the second factor when the
// policy requires it). /console/callback redeems the code in-process,
// checks the access token like /admin does (the issuer audience, a user
// of this issuer), ends that token's session at once and starts a console
// session instead: an opaque 256-bit cookie __Host-portcullis-console
// (portcullis-console over plain HTTP, as the browser session cookie),
// HttpOnly, SameSite=Strict, Path=/, of which only the hash is stored, in
// the token state beside the browser sessions (server/browsersession), so
// it works on every backend and every instance, ends with the user's
// cut-off (deactivation, "revoke every session") and is listed and
// revocable like any browser session. No token ever reaches the browser.
//
// Every request re-reads the person's current permissions
// (accounts.Service.ActorPermissions, what a refresh of a session that
// named no permission holds) and checks each screen's and action's
// permission with accounts.RequirePermission, the one check /admin makes
// on a token's scope. Every action calls the same accounts.Service method
// as the /admin endpoint, so the privilege ceiling and the audit apply
// unchanged; the audit events carry client_id "console". Every action
// that mints or reveals a credential, or hands over an account or a
// client's codes (a machine user, a role, an activation, a temporary
// password, an API key, an MFA reset, an invite, a client, a secret,
// redirect URIs, a key revocation), also needs a sign-in within the last
// five minutes (accounts.ReauthWindow), checked in the one wrapper of
// every POST (recent): only the actions a screen lists as routine, which
// take access away, are exempt. An older sign-in gets a page asking to
// sign in again (prompt=login), and nothing is changed.
//
// The pages reuse the hosted pages' security headers (a strict
// Content-Security-Policy with frame-ancestors 'none'), CSRF double submit
// and stylesheet (server/pages). Every list is fetched one cursor page at a
// time.
//
// It must never log or render a token, a password or a cookie value, and
// must never act on a GET.
package console

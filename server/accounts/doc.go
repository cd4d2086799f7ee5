// Package accounts is Portcullis's account and administration logic, free of
// HTTP: invitations, password resets and temporary passwords, password
// changes, email verification, optional public registration, and the admin
// operations on users, roles, OAuth clients, signing keys and the audit log,
// and the session and consent views (browser.go): a person's own browser
// sessions and remembered consents, and an admin's view of a user's, whose
// changes pass the privilege ceiling of RevokeSessions and end sessions
// through the one signout routine (SessionEnder).
//
// Every administrative change is checked against the privilege ceiling of
// package policy with the actor's current roles, read from the store at the
// time of the request (never the roles a token carried), and writes an audit
// event with the contract's action names.
//
// It must never return, log or store a one-time token, a password or a client
// secret, except in the one response or email meant to carry it: one-time
// tokens (invite, reset, verification) are 256 random bits, shown once in an
// emailed link, and stored only as their SHA-256 hash.
package accounts

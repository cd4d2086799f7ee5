// Package passcheck is the one routine that checks a person's password:
// the password grant, the change-password page, POST /auth/password/change
// (and any future login page) call Checker.Check and nothing else.
//
// It applies, in this order and always all of them: the login throttle
// (per address and per account, an atomic reservation), the lookup of the
// account, a verification that costs the same for an unknown account
// (DummyVerify), the failure metric and the audit event. An unknown, a
// deactivated account, a machine user (which has no password and signs in
// only with API keys) and a wrong password spend the same limits and give
// the same answer (ErrBadCredentials), so neither the answer nor the rate
// limits reveal whether an account exists; while any account's hash may be
// foreign (store.User.PasswordHashForeign), every verification costs what
// a foreign one's would (password.ForeignCost), so neither does the hashing
// load of a batch of guesses. A check whose hash never ran
// (its request ended waiting for a hashing slot: password.ErrBusy) is a
// 503 for every account alike, and counts nothing.
//
// It must never log or return a password or a hash, and it never decides
// what a caller does after a success (sessions, password changes).
package passcheck

// Package password hashes and verifies passwords and decides whether a new password is acceptable.
//
// Hashing: argon2id by default with the parameters of the OWASP Password Storage Cheat Sheet
// (m=19456 KiB, t=2, p=1; see DefaultParams), stored in the PHC string format
// $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash> (standard base64 without padding). bcrypt hashes
// ($2a$, $2b$, $2y$) and argon2i PHC strings are verified for imported accounts and reported as
// needing a rehash, as is any argon2id hash with other parameters: callers rehash transparently after
// a successful login. Passwords are normalized to Unicode NFKC before hashing (NIST SP 800-63B);
// a hash the caller marks ForeignHash (not made by Hash: imported) may be of the unnormalized form,
// which Verify then also tries and reports as needing a rehash. No other hash is tried twice; a
// caller may ask any verification to cost what a foreign hash's would (ForeignCost: the second run
// is for its cost only). Hasher.DummyVerify costs what a real verification costs, for requests
// naming unknown accounts. Once a verification's first hash has run its answer is a verdict, never
// ErrBusy.
//
// Rules: NIST SP 800-63B — a length of 8 to 256 characters by default (counted in Unicode
// characters, not bytes), no composition rules, and rejection of common passwords (an embedded list,
// see common-passwords.txt for its sources), of simple variants of them (a short digit or symbol
// suffix, look-alike substitutions), of repetitive or sequential strings, of the account's email
// address or its local part, and of context words such as the service name. Refusals are
// *WeakPasswordError values whose Reason is shown to people.
//
// This package must never log, never return a password or a hash inside an error, and never compare
// secrets with anything but a constant-time comparison. It imports no storage, server or key code.
package password

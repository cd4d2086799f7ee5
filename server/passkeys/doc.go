// Package passkeys is WebAuthn (passkeys and security keys) as a second
// factor, with github.com/go-webauthn/webauthn: the registration ceremony
// that adds a credential to a signed-in person, and the login ceremony that
// proves one of a known user's credentials as an mfa.Factor.
//
// Each ceremony has two steps. Begin returns the options for the browser
// (navigator.credentials.create or .get) and an opaque handle; the
// ceremony's challenge and session data wait in the single-use store
// (store.OnceWebAuthnSession) under a hash of the handle for SessionTTL
// (5 minutes). Finish takes them exactly once, so a replayed or stolen
// response is refused, and checks the response against them: origin, RP ID
// hash, challenge, signature, and for a login the authenticator's signature
// counter, which must grow (unless it stays 0), stored by compare-and-set.
//
// It must never store a credential that failed verification, accept a
// ceremony begun for another user or another kind, or trust the counter in
// the credential JSON over the one the store keeps.
package passkeys

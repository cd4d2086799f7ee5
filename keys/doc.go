// Package keys owns Portcullis's JWT signing keys: generation (RS256, ES256,
// EdDSA), encryption of private keys at rest under the key-encryption keys,
// the lifecycle next → active → retired (→ dropped) and revoked, the
// published JWKS, and signing and verifying compact JWS tokens.
//
// A Manager, one per server instance, keeps an immutable snapshot of the key
// state in memory: the decrypted active key, the published public keys and
// the JWKS bytes with their ETag. JWKS, Sign and Verify read only that
// snapshot; Sync reloads it from the Store every sync interval. Changes
// (Rotate, Revoke, Reencrypt) are compare-and-swap transactions, so of many
// instances racing to rotate exactly one wins.
//
// Timing rules (see the contract): a key counts as published at its creation
// time plus the sync interval and may sign only the JWKS max-age after that;
// a retired key stays published until every token it may have signed has
// expired, plus one minute of skew; a revoked key leaves the JWKS at once and
// its tokens are refused.
//
// This package must never log, print or return private key material or
// key-encryption keys (not even in errors), never accept a token whose key
// or algorithm is chosen by the token itself (alg none, HMAC, jku, x5u or an
// embedded jwk), never touch the database on the JWKS, Sign or Verify paths,
// and never write audit events itself: every change returns what the caller
// needs to audit it.
package keys

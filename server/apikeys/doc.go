// Package apikeys is Portcullis's API keys, free of HTTP: creating, listing
// and revoking a user's keys, and the one check of a presented key
// (Authenticate) behind introspection, the RFC 8693 token exchange and the
// revocation endpoint (contract, "API keys and machine users").
//
// The rules it holds: a key's scopes are a subset of its owner's
// permissions when it is made (else invalid_scope); its expiry is required
// (90 days by default, between one hour and PORTCULLIS_API_KEY_MAX_TTL);
// at each use the checksum is checked before any lookup, a revoked or
// expired key or a deactivated owner is refused (audit api_key.rejected),
// and the effective scope is the key's scopes that the owner still holds;
// a key's tokens carry no roles; last_used_at is written at most once a
// minute per key and instance. Who may manage whose keys (the privilege
// ceiling, machine users) is decided by server/accounts before it calls
// here.
//
// It must never log, store or return a key except in the one answer that
// creates it: only its SHA-256 and a display hint are kept.
package apikeys

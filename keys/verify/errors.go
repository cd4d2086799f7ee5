package verify

import (
	"errors"
	"fmt"
)

// Verification errors. Verify wraps one of them with detail, so test with
// errors.Is. None of them ever contains the token.
var (
	// ErrMalformed: not a compact JWS of a JSON object with the required
	// RFC 9068 claims, or too large.
	ErrMalformed = errors.New("malformed access token")
	// ErrUnknownKey: the kid names no key of the issuer's current key set.
	ErrUnknownKey = errors.New("access token signed by an unknown key")
	// ErrBadSignature: the signature does not verify, or the token's alg is
	// not the algorithm of its key (or is none or HMAC).
	ErrBadSignature = errors.New("access token signature invalid")
	// ErrWrongType: the header typ is not at+jwt (an id token, a plain JWT…).
	ErrWrongType = errors.New("token is not an access token (typ is not at+jwt)")
	// ErrWrongIssuer: iss is not the configured issuer.
	ErrWrongIssuer = errors.New("access token from another issuer")
	// ErrWrongAudience: aud does not contain the configured audience.
	ErrWrongAudience = errors.New("access token not meant for this audience")
	// ErrExpired: exp is in the past, beyond the leeway.
	ErrExpired = errors.New("access token expired")
	// ErrNotYetValid: nbf or iat is in the future, beyond the leeway.
	ErrNotYetValid = errors.New("access token not valid yet")
	// ErrKeySetUnavailable: no usable key set, because the JWKS has never been
	// fetched or has been unreachable for longer than MaxStale. This is a
	// fault on the verifying side (the Guard answers 503), not a bad token.
	ErrKeySetUnavailable = errors.New("issuer key set unavailable")
	// ErrInsufficientScope is the cause of a Guard's 403: the token is valid
	// but lacks the permission or role required.
	ErrInsufficientScope = errors.New("access token lacks the permission or role required")
	// ErrInsufficientUserAuthentication is the cause of a Guard's 401
	// insufficient_user_authentication (RFC 9470): the token is valid but
	// its login had no second factor (MFA).
	ErrInsufficientUserAuthentication = errors.New("access token's login lacks the second factor required")
	// ErrInactive: the introspection endpoint says the token is not active
	// (revoked, expired or unknown).
	ErrInactive = errors.New("access token not active")
	// ErrIntrospectionUnavailable: the introspection endpoint could not be
	// asked or gave no usable answer; callers must fail closed.
	ErrIntrospectionUnavailable = errors.New("token introspection unavailable")
)

// ErrMalformedAPIKey: the string is not an API key of Portcullis's format
// (prefix, length, base62 alphabet, checksum; see CheckAPIKey). It is found
// locally, without asking the issuer. It wraps ErrMalformed.
var ErrMalformedAPIKey = fmt.Errorf("%w: not a Portcullis API key", ErrMalformed)

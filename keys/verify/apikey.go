package verify

import (
	"errors"
	"fmt"

	"github.com/portcullis-auth/portcullis/keys/verify/apikey"
)

// The format of a Portcullis API key: APIKeyPrefix, then
// APIKeyRandomLength base62 characters of randomness, then
// APIKeyChecksumLength base62 characters of a checksum, APIKeyLength
// characters in all, matching APIKeyPattern.
//
// The checksum is the CRC-32 (IEEE polynomial, as hash/crc32.ChecksumIEEE)
// of the APIKeyLength-APIKeyChecksumLength characters before it (prefix
// included), written in base62 with the digits 0-9, A-Z, a-z (in that
// order), most significant digit first, left-padded with 0 to six digits
// (62^6 > 2^32). APIKeyChecksum computes it. The checksum has no security
// role: it lets a service (or a secret scanner) refuse typos, guesses and
// random strings without asking the issuer.
const (
	APIKeyPrefix         = apikey.Prefix
	APIKeyRandomLength   = apikey.RandomLen
	APIKeyChecksumLength = apikey.ChecksumLen
	APIKeyLength         = apikey.Len
	// APIKeyPattern is a regular expression matching exactly the strings of
	// the API key format (the checksum aside), for secret scanners.
	APIKeyPattern = apikey.PatternText
)

// IsAPIKeyLike reports whether s claims to be an API key: it starts with
// APIKeyPrefix. It says nothing about the rest (see CheckAPIKey); a Guard
// with API keys uses it to tell an API key from a JWT in the Authorization
// header (a JWS never starts with the prefix).
func IsAPIKeyLike(s string) bool { return apikey.HasPrefix(s) }

// CheckAPIKey checks the format of an API key locally: its prefix, length,
// alphabet and checksum (package apikey, which the issuer mints keys
// with). It makes no network call, and its error (wrapping
// ErrMalformedAPIKey) never contains the key. A nil error does not mean the
// key is valid, only that it is worth asking the issuer about.
func CheckAPIKey(key string) error {
	switch err := apikey.Check(key); {
	case err == nil:
		return nil
	case errors.Is(err, apikey.ErrChecksum):
		return fmt.Errorf("%w: wrong checksum", ErrMalformedAPIKey)
	default:
		return fmt.Errorf("%w: not %s and %d base62 characters", ErrMalformedAPIKey, APIKeyPrefix, APIKeyLength-len(APIKeyPrefix))
	}
}

// APIKeyChecksum returns the checksum characters of an API key whose first
// part (prefix and random characters) is body, for issuers that mint keys:
// key = body + APIKeyChecksum(body). It returns an error wrapping
// ErrMalformedAPIKey when body is not APIKeyPrefix followed by
// APIKeyRandomLength base62 characters.
func APIKeyChecksum(body string) (string, error) {
	if !IsAPIKeyLike(body) || len(body) != APIKeyLength-APIKeyChecksumLength {
		return "", fmt.Errorf("%w: the body of a key is %s and %d base62 characters", ErrMalformedAPIKey, APIKeyPrefix, APIKeyRandomLength)
	}
	for i := len(APIKeyPrefix); i < len(body); i++ {
		if c := body[i]; !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return "", fmt.Errorf("%w: a character outside 0-9A-Za-z at position %d", ErrMalformedAPIKey, i)
		}
	}
	return apikey.Checksum(body), nil
}

// errNotAPIKeyAnswer: the issuer answered active for the string, but not as
// an API key (its token_type is not api_key).
var errNotAPIKeyAnswer = fmt.Errorf("%w: the issuer's answer is not for an API key", ErrWrongType)

// errKeyInactive: the issuer says the key is not active.
var errKeyInactive = fmt.Errorf("API key: %w", ErrInactive)

// errUnusableKeyAnswer is an active api_key answer lacking a member the
// claims need; it is the issuer's fault, so it fails closed as unavailable.
func errUnusableKeyAnswer(member string) error {
	return fmt.Errorf("%w: the active api_key answer has no usable %s", ErrIntrospectionUnavailable, member)
}

// apiKeyClientPrefix starts the client_id of an API key's introspection answer.
const apiKeyClientPrefix = "apikey:"

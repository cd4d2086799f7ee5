package verify

import (
	"fmt"
	"hash/crc32"
	"strings"
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
	APIKeyPrefix         = "pcak_"
	APIKeyRandomLength   = 32
	APIKeyChecksumLength = 6
	APIKeyLength         = len(APIKeyPrefix) + APIKeyRandomLength + APIKeyChecksumLength
	// APIKeyPattern is a regular expression matching exactly the strings of
	// the API key format (the checksum aside), for secret scanners.
	APIKeyPattern = `pcak_[0-9A-Za-z]{38}`
)

// base62Digits are the base62 digits, in order of value.
const base62Digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// IsAPIKeyLike reports whether s claims to be an API key: it starts with
// APIKeyPrefix. It says nothing about the rest (see CheckAPIKey); a Guard
// with API keys uses it to tell an API key from a JWT in the Authorization
// header (a JWS never starts with the prefix).
func IsAPIKeyLike(s string) bool { return strings.HasPrefix(s, APIKeyPrefix) }

// CheckAPIKey checks the format of an API key locally: its prefix, length,
// alphabet and checksum. It makes no network call, and its error (wrapping
// ErrMalformedAPIKey) never contains the key. A nil error does not mean the
// key is valid, only that it is worth asking the issuer about.
func CheckAPIKey(key string) error {
	switch {
	case !IsAPIKeyLike(key):
		return fmt.Errorf("%w: no %s prefix", ErrMalformedAPIKey, APIKeyPrefix)
	case len(key) != APIKeyLength:
		return fmt.Errorf("%w: %d characters, not %d", ErrMalformedAPIKey, len(key), APIKeyLength)
	}
	for i := len(APIKeyPrefix); i < len(key); i++ {
		if !isBase62(key[i]) {
			return fmt.Errorf("%w: a character outside 0-9A-Za-z at position %d", ErrMalformedAPIKey, i)
		}
	}
	var sum [APIKeyChecksumLength]byte
	body := key[:APIKeyLength-APIKeyChecksumLength]
	putChecksum(&sum, body)
	// The checksum is not a secret (anyone holding the key can compute it),
	// so a plain comparison is fine here.
	if string(sum[:]) != key[len(body):] {
		return fmt.Errorf("%w: wrong checksum", ErrMalformedAPIKey)
	}
	return nil
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
		if !isBase62(body[i]) {
			return "", fmt.Errorf("%w: a character outside 0-9A-Za-z at position %d", ErrMalformedAPIKey, i)
		}
	}
	var sum [APIKeyChecksumLength]byte
	putChecksum(&sum, body)
	return string(sum[:]), nil
}

// putChecksum writes the base62 CRC-32 of body into sum, without allocating.
func putChecksum(sum *[APIKeyChecksumLength]byte, body string) {
	tab := crc32.IEEETable
	crc := ^uint32(0)
	for i := 0; i < len(body); i++ {
		crc = tab[byte(crc)^body[i]] ^ (crc >> 8)
	}
	v := ^crc
	for i := APIKeyChecksumLength - 1; i >= 0; i-- {
		sum[i] = base62Digits[v%62]
		v /= 62
	}
}

func isBase62(c byte) bool {
	return '0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z'
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

package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"regexp"
	"strings"
)

// Prefix starts every key; it never changes, so one secret-scanning rule
// covers every deployment.
const Prefix = "pcak_"

// Lengths of a key and its parts.
const (
	// RandomLen is the number of random base62 characters (≈190 bits).
	RandomLen = 32
	// ChecksumLen is the number of base62 characters of the CRC32.
	ChecksumLen = 6
	// Len is the length of a whole key.
	Len = len(Prefix) + RandomLen + ChecksumLen
)

// Pattern matches a key anywhere in a text (for secret scanners); a match
// is a real key only when Parse accepts it (the checksum).
var Pattern = regexp.MustCompile(PatternText)

// PatternText is Pattern's text, for secret scanners' rules.
const PatternText = `pcak_[0-9A-Za-z]{38}`

// alphabet is base62 in ASCII order.
const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// Parse errors, for errors.Is. They never hold the key.
var (
	// ErrMalformed means the string is not shaped like a key (prefix,
	// length or alphabet).
	ErrMalformed = errors.New("apikey: not a Portcullis API key")
	// ErrChecksum means the shape is right but the checksum does not match:
	// a typo or a made-up key.
	ErrChecksum = errors.New("apikey: the key's checksum does not match")
)

// Key is a well-formed API key (Parse or Generate made it).
type Key struct {
	raw string
}

// String returns the key itself. Show it once, to its owner; never log it.
func (k Key) String() string { return k.raw }

// Hash is what is stored: SHA-256 of the whole key. A slow hash would add
// nothing for ≈190 random bits and would cap the rate of key checks.
func (k Key) Hash() []byte { return Hash(k.raw) }

// Hint is what people are shown to tell keys apart: the first 8 and last 4
// characters.
func (k Key) Hint() string { return k.raw[:8] + "..." + k.raw[len(k.raw)-4:] }

// Hash returns SHA-256 of s (the stored form of a key).
func Hash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// HasPrefix reports whether s starts like a key (so a caller can route it
// to key handling before deciding whether it is a valid one).
func HasPrefix(s string) bool { return strings.HasPrefix(s, Prefix) }

// Parse checks that s is a well-formed key: the prefix, 43 characters, the
// base62 alphabet and the checksum. It does nothing else (no lookup).
func Parse(s string) (Key, error) {
	if err := Check(s); err != nil {
		return Key{}, err
	}
	return Key{raw: s}, nil
}

// Check is Parse without the Key: ErrMalformed for the prefix, the length
// or the alphabet, ErrChecksum for the checksum. It does not allocate.
// The checksum is no secret (anyone holding the key can compute it), so
// it is compared plainly.
func Check(s string) error {
	if len(s) != Len || !strings.HasPrefix(s, Prefix) {
		return ErrMalformed
	}
	for i := len(Prefix); i < len(s); i++ {
		if !isBase62(s[i]) {
			return ErrMalformed
		}
	}
	var sum [ChecksumLen]byte
	putChecksum(&sum, s[:Len-ChecksumLen])
	if string(sum[:]) != s[Len-ChecksumLen:] {
		return ErrChecksum
	}
	return nil
}

// Generate returns a new key from crypto/rand.
func Generate() (Key, error) { return generate(rand.Reader) }

// generate draws RandomLen base62 characters from r without modulo bias
// (bytes of 248 and above are redrawn) and appends the checksum.
func generate(r io.Reader) (Key, error) {
	var b strings.Builder
	b.Grow(Len)
	b.WriteString(Prefix)
	buf := make([]byte, 64)
	for n := 0; n < RandomLen; {
		if _, err := io.ReadFull(r, buf); err != nil {
			return Key{}, fmt.Errorf("apikey: read random bytes: %w", err)
		}
		for _, c := range buf {
			if c >= 248 { // 248 = 4×62: the largest multiple of 62 below 256
				continue
			}
			b.WriteByte(alphabet[c%62])
			if n++; n == RandomLen {
				break
			}
		}
	}
	body := b.String()
	return Key{raw: body + Checksum(body)}, nil
}

// Checksum is the CRC32 (IEEE) of body as ChecksumLen base62 characters,
// most significant first, padded with '0' (62^6 > 2^32): a key is body +
// Checksum(body), where body is Prefix and RandomLen base62 characters.
func Checksum(body string) string {
	var sum [ChecksumLen]byte
	putChecksum(&sum, body)
	return string(sum[:])
}

// putChecksum writes Checksum(body) into sum without allocating.
func putChecksum(sum *[ChecksumLen]byte, body string) {
	tab := crc32.IEEETable
	crc := ^uint32(0)
	for i := 0; i < len(body); i++ {
		crc = tab[byte(crc)^body[i]] ^ (crc >> 8)
	}
	v := ^crc
	for i := ChecksumLen - 1; i >= 0; i-- {
		sum[i] = alphabet[v%62]
		v /= 62
	}
}

func isBase62(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z'
}

// SessionPrefix starts the sid of every access token exchanged from a key
// (SessionID); revoking that sid revokes them all.
const SessionPrefix = "ak_"

// The shape of a key's id, as the store makes it: KeyIDPrefix and
// KeyIDRandomLen characters of lowercase base32 (16 random bytes).
const (
	// KeyIDPrefix starts every key id.
	KeyIDPrefix = "apk_"
	// KeyIDRandomLen is the number of base32 characters after it.
	KeyIDRandomLen = 26
)

// SessionID is the sid of the access tokens exchanged from the key with
// this id.
func SessionID(keyID string) string { return SessionPrefix + keyID }

// KeyIDOfSession returns the key id of a sid made by SessionID; ok is false
// for any other sid. Only the exact shape counts (SessionPrefix, then a
// key id: KeyIDPrefix and KeyIDRandomLen lowercase base32 characters): a
// login's sid is 22 random base64url characters, of which one in 64³ starts
// with "ak_", and such a session must never be taken for a key's.
func KeyIDOfSession(sid string) (keyID string, ok bool) {
	id, found := strings.CutPrefix(sid, SessionPrefix)
	if !found || !IsKeyID(id) {
		return "", false
	}
	return id, true
}

// IsKeyID reports whether id is shaped like a key id: KeyIDPrefix and
// KeyIDRandomLen characters of lowercase base32 (a-z, 2-7).
func IsKeyID(id string) bool {
	rest, found := strings.CutPrefix(id, KeyIDPrefix)
	if !found || len(rest) != KeyIDRandomLen {
		return false
	}
	for i := 0; i < len(rest); i++ {
		if c := rest[i]; !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// ClientID is the client_id introspection answers for a key: "apikey:<id>".
func ClientID(keyID string) string { return "apikey:" + keyID }

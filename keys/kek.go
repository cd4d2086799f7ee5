package keys

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// KEKSize is the size in bytes of a key-encryption key (AES-256).
const KEKSize = 32

// Sealed format, version 1:
//
//	0x01 | KEK id (4 bytes) | nonce (12 bytes) | AES-256-GCM ciphertext and tag
//
// The KEK id is a truncated hash of the KEK, so Open knows which configured
// KEK to use; the 5-byte header is authenticated together with the caller's AAD.
const (
	sealVersion1 = 0x01
	kekIDLen     = 4
	nonceLen     = 12
	headerLen    = 1 + kekIDLen
	minSealedLen = headerLen + nonceLen + 16
)

// KEKRing holds the key-encryption keys of PORTCULLIS_KEY_ENCRYPTION_KEY: the
// first seals, every one opens. The zero value holds none and refuses to seal
// or open. A KEKRing is safe for concurrent use and never reveals its keys.
type KEKRing struct {
	keks []kek
}

type kek struct {
	id   [kekIDLen]byte
	aead cipher.AEAD
}

// ParseKEKs parses the PORTCULLIS_KEY_ENCRYPTION_KEY setting: the base64 of 32
// bytes, or a comma-separated list of them (the first encrypts, each
// decrypts). Errors say which entry is wrong and what is expected, never the
// value itself.
func ParseKEKs(s string) (KEKRing, error) {
	const expect = "expected the base64 of 32 random bytes (for example from `openssl rand -base64 32`), or a comma-separated list of them with the current key first"
	if strings.TrimSpace(s) == "" {
		return KEKRing{}, fmt.Errorf("key-encryption key is empty: %s", expect)
	}
	parts := strings.Split(s, ",")
	raws := make([][]byte, 0, len(parts))
	defer func() {
		for _, r := range raws {
			clear(r)
		}
	}()
	for i, p := range parts {
		p = strings.TrimSpace(p)
		where := "key-encryption key"
		if len(parts) > 1 {
			where = fmt.Sprintf("key-encryption key entry %d of %d", i+1, len(parts))
		}
		if p == "" {
			return KEKRing{}, fmt.Errorf("%s is empty: %s", where, expect)
		}
		raw, ok := decodeBase64Any(p)
		if !ok {
			return KEKRing{}, fmt.Errorf("%s is not valid base64: %s", where, expect)
		}
		raws = append(raws, raw)
		if len(raw) != KEKSize {
			return KEKRing{}, fmt.Errorf("%s decodes to %d bytes, not %d: %s", where, len(raw), KEKSize, expect)
		}
	}
	ring, err := NewKEKRing(raws...)
	if err != nil {
		return KEKRing{}, err
	}
	return ring, nil
}

// decodeBase64Any accepts standard or URL-safe base64, padded or not.
func decodeBase64Any(s string) ([]byte, bool) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, true
		}
	}
	return nil, false
}

// NewKEKRing builds a ring from raw 32-byte keys, the first one sealing. The
// keys are copied into AES ciphers; the caller may clear its slices afterwards.
func NewKEKRing(keys ...[]byte) (KEKRing, error) {
	if len(keys) == 0 {
		return KEKRing{}, errors.New("no key-encryption key given")
	}
	ring := KEKRing{keks: make([]kek, 0, len(keys))}
	for i, k := range keys {
		if len(k) != KEKSize {
			return KEKRing{}, fmt.Errorf("key-encryption key %d has %d bytes, not %d", i+1, len(k), KEKSize)
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return KEKRing{}, fmt.Errorf("key-encryption key %d: %w", i+1, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return KEKRing{}, fmt.Errorf("key-encryption key %d: %w", i+1, err)
		}
		id := kekID(k)
		for j, prev := range ring.keks {
			if prev.id == id {
				return KEKRing{}, fmt.Errorf("key-encryption key %d repeats key %d", i+1, j+1)
			}
		}
		ring.keks = append(ring.keks, kek{id: id, aead: aead})
	}
	return ring, nil
}

// GenerateKEK returns a new random key-encryption key as standard base64, the
// form PORTCULLIS_KEY_ENCRYPTION_KEY takes.
func GenerateKEK() (string, error) {
	b := make([]byte, KEKSize)
	defer clear(b)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate key-encryption key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

func kekID(k []byte) [kekIDLen]byte {
	h := sha256.New()
	h.Write([]byte("portcullis kek id v1\x00"))
	h.Write(k)
	var id [kekIDLen]byte
	copy(id[:], h.Sum(nil))
	return id
}

// Len returns the number of key-encryption keys in the ring.
func (r KEKRing) Len() int { return len(r.keks) }

// String never shows key material.
func (r KEKRing) String() string { return fmt.Sprintf("KEKRing(%d keys)", len(r.keks)) }

// GoString never shows key material.
func (r KEKRing) GoString() string { return r.String() }

// Seal encrypts plaintext with AES-256-GCM under the first key-encryption
// key, authenticating aad too (Open must be given the same aad). The result
// is versioned and names the KEK that sealed it.
func (r KEKRing) Seal(plaintext, aad []byte) ([]byte, error) {
	if len(r.keks) == 0 {
		return nil, errors.New("seal: no key-encryption key configured")
	}
	k := r.keks[0]
	out := make([]byte, headerLen+nonceLen, headerLen+nonceLen+len(plaintext)+k.aead.Overhead())
	out[0] = sealVersion1
	copy(out[1:headerLen], k.id[:])
	if _, err := rand.Read(out[headerLen:]); err != nil {
		return nil, fmt.Errorf("seal: nonce: %w", err)
	}
	nonce := out[headerLen : headerLen+nonceLen]
	return k.aead.Seal(out, nonce, plaintext, fullAAD(out[:headerLen], aad)), nil
}

// Open decrypts what Seal produced with any key of the ring. It fails with
// ErrDecrypt when the data was sealed under a KEK the ring does not hold,
// when it was altered, or when aad differs.
func (r KEKRing) Open(sealed, aad []byte) ([]byte, error) {
	if len(r.keks) == 0 {
		return nil, errors.New("open: no key-encryption key configured")
	}
	if len(sealed) < minSealedLen || sealed[0] != sealVersion1 {
		return nil, fmt.Errorf("%w: unknown sealed format", ErrDecrypt)
	}
	id := sealed[1:headerLen]
	nonce := sealed[headerLen : headerLen+nonceLen]
	ct := sealed[headerLen+nonceLen:]
	ad := fullAAD(sealed[:headerLen], aad)
	for _, k := range r.keks {
		if !bytes.Equal(k.id[:], id) {
			continue
		}
		if pt, err := k.aead.Open(nil, nonce, ct, ad); err == nil {
			return pt, nil
		}
		return nil, fmt.Errorf("%w: the data was altered or belongs to another record", ErrDecrypt)
	}
	return nil, fmt.Errorf("%w: it was sealed under a key-encryption key that is not configured (keep the old key in PORTCULLIS_KEY_ENCRYPTION_KEY after the new one until `portcullis keys reencrypt` has run and PORTCULLIS_REFRESH_REUSE_GRACE has passed since)", ErrDecrypt)
}

// Reseal returns sealed sealed again under the first key-encryption key
// with the same aad, or nil when it already is (nothing to do): what a KEK
// rotation does to every value at rest (`portcullis keys reencrypt`). It
// fails as Open does when no configured KEK opens sealed.
func (r KEKRing) Reseal(sealed, aad []byte) ([]byte, error) {
	if r.sealedWithPrimary(sealed) {
		return nil, nil
	}
	plain, err := r.Open(sealed, aad)
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	return r.Seal(plain, aad)
}

// SealPrefixes returns, for each key-encryption key of the ring in order
// (the sealing one first), the bytes every value it seals begins with: a
// store can tell by them, without opening anything, which values a KEK
// rotation has still to re-seal (those not beginning with the first) and
// which no configured KEK opens (those beginning with none). They name the
// KEK by a truncated hash and reveal nothing of it.
func (r KEKRing) SealPrefixes() [][]byte {
	out := make([][]byte, len(r.keks))
	for i, k := range r.keks {
		out[i] = append([]byte{sealVersion1}, k.id[:]...)
	}
	return out
}

// sealedWithPrimary reports whether sealed names the ring's first KEK.
func (r KEKRing) sealedWithPrimary(sealed []byte) bool {
	return len(r.keks) > 0 && len(sealed) >= headerLen && sealed[0] == sealVersion1 &&
		bytes.Equal(sealed[1:headerLen], r.keks[0].id[:])
}

func fullAAD(header, aad []byte) []byte {
	ad := make([]byte, 0, len(header)+len(aad))
	return append(append(ad, header...), aad...)
}

package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/portcullis-auth/portcullis/store"
)

// Signing algorithms Portcullis generates keys for.
const (
	AlgRS256 = "RS256" // RSASSA-PKCS1-v1_5 with SHA-256
	AlgES256 = "ES256" // ECDSA on P-256 with SHA-256
	AlgEdDSA = "EdDSA" // Ed25519
)

// DefaultRSABits is the RSA modulus size used when none is chosen.
const DefaultRSABits = 2048

// Algorithms lists the supported signing algorithms.
func Algorithms() []string { return []string{AlgRS256, AlgES256, AlgEdDSA} }

// ValidateAlg checks a signing algorithm and, for RS256, the RSA modulus size
// (0 means DefaultRSABits; 2048, 3072 and 4096 are accepted).
func ValidateAlg(alg string, rsaBits int) error {
	switch alg {
	case AlgRS256:
		switch rsaBits {
		case 0, 2048, 3072, 4096:
			return nil
		}
		return fmt.Errorf("RSA key size %d not supported: use 2048, 3072 or 4096", rsaBits)
	case AlgES256, AlgEdDSA:
		return nil
	}
	return fmt.Errorf("signing algorithm %q not supported: use RS256, ES256 or EdDSA", alg)
}

// PrivateKey is a signing key pair held in memory. Its private half is never
// exposed: it leaves the package only sealed under a KEKRing, and formatting
// or logging a PrivateKey shows only its kid and alg.
type PrivateKey struct {
	kid  string
	alg  string
	priv crypto.Signer
}

// Generate creates a new key pair for alg (RS256, ES256 or EdDSA); rsaBits
// selects the RSA modulus size (0 means 2048) and is ignored for other algs.
// The kid is the RFC 7638 thumbprint of the public key.
func Generate(alg string, rsaBits int) (*PrivateKey, error) {
	if err := ValidateAlg(alg, rsaBits); err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	var priv crypto.Signer
	var err error
	switch alg {
	case AlgRS256:
		if rsaBits == 0 {
			rsaBits = DefaultRSABits
		}
		priv, err = rsa.GenerateKey(rand.Reader, rsaBits)
	case AlgES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case AlgEdDSA:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		return nil, fmt.Errorf("generate %s signing key: %w", alg, err)
	}
	return newPrivateKey(alg, priv)
}

func newPrivateKey(alg string, priv crypto.Signer) (*PrivateKey, error) {
	if err := checkKeyType(alg, priv.Public()); err != nil {
		return nil, err
	}
	kid, err := Thumbprint(priv.Public())
	if err != nil {
		return nil, err
	}
	return &PrivateKey{kid: kid, alg: alg, priv: priv}, nil
}

// checkKeyType verifies that pub is a key of the type alg needs (and, for RSA, large enough).
func checkKeyType(alg string, pub crypto.PublicKey) error {
	switch alg {
	case AlgRS256:
		k, ok := pub.(*rsa.PublicKey)
		if !ok {
			return fmt.Errorf("key for %s is not an RSA key", alg)
		}
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits is too small (at least 2048)", k.N.BitLen())
		}
	case AlgES256:
		k, ok := pub.(*ecdsa.PublicKey)
		if !ok || k.Curve != elliptic.P256() {
			return fmt.Errorf("key for %s is not a P-256 key", alg)
		}
	case AlgEdDSA:
		k, ok := pub.(ed25519.PublicKey)
		if !ok || len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("key for %s is not an Ed25519 key", alg)
		}
	default:
		return fmt.Errorf("signing algorithm %q not supported", alg)
	}
	return nil
}

// Thumbprint returns the RFC 7638 JWK thumbprint (SHA-256, base64url without
// padding) of an RSA, ECDSA or Ed25519 public key: the kid Portcullis uses.
func Thumbprint(pub crypto.PublicKey) (string, error) {
	jwk := jose.JSONWebKey{Key: pub}
	sum, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("key thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(sum), nil
}

// ValidKID reports whether s has the shape of a Portcullis kid: a SHA-256
// thumbprint in base64url without padding (43 characters).
func ValidKID(s string) bool {
	if len(s) != 43 {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil && len(b) == 32
}

// KID returns the key id (RFC 7638 thumbprint).
func (k *PrivateKey) KID() string { return k.kid }

// Alg returns the signing algorithm.
func (k *PrivateKey) Alg() string { return k.alg }

// Public returns the public key.
func (k *PrivateKey) Public() crypto.PublicKey { return k.priv.Public() }

// PublicJWK returns the JSON of the public JWK with kid, alg and "use":"sig".
func (k *PrivateKey) PublicJWK() ([]byte, error) {
	b, err := publicJWK(k.priv.Public(), k.kid, k.alg).MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("marshal public key %s: %w", k.kid, err)
	}
	return b, nil
}

// String shows only the kid and alg, never key material.
func (k *PrivateKey) String() string { return "signing key " + k.kid + " (" + k.alg + ")" }

// GoString shows only the kid and alg, never key material.
func (k *PrivateKey) GoString() string { return k.String() }

// LogValue shows only the kid and alg, never key material.
func (k *PrivateKey) LogValue() slog.Value {
	return slog.GroupValue(slog.String("kid", k.kid), slog.String("alg", k.alg))
}

func publicJWK(pub crypto.PublicKey, kid, alg string) jose.JSONWebKey {
	return jose.JSONWebKey{Key: pub, KeyID: kid, Algorithm: alg, Use: "sig"}
}

// signingKeyAAD binds a sealed private key to its kid, so a sealed blob
// copied onto another key's row does not decrypt.
func signingKeyAAD(kid string) []byte { return []byte("portcullis signing key\x00" + kid) }

// seal encrypts the private key (PKCS #8) under the ring's first KEK, bound to the kid.
func (k *PrivateKey) seal(ring KEKRing) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		return nil, fmt.Errorf("encode signing key %s: %w", k.kid, err)
	}
	defer clear(der)
	sealed, err := ring.Seal(der, signingKeyAAD(k.kid))
	if err != nil {
		return nil, fmt.Errorf("encrypt signing key %s: %w", k.kid, err)
	}
	return sealed, nil
}

// record builds the store record of a new key in the given state.
func (k *PrivateKey) record(ring KEKRing, state store.KeyState, now time.Time) (store.SigningKey, error) {
	pub, err := k.PublicJWK()
	if err != nil {
		return store.SigningKey{}, err
	}
	sealed, err := k.seal(ring)
	if err != nil {
		return store.SigningKey{}, err
	}
	rec := store.SigningKey{
		KID:              k.kid,
		Alg:              k.alg,
		State:            state,
		PublicJWK:        pub,
		PrivateEncrypted: sealed,
		CreatedAt:        now,
		Version:          1,
	}
	if state == store.KeyActive {
		rec.ActivatedAt = &now
	}
	return rec, nil
}

// openPrivateKey decrypts a stored key and checks that it matches its kid and alg.
func openPrivateKey(ring KEKRing, rec store.SigningKey) (*PrivateKey, error) {
	der, err := ring.Open(rec.PrivateEncrypted, signingKeyAAD(rec.KID))
	if err != nil {
		return nil, fmt.Errorf("decrypt signing key %s: %w", rec.KID, err)
	}
	defer clear(der)
	parsed, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("decode signing key %s: %w", rec.KID, errors.New("not a PKCS #8 private key"))
	}
	signer, ok := parsed.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("decode signing key %s: unsupported key type", rec.KID)
	}
	pk, err := newPrivateKey(rec.Alg, signer)
	if err != nil {
		return nil, fmt.Errorf("decode signing key %s: %w", rec.KID, err)
	}
	if pk.kid != rec.KID {
		return nil, fmt.Errorf("decode signing key %s: the private key does not match the kid", rec.KID)
	}
	if rsaKey, ok := signer.(*rsa.PrivateKey); ok {
		rsaKey.Precompute()
	}
	return pk, nil
}

// kidHashLen is the length of a base64url SHA-256 thumbprint.
var kidHashLen = base64.RawURLEncoding.EncodedLen(sha256.Size)

// validKID reports whether s has the shape of a Portcullis kid (43 base64url characters).
func validKID(s string) bool {
	if len(s) != kidHashLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

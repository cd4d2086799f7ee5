package verify

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"
)

// Algorithms lists the JWS algorithms a key may declare. Every one is
// asymmetric: none and the HMAC algorithms are never accepted.
func Algorithms() []string {
	return []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
}

// MinRSABits is the smallest RSA modulus accepted in a key set.
const MinRSABits = 2048

// maxKIDLen bounds the kid looked up (and therefore any refetch it may cause).
const maxKIDLen = 256

// algSpec is what one JWS algorithm needs to verify a signature.
type algSpec struct {
	name  string
	hash  crypto.Hash
	pss   bool
	curve elliptic.Curve // ECDSA only
	size  int            // ECDSA: bytes per coordinate
}

var algSpecs = map[string]*algSpec{
	"RS256": {name: "RS256", hash: crypto.SHA256},
	"RS384": {name: "RS384", hash: crypto.SHA384},
	"RS512": {name: "RS512", hash: crypto.SHA512},
	"PS256": {name: "PS256", hash: crypto.SHA256, pss: true},
	"PS384": {name: "PS384", hash: crypto.SHA384, pss: true},
	"PS512": {name: "PS512", hash: crypto.SHA512, pss: true},
	"ES256": {name: "ES256", hash: crypto.SHA256, curve: elliptic.P256(), size: 32},
	"ES384": {name: "ES384", hash: crypto.SHA384, curve: elliptic.P384(), size: 48},
	"ES512": {name: "ES512", hash: crypto.SHA512, curve: elliptic.P521(), size: 66},
	"EdDSA": {name: "EdDSA"},
}

// Key is one verification key of a key set: a public key bound to one kid
// and one algorithm. A token is checked against a Key only if its alg is
// exactly the Key's algorithm.
type Key struct {
	kid  string
	spec *algSpec
	rsa  *rsa.PublicKey
	ec   *ecdsa.PublicKey
	ed   ed25519.PublicKey
}

// KID returns the key id.
func (k *Key) KID() string { return k.kid }

// Algorithm returns the only JWS algorithm this key verifies.
func (k *Key) Algorithm() string { return k.spec.name }

// Public returns the public key (*rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey).
func (k *Key) Public() crypto.PublicKey {
	switch {
	case k.rsa != nil:
		return k.rsa
	case k.ec != nil:
		return k.ec
	default:
		return k.ed
	}
}

// privateMembers are the JWK members that only a private or symmetric key has.
type privateMembers struct {
	D, P, Q, DP, DQ, QI, K json.RawMessage
}

// parseKey turns one JWK (JSON) into a verification Key. It refuses keys
// without kid or alg, with an algorithm that does not fit the key type, with
// use other than sig or key_ops without verify, private or symmetric keys,
// and RSA keys shorter than MinRSABits.
func parseKey(raw json.RawMessage) (*Key, error) {
	var priv privateMembers
	if err := json.Unmarshal(raw, &priv); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	if priv.D != nil || priv.P != nil || priv.Q != nil || priv.DP != nil || priv.DQ != nil || priv.QI != nil || priv.K != nil {
		return nil, errors.New("private or symmetric key material in a public key set")
	}
	var ops struct {
		KeyOps []string `json:"key_ops"`
	}
	if err := json.Unmarshal(raw, &ops); err != nil {
		return nil, fmt.Errorf("key_ops: %w", err)
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(raw); err != nil {
		return nil, fmt.Errorf("parse JWK: %w", err)
	}
	if jwk.KeyID == "" || len(jwk.KeyID) > maxKIDLen {
		return nil, errors.New("missing or oversized kid")
	}
	if jwk.Use != "" && jwk.Use != "sig" {
		return nil, fmt.Errorf("use %q is not sig", jwk.Use)
	}
	if ops.KeyOps != nil && !contains(ops.KeyOps, "verify") {
		return nil, errors.New("key_ops does not allow verify")
	}
	spec := algSpecs[jwk.Algorithm]
	if spec == nil {
		return nil, fmt.Errorf("alg %q is not an accepted signature algorithm", jwk.Algorithm)
	}
	k := &Key{kid: jwk.KeyID, spec: spec}
	switch pub := jwk.Key.(type) {
	case *rsa.PublicKey:
		if spec.curve != nil || spec.name == "EdDSA" {
			return nil, fmt.Errorf("alg %s does not fit an RSA key", spec.name)
		}
		if pub.N.BitLen() < MinRSABits {
			return nil, fmt.Errorf("RSA key of %d bits is too short", pub.N.BitLen())
		}
		k.rsa = pub
	case *ecdsa.PublicKey:
		if spec.curve == nil || pub.Curve != spec.curve {
			return nil, fmt.Errorf("alg %s does not fit an EC key on %s", spec.name, pub.Curve.Params().Name)
		}
		k.ec = pub
	case ed25519.PublicKey:
		if spec.name != "EdDSA" || len(pub) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("alg %s does not fit an Ed25519 key", spec.name)
		}
		k.ed = pub
	default:
		return nil, fmt.Errorf("unsupported key type %T", jwk.Key)
	}
	return k, nil
}

// verifySignature checks sig over the JWS signing input with the key's own algorithm.
func (k *Key) verifySignature(input []byte, sig []byte) bool {
	s := k.spec
	if k.ed != nil {
		return len(sig) == ed25519.SignatureSize && ed25519.Verify(k.ed, input, sig)
	}
	var sum [64]byte
	digest := hashInto(sum[:0], s.hash, input)
	switch {
	case k.rsa != nil && s.pss:
		return rsa.VerifyPSS(k.rsa, s.hash, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: s.hash}) == nil
	case k.rsa != nil:
		return len(sig) == k.rsa.Size() && rsa.VerifyPKCS1v15(k.rsa, s.hash, digest, sig) == nil
	case k.ec != nil:
		if len(sig) != 2*s.size {
			return false
		}
		der, ok := rawToDER(sig, s.size)
		return ok && ecdsa.VerifyASN1(k.ec, digest, der)
	}
	return false
}

// hashInto appends the digest of input under h to dst.
func hashInto(dst []byte, h crypto.Hash, input []byte) []byte {
	switch h {
	case crypto.SHA256:
		d := sha256.Sum256(input)
		return append(dst, d[:]...)
	case crypto.SHA384:
		d := sha512.Sum384(input)
		return append(dst, d[:]...)
	default:
		d := sha512.Sum512(input)
		return append(dst, d[:]...)
	}
}

// rawToDER converts the JWS form of an ECDSA signature (R || S, each size
// bytes, RFC 7518 §3.4) into ASN.1 DER: SEQUENCE { INTEGER r, INTEGER s }.
func rawToDER(sig []byte, size int) ([]byte, bool) {
	r, s := minimalInt(sig[:size]), minimalInt(sig[size:])
	body := intLen(r) + intLen(s)
	if body > 255 {
		return nil, false
	}
	der := make([]byte, 0, 3+body)
	der = append(der, 0x30)
	if body >= 0x80 {
		der = append(der, 0x81)
	}
	der = append(der, byte(body))
	der = appendInt(der, r)
	der = appendInt(der, s)
	return der, true
}

// minimalInt drops leading zero bytes, keeping at least one.
func minimalInt(v []byte) []byte {
	for len(v) > 1 && v[0] == 0 {
		v = v[1:]
	}
	return v
}

// intLen is the DER size of the INTEGER of the unsigned big-endian v
// (v is at most 66 bytes, so the length fits one byte).
func intLen(v []byte) int {
	n := len(v)
	if v[0]&0x80 != 0 {
		n++
	}
	return 2 + n
}

func appendInt(der, v []byte) []byte {
	n := len(v)
	pad := v[0]&0x80 != 0
	if pad {
		n++
	}
	der = append(der, 0x02, byte(n))
	if pad {
		der = append(der, 0)
	}
	return append(der, v...)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

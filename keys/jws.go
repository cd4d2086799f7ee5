package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// MaxTokenSize is the largest token Verify looks at; anything longer is
// refused before any decoding.
const MaxTokenSize = 8 << 10

// b64 is strict unpadded base64url: no padding, no non-canonical trailing
// bits, so a token has exactly one encoding.
var b64 = base64.RawURLEncoding.Strict()

// es256SigLen is the size of an ES256 signature (R || S, 32 bytes each).
const es256SigLen = 64

// jwsHeader is the part of a protected header Portcullis reads. jku, x5u,
// x5c and jwk are never read: the key comes only from the kid.
type jwsHeader struct {
	Alg  string          `json:"alg"`
	Kid  string          `json:"kid"`
	Typ  string          `json:"typ"`
	Crit json.RawMessage `json:"crit"`
	B64  json.RawMessage `json:"b64"`
}

// encodeHeader returns the base64url protected header for alg, kid and typ.
func encodeHeader(alg, kid, typ string) (string, error) {
	if !validTyp(typ) {
		return "", errors.New("sign: typ must be 1 to 64 printable ASCII characters")
	}
	h, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}{alg, kid, typ})
	if err != nil {
		return "", fmt.Errorf("sign: header: %w", err)
	}
	return b64.EncodeToString(h), nil
}

func validTyp(typ string) bool {
	if len(typ) == 0 || len(typ) > 64 {
		return false
	}
	for i := 0; i < len(typ); i++ {
		if c := typ[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// sign returns a compact JWS of claims (marshalled to a JSON object) with
// the protected header {"alg","kid","typ"}. The payload, the signing input
// and the token are built in one pooled buffer: the token's string is the
// only allocation of its own.
func (a *activeKey) sign(claims any, typ string) (string, error) {
	scratch := signScratch.Get().(*[]byte)
	defer putSignScratch(scratch)
	payload, err := appendClaims((*scratch)[:0], claims)
	if err != nil {
		return "", fmt.Errorf("sign: marshal claims: %w", err)
	}
	if len(payload) == 0 || payload[0] != '{' {
		return "", errors.New("sign: claims must marshal to a JSON object")
	}
	hdr, ok := a.headers[typ]
	if !ok {
		if hdr, err = encodeHeader(a.key.alg, a.key.kid, typ); err != nil {
			return "", err
		}
	}
	size := len(hdr) + 1 + b64.EncodedLen(len(payload)) + 1 + b64.EncodedLen(a.signatureLen())
	if size > MaxTokenSize {
		return "", fmt.Errorf("sign: token would be %d bytes, more than the %d accepted", size, MaxTokenSize)
	}
	// The token is written after the payload, in room made once, so that
	// the payload stays where it is while it is encoded.
	buf := slices.Grow(payload, size)
	*scratch = buf[:0]
	payload = buf[:len(payload)]
	tok := buf[len(payload):len(payload)]
	tok = append(tok, hdr...)
	tok = append(tok, '.')
	tok = b64.AppendEncode(tok, payload)
	sig, err := a.signInput(tok)
	if err != nil {
		return "", err
	}
	tok = append(tok, '.')
	tok = b64.AppendEncode(tok, sig)
	return string(tok), nil
}

// signScratch keeps sign's buffers.
var signScratch = sync.Pool{New: func() any {
	b := make([]byte, 0, 2048)
	return &b
}}

// putSignScratch returns a buffer to signScratch unless it grew past what
// a token of MaxTokenSize and its payload need.
func putSignScratch(b *[]byte) {
	if cap(*b) <= 2*MaxTokenSize {
		signScratch.Put(b)
	}
}

// claimsAppender is claims that write their own JSON, the same as
// encoding/json would (token.AccessClaims): every access token is signed,
// and encoding/json's reflection was most of the signer's time besides the
// signature itself.
type claimsAppender interface {
	AppendJSON(b []byte) []byte
}

// appendClaims appends the JSON payload of claims to dst.
func appendClaims(dst []byte, claims any) ([]byte, error) {
	if c, ok := claims.(claimsAppender); ok {
		return c.AppendJSON(dst), nil
	}
	b, err := json.Marshal(claims)
	if err != nil {
		return dst, err
	}
	return append(dst, b...), nil
}

func (a *activeKey) signatureLen() int {
	switch k := a.key.priv.(type) {
	case *rsa.PrivateKey:
		return k.Size()
	case *ecdsa.PrivateKey:
		return es256SigLen
	default:
		return ed25519.SignatureSize
	}
}

// signInput signs the JWS signing input with the active key.
func (a *activeKey) signInput(input []byte) ([]byte, error) {
	switch k := a.key.priv.(type) {
	case *rsa.PrivateKey:
		h := sha256.Sum256(input)
		sig, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, h[:])
		if err != nil {
			return nil, fmt.Errorf("sign: %w", err)
		}
		return sig, nil
	case *ecdsa.PrivateKey:
		h := sha256.Sum256(input)
		der, err := ecdsa.SignASN1(rand.Reader, k, h[:])
		if err != nil {
			return nil, fmt.Errorf("sign: %w", err)
		}
		sig, ok := derToRaw(der)
		if !ok {
			return nil, errors.New("sign: malformed ECDSA signature")
		}
		return sig, nil
	case ed25519.PrivateKey:
		return ed25519.Sign(k, input), nil
	}
	return nil, errors.New("sign: unsupported key type")
}

// verify checks a compact JWS against the snapshot at now and returns its
// payload, kid and typ. The key is looked up only by kid among the published
// keys, and the token's alg must be that key's algorithm.
func (s *snapshot) verify(token string, now time.Time) (payload []byte, kid, typ string, err error) {
	if len(token) > MaxTokenSize {
		return nil, "", "", fmt.Errorf("%w: longer than %d bytes", ErrMalformed, MaxTokenSize)
	}
	dot1 := strings.IndexByte(token, '.')
	if dot1 <= 0 {
		return nil, "", "", fmt.Errorf("%w: not a compact JWS", ErrMalformed)
	}
	dot2 := strings.IndexByte(token[dot1+1:], '.')
	if dot2 <= 0 {
		return nil, "", "", fmt.Errorf("%w: not a compact JWS", ErrMalformed)
	}
	dot2 += dot1 + 1
	if dot2 == len(token)-1 || strings.IndexByte(token[dot2+1:], '.') >= 0 {
		return nil, "", "", fmt.Errorf("%w: not a compact JWS", ErrMalformed)
	}
	rawHeader, err := b64.DecodeString(token[:dot1])
	if err != nil {
		return nil, "", "", fmt.Errorf("%w: header is not base64url", ErrMalformed)
	}
	var h jwsHeader
	if err := json.Unmarshal(rawHeader, &h); err != nil {
		return nil, "", "", fmt.Errorf("%w: header is not a JSON object", ErrMalformed)
	}
	if h.Crit != nil || h.B64 != nil {
		return nil, "", "", fmt.Errorf("%w: crit and b64 headers are not supported", ErrMalformed)
	}
	switch h.Alg {
	case AlgRS256, AlgES256, AlgEdDSA:
	default:
		return nil, "", "", fmt.Errorf("%w: alg not accepted", ErrMalformed)
	}
	if !validKID(h.Kid) {
		return nil, "", "", ErrUnknownKey
	}
	if _, revoked := s.revoked[h.Kid]; revoked {
		return nil, h.Kid, h.Typ, ErrRevokedKey
	}
	key := s.published[h.Kid]
	if key == nil || (!key.until.IsZero() && !now.Before(key.until)) {
		return nil, h.Kid, h.Typ, ErrUnknownKey
	}
	if h.Alg != key.alg {
		return nil, h.Kid, h.Typ, fmt.Errorf("%w: alg does not match the key", ErrBadSignature)
	}
	sig, err := b64.DecodeString(token[dot2+1:])
	if err != nil {
		return nil, h.Kid, h.Typ, fmt.Errorf("%w: signature is not base64url", ErrMalformed)
	}
	if !key.verifySignature(token[:dot2], sig) {
		return nil, h.Kid, h.Typ, ErrBadSignature
	}
	payload, err = b64.DecodeString(token[dot1+1 : dot2])
	if err != nil {
		return nil, h.Kid, h.Typ, fmt.Errorf("%w: payload is not base64url", ErrMalformed)
	}
	return payload, h.Kid, h.Typ, nil
}

// verifySignature checks sig over the signing input with the key's algorithm.
func (p *publicKey) verifySignature(input string, sig []byte) bool {
	switch p.alg {
	case AlgRS256:
		if p.rsa == nil || len(sig) != p.rsa.Size() {
			return false
		}
		h := sha256.Sum256([]byte(input))
		return rsa.VerifyPKCS1v15(p.rsa, crypto.SHA256, h[:], sig) == nil
	case AlgES256:
		if p.ec == nil || len(sig) != es256SigLen {
			return false
		}
		h := sha256.Sum256([]byte(input))
		return ecdsa.VerifyASN1(p.ec, h[:], rawToDER(sig))
	case AlgEdDSA:
		if len(p.ed) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
			return false
		}
		return ed25519.Verify(p.ed, []byte(input), sig)
	}
	return false
}

// typMatches compares a token's typ with the wanted one as RFC 7515 §4.1.9
// says: case-insensitively, with an optional "application/" prefix.
func typMatches(got, want string) bool {
	const prefix = "application/"
	if len(got) > len(prefix) && strings.EqualFold(got[:len(prefix)], prefix) {
		got = got[len(prefix):]
	}
	if len(want) > len(prefix) && strings.EqualFold(want[:len(prefix)], prefix) {
		want = want[len(prefix):]
	}
	return strings.EqualFold(got, want)
}

// derToRaw converts an ASN.1 ECDSA signature into the JWS form R || S, each
// left-padded to 32 bytes (RFC 7518 §3.4).
func derToRaw(der []byte) ([]byte, bool) {
	var seq, r, s cryptobyte.String
	in := cryptobyte.String(der)
	if !in.ReadASN1(&seq, casn1.SEQUENCE) || !in.Empty() ||
		!seq.ReadASN1(&r, casn1.INTEGER) || !seq.ReadASN1(&s, casn1.INTEGER) || !seq.Empty() {
		return nil, false
	}
	out := make([]byte, es256SigLen)
	for i, v := range []cryptobyte.String{r, s} {
		for len(v) > 0 && v[0] == 0 {
			v = v[1:]
		}
		if len(v) > es256SigLen/2 {
			return nil, false
		}
		copy(out[(i+1)*es256SigLen/2-len(v):], v)
	}
	return out, true
}

// rawToDER converts a JWS ECDSA signature R || S into ASN.1 for VerifyASN1.
func rawToDER(sig []byte) []byte {
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
		addASN1Unsigned(b, sig[:es256SigLen/2])
		addASN1Unsigned(b, sig[es256SigLen/2:])
	})
	der, err := b.Bytes()
	if err != nil {
		return nil
	}
	return der
}

// addASN1Unsigned adds a big-endian unsigned integer as a minimal ASN.1 INTEGER.
func addASN1Unsigned(b *cryptobyte.Builder, v []byte) {
	for len(v) > 1 && v[0] == 0 {
		v = v[1:]
	}
	b.AddASN1(casn1.INTEGER, func(b *cryptobyte.Builder) {
		if v[0]&0x80 != 0 {
			b.AddUint8(0)
		}
		b.AddBytes(v)
	})
}

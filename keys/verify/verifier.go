package verify

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Verification settings.
const (
	// DefaultLeeway is the clock skew allowed on exp, nbf and iat.
	DefaultLeeway = 30 * time.Second
	// MaxLeeway is the largest leeway Config accepts.
	MaxLeeway = 5 * time.Minute
	// NoLeeway, as Config.Leeway, allows no clock skew at all.
	NoLeeway time.Duration = -1
	// MaxTokenSize is the largest token looked at; anything longer is
	// refused before any decoding.
	MaxTokenSize = 8 << 10
)

// b64 is strict unpadded base64url, so a token has exactly one encoding.
var b64 = base64.RawURLEncoding.Strict()

// Config says which tokens a Verifier accepts.
type Config struct {
	// Issuer must equal the token's iss exactly.
	Issuer string
	// Audience must be one of the token's aud values.
	Audience string
	// Leeway is the clock skew allowed on exp, nbf and iat: zero means
	// DefaultLeeway, NoLeeway means none, at most MaxLeeway.
	Leeway time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Verifier checks RFC 9068 JWT access tokens against a key set. It is safe
// for concurrent use.
type Verifier struct {
	jws      jwsVerifier
	issuer   string
	audience string
	leeway   time.Duration
	now      func() time.Time
}

// jwsVerifier checks compact JWS signatures against a key set: the one
// signature check of every token kind (access tokens, logout tokens).
type jwsVerifier struct {
	// headers caches the protected headers of verified tokens (an issuer
	// uses a handful), so a token whose header was seen skips its decoding.
	headers atomic.Pointer[map[string]jwsHeader]
	keys    KeySet
}

// init sets the key set and an empty header cache.
func (j *jwsVerifier) init(keys KeySet) {
	j.keys = keys
	j.headers.Store(&map[string]jwsHeader{})
}

// New returns a Verifier for tokens of cfg.Issuer meant for cfg.Audience,
// whose keys come from keys.
func New(keys KeySet, cfg Config) (*Verifier, error) {
	var errs []error
	if keys == nil {
		errs = append(errs, errors.New("a key set is required"))
	}
	if cfg.Issuer == "" {
		errs = append(errs, errors.New("Config.Issuer is required"))
	}
	if cfg.Audience == "" {
		errs = append(errs, errors.New("Config.Audience is required"))
	}
	leeway, err := leewayOf(cfg.Leeway)
	if err != nil {
		errs = append(errs, fmt.Errorf("Config.%w", err))
	}
	cfg.Leeway = leeway
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("verifier: %w", err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	v := &Verifier{issuer: cfg.Issuer, audience: cfg.Audience, leeway: cfg.Leeway, now: cfg.Now}
	v.jws.init(keys)
	return v, nil
}

// leewayOf resolves a configured leeway: zero means DefaultLeeway, NoLeeway
// means none, anything else must be within [0, MaxLeeway].
func leewayOf(l time.Duration) (time.Duration, error) {
	switch {
	case l == 0:
		return DefaultLeeway, nil
	case l == NoLeeway:
		return 0, nil
	case l < 0 || l > MaxLeeway:
		return 0, fmt.Errorf("Leeway must be between 0 and %s", MaxLeeway)
	}
	return l, nil
}

// jwsHeader is the part of the protected header read. jku, x5u, x5c and jwk
// are deliberately absent: the key comes only from the kid.
type jwsHeader struct {
	Alg  string          `json:"alg"`
	Kid  string          `json:"kid"`
	Typ  string          `json:"typ"`
	Crit json.RawMessage `json:"crit"`
	B64  json.RawMessage `json:"b64"`
}

// Verify checks token and returns its claims. The order of the checks is
// fixed: shape, algorithm, key (by kid), signature, typ, then the claims,
// so nothing about the claims of a token with a bad signature is revealed.
// Only a kid missing from the key set can cause a network call (see
// RemoteKeySet); ctx bounds that wait.
func (v *Verifier) Verify(ctx context.Context, token string) (*Claims, error) {
	bufp := scratch.Get().(*[]byte)
	defer releaseScratch(bufp)
	payload, seg, err := v.jws.verify(ctx, token, isAccessTokenType, bufp)
	if err != nil {
		return nil, err
	}
	var w wireClaims
	if !scanClaims(payload, &w) {
		w = wireClaims{}
		if err := json.Unmarshal(payload, &w); err != nil {
			return nil, fmt.Errorf("%w: payload is not a JSON object of valid claims", ErrMalformed)
		}
	}
	if missing := w.missingClaim(); missing != "" {
		return nil, fmt.Errorf("%w: claim %s is missing", ErrMalformed, missing)
	}
	if w.Iss != v.issuer {
		return nil, ErrWrongIssuer
	}
	if !contains(w.Aud.list, v.audience) {
		return nil, ErrWrongAudience
	}
	now := v.now()
	if !now.Before(w.Exp.t.Add(v.leeway)) {
		return nil, fmt.Errorf("%w at %s", ErrExpired, w.Exp.t.UTC().Format(time.RFC3339))
	}
	if w.Nbf.set && now.Add(v.leeway).Before(w.Nbf.t) {
		return nil, fmt.Errorf("%w: nbf is in the future", ErrNotYetValid)
	}
	if now.Add(v.leeway).Before(w.Iat.t) {
		return nil, fmt.Errorf("%w: iat is in the future", ErrNotYetValid)
	}
	return w.claims(seg), nil
}

// verify checks token's shape, algorithm, key (by kid), signature and typ
// (isType), in that order, and returns the decoded payload, which lives in
// *bufp (from scratch, released by the caller), and the payload's base64url
// segment. Errors wrap ErrMalformed, ErrUnknownKey, ErrBadSignature,
// ErrKeySetUnavailable or ErrWrongType.
func (j *jwsVerifier) verify(ctx context.Context, token string, isType func(string) bool, bufp *[]byte) (payload []byte, seg string, err error) {
	if len(token) == 0 || len(token) > MaxTokenSize {
		return nil, "", fmt.Errorf("%w: empty or longer than %d bytes", ErrMalformed, MaxTokenSize)
	}
	dot1 := strings.IndexByte(token, '.')
	dot2 := -1
	if dot1 > 0 {
		if i := strings.IndexByte(token[dot1+1:], '.'); i > 0 {
			dot2 = dot1 + 1 + i
		}
	}
	if dot2 < 0 || dot2 == len(token)-1 || strings.IndexByte(token[dot2+1:], '.') >= 0 {
		return nil, "", fmt.Errorf("%w: not a compact JWS", ErrMalformed)
	}
	h, known := (*j.headers.Load())[token[:dot1]]
	if !known {
		if h, err = parseHeader(token[:dot1]); err != nil {
			return nil, "", err
		}
	}
	if algSpecs[h.Alg] == nil {
		return nil, "", fmt.Errorf("%w: the token's algorithm is not accepted", ErrBadSignature)
	}
	key, err := j.keys.lookup(ctx, h.Kid)
	if err != nil {
		return nil, "", err
	}
	if key.spec.name != h.Alg {
		return nil, "", fmt.Errorf("%w: the token's alg is not its key's algorithm", ErrBadSignature)
	}
	// One pooled buffer holds the token's bytes, then the decoded signature
	// and payload: nothing of it outlives the caller's use (json copies
	// strings).
	need := len(token) + b64.DecodedLen(len(token)-dot2-1) + b64.DecodedLen(dot2-dot1-1)
	if cap(*bufp) < need {
		*bufp = make([]byte, 0, need)
	}
	buf := (*bufp)[:need]
	tok := buf[:copy(buf, token)]
	rest := buf[len(tok):]
	n, err := b64.Decode(rest, tok[dot2+1:])
	if err != nil {
		return nil, "", fmt.Errorf("%w: signature is not base64url", ErrMalformed)
	}
	sig, rest := rest[:n], rest[n:]
	if !key.verifySignature(tok[:dot2], sig) {
		return nil, "", ErrBadSignature
	}
	if !known {
		j.rememberHeader(token[:dot1], h)
	}
	if !isType(h.Typ) {
		return nil, "", ErrWrongType
	}
	n, err = b64.Decode(rest, tok[dot1+1:dot2])
	if err != nil {
		return nil, "", fmt.Errorf("%w: payload is not base64url", ErrMalformed)
	}
	return rest[:n], token[dot1+1 : dot2], nil
}

// scratch holds per-call buffers of Verify.
var scratch = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

func releaseScratch(b *[]byte) {
	if cap(*b) <= 2*MaxTokenSize {
		scratch.Put(b)
	}
}

// parseHeader decodes a protected header.
func parseHeader(seg string) (jwsHeader, error) {
	var h jwsHeader
	raw, err := b64.DecodeString(seg)
	if err != nil {
		return h, fmt.Errorf("%w: header is not base64url", ErrMalformed)
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return h, fmt.Errorf("%w: header is not a JSON object", ErrMalformed)
	}
	if h.Crit != nil || h.B64 != nil {
		return h, fmt.Errorf("%w: crit and b64 headers are not supported", ErrMalformed)
	}
	return h, nil
}

// Header cache bounds: entries, and the size of a header worth caching.
const (
	maxCachedHeaders   = 64
	maxCachedHeaderLen = 512
)

// rememberHeader caches the header of a token whose signature verified (so
// only the issuer can add entries). The map is copied on write; when full
// it starts over.
func (j *jwsVerifier) rememberHeader(seg string, h jwsHeader) {
	if len(seg) > maxCachedHeaderLen {
		return
	}
	for {
		old := j.headers.Load()
		next := make(map[string]jwsHeader, len(*old)+1)
		if len(*old) < maxCachedHeaders {
			for k, e := range *old {
				next[k] = e
			}
		}
		next[strings.Clone(seg)] = h
		if j.headers.CompareAndSwap(old, &next) {
			return
		}
	}
}

// isAccessTokenType reports whether typ is at+jwt.
func isAccessTokenType(typ string) bool { return typIs(typ, "at+jwt") }

// typIs reports whether the header typ is want, compared as RFC 7515
// §4.1.9 says: case-insensitively, with an optional "application/" prefix.
func typIs(typ, want string) bool {
	const prefix = "application/"
	if len(typ) > len(prefix) && strings.EqualFold(typ[:len(prefix)], prefix) {
		typ = typ[len(prefix):]
	}
	return strings.EqualFold(typ, want)
}

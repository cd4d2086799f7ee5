package verify

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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
	keys     KeySet
	issuer   string
	audience string
	leeway   time.Duration
	now      func() time.Time
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
	switch {
	case cfg.Leeway == 0:
		cfg.Leeway = DefaultLeeway
	case cfg.Leeway == NoLeeway:
		cfg.Leeway = 0
	case cfg.Leeway < 0 || cfg.Leeway > MaxLeeway:
		errs = append(errs, fmt.Errorf("Config.Leeway must be between 0 and %s", MaxLeeway))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("verifier: %w", err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Verifier{keys: keys, issuer: cfg.Issuer, audience: cfg.Audience, leeway: cfg.Leeway, now: cfg.Now}, nil
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
	if len(token) == 0 || len(token) > MaxTokenSize {
		return nil, fmt.Errorf("%w: empty or longer than %d bytes", ErrMalformed, MaxTokenSize)
	}
	dot1 := strings.IndexByte(token, '.')
	dot2 := -1
	if dot1 > 0 {
		if i := strings.IndexByte(token[dot1+1:], '.'); i > 0 {
			dot2 = dot1 + 1 + i
		}
	}
	if dot2 < 0 || dot2 == len(token)-1 || strings.IndexByte(token[dot2+1:], '.') >= 0 {
		return nil, fmt.Errorf("%w: not a compact JWS", ErrMalformed)
	}
	rawHeader, err := b64.DecodeString(token[:dot1])
	if err != nil {
		return nil, fmt.Errorf("%w: header is not base64url", ErrMalformed)
	}
	var h jwsHeader
	if err := json.Unmarshal(rawHeader, &h); err != nil {
		return nil, fmt.Errorf("%w: header is not a JSON object", ErrMalformed)
	}
	if h.Crit != nil || h.B64 != nil {
		return nil, fmt.Errorf("%w: crit and b64 headers are not supported", ErrMalformed)
	}
	if algSpecs[h.Alg] == nil {
		return nil, fmt.Errorf("%w: the token's algorithm is not accepted", ErrBadSignature)
	}
	key, err := v.keys.lookup(ctx, h.Kid)
	if err != nil {
		return nil, err
	}
	if key.spec.name != h.Alg {
		return nil, fmt.Errorf("%w: the token's alg is not its key's algorithm", ErrBadSignature)
	}
	sig, err := b64.DecodeString(token[dot2+1:])
	if err != nil {
		return nil, fmt.Errorf("%w: signature is not base64url", ErrMalformed)
	}
	if !key.verifySignature([]byte(token[:dot2]), sig) {
		return nil, ErrBadSignature
	}
	if !isAccessTokenType(h.Typ) {
		return nil, ErrWrongType
	}
	payload, err := b64.DecodeString(token[dot1+1 : dot2])
	if err != nil {
		return nil, fmt.Errorf("%w: payload is not base64url", ErrMalformed)
	}
	var w wireClaims
	if err := json.Unmarshal(payload, &w); err != nil {
		return nil, fmt.Errorf("%w: payload is not a JSON object of valid claims", ErrMalformed)
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
	return w.claims(payload), nil
}

// isAccessTokenType reports whether typ is at+jwt, compared as RFC 7515
// §4.1.9 says: case-insensitively, with an optional "application/" prefix.
func isAccessTokenType(typ string) bool {
	const prefix = "application/"
	if len(typ) > len(prefix) && strings.EqualFold(typ[:len(prefix)], prefix) {
		typ = typ[len(prefix):]
	}
	return strings.EqualFold(typ, "at+jwt")
}

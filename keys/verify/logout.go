package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Logout token constants (OpenID Connect Back-Channel Logout 1.0 §2.4).
const (
	// LogoutTokenType is the header typ a logout token must carry.
	LogoutTokenType = "logout+jwt"
	// BackchannelLogoutEvent is the member of the events claim that makes a
	// JWT a logout token.
	BackchannelLogoutEvent = "http://schemas.openid.net/event/backchannel-logout"
	// DefaultMaxReplayEntries bounds the jti cache of a LogoutVerifier.
	DefaultMaxReplayEntries = 10000
)

// Logout token errors; LogoutVerifier.Verify wraps one of them, or one of
// the signature errors (ErrMalformed, ErrUnknownKey, ErrBadSignature,
// ErrKeySetUnavailable), ErrWrongType, ErrWrongIssuer, ErrWrongAudience,
// ErrExpired or ErrNotYetValid, always together with ErrInvalidLogoutToken
// (except ErrKeySetUnavailable, a fault on the receiving side).
var (
	// ErrInvalidLogoutToken: the logout token is refused (errors.Is holds
	// for every refusal).
	ErrInvalidLogoutToken = errors.New("invalid logout token")
	// ErrNotLogoutToken: the claims are not those of a logout token (no
	// events member, a nonce, neither sub nor sid, no jti, …).
	ErrNotLogoutToken = errors.New("not a logout token")
	// ErrReplayed: a logout token with this jti was accepted before.
	ErrReplayed = errors.New("logout token replayed")
	// ErrReplayCacheFull: too many recent logout tokens to remember one
	// more; the sender should retry later.
	ErrReplayCacheFull = errors.New("too many recent logout tokens")
)

// LogoutConfig says which logout tokens a LogoutVerifier accepts.
type LogoutConfig struct {
	// Issuer must equal the token's iss exactly.
	Issuer string
	// ClientID is this relying party's client id: one of the token's aud
	// values.
	ClientID string
	// Leeway is the clock skew allowed on exp and iat, as in Config.
	Leeway time.Duration
	// MaxReplayEntries bounds how many jti values are remembered (default
	// DefaultMaxReplayEntries). Each is kept until its token's exp.
	MaxReplayEntries int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// LogoutClaims are the verified claims of a logout token. At least one of
// Subject and SessionID is set.
type LogoutClaims struct {
	Issuer    string    // iss
	Subject   string    // sub; "" when absent
	SessionID string    // sid; "" when absent (then every session of Subject ends)
	Audience  []string  // aud
	IssuedAt  time.Time // iat
	ExpiresAt time.Time // exp
	ID        string    // jti
}

// LogoutVerifier checks OpenID Connect Back-Channel Logout 1.0 logout
// tokens (§2.6) with the same key lookup and signature check as Verifier,
// and refuses a jti seen before until its token expires. It is safe for
// concurrent use.
type LogoutVerifier struct {
	jws      jwsVerifier
	issuer   string
	clientID string
	leeway   time.Duration
	now      func() time.Time
	max      int

	mu   sync.Mutex
	seen map[string]time.Time // jti → when it may be forgotten
}

// NewLogoutVerifier returns a LogoutVerifier for logout tokens of
// cfg.Issuer meant for cfg.ClientID, whose keys come from keys (the same
// key set as the access tokens').
func NewLogoutVerifier(keys KeySet, cfg LogoutConfig) (*LogoutVerifier, error) {
	var errs []error
	if keys == nil {
		errs = append(errs, errors.New("a key set is required"))
	}
	if cfg.Issuer == "" {
		errs = append(errs, errors.New("LogoutConfig.Issuer is required"))
	}
	if cfg.ClientID == "" {
		errs = append(errs, errors.New("LogoutConfig.ClientID is required"))
	}
	leeway, err := leewayOf(cfg.Leeway)
	if err != nil {
		errs = append(errs, fmt.Errorf("LogoutConfig.%w", err))
	}
	if cfg.MaxReplayEntries < 0 {
		errs = append(errs, errors.New("LogoutConfig.MaxReplayEntries must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("logout verifier: %w", err)
	}
	if cfg.MaxReplayEntries == 0 {
		cfg.MaxReplayEntries = DefaultMaxReplayEntries
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	v := &LogoutVerifier{issuer: cfg.Issuer, clientID: cfg.ClientID, leeway: leeway, now: cfg.Now,
		max: cfg.MaxReplayEntries, seen: map[string]time.Time{}}
	v.jws.init(keys)
	return v, nil
}

// wireLogout is a logout token's payload as sent.
type wireLogout struct {
	Iss    string                     `json:"iss"`
	Sub    string                     `json:"sub"`
	Aud    audience                   `json:"aud"`
	Iat    numericDate                `json:"iat"`
	Exp    numericDate                `json:"exp"`
	Jti    string                     `json:"jti"`
	Sid    string                     `json:"sid"`
	Events map[string]json.RawMessage `json:"events"`
	Nonce  json.RawMessage            `json:"nonce"` // must be absent
}

// Verify checks a logout token (BCL §2.6) in this order: signature (shape,
// algorithm never none, key by kid), typ logout+jwt, then the claims: iss,
// aud contains the client id, iat present and not in the future, exp present
// and not passed, an events claim whose back-channel logout member is a
// JSON object, no nonce, sub or sid, a jti, and last that the jti was not
// accepted before (it is then remembered until exp). ctx bounds a key set
// fetch for an unknown kid.
func (v *LogoutVerifier) Verify(ctx context.Context, token string) (*LogoutClaims, error) {
	c, err := v.check(ctx, token)
	if err != nil {
		if errors.Is(err, ErrKeySetUnavailable) {
			return nil, err
		}
		return nil, &logoutError{err: err}
	}
	return c, nil
}

// logoutError is a refused logout token: it is ErrInvalidLogoutToken and
// its cause (ErrExpired, …), and its text speaks of a logout token where the
// shared sentinels name an access token.
type logoutError struct{ err error }

var logoutTextFixer = strings.NewReplacer(ErrWrongType.Error(), "typ is not "+LogoutTokenType, "access token", "logout token")

func (e *logoutError) Error() string {
	return ErrInvalidLogoutToken.Error() + ": " + logoutTextFixer.Replace(e.err.Error())
}

func (e *logoutError) Unwrap() []error { return []error{ErrInvalidLogoutToken, e.err} }

func (v *LogoutVerifier) check(ctx context.Context, token string) (*LogoutClaims, error) {
	bufp := scratch.Get().(*[]byte)
	defer releaseScratch(bufp)
	payload, _, err := v.jws.verify(ctx, token, isLogoutTokenType, bufp)
	if err != nil {
		return nil, err
	}
	var w wireLogout
	if err := json.Unmarshal(payload, &w); err != nil {
		return nil, fmt.Errorf("%w: payload is not a JSON object of valid claims", ErrMalformed)
	}
	switch {
	case w.Iss == "":
		return nil, fmt.Errorf("%w: claim iss is missing", ErrMalformed)
	case !w.Aud.set:
		return nil, fmt.Errorf("%w: claim aud is missing", ErrMalformed)
	case !w.Iat.set:
		return nil, fmt.Errorf("%w: claim iat is missing", ErrMalformed)
	case !w.Exp.set:
		return nil, fmt.Errorf("%w: claim exp is missing", ErrMalformed)
	}
	if w.Iss != v.issuer {
		return nil, ErrWrongIssuer
	}
	if !contains(w.Aud.list, v.clientID) {
		return nil, ErrWrongAudience
	}
	now := v.now()
	if now.Add(v.leeway).Before(w.Iat.t) {
		return nil, fmt.Errorf("%w: iat is in the future", ErrNotYetValid)
	}
	if !now.Before(w.Exp.t.Add(v.leeway)) {
		return nil, fmt.Errorf("%w at %s", ErrExpired, w.Exp.t.UTC().Format(time.RFC3339))
	}
	if ev, ok := w.Events[BackchannelLogoutEvent]; !ok || !isJSONObject(ev) {
		return nil, fmt.Errorf("%w: no events claim with a %s object", ErrNotLogoutToken, BackchannelLogoutEvent)
	}
	if w.Nonce != nil {
		return nil, fmt.Errorf("%w: it carries a nonce", ErrNotLogoutToken)
	}
	if w.Sub == "" && w.Sid == "" {
		return nil, fmt.Errorf("%w: neither sub nor sid", ErrNotLogoutToken)
	}
	if w.Jti == "" {
		return nil, fmt.Errorf("%w: claim jti is missing", ErrNotLogoutToken)
	}
	if err := v.remember(w.Jti, w.Exp.t.Add(v.leeway), now); err != nil {
		return nil, err
	}
	return &LogoutClaims{Issuer: w.Iss, Subject: w.Sub, SessionID: w.Sid, Audience: w.Aud.list,
		IssuedAt: w.Iat.t, ExpiresAt: w.Exp.t, ID: w.Jti}, nil
}

// remember records jti until until, or refuses it when it is already
// recorded (a replay) or the cache is full of unexpired entries.
func (v *LogoutVerifier) remember(jti string, until, now time.Time) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if exp, ok := v.seen[jti]; ok && now.Before(exp) {
		return ErrReplayed
	}
	if len(v.seen) >= v.max {
		for k, exp := range v.seen {
			if !now.Before(exp) {
				delete(v.seen, k)
			}
		}
		if len(v.seen) >= v.max {
			return ErrReplayCacheFull
		}
	}
	v.seen[jti] = until
	return nil
}

// forget removes jti, so that a token whose logout failed may be sent again.
func (v *LogoutVerifier) forget(jti string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.seen, jti)
}

// isLogoutTokenType reports whether typ is logout+jwt.
func isLogoutTokenType(typ string) bool { return typIs(typ, LogoutTokenType) }

// isJSONObject reports whether raw (valid JSON) is an object.
func isJSONObject(raw json.RawMessage) bool {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	return len(raw) > 0 && raw[0] == '{'
}

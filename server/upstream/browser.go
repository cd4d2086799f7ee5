package upstream

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/store"
)

// LoginTTL is how long a sign-in sent to a provider may take to come back.
const LoginTTL = 10 * time.Minute

// pendingLogin is the single-use record of a started sign-in, stored under
// the SHA-256 of its state.
type pendingLogin struct {
	Provider    string `json:"p"`
	Nonce       string `json:"n"`
	Verifier    string `json:"v"`
	RedirectURL string `json:"r"`
	Return      []byte `json:"a,omitempty"`
	// Since (Unix seconds) and MaxAge (seconds) are the Freshness the
	// sign-in was begun with; absent when it asked none.
	Since  int64  `json:"s,omitempty"`
	MaxAge *int64 `json:"m,omitempty"`
}

// Freshness is how recent the person's sign-in at the provider must be for
// the authorization request the sign-in continues: its prompt=login and
// max_age (OIDC Core §3.1.2.1). Begin passes both on to the provider, and
// Callback refuses (ReasonStaleLogin) an id token whose auth_time does not
// show them: a provider that kept its own session signs nobody in to a
// request that asked for a fresh login. A request that asked for neither
// still sends the provider a max_age (askAuthTimeMaxAge), only so that its
// id token carries auth_time: the session here starts when the person
// signed in there (Claims.LoginTime), not at the callback.
type Freshness struct {
	// Since is when the request arrived, for its prompt=login: the sign-in
	// must be at or after it. Zero: not asked.
	Since time.Time
	// MaxAge is the request's max_age, when HasMaxAge.
	MaxAge    time.Duration
	HasMaxAge bool
}

// freshnessLeeway is how far the provider's clock may be behind ours:
// auth_time is compared with this much slack (it is whole seconds, too).
const freshnessLeeway = 30 * time.Second

// askAuthTimeMaxAge is the max_age sent to the provider when the request
// asked for none: a max_age makes auth_time REQUIRED in the id token (OIDC
// Core §3.1.2.1, §2), and one this long asks no provider session to be
// renewed. It is the oldest login time accepted at all (checkLoginAge).
const askAuthTimeMaxAge = store.MaxLoginAge

// options are the authorization request parameters that pass f on, and
// always a max_age, so that the id token carries auth_time: the request's,
// else askAuthTimeMaxAge.
func (f Freshness) options() []oauth2.AuthCodeOption {
	var opts []oauth2.AuthCodeOption
	if !f.Since.IsZero() {
		opts = append(opts, oauth2.SetAuthURLParam("prompt", "login"))
	}
	maxAge := askAuthTimeMaxAge
	if f.HasMaxAge {
		maxAge = f.MaxAge
	}
	return append(opts, oauth2.SetAuthURLParam("max_age", strconv.FormatInt(int64(maxAge/time.Second), 10)))
}

// freshEnough checks the id token's auth_time (zero: absent) at now
// against the Freshness the sign-in was begun with.
func (pl pendingLogin) freshEnough(authTime, now time.Time) error {
	if pl.Since == 0 && pl.MaxAge == nil {
		return nil
	}
	if authTime.IsZero() {
		return errors.New("the id token has no auth_time, and the request asked for a fresh sign-in")
	}
	if pl.Since != 0 && authTime.Add(freshnessLeeway).Before(time.Unix(pl.Since, 0)) {
		return fmt.Errorf("auth_time %d is before the request that asked prompt=login", authTime.Unix())
	}
	if pl.MaxAge != nil && now.Sub(authTime) > time.Duration(*pl.MaxAge)*time.Second+freshnessLeeway {
		return fmt.Errorf("auth_time %d is older than the request's max_age of %d s", authTime.Unix(), *pl.MaxAge)
	}
	return nil
}

// signedInAt is when a sign-in whose id token has claims c counts as made
// (Verified.SignedInAt), at now, once freshEnough accepted it: the
// provider's time (Claims.LoginTime), moved up to the oldest time the
// request's prompt=login or max_age allows when freshEnough accepted it
// within freshnessLeeway (the provider's clock behind ours), so that the
// session meets the request that asked for it instead of sending the
// person back to the login page.
func (pl pendingLogin) signedInAt(c Claims, now time.Time) time.Time {
	at := c.LoginTime(now)
	if pl.Since != 0 {
		if since := time.Unix(pl.Since, 0); at.Before(since) {
			at = since
		}
	}
	if pl.MaxAge != nil {
		if oldest := now.Add(-time.Duration(*pl.MaxAge) * time.Second); at.Before(oldest) {
			at = oldest
		}
	}
	return at
}

// Begin starts the authorization code flow with PKCE at the provider: it
// stores state, nonce and PKCE verifier (and ret, the caller's own data,
// such as its pending authorization request) in the single-use store for
// LoginTTL and returns the provider's authorization URL to redirect the
// browser to. redirectURL is the callback (/login/{provider}/callback).
// fresh is the freshness the request asks of the sign-in (the zero
// Freshness: none), passed on to the provider and checked by Callback; the
// provider is asked for auth_time in any case (Freshness.options).
// An unknown provider is 404.
func (s *Service) Begin(ctx context.Context, providerID, redirectURL string, fresh Freshness, ret []byte) (string, error) {
	p, ok := s.d.Providers.Get(providerID)
	if !ok {
		return "", apierr.ErrNotFound.WithDescription("No identity provider has this id.")
	}
	if s.d.Once == nil {
		return "", apierr.ErrTemporarilyUnavailable.WithCause(errors.New("upstream: no single-use store"))
	}
	cfg, err := s.d.Verifier.oauth2Config(ctx, p, redirectURL)
	if err != nil {
		return "", apierr.ErrTemporarilyUnavailable.WithDescription("The identity provider could not be reached. Try again shortly.").WithCause(err)
	}
	state, nonce := random(), random()
	pl := pendingLogin{Provider: p.ID, Nonce: nonce, Verifier: oauth2.GenerateVerifier(), RedirectURL: redirectURL, Return: ret}
	if !fresh.Since.IsZero() {
		pl.Since = fresh.Since.Unix()
	}
	if fresh.HasMaxAge {
		maxAge := int64(fresh.MaxAge / time.Second)
		pl.MaxAge = &maxAge
	}
	val, err := json.Marshal(pl)
	if err != nil {
		return "", apierr.ErrServer.WithCause(err)
	}
	if err := s.d.Once.PutOnce(ctx, store.OnceUpstreamLogin, hash(state), val, s.d.Now().Add(LoginTTL)); err != nil {
		return "", apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("store the upstream sign-in: %w", err))
	}
	opts := append([]oauth2.AuthCodeOption{oidc.Nonce(nonce), oauth2.S256ChallengeOption(pl.Verifier)}, fresh.options()...)
	return cfg.AuthCodeURL(state, opts...), nil
}

// Verified is a callback whose id token passed every check: the provider,
// its claims, and the caller's data given to Begin. Run Decide on it (with
// an invite when ret says the person is accepting one), then Apply, or
// LinkConfirmed after the person proves the local account.
type Verified struct {
	Provider *Provider
	Claims   Claims
	// SignedInAt is when the person signed in at the provider, the
	// session's auth_time: Claims.LoginTime (auth_time, else iat), moved up
	// by at most freshnessLeeway to meet the request's freshness.
	SignedInAt time.Time
	Return     []byte
}

// Callback completes a sign-in at the provider's redirect back to
// /login/{provider}/callback: it takes the state once (an unknown or
// expired state, or one begun for another provider, is invalid_state; a
// second use replayed_callback), refuses an error answer and an iss
// parameter (RFC 9207) other than the provider's, or none from a provider
// whose discovery says it sends one (checkIss), redeems the code with the
// PKCE verifier, verifies the id token with the stored nonce and its
// auth_time against the Freshness Begin was given; email
// comes from the id token, else from userinfo for the same sub. Every
// refusal is a *Refusal, audited (login.failed, details.method upstream;
// each one but an unknown provider's, which only within the address's
// budget: RecordRefusal); an unreachable provider is an error wrapping
// ErrUnavailable (audited).
func (s *Service) Callback(ctx context.Context, providerID string, q url.Values, m Meta) (Verified, error) {
	v, err := s.callback(ctx, providerID, q)
	if err != nil {
		return Verified{}, s.RecordRefusal(ctx, m, providerID, err)
	}
	return v, nil
}

func (s *Service) callback(ctx context.Context, providerID string, q url.Values) (Verified, error) {
	p, ok := s.d.Providers.Get(providerID)
	if !ok {
		return Verified{}, refuseUnmatched(ReasonUnknownProvider, nil, nil)
	}
	if s.d.Once == nil {
		return Verified{}, fmt.Errorf("%w: no single-use store", ErrUnavailable)
	}
	state := q.Get("state")
	if state == "" || len(state) > 512 {
		return Verified{}, refuse(ReasonInvalidState, p, "", nil)
	}
	key := hash(state)
	raw, err := s.d.Once.TakeOnce(ctx, store.OnceUpstreamLogin, key, s.d.Now())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return Verified{}, refuse(ReasonInvalidState, p, "", nil)
	case errors.Is(err, store.ErrTokenUsed):
		return Verified{}, refuse(ReasonReplayedCallback, p, "", nil)
	case err != nil:
		return Verified{}, fmt.Errorf("%w: take the sign-in state: %v", ErrUnavailable, err)
	}
	var pl pendingLogin
	if err := json.Unmarshal(raw, &pl); err != nil || pl.Provider != p.ID {
		// A state begun for another provider (IdP mix-up) is refused.
		return Verified{}, refuse(ReasonInvalidState, p, "", err)
	}
	if q.Get("error") != "" {
		return Verified{}, refuse(ReasonUpstreamError, p, "", nil)
	}
	if err := s.checkIss(ctx, p, q); err != nil {
		return Verified{}, err
	}
	code := q.Get("code")
	if code == "" {
		return Verified{}, refuse(ReasonUpstreamError, p, "", nil)
	}
	cfg, err := s.d.Verifier.oauth2Config(ctx, p, pl.RedirectURL)
	if err != nil {
		return Verified{}, err
	}
	tok, err := cfg.Exchange(s.d.Verifier.ctx(ctx), code, oauth2.VerifierOption(pl.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			return Verified{}, refuse(ReasonInvalidToken, p, "", fmt.Errorf("code exchange: %s", re.ErrorCode))
		}
		return Verified{}, fmt.Errorf("%w: code exchange: %v", ErrUnavailable, err)
	}
	rawID, _ := tok.Extra("id_token").(string)
	if rawID == "" {
		return Verified{}, refuse(ReasonInvalidToken, p, "", errors.New("no id_token in the token response"))
	}
	c, err := s.d.Verifier.VerifyIDToken(ctx, p, rawID, pl.Nonce)
	if err != nil {
		if errors.Is(err, ErrInvalidToken) {
			return Verified{}, refuse(ReasonInvalidToken, p, "", err)
		}
		return Verified{}, err
	}
	if err := pl.freshEnough(c.AuthTime, s.d.Now()); err != nil {
		return Verified{}, refuse(ReasonStaleLogin, p, "", err)
	}
	if err := checkLoginAge(p, c, s.d.Now()); err != nil {
		return Verified{}, err
	}
	c, err = s.d.Verifier.FillFromUserInfo(ctx, p, c, cfg.TokenSource(s.d.Verifier.ctx(ctx), tok))
	if err != nil {
		if errors.Is(err, ErrInvalidToken) {
			return Verified{}, refuse(ReasonInvalidToken, p, "", err)
		}
		return Verified{}, err
	}
	return Verified{Provider: p, Claims: c, SignedInAt: pl.signedInAt(c, s.d.Now()), Return: pl.Return}, nil
}

// checkIss applies RFC 9207 §2.4 to a callback's query: an iss parameter
// that is not p's issuer (an empty one included) is refused, and so is a
// missing one when p's discovery document says its responses carry it
// (Verifier.issRequired); either is invalid_state, as a state of another
// provider is (an IdP mix-up).
func (s *Service) checkIss(ctx context.Context, p *Provider, q url.Values) error {
	if q.Has("iss") {
		if q.Get("iss") != p.Issuer {
			return refuse(ReasonInvalidState, p, "", errors.New("iss parameter of another issuer"))
		}
		return nil
	}
	required, err := s.d.Verifier.issRequired(ctx, p)
	if err != nil {
		return err
	}
	if required {
		return refuse(ReasonInvalidState, p, "", errors.New("no iss parameter, though the provider's discovery says it sends one"))
	}
	return nil
}

func random() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func hash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

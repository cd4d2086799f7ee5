package upstream

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

var _ token.SubjectTokenHandler = (*Service)(nil)

// maxIDTokenLen bounds a presented id token (real ones are a few KiB).
const maxIDTokenLen = 16 << 10

// ExchangeSubjectToken is the token-exchange handler of upstream id tokens
// (subject_token_type urn:ietf:params:oauth:token-type:id_token): the
// provider is the one whose issuer is the token's iss and whose client_id
// is in its aud; the token is verified without a nonce (the front-end that
// got it checked its own), then decided by the same linking core as the
// browser path. An id token signs in once: it must be spelled in
// canonical base64url (canonicalJWS; any other spelling is refused as
// invalid_token), and the SHA-256 of its signing input is spent in the
// single-use store until it expires, so a token copied from a log, a
// crash report or a proxy cannot open more sessions, whether presented as
// is, re-encoded or re-signed with a malleable signature (a replay is
// refused with reason replayed_token). A decision that needs confirmation is
// refused here (there is no page to confirm on). The login's time is the
// token's (Claims.LoginTime), so a sign-in before "end every session" of
// the user opens no session (the token service refuses it). Every refusal is audited (login.failed,
// details.method upstream, CONTRACT.md: every refused id token) and
// answered 400 invalid_request with the reason; a provider that cannot be
// reached is 503.
func (s *Service) ExchangeSubjectToken(ctx context.Context, client store.Client, raw string, meta token.RequestMeta) (token.ExchangedSubject, error) {
	m := Meta{IP: meta.IP, UserAgent: meta.UserAgent, ClientID: client.ID}
	user, p, c, err := s.exchange(ctx, raw, m)
	if err != nil {
		pid := ""
		if p != nil {
			pid = p.ID
		}
		return token.ExchangedSubject{}, exchangeError(s.RecordRefusal(ctx, m, pid, err))
	}
	return token.ExchangedSubject{User: user, AMR: AMR(p, c), AuthTime: c.LoginTime(s.d.Now()),
		Details: map[string]string{"method": "upstream", "provider": p.ID}}, nil
}

// exchange verifies raw and signs in with it (exchangeVerified). Every
// refusal is recorded (CONTRACT.md: login.failed for every refused id
// token), whether the token verified or not.
func (s *Service) exchange(ctx context.Context, raw string, m Meta) (store.User, *Provider, Claims, error) {
	signed, err := canonicalJWS(raw)
	if err != nil {
		return store.User{}, nil, Claims{}, refuse(ReasonInvalidToken, nil, "", err)
	}
	iss, aud, ok := peekIssuerAudience(raw)
	if !ok {
		return store.User{}, nil, Claims{}, refuse(ReasonInvalidToken, nil, "", errors.New("not a JWT with iss and aud"))
	}
	p, ok := s.d.Providers.ForToken(iss, aud)
	if !ok {
		return store.User{}, nil, Claims{}, refuse(ReasonUnknownProvider, nil, "", nil)
	}
	c, err := s.d.Verifier.VerifyIDToken(ctx, p, raw, "")
	if err != nil {
		if errors.Is(err, ErrInvalidToken) {
			return store.User{}, p, c, refuse(ReasonInvalidToken, p, "", err)
		}
		return store.User{}, p, c, err
	}
	key, until := s.spentKey(signed, c.Expiry)
	u, err := s.exchangeVerified(ctx, p, c, key, until, m)
	return u, p, c, err
}

// exchangeVerified decides the exchange of a verified id token of p whose
// spent-token key is key (spendIDToken).
func (s *Service) exchangeVerified(ctx context.Context, p *Provider, c Claims, key []byte, until time.Time, m Meta) (store.User, error) {
	if err := checkLoginAge(p, c, s.d.Now()); err != nil {
		return store.User{}, err
	}
	if err := s.spendIDToken(ctx, p, key, until); err != nil {
		return store.User{}, err
	}
	u, d, err := s.signIn(ctx, Input{Provider: p, Claims: c}, m)
	if errors.Is(err, ErrNeedsConfirmation) {
		// No page to confirm on: refused.
		return store.User{}, refuse(ReasonNeedsConfirmation, p, d.User.ID, nil)
	}
	if err != nil {
		return u, err
	}
	// No page for a second factor either: a user who owes one is refused.
	owes, err := s.NeedsSecondFactor(ctx, u, AMR(p, c))
	if err != nil {
		return store.User{}, err
	}
	if owes {
		return store.User{}, refuse(ReasonSecondFactor, p, u.ID, nil)
	}
	return u, nil
}

// spentKey is the key under which a verified id token, named by signed,
// its canonical signing input (canonicalJWS), is spent, and until when:
// its expiry, or at least a minute from now, for clock skew between
// instances and the store. The signature is left out of the key: an ECDSA
// signature (r, s) can be turned into another valid one (r, n-s) by
// anyone, so a key over it would let a spent token sign in again.
func (s *Service) spentKey(signed string, exp time.Time) ([]byte, time.Time) {
	sum := sha256.Sum256([]byte(signed))
	until := s.d.Now().Add(time.Minute)
	if exp.After(until) {
		until = exp
	}
	return sum[:], until
}

// spendIDToken records the exchange of a verified id token of p under key
// until then (spentKey). A token spent before is refused; a store that
// cannot record it fails the exchange (503), since a token that cannot be
// spent could be replayed.
func (s *Service) spendIDToken(ctx context.Context, p *Provider, key []byte, until time.Time) error {
	if s.d.Once == nil {
		return errors.New("upstream: no single-use store to spend exchanged id tokens")
	}
	err := s.d.Once.PutOnce(ctx, store.OnceUpstreamIDToken, key, []byte(p.ID), until)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrAlreadyExists):
		return refuse(ReasonReplayedToken, p, "", nil)
	}
	return fmt.Errorf("upstream: spend the exchanged id token: %w", err)
}

// exchangeError answers a refused exchange: 400 invalid_request saying why
// (RFC 8693 §2.2.2), 503 when the provider or the store could not be
// reached.
func exchangeError(err error) error {
	var r *Refusal
	var ae *apierr.Error
	switch {
	case errors.As(err, &r):
		return apierr.ErrInvalidRequest.WithDescription("%s", r.Description()).WithCause(err)
	case errors.Is(err, ErrUnavailable):
		return apierr.ErrTemporarilyUnavailable.WithDescription("The identity provider could not be reached. Try again shortly.").WithCause(err)
	case errors.As(err, &ae):
		return err
	}
	return apierr.ErrTemporarilyUnavailable.WithCause(err)
}

// canonicalJWS checks that raw is a compact JWS (RFC 7515 §7.1) whose
// three parts are each the canonical spelling of their bytes in unpadded
// base64url (RFC 7515 §2: no padding, no line breaks, and the unused
// trailing bits of the last character zero, RFC 4648 §3.5), and returns
// its signing input (header.payload). go-jose decodes each part leniently
// (trailing bits and line breaks ignored) and verifies the re-encoded
// header and payload, so without this check one token has many spellings
// that all verify, and a single-use record of one spelling would not
// stop the others.
func canonicalJWS(raw string) (string, error) {
	if len(raw) > maxIDTokenLen {
		return "", fmt.Errorf("upstream: the token is longer than %d bytes", maxIDTokenLen)
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return "", fmt.Errorf("upstream: the token has %d parts, not the 3 of a compact JWS", len(parts))
	}
	names := [3]string{"header", "payload", "signature"}
	for i, part := range parts {
		b, err := base64.RawURLEncoding.Strict().DecodeString(part)
		if err != nil {
			return "", fmt.Errorf("upstream: the token's %s is not base64url: %w", names[i], err)
		}
		// Strict still skips CR and LF; only the round trip refuses them.
		if base64.RawURLEncoding.EncodeToString(b) != part {
			return "", fmt.Errorf("upstream: the token's %s is not canonical base64url", names[i])
		}
	}
	return raw[:len(parts[0])+1+len(parts[1])], nil
}

// peekIssuerAudience reads iss and aud from a JWT's payload without
// verifying it, only to choose the provider whose keys then verify it.
func peekIssuerAudience(raw string) (string, []string, bool) {
	if len(raw) > maxIDTokenLen {
		return "", nil, false
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return "", nil, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", nil, false
	}
	var c struct {
		Iss string          `json:"iss"`
		Aud json.RawMessage `json:"aud"`
	}
	if json.Unmarshal(payload, &c) != nil || c.Iss == "" {
		return "", nil, false
	}
	var aud []string
	var one string
	if json.Unmarshal(c.Aud, &one) == nil {
		aud = []string{one}
	} else if json.Unmarshal(c.Aud, &aud) != nil {
		return "", nil, false
	}
	return c.Iss, aud, len(aud) > 0
}

package backchannel

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// Logout token constants (BCL §2.4).
const (
	// TokenType is the JOSE header typ of a logout token.
	TokenType = "logout+jwt"
	// EventURI is the member of the events claim that makes a JWT a logout
	// token.
	EventURI = "http://schemas.openid.net/event/backchannel-logout"
	// TokenLifetime is exp - iat of every logout token (the contract's
	// "exp ≤ 2 min").
	TokenLifetime = 2 * time.Minute
)

// Signer signs claims as a compact JWS with the current signing key and the
// given header typ. *keys.Manager satisfies it.
type Signer interface {
	Sign(claims any, typ string) (string, error)
}

// Claims are the claims of a logout token. There is deliberately no nonce
// (BCL §2.4: its absence keeps a logout token from passing for an id token).
type Claims struct {
	Issuer    string                    `json:"iss"`
	Audience  string                    `json:"aud"`
	IssuedAt  int64                     `json:"iat"`
	ExpiresAt int64                     `json:"exp"`
	ID        string                    `json:"jti"`
	Subject   string                    `json:"sub,omitempty"`
	SessionID string                    `json:"sid,omitempty"`
	Events    map[string]map[string]any `json:"events"`
}

// NewClaims returns the claims of a fresh logout token for d issued at now:
// aud is d's client, exp is now + TokenLifetime, jti is 128 random bits.
func NewClaims(issuer string, d store.BackchannelLogout, now time.Time) (Claims, error) {
	if issuer == "" || d.ClientID == "" {
		return Claims{}, errors.New("logout token: issuer and client id are required")
	}
	if d.Subject == "" && d.SID == "" {
		return Claims{}, errors.New("logout token: a sub or a sid is required")
	}
	jti, err := randomID()
	if err != nil {
		return Claims{}, fmt.Errorf("logout token: %w", err)
	}
	return Claims{
		Issuer: issuer, Audience: d.ClientID, IssuedAt: now.Unix(), ExpiresAt: now.Add(TokenLifetime).Unix(),
		ID: jti, Subject: d.Subject, SessionID: d.SID,
		Events: map[string]map[string]any{EventURI: {}},
	}, nil
}

// Mint returns a signed logout token for d issued at now.
func Mint(s Signer, issuer string, d store.BackchannelLogout, now time.Time) (string, error) {
	c, err := NewClaims(issuer, d, now)
	if err != nil {
		return "", err
	}
	tok, err := s.Sign(c, TokenType)
	if err != nil {
		return "", fmt.Errorf("logout token: sign: %w", err)
	}
	return tok, nil
}

// randomID returns 128 random bits, base64url.
func randomID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("read random bytes: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

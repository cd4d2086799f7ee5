package mfa

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// The mfa_token: 32 random bytes, base64url without padding (43
// characters); stored only as its SHA-256 in the single-use store (kind
// store.OnceMFAToken) with the login it stands for.
const (
	tokenBytes = 32
	tokenLen   = 43
	// maxAttempts is how many second factors one mfa_token may try.
	maxAttempts = 5
)

// tokenRecord is the single-use record of an mfa_token.
type tokenRecord struct {
	User  string `json:"user"`
	Login string `json:"login"` // what the login throttle counts under
	// PasswordCounted: the password step reserved an attempt under Login
	// that it left for the second step to take back (Begin was given the
	// login). A record of an earlier version has none: only the second
	// step's own attempt is taken back then.
	PasswordCounted bool `json:"password_counted,omitempty"`
	// PasswordWindow is the end (Unix milliseconds) of the failure window
	// the password step's attempt was counted in: the second step's
	// success takes it back from that window only. A record without it
	// (an earlier version's, or rate limits off) has only the second
	// step's own attempt taken back.
	PasswordWindow int64     `json:"password_window,omitempty"`
	Client         string    `json:"client"`
	Scope          string    `json:"scope"`
	Tenant         string    `json:"tenant,omitempty"`
	AuthTime       time.Time `json:"auth_time"`
	// First is the login's first factor as amr (Begin's first).
	First              []string  `json:"first,omitempty"`
	EnrollmentRequired bool      `json:"enrollment_required"`
	Methods            []string  `json:"methods"`
	ExpiresAt          time.Time `json:"exp"`
}

// first is the record's first factor: a record written before the first
// factor was kept (by an instance of an earlier version, at most TokenTTL
// ago) stands for a password login, as every record was then read.
func (r tokenRecord) first() []string {
	if len(r.First) == 0 {
		return []string{AMRPassword}
	}
	return r.First
}

func (r tokenRecord) pending() Pending {
	return Pending{UserID: r.User, ClientID: r.Client, Scope: r.Scope, Tenant: r.Tenant, AuthTime: r.AuthTime,
		EnrollmentRequired: r.EnrollmentRequired, Methods: append([]string(nil), r.Methods...), ExpiresAt: r.ExpiresAt}
}

// tokenHash is the key of token in the single-use store, or false when
// token cannot be an mfa_token (wrong length or alphabet).
func tokenHash(token string) ([]byte, bool) {
	if len(token) != tokenLen {
		return nil, false
	}
	if _, err := base64.RawURLEncoding.DecodeString(token); err != nil {
		return nil, false
	}
	h := sha256.Sum256([]byte(token))
	return h[:], true
}

// attemptsKey is the counter of a token's attempts.
func attemptsKey(hash []byte) string { return "mfa_attempts:" + hex.EncodeToString(hash) }

// issueToken stores rec under a fresh token and returns the token.
func (s *Service) issueToken(ctx context.Context, rec tokenRecord) (string, error) {
	b := make([]byte, tokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("mfa_token: %w", err)
	}
	token := base64.RawURLEncoding.EncodeToString(b)
	hash, _ := tokenHash(token)
	value, err := json.Marshal(rec)
	if err != nil {
		return "", fmt.Errorf("mfa_token record: %w", err)
	}
	if err := s.d.Once.PutOnce(ctx, store.OnceMFAToken, hash, value, rec.ExpiresAt); err != nil {
		return "", unavailable("store mfa_token", err)
	}
	return token, nil
}

// peekToken reads the record of a live, untaken token bound to clientID
// (any client when clientID is ""); ErrInvalidToken otherwise.
func (s *Service) peekToken(ctx context.Context, token, clientID string) (tokenRecord, []byte, error) {
	hash, ok := tokenHash(token)
	if !ok {
		return tokenRecord{}, nil, fmt.Errorf("%w: malformed", ErrInvalidToken)
	}
	now := s.d.Now()
	value, err := s.d.Once.PeekOnce(ctx, store.OnceMFAToken, hash, now)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return tokenRecord{}, hash, fmt.Errorf("%w: unknown or expired", ErrInvalidToken)
	case errors.Is(err, store.ErrTokenUsed):
		return tokenRecord{}, hash, fmt.Errorf("%w: used", ErrInvalidToken)
	case err != nil:
		return tokenRecord{}, hash, unavailable("read mfa_token", err)
	}
	var rec tokenRecord
	if err := json.Unmarshal(value, &rec); err != nil {
		return tokenRecord{}, hash, fmt.Errorf("%w: unreadable record: %v", ErrInvalidToken, err)
	}
	if !now.Before(rec.ExpiresAt) {
		return rec, hash, fmt.Errorf("%w: expired", ErrInvalidToken)
	}
	if clientID != "" && clientID != rec.Client {
		return rec, hash, fmt.Errorf("%w: issued to another client", ErrInvalidToken)
	}
	return rec, hash, nil
}

// Peek returns the login an mfa_token stands for without using it up:
// ErrInvalidToken when it is unknown, expired, used, out of attempts, or
// clientID != "" and it was issued to another client.
func (s *Service) Peek(ctx context.Context, token, clientID string) (Pending, error) {
	rec, hash, err := s.peekToken(ctx, token, clientID)
	if err != nil {
		return Pending{}, err
	}
	n, _, err := s.d.Counter.Peek(ctx, attemptsKey(hash), s.d.Now())
	if err != nil {
		return Pending{}, unavailable("read mfa_token attempts", err)
	}
	if n >= maxAttempts {
		return Pending{}, fmt.Errorf("%w: out of attempts", ErrInvalidToken)
	}
	return rec.pending(), nil
}

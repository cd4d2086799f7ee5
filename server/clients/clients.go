// Package clients creates and manages OAuth clients: id rules, generated
// secrets (256 random bits, shown once, stored as SHA-256) and the grants,
// scopes and audiences a client may use. The CLI and the admin API share it.
//
// It never logs or stores a secret in the clear.
package clients

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// Store keeps clients.
type Store interface {
	CreateClient(ctx context.Context, c *store.Client) error
	GetClient(ctx context.Context, id string) (store.Client, error)
	ListClients(ctx context.Context) ([]store.Client, error)
	DeleteClient(ctx context.Context, id string) error
	SetClientSecretHash(ctx context.Context, id string, hash []byte) error
}

// Spec describes a client to create.
type Spec struct {
	ID        string
	Name      string
	Public    bool
	Grants    []string // nil: password, refresh_token
	Scopes    []string // nil: every permission; empty: none
	Audiences []string
	// Optional lifetimes; zero uses the server defaults.
	AccessTokenTTL time.Duration
	// MaxAccessTokenTTL caps AccessTokenTTL (PORTCULLIS_MAX_CLIENT_TOKEN_TTL;
	// zero: DefaultMaxAccessTokenTTL). Revocations are kept this long, so no
	// client may outlive it.
	MaxAccessTokenTTL time.Duration
}

// DefaultMaxAccessTokenTTL is the default cap on a client's access-token
// lifetime (PORTCULLIS_MAX_CLIENT_TOKEN_TTL).
const DefaultMaxAccessTokenTTL = 24 * time.Hour

// ValidationError explains why a Spec is refused.
type ValidationError struct{ Reason string }

func (e *ValidationError) Error() string { return e.Reason }

// DefaultGrants are the grants of a client created without --grants.
var DefaultGrants = []string{token.GrantPassword, token.GrantRefreshToken}

// ValidID reports whether id is 3–64 characters of a-z 0-9 . _ - and not
// shaped like a user id.
func ValidID(id string) bool {
	if len(id) < 3 || len(id) > 64 || strings.HasPrefix(id, "usr_") {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// Validate checks a spec and fills defaults.
func (s *Spec) Validate() error {
	if !ValidID(s.ID) {
		return &ValidationError{"client id must be 3-64 characters of a-z 0-9 . _ - (and not start with usr_)"}
	}
	s.Name = strings.TrimSpace(s.Name)
	if s.Name == "" {
		s.Name = s.ID
	}
	if len(s.Name) > 200 {
		return &ValidationError{"client name must be at most 200 characters"}
	}
	if s.Grants == nil {
		s.Grants = slices.Clone(DefaultGrants)
	}
	if len(s.Grants) == 0 {
		return &ValidationError{"a client needs at least one grant type"}
	}
	for _, g := range s.Grants {
		if !slices.Contains(token.SupportedGrants, g) {
			return &ValidationError{fmt.Sprintf("unsupported grant type %q (use password, refresh_token, client_credentials)", g)}
		}
		if g == token.GrantClientCredentials && s.Public {
			return &ValidationError{"a public client cannot use client_credentials"}
		}
	}
	slices.Sort(s.Grants)
	s.Grants = slices.Compact(s.Grants)
	if s.Scopes != nil {
		for _, sc := range s.Scopes {
			if sc == "" || strings.ContainsAny(sc, " \"\\*") || len(sc) > 200 {
				return &ValidationError{fmt.Sprintf("invalid scope %q (concrete permissions such as projects:read)", sc)}
			}
		}
	}
	for _, a := range s.Audiences {
		if a == "" || len(a) > 200 || strings.ContainsAny(a, " \"") {
			return &ValidationError{fmt.Sprintf("invalid audience %q", a)}
		}
	}
	ceiling := s.MaxAccessTokenTTL
	if ceiling <= 0 {
		ceiling = DefaultMaxAccessTokenTTL
	}
	if s.AccessTokenTTL < 0 || s.AccessTokenTTL > ceiling {
		return &ValidationError{fmt.Sprintf("access token lifetime must be between 0 and %d seconds (PORTCULLIS_MAX_CLIENT_TOKEN_TTL)",
			int64(ceiling.Seconds()))}
	}
	return nil
}

// NewSecret returns a client secret of 256 random bits.
func NewSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return "pcs_" + base64.RawURLEncoding.EncodeToString(b)
}

// Create stores a client; for a confidential client it returns the
// generated secret, which is never shown again.
func Create(ctx context.Context, st Store, spec Spec) (store.Client, string, error) {
	if err := spec.Validate(); err != nil {
		return store.Client{}, "", err
	}
	c := store.Client{ID: spec.ID, Name: spec.Name, Public: spec.Public, Grants: spec.Grants, Scopes: spec.Scopes,
		Audiences: spec.Audiences, AccessTokenTTL: spec.AccessTokenTTL}
	var secret string
	if !spec.Public {
		secret = NewSecret()
		c.SecretHash = token.HashSecret(secret)
	}
	if err := st.CreateClient(ctx, &c); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			return store.Client{}, "", fmt.Errorf("client %q already exists: %w", spec.ID, err)
		}
		return store.Client{}, "", fmt.Errorf("create client: %w", err)
	}
	return c, secret, nil
}

// RotateSecret replaces a confidential client's secret and returns the new one.
func RotateSecret(ctx context.Context, st Store, id string) (string, error) {
	c, err := st.GetClient(ctx, id)
	if err != nil {
		return "", fmt.Errorf("load client %q: %w", id, err)
	}
	if c.Public {
		return "", &ValidationError{"a public client has no secret"}
	}
	secret := NewSecret()
	if err := st.SetClientSecretHash(ctx, id, token.HashSecret(secret)); err != nil {
		return "", fmt.Errorf("store new secret: %w", err)
	}
	return secret, nil
}

// ClientView is a client as the API and CLI show it: never its secret hash.
type ClientView struct {
	ClientID       string    `json:"client_id"`
	Name           string    `json:"name"`
	Public         bool      `json:"public"`
	Grants         []string  `json:"grants"`
	Scopes         []string  `json:"scopes"` // null: every permission
	Audiences      []string  `json:"audiences"`
	AccessTokenTTL int64     `json:"access_token_ttl,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
}

// View returns the public view of c.
func View(c store.Client) ClientView {
	aud := c.Audiences
	if aud == nil {
		aud = []string{}
	}
	return ClientView{ClientID: c.ID, Name: c.Name, Public: c.Public, Grants: c.Grants, Scopes: c.Scopes,
		Audiences: aud, AccessTokenTTL: int64(c.AccessTokenTTL.Seconds()), CreatedAt: c.CreatedAt}
}

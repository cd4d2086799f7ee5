package token

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/store"
)

// AuthenticateClient checks the presented credentials: a confidential client
// must present its secret (client_secret_basic or client_secret_post), a
// public client presents only its id (none) and must not present a secret.
// Unknown clients and wrong secrets cost the same and answer the same.
func (s *Service) AuthenticateClient(ctx context.Context, cred ClientCredentials) (store.Client, error) {
	if !PlausibleClientID(cred.ID) {
		secretMatches(cred.Secret, nil)
		return store.Client{}, apierr.ErrInvalidClient
	}
	c, err := s.clients.GetClient(ctx, cred.ID)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			secretMatches(cred.Secret, nil)
			return store.Client{}, apierr.ErrInvalidClient
		}
		return store.Client{}, apierr.ErrTemporarilyUnavailable.WithCause(err)
	}
	if c.Public {
		if cred.Secret != "" {
			return store.Client{}, apierr.ErrInvalidClient.WithDescription("A public client must not present a secret.")
		}
		return c, nil
	}
	if cred.Secret == "" || !secretMatches(cred.Secret, c.SecretHash) {
		return store.Client{}, apierr.ErrInvalidClient
	}
	return c, nil
}

// LookupClient returns the client an id names, without authenticating it:
// only for choosing how to answer (the refresh-token cookie's defences),
// never for granting anything. An implausible or unknown id is
// store.ErrNotFound.
func (s *Service) LookupClient(ctx context.Context, id string) (store.Client, error) {
	if !PlausibleClientID(id) {
		return store.Client{}, store.ErrNotFound
	}
	c, err := s.clients.GetClient(ctx, id)
	if err != nil {
		return store.Client{}, fmt.Errorf("load client: %w", err)
	}
	return c, nil
}

// IssuedTo reports whether what was issued at issuedAt to the client named
// clientID (a refresh token's session, a code, an access token; an
// authorization request made at issuedAt, authorize.CheckRedirect) belongs
// to client: the same id, and issued since this client was created. A client
// deleted and created again under its id (an operator cutting off stolen
// tokens, then restoring the app; an organisation's admin taking a
// deleted platform client's id) inherits none of what the deleted one
// was given: its sessions would otherwise refresh again, under the new
// client's settings. Compared to the millisecond, the grain of the token
// state's times; an instance whose clock runs behind the one that created
// the client refuses, for that difference, what it issues right after.
func IssuedTo(client store.Client, clientID string, issuedAt time.Time) bool {
	return clientID == client.ID && !issuedAt.Before(client.CreatedAt.Truncate(time.Millisecond))
}

// latestIn is the last instant of the whole second an access token's iat
// names: what IssuedTo compares for a token whose time has no finer grain,
// so that a token issued in its client's first second is not refused.
func latestIn(iat int64) time.Time { return time.Unix(iat+1, 0).Add(-time.Nanosecond) }

// RequireConfidential answers invalid_client for public clients (introspection).
func RequireConfidential(c store.Client) error {
	if c.Public {
		return apierr.ErrInvalidClient.WithDescription("This endpoint requires a confidential client.")
	}
	return nil
}

func clientAllowsGrant(c store.Client, grant string) bool {
	return slices.Contains(c.Grants, grant)
}

func (s *Service) audiences(c store.Client) []string {
	if len(c.Audiences) > 0 {
		return c.Audiences
	}
	return []string{s.cfg.DefaultAudience}
}

func (s *Service) accessTTL(c store.Client) int64 {
	if c.AccessTokenTTL > 0 {
		ttl := c.AccessTokenTTL
		if s.cfg.MaxClientTokenTTL > 0 {
			ttl = min(ttl, s.cfg.MaxClientTokenTTL)
		}
		return int64(ttl.Seconds())
	}
	return int64(s.cfg.AccessTokenTTL.Seconds())
}

// MaxClientIDBytes is the longest client id (PlausibleClientID).
const MaxClientIDBytes = 64

// PlausibleClientID reports whether id has the shape every client id has
// (3–64 characters of a-z 0-9 . _ -); anything else cannot name a client.
func PlausibleClientID(id string) bool {
	if len(id) < 3 || len(id) > MaxClientIDBytes {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// MaxStateBytes is the longest state this server keeps and echoes (the
// authorization request's, an RP-initiated logout's).
const MaxStateBytes = 4 << 10

// ValidState reports whether state is one this server keeps and echoes:
// 1 to MaxStateBytes characters of VSCHAR (%x20-7E), the syntax RFC 6749
// Appendix A.5 gives it. Anything else (control characters, non-ASCII, an
// oversize value) is refused where it arrives, before it is stored.
func ValidState(state string) bool {
	if state == "" || len(state) > MaxStateBytes {
		return false
	}
	for i := 0; i < len(state); i++ {
		if state[i] < 0x20 || state[i] > 0x7e {
			return false
		}
	}
	return true
}

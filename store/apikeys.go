package store

import (
	"context"
	"errors"
	"time"
)

// APIKey is a long-lived credential of a user (a person or a machine
// user). The key itself is never stored: only its SHA-256 (Hash) and a
// display hint.
type APIKey struct {
	ID      string // "apk_…"
	OwnerID string // the user the key acts as
	Name    string
	Hint    string // the first 8 and last 4 characters of the key
	Hash    []byte // SHA-256 of the whole key; unique
	// Scopes are the permissions the key was given (a subset of the
	// owner's at creation); at each use only those the owner still holds
	// count.
	Scopes     []string
	ExpiresAt  time.Time
	CreatedAt  time.Time
	CreatedBy  string // the user who created it (the owner, or an admin)
	LastUsedAt *time.Time
	RevokedAt  *time.Time
	RevokedBy  string // "" while not revoked, and for a revocation by value
}

// MaxLiveAPIKeys is the most live keys (not revoked, not expired) one user
// may hold: CreateAPIKey refuses another with ErrTooManyAPIKeys.
const MaxLiveAPIKeys = 100

// APIKeyKeptFor is how long an API key is kept once it can never be used
// again: the periodic purge deletes a revoked key this long after its
// revocation, and a key never revoked this long after its expiry. Until
// then the key stays listed (its owner and the admins see what it was and
// when it ended) and a revoked key presented is audited as revoked; after,
// it is an unknown key, refused all the same. Without the purge, creating
// and revoking keys in a loop would grow the table without end.
const APIKeyKeptFor = 30 * 24 * time.Hour

// ErrTooManyAPIKeys means the owner holds MaxLiveAPIKeys live keys already.
var ErrTooManyAPIKeys = errors.New("store: the owner holds the most live API keys allowed")

// Revoked reports whether the key has been revoked.
func (k APIKey) Revoked() bool { return k.RevokedAt != nil }

// APIKeys stores API keys. Every method is atomic across any number of
// server instances sharing the database. Keys are removed with their owner.
type APIKeys interface {
	// CreateAPIKey stores k (ID and CreatedAt are set by the store and
	// written back). ErrAlreadyExists when its hash is stored already;
	// ErrNotFound when the owner does not exist; ErrTooManyAPIKeys when
	// the owner holds MaxLiveAPIKeys keys that are neither revoked nor
	// expired at CreatedAt, counted in the transaction of the insert under
	// a lock on the owner, so concurrent creations never pass the cap.
	CreateAPIKey(ctx context.Context, k *APIKey) error
	// FindLiveAPIKey returns the key whose hash is hash unless it is
	// revoked (expired ones included), with its owner (roles sorted, no
	// password hash), read together in one statement: every use of a key
	// needs both. ErrNotFound for an unknown and a revoked key alike, which
	// cost the same: one miss in the same index.
	FindLiveAPIKey(ctx context.Context, hash []byte) (APIKey, User, error)
	// GetAPIKeyByHash returns the key whose hash is hash (revoked and
	// expired ones included), or ErrNotFound.
	GetAPIKeyByHash(ctx context.Context, hash []byte) (APIKey, error)
	// ListAPIKeys returns one page of the owner's keys (revoked and expired
	// ones included), newest first. Limit defaults to 50 and is capped at
	// 200.
	ListAPIKeys(ctx context.Context, ownerID, cursor string, limit int) (Page[APIKey], error)
	// RevokeAPIKey revokes the owner's key id at at, by by ("" for a
	// revocation by value), and returns the key. changed is false when it
	// was revoked already (of concurrent revocations exactly one changes
	// it); ErrNotFound when the owner has no key with that id.
	RevokeAPIKey(ctx context.Context, ownerID, id, by string, at time.Time) (k APIKey, changed bool, err error)
	// TouchAPIKey sets the key's last use to at unless a later one is
	// recorded; an unknown id is not an error.
	TouchAPIKey(ctx context.Context, id string, at time.Time) error
	// ClaimExpiringAPIKeys claims, for announcing, at most limit keys that
	// are not revoked, not expired at now, expire at or before before, and
	// were never claimed so; it returns them with the address to tell.
	// Each key is claimed once: of concurrent claims on any number of
	// instances, exactly one gets it. A key whose owner and creator have
	// no email is claimed with an empty address. A claim that fails (its
	// context ended, the database gone) keeps none of its keys claimed.
	ClaimExpiringAPIKeys(ctx context.Context, now, before time.Time, limit int) ([]ExpiringAPIKey, error)
	// ReleaseExpiringAPIKey undoes the claim of id (its notice could not be
	// sent), so that a later claim gets it again.
	ReleaseExpiringAPIKey(ctx context.Context, id string) error
}

// ExpiringAPIKey is a key claimed by ClaimExpiringAPIKeys and where to tell
// of its coming expiry: the owner's email, or for an owner without one (a
// machine user) the email of the person who created the key.
type ExpiringAPIKey struct {
	Key APIKey
	// OwnerName is the owner's display name; ToOwner says Notify is the
	// owner's own address (else the creator's).
	OwnerName string
	ToOwner   bool
	Notify    string
}

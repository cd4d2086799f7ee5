package sqlstore

import (
	"context"
	"errors"
	"fmt"

	"gorm.io/gorm"

	"github.com/portcullis-auth/portcullis/store"
)

// ErrInvalidKey means a signing key has no kid or an unknown state.
var ErrInvalidKey = errors.New("sqlstore: invalid signing key")

func validateKey(k store.SigningKey) error {
	if k.KID == "" {
		return fmt.Errorf("%w: kid is required", ErrInvalidKey)
	}
	switch k.State {
	case store.KeyNext, store.KeyActive, store.KeyRetired, store.KeyRevoked:
		return nil
	}
	return fmt.Errorf("%w: state %q", ErrInvalidKey, k.State)
}

// ListSigningKeys returns every signing key in every state, oldest first.
func (s *Store) ListSigningKeys(ctx context.Context) ([]store.SigningKey, error) {
	var rows []signingKeyRow
	if err := s.db.WithContext(ctx).Order("created_at ASC, kid ASC").Find(&rows).Error; err != nil {
		return nil, mapErr("list signing keys", err)
	}
	out := make([]store.SigningKey, len(rows))
	for i, r := range rows {
		out[i] = r.toKey()
	}
	return out, nil
}

// CreateSigningKey inserts k with Version 1 (k.Version is ignored). A taken
// kid, or a second key in state active or next, is store.ErrConflict.
func (s *Store) CreateSigningKey(ctx context.Context, k store.SigningKey) error {
	return s.ApplySigningKeyChanges(ctx, nil, []store.SigningKey{k})
}

// ApplySigningKeyChanges applies a rotation in one transaction. Each update,
// in the given order, rewrites the key whose kid is k.KID and whose version
// is still k.Version, setting version k.Version+1 (created_at is kept); each
// create inserts a key with version 1. If an update finds its key changed or
// gone, or a write would leave two active or two next keys or reuse a kid,
// nothing is applied and the error is store.ErrConflict: of several
// instances rotating from the same state, exactly one wins.
func (s *Store) ApplySigningKeyChanges(ctx context.Context, updates []store.SigningKey, creates []store.SigningKey) error {
	for _, k := range append(append([]store.SigningKey{}, updates...), creates...) {
		if err := validateKey(k); err != nil {
			return fmt.Errorf("apply signing key changes: %w", err)
		}
	}
	err := s.tx(ctx, func(tx *gorm.DB) error {
		for _, k := range updates {
			r := keyToRow(k)
			res := tx.Model(&signingKeyRow{}).
				Where("kid = ? AND version = ?", k.KID, k.Version).
				Updates(map[string]any{
					"alg":               r.Alg,
					"state":             r.State,
					"public_jwk":        r.PublicJWK,
					"private_encrypted": r.PrivateEncrypted,
					"activated_at":      r.ActivatedAt,
					"retired_at":        r.RetiredAt,
					"revoked_at":        r.RevokedAt,
					"published_until":   r.PublishedUntil,
					"version":           k.Version + 1,
				})
			if res.Error != nil {
				return keyErr("update key "+k.KID, res.Error)
			}
			if res.RowsAffected == 0 {
				return fmt.Errorf("update key %s: changed since read: %w", k.KID, store.ErrConflict)
			}
		}
		for _, k := range creates {
			r := keyToRow(k)
			r.Version = 1
			if r.CreatedAt.IsZero() {
				r.CreatedAt = s.clock()
			}
			if err := tx.Create(&r).Error; err != nil {
				return keyErr("create key "+k.KID, err)
			}
		}
		return nil
	})
	if err != nil {
		return mapErr("apply signing key changes", err)
	}
	return nil
}

// keyErr maps a unique violation (kid taken, second active or next key) to
// store.ErrConflict.
func keyErr(what string, err error) error {
	if IsUniqueViolation(err) {
		return fmt.Errorf("%s: %w", what, store.ErrConflict)
	}
	return mapErr(what, err)
}

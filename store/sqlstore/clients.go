package sqlstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/portcullis-auth/portcullis/store"
)

// ErrInvalidClient means a client record has no id.
var ErrInvalidClient = errors.New("sqlstore: invalid client")

// CreateClient inserts the client and fills CreatedAt and UpdatedAt. A taken
// id is store.ErrAlreadyExists. Nil Scopes (every permission) and empty
// Scopes (none) are kept apart. Durations are kept to the millisecond.
func (s *Store) CreateClient(ctx context.Context, c *store.Client) error {
	if c == nil || c.ID == "" {
		return fmt.Errorf("create client: %w: id is required", ErrInvalidClient)
	}
	now := s.clock()
	nc := *c
	nc.CreatedAt, nc.UpdatedAt = now, now
	row := clientToRow(&nc)
	if err := s.db.WithContext(ctx).Create(&row).Error; err != nil {
		return mapErr("create client", err)
	}
	out, err := row.toClient()
	if err != nil {
		return fmt.Errorf("create client: %w", err)
	}
	*c = out
	return nil
}

// GetClient returns the client with its secret hash (for authentication).
func (s *Store) GetClient(ctx context.Context, id string) (store.Client, error) {
	var row clientRow
	if err := s.db.WithContext(ctx).Where("id = ?", id).Take(&row).Error; err != nil {
		return store.Client{}, mapErr("get client", err)
	}
	c, err := row.toClient()
	if err != nil {
		return store.Client{}, fmt.Errorf("get client: %w", err)
	}
	return c, nil
}

// ListClients returns every client ordered by id. SecretHash is left empty
// in the list (use GetClient to authenticate).
func (s *Store) ListClients(ctx context.Context) ([]store.Client, error) {
	var rows []clientRow
	if err := s.db.WithContext(ctx).Order("id ASC").Find(&rows).Error; err != nil {
		return nil, mapErr("list clients", err)
	}
	out := make([]store.Client, 0, len(rows))
	for _, r := range rows {
		c, err := r.toClient()
		if err != nil {
			return nil, fmt.Errorf("list clients: %w", err)
		}
		c.SecretHash = nil
		out = append(out, c)
	}
	return out, nil
}

// DeleteClient removes the client; an unknown id is store.ErrNotFound.
func (s *Store) DeleteClient(ctx context.Context, id string) error {
	res := s.db.WithContext(ctx).Where("id = ?", id).Delete(&clientRow{})
	if res.Error != nil {
		return mapErr("delete client", res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("delete client: %w", store.ErrNotFound)
	}
	return nil
}

// SetClientSecretHash replaces the client's secret hash (rotate-secret); an
// unknown id is store.ErrNotFound.
func (s *Store) SetClientSecretHash(ctx context.Context, id string, hash []byte) error {
	res := s.db.WithContext(ctx).Model(&clientRow{}).Where("id = ?", id).
		Updates(map[string]any{"secret_hash": hash, "updated_at": s.clock()})
	if res.Error != nil {
		return mapErr("set client secret", res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("set client secret: %w", store.ErrNotFound)
	}
	return nil
}

// SetClientAudiences replaces the client's audiences; an unknown id is
// store.ErrNotFound.
func (s *Store) SetClientAudiences(ctx context.Context, id string, audiences []string) error {
	res := s.db.WithContext(ctx).Model(&clientRow{}).Where("id = ?", id).
		Updates(map[string]any{"audiences": encodeList(audiences), "updated_at": s.clock()})
	if res.Error != nil {
		return mapErr("set client audiences", res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("set client audiences: %w", store.ErrNotFound)
	}
	return nil
}

// SetClientFirstParty marks the client first-party (it never shows consent)
// or third-party; an unknown id is store.ErrNotFound.
func (s *Store) SetClientFirstParty(ctx context.Context, id string, firstParty bool) error {
	res := s.db.WithContext(ctx).Model(&clientRow{}).Where("id = ?", id).
		Updates(map[string]any{"first_party": firstParty, "updated_at": s.clock()})
	if res.Error != nil {
		return mapErr("set client first-party", res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("set client first-party: %w", store.ErrNotFound)
	}
	return nil
}

// SetClientGrants replaces the client's grant types; an unknown id is
// store.ErrNotFound.
func (s *Store) SetClientGrants(ctx context.Context, id string, grants []string) error {
	res := s.db.WithContext(ctx).Model(&clientRow{}).Where("id = ?", id).
		Updates(map[string]any{"grants": encodeList(grants), "updated_at": s.clock()})
	if res.Error != nil {
		return mapErr("set client grants", res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("set client grants: %w", store.ErrNotFound)
	}
	return nil
}

// SetClientRedirectURIs replaces the client's redirect URIs (exact strings);
// an unknown id is store.ErrNotFound.
func (s *Store) SetClientRedirectURIs(ctx context.Context, id string, uris []string) error {
	res := s.db.WithContext(ctx).Model(&clientRow{}).Where("id = ?", id).
		Updates(map[string]any{"redirect_uris": encodeList(uris), "updated_at": s.clock()})
	if res.Error != nil {
		return mapErr("set client redirect URIs", res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("set client redirect URIs: %w", store.ErrNotFound)
	}
	return nil
}

package sqlstore

import (
	"context"
	"errors"
	"fmt"

	"gorm.io/gorm"

	"github.com/portcullis-auth/portcullis/store"
)

// ErrInvalidClient means a client record has no id.
var ErrInvalidClient = errors.New("sqlstore: invalid client")

// clientsLockKey is the pg_advisory_xact_lock key every client creation
// and deletion takes ("clients" in ASCII, as an int64), so that a
// creation's check over the stored clients and retired names and its
// insert see no other creation or deletion in between.
const clientsLockKey int64 = 0x636c69656e7473

// CreateClient inserts the client and fills CreatedAt and UpdatedAt. A taken
// id is store.ErrAlreadyExists. Nil Scopes (every permission) and empty
// Scopes (none) are kept apart. Durations are kept to the millisecond.
//
// check (nil: none) runs first in the same transaction over every stored
// client (id and audiences only) and every name a deleted client left
// retired that has not yet expired (DeleteClient), under a lock every
// creation and deletion takes (on PostgreSQL an advisory transaction lock,
// clientsLockKey, whose holder reads, at READ COMMITTED, every creation
// and deletion committed before it; SQLite serialises writing
// transactions, which begin IMMEDIATE); an error from it is returned as it
// is and nothing is stored. Two creations that would clash
// (clients.Clashes), or a creation and a deletion whose retired names it
// would clash with, therefore never both pass.
func (s *Store) CreateClient(ctx context.Context, c *store.Client,
	check func(existing []store.Client, retired []store.RetiredClientName) error) error {
	if c == nil || c.ID == "" {
		return fmt.Errorf("create client: %w: id is required", ErrInvalidClient)
	}
	var out store.Client
	var checkErr error
	err := s.tx(ctx, func(tx *gorm.DB) error {
		checkErr = nil
		if check != nil {
			if err := s.lockClients(tx); err != nil {
				return err
			}
			existing, err := s.clientAudiences(tx)
			if err != nil {
				return err
			}
			retired, err := s.retiredClientNames(tx)
			if err != nil {
				return err
			}
			if checkErr = check(existing, retired); checkErr != nil {
				return checkErr
			}
		}
		now := s.clock()
		nc := *c
		nc.CreatedAt, nc.UpdatedAt = now, now
		row := clientToRow(&nc)
		if err := tx.Create(&row).Error; err != nil {
			return err
		}
		var err error
		out, err = row.toClient()
		return err
	})
	switch {
	case checkErr != nil:
		return checkErr
	case err != nil:
		return mapErr("create client", err)
	}
	*c = out
	return nil
}

// lockClients takes the lock of client creation and deletion
// (clientsLockKey) on PostgreSQL; SQLite's writing transaction is the lock.
func (s *Store) lockClients(tx *gorm.DB) error {
	if s.dialect != DialectPostgres {
		return nil
	}
	if err := tx.Exec("SELECT pg_advisory_xact_lock(?)", clientsLockKey).Error; err != nil {
		return fmt.Errorf("lock the clients: %w", err)
	}
	return nil
}

// clientAudiences returns every stored client with only its id and
// audiences.
func (s *Store) clientAudiences(tx *gorm.DB) ([]store.Client, error) {
	var rows []struct {
		ID        string
		Audiences *string
	}
	if err := tx.Model(&clientRow{}).Select("id", "audiences").Order("id ASC").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("read the clients' audiences: %w", err)
	}
	out := make([]store.Client, 0, len(rows))
	for _, r := range rows {
		aud, err := decodeList(r.Audiences)
		if err != nil {
			return nil, fmt.Errorf("read the audiences of client %s: %w", r.ID, err)
		}
		out = append(out, store.Client{ID: r.ID, Audiences: aud})
	}
	return out, nil
}

// retiredClientNames returns the names deleted clients left retired that
// have not expired at the store's clock, ordered by name.
func (s *Store) retiredClientNames(tx *gorm.DB) ([]store.RetiredClientName, error) {
	var rows []retiredClientNameRow
	if err := tx.Where("retired_until > ?", dbTime(s.clock())).Order("name ASC, retired_until DESC").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("read the retired client names: %w", err)
	}
	out := make([]store.RetiredClientName, 0, len(rows))
	for _, r := range rows {
		out = append(out, store.RetiredClientName{Name: r.Name, Kind: r.Kind, ClientID: r.ClientID, Until: r.RetiredUntil.UTC()})
	}
	return out, nil
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

// DeleteClient removes the client; an unknown id is store.ErrNotFound. In
// the same transaction, under the lock of client creation (clientsLockKey),
// it retires what the client leaves live in tokens for the revocation
// horizon (WithClientRetirement) from now: its id (its id tokens) and each
// audience it lists (its access tokens; one listing none used the default
// audience, which no client id may be anyway). CreateClient's check reads
// them until then; Purge deletes them after.
func (s *Store) DeleteClient(ctx context.Context, id string) error {
	err := s.tx(ctx, func(tx *gorm.DB) error {
		if err := s.lockClients(tx); err != nil {
			return err
		}
		var row clientRow
		if err := tx.Select("id", "audiences").Where("id = ?", id).Take(&row).Error; err != nil {
			return err
		}
		aud, err := decodeList(row.Audiences)
		if err != nil {
			return fmt.Errorf("read the audiences of client %s: %w", id, err)
		}
		res := tx.Where("id = ?", id).Delete(&clientRow{})
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return gorm.ErrRecordNotFound
		}
		now := s.clock()
		until := dbTime(now.Add(s.retireFor))
		retired := []retiredClientNameRow{{ID: newID(retiredNameIDPrefix), Name: id, Kind: store.RetiredClientID,
			ClientID: id, RetiredUntil: until, CreatedAt: dbTime(now)}}
		for _, a := range aud {
			retired = append(retired, retiredClientNameRow{ID: newID(retiredNameIDPrefix), Name: a, Kind: store.RetiredAudience,
				ClientID: id, RetiredUntil: until, CreatedAt: dbTime(now)})
		}
		if err := tx.Create(&retired).Error; err != nil {
			return fmt.Errorf("retire the names of client %s: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return mapErr("delete client", err)
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

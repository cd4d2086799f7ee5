package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/portcullis-auth/portcullis/store"
)

var _ store.APIKeys = (*Store)(nil)

// APIKeyIDPrefix starts every API key id: newID makes it apikey.KeyIDPrefix
// and 26 lowercase base32 characters, the shape apikey.KeyIDOfSession knows
// the sid of a key's exchanged tokens by.
const APIKeyIDPrefix = "apk_"

// ErrInvalidAPIKey means an API key record lacks what the store relies on
// (its owner, name, hash, hint or expiry).
var ErrInvalidAPIKey = errors.New("sqlstore: invalid API key")

// apiKeyRow is a row of api_keys (migration 12).
type apiKeyRow struct {
	ID          string     `gorm:"column:id;primaryKey"`
	OwnerUserID string     `gorm:"column:owner_user_id"`
	Name        string     `gorm:"column:name"`
	Hint        string     `gorm:"column:hint"`
	Hash        []byte     `gorm:"column:hash"`
	LiveHash    []byte     `gorm:"column:live_hash"`
	Scopes      string     `gorm:"column:scopes"`
	ExpiresAt   time.Time  `gorm:"column:expires_at"`
	CreatedAt   time.Time  `gorm:"column:created_at;autoCreateTime:false"`
	CreatedBy   string     `gorm:"column:created_by"`
	LastUsedAt  *time.Time `gorm:"column:last_used_at"`
	RevokedAt   *time.Time `gorm:"column:revoked_at"`
	RevokedBy   string     `gorm:"column:revoked_by"`
}

func (apiKeyRow) TableName() string { return "api_keys" }

// apiKeyColumns are the columns scanAPIKey reads, in its order.
const apiKeyColumns = `id, owner_user_id, name, hint, hash, scopes, expires_at, created_at, created_by,
	last_used_at, revoked_at, revoked_by`

// scanAPIKey reads the key q (a Raw SELECT of apiKeyColumns) finds through
// scanOne, so a failing statement reaches the database metrics; none is
// store.ErrNotFound.
func scanAPIKey(q *gorm.DB) (apiKeyRow, error) {
	var row apiKeyRow
	found, err := scanOne(q, apiKeyRowFields(&row)...)
	if err == nil && !found {
		err = store.ErrNotFound
	}
	return row, err
}

// apiKeyRowFields are the scan destinations of apiKeyColumns, in order.
func apiKeyRowFields(row *apiKeyRow) []any {
	return []any{&row.ID, &row.OwnerUserID, &row.Name, &row.Hint, &row.Hash, &row.Scopes, &row.ExpiresAt,
		&row.CreatedAt, &row.CreatedBy, &row.LastUsedAt, &row.RevokedAt, &row.RevokedBy}
}

func (r apiKeyRow) apiKey() (store.APIKey, error) {
	k := store.APIKey{ID: r.ID, OwnerID: r.OwnerUserID, Name: r.Name, Hint: r.Hint, Hash: r.Hash,
		ExpiresAt: readTime(r.ExpiresAt), CreatedAt: readTime(r.CreatedAt), CreatedBy: r.CreatedBy,
		LastUsedAt: readTimePtr(r.LastUsedAt), RevokedAt: readTimePtr(r.RevokedAt), RevokedBy: r.RevokedBy}
	scopes, err := decodeList(&r.Scopes)
	if err != nil {
		return k, fmt.Errorf("API key %s scopes: %w", r.ID, err)
	}
	k.Scopes = scopes
	return k, nil
}

func validAPIKey(k *store.APIKey) error {
	switch {
	case k == nil:
		return fmt.Errorf("%w: nil key", ErrInvalidAPIKey)
	case k.OwnerID == "" || k.Name == "" || k.Hint == "" || len(k.Hash) == 0 || k.ExpiresAt.IsZero():
		return fmt.Errorf("%w: a key needs its owner, name, hint, hash and expiry", ErrInvalidAPIKey)
	case !storableText(k.Name) || !storableText(k.Hint) || !storableText(k.CreatedBy):
		return fmt.Errorf("%w: name, hint and creator must be valid UTF-8 without NUL", ErrInvalidAPIKey)
	}
	for _, s := range k.Scopes {
		if !storableText(s) {
			return fmt.Errorf("%w: scopes must be valid UTF-8 without NUL", ErrInvalidAPIKey)
		}
	}
	return nil
}

// CreateAPIKey implements store.APIKeys: one transaction that locks the
// owner's row (lockUser: concurrent creations for one owner queue there),
// counts the owner's live keys against store.MaxLiveAPIKeys and inserts;
// the unique hash decides a duplicate.
func (s *Store) CreateAPIKey(ctx context.Context, k *store.APIKey) error {
	if err := validAPIKey(k); err != nil {
		return fmt.Errorf("create API key: %w", err)
	}
	scopes := k.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	nk := *k
	nk.ID = newID(APIKeyIDPrefix)
	nk.CreatedAt = s.clock()
	nk.ExpiresAt = dbTime(k.ExpiresAt)
	nk.Scopes = scopes
	nk.LastUsedAt, nk.RevokedAt, nk.RevokedBy = nil, nil, ""
	row := apiKeyRow{ID: nk.ID, OwnerUserID: nk.OwnerID, Name: nk.Name, Hint: nk.Hint, Hash: nk.Hash, LiveHash: nk.Hash,
		Scopes: *encodeList(scopes), ExpiresAt: nk.ExpiresAt, CreatedAt: nk.CreatedAt, CreatedBy: nk.CreatedBy}
	if !storableText(nk.OwnerID) {
		return fmt.Errorf("create API key: unknown owner: %w", store.ErrNotFound)
	}
	err := s.tx(ctx, func(tx *gorm.DB) error {
		if _, err := lockUser(tx, nk.OwnerID); err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				return fmt.Errorf("unknown owner %q: %w", k.OwnerID, store.ErrNotFound)
			}
			return mapErr("lock the owner", err)
		}
		var live int64
		if err := tx.Model(&apiKeyRow{}).Where("owner_user_id = ? AND revoked_at IS NULL AND expires_at > ?", nk.OwnerID, nk.CreatedAt).
			Count(&live).Error; err != nil {
			return mapErr("count the owner's live API keys", err)
		}
		if live >= store.MaxLiveAPIKeys {
			return store.ErrTooManyAPIKeys
		}
		return tx.Create(&row).Error
	})
	switch {
	case errors.Is(err, store.ErrTooManyAPIKeys), errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("create API key: %w", err)
	case IsForeignKeyViolation(err):
		return fmt.Errorf("create API key: unknown owner %q: %w", k.OwnerID, store.ErrNotFound)
	case err != nil:
		return mapErr("create API key", err)
	}
	*k = nk
	return nil
}

// FindLiveAPIKey implements store.APIKeys. It is on the path of every use
// of a key, so the statement is written out and scanned by hand; it
// searches live_hash, which revocation clears.
func (s *Store) FindLiveAPIKey(ctx context.Context, hash []byte) (store.APIKey, store.User, error) {
	const what = "find live API key"
	rows, err := s.db.WithContext(ctx).Raw(`SELECT `+qualified("k.", apiKeyColumns)+`, `+userWithRolesColumns+`
		FROM api_keys k JOIN users u ON u.id = k.owner_user_id LEFT JOIN user_roles r ON r.user_id = u.id
		WHERE k.live_hash = ? ORDER BY r.role`, hash).Rows()
	if err != nil {
		return store.APIKey{}, store.User{}, mapErr(what, err)
	}
	var row apiKeyRow
	owner, err := scanUserWithRoles(rows, what, apiKeyRowFields(&row)...)
	if err != nil {
		return store.APIKey{}, store.User{}, err
	}
	k, err := row.apiKey()
	if err != nil {
		return store.APIKey{}, store.User{}, err
	}
	owner.PasswordHash = ""
	return k, owner, nil
}

// qualified prefixes every column of the comma-separated list cols.
func qualified(prefix, cols string) string {
	parts := strings.Split(cols, ",")
	for i, c := range parts {
		parts[i] = prefix + strings.TrimSpace(c)
	}
	return strings.Join(parts, ", ")
}

// GetAPIKeyByHash implements store.APIKeys.
func (s *Store) GetAPIKeyByHash(ctx context.Context, hash []byte) (store.APIKey, error) {
	return s.apiKeyWhere(ctx, "get API key", "hash = ?", hash)
}

func (s *Store) apiKeyWhere(ctx context.Context, what, where string, args ...any) (store.APIKey, error) {
	row, err := scanAPIKey(s.db.WithContext(ctx).Raw(`SELECT `+apiKeyColumns+` FROM api_keys WHERE `+where, args...))
	if err != nil {
		return store.APIKey{}, mapErr(what, err)
	}
	return row.apiKey()
}

// ListAPIKeys implements store.APIKeys.
func (s *Store) ListAPIKeys(ctx context.Context, ownerID, cursor string, limit int) (store.Page[store.APIKey], error) {
	var page store.Page[store.APIKey]
	cur, hasCur, err := decodeCursor(cursor)
	if err != nil {
		return page, fmt.Errorf("list API keys: %w", err)
	}
	limit = pageLimit(limit)
	q := s.db.WithContext(ctx).Model(&apiKeyRow{}).Where("owner_user_id = ?", ownerID)
	if hasCur {
		q = q.Where("(created_at < ? OR (created_at = ? AND id < ?))", cur.T, cur.T, cur.I)
	}
	var rows []apiKeyRow
	if err := q.Order("created_at DESC, id DESC").Limit(limit + 1).Find(&rows).Error; err != nil {
		return page, mapErr("list API keys", err)
	}
	if len(rows) > limit {
		rows = rows[:limit]
		last := rows[len(rows)-1]
		page.NextCursor = EncodeCursor(last.CreatedAt, last.ID)
	}
	page.Items = make([]store.APIKey, 0, len(rows))
	for _, r := range rows {
		k, err := r.apiKey()
		if err != nil {
			return page, fmt.Errorf("list API keys: %w", err)
		}
		page.Items = append(page.Items, k)
	}
	return page, nil
}

// RevokeAPIKey implements store.APIKeys: a conditional UPDATE (revoked_at
// still NULL) decides which of concurrent revocations changes the key; it
// clears live_hash, so FindLiveAPIKey no longer finds the key.
func (s *Store) RevokeAPIKey(ctx context.Context, ownerID, id, by string, at time.Time) (store.APIKey, bool, error) {
	var (
		out     store.APIKey
		changed bool
	)
	if !storableText(ownerID) || !storableText(id) || !storableText(by) {
		return out, false, fmt.Errorf("revoke API key: %w", store.ErrNotFound)
	}
	err := s.tx(ctx, func(tx *gorm.DB) error {
		res := tx.Model(&apiKeyRow{}).Where("id = ? AND owner_user_id = ? AND revoked_at IS NULL", id, ownerID).
			Updates(map[string]any{"revoked_at": dbTime(at), "revoked_by": by, "live_hash": nil})
		if res.Error != nil {
			return mapErr("revoke API key", res.Error)
		}
		changed = res.RowsAffected == 1
		row, err := scanAPIKey(tx.Raw(`SELECT `+apiKeyColumns+` FROM api_keys WHERE id = ? AND owner_user_id = ?`, id, ownerID))
		if err != nil {
			return mapErr("read revoked API key", err)
		}
		out, err = row.apiKey()
		return err
	})
	if err != nil {
		return store.APIKey{}, false, mapErr("revoke API key", err)
	}
	return out, changed, nil
}

// TouchAPIKey implements store.APIKeys.
func (s *Store) TouchAPIKey(ctx context.Context, id string, at time.Time) error {
	at = dbTime(at)
	err := s.db.WithContext(ctx).Model(&apiKeyRow{}).
		Where("id = ? AND (last_used_at IS NULL OR last_used_at < ?)", id, at).
		Update("last_used_at", at).Error
	if err != nil {
		return mapErr("record API key use", err)
	}
	return nil
}

// ClaimExpiringAPIKeys implements store.APIKeys. In one transaction the
// candidates are read, each is claimed by its own conditional UPDATE
// (expiry_notified_at still NULL), which decides between concurrent
// claimers, and the claimed keys are read back with the owner's email, or
// the creator's when the owner has none. A claim that fails anywhere (its
// context ended by a shutdown, the database gone) keeps nothing: a key
// marked claimed but never returned would never be announced nor
// released. The candidates are claimed in the order they are read (by
// expiry, then id), so concurrent claimers lock them in one order.
func (s *Store) ClaimExpiringAPIKeys(ctx context.Context, now, before time.Time, limit int) ([]store.ExpiringAPIKey, error) {
	if limit <= 0 {
		return nil, nil
	}
	now, before = dbTime(now), dbTime(before)
	var out []store.ExpiringAPIKey
	err := s.tx(ctx, func(tx *gorm.DB) error {
		out = nil
		var ids []string
		err := tx.Raw(`SELECT id FROM api_keys WHERE revoked_at IS NULL AND expiry_notified_at IS NULL
			AND expires_at > ? AND expires_at <= ? ORDER BY expires_at, id LIMIT ?`, now, before, limit).Scan(&ids).Error
		if err != nil {
			return mapErr("find API keys about to expire", err)
		}
		var claimed []string
		for _, id := range ids {
			res := tx.Exec(`UPDATE api_keys SET expiry_notified_at = ? WHERE id = ? AND expiry_notified_at IS NULL
				AND revoked_at IS NULL`, now, id)
			if res.Error != nil {
				return mapErr("claim an API key about to expire", res.Error)
			}
			if res.RowsAffected == 1 {
				claimed = append(claimed, id)
			}
		}
		if len(claimed) == 0 {
			return nil
		}
		out, err = readClaimedAPIKeys(tx, claimed)
		return err
	})
	if err != nil {
		return nil, mapErr("claim API keys about to expire", err)
	}
	return out, nil
}

// readClaimedAPIKeys reads the keys ids (just claimed) with where to tell
// of their expiry, by expiry then id.
func readClaimedAPIKeys(tx *gorm.DB, ids []string) ([]store.ExpiringAPIKey, error) {
	rows, err := tx.Raw(`SELECT `+qualified("k.", apiKeyColumns)+`, COALESCE(o.name, ''), COALESCE(o.email, ''), COALESCE(c.email, '')
		FROM api_keys k JOIN users o ON o.id = k.owner_user_id LEFT JOIN users c ON c.id = k.created_by
		WHERE k.id IN ? ORDER BY k.expires_at, k.id`, ids).Rows()
	if err != nil {
		return nil, mapErr("read the claimed API keys", err)
	}
	defer rows.Close()
	var out []store.ExpiringAPIKey
	for rows.Next() {
		var (
			row                               apiKeyRow
			ownerName, ownerMail, creatorMail string
		)
		if err := rows.Scan(append(apiKeyRowFields(&row), &ownerName, &ownerMail, &creatorMail)...); err != nil {
			return nil, mapErr("read a claimed API key", err)
		}
		k, err := row.apiKey()
		if err != nil {
			return nil, err
		}
		e := store.ExpiringAPIKey{Key: k, OwnerName: ownerName, ToOwner: ownerMail != "", Notify: ownerMail}
		if !e.ToOwner {
			e.Notify = creatorMail
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr("read the claimed API keys", err)
	}
	return out, nil
}

// ReleaseExpiringAPIKey implements store.APIKeys.
func (s *Store) ReleaseExpiringAPIKey(ctx context.Context, id string) error {
	if err := s.db.WithContext(ctx).Exec(`UPDATE api_keys SET expiry_notified_at = NULL WHERE id = ?`, id).Error; err != nil {
		return mapErr("release an API key's expiry notice", err)
	}
	return nil
}

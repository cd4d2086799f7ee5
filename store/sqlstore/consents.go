package sqlstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// ErrInvalidConsent means a consent record lacks its user or client.
var ErrInvalidConsent = errors.New("sqlstore: invalid consent")

var _ store.Consents = (*Store)(nil)

type consentRow struct {
	UserID    string    `gorm:"column:user_id;primaryKey"`
	ClientID  string    `gorm:"column:client_id;primaryKey"`
	Scopes    string    `gorm:"column:scopes"`
	GrantedAt time.Time `gorm:"column:granted_at"`
}

func (consentRow) TableName() string { return "consents" }

func (r consentRow) toConsent() (store.Consent, error) {
	scopes := []string{}
	if err := json.Unmarshal([]byte(r.Scopes), &scopes); err != nil {
		return store.Consent{}, fmt.Errorf("decode consent scopes: %w", err)
	}
	return store.Consent{UserID: r.UserID, ClientID: r.ClientID, Scopes: scopes, GrantedAt: readTime(r.GrantedAt)}, nil
}

// normalScopes returns scopes sorted, without duplicates or empty names.
func normalScopes(in []string) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		if s != "" {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// GetConsent implements store.Consents.
func (s *Store) GetConsent(ctx context.Context, userID, clientID string) (store.Consent, error) {
	var row consentRow
	if err := s.db.WithContext(ctx).Where("user_id = ? AND client_id = ?", userID, clientID).Take(&row).Error; err != nil {
		return store.Consent{}, mapErr("get consent", err)
	}
	c, err := row.toConsent()
	if err != nil {
		return store.Consent{}, fmt.Errorf("get consent: %w", err)
	}
	return c, nil
}

// PutConsent implements store.Consents in one upsert: the scopes are stored
// sorted and without duplicates, GrantedAt (the store's clock when zero) at
// microsecond precision. An unknown user or client is store.ErrNotFound.
func (s *Store) PutConsent(ctx context.Context, c store.Consent) error {
	if c.UserID == "" || c.ClientID == "" {
		return fmt.Errorf("put consent: %w: user and client are required", ErrInvalidConsent)
	}
	at := dbTime(c.GrantedAt)
	if at.IsZero() {
		at = s.clock()
	}
	scopes, _ := json.Marshal(normalScopes(c.Scopes)) // cannot fail for []string
	err := s.db.WithContext(ctx).Exec(`INSERT INTO consents (user_id, client_id, scopes, granted_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (user_id, client_id) DO UPDATE SET scopes = excluded.scopes, granted_at = excluded.granted_at`,
		c.UserID, c.ClientID, string(scopes), at).Error
	if IsForeignKeyViolation(err) {
		return fmt.Errorf("put consent: unknown user or client: %w", store.ErrNotFound)
	}
	return mapErr("put consent", err)
}

// DeleteConsent implements store.Consents.
func (s *Store) DeleteConsent(ctx context.Context, userID, clientID string) error {
	res := s.db.WithContext(ctx).Where("user_id = ? AND client_id = ?", userID, clientID).Delete(&consentRow{})
	if res.Error != nil {
		return mapErr("delete consent", res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("delete consent: %w", store.ErrNotFound)
	}
	return nil
}

// ListConsents implements store.Consents: newest first, then by client id.
func (s *Store) ListConsents(ctx context.Context, userID string) ([]store.Consent, error) {
	var rows []consentRow
	err := s.db.WithContext(ctx).Where("user_id = ?", userID).Order("granted_at DESC").Order("client_id ASC").Find(&rows).Error
	if err != nil {
		return nil, mapErr("list consents", err)
	}
	out := make([]store.Consent, 0, len(rows))
	for _, r := range rows {
		c, err := r.toConsent()
		if err != nil {
			return nil, fmt.Errorf("list consents: %w", err)
		}
		out = append(out, c)
	}
	return out, nil
}

package sqlstore

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/portcullis-auth/portcullis/store"
)

var _ store.FederatedIdentities = (*Store)(nil)

// identityRow is a row of federated_identities (migration 11).
type identityRow struct {
	Provider string    `gorm:"column:provider;primaryKey"`
	Subject  string    `gorm:"column:subject;primaryKey"`
	UserID   string    `gorm:"column:user_id"`
	Email    string    `gorm:"column:email"`
	LinkedAt time.Time `gorm:"column:linked_at"`
}

func (identityRow) TableName() string { return "federated_identities" }

func (r identityRow) identity() store.FederatedIdentity {
	return store.FederatedIdentity{Provider: r.Provider, Subject: r.Subject, UserID: r.UserID, Email: r.Email,
		LinkedAt: readTime(r.LinkedAt)}
}

// validIdentity refuses an identity without its provider, subject or user.
func validIdentity(fi *store.FederatedIdentity, needUser bool) error {
	if fi == nil || fi.Provider == "" || fi.Subject == "" || (needUser && fi.UserID == "") {
		return fmt.Errorf("%w: a federated identity needs its provider, subject and user", ErrInvalidUser)
	}
	return nil
}

// GetFederatedIdentity implements store.FederatedIdentities.
func (s *Store) GetFederatedIdentity(ctx context.Context, provider, subject string) (store.FederatedIdentity, error) {
	var row identityRow
	if err := s.db.WithContext(ctx).Where("provider = ? AND subject = ?", provider, subject).Take(&row).Error; err != nil {
		return store.FederatedIdentity{}, mapErr("get federated identity", err)
	}
	return row.identity(), nil
}

// LinkFederatedIdentity implements store.FederatedIdentities: one INSERT,
// so the primary key (provider, subject) and the unique (user, provider)
// decide races.
func (s *Store) LinkFederatedIdentity(ctx context.Context, fi *store.FederatedIdentity) error {
	if err := validIdentity(fi, true); err != nil {
		return fmt.Errorf("link federated identity: %w", err)
	}
	fi.LinkedAt = s.clock()
	if err := insertIdentity(s.db.WithContext(ctx), fi); err != nil {
		return fmt.Errorf("link federated identity: %w", err)
	}
	return nil
}

func insertIdentity(db *gorm.DB, fi *store.FederatedIdentity) error {
	row := identityRow{Provider: fi.Provider, Subject: fi.Subject, UserID: fi.UserID, Email: fi.Email, LinkedAt: fi.LinkedAt}
	err := db.Create(&row).Error
	if IsForeignKeyViolation(err) {
		return fmt.Errorf("unknown user %q: %w", fi.UserID, store.ErrNotFound)
	}
	return mapErr("insert federated identity", err)
}

// CreateUserWithIdentity implements store.FederatedIdentities.
func (s *Store) CreateUserWithIdentity(ctx context.Context, u *store.User, fi *store.FederatedIdentity) error {
	if u == nil {
		return fmt.Errorf("create user with identity: %w: nil user", ErrInvalidUser)
	}
	if err := validateUser(u, nil); err != nil {
		return fmt.Errorf("create user with identity: %w", err)
	}
	if err := validIdentity(fi, false); err != nil {
		return fmt.Errorf("create user with identity: %w", err)
	}
	now := s.clock()
	nu := *u
	nu.ID = newID(UserIDPrefix)
	nu.CreatedAt, nu.UpdatedAt = now, now
	nu.Roles = normaliseRoles(u.Roles)
	nfi := *fi
	nfi.UserID, nfi.LinkedAt = nu.ID, now
	err := s.tx(ctx, func(tx *gorm.DB) error {
		if err := createUserTx(tx, &nu, now); err != nil {
			return err
		}
		return insertIdentity(tx, &nfi)
	})
	if err != nil {
		return mapErr("create user with identity", err)
	}
	*u, *fi = nu, nfi
	return nil
}

// ListFederatedIdentities implements store.FederatedIdentities.
func (s *Store) ListFederatedIdentities(ctx context.Context, userID string) ([]store.FederatedIdentity, error) {
	var rows []identityRow
	if err := s.db.WithContext(ctx).Where("user_id = ?", userID).Order("provider").Find(&rows).Error; err != nil {
		return nil, mapErr("list federated identities", err)
	}
	out := make([]store.FederatedIdentity, 0, len(rows))
	for _, r := range rows {
		out = append(out, r.identity())
	}
	return out, nil
}

// DeleteFederatedIdentity implements store.FederatedIdentities.
func (s *Store) DeleteFederatedIdentity(ctx context.Context, userID, provider string) (store.FederatedIdentity, error) {
	var out store.FederatedIdentity
	err := s.tx(ctx, func(tx *gorm.DB) error {
		var row identityRow
		if err := tx.Where("user_id = ? AND provider = ?", userID, provider).Take(&row).Error; err != nil {
			return mapErr("load federated identity", err)
		}
		res := tx.Where("provider = ? AND subject = ? AND user_id = ?", row.Provider, row.Subject, userID).Delete(&identityRow{})
		if res.Error != nil {
			return mapErr("delete federated identity", res.Error)
		}
		if res.RowsAffected == 0 {
			return store.ErrNotFound
		}
		out = row.identity()
		return nil
	})
	if err != nil {
		return store.FederatedIdentity{}, fmt.Errorf("delete federated identity: %w", err)
	}
	return out, nil
}
